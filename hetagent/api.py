"""The public Python API. The CLI is a thin layer over these functions.

    import hetagent
    wf = hetagent.load("configs/workflows/voice_agent.yaml")
    module = hetagent.compile(wf)                 # decomposed, unrolled, fused MLIR module
    print(hetagent.to_mlir(module))
"""
from __future__ import annotations

import math
from pathlib import Path

from hetagent.guarded import read_text
from hetagent.ir.build import build
from hetagent.ir.text import parse_module, print_module
from hetagent.passes.registry import DEFAULT_PIPELINE
from hetagent.passes.registry import run as run_passes
from hetagent.workflow import loader
from hetagent.workflow.builder import WorkflowBuilder
from hetagent.workflow.model import Workflow

__all__ = ["load", "compile", "to_mlir", "parse_mlir", "operator_graph", "estimate", "cost", "plan", "max_rate",
           "sweep_sla", "report", "run", "simulate", "validate_plan", "Client", "WorkflowBuilder", "Workflow", "DEFAULT_PIPELINE"]



def load(path: str | Path, *, self_host: dict[str, str] | None = None, config_dir=None) -> Workflow:
    """Read a workflow file: native YAML or a Dify export (YAML or JSON)."""
    return loader.load(path, self_host=self_host, config_dir=config_dir)


def compile(workflow: Workflow | str | Path, passes: str = DEFAULT_PIPELINE):  # noqa: A001
    """Workflow (or a path to one) -> MLIR module after the pass pipeline (an xDSL ModuleOp)."""
    if not isinstance(workflow, Workflow):
        workflow = load(workflow)
    return run_passes(build(workflow), passes)


def to_mlir(module, generic: bool = False) -> str:
    return print_module(module, generic=generic)


def parse_mlir(text: str, file: str = "<string>"):
    return parse_module(text, file)


VALIDATION_SEEDS = 3            # simulations per validation, seeds seed .. seed + 2
VALIDATION_REQUESTS = 8000      # arrivals per simulation (at 4,000 one run's p95 of a 2 s SLA swung by 2%)
VALIDATION_MARGIN = 0.02        # the pooled percentile must be this far under the SLA
MAX_HEADROOM_ROUNDS = 6
REFINE_ROUNDS = 2               # simulations while bisecting between the SLA factors that failed and held
REFINE_SOLVES = 4               # solves while bisecting


def plan(workflows, *, fleet=None, tco="default", catalog=None, profiles=None, rate=None,
         sla_ms=None, precisions=None, objective="tco", soft_sla_penalty=None,
         time_limit_s=30.0, gap=1e-4, validate: bool = True, validate_seed: int = 0,
         validate_requests: int = VALIDATION_REQUESTS, log=None, cross_vendor_kv: bool = False,
         robustness: bool = True):
    """Place one or more workflows (paths, Workflows or compiled .mlir paths) on one fleet, then check
    the plan by simulation and re-plan with headroom until its SLA percentile holds (validate=False
    skips that), and check whether the recommendation survives each device it relies on being as slow
    as its calibration allows (plan.robustness; robustness=False skips that).

    fleet: a fleet name or file (configs/fleets; default: every catalog device may be bought);
    tco: a TCO name or file; profiles: a measured-profiles file overriding the cost model;
    precisions: LLM precisions allowed (default: fp16 and bf16, no quantization);
    cross_vendor_kv: let an LLM's prefill and decode pools sit on two vendors' devices (no serving
    engine moves a KV cache across vendors today; off by default).
    Returns a hetagent.placement.Plan (`plan.validation`: what validate_plan found, or None); raises
    PlacementError explaining why when no plan exists."""
    from hetagent.placement.pipeline import plan_planning, planning_inputs
    prepared = planning_inputs(workflows, fleet, tco, catalog, profiles, precisions)
    kw = dict(rate=rate, sla_ms=sla_ms, objective=objective, soft_sla_penalty=soft_sla_penalty,
              time_limit_s=time_limit_s, gap=gap, cross_vendor_kv=cross_vendor_kv)
    if not validate or objective == "offline" or profiles is not None:
        result = plan_planning(prepared, **kw)
    else:
        result = validate_plan(workflows, seed=validate_seed, requests=validate_requests, plan_kwargs=kw,
                               log=log, prepared=prepared)["plan"]
    if robustness and profiles is None:
        result.robustness = _robustness(result, prepared, kw)
    return result


ROBUSTNESS_SOLVES = 6        # per device: the pessimistic end, then a bisection to about 2% of the factor


def _robustness(plan_, prepared, kw) -> list:
    """placement.robustness over the accelerators the plan buys: each solved again (no validation, no
    baselines) with that device at the slow end of its calibration interval, by scaling its rows of the
    cost tables (pipeline.derated_planning)."""
    from hetagent.costmodel.devices import Device
    from hetagent.errors import HetagentError
    from hetagent.placement.pipeline import derated_planning, plan_planning
    from hetagent.placement.robustness import robustness
    base = {d: float(getattr(dev, "efficiency_factor", 1.0) or 1.0) for d, dev in prepared.devices.items()}
    head = (plan_.inputs or {}).get("headroom")
    alive = []           # derated plannings share the cache keyed by their rows' identities: keep them

    def plan_with(catalog):
        moved = [(d, float(getattr(catalog[d], "efficiency_factor", 1.0) or 1.0) / base[d]) for d in catalog
                 if d in base and float(getattr(catalog[d], "efficiency_factor", 1.0) or 1.0) != base[d]]
        p = prepared
        for d, f in moved:
            p = derated_planning(p, d, f)
        alive.append(p)
        return plan_planning(p, **kw, headroom=head, with_baselines=False)

    devices = [d for d in plan_.fleet if isinstance(prepared.devices.get(d), Device)
               and getattr(prepared.devices[d], "kind", "gpu") != "cpu"]
    try:
        return robustness(plan_with, prepared.devices, devices, baseline=plan_, max_solves=ROBUSTNESS_SOLVES,
                          tolerance=0.02)
    except HetagentError:
        return []


def sweep_sla(workflows, *, points: int = 8, slas=None, fleet=None, tco="default", catalog=None,
              profiles=None, rate=None, precisions=None, time_limit_s=30.0, gap=1e-4):
    """The TCO-versus-SLA Pareto curve: [{sla_ms, feasible, status, per_hour, end_to_end_ms}]."""
    from hetagent.placement import build_problem
    from hetagent.placement.pareto import pareto
    from hetagent.placement.pipeline import planning_inputs
    p = planning_inputs(workflows, fleet, tco, catalog, profiles, precisions)
    pb = build_problem(p.graphs, p.tables, p.fleet, p.tco, p.devices, rate=rate, profiles=p.profiles,
                       cache=p.cache, servers=p.servers)
    return pareto(pb, slas=slas, points=points, time_limit_s=time_limit_s, gap=gap)


def operator_graph(source):
    """The operator graph (hetagent.ir.opgraph.OpGraph) of a workflow, a path, or a module.

    A compiled .mlir path is parsed; missing `decompose` and `unroll` are applied (they are no-ops on
    a module that already had them)."""
    from hetagent.ir.opgraph import extract
    if isinstance(source, (str, Path)) and str(source).endswith(".mlir"):
        module = parse_module(read_text(source, "mlir"), str(source))
    elif isinstance(source, (str, Path, Workflow)):
        module = compile(source)
    else:
        module = source
    return extract(run_passes(module, "decompose,unroll"))


def estimate(model: str, device: str, op: str, **kwargs) -> dict:
    """Latency, throughput, memory, power and bound of one LLM phase on one device option."""
    from hetagent.costmodel.estimate import estimate as _estimate
    return _estimate(model, device, op, **kwargs)


def cost(source, devices: list[str] | None = None, catalog: str = "default") -> dict:
    """Every operator of a workflow on every device: the cheapest-latency feasible option per device.

    Returns {"workflow", "catalog", "operators": [{operator, kind, weight, devices: {device:
    {latency_ms, option, bound, memory_gb} | {"infeasible": reason}}}]}."""
    from hetagent.costmodel.devices import load_catalog
    from hetagent.costmodel.operators import cost_table
    from hetagent.errors import unknown_choice
    graph = operator_graph(source)
    known = load_catalog(catalog)
    for dev in devices or []:
        if dev not in known:
            raise unknown_choice("device", dev, known)
    table = cost_table(graph, catalog, devices)
    rows = []
    for op in graph.operators:
        per_device: dict[str, dict] = {}
        for option, c in table[op.name].items():
            entry = per_device.get(option.device)
            if isinstance(c, str):
                per_device.setdefault(option.device, {"infeasible": c})
            elif entry is None or "infeasible" in entry or c.latency_ms < entry["latency_ms"]:
                per_device[option.device] = {"latency_ms": round(c.latency_ms, 4), "option": option.label(),
                                             "bound": c.bound, "memory_gb": round(c.memory_gb, 3)}
        rows.append({"operator": op.name, "kind": op.kind, "weight": round(op.weight, 4),
                     "devices": per_device})
    return {"workflow": graph.workflow, "catalog": catalog, "operators": rows}


def report(plan, fmt: str | None = None, out=None, **kwargs):
    """The TCO report of a plan (a Plan, plan.json path, text or dict): HTML, Markdown or JSON.
    Writes `out` when given; returns the text (html, md) or the report model (json)."""
    from hetagent.report import report as _report
    return _report(plan, fmt, out, **kwargs)


def run(plan, **kwargs) -> dict:
    """Deploy a plan on Ray (embedded, or an existing cluster with address=...) and send requests;
    returns the run report (requests, completed, failed, refused, lost, latency_ms, sla_attainment, ...)."""
    from hetagent.runtime.commands import run as _run
    return _run(plan, **kwargs)


def simulate(plan, **kwargs) -> dict:
    """Run a plan in virtual time against Poisson, bursty or trace arrivals (hetagent.simulator.engine):
    requests, completed, latency_ms {p50, p95, p99}, sla_attainment, per-stage and per-pool figures."""
    from hetagent.simulator.commands import simulate as _simulate
    return _simulate(plan, **kwargs)


def validate_plan(workflows, given=None, *, seed: int = 0, requests: int = VALIDATION_REQUESTS,
                  seeds: int = VALIDATION_SEEDS, duration_s: float | None = None, arrivals: str = "poisson",
                  arrival_params: dict | None = None, max_rounds: int = MAX_HEADROOM_ROUNDS,
                  plan_kwargs: dict | None = None, log=None, prepared=None) -> dict:
    """Simulate a plan (`seeds` runs of `requests` arrivals, or `duration_s` seconds, per workflow); while
    its SLA percentile fails, re-plan with more headroom. The plan holds when every run meets the
    percentile and the runs' pooled percentile is VALIDATION_MARGIN under the SLA, so that a fresh
    simulation with another seed meets it too.

    Two kinds of headroom, chosen from what the simulation shows:
    - capacity: when a pool runs hot (utilization >= 0.85) and requests spend more than 5% of their time
      queueing, every workflow is planned for 25% more load (more replicas), while the simulation keeps
      the offered rate;
    - latency: otherwise the SLA the planner works to is shortened by what the simulated percentile
      overshoots the SLA less VALIDATION_MARGIN (0 if it does not), plus 1% of the SLA, and at least to
      0.5% of the SLA under the plan's predicted mean path: each round changes the plan.
    Stops when the percentile holds, the planner finds no plan, or after max_rounds. A latency step that
    held may have overshot: the SLA factor is bisected back towards the one that failed (REFINE_SOLVES
    solves, of which REFINE_ROUNDS cheaper plans are simulated), keeping a cheaper plan that holds. The final plan's
    `predicted` gains p50_ms, p95_ms, p99_ms (pooled over the runs), percentile and validated
    {seed, seeds, requests, duration_s, holds}; meets_sla says whether it holds.
    Returns {"plan", "holds", "sla_ms", "rate", "rounds": [{sla_planned_ms, rate_planned, per_hour,
    predicted_ms, simulated_ms, attainment, meets, headroom}], "headroom_cost_per_hour",
    "headroom_cost_fraction", "simulation": the first run of the final plan}. prepared: a
    placement.pipeline.Planning of the same workflows and fleet, to skip pricing them again."""
    import sys
    from hetagent.errors import PlacementError
    from hetagent.placement.pipeline import plan_planning, planning_inputs
    from hetagent.simulator.commands import _ms
    kw = dict(plan_kwargs or {})
    given_inputs = tuple(kw.pop(k, d) for k, d in (("fleet", None), ("tco", "default"), ("catalog", None),
                                                   ("profiles", None), ("precisions", None)))
    prepared = prepared if prepared is not None else planning_inputs(workflows, *given_inputs)
    say = log or (lambda s: print(s, file=sys.stderr))
    head = {"sla_factor": 1.0, "rate_factor": 1.0}
    # rounds solve without the homogeneous baselines (15 more solves); the final plan gets them
    current = given if given is not None else plan_planning(prepared, **kw, with_baselines=False)
    base, used = current, None          # used: the headroom `current` was planned with
    check = _simulated(current, seed, seeds, requests, duration_s, arrivals, arrival_params)
    rounds = [_round(current, check, None)]
    if check["sla_ms"] is None:
        say("validate: the plan carries no SLA; nothing to validate")
    failed = None                       # the headroom of the last plan that did not hold
    while check["sla_ms"] and not check["holds"] and len(rounds) <= max_rounds:
        failed, failed_cost = dict(used or head), current.tco["per_hour"]
        got = check["at_percentile_ms"]
        if check["hot"]:
            head["rate_factor"] *= 1.25
            what = f"capacity: planning for {head['rate_factor']:.3g} x the rate"
        else:        # plan the mean path shorter by what the percentile overshoots, and 1% more
            sla, now = check["sla_ms"], head["sla_factor"]
            over = max(got - sla * (1 - VALIDATION_MARGIN), 0.0) + 0.01 * sla if math.isfinite(got) else 0.2 * sla
            # and at least just under the plan's own mean path: a bound above it returns the same plan
            mean = float(current.predicted.get("end_to_end_ms") or sla * now)
            head["sla_factor"] = max(min(now - over / sla, mean / sla - 0.005), 0.5 * now)
            what = f"latency: planning for {head['sla_factor']:.3g} x the SLA"
        say(f"validate: simulated p{check['percentile']:g} {_ms(got)} vs SLA {check['sla_ms']:g} ms; "
            f"headroom {what}")
        try:
            current = plan_planning(prepared, **kw, headroom=head, with_baselines=False)
            used = dict(head)
        except PlacementError as e:
            say(f"validate: no plan with that headroom: {e}")
            break
        check = _simulated(current, seed, seeds, requests, duration_s, arrivals, arrival_params)
        rounds.append(_round(current, check, what))
    # a latency step may overshoot: bisect back towards the factor that failed for a cheaper plan that holds
    if check["holds"] and failed and used and used["rate_factor"] == failed["rate_factor"]:
        lo, hi, sims = used["sla_factor"], failed["sla_factor"], 0
        for _ in range(REFINE_SOLVES):
            if hi - lo < 0.01 or sims >= REFINE_ROUNDS:
                break
            mid = dict(used, sla_factor=(lo + hi) / 2)
            try:
                trial = plan_planning(prepared, **kw, headroom=mid, with_baselines=False)
            except PlacementError:
                lo = mid["sla_factor"]
                continue
            if trial.tco["per_hour"] >= current.tco["per_hour"] - 1e-9:
                lo = mid["sla_factor"]          # no cheaper plan this tight: look looser
                continue
            if abs(trial.tco["per_hour"] - failed_cost) <= 1e-9:
                hi = mid["sla_factor"]          # the plan that failed, again: look tighter
                continue
            trial_check = _simulated(trial, seed, seeds, requests, duration_s, arrivals, arrival_params)
            sims += 1
            rounds.append(_round(trial, trial_check, f"refine: planning for {mid['sla_factor']:.3g} x the SLA"))
            if trial_check["holds"]:
                current, check, used, lo = trial, trial_check, mid, mid["sla_factor"]
            else:
                hi, failed_cost = mid["sla_factor"], trial.tco["per_hour"]
    if given is None or current is not base:          # the same solve again, with its baselines
        current = plan_planning(prepared, **kw, headroom=used)
    pr = current.predicted
    pr.update(p50_ms=check["p50"], p95_ms=check["p95"], p99_ms=check["p99"],
              percentile=check["percentile"],
              validated={"seed": seed, "seeds": seeds, "requests": check["requests"],
                         "duration_s": check["duration_s"], "holds": check["holds"]})
    if check["sla_ms"]:
        pr["meets_sla"] = bool(check["holds"])
        _validate_baselines(current, seed, requests, duration_s, arrivals, arrival_params)
    extra = current.tco["per_hour"] - base.tco["per_hour"]
    out = {"plan": current, "holds": bool(check["holds"]) if check["sla_ms"] else True, "rounds": rounds,
           "sla_ms": check["sla_ms"], "rate": check["rate"], "headroom_cost_per_hour": extra,
           "headroom_cost_fraction": extra / base.tco["per_hour"] if base.tco["per_hour"] else None,
           "headroom": dict(used or {}), "simulation": check["first"]}
    current.validation = out
    return out


def max_rate(workflows, *, fleet, tco="default", catalog=None, precisions=None, sla_ms=None,
             objective="tco", time_limit_s=30.0, gap=1e-4, cross_vendor_kv=False, tolerance=0.02,
             validate: bool = True, validate_seed: int = 0, validate_requests: int = VALIDATION_REQUESTS,
             log=None) -> dict:
    """The highest request rate an inventory serves within the SLA, and what binds beyond it.

    Bisects the planner's feasibility on the fleet (its owned or max counts cap every server shape) to
    `tolerance`, then validates the plan at that rate by simulation (with headroom rounds, within the
    inventory), stepping down 5% at a time while its percentile fails. Returns {"rate_rps", "plan" (a Plan at that rate), "binding" (why the next
    rate up has no plan: the pool, the device or server, what is short), "probes": [{rate_rps,
    feasible}]}. A fleet without any cap (everything may be bought) has no such rate: PlacementError."""
    import sys
    from hetagent.errors import PlacementError
    from hetagent.placement.pipeline import plan_planning, planning_inputs
    say = log or (lambda s: print(s, file=sys.stderr))
    prepared = planning_inputs(workflows, fleet, tco, catalog, None, precisions)
    if prepared.fleet is None or not prepared.fleet.has_inventory:
        raise PlacementError("--max-rate needs a fleet with an inventory: give its devices `owned:` or "
                             "`max_count:` counts (a fleet that may buy anything serves any rate)")
    kw = dict(sla_ms=sla_ms, objective=objective, time_limit_s=time_limit_s, gap=gap,
              cross_vendor_kv=cross_vendor_kv)
    probes = []

    def attempt(r):
        try:
            p = plan_planning(prepared, rate=r, with_baselines=False, **kw)
            probes.append({"rate_rps": r, "feasible": True})
            return p, None
        except PlacementError as e:
            probes.append({"rate_rps": r, "feasible": False})
            return None, str(e)

    base = prepared.graphs[0].rate_rps
    lo, hi, why, best = None, None, None, None
    r = base
    for _ in range(40):                         # bracket: double up from a rate that fits, or halve down
        p, err = attempt(r)
        if p is not None:
            lo, best = r, p
            if hi is not None:
                break
            r *= 2.0
        else:
            hi, why = r, err
            if lo is not None:
                break
            r /= 2.0
    if lo is None:
        raise PlacementError(f"the fleet serves no rate down to {r:.3g} requests/s within the SLA: {why}")
    if hi is None:
        raise PlacementError(f"the fleet still serves {lo:.3g} requests/s: its inventory does not bind")
    while hi / lo - 1.0 > tolerance:
        mid = (lo * hi) ** 0.5
        p, err = attempt(mid)
        if p is not None:
            lo, best = mid, p
        else:
            hi, why = mid, err
    say(f"max-rate: the planner fits {lo:.4g} requests/s; at {hi:.4g}: {why}")
    if validate:              # the same bisection on whether the plan's percentile holds in simulation
        def holds(r):
            v = validate_plan(workflows, None, seed=validate_seed, requests=validate_requests,
                              plan_kwargs=dict(kw, fleet=fleet, tco=tco, catalog=catalog, precisions=precisions,
                                               rate=r), prepared=prepared, log=lambda s: None)
            probes.append({"rate_rps": r, "feasible": True, "holds": v["holds"]})
            if not v["holds"]:
                hot, last = _hottest_pool(v["simulation"]), v["rounds"][-1]
                got = last.get("simulated_ms")
                failed[r] = (f"at {r:.4g} requests/s the SLA percentile does not hold in simulation"
                             + (f" (simulated {got:.0f} ms; validation wants {VALIDATION_MARGIN:.0%} under the "
                                f"SLA of {v['sla_ms']:g} ms)" if got and v.get("sla_ms") else "")
                             + (f"; the longest queue: {hot}" if hot else ""))
            return v["plan"] if v["holds"] else None
        failed: dict = {}
        good = holds(lo)
        if good is None:
            top, why = lo, failed[lo]
            bottom = lo / 2.0
            while (good := holds(bottom)) is None:
                top, bottom = bottom, bottom / 2.0
                if bottom < lo / 64:
                    raise PlacementError(f"no rate down to {bottom:.3g} requests/s holds the SLA percentile in "
                                         "simulation on this fleet")
            lo, best = bottom, good
            while top / lo - 1.0 > max(tolerance, 0.05):
                mid = (lo * top) ** 0.5
                got = holds(mid)
                if got is not None:
                    lo, best = mid, got
                else:
                    top, why = mid, failed[mid]
        else:
            best = good
        say(f"max-rate: {lo:.4g} requests/s holds in simulation")
    return {"rate_rps": lo, "plan": best, "binding": why, "probes": probes}


def _hottest_pool(sim: dict) -> str | None:
    """What a failing simulation shows binding, in words: the pool requests wait longest for, or, when
    nobody waits, the operator whose time at its batch is longest at the 95th percentile."""
    pools = sim.get("pools") or {}
    waits = [(p.get("mean_wait_ms") or 0.0, name, p) for name, p in pools.items()]
    if waits:
        w, name, p = max(waits, key=lambda t: (t[0], t[1]))
        if w >= 1.0:
            util = f", busy {p['utilization']:.0%} of the time" if p.get("utilization") is not None else ""
            return f"requests wait {w:.0f} ms on average for pool '{name}' ({p['device']}{util})"
    stages = sim.get("stages") or {}
    if not stages:
        return None
    op, st = max(stages.items(), key=lambda kv: (kv[1].get("p95") or 0.0, kv[0]))
    pool = next((n for n, p in pools.items() if op in (p.get("operators") or [])), None)
    return (f"no pool queues; '{op}' takes {st.get('p95') or 0:.0f} ms at p95"
            + (f" on pool '{pool}'" if pool else "") + " at the batch its load fills")


def _validate_baselines(plan_, seed, requests, duration_s, arrivals, arrival_params) -> None:
    """The feasible homogeneous baselines, solved with the plan's headroom, simulated the same way from
    the cheapest up until one holds: that one is the best baseline the plan is compared with, and those
    cheaper that miss the SLA percentile are reported infeasible. The dearer ones are not simulated."""
    for b in sorted((b for b in plan_.baselines if b.feasible and b.plan is not None), key=lambda b: b.per_hour):
        got = _simulated(b.plan, seed, 1, requests, duration_s, arrivals, arrival_params)
        b.validated = {"holds": bool(got["holds"]), "requests": got["requests"],
                       "percentile_ms": got["at_percentile_ms"] if math.isfinite(got["at_percentile_ms"])
                       else None}
        if got["holds"]:
            return
        b.feasible = False
        b.note = (f"misses the SLA percentile in simulation (p{got['percentile']:g} "
                  f"{got['at_percentile_ms']:.0f} ms)")


def _simulated(plan_, seed, seeds, requests, duration_s, arrivals, arrival_params) -> dict:
    """Every workflow of the plan simulated `seeds` times; the worst workflow's pooled figures."""
    import numpy as np
    from hetagent.simulator import model as sim_model
    from hetagent.simulator.commands import simulate as _simulate
    worst = None
    for wf in plan_.workflows:
        m0 = sim_model.build(plan_, wf if len(plan_.workflows) > 1 else None)
        window = duration_s if duration_s is not None else max(requests / max(m0.rate_rps, 1e-9), 1.0)
        runs, lat = [], []
        for k in range(seeds):
            if runs and not runs[-1]["meets_sla"]:
                break            # one failing run decides it; the others would only cost time
            sim = _simulate(plan_, duration_s=window, seed=seed + k, arrivals=arrivals,
                            model=m0 if k == 0 else sim_model.build(plan_, wf if len(plan_.workflows) > 1
                                                                        else None),
                            keep_latencies=True, **(arrival_params or {}))
            runs.append(sim)
            lat.append(sim.pop("_latencies"))
        every = np.concatenate(lat) if lat else np.zeros(0)
        pct = m0.sla_percentile
        done = every[np.isfinite(every)]
        at = float(np.sort(every)[max(0, math.ceil(pct / 100.0 * len(every)) - 1)]) if len(every) else math.inf
        sla = m0.sla_ms
        holds = (sla is None) or (all(r["meets_sla"] for r in runs) and at <= sla * (1 - VALIDATION_MARGIN))
        hot = max((p["utilization"] or 0.0) for r in runs for p in r["pools"].values()) if runs[0]["pools"] \
            else 0.0
        waited = sum(p["mean_wait_ms"] * p["executions"] for p in runs[0]["pools"].values())
        per_req = (runs[0]["latency_ms"]["mean"] or 0.0) * max(runs[0]["completed"], 1)
        res = {"workflow": wf, "sla_ms": sla, "percentile": pct, "rate": m0.rate_rps, "holds": holds,
               "at_percentile_ms": at, "attainment": min((r["sla_attainment"] or 0.0) for r in runs) if sla
               else None, "p50": float(np.percentile(done, 50)) if done.size else None,
               "p95": float(np.percentile(done, 95)) if done.size else None,
               "p99": float(np.percentile(done, 99)) if done.size else None,
               "requests": int(sum(r["requests"] for r in runs)), "duration_s": window,
               "hot": hot >= 0.85 and (not math.isfinite(at) or waited > 0.05 * per_req), "first": runs[0]}
        key = (not holds, (at / sla) if sla else 0.0)
        if worst is None or key > worst[0]:
            worst = (key, res)
    return worst[1]


def _round(plan_, check, headroom) -> dict:
    head = (plan_.inputs or {}).get("headroom") or {}
    return {"sla_planned_ms": (check["sla_ms"] or 0.0) * head.get("sla_factor", 1.0) or None,
            "rate_planned": check["rate"] * head.get("rate_factor", 1.0), "per_hour": plan_.tco["per_hour"],
            "predicted_ms": plan_.predicted.get("end_to_end_ms"), "simulated_ms": check["at_percentile_ms"]
            if math.isfinite(check["at_percentile_ms"]) else None,
            "attainment": check["attainment"], "meets": check["holds"], "headroom": headroom}


def __getattr__(name):
    if name == "Client":  # the HTTP client of `hetagent serve`; imported on use (needs httpx)
        from hetagent.runtime.client import Client
        return Client
    raise AttributeError(name)
