"""Agent effects: growing context, distributions and KV kept across tool calls, planned with and without.

    python benchmarks/agent_effects.py [--json] [--traces 60] [--rate-traced 4] [--seed 1234]

Two agents, three variants each, every plan validated by simulation (`hetagent plan`, its default):
- the coding agent (configs/workflows/coding_agent.yaml, 2 req/s, p90 60 s):
  `fixed`      every iteration re-sends the same 6,000-token prompt (the workflow before this issue:
               no `context_growth_tokens`);
  `recompute`  the prompt grows by what each iteration adds (`context_growth_tokens: auto`), and every
               call computes its whole prompt (`prefix_shared: false`);
  `keep`       the shipped workflow: growth, and the planner chooses per LLM pool whether to keep the KV.
- a trace-imported agent: the scripted LangGraph support agent (tests/fixtures/langgraph/support_agent.py,
  router, a ReAct loop of 1-3 tool cycles whose prompts grow 120 tokens a cycle, an answer) traced over
  --traces requests through OpenInference/OpenTelemetry, imported with `hetagent import traces
  --self-host gpt-4o-mini=llama-3-70b`, planned at --rate-traced req/s with an SLA of 8 s at p95:
  `means`      the import flattened to means (each LLM node the mean prompt of all its calls, no growth, no
               distributions: what `import traces` wrote before this issue);
  `recompute`  the import as written (token and iteration histograms, the loop's fitted growth),
               `prefix_shared: false`;
  `keep`       the import as written.
Per variant: TCO per hour and per request, the LLM pool's kv_retention, share of prompt tokens not
recomputed, retained GB per device, prompt tokens per second planned and computed, the validation's
simulated percentiles and headroom, and an independent simulation (--seed, 4,000 requests) whose prompt
tokens computed per second are compared with the plan's. Writes benchmarks/results/agent_effects.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CODING = ROOT / "configs" / "workflows" / "coding_agent.yaml"
AGENT = ROOT / "tests" / "fixtures" / "langgraph" / "support_agent.py"
TRACED_SLA = {"latency_ms": 8000, "percentile": 95}


def coding_variants(tmp: Path) -> dict:
    text = CODING.read_text()
    fixed = "\n".join(line for line in text.splitlines() if "context_growth_tokens" not in line) + "\n"
    recompute = text.replace("        output_tokens: 300\n", "        output_tokens: 300\n        prefix_shared: false\n")
    assert fixed != text and recompute != text
    out = {}
    for name, body in (("fixed", fixed), ("recompute", recompute), ("keep", text)):
        p = tmp / f"coding_{name}.yaml"
        p.write_text(body)
        out[name] = p
    return out


def traced_variants(tmp: Path, runs: int) -> tuple[dict, dict]:
    spans = tmp / "spans.jsonl"
    r = subprocess.run([sys.executable, str(AGENT), str(spans), "--runs", str(runs), "--seed", "7"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"the traced agent failed: {r.stderr[-500:]}")
    truth = json.loads(r.stdout)
    from hetagent.workflow.importers.base import render
    from hetagent.workflow.importers.traces import import_traces
    imp = import_traces([spans], self_host={"gpt-4o-mini": "llama-3-70b"})
    data = yaml.safe_load(render(imp))
    data["sla"] = dict(TRACED_SLA)
    out = {}
    variants = {"means": flatten(data), "recompute": _no_sharing(data), "keep": data}
    for name, d in variants.items():
        p = tmp / f"traced_{name}.yaml"
        p.write_text(yaml.safe_dump(d, sort_keys=False))
        out[name] = p
    n = len(truth)
    return out, {"traces": n, "input_tokens_per_request": sum(t["input"] for t in truth) / n,
                 "output_tokens_per_request": sum(t["output"] for t in truth) / n}


def flatten(data: dict) -> dict:
    """The workflow with every distribution replaced by its mean and every loop's growth folded into its
    LLM nodes' prompts (the mean prompt over the iterations the loop runs)."""
    import copy
    from hetagent.passes.unroll import reach_probabilities
    from hetagent.workflow import dist

    def mean(v, minimum=0.0):
        return dist.mean_of(dist.parse(v, minimum=minimum)) if isinstance(v, dict) else v

    def walk(nodes, grow: float = 0.0, reach=None):
        for n in nodes:
            if n["kind"] == "llm":
                for k in ("prompt_tokens", "output_tokens"):
                    n[k] = int(round(mean(n[k])))
                if grow and reach:
                    extra = grow * sum(k * r for k, r in enumerate(reach)) / sum(reach)
                    n["prompt_tokens"] = int(round(n["prompt_tokens"] + extra))
            elif n["kind"] == "tool" and isinstance(n.get("latency_ms"), dict):
                d = dist.parse(n["latency_ms"])
                import numpy as np
                x = d.quantile((np.arange(20000) + 0.5) / 20000)
                n["latency_ms"], n["latency_cv"] = round(d.mean, 3), round(float(x.std() / x.mean()), 3)
            elif n["kind"] == "loop":
                it = n["expected_iterations"]
                if isinstance(it, dict):
                    reach = dist.count_reach(dist.parse(it, minimum=1), n["max_iterations"])
                    n["expected_iterations"] = sum(reach)
                else:
                    reach = reach_probabilities(float(it), n["max_iterations"])
                walk(n["body"], float(n.pop("context_growth_tokens", 0) or 0), reach)
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    walk(a["nodes"], grow, reach)
            elif n["kind"] == "subagent" and isinstance(n.get("inline"), dict):
                walk(n["inline"]["nodes"])
    out = copy.deepcopy(data)
    walk(out["nodes"])
    return out


def _no_sharing(data: dict) -> dict:
    import copy
    out = copy.deepcopy(data)

    def walk(nodes, in_growing_loop=False):
        for n in nodes:
            if n["kind"] == "llm" and in_growing_loop and "model" in n:
                n["prefix_shared"] = False
            elif n["kind"] == "loop":
                walk(n["body"], bool(n.get("context_growth_tokens")))
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    walk(a["nodes"], in_growing_loop)
            elif n["kind"] == "subagent" and isinstance(n.get("inline"), dict):
                walk(n["inline"]["nodes"])
    walk(out["nodes"])
    return out


def measure(path: Path, rate: float | None, seed: int, requests: int) -> dict:
    from hetagent import api
    from hetagent.simulator.commands import simulate
    from hetagent.simulator.model import graph_of
    t0 = time.perf_counter()
    plan = api.plan(str(path), rate=rate).to_json()
    plan_s = time.perf_counter() - t0
    llm = [p for p in plan["pools"] if p["model"] and p["kind"] == "llm.prefill"]
    g, _ = graph_of(plan)
    r = plan["inputs"].get("rate") or g.rate_rps
    prompt = computed = 0.0
    for op in g.operators:
        if op.kind != "llm.prefill":
            continue
        pool = next((p for p in llm if op.name in p["operators"]), None)
        keep = pool is not None and pool["kv_retention"] in ("resident", "offload")
        prompt += r * op.weight * op.attrs["prompt_tokens"]
        computed += r * op.weight * (op.attrs["prompt_tokens"] - (op.attrs.get("prefix_tokens", 0) if keep else 0))
    sim = simulate(plan, seed=seed, duration_s=requests / r)
    sim_computed = sum(p["prefill"]["computed_per_s"] for p in sim["pools"].values() if "prefill" in p
                       and any(n in (llm[0]["operators"] if llm else []) for n in p["operators"]))
    pr = plan["predicted"]
    return {"tco_per_hour": plan["tco"]["per_hour"], "tco_per_request": plan["tco"]["per_request"],
            "fleet": plan["fleet"], "headroom": plan["inputs"].get("headroom"),
            "pools": [{k: p[k] for k in ("id", "engine", "device", "tp", "pp", "replicas", "kv_retention",
                                         "retained_gb", "retained_requests", "prefill_saved_share")} for p in llm],
            "prompt_tokens_per_s": prompt, "planned_computed_per_s": computed,
            "simulated_computed_per_s": sim_computed,
            "prefill_work_error": (sim_computed / computed - 1) if computed else None,
            "validated": {"p50_ms": pr.get("p50_ms"), "p95_ms": pr.get("p95_ms"), "p99_ms": pr.get("p99_ms"),
                          "percentile": pr.get("percentile"), "sla_ms": pr.get("sla_ms"),
                          "holds": (pr.get("validated") or {}).get("holds")},
            "independent_simulation": {"seed": seed, "requests": sim["requests"],
                                       "latency_ms": sim["latency_ms"], "sla_attainment": sim["sla_attainment"]},
            "plan_s": round(plan_s, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=60, help="requests the traced agent serves (default 60)")
    ap.add_argument("--rate-traced", type=float, default=4.0, help="req/s the traced agent is planned at")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--requests", type=int, default=4000, help="requests of the independent simulation")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "agent_effects.json"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    doc = {"version": 1, "benchmark": "agent_effects", "cases": {}}
    with tempfile.TemporaryDirectory(prefix="agent-effects-") as td:
        tmp = Path(td)
        cases = {"coding_agent": (coding_variants(tmp), None, {})}
        traced, truth = traced_variants(tmp, a.traces)
        cases["traced_agent"] = (traced, a.rate_traced, truth)
        for case, (paths, rate, extra) in cases.items():
            rows = {}
            for name, path in paths.items():
                print(f"{case}/{name}: planning and simulating", file=sys.stderr)
                rows[name] = measure(path, rate, a.seed, a.requests)
            base, rec, keep = rows[next(iter(rows))], rows["recompute"], rows["keep"]
            doc["cases"][case] = {**extra, "variants": rows, "change": {
                "growth_tco": rec["tco_per_hour"] / base["tco_per_hour"] - 1,
                "retention_tco": keep["tco_per_hour"] / rec["tco_per_hour"] - 1,
                "both_tco": keep["tco_per_hour"] / base["tco_per_hour"] - 1,
                "prefill_saved_share": 1 - keep["planned_computed_per_s"] / keep["prompt_tokens_per_s"]}}
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "load_average_1min": os.getloadavg()[0]}
    doc["command"] = "python benchmarks/agent_effects.py"
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    if a.json:
        print(json.dumps(doc, separators=(",", ":")))
    else:
        for case, c in doc["cases"].items():
            for name, v in c["variants"].items():
                keep = ", ".join(f"{p['id']} {p['kv_retention']} saves {p['prefill_saved_share']:.1%}"
                                 for p in v["pools"])
                print(f"{case:13s} {name:9s} ${v['tco_per_hour']:.2f}/h  prompt {v['prompt_tokens_per_s']:,.0f} tok/s, "
                      f"computed {v['planned_computed_per_s']:,.0f} planned / {v['simulated_computed_per_s']:,.0f} "
                      f"simulated ({v['prefill_work_error']:+.1%}); {keep}")
            ch = c["change"]
            print(f"{case:13s} growth {ch['growth_tco']:+.1%} TCO, retention {ch['retention_tco']:+.1%}, "
                  f"both {ch['both_tco']:+.1%}; prefill saved {ch['prefill_saved_share']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
