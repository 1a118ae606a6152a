"""Compile synthetic workflows of N nodes through the default pipeline; time and peak memory.

    python benchmarks/compile_scaling.py                 # 100, 1,000 and 10,000 nodes
    python benchmarks/compile_scaling.py --nodes 1000 --json

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
    t0 = time.perf_counter()
    wf = loads(text, file=f"synthetic_{n}.yaml")
    t1 = time.perf_counter()
    module = hetagent.compile(wf)
    t2 = time.perf_counter()
    ops = sum(1 for _ in module.walk())
    return {"nodes": n, "ops_after_pipeline": ops, "load_s": round(t1 - t0, 3),
            "compile_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, help="one size, in this process")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.nodes:
        r = measure(args.nodes)
        print(json.dumps(r) if args.json else r)
        return 0
    rows = []
    for n in (100, 1000, 10000):
        out = subprocess.run([sys.executable, __file__, "--nodes", str(n), "--json"], capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    doc = {"benchmark": "compile_scaling", "pipeline": "verify,decompose,unroll,fuse",
           "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "python": platform.python_version()},
           "results": rows, "target": "10,000 nodes in under 10 s on 2 cores"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
