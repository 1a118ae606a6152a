"""Long fuzz of every input format hetagent reads from a user: workflows, fleets, TCO files and plan.json.

    python benchmarks/fuzz_inputs.py                       # 10,000 cases per format
    python benchmarks/fuzz_inputs.py --cases 500 --formats plan

Hypothesis generates each case (tests/fuzzing.py: the strategies and consumers tests/test_fuzz.py runs
briefly); the case is written to a file and goes through what the CLI does with it: a workflow is loaded,
compiled and printed; a fleet is loaded, resolved and priced; a TCO file is loaded and prices every
catalog device in every mode; a plan.json is read (schema) and summarized. Every `--deep-every`-th
accepted case also goes further: a plan with that fleet or TCO file, or simulate + report for a plan.
Each case has a time limit (`--limit-s`); over it counts as a hang. Outcomes per format: ok, refused
(one HetagentError line naming the file), internal, multiline, unnamed (a file error without the file),
hang. Then a deterministic field sweep: every field of every shipped workflow, fleet and TCO file (and
of a real plan.json) set to each of SWEEP_VALUES or deleted, one at a time; every 10th accepted case
goes deep. Writes benchmarks/results/fuzz_inputs.json with the counts and the first failures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzzing  # noqa: E402  (the shared strategies and consumers)

RESULTS = Path(__file__).parent / "results" / "fuzz_inputs.json"
SWEEP_VALUES = (None, fuzzing._DELETE, 0, -1, 1e12, 1e-300, 2**70, "x", [], {}, True)
FORMATS = ("workflow", "fleet", "tco", "plan")
FAILURES = ("internal", "multiline", "unnamed", "hang")


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


def fuzz(fmt: str, cases: int, limit_s: float, deep_every: int, work: Path, seed: int) -> dict:
    counts = {k: 0 for k in ("ok", "refused", *FAILURES)}
    examples: list[dict] = []
    state = {"accepted": 0, "deep": 0, "slowest_s": 0.0, "n": 0}
    tiny = work / "tiny.yaml"
    tiny.write_text(fuzzing.TINY)
    if fmt == "plan":
        from hetagent import api
        base = api.plan(str(tiny), fleet="local-cpu", validate=False).to_json()
        strategy = fuzzing.plans(base)
    else:
        strategy = {"workflow": fuzzing.workflows, "fleet": fuzzing.fleets, "tco": fuzzing.tcos}[fmt]

    def one(doc):
        n = state["n"] = state["n"] + 1
        path = work / f"{fmt}-{n % 50}.{'json' if fmt == 'plan' else 'yaml'}"
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        deep = state["accepted"] % deep_every == deep_every - 1
        t = time.perf_counter()
        kind, detail = judge(fmt, path, tiny, deep, limit_s)
        state["slowest_s"] = max(state["slowest_s"], time.perf_counter() - t)
        counts[kind] += 1
        if kind == "ok":
            state["accepted"] += 1
            state["deep"] += deep
        if kind in FAILURES and len(examples) < 10:
            examples.append({"outcome": kind, "detail": detail, "case": path.read_text()[:2000]})

    run_all = hypothesis_seed(seed)(settings(max_examples=cases, deadline=None, database=None,
                                             phases=[Phase.generate],
                                             suppress_health_check=list(HealthCheck))(given(strategy)(one)))
    t0 = time.perf_counter()
    run_all()
    return {"format": fmt, "cases": state["n"], **counts, "deep_runs": state["deep"],
            "slowest_case_s": round(state["slowest_s"], 2), "seconds": round(time.perf_counter() - t0, 1),
            "failures": examples}


def judge(fmt: str, path: Path, tiny: Path, deep: bool, limit_s: float) -> tuple[str, str]:
    """One case through what the CLI does with its format (fuzzing.outcome), a hang past limit_s."""
    run = {"workflow": lambda: fuzzing.use_workflow(path),
           "fleet": lambda: fuzzing.use_fleet(path, tiny, plan_it=deep),
           "tco": lambda: fuzzing.use_tco(path, tiny, plan_it=deep),
           "plan": lambda: fuzzing.use_plan(path, deep=deep)}[fmt]
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        return fuzzing.outcome(path, run)
    except _Hang:
        return "hang", f"over {limit_s:g} s"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def sweep(fmt: str, limit_s: float, deep_every: int, work: Path) -> dict:
    """Every field of the shipped configs (a real plan for plan.json) set to each of SWEEP_VALUES or
    deleted, one at a time: deterministic, and most cases stay close enough to valid to go deep."""
    import copy
    counts = {k: 0 for k in ("ok", "refused", *FAILURES)}
    examples: list[dict] = []
    tiny = work / "tiny.yaml"
    tiny.write_text(fuzzing.TINY)
    if fmt == "plan":
        from hetagent import api
        bases = [api.plan(str(tiny), fleet="local-cpu", validate=False).to_json()]
    else:
        kind = {"workflow": "workflows", "fleet": "fleets", "tco": "tco"}[fmt]
        bases = [yaml.safe_load(p.read_text()) for p in sorted((fuzzing.ROOT / "configs" / kind).glob("*.yaml"))
                 if fmt != "workflow" or "subagent" not in p.read_text()]
    accepted = deep_runs = n = 0
    t0 = time.perf_counter()
    for base in bases:
        for path_ in fuzzing._leaf_paths(base):
            if fmt == "plan" and (path_[0] == "inputs" and len(path_) > 3 or
                                  path_[0] in ("pools", "placements", "baselines") and len(path_) > 1
                                  and path_[1] != 0):
                continue            # the first placement, pool and baseline stand for the rest
            for value in SWEEP_VALUES:
                doc = copy.deepcopy(base)
                fuzzing._set(doc, path_, value)
                n += 1
                path = work / f"sweep.{'json' if fmt == 'plan' else 'yaml'}"
                path.write_text(json.dumps(doc, indent=1) if fmt == "plan" else yaml.safe_dump(doc))
                deep = accepted % deep_every == deep_every - 1
                kind_, detail = judge(fmt, path, tiny, deep, limit_s)
                counts[kind_] += 1
                if kind_ == "ok":
                    accepted += 1
                    deep_runs += deep
                if kind_ in FAILURES and len(examples) < 10:
                    examples.append({"outcome": kind_, "detail": detail, "field": str(path_),
                                     "value": repr(value)[:40]})
    return {"format": fmt, "sweep_cases": n, **counts, "deep_runs": deep_runs,
            "seconds": round(time.perf_counter() - t0, 1), "failures": examples}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000, help="cases per format (default 10,000)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--limit-s", type=float, default=60.0, help="time limit per case")
    ap.add_argument("--deep-every", type=int, default=50, help="every Nth accepted case goes further")
    ap.add_argument("--seed", type=int, default=14, help="hypothesis seed: the same seed, the same cases")
    ap.add_argument("--sweep-only", action="store_true", help="only the deterministic field sweeps")
    ap.add_argument("--no-sweep", action="store_true", help="only the random cases")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    rows, sweeps = [], []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hetagent-fuzz-") as td:
        for fmt in args.formats.split(",") if not args.sweep_only else ():
            row = fuzz(fmt, args.cases, args.limit_s, args.deep_every, Path(td), args.seed)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "failures"}), file=sys.stderr)
        for fmt in args.formats.split(",") if not args.no_sweep else ():
            row = sweep(fmt, args.limit_s, max(1, args.deep_every // 5), Path(td))
            sweeps.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "failures"}), file=sys.stderr)
    doc = {"benchmark": "fuzz_inputs", "cases_per_format": args.cases, "limit_s": args.limit_s,
           "deep_every": args.deep_every,
           "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                       "load_average_start": [round(x, 2) for x in load_start],
                       "load_average_end": [round(x, 2) for x in os.getloadavg()]},
           "results": rows, "sweeps": sweeps,
           "failures_total": sum(r[k] for r in rows + sweeps for k in FAILURES)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
