"""Solving again from what plan.json embeds: the problem, the plan's own evaluation (critical path with
transfers), the homogeneous alternatives with their latency and fleet, the TCO-versus-SLA Pareto curve
and the sensitivity sweeps (electricity price, amortization years, utilization).

Everything here works from `plan.inputs` alone (workflow texts, fleet/TCO/profile texts, catalog name,
precisions, rate, SLA); nothing is cached outside the report's output. Every re-solve is bounded by a
`Budget`: once it is spent the remaining sweeps are skipped and the report says so.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hetagent.errors import HetagentError

SENSITIVITY_PARAMS = ("electricity_usd_per_kwh", "amortization_years", "utilization")
PARAM_LABELS = {"electricity_usd_per_kwh": "Electricity price ($/kWh)",
                "amortization_years": "Amortization (years)",
                "utilization": "Utilization (fraction of TDP drawn)"}


class Budget:
    """Wall-clock allowance for all re-solves together."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def limit(self, wanted: float) -> float:
        """A solver time limit: what the plan used, at most what is left (at least 1 s)."""
        return max(1.0, min(wanted, self.left()))

    def spent(self) -> bool:
        return self.left() <= 0.5


@dataclass
class Context:
    """The problem rebuilt from plan.json."""
    graphs: list
    tables: list | None
    fleet: object
    tco: object
    catalog: dict
    profiles: object
    problem: object
    time_limit_s: float
    gap: float
    notes: list[str] = field(default_factory=list)
    prep_all: object = None     # every option regardless of latency (offline), for evaluations
    choice: dict | None = None  # the plan's own choice {(g, op): DeviceOption}
    servers: bool = False       # the fleet comes as whole server or instance types


def _load_record(rec, loader, tmp: Path, suffix: str, what: str, notes: list[str]):
    """A fleet or TCO config from its plan.json record {name, file, text}: the embedded text first
    (what the plan was solved with), else the file, else the name."""
    if rec is None:
        return None
    if rec.get("text"):
        p = tmp / f"{what}{suffix}"
        p.write_text(rec["text"])
        return loader(p)
    if rec.get("file") and Path(rec["file"]).is_file():
        return loader(rec["file"])
    if rec.get("name"):
        notes.append(f"the {what} config was not embedded in plan.json; used '{rec['name']}' as installed now")
        return loader(rec["name"])
    return None


def _graphs(inputs: dict, plan, notes: list[str]):
    """OpGraphs of the plan's workflows, from the embedded texts (or the placed IR as a fallback)."""
    from hetagent.ir.build import build
    from hetagent.ir.opgraph import extract
    from hetagent.ir.text import parse_module
    from hetagent.passes.registry import DEFAULT_PIPELINE, run
    from hetagent.placement.plan import embedded_workflow
    graphs = []
    recs = inputs.get("workflows") or []
    try:
        if not recs:
            raise HetagentError("plan.json embeds no workflow text")
        for rec in recs:
            if rec.get("format") == "mlir" and rec.get("text"):
                module = run(parse_module(rec["text"], rec.get("file") or "<plan.json>"), "decompose,unroll")
            else:
                module = run(run(build(embedded_workflow(rec)), DEFAULT_PIPELINE), "decompose,unroll")
            graphs.append(extract(module))
        return graphs
    except HetagentError as e:
        if len(plan.workflows) == 1 and plan.ir:
            notes.append(f"the workflow text could not be loaded again ({e}); the operator graph comes "
                         "from the placed IR in plan.json")
            return [extract(run(parse_module(plan.ir, "plan.json:ir"), "decompose,unroll"))]
        raise HetagentError(f"cannot rebuild the workflows from plan.json: {e} (sub-agent files are "
                            "read relative to the original workflow path)") from None


def rebuild(plan) -> Context:
    """The placement problem plan.json was solved from. Raises HetagentError when it cannot be rebuilt."""
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.costmodel.operators import cost_table
    from hetagent.costmodel.profiles import parse_profiles, profiles_cover
    from hetagent.costmodel.tco import load_tco
    from hetagent.placement import build_problem
    from hetagent.placement.pipeline import priced_devices
    inputs = plan.inputs or {}
    notes: list[str] = []
    graphs = _graphs(inputs, plan, notes)
    with tempfile.TemporaryDirectory(prefix="hetagent-report-") as td:
        tmp = Path(td)
        fleet = _load_record(inputs.get("fleet"), load_fleet, tmp, ".yaml", "fleet", notes)
        tco = _load_record(inputs.get("tco"), load_tco, tmp, ".yaml", "tco", notes)
    if tco is None:
        tco = load_tco("default")
    prof = parse_profiles(inputs["profiles"], "plan.json:inputs.profiles") if inputs.get("profiles") else None
    catalog_name = inputs.get("catalog") or (fleet.catalog if fleet is not None else "default")
    devices, servers = priced_devices(fleet, catalog_name, prof)
    precisions = inputs.get("precisions") or None
    tables = None
    if prof is None or not profiles_cover(graphs, prof):
        tables = [cost_table(g, devices, precisions=precisions) for g in graphs]
    # solved as the plan was: the user's SLA and rate with the validation's headroom
    from hetagent.placement.pipeline import with_headroom
    graphs = with_headroom(graphs, inputs.get("sla_ms"), inputs.get("rate"), inputs.get("headroom"))
    pb = build_problem(graphs, tables, fleet, tco, devices, soft_sla_penalty=inputs.get("soft_sla_penalty"),
                       objective=inputs.get("objective") or "tco", profiles=prof,
                       cross_vendor_kv=bool(inputs.get("cross_vendor_kv")), servers=servers)
    ctx = Context(pb.graphs, tables, fleet, tco, devices, prof, pb,
                  float(inputs.get("time_limit_s") or 30.0), float(inputs.get("gap") or 1e-4), notes,
                  servers=servers)
    from hetagent.placement import milp
    # every option, whatever its latency, unpruned: the plan's own pools must be findable
    ctx.prep_all = milp.prepare(replace(pb, objective="offline", soft_sla_penalty=None), prune=False)
    ctx.choice = plan_choice(ctx, plan)
    return ctx


def plan_choice(ctx: Context, plan) -> dict | None:
    """The plan's pools as {(pool id, phase): PoolOption} of the rebuilt problem (None: not found)."""
    choice = {}
    entries = plan.pools or []
    if not entries:
        return None
    for e in entries:
        gid = e.id.rsplit("/", 1)[0] if e.engine != "single" else e.id
        phase = {"llm.prefill": "prefill", "expert.tp_prefill": "prefill"}.get(e.kind, "decode") \
            if e.engine != "single" else "other"
        hit = [o for o in ctx.prep_all.options.get(gid, [])
               if o.engine == e.engine and (o.device, o.option.tp, o.option.pp, o.option.precision,
                                            o.load.replicas) == (e.device, e.tp, e.pp, e.precision, e.replicas)
               and o.kv_retention == (getattr(e, "kv_retention", None) or "none")]
        if not hit:
            return None
        choice[(gid, phase)] = hit[0]
    return choice


def op_devices(ctx: Context, choice: dict | None) -> dict:
    """{(graph index, operator): device id} of a pool choice."""
    from hetagent.placement.milp import option_of
    out = {}
    if not choice:
        return out
    for gi, mine in enumerate(ctx.prep_all.member_of):
        for op in mine:
            o = option_of(ctx.prep_all, choice, gi, op)
            if o is not None:
                out[(gi, op)] = o.device
    return out


def evaluate_choice(ctx: Context, choice: dict, pb=None):
    from hetagent.placement import milp
    try:
        return milp.evaluate(pb or ctx.problem, ctx.prep_all, choice)
    except KeyError:
        return None


def edge_transfers(ctx: Context, devices: dict) -> dict:
    """{(graph index, src, dst): ms} for edges between different devices on the SLA path (kv hand-offs
    excluded: their operator carries the time). devices: {(gi, op): device id}."""
    out = {}
    for e in ctx.prep_all.edges:
        if e.via or not e.on_path:
            continue
        a, b = devices.get((e.g, e.src)), devices.get((e.g, e.dst))
        ms = e.ms.get((a, b), 0.0)
        if ms > 0:
            out[(e.g, e.src, e.dst)] = ms
    return out


# ------------------------------------------------------------------------------------------ sweeps

def _fleet_of(ev) -> dict:
    return {d: int(n) for d, n in sorted(ev.counts.items()) if n > 0}


def alternatives(ctx: Context, budget: Budget) -> tuple[list[dict], str | None]:
    """Every homogeneous fleet solved again: latency, fleet and breakdown (plan.json keeps only $)."""
    from hetagent.placement import milp
    from hetagent.placement.baselines import _devices, baseline
    prep = milp.prepare(replace(ctx.problem, objective="offline"))
    out = []
    for d in _devices(prep):
        if budget.spent():
            return out, "the time budget ran out before every homogeneous fleet was solved again"
        b = baseline(ctx.problem, d, budget.limit(ctx.time_limit_s), ctx.gap, prep)
        row = {"device": d, "feasible": b.feasible, "per_hour": b.per_hour, "per_request": b.per_request,
               "end_to_end_ms": b.end_to_end_ms, "note": b.note, "fleet": None, "breakdown": None}
        if b.outcome is not None and b.outcome.evaluation is not None:
            row["fleet"] = _fleet_of(b.outcome.evaluation)
            row["breakdown"] = b.outcome.evaluation.breakdown
            row["_choice"] = b.outcome.choice
        out.append(row)
    return out, None


def without_retention(ctx: Context, budget: Budget) -> tuple[dict | None, str | None]:
    """The plan's problem solved again with every prefix recomputed: no engine keeps a request's KV across
    its tool calls (the cost table without its `cached` figures, so no retention is offered). None when no
    prompt reuses a prefix."""
    from hetagent.placement.solve import solve_problem
    if not ctx.tables or not any(not isinstance(c, str) and c.detail.get("cached")
                                 for t in ctx.tables for row in t.values() for c in row.values()):
        return None, None
    if budget.spent():
        return None, "the time budget ran out before the plan was solved again without KV retention"
    rows: dict = {}

    def bare(row):
        if id(row) not in rows:       # rows shared by operators (loop copies) stay shared
            rows[id(row)] = {o: c if isinstance(c, str) or "cached" not in c.detail else
                             replace(c, detail={k: v for k, v in c.detail.items() if k != "cached"})
                             for o, c in row.items()}
        return rows[id(row)]
    tables = [{op: bare(row) for op, row in t.items()} for t in ctx.tables]
    out = solve_problem(replace(ctx.problem, tables=tables, cache={}), None, budget.limit(ctx.time_limit_s),
                        ctx.gap)
    if out.evaluation is None:
        return {"feasible": False}, None
    ev = out.evaluation
    llm = {o.group: o for o in out.choice.values() if ctx.problem and o.group in out.prep.groups
           and out.prep.groups[o.group].llm}
    return {"feasible": True, "per_hour": ev.per_hour, "end_to_end_ms": max(ev.end_to_end_ms),
            "pools": {g: {"engine": o.engine, "device": o.device, "replicas": o.load.replicas,
                          "label": o.label()} for g, o in sorted(llm.items())}}, None


def pareto_curve(ctx: Context, plan, alts: list[dict], budget: Budget,
                 points: int = 8) -> tuple[list[dict], str | None]:
    """TCO versus SLA: [{sla_ms, feasible, status, per_hour, end_to_end_ms, fleet, source}].

    The SLA points run from the fastest possible placement to the latency of the cheapest one ignoring
    the SLA, concentrated around the plan's own SLA. At each point the cheapest of the fresh solve,
    the recommended plan and every feasible homogeneous fleet whose latency fits is kept (a large
    instance is solved on thinned options, so a known plan may beat the fresh solve)."""
    from hetagent.placement.pareto import _with_sla
    from hetagent.placement.solve import solve_problem
    if budget.spent():
        return [], "the time budget ran out before the Pareto sweep"
    pb = ctx.problem
    fast = solve_problem(replace(pb, objective="makespan", soft_sla_penalty=None),
                         time_limit_s=budget.limit(ctx.time_limit_s))
    cheap = solve_problem(replace(pb, objective="offline", soft_sla_penalty=None),
                          time_limit_s=budget.limit(ctx.time_limit_s), gap=ctx.gap)
    if fast.evaluation is None or cheap.evaluation is None:
        return [], "no placement exists even without the SLA"
    lo, hi = max(fast.evaluation.end_to_end_ms), max(cheap.evaluation.end_to_end_ms)
    hi = max(hi, lo)
    sla = plan.predicted.get("sla_ms")
    if sla and lo < hi:
        mults = (0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.6, 2.0, 3.0)[:max(3, points + 1)]
        slas = [lo] + [sla * m for m in mults if lo < sla * m < hi] + [hi]
    elif lo < hi:
        k = max(2, points)
        slas = [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)] if lo > 0 else \
            [lo + (hi - lo) * i / (k - 1) for i in range(k)]
    else:
        slas = [lo]
    known = []
    if plan.tco.get("per_hour") is not None and ctx.choice is not None:
        known.append(("recommended plan", plan.fleet, plan.predicted.get("end_to_end_ms"),
                      plan.tco["per_hour"]))
    for a in alts:
        if a.get("feasible") and a.get("fleet"):
            known.append((f"all {a['device']}", a["fleet"], a.get("end_to_end_ms"), a.get("per_hour")))
    out, note = [], None
    for s in sorted(set(round(x, 3) for x in slas)):
        if budget.spent():
            note = "the time budget ran out during the Pareto sweep; some points are missing"
            break
        r = solve_problem(_with_sla(replace(pb, objective="tco"), s), time_limit_s=budget.limit(
            ctx.time_limit_s), gap=ctx.gap)
        ev = r.evaluation
        best = (ev.per_hour, _fleet_of(ev), max(ev.end_to_end_ms), "solve") if ev else None
        for name, fleet, e2e, ph in known:
            if finite(e2e) and finite(ph) and e2e <= s + 1e-6 and (best is None or ph < best[0] - 1e-9):
                best = (ph, dict(fleet), e2e, name)
        out.append({"sla_ms": s, "feasible": best is not None, "status": r.info.status,
                    "per_hour": best[0] if best else None, "fleet": best[1] if best else None,
                    "end_to_end_ms": best[2] if best else None, "source": best[3] if best else None})
        if best is not None and best[0] <= cheap.evaluation.per_hour + 1e-9:
            break              # the cheapest plan at any latency: looser SLAs cost the same
    # past the cheapest plan the curve is flat: keep the first point that reaches it
    floor = [p for p in out if p["feasible"]]
    if floor:
        low = min(p["per_hour"] for p in floor)
        first = next(i for i, p in enumerate(out) if p["feasible"] and p["per_hour"] <= low + 1e-9)
        out = out[:first + 1]
    return out, note


def _values(param: str, base: float) -> list[float]:
    if param == "electricity_usd_per_kwh":
        vals = [base * m for m in (0.25, 0.5, 1.0, 2.0, 3.0, 5.0)] if base > 0 else [0.0, 0.1, 0.2, 0.4]
    elif param == "amortization_years":
        vals = [1.0, 2.0, 3.0, 5.0, 7.0]
    else:
        vals = [0.2, 0.5, 0.75, 1.0]
    vals.append(base)
    return sorted({round(v, 6) for v in vals})


def sensitivity(ctx: Context, plan, alts: list[dict], budget: Budget) -> tuple[dict, str | None]:
    """{param: {label, base, points: [{value, per_hour, fleet, source, status, fixed_plan_per_hour,
    best_homogeneous, best_homogeneous_per_hour}], flips: [...], effect_per_hour, no_effect}}.

    Each point changes one parameter (the others as in the plan) and keeps the cheapest of: a fresh
    solve, the recommended plan re-priced, and every feasible homogeneous fleet re-priced (their
    placement held). `fixed_plan_per_hour` is the recommended plan re-priced."""
    from hetagent.placement import build_problem
    from hetagent.placement.solve import solve_problem
    inputs = plan.inputs or {}
    out, note = {}, None
    base_fleet = {d: int(n) for d, n in plan.fleet.items() if n}
    for param in SENSITIVITY_PARAMS:
        base = float(getattr(ctx.tco, param))
        rows = []
        for v in _values(param, base):
            tco_v = replace(ctx.tco, **{param: v})
            pb_v = build_problem(ctx.graphs, ctx.tables, ctx.fleet, tco_v, ctx.catalog,
                                 soft_sla_penalty=inputs.get("soft_sla_penalty"),
                                 objective=inputs.get("objective") or "tco", profiles=ctx.profiles,
                                 cross_vendor_kv=bool(inputs.get("cross_vendor_kv")), servers=ctx.servers)
            row = {"value": v, "base": abs(v - base) < 1e-9}
            cands = []
            fixed = evaluate_choice(ctx, ctx.choice, pb_v) if ctx.choice else None
            row["fixed_plan_per_hour"] = fixed.per_hour if fixed else None
            unchanged = (pb_v.hour_cost == ctx.problem.hour_cost
                         and pb_v.owned_hour_cost == ctx.problem.owned_hour_cost)
            if row["base"] or unchanged:
                # no device price depends on this parameter here (rented or profiled devices): same plan
                cands.append((plan.tco.get("per_hour"), base_fleet, "recommended plan"))
                row["status"] = "plan" if row["base"] else "prices unchanged"
            else:
                if fixed is not None:
                    cands.append((fixed.per_hour, base_fleet, "recommended plan re-priced"))
                if budget.spent():
                    note = "the time budget ran out during the sensitivity sweeps; some points are missing"
                    row["status"] = "skipped (time budget)"
                else:
                    r = solve_problem(pb_v, None, budget.limit(ctx.time_limit_s), ctx.gap)
                    row["status"] = r.info.status
                    if r.evaluation is not None:
                        cands.append((r.evaluation.per_hour, _fleet_of(r.evaluation), "solve"))
            best = None
            for a in alts:
                if not a.get("feasible") or "_choice" not in a:
                    continue
                ev_a = evaluate_choice(ctx, a["_choice"], pb_v)
                if ev_a is not None:
                    if best is None or ev_a.per_hour < best[1]:
                        best = (a["device"], ev_a.per_hour)
                    if not row["base"] and not unchanged:
                        cands.append((ev_a.per_hour, _fleet_of(ev_a), f"all {a['device']} re-priced"))
            row["best_homogeneous"], row["best_homogeneous_per_hour"] = best if best else (None, None)
            cands = [c for c in cands if finite(c[0])]
            if cands:
                ph, fl, src = min(cands, key=lambda c: c[0])
                row.update(per_hour=ph, fleet=fl, source=src)
            else:
                row.update(per_hour=None, fleet=None, source=None)
            rows.append(row)
        flips = []
        for a, b in zip(rows, rows[1:]):
            if a["fleet"] is not None and b["fleet"] is not None and set(a["fleet"]) != set(b["fleet"]):
                flips.append({"between": [a["value"], b["value"]], "from": a["fleet"], "to": b["fleet"]})
        costs = [r["per_hour"] for r in rows if r["per_hour"] is not None]
        effect = (max(costs) - min(costs)) if costs else None
        out[param] = {"label": PARAM_LABELS[param], "base": base, "points": rows, "flips": flips,
                      "effect_per_hour": effect,
                      "no_effect": effect is not None and effect <= 1e-9 * max(1.0, max(costs))}
    return out, note


def finite(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
