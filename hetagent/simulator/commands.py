"""`hetagent simulate` and `hetagent plan --validate`: the simulator as a command and as an API.

    from hetagent.simulator.commands import simulate
    r = simulate("plan.json", rate=100, duration_s=3600, seed=0)
    r["latency_ms"]["p95"], r["sla_attainment"]

`add_commands(subparsers)` registers `simulate`; `format_validation` and `validation_json` present the
validation that hetagent.api.plan runs (the loop lives there: placement must not import the simulator).
See docs/simulator.md.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np

from hetagent.errors import HetagentError, InputError
from hetagent.simulator import engine as simulator, model as sim_model, traces

DEFAULT_REQUESTS = 20000        # without --duration: about this many arrivals at the rate
MAX_EVENTS = 10_000_000         # a simulation estimated (or found) to need more events is refused
                                # unless max_events (`--max-events`) allows it: ~1 GB and a minute
HIST_BINS = 40


def simulate(plan, trace=None, rate: float | None = None, duration_s: float | None = None, seed: int = 0, *,
             arrivals: str = "poisson", cv: float = 2.0, burst_factor: float = 4.0,
             burst_fraction: float = 0.1, burst_s: float = 10.0, drain_s: float | None = None,
             workflow: str | None = None, sla_ms: float | None = None, stage_times=None, model=None,
             keep_latencies: bool = False, max_events: int = MAX_EVENTS) -> dict:
    """Run plan.json (path, dict, JSON text or Plan) in virtual time and return the report dict.

    trace: an Azure or Mooncake trace file (or a traces.Trace); its arrival times are used (scaled to
    `rate` when given) and its token counts set the main LLM call's prompt and output lengths.
    Otherwise arrivals follow `arrivals` ("poisson", "gamma" with `cv`, "bursty": MMPP-2) at `rate`
    (default: the plan's). duration_s: arrival window (default: the trace's span, else ~20,000 arrivals).
    Requests still running `drain_s` after the window (default max(60 s, 10 x SLA)) count as unfinished.
    sla_ms: judge against this SLA instead of the plan's. stage_times: a `hetagent run --json` report
    (dict or path) whose per-stage medians replace the plan's operator times (sim_model.calibrate).
    max_events: refuse (InputError) a simulation estimated to need more events, before generating its
    arrivals; the engine stops at it too."""
    m = model if model is not None else sim_model.build(plan, workflow)
    factors = sim_model.calibrate(m, stage_times) if stage_times is not None else None
    if sla_ms is not None:
        m.sla_ms = float(sla_ms)
    rng = np.random.default_rng(seed)
    prompt = output = None
    if trace is not None:
        tr = trace if isinstance(trace, traces.Trace) else traces.read_trace(trace)
        if rate is not None:
            tr = tr.scaled_to(rate)
        tr = tr.window(duration_s)
        times = tr.times_s
        if len(times) == 0:
            raise InputError("no trace requests arrive within the duration")
        window = duration_s if duration_s is not None else float(times[-1]) + (1.0 / tr.rate if tr.rate else 0)
        eff_rate = len(times) / window if window > 0 else float(len(times))
        prompt, output = tr.prompt_tokens, tr.output_tokens
        source = {"trace": tr.source, "format": tr.format, "rate": eff_rate, "duration_s": window}
        _check_events(len(times), len(m.ops), max_events, f"the trace's {len(times)} requests")
    else:
        r = float(rate if rate is not None else m.rate_rps)
        if not math.isfinite(r) or r <= 0:
            raise InputError(f"rate must be a finite number > 0, got {r:g}")
        window = float(duration_s) if duration_s is not None else max(DEFAULT_REQUESTS / r, 1.0)
        if not math.isfinite(window) or window <= 0:
            raise InputError(f"duration must be a finite number of seconds > 0, got {window:g}")
        _check_events(r * window, len(m.ops), max_events,
                      f"{window:g} s of arrivals at {r:g} req/s (about {r * window:.3g} requests)")
        times = traces.arrivals(arrivals, r, window, rng, cv=cv, burst_factor=burst_factor,
                                burst_fraction=burst_fraction, burst_s=burst_s)
        source = {"process": arrivals, "rate": r, "duration_s": window}
        if arrivals == "gamma":
            source["cv"] = cv
        if arrivals == "bursty":
            source.update(burst_factor=burst_factor, burst_fraction=burst_fraction, burst_s=burst_s)
    if drain_s is None:
        drain_s = max(60.0, 10.0 * (m.sla_ms or 0.0) / 1000.0)
    res = simulator.run(m, times, rng, prompt_tokens=prompt, output_tokens=output,
                        horizon_s=window + drain_s, max_events=max_events)
    out = summarize(m, res, source, window, seed)
    if keep_latencies:        # every request's latency (inf: unfinished), for pooling several runs
        lat = res.latency_ms
        out["_latencies"] = np.where(np.isnan(lat), np.inf, lat)
    if factors is not None:
        out["stage_times_calibrated"] = {k: (None if math.isinf(v) else v) for k, v in factors.items()}
    return out


def _check_events(requests: float, operators: int, max_events: int, what: str) -> None:
    """Each request makes at most one arrival and two events per operator it runs."""
    estimate = requests * (2 * operators + 1)
    if estimate > max_events:
        raise InputError(f"simulating {what} needs about {estimate:.3g} events; the limit is "
                         f"{max_events:g}: shorten --duration or lower --rate, or raise --max-events")


def _pct(a: np.ndarray, q) -> float | None:
    if a.size == 0:
        return None
    return float(np.percentile(a, q))


def summarize(m: sim_model.SimModel, res: simulator.SimResult, source: dict, window_s: float, seed) -> dict:
    lat = res.latency_ms
    n = len(lat)
    fin = ~np.isnan(lat)
    done = lat[fin]
    full = np.where(fin, lat, np.inf)
    out = {"version": 1, "workflow": m.workflow, "seed": seed, "arrivals": source,
           "requests": int(n), "completed": int(fin.sum()),
           "latency_ms": {"mean": float(done.mean()) if done.size else None, "p50": _pct(done, 50),
                          "p95": _pct(done, 95), "p99": _pct(done, 99),
                          "max": float(done.max()) if done.size else None},
           "sla_ms": m.sla_ms, "sla_percentile": m.sla_percentile}
    if m.sla_ms:
        att = float((full <= m.sla_ms).sum() / n) if n else None
        at_pct = float(np.sort(full)[max(0, math.ceil(m.sla_percentile / 100.0 * n) - 1)]) if n else None
        out.update(sla_attainment=att, latency_at_sla_percentile_ms=None if at_pct in (None, math.inf)
                   else at_pct, meets_sla=None if att is None else
                   bool(att >= m.sla_percentile / 100.0 - 1e-12))
    else:
        out.update(sla_attainment=None, latency_at_sla_percentile_ms=None, meets_sla=None)
    span_ms = max(res.end_ms, window_s * 1000.0, 1e-9)
    stages = {}
    for j, op in enumerate(m.ops):
        a = np.asarray(res.stage_ms[j])
        if a.size == 0:
            continue
        stages[op.name] = {"count": int(a.size), "mean_ms": float(a.mean()), "p50": _pct(a, 50),
                           "p95": _pct(a, 95), "p99": _pct(a, 99)}
    out["stages"] = stages
    pools = {}
    for p in res.pools:
        started = p["started"]
        if started == 0 and p["busy_ms"] == 0:
            continue
        ops = [m.ops[j] for j in p["members"]]
        d = {"kind": ops[0].kind, "device": p["device"], "type": p["type"], "servers": p["servers"],
             "batch": p["batch"], "operators": [o.name for o in ops],
             "executions": int(sum(len(res.stage_ms[j]) for j in p["members"]))}
        if p["colocated"]:
            d["engine"] = "colocated"
        if p["type"] == "delay":
            d["mean_in_flight"] = p["busy_ms"] / span_ms
            d["utilization"] = None
        else:
            d["utilization"] = p["busy_ms"] / (p["servers"] * span_ms)
        d["mean_wait_ms"] = p["wait_ms_total"] / started if started else 0.0
        d["mean_queue"] = p["wait_ms_total"] / span_ms          # Little's law over the run
        d["max_queue"] = p["max_queue"]
        if p["type"] == "batch" and p.get("batches"):
            d["mean_batch"] = p["items"] / p["batches"]
        if p["type"] == "decode" and p["busy_ms"] > 0:
            d["mean_batch"] = p["occupancy_ms"] / p["busy_ms"]
        if "prefill_tokens" in p:         # prompt tokens computed and found cached, per second of the window
            done_tok = p["prefill_tokens"] + p["prefill_cached"]
            d["prefill"] = {"computed_per_s": p["prefill_tokens"] / window_s,
                            "cached_per_s": p["prefill_cached"] / window_s,
                            "saved_share": p["prefill_cached"] / done_tok if done_tok else 0.0}
        if "retained" in p:
            d["retained"] = p["retained"]
        pools[p["name"]] = d
    out["pools"] = pools
    # tokens per second over the arrival window, counted for finished requests
    P, O = res.extra.get("sizes", ({}, {}))
    ptok = gtok = 0.0
    for j, op in enumerate(m.ops):
        if op.kind not in ("llm.prefill", "llm.decode", "llm.remote"):
            continue
        ran = res.masks[:, j] & fin
        k = ran.sum()
        p_j = P[j][ran].sum() if j in P else k * float(op.attrs.get("prompt_tokens", 0) or 0)
        o_j = O[j][ran].sum() if j in O else k * float(op.attrs.get("output_tokens", 0) or 0)
        if op.kind in ("llm.prefill", "llm.remote"):
            ptok += p_j
        if op.kind in ("llm.decode", "llm.remote"):
            gtok += o_j
    out["tokens_per_second"] = {"prompt": ptok / window_s, "generated": gtok / window_s,
                                "total": (ptok + gtok) / window_s}
    done_n = out["completed"]
    out["cost_per_request"] = (m.per_hour * window_s / 3600.0 / done_n) if done_n else None
    out["tco_per_hour"] = m.per_hour
    out["loops"] = {k: {"mean_iterations": float(v.mean()), "max": int(v.max())}
                    for k, v in res.loop_counts.items()} if n else {}
    out["branches"] = {k: np.bincount(v, minlength=len(m.guards.switches[k])).astype(float).__truediv__(n)
                       .tolist() for k, v in res.branch_arms.items()} if n else {}
    if m.main_llm["name"] and res.prompt is not None:
        out["main_llm"] = {"call": m.main_llm["name"], "mean_prompt_tokens": float(res.prompt.mean()),
                           "mean_output_tokens": float(res.output.mean())}
    elif m.main_llm["name"]:
        out["main_llm"] = {"call": m.main_llm["name"]}
    out["histogram"] = _histogram(done, m.sla_ms)
    out["simulator"] = {"events": res.events, "wall_s": res.wall_s, "virtual_s": res.end_ms / 1000.0}
    return out


def _histogram(done: np.ndarray, sla_ms) -> dict:
    if done.size == 0:
        return {"edges_ms": [], "counts": []}
    hi = float(np.percentile(done, 99.9))
    if sla_ms:
        hi = max(hi, sla_ms * 1.1)
    lo = float(done.min())
    counts, edges = np.histogram(np.clip(done, lo, hi), bins=HIST_BINS, range=(lo, hi if hi > lo else lo + 1))
    return {"edges_ms": [float(e) for e in edges], "counts": [int(c) for c in counts]}


# --------------------------------------------------------------------------------------- readable
def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 10000 else f"{v:.1f} ms"


def format_report(r: dict, width: int = 50) -> str:
    src = r["arrivals"]
    how = (f"trace {src['trace']} ({src['format']})" if "trace" in src else f"{src['process']} arrivals")
    lines = [(f"simulated {r['workflow']}: {how} at {src['rate']:.4g} req/s for {src['duration_s']:.6g} s "
             f"(seed {r['seed']})"),
             f"requests {r['requests']}, completed {r['completed']}"]
    L = r["latency_ms"]
    lines.append(f"end-to-end latency: p50 {_ms(L['p50'])}, p95 {_ms(L['p95'])}, p99 {_ms(L['p99'])}, "
                 f"mean {_ms(L['mean'])}, max {_ms(L['max'])}")
    if not r["requests"]:
        lines.append(f"no request arrived in the {src['duration_s']:.6g} s window at {src['rate']:.4g} req/s: "
                     "lengthen --duration")
    elif r.get("sla_ms"):
        lines.append(f"SLA {r['sla_ms']:g} ms at p{r['sla_percentile']:g}: attainment "
                     f"{r['sla_attainment']:.2%}, p{r['sla_percentile']:g} = "
                     f"{_ms(r['latency_at_sla_percentile_ms'])}: "
                     + ("MEETS" if r["meets_sla"] else "VIOLATES"))
    lines.append(f"tokens/s: prompt {r['tokens_per_second']['prompt']:.1f}, generated "
                 f"{r['tokens_per_second']['generated']:.1f}; cost per request "
                 + (f"${r['cost_per_request']:.6g}" if r["cost_per_request"] is not None else "-"))
    lines.append("")
    lines.append("latency distribution" + (" (| = SLA)" if r.get("sla_ms") else "") + ":")
    lines += format_histogram(r["histogram"], r.get("sla_ms"), width)
    lines.append("")
    rows = [("stage", "runs", "mean", "p50", "p95", "p99")]
    for name, s in r["stages"].items():
        rows.append((name, str(s["count"]), _ms(s["mean_ms"]), _ms(s["p50"]), _ms(s["p95"]), _ms(s["p99"])))
    lines += _table(rows)
    lines.append("")
    rows = [("pool", "device", "type", "servers", "util", "mean wait", "mean queue", "max queue", "batch")]
    for name, p in r["pools"].items():
        rows.append((name, p["device"], p["type"], str(p["servers"]),
                     "-" if p["utilization"] is None else f"{p['utilization']:.1%}", _ms(p["mean_wait_ms"]),
                     f"{p['mean_queue']:.2f}", str(p["max_queue"]),
                     f"{p['mean_batch']:.1f}" if "mean_batch" in p else "-"))
    lines += _table(rows)
    for name, p in r["pools"].items():
        if "prefill" in p and p["prefill"]["cached_per_s"] > 0:
            kept = p.get("retained") or {}
            lines.append(f"{name}: prompt tokens/s computed {p['prefill']['computed_per_s']:,.0f}, found cached "
                         f"{p['prefill']['cached_per_s']:,.0f} ({p['prefill']['saved_share']:.1%} saved); KV kept "
                         f"across tool calls: {kept.get('mean_gb_per_replica', 0):.2f} GB per replica on average, "
                         f"at most {kept.get('max_requests', 0)} requests at once"
                         + (f" of {kept['cap']}" if kept.get("cap") is not None else "")
                         + f", {kept.get('evicted', 0)} dropped for lack of room")
    sim = r["simulator"]
    lines.append(f"({sim['events']} events in {sim['wall_s']:.1f} s)")
    return "\n".join(lines)


def format_histogram(h: dict, sla_ms=None, width: int = 50) -> list[str]:
    edges, counts = h["edges_ms"], h["counts"]
    if not counts:
        return ["  (no request finished)"]
    top = max(counts) or 1
    out = []
    marked = False
    for i, c in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        mark = ""
        if sla_ms and not marked and hi >= sla_ms:
            mark, marked = " | SLA", True
        out.append(f"  {_ms(lo):>10} {'#' * round(width * c / top):<{width}} {c}{mark}")
    return out


def _table(rows) -> list[str]:
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows]


def format_validation(v: dict) -> str:
    lines = ["validation by simulation:"]
    for i, r in enumerate(v["rounds"]):
        lines.append(f"  round {i}: planned for SLA {r['sla_planned_ms']:.1f} ms at {r['rate_planned']:.4g} "
                     f"req/s, ${r['per_hour']:.4g}/hour, "
                     f"predicted {_ms(r['predicted_ms'])}, simulated {_ms(r['simulated_ms'])}, "
                     f"attainment {r['attainment']:.2%}" if r["attainment"] is not None else
                     f"  round {i}: simulated {_ms(r['simulated_ms'])}")
    if v["holds"]:
        if len(v["rounds"]) > 1:
            lines.append(f"the SLA holds with headroom: +${v['headroom_cost_per_hour']:.4g}/hour "
                         f"({v['headroom_cost_fraction']:+.1%})")
        else:
            lines.append("the SLA holds in simulation; no headroom needed")
    else:
        lines.append("the SLA does NOT hold in simulation; no re-planned placement met it")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- CLI
def add_commands(subparsers) -> None:
    """Register `hetagent simulate` on the CLI's subparsers."""
    s = subparsers.add_parser("simulate", help="run a plan in virtual time: latency percentiles, SLA "
                              "attainment, utilization and queueing per pool")
    s.add_argument("plan", help="plan.json (from `hetagent plan -o`)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--trace", help="arrivals and token counts from an Azure (CSV) or Mooncake (JSONL) trace")
    s.add_argument("--rate", type=float, help="requests per second (default: the plan's; with --trace: "
                   "the trace's timing is scaled to this rate)")
    s.add_argument("--duration", type=float, help="seconds of arrivals (default: the trace, else about "
                   f"{DEFAULT_REQUESTS} requests)")
    s.add_argument("--seed", type=int, default=0)
    src.add_argument("--arrivals", choices=traces.PROCESSES, default="poisson",
                     help="arrival process without a trace (default: poisson)")
    s.add_argument("--cv", type=float, default=2.0, help="gamma arrivals: coefficient of variation")
    s.add_argument("--burst-factor", type=float, default=4.0, help="bursty: burst rate / calm rate")
    s.add_argument("--burst-fraction", type=float, default=0.1, help="bursty: fraction of time in bursts")
    s.add_argument("--burst-seconds", type=float, default=10.0, help="bursty: mean burst length")
    s.add_argument("--workflow", help="with several workflows in the plan: which one to simulate")
    s.add_argument("--stage-times", metavar="RUN_JSON",
                   help="calibrate each operator's time to a measured run's per-stage median "
                        "(the JSON `hetagent run --json` prints)")
    s.add_argument("--max-events", type=int, default=MAX_EVENTS,
                   help=f"refuse a simulation estimated to need more events (default {MAX_EVENTS:,})")
    s.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    s.add_argument("-o", "--output", help="also write the JSON report here")
    s.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> None:
    r = simulate(args.plan, trace=args.trace, rate=args.rate, duration_s=args.duration, seed=args.seed,
                 arrivals=args.arrivals, cv=args.cv, burst_factor=args.burst_factor,
                 burst_fraction=args.burst_fraction, burst_s=args.burst_seconds, workflow=args.workflow,
                 stage_times=args.stage_times, max_events=args.max_events)
    text = json.dumps(r, separators=(",", ":"))
    if args.output:
        from hetagent.atomic import write_atomic as write_output
        write_output(args.output, text + "\n")
    if args.json:
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(format_report(r).rstrip("\n") + "\n")


__all__ = [
    "HetagentError",
    "add_commands",
    "format_histogram",
    "format_report",
    "format_validation",
    "simulate",
    "summarize",
    "validation_json",
]


def validation_json(v: dict) -> dict:
    """The part of validate_plan's result that goes into JSON output (no Plan object, a short simulation)."""
    sim = v["simulation"]
    return {"holds": v["holds"], "sla_ms": v["sla_ms"], "rate": v["rate"], "rounds": v["rounds"],
            "headroom_cost_per_hour": v["headroom_cost_per_hour"],
            "headroom_cost_fraction": v["headroom_cost_fraction"],
            "simulation": {k: sim.get(k) for k in ("requests", "completed", "latency_ms", "sla_attainment",
                                                    "latency_at_sla_percentile_ms", "meets_sla", "histogram")}}
