"""Compile synthetic workflows of N nodes through the default pipeline; time and peak memory.

    python benchmarks/compile_scaling.py                 # 100, 1,000 and 10,000 nodes; 10,000-node chains
    python benchmarks/compile_scaling.py --nodes 1000 --json
    python benchmarks/compile_scaling.py --chain llm --nodes 10000 --json

Chains (issue 14's reproducer: compile time grew quadratically with a chain's length) are N nodes each
taking the previous one as input, all `llm`, all `tool` or all `code`; they are timed through load,
compile and printing the MLIR, in wall-clock and CPU seconds (the machine may be shared).

Workflows are shaped like the examples: chains of voice-agent-like stages, branches with two arms,
loops (agent <-> tool) and sub-agents (inline), repeated until N nodes. Each size runs in a fresh
process so peak memory (ru_maxrss) is that size's own. Writes benchmarks/results/compile_scaling.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).parent / "results" / "compile_scaling.json"


def synthetic(n_nodes: int) -> dict:
    nodes: list[dict] = [{"id": "start", "kind": "input", "text_tokens": 64}]
    prev, i = "start", 0
    while len(nodes) < n_nodes:
        shape = i % 4
        if shape == 0:   # chain: retrieval, llm, tool, code
            nodes += [
                {"id": f"r{i}", "kind": "memory_search", "index_size": 100000, "top_k": 4, "inputs": [prev]},
                {"id": f"l{i}", "kind": "llm", "model": "llama-3-8b", "prompt_tokens": 1024,
                 "output_tokens": 128, "inputs": [f"r{i}"]},
                {"id": f"t{i}", "kind": "tool", "latency_ms": 200, "inputs": [f"l{i}"]},
                {"id": f"c{i}", "kind": "code", "cpu_ms": 2, "inputs": [f"t{i}"]}]
            prev = f"c{i}"
        elif shape == 1:  # branch
            nodes.append({"id": f"b{i}", "kind": "branch", "inputs": [prev], "arms": [
                {"name": "x", "probability": 0.7, "nodes": [
                    {"id": f"bx{i}", "kind": "llm", "model": "llama-3-8b", "prompt_tokens": 256,
                     "output_tokens": 32}]},
                {"name": "y", "probability": 0.3, "nodes": [
                    {"id": f"by{i}", "kind": "tool", "latency_ms": 100},
                    {"id": f"byc{i}", "kind": "code", "cpu_ms": 1, "inputs": [f"by{i}"]}]}]})
            nodes += [{}] * 3  # count the arm nodes toward N
            prev = f"b{i}"
        elif shape == 2:  # loop
            nodes.append({"id": f"p{i}", "kind": "loop", "expected_iterations": 2, "max_iterations": 3,
                          "inputs": [prev], "body": [
                              {"id": f"pl{i}", "kind": "llm", "model": "llama-3-8b", "prompt_tokens": 512,
                               "output_tokens": 64},
                              {"id": f"pt{i}", "kind": "tool", "latency_ms": 300, "inputs": [f"pl{i}"]}]})
            nodes += [{}] * 2
            prev = f"p{i}"
        else:             # sub-agent
            nodes.append({"id": f"s{i}", "kind": "subagent", "inputs": [prev], "inline": {
                "name": f"sub{i}", "nodes": [
                    {"id": "q", "kind": "input", "text_tokens": 32},
                    {"id": "a", "kind": "llm", "model": "llama-3-8b", "prompt_tokens": 256,
                     "output_tokens": 64, "inputs": ["q"]}]}})
            nodes += [{}] * 2
            prev = f"s{i}"
        i += 1
    real = [n for n in nodes if n]
    real.append({"id": "end", "kind": "output", "inputs": [prev]})
    return {"name": f"synthetic_{n_nodes}", "sla": {"latency_ms": 1e9}, "rate": 1, "nodes": real}


def measure(n: int) -> dict:
    import hetagent
    from hetagent.workflow.loader import loads
    text = yaml.safe_dump(synthetic(n), sort_keys=False)
    t0, c0 = time.perf_counter(), time.process_time()
    wf = loads(text, file=f"synthetic_{n}.yaml")
    t1, c1 = time.perf_counter(), time.process_time()
    module = hetagent.compile(wf)
    t2, c2 = time.perf_counter(), time.process_time()
    ops = sum(1 for _ in module.walk())
    return {"nodes": n, "ops_after_pipeline": ops, "load_s": round(t1 - t0, 3),
            "compile_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
            "load_cpu_s": round(c1 - c0, 3), "compile_cpu_s": round(c2 - c1, 3), "total_cpu_s": round(c2 - c0, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def chain(n_nodes: int, kind: str) -> dict:
    node = {"llm": {"kind": "llm", "model": "llama-3-8b", "prompt_tokens": 128, "output_tokens": 16},
            "tool": {"kind": "tool", "latency_ms": 20}, "code": {"kind": "code", "cpu_ms": 1}}[kind]
    nodes = [{"id": "n0", "kind": "input", "text_tokens": 16}]
    nodes += [{"id": f"n{i}", **node, "inputs": [f"n{i - 1}"]} for i in range(1, n_nodes)]
    return {"name": f"chain_{kind}_{n_nodes}", "nodes": nodes}


def measure_chain(n: int, kind: str) -> dict:
    import hetagent
    from hetagent.workflow.loader import loads
    text = yaml.safe_dump(chain(n, kind), sort_keys=False)
    w0, c0 = time.perf_counter(), time.process_time()
    wf = loads(text, file=f"chain_{kind}_{n}.yaml")
    c1 = time.process_time()
    module = hetagent.compile(wf)
    c2 = time.process_time()
    mlir = hetagent.to_mlir(module)
    c3, w3 = time.process_time(), time.perf_counter()
    return {"chain": kind, "nodes": n, "ops_after_pipeline": sum(1 for _ in module.walk()),
            "mlir_bytes": len(mlir), "load_cpu_s": round(c1 - c0, 3), "compile_cpu_s": round(c2 - c1, 3),
            "print_cpu_s": round(c3 - c2, 3), "total_cpu_s": round(c3 - c0, 3), "total_wall_s": round(w3 - w0, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _fresh(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, *args, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, help="one size, in this process")
    ap.add_argument("--chain", choices=("llm", "tool", "code"), help="with --nodes: a chain of this kind")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.nodes:
        r = measure_chain(args.nodes, args.chain) if args.chain else measure(args.nodes)
        print(json.dumps(r) if args.json else r)
        return 0
    import os
    load0 = os.getloadavg()
    rows, chains = [], []
    for n in (100, 1000, 10000):
        rows.append(_fresh("--nodes", str(n)))
        print(rows[-1], file=sys.stderr)
    for kind in ("llm", "tool", "code"):
        for n in (1000, 2000, 10000):
            chains.append(_fresh("--chain", kind, "--nodes", str(n)))
            print(chains[-1], file=sys.stderr)
    doc = {"benchmark": "compile_scaling", "pipeline": "verify,decompose,unroll,fuse",
           "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                       "load_average_start": [round(x, 2) for x in load0],
                       "load_average_end": [round(x, 2) for x in os.getloadavg()]},
           "results": rows, "chains": chains, "target": "10,000 nodes in under 10 s on 2 cores"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
