"""Planner scaling: agent-shaped workflows (voice, RAG, coding, deep research; varied models, rates and
SLAs) sharing one fleet, until N operators, placed against the full device catalog.

    python benchmarks/planner_scaling.py --ops 1000 --json     # one JSON line: seconds, gap, status, ...
    python benchmarks/planner_scaling.py                       # sweep 10..2000 -> benchmarks/results/planner_scaling.json

Costs come from costmodel.operators.cost_table. Operators with the same kind and attributes cost the same,
so each distinct operator is priced once and the rows are cached in $TMPDIR (pricing an LLM operator over
the whole catalog takes seconds). `seconds` is the placement alone: sizing the serving pools (replica
candidates), building the MILP and solving it; `gap` is against HiGHS's own proven bound.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hetagent.ir.opgraph import Operator, OpGraph  # noqa: E402
from hetagent.placement import build_problem  # noqa: E402
from hetagent.placement.solve import solve_problem  # noqa: E402

KV_PER_TOKEN = {"llama-3-8b": 131072, "llama-3-70b": 327680, "llama-2-7b": 524288, "phi-2": 655360}


class G:
    def __init__(self, name, rate, sla):
        self.name, self.rate, self.sla, self.ops, self.edges = name, rate, sla, [], []

    def add(self, kind, attrs, after=(), weight=1.0, stage=None):
        name = f"{kind.split('.')[-1]}{len(self.ops)}"
        attrs = dict(attrs)
        attrs.setdefault("bytes_out", 4096)
        self.ops.append(Operator(name, kind, attrs, weight, True, stage or {}))
        self.edges += [(a, name) for a in after]
        return name

    def llm(self, model, prompt, out, after=(), weight=1.0, stage=None):
        p = self.add("llm.prefill", {"model": model, "prompt_tokens": prompt}, after, weight,
                     {"ttft_ms": stage["ttft_ms"]} if stage and "ttft_ms" in stage else None)
        k = self.add("llm.kv_transfer", {"model": model, "tokens": prompt,
                                         "kv_bytes": prompt * KV_PER_TOKEN[model]}, [p], weight)
        return self.add("llm.decode", {"model": model, "prompt_tokens": prompt, "output_tokens": out}, [k],
                        weight, {"tbt_ms": stage["tbt_ms"]} if stage and "tbt_ms" in stage else None)

    def graph(self):
        return OpGraph(self.name, self.ops, self.edges, self.sla, 50.0, self.rate)


def voice(i, r):
    g = G(f"voice{i}", r.choice([0.5, 1, 2, 4]), r.choice([3500.0, 5000.0]))
    a = g.add("speech.frontend", {"model": "whisper-large-v3", "audio_seconds": 6})
    a = g.add("speech.encode", {"model": "whisper-large-v3", "audio_seconds": 6}, [a])
    a = g.add("speech.decode", {"model": "whisper-large-v3", "audio_seconds": 6, "output_tokens": 60}, [a])
    d = g.llm("llama-3-8b", 1000, 200, [a], stage={"ttft_ms": 250, "tbt_ms": 40})
    for it in range(2):                       # web search loop, unrolled: copy 2 half as likely
        w = 1.0 / (it + 1)
        t = g.add("tool.lookup", {"tool": "web_search", "latency_ms": 300, "latency_cv": 0.3,
                                  "request_bytes": 1000, "response_bytes": 20000}, [d], w)
        d = g.llm("llama-3-8b", 1000, 200, [t], w)
    p = g.add("speech.phonemize", {"model": "piper", "text_tokens": 200}, [d])
    g.add("speech.synthesize", {"model": "piper", "text_tokens": 200, "audio_seconds": 10}, [p])
    return g


def rag(i, r):
    model = r.choice(["llama-3-8b", "llama-3-70b"])
    g = G(f"rag{i}", r.choice([1, 2, 5, 10]), r.choice([3000.0, 6000.0]))
    e = g.add("embed.encode", {"model": "all-minilm-l6-v2", "tokens": 64, "texts": 1})
    s = g.add("memory.vector_search", {"index_size": 1000000, "dims": 384, "top_k": 20}, [e])
    k = g.add("memory.rerank", {"model": "all-minilm-l6-v2", "top_k": 20, "tokens": 4000}, [s])
    m = g.add("memory.load", {"bytes": 10000})
    g.llm(model, 4000, 200, [k, m])
    return g


def coding(i, r):
    g = G(f"coding{i}", r.choice([0.2, 0.5, 1]), r.choice([30000.0, 60000.0]))
    d = g.llm("llama-3-70b", 4000, 400)
    for it in range(3):
        w = 0.7 ** it
        c = g.add("compute.code", {"cpu_ms": 200}, [d], w)
        d = g.llm(r.choice(["llama-3-70b", "llama-2-7b"]), 2000, 300, [c], w)
    g.add("memory.store", {"bytes": 50000}, [d])
    return g


def research(i, r):
    g = G(f"research{i}", r.choice([0.1, 0.2, 0.5]), r.choice([60000.0, 120000.0]))
    plan = g.llm("llama-3-70b", 4000, 400)
    outs = []
    for b in range(r.choice([3, 5, 8])):
        t = g.add("tool.lookup", {"tool": "web_search", "latency_ms": 500, "latency_cv": 0.5,
                                  "request_bytes": 1000, "response_bytes": 50000}, [plan])
        s = g.add("tool.compute", {"tool": "html_to_text", "cpu_ms": 20}, [t])
        outs.append(g.llm(r.choice(["llama-3-8b", "phi-2"]), 1000, 200, [s]))
    g.llm("llama-3-70b", 4000, 400, outs)
    return g


TEMPLATES = (voice, rag, coding, research)


def workflows(n_ops: int, seed: int = 0) -> list[OpGraph]:
    r, out, total, i = random.Random(seed), [], 0, 0
    while total < n_ops:
        g = TEMPLATES[i % len(TEMPLATES)](i, r).graph()
        out.append(g)
        total += len(g.operators)
        i += 1
    return out


def _sig(op):
    return (op.kind, tuple(sorted((k, str(v)) for k, v in op.attrs.items())))


def cost_tables(graphs, catalog):
    """Real cost tables, one cost_table call per distinct operator (cached on disk)."""
    from hetagent.costmodel.operators import cost_table
    path = Path(tempfile.gettempdir()) / "hetagent_planner_scaling_rows.pkl"
    cache = {}
    if path.exists():
        try:
            cache = pickle.loads(path.read_bytes())
        except Exception:
            cache = {}
    todo = {}
    for g in graphs:
        for op in g.operators:
            if _sig(op) not in cache:
                todo[_sig(op)] = op
    if todo:
        t0 = time.perf_counter()
        ops = [Operator(f"u{k}", op.kind, op.attrs) for k, op in enumerate(todo.values())]
        tab = cost_table(OpGraph("unique", ops, []), catalog)
        for op, sig in zip(ops, todo):
            cache[sig] = tab[op.name]
        path.write_bytes(pickle.dumps(cache))
        print(f"priced {len(ops)} distinct operators in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return [{op.name: cache[_sig(op)] for op in g.operators} for g in graphs]


def run(n_ops: int, time_limit_s: float = 30, gap: float = 0.01, seed: int = 0) -> dict:
    from hetagent.costmodel.devices import load_catalog
    from hetagent.costmodel.tco import load_tco
    catalog = load_catalog()
    graphs = workflows(n_ops, seed)
    tables = cost_tables(graphs, catalog)
    t0 = time.perf_counter()
    # as `hetagent plan` buys: whole server types (configs/servers) priced by configs/tco/default.yaml
    pb = build_problem(graphs, tables, None, load_tco("default"), catalog, servers=True)
    out = solve_problem(pb, None, time_limit_s, gap)
    total = time.perf_counter() - t0
    nvars = len(out.model.z) if out.model else 0
    return {"ops": sum(len(g.operators) for g in graphs), "workflows": len(graphs), "pools": len(out.prep.groups),
            "binaries": nvars, "status": out.info.status, "gap": out.info.gap, "bound": out.info.bound,
            "seconds": round(total, 3), "solver": out.info.solver,
            "loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "per_hour": out.evaluation.per_hour if out.evaluation else None,
            "fleet": {d: n for d, n in sorted(out.evaluation.counts.items()) if n} if out.evaluation else None,
            "servers": {k: n for k, n in sorted((out.evaluation.servers or {}).items()) if n}
            if out.evaluation else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--time-limit", type=float, default=30)
    ap.add_argument("--gap", type=float, default=0.01)
    a = ap.parse_args(argv)
    if a.ops:
        r = run(a.ops, a.time_limit, a.gap)
        print(json.dumps(r, separators=(",", ":")) if a.json else r)
        return
    rows = []
    for n in (10, 20, 50, 100, 200, 500, 1000, 2000):
        r = run(n, a.time_limit, a.gap)
        print(json.dumps(r, separators=(",", ":")), file=sys.stderr)
        rows.append(r)
    out = Path(__file__).resolve().parent / "results" / "planner_scaling.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/planner_scaling.py", "cpus": os.cpu_count(),
                               "rows": rows}, indent=1))
    if a.json:
        print(json.dumps({"rows": rows}, separators=(",", ":")))


if __name__ == "__main__":
    main()
