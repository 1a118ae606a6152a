"""The report model: every number the report shows, assembled from plan.json (and, when present, the
simulation and runtime files beside it), plus what solving again from the plan's embedded inputs adds
(latency and fleet of each homogeneous alternative, the Pareto curve, the sensitivity sweeps).

`build(plan, ...)` returns a JSON-serializable dict; `--format json` writes it as is, and the HTML and
Markdown renderers read nothing else. docs/report.md lists where each number comes from.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from hetagent.errors import HetagentError, InputError
from hetagent.guarded import read_json
from hetagent.placement.plan import Plan, read_plan
from hetagent.report import resolve

VERSION = 1
HOURS_PER_MONTH = 730.0
HOURS_PER_YEAR = 8760.0
SIMULATION_FILES = ("simulation.json", "{stem}.simulation.json")
RUN_FILES = ("run.json", "{stem}.run.json")
TINY_TRANSFER_MS = 0.1


# ------------------------------------------------------------------------------------------ loading

def load_plan(plan) -> tuple[Plan, dict, Path | None]:
    """(Plan, the raw plan.json dict, its path or None) from a path, a JSON string, a dict or a Plan."""
    return read_plan(plan)


def _side_file(path: Path | None, names, raw: dict, key: str) -> tuple[dict | None, str | None]:
    """A figures block from plan.json itself (`key`) or a JSON file beside it."""
    if isinstance(raw.get(key), dict):
        return raw[key], f"plan.json `{key}`"
    if path is None:
        return None, None
    for n in names:
        p = path.parent / n.format(stem=path.stem)
        if p.is_file():
            try:
                d = read_json(p, "simulation").data
            except InputError:
                continue
            if isinstance(d, dict):
                return d, p.name
    return None, None


def _num(x):
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)) and math.isfinite(x):
        return float(x)
    if isinstance(x, str):
        try:
            v = float(x)
            return v if math.isfinite(v) else None
        except ValueError:
            return None
    return None


def _percentiles(d) -> dict:
    """{p50, p95, p99, mean, max} from the spellings a simulator or runtime may use."""
    out = {}
    if _num(d) is not None:
        return {"p50": _num(d)}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        key = str(k).lower().replace("_ms", "").replace("latency", "").strip("_ ")
        if key in ("50", "p50", "median"):
            key = "p50"
        elif key in ("95", "p95"):
            key = "p95"
        elif key in ("99", "p99"):
            key = "p99"
        elif key in ("avg", "mean", "average"):
            key = "mean"
        elif key in ("90", "p90"):
            key = "p90"
        elif key not in ("max", "min"):
            continue
        if _num(v) is not None:
            out[key] = _num(v)
    return out


def _latency_block(d: dict) -> dict:
    for k in ("latency_ms", "end_to_end_ms", "latency", "e2e_ms", "end_to_end"):
        if k in d:
            p = _percentiles(d[k])
            if p:
                return p
    return _percentiles({k: v for k, v in d.items() if str(k).startswith(("p50", "p95", "p99", "mean"))})


def _attainment(d: dict):
    for k in ("sla_attainment", "attainment", "sla_met_fraction", "slo_attainment"):
        v = d.get(k)
        if isinstance(v, dict):
            v = v.get("fraction", v.get("value"))
        v = _num(v)
        if v is not None:
            return v / 100.0 if v > 1.0 else v
    return None


def read_simulation(d: dict | None, source: str | None) -> dict | None:
    """Tolerant reader: {latency_ms {p50,p95,p99}, histogram {edges, counts}, sla_attainment, ...}."""
    if not d:
        return None
    d = d.get("simulation", d) if isinstance(d.get("simulation"), dict) else d
    hist = d.get("histogram") or d.get("latency_histogram") or {}
    edges = hist.get("edges") or hist.get("bins") or hist.get("bin_edges_ms") or hist.get("edges_ms")
    counts = hist.get("counts") or hist.get("count")
    histogram = None
    if isinstance(edges, list) and isinstance(counts, list) and len(counts) >= 1 \
            and len(edges) in (len(counts), len(counts) + 1) \
            and all(_num(x) is not None for x in edges) and all(_num(x) is not None for x in counts):
        histogram = {"edges": [float(x) for x in edges], "counts": [float(x) for x in counts]}
    out = {"source": source, "latency_ms": _latency_block(d), "histogram": histogram,
           "sla_attainment": _attainment(d),
           "requests": _num(d.get("requests") or d.get("n_requests") or d.get("completed")),
           "duration_s": _num(d.get("duration_s") or d.get("seconds") or d.get("horizon_s")),
           "utilization": {str(k): _num(v) for k, v in (d.get("utilization") or {}).items()
                           if _num(v) is not None} if isinstance(d.get("utilization"), dict) else {}}
    if not out["latency_ms"] and histogram is None and out["sla_attainment"] is None:
        return None
    return out


def read_run(d: dict | None, source: str | None) -> dict | None:
    """Tolerant reader of a runtime report: latency_ms, per-stage figures, SLA attainment, emulation."""
    if not d:
        return None
    stages = {}
    raw = d.get("per_stage_ms") or d.get("stages") or d.get("per_stage") or d.get("operators") or {}
    if isinstance(raw, list):
        for s in raw:
            if isinstance(s, dict):
                name = s.get("operator") or s.get("name") or s.get("stage")
                if name:
                    stages[str(name)] = s
    elif isinstance(raw, dict):
        stages = raw
    per_stage = {}
    for name, v in stages.items():
        if isinstance(v, dict):
            lat = _latency_block(v) or _percentiles(v.get("measured_ms"))
            em = v.get("emulated")
            per_stage[name] = {"latency_ms": lat, "emulated": bool(em) if em is not None else None,
                               "device": v.get("device")}
        elif _num(v) is not None:
            per_stage[name] = {"latency_ms": {"p50": _num(v)}, "emulated": None, "device": None}
    emulated = d.get("emulated")
    emulated_ops = sorted(n for n, s in per_stage.items() if s["emulated"])
    if isinstance(emulated, list):
        emulated_ops = sorted(set(emulated_ops) | {str(x) for x in emulated})
    out = {"source": source, "latency_ms": _latency_block(d), "per_stage": per_stage,
           "sla_attainment": _attainment(d),
           "requests": _num(d.get("requests") or d.get("n_requests") or d.get("completed")),
           "emulated": emulated_ops, "all_emulated": emulated is True,
           "cost": d.get("cost") if isinstance(d.get("cost"), dict) else None}
    if not out["latency_ms"] and not per_stage:
        return None
    return out


# ------------------------------------------------------------------------------------------ sections

def _fleet_text(fleet: dict | None) -> str:
    if not fleet:
        return "(none)"
    return ", ".join(f"{n} x {d}" for d, n in sorted(fleet.items(), key=lambda kv: (-kv[1], kv[0])) if n)


def _servers_text(plan: Plan) -> str | None:
    """'1 x h200-nvl-pcie-4 server (4 x h200-nvl)': the plan's servers or instances, when it has server types
    (deployment.bill); None for plans priced one device at a time."""
    rows = [r for r in (plan.deployment or {}).get("bill") or [] if r.get("kind") in ("server", "instance")]
    if not rows:
        return None
    parts = []
    for r in sorted(rows, key=lambda r: (-(r.get("servers") or 0), str(r.get("type")))):
        n, what = r.get("servers") or 0, r.get("kind")
        holds = (f"{r['accelerators']} x {r['device']}" if r.get("accelerators") else f"{r.get('device')}, CPU-only")
        parts.append(f"{n} x {r.get('type')} {what}{'s' if n != 1 else ''} ({holds} each)")
    return ", ".join(parts)


def _rate(plan: Plan, ctx) -> float | None:
    if ctx is not None:
        return sum(g.rate_rps for g in ctx.graphs)
    t = plan.tco
    if t.get("per_request") and t.get("per_hour"):
        return t["per_hour"] / t["per_request"] / 3600.0
    return None


def recommendation(plan: Plan, ctx) -> dict:
    t, pr = plan.tco, plan.predicted
    ph = t.get("per_hour")
    feas = [b for b in plan.baselines if b.feasible and b.per_hour is not None]
    best = min(feas, key=lambda b: b.per_hour) if feas else None
    saving = None
    if best is not None and ph is not None:
        saving = {"device": best.device, "per_hour": best.per_hour, "saving_per_hour": best.per_hour - ph,
                  "saving_fraction": (1 - ph / best.per_hour) if best.per_hour > 0 else None,
                  "saving_per_year": (best.per_hour - ph) * HOURS_PER_YEAR}
    sla, e2e = pr.get("sla_ms"), pr.get("end_to_end_ms")
    margin = None
    if sla and e2e is not None:
        margin = {"ms": sla - e2e, "fraction": (sla - e2e) / sla}
    return {
        "workflows": list(plan.workflows), "fleet": dict(plan.fleet),
        "fleet_text": _servers_text(plan) or _fleet_text(plan.fleet),
        "devices": sum(plan.fleet.values()),
        "tco": {"per_hour": ph, "per_month": ph * HOURS_PER_MONTH if ph is not None else None,
                "per_year": ph * HOURS_PER_YEAR if ph is not None else None,
                "per_million_tokens": t.get("per_million_tokens"), "per_request": t.get("per_request"),
                "per_thousand_requests": t.get("per_thousand_requests")},
        "best_homogeneous": saving,
        "no_homogeneous_feasible": bool(plan.baselines) and not feas,
        "sla": {"sla_ms": sla, "end_to_end_ms": e2e, "meets": pr.get("meets_sla"), "margin": margin,
                "percentile": pr.get("percentile") or (ctx.graphs[0].sla_percentile
                                                       if ctx is not None and ctx.graphs else None),
                "p50_ms": pr.get("p50_ms"), "p95_ms": pr.get("p95_ms"), "p99_ms": pr.get("p99_ms"),
                "validated": pr.get("validated"), "planned_sla_ms": pr.get("planned_sla_ms"),
                "headroom": (plan.inputs or {}).get("headroom")},
        "rate_rps": _rate(plan, ctx),
        "objective": (plan.inputs or {}).get("objective", "tco"),
        "solver": dict(plan.solver),
        "robustness": _robustness_text(plan),
    }


def _robustness_text(plan: Plan) -> list[dict]:
    """plan.json's robustness entries with the sentence the report prints for each."""
    from hetagent.placement.robustness import describe
    ph = (plan.tco or {}).get("per_hour")
    return [dict(e, text=describe(e, ph)) for e in plan.robustness or []]


def cost_section(plan: Plan) -> dict:
    rows = []
    for d, parts in sorted((plan.tco.get("breakdown") or {}).items()):
        c, p, o = (float(parts.get(k, 0.0) or 0.0) for k in ("capex", "power", "opex"))
        rows.append({"device": d, "count": plan.fleet.get(d, 0), "capex": c, "power": p, "opex": o,
                     "total": c + p + o})
    total = sum(r["total"] for r in rows)
    other = (plan.tco.get("per_hour") or 0.0) - total
    return {"rows": rows, "total": total, "unattributed_per_hour": other if abs(other) > 1e-9 else 0.0,
            "bill": bill_of_materials(plan)}


BOM_PARTS = ("accelerators", "host", "network", "power", "facility", "support")


def bill_of_materials(plan: Plan) -> list[dict]:
    """The servers or instances to buy, own or rent: plan.json's deployment.bill, one row per type, with the
    unit $/hour by line and the sources of the type's figures (price, power)."""
    rows = []
    for r in (plan.deployment or {}).get("bill") or []:
        unit = r.get("usd_per_hour") or {}
        src = r.get("sources") or {}
        keys = [k for k in ("price_usd", "host_price_usd", "usd_per_hour", "power_w", "host.cores") if k in src]
        rows.append({"type": r.get("type"), "kind": r.get("kind"), "device": r.get("device"),
                     "per_server": r.get("accelerators"), "servers": r.get("servers"),
                     "unit_per_hour": unit.get("total"), **{k: unit.get(k) for k in BOM_PARTS},
                     "total_per_hour": r.get("total_usd_per_hour"), "note": r.get("note") or "",
                     "sources": [f"{k}: {src[k]}" for k in keys]})
    return rows


def _profiled(ctx) -> set:
    """{(graph index, operator, device)} whose figures come from a measured profile."""
    out = set()
    if ctx is None or ctx.profiles is None:
        return out
    from hetagent.costmodel.profiles import profile_cost_table
    for gi, g in enumerate(ctx.graphs):
        table = profile_cost_table(g, ctx.profiles)
        for op, row in table.items():
            for o, c in row.items():
                if not isinstance(c, str):
                    out.add((gi, op, o.device))
    return out


def _graph_index(plan: Plan, ctx):
    """operator name (as in the plan) -> (graph index, operator name in the graph)."""
    out = {}
    if ctx is None:
        return out
    multi = len(ctx.graphs) > 1
    for gi, g in enumerate(ctx.graphs):
        for op in g.operators:
            out[f"{g.workflow}/{op.name}" if multi else op.name] = (gi, op.name)
    return out


def pools_section(plan: Plan) -> list[dict]:
    """The serving pools: what each engine is, how full its batch runs, and why (Little's law)."""
    out = []
    for p in plan.pools or []:
        in_flight = p.load_rps / p.replicas * p.latency_ms / 1e3 if p.replicas else None
        out.append({"id": p.id, "engine": p.engine, "engine_id": p.engine_id, "kind": p.kind, "model": p.model,
                    "device": p.device, "tp": p.tp, "pp": p.pp, "precision": p.precision,
                    "kv_precision": p.kv_precision, "replicas": p.replicas, "batch": p.batch,
                    "max_batch": p.max_batch, "load_rps": p.load_rps, "latency_ms": p.latency_ms,
                    "tbt_ms": p.tbt_ms, "memory_gb": p.memory_gb, "operators": len(p.operators),
                    "calibration_status": p.calibration_status, "latency_interval_ms": p.latency_interval_ms,
                    "in_flight": in_flight, "kv_retention": p.kv_retention, "retained_gb": p.retained_gb,
                    "retained_requests": p.retained_requests, "prefill_saved_share": p.prefill_saved_share,
                    "fill": p.batch / p.max_batch if p.max_batch else None})
    return out


def retention_section(plan: Plan, ctx, recompute: dict | None, note: str | None) -> list[dict]:
    """Per LLM engine whose prompts reuse the previous iteration's prefix: what it keeps across tool calls,
    what that holds and saves, and the plan solved again with every prefix recomputed (`recompute`)."""
    reuse: dict = {}          # pool -> [prompt tokens/s, reusable tokens/s, wait x rate, rate] from the graphs
    if ctx is not None:
        pool_of = {p.operator: p.pool for p in plan.placements}
        multi = len(ctx.graphs) > 1
        for g in ctx.graphs:
            for op in g.operators:
                if op.kind != "llm.prefill":
                    continue
                pid = pool_of.get(f"{g.workflow}/{op.name}" if multi else op.name)
                rate = g.rate_rps * op.weight
                r = reuse.setdefault(pid, [0.0, 0.0, 0.0, 0.0])
                r[0] += rate * float(op.attrs.get("prompt_tokens", 0) or 0)
                if (op.attrs.get("prefix_tokens") or 0) > 0:
                    r[1] += rate * float(op.attrs["prefix_tokens"])
                    r[2] += rate * float(op.attrs.get("retain_ms", 0) or 0)
                    r[3] += rate
    out = []
    for p in plan.pools or []:
        if p.kind != "llm.prefill" or p.model is None:
            continue
        prompt, reusable, wait, reused = reuse.get(p.id, (0.0, 0.0, 0.0, 0.0))
        keep = p.kv_retention or "none"
        if keep == "none" and reusable <= 0:
            continue
        row = {"pool": p.id, "engine": p.engine, "device": p.device, "replicas": p.replicas, "kv_retention": keep,
               "retained_gb": p.retained_gb, "retained_requests": p.retained_requests,
               "prefill_saved_share": p.prefill_saved_share, "prompt_tokens_per_s": prompt,
               "reusable_share": reusable / prompt if prompt else 0.0,
               "mean_wait_ms": wait / reused if reused else None, "reused_per_s": reused,
               "recompute": None, "note": note}
        if recompute is not None:
            row["recompute"] = dict(recompute, delta_per_hour=(recompute["per_hour"] - plan.tco["per_hour"])
                                    if recompute.get("feasible") and plan.tco.get("per_hour") is not None
                                    else None)
        out.append(row)
    return out


def placement_section(plan: Plan, ctx) -> dict:
    prof = _profiled(ctx)
    gidx = _graph_index(plan, ctx)
    rows = []
    for p in plan.placements:
        gi, name = gidx.get(p.operator, (0, p.operator))
        if p.kind == "llm.kv_transfer":
            source = "predicted (link model)" if p.latency_ms > 0 else "none (same device)"
            if (gi, name, p.device) in prof or (ctx is not None and ctx.profiles is not None
                                               and ctx.profiles.transfers and p.latency_ms > 0):
                source = "measured (profile)"
        else:
            source = "measured (profile)" if (gi, name, p.device) in prof else "predicted (cost model)"
        op = ctx.graphs[gi].op(name) if ctx is not None and name in ctx.graphs[gi]._by_name() else None
        rows.append({"operator": p.operator, "kind": p.kind, "device": p.device, "tp": p.tp, "pp": p.pp,
                     "batch": p.batch, "replicas": p.replicas, "precision": p.precision,
                     "latency_ms": p.latency_ms, "bound": p.bound, "source": source,
                     "weight": op.weight if op is not None else None,
                     "on_sla_path": op.on_sla_path if op is not None else True})
    graph = None
    if ctx is not None:
        multi = len(ctx.graphs) > 1
        dev = {r["operator"]: r["device"] for r in rows}
        nodes, edges = [], []
        for g in ctx.graphs:
            q = (lambda n, w=g.workflow: f"{w}/{n}") if multi else (lambda n: n)
            nodes += [{"name": q(o.name), "kind": o.kind, "device": dev.get(q(o.name), "")}
                      for o in g.operators]
            edges += [[q(a), q(b)] for a, b in g.edges]
        graph = {"nodes": nodes, "edges": edges}
    return {"rows": rows, "graph": graph, "pools": pools_section(plan)}


def critical_path_section(plan: Plan, ctx) -> dict:
    """The longest SLA-path chain of operators (and cross-device transfers) with start times."""
    pr = plan.predicted
    per_stage = dict(pr.get("per_stage_ms") or {})
    by_op = {p.operator: p for p in plan.placements}
    steps, note = [], None
    if ctx is not None:
        multi = len(ctx.graphs) > 1
        gis = range(len(ctx.graphs))
        # the workflow plan.json reports (the one closest to or furthest over its SLA)
        worst = 0
        if multi:
            worst = max(gis, key=lambda i: _longest(ctx, i, per_stage, multi)[0]
                        / (ctx.graphs[i].sla_ms or math.inf) if ctx.graphs[i].sla_ms else -1.0)
        end, steps = _longest(ctx, worst, per_stage, multi)
        for st in steps:
            if not st["device"] and st["kind"] == "operator" and st["name"] in by_op:
                st["device"] = by_op[st["name"]].device
        tiny = [st for st in steps if st["kind"] == "transfer" and st["ms"] < TINY_TRANSFER_MS]
        if tiny:
            steps = [st for st in steps if st not in tiny]
            note = (f"{len(tiny)} transfer(s) between devices under {TINY_TRANSFER_MS:g} ms each "
                    f"({sum(st['ms'] for st in tiny):.3f} ms together) are not drawn; the start times "
                    "include them")
        total = pr.get("end_to_end_ms") or end
        if total - end > 0.01:
            steps.append({"name": "unitemized (transfers and rounding)", "kind": "transfer", "device": "",
                          "start_ms": end, "ms": total - end})
    else:
        note = ("the operator graph could not be rebuilt: the path shown is every placed operator in "
                "order, which is exact only for a chain")
        t = 0.0
        for name, ms in per_stage.items():
            if ms > 0:
                steps.append({"name": name, "kind": "operator", "device": getattr(by_op.get(name), "device", ""),
                              "start_ms": t, "ms": ms})
                t += ms
    return {"steps": steps, "end_to_end_ms": pr.get("end_to_end_ms"), "sla_ms": pr.get("sla_ms"),
            "note": note}


def _longest(ctx, gi: int, per_stage: dict, multi: bool):
    from hetagent.placement.milp import topo_order
    g = ctx.graphs[gi]
    q = (lambda n: f"{g.workflow}/{n}") if multi else (lambda n: n)
    devices = resolve.op_devices(ctx, ctx.choice)
    xfer = resolve.edge_transfers(ctx, devices) if devices else {}
    byname = g._by_name()
    fin, arg, start = {}, {}, {}
    for name in topo_order(g):
        op = byname[name]
        s, who = 0.0, None
        for p in g.predecessors(name):
            t = fin[p] + xfer.get((gi, p, name), 0.0)
            if who is None or t > s:
                s, who = t, p
        dur = float(per_stage.get(q(name), 0.0) or 0.0) if op.on_sla_path else 0.0
        start[name], fin[name], arg[name] = s, s + dur, who
    if not fin:
        return 0.0, []
    cur = max(fin, key=fin.get)
    end = fin[cur]
    chain = []
    while cur is not None:
        chain.append(cur)
        cur = arg[cur]
    chain.reverse()
    place = {p: d for (gj, p), d in devices.items() if gj == gi}
    steps = []
    for i, name in enumerate(chain):
        if i:
            t = xfer.get((gi, chain[i - 1], name), 0.0)
            if t > 0:
                steps.append({"name": f"transfer {chain[i - 1]} -> {name}", "kind": "transfer", "device": "",
                              "start_ms": start[name] - t, "ms": t})
        ms = fin[name] - start[name]
        steps.append({"name": q(name), "kind": "operator", "device": place.get(name, ""),
                      "start_ms": start[name], "ms": ms})
    return end, steps


def alternatives_section(plan: Plan, resolved: list[dict] | None, note: str | None) -> dict:
    rate_note = None
    by_dev = {a["device"]: a for a in (resolved or [])}
    rows = []
    tco = plan.tco
    rows.append({"name": "recommended plan", "device": None, "chosen": True,
                 "feasible": bool(plan.predicted.get("meets_sla", True)), "per_hour": tco.get("per_hour"),
                 "per_request": tco.get("per_request"), "per_thousand_requests": tco.get("per_thousand_requests"),
                 "end_to_end_ms": plan.predicted.get("end_to_end_ms"), "fleet": dict(plan.fleet),
                 "breakdown": tco.get("breakdown"), "note": ""})
    drift = []
    for b in plan.baselines:
        r = by_dev.get(b.device, {})
        row = {"name": f"all {b.device}", "device": b.device, "chosen": False, "feasible": b.feasible,
               "per_hour": b.per_hour, "per_request": b.per_request,
               "per_thousand_requests": b.per_request * 1000 if b.per_request is not None else None,
               "end_to_end_ms": r.get("end_to_end_ms"), "fleet": r.get("fleet"), "breakdown": r.get("breakdown"),
               "note": r.get("note") or ("" if b.feasible else "misses the SLA")}
        if r.get("per_hour") is not None and b.per_hour and abs(r["per_hour"] / b.per_hour - 1) > 0.01:
            drift.append(b.device)
        rows.append(row)
    if drift:
        rate_note = ("solved again today, " + ", ".join(drift) + " cost more than 1% differently from "
                     "plan.json (the cost model or catalog changed since the plan was made); the $ figures "
                     "are plan.json's, latency and fleet are today's")
    if not plan.baselines and resolved:
        for r in resolved:
            rows.append({"name": f"all {r['device']}", "device": r["device"], "chosen": False,
                         "feasible": r["feasible"], "per_hour": r["per_hour"], "per_request": r["per_request"],
                         "per_thousand_requests": r["per_request"] * 1000 if r["per_request"] is not None else None,
                         "end_to_end_ms": r.get("end_to_end_ms"), "fleet": r.get("fleet"),
                         "breakdown": r.get("breakdown"), "note": r.get("note", "")})
    ph = tco.get("per_hour")
    for r in rows:
        r["vs_plan"] = (r["per_hour"] / ph - 1) if (ph and r["per_hour"] is not None and not r["chosen"]) else None
    notes = [n for n in (note, rate_note) if n]
    if resolved is None:
        notes.append("latency and fleet of the alternatives need the problem solved again; not available")
    return {"rows": rows, "notes": notes}


def assumptions_section(plan: Plan, ctx, devices_shown: list[str]) -> dict:
    from hetagent.costmodel.calibration import (
        load_cpu_calibration,
        load_gpu_calibration,
    )
    inputs = plan.inputs or {}
    out: dict = {"inputs": {
        "workflows": [{"name": w.get("name"), "file": w.get("file"), "format": w.get("format")}
                      for w in inputs.get("workflows") or []],
        "fleet": (inputs.get("fleet") or {}).get("name") or (inputs.get("fleet") or {}).get("file")
        or "every catalog device may be bought",
        "tco": (inputs.get("tco") or {}).get("name") or (inputs.get("tco") or {}).get("file"),
        "catalog": inputs.get("catalog"), "precisions": inputs.get("precisions"),
        "rate_rps": inputs.get("rate"), "sla_ms": inputs.get("sla_ms"), "objective": inputs.get("objective"),
        "soft_sla_penalty": inputs.get("soft_sla_penalty"), "time_limit_s": inputs.get("time_limit_s"),
        "gap": inputs.get("gap"), "profiles": bool(inputs.get("profiles"))}}
    # TCO parameters with their reasons
    tco = None
    if ctx is not None:
        p = ctx.tco
        tco = {"name": p.name, "mode": getattr(ctx.fleet, "mode", None) or p.mode,
               "params": [{"name": k, "value": v, "why": p.why.get(k, "")}
                          for k, v in p.to_json().items() if k not in ("name", "mode")]}
    out["tco"] = tco
    # devices: every figure with its source
    devs = []
    catalog = ctx.catalog if ctx is not None else {}
    if not catalog:
        try:
            from hetagent.costmodel.devices import load_catalog
            catalog = load_catalog(inputs.get("catalog") or "default")
        except HetagentError:
            catalog = {}
    hour = ctx.problem.hour_cost if ctx is not None else {}
    for d in devices_shown:
        dev = catalog.get(d)
        entry = {"id": d, "in_fleet": d in plan.fleet, "hour_cost": hour.get(d)}
        if dev is not None:
            figs = []
            for k, f in sorted(dev.figures.items()):
                figs.append({"figure": k, "value": f.value, "source": f.source, "estimate": f.estimate,
                             "note": f.note, "date": f.date})
            entry.update(name=dev.name, vendor=dev.vendor, kind=dev.kind, figures=figs,
                         file=Path(dev.path).name if dev.path else None)
        elif ctx is not None and ctx.profiles is not None and d in ctx.profiles.devices:
            pd = ctx.profiles.devices[d]
            entry.update(name=pd.description or d, vendor="", kind="cpu" if pd.cpu else "profile device",
                         file=None, figures=[
                             {"figure": "price_per_hour", "value": pd.price_per_hour,
                              "source": f"measured profile '{ctx.profiles.name}' (plan.json inputs.profiles)",
                              "estimate": None, "note": None, "date": None},
                             {"figure": "memory_gb", "value": pd.memory_gb,
                              "source": f"measured profile '{ctx.profiles.name}'", "estimate": None,
                              "note": None, "date": None}])
        else:
            entry.update(name=d, vendor="", kind="", figures=[], file=None)
        devs.append(entry)
    out["devices"] = devs
    # calibration
    cal = {}
    try:
        g = load_gpu_calibration()
        pv = g.get("provenance", {})
        gpu_devs = [d for d in devices_shown if catalog.get(d) is not None and not catalog[d].is_cpu]
        fits = {}
        for d in gpu_devs:
            fits[d] = d if d in g.get("devices", {}) else "generic"
        cal["gpu"] = {"source": pv.get("source"), "commit": pv.get("commit"), "method": pv.get("method"),
                      "date": pv.get("date"), "rows": pv.get("rows_total"),
                      "residuals": pv.get("residuals"), "fit_per_device": fits}
    except (OSError, ValueError, KeyError):
        cal["gpu"] = None
    try:
        c = load_cpu_calibration()
        if c:
            h = c.get("host", {})
            cal["cpu"] = {"note": c.get("note"), "host": h.get("cpu"), "cores": h.get("cores"),
                          "date": h.get("date"), "operators": sorted((c.get("operators") or {}).keys())}
    except (OSError, ValueError):
        cal["cpu"] = None
    cal["profiles"] = ctx.profiles.name if ctx is not None and ctx.profiles is not None else None
    out["calibration"] = cal
    return out


def provenance(plan: Plan, placement: dict, simulation, measured) -> list[dict]:
    measured_ops = sum(1 for r in placement["rows"] if r["source"].startswith("measured"))
    n = len(placement["rows"])
    out = [{"what": "Operator latencies, throughput, fleet counts, TCO and end-to-end latency",
            "kind": "predicted" if measured_ops == 0 else ("measured" if measured_ops == n else "mixed"),
            "detail": (f"{measured_ops} of {n} operator figures come from a measured profile, the rest from "
                       "the calibrated cost model") if measured_ops else
            "calibrated roofline cost model (see Calibration) and the MILP's solution"},
           {"what": "Device prices, power and specifications", "kind": "cited",
            "detail": "catalog figures, each with its source below; some are estimates (marked)"},
           {"what": "Alternatives, Pareto curve, sensitivity", "kind": "predicted",
            "detail": "solved again from the inputs plan.json embeds"}]
    if simulation:
        out.append({"what": "Latency distribution and SLA attainment", "kind": "simulated",
                    "detail": f"discrete-event simulation of the plan ({simulation['source']})"})
    if measured:
        em = measured.get("emulated") or []
        kind = "emulated" if measured.get("all_emulated") else ("measured" if not em else "measured and emulated")
        out.append({"what": "Runtime latency per stage and end to end", "kind": kind,
                    "detail": f"{measured['source']}; " + (f"emulated operators: {', '.join(em)}" if em else
                                                           "operators ran for real" if not
                                                           measured.get("all_emulated") else
                                                           "every device emulated on the CPU")})
    return out


# ------------------------------------------------------------------------------------------ build

def build(plan, *, sweeps: bool = True, budget_s: float = 120.0, points: int = 8,
          progress=None) -> dict:
    """The report model of a plan (a path to plan.json, its text, a dict or a Plan)."""
    t0 = time.monotonic()
    say = progress or (lambda msg: None)
    plan_obj, raw, path = load_plan(plan)
    notes: list[str] = []
    timings: dict = {}
    ctx = None
    try:
        t = time.monotonic()
        ctx = resolve.rebuild(plan_obj)
        timings["rebuild_s"] = time.monotonic() - t
        notes += ctx.notes
        if ctx.choice is None:
            notes.append("the plan's placements are not among today's cost-model options (the catalog or "
                         "cost model changed since the plan was made): re-solved figures stand alone")
        else:
            ev = resolve.evaluate_choice(ctx, ctx.choice)
            if ev is not None and plan_obj.tco.get("per_hour"):
                drift = ev.per_hour / plan_obj.tco["per_hour"] - 1 if plan_obj.tco["per_hour"] else 0.0
                e2e = plan_obj.predicted.get("end_to_end_ms") or 0.0
                dl = (max(ev.end_to_end_ms) / e2e - 1) if e2e else 0.0
                if abs(drift) > 0.005 or abs(dl) > 0.005:
                    notes.append(f"priced again with today's cost model the same placement costs {drift:+.1%} "
                                 f"and takes {dl:+.1%} end to end; the report shows plan.json's figures and "
                                 "today's for the sweeps")
    except HetagentError as e:
        notes.append(f"the problem could not be rebuilt from plan.json ({e}); the report shows plan.json's "
                     "figures only (no Pareto curve, no sensitivity)")
    budget = resolve.Budget(budget_s)
    alts = pareto = sens = None
    recompute = keep_note = None
    alt_note = pareto_note = sens_note = None
    if ctx is not None and any((p.kv_retention or "none") != "none" for p in plan_obj.pools or []):
        say("solving again with every prefix recomputed")      # what keeping the KV is worth (one solve)
        t = time.monotonic()
        recompute, keep_note = resolve.without_retention(ctx, budget)
        timings["retention_s"] = time.monotonic() - t
    if ctx is not None and sweeps:
        say("solving every homogeneous fleet again")
        t = time.monotonic()
        alts, alt_note = resolve.alternatives(ctx, budget)
        timings["alternatives_s"] = time.monotonic() - t
        say("tracing the Pareto curve")
        t = time.monotonic()
        pareto, pareto_note = resolve.pareto_curve(ctx, plan_obj, alts, budget, points)
        timings["pareto_s"] = time.monotonic() - t
        say("sensitivity sweeps")
        t = time.monotonic()
        sens, sens_note = resolve.sensitivity(ctx, plan_obj, alts, budget)
        timings["sensitivity_s"] = time.monotonic() - t
    elif not sweeps:
        notes.append("sweeps were turned off (--no-sweeps): no Pareto curve, no sensitivity")

    sim_raw, sim_src = _side_file(path, SIMULATION_FILES, raw, "simulation")
    run_raw, run_src = _side_file(path, RUN_FILES, raw, "run")
    simulation = read_simulation(sim_raw, sim_src)
    measured = read_run(run_raw, run_src)

    place = placement_section(plan_obj, ctx)
    place["retention"] = retention_section(plan_obj, ctx, recompute, keep_note)
    alt = alternatives_section(plan_obj, alts, alt_note)
    shown = list(dict.fromkeys([d for d in plan_obj.fleet] + [b.device for b in plan_obj.baselines]))
    rec = recommendation(plan_obj, ctx)
    model = {
        "version": VERSION,
        "title": f"TCO report: {', '.join(plan_obj.workflows)}",
        "plan_file": str(path) if path else None,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "recommendation": rec,
        "cost": cost_section(plan_obj),
        "placement": place,
        "critical_path": critical_path_section(plan_obj, ctx),
        "alternatives": alt,
        "pareto": {"points": pareto or [], "note": pareto_note,
                   "chosen": {"sla_ms": plan_obj.predicted.get("sla_ms"),
                              "per_hour": plan_obj.tco.get("per_hour"),
                              "end_to_end_ms": plan_obj.predicted.get("end_to_end_ms")},
                   "available": pareto is not None},
        "sensitivity": {"params": sens or {}, "note": sens_note, "available": sens is not None},
        "simulation": simulation,
        "measured": measured,
        "assumptions": assumptions_section(plan_obj, ctx, shown),
        "provenance": provenance(plan_obj, place, simulation, measured),
        "notes": notes,
    }
    model["files_read"] = {"simulation": ["plan.json `simulation`", *SIMULATION_FILES],
                           "measured": ["plan.json `run`", *RUN_FILES],
                           "found": [s for s in (sim_src, run_src) if s]}
    timings["total_s"] = time.monotonic() - t0
    model["timings"] = timings
    for a in alts or []:
        a.pop("_choice", None)
    return _clean(model)


def _clean(x):
    """JSON-safe: tuples to lists, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
