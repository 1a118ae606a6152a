"""Placement: choose per operator a device option and per device kind a count, minimizing TCO per hour
under the SLA (docs/placement.md).

    place(graphs, cost_tables, fleet=None, tco_params=None, catalog=None, *, sla_ms=None, rate=None,
          soft_sla_penalty=None, objective="tco", time_limit_s=30, gap=1e-4, profiles=None,
          hour_costs=None, transfer=None, with_baselines=True, ir="", inputs=None, threads=None) -> Plan

graphs: one OpGraph or a list (several workflows share one fleet); cost_tables: the matching
cost_table(s) ({op: {DeviceOption: OpCost | reason}}), or None with `profiles` (a Profiles) to use the
profile alone; profiles given with tables override them (costmodel.profiles.apply_profiles).
fleet: a costmodel.fleet.Fleet, a dict {"mode": buy|rent|owned, "devices": {id: cap | {max|owned: n}}},
or None (buy anything). tco_params: passed to costmodel.tco.device_hour_cost(device, params, mode);
hour_costs {device: {capex, power, opex, total}} overrides it. sla_ms / rate override every graph's.
Raises PlacementError with an explanation when no plan exists.
"""
from __future__ import annotations

import math
from dataclasses import replace

from hetagent.errors import PlacementError
from hetagent.placement import milp
from hetagent.placement.baselines import baselines as _baselines
from hetagent.placement.explain import explain
from hetagent.placement.plan import Baseline, Placement, Plan, Pool, format_plan
from hetagent.placement.solve import SolveInfo, solve, solve_problem

__all__ = ["place", "build_problem", "Plan", "Placement", "Pool", "Baseline", "format_plan", "explain",
           "solve", "solve_problem", "SolveInfo", "tokens_per_request"]

DEFAULT_LINK_GBPS = 100.0     # scale-out link assumed when neither catalog nor profile knows the devices
DEFAULT_LINK_MS = 0.01


def _fleet(fleet):
    """(mode, allowed device ids or None, caps {device: n}, owned {device: n} (every mode), extra catalog
    devices, fleet servers, refused {device: why})."""
    if fleet is None:
        return "buy", None, {}, {}, {}, (), {}
    refused: dict = {}
    if isinstance(fleet, dict):
        mode, devs, extra = fleet.get("mode", "buy"), fleet.get("devices"), {}
    else:
        mode, extra = getattr(fleet, "mode", "buy"), dict(getattr(fleet, "extra_devices", {}) or {})
        if hasattr(fleet, "resolve"):            # costmodel.fleet.Fleet: priced devices only
            _, entries, refused = fleet.resolve()
            devs = {i: {"max": e.max_count, "owned": e.owned} for i, e in entries.items()}
        else:
            devs = getattr(fleet, "devices", None)
    servers = tuple(getattr(fleet, "servers", ()) or ())
    if devs is None or devs == "all":
        return mode, None, {}, {}, extra, servers, refused
    caps, owned = {}, {}
    for d, spec in devs.items():
        if isinstance(spec, (int, float)):
            spec = {"max": int(spec)} if mode != "owned" else {"owned": int(spec)}
        spec = spec or {}
        own = int(spec.get("owned") or 0)
        cap = spec.get("max", spec.get("max_count"))
        if cap is None and mode == "owned" and (own or not servers):
            cap = own
        if cap is not None:
            caps[str(d)] = int(cap)
        if own:
            owned[str(d)] = own
    return mode, {str(d) for d in devs}, caps, owned, extra, servers, refused


def _hour_costs(devices, catalog, tco_params, mode, profiles, override):
    out = {}
    pc = {}
    if profiles is not None:
        from hetagent.costmodel.profiles import profile_hour_costs
        pc = profile_hour_costs(profiles)
    for d in devices:
        if override and d in override:
            out[d] = dict(override[d])
        elif d in pc:
            out[d] = pc[d]
        elif catalog and d in catalog and tco_params is not None:
            from hetagent.costmodel.tco import device_hour_cost
            out[d] = dict(device_hour_cost(catalog[d], tco_params, mode))
        else:
            out[d] = {"capex": 0.0, "power": 0.0, "opex": 0.0, "total": 0.0}
    return out


def _transfer_fn(catalog, profiles):
    from hetagent.costmodel.profiles import profile_transfer

    def transfer(a, b, kind, nbytes, tokens):
        if a == b:
            return 0.0, 0.0
        if profiles is not None:
            hit = profile_transfer(profiles, a, b, kind, tokens)
            if hit is not None:
                return hit
            if a in profiles.devices and b in profiles.devices and not (catalog and a in catalog):
                return 0.0, 0.0        # profile-only devices with no transfer entry: none given
        if catalog and a in catalog and b in catalog:
            from hetagent.costmodel.roofline import transfer_time_s
            return transfer_time_s(nbytes, catalog[a], catalog[b], same_node=False).total_s * 1e3, 0.0
        return DEFAULT_LINK_MS + nbytes / (DEFAULT_LINK_GBPS / 8 * 1e9) * 1e3, 0.0
    return transfer


def tokens_per_request(graph) -> float:
    """LLM tokens (prompt + generated) one request processes, weighted by executions."""
    t = 0.0
    for op in graph.operators:
        if op.kind == "llm.prefill":
            t += op.weight * float(op.attrs.get("prompt_tokens", 0) or 0)
        elif op.kind == "llm.decode":
            t += op.weight * float(op.attrs.get("output_tokens", 0) or 0)
        elif op.kind == "llm.remote":
            t += op.weight * float((op.attrs.get("prompt_tokens", 0) or 0) + (op.attrs.get("output_tokens", 0) or 0))
    return t


def build_problem(graphs, cost_tables, fleet=None, tco_params=None, catalog=None, *, sla_ms=None,
                  rate=None, soft_sla_penalty=None, objective="tco", profiles=None, hour_costs=None,
                  transfer=None, cache: dict | None = None, cross_vendor_kv: bool = False,
                  servers: bool = False) -> milp.Problem:
    """The milp.Problem place() solves (exposed for baselines, explain, pareto and benchmarks).
    servers: the fleet comes as whole server types and cloud instance types (configs/servers,
    configs/instances; the default catalog without measured profiles or custom hour costs); otherwise each
    device is bought or rented one at a time, and the plan's deployment notes say so."""
    graphs = [graphs] if not isinstance(graphs, (list, tuple)) else list(graphs)
    if cost_tables is None:
        if profiles is None:
            raise PlacementError("no cost table and no profile: nothing prices the operators")
        from hetagent.costmodel.profiles import profile_cost_table
        tables = [profile_cost_table(g, profiles) for g in graphs]
    else:
        tables = [cost_tables] if isinstance(cost_tables, dict) else list(cost_tables)
        if profiles is not None:
            from hetagent.costmodel.profiles import apply_profiles
            tables = [apply_profiles(t, g, profiles) for t, g in zip(tables, graphs)]
    if len(tables) != len(graphs):
        raise PlacementError(f"{len(graphs)} workflows but {len(tables)} cost tables")
    graphs = [replace(g, sla_ms=g.sla_ms if sla_ms is None else sla_ms,
                      rate_rps=g.rate_rps if rate is None else rate) for g in graphs]
    if objective not in ("tco", "offline"):
        raise PlacementError(f"unknown objective '{objective}'; choices: offline, tco")
    mode, allowed, caps, owned, extra, fleet_servers, refused = _fleet(fleet)
    if extra:
        catalog = {**(catalog or {}), **extra}
    devices = sorted({o.device for t in tables for opts in t.values() for o in opts})
    if profiles is not None and allowed is not None:
        allowed = allowed | (profiles.device_ids() - set(catalog or {}))
    mem, cpus = {}, set()
    for d in devices:
        dev = (catalog or {}).get(d)
        pdev = profiles.devices.get(d) if profiles is not None else None
        m = (pdev.memory_gb if pdev and pdev.memory_gb else None) or getattr(dev, "memory_gb", None)
        if m:
            mem[d] = float(m)
        if (pdev and pdev.cpu) or getattr(dev, "is_cpu", False) or d.startswith(("xeon-", "epyc-")):
            cpus.add(d)
    priced = [d for d in devices if allowed is None or d in allowed]
    notes = [f"{d}: refused: {why}" for d, why in sorted(refused.items())]
    vendors = {d: getattr((catalog or {}).get(d), "vendor", None) for d in devices
               if getattr((catalog or {}).get(d), "vendor", None)}
    common = dict(cache={} if cache is None else cache, mode=mode, vendors=vendors, cross_vendor_kv=cross_vendor_kv)
    transfer = transfer or _transfer_fn(catalog, profiles)
    if servers and tco_params is not None and hour_costs is None and profiles is None:
        offers, hour_cost, hosts, more = _server_problem(priced, devices, catalog, tco_params, mode, caps, owned,
                                                         fleet_servers, cpus)
        if allowed is not None:
            allowed = allowed | hosts
        if mode == "owned":       # what is owned caps each device: the accelerators of its owned servers
            for d in {of.device for of in offers.values()}:
                caps[d] = sum(of.count * (of.cap or 0) for of in offers.values() if of.device == d)
        cores = {d: float(getattr((catalog or {}).get(d), "cores", None) or 1.0) for d in cpus}
        return milp.Problem(graphs, tables, hour_cost, caps, allowed, transfer, mem, cpus, soft_sla_penalty,
                            objective, offers=offers, cores=cores, notes=notes + more, **common)
    why = "measured profiles" if profiles is not None else "custom hour costs" if hour_costs is not None else \
        "a catalog without server types"
    notes.append(f"devices are priced one at a time ({why}): no server or instance types")
    owned_cost = _hour_costs([d for d in devices if d in owned], catalog, tco_params, "owned", profiles,
                             hour_costs)
    return milp.Problem(graphs, tables, _hour_costs(priced, catalog, tco_params, mode, profiles, hour_costs),
                        caps, allowed, transfer, mem, cpus, soft_sla_penalty, objective,
                        owned={d: n for d, n in owned.items() if d in devices and mode != "owned"},
                        owned_hour_cost=owned_cost, notes=notes, **common)


def _server_problem(priced, devices, catalog, tco_params, mode, caps, owned, fleet_servers, cpus):
    """(offers, {device: $/hour of one device in its cheapest offer}, host CPU kinds, notes): the fleet as
    server and instance types; a device no type offers stays a single device at its own price."""
    from hetagent.errors import CostModelError
    from hetagent.placement.servers import ServerOffer, server_offers
    offers, without = server_offers(priced, catalog, tco_params, mode, owned=owned, fleet_servers=fleet_servers)
    notes = []
    for d in sorted(without):
        try:
            hc = _hour_costs([d], catalog, tco_params, mode, None, None)[d]
        except CostModelError as e:
            notes.append(f"{d}: refused: {e}")
            continue
        offers[d] = ServerOffer(d, d, 1, hc, cpu_only=d in cpus, cap=caps.get(d), kind="device", type=d,
                                note="no server type: a single device")
        notes.append(f"{d}: no server or instance type offers it; priced as a single device")
    hour_cost = {}
    for of in offers.values():
        per = of.total / max(of.count, 1)
        if of.device not in hour_cost or per < hour_cost[of.device]["total"]:
            hour_cost[of.device] = {k: float(v) / max(of.count, 1) for k, v in of.hour_cost.items()
                                    if k in ("capex", "power", "opex", "total")}
    hosts = {of.cpu for of in offers.values() if of.cpu and not of.cpu_only and of.cpu in devices}
    return offers, hour_cost, hosts, notes


def place(graphs, cost_tables=None, fleet=None, tco_params=None, catalog=None, *, sla_ms=None, rate=None,
          soft_sla_penalty=None, objective="tco", time_limit_s=30, gap=1e-4, profiles=None,
          hour_costs=None, transfer=None, with_baselines=True, ir="", inputs=None, threads=None,
          cache: dict | None = None, cross_vendor_kv: bool = False, servers: bool = False) -> Plan:
    """Solve the placement; return the Plan or raise PlacementError saying why none exists.
    cache: a dict kept between solves of the same cost tables (serving pools' replica candidates)."""
    pb = build_problem(graphs, cost_tables, fleet, tco_params, catalog, sla_ms=sla_ms, rate=rate,
                       soft_sla_penalty=soft_sla_penalty, objective=objective, profiles=profiles,
                       hour_costs=hour_costs, transfer=transfer, cache=cache, cross_vendor_kv=cross_vendor_kv,
                       servers=servers)
    out = solve_problem(pb, None, time_limit_s, gap, threads)
    if out.info.status == "no solution":
        raise PlacementError(f"the solver found no plan within {time_limit_s:g} s; allow more time "
                             "(--time-limit) or a larger gap")
    if out.evaluation is None:
        raise PlacementError(explain(pb, time_limit_s=min(time_limit_s, 30), prep=out.prep))
    bl = _baselines(pb, time_limit_s, gap) if with_baselines else []
    out = _no_worse_than_baselines(out, bl)
    given = {"sla_ms": sla_ms, "rate": rate, "soft_sla_penalty": soft_sla_penalty, "objective": objective,
             "time_limit_s": time_limit_s, "gap": gap, "cross_vendor_kv": cross_vendor_kv}
    if profiles is not None:
        given["profiles"] = profiles.text
    inputs = {**given, **(inputs or {})}
    for b in bl:              # each feasible baseline as a plan of its own, for validation by simulation
        if b.feasible and b.outcome is not None and b.outcome.evaluation is not None:
            b.plan = plan_from(pb, b.outcome, (), ir=ir, inputs=inputs, catalog=catalog)
    return plan_from(pb, out, bl, ir=ir, inputs=inputs, catalog=catalog)


def _no_worse_than_baselines(out, bl):
    """A homogeneous baseline is a restriction of the same problem, so the plan is never worse unless the
    solver stopped at its time limit; then the cheaper baseline's plan is returned."""
    feasible = [b for b in bl if b.feasible and b.outcome is not None and b.outcome.evaluation is not None]
    if not feasible or out.evaluation is None:
        return out
    best = min(feasible, key=lambda b: b.outcome.evaluation.per_hour)
    if best.outcome.evaluation.per_hour >= out.evaluation.per_hour - 1e-9:
        return out
    return best.outcome


def pools_of(pb: milp.Problem, out, catalog=None) -> tuple[list[Pool], dict]:
    """The plan's pools, and {(pool id, phase): pool entry id} for the placements."""
    from hetagent.costmodel.roofline import default_kv_precision
    multi = len(pb.graphs) > 1
    qual = (lambda gi, n: f"{pb.graphs[gi].workflow}/{n}") if multi else (lambda gi, n: n)
    pools, ids = [], {}
    for o in sorted(dict.fromkeys(out.choice.values()), key=lambda o: (o.group, o.engine)):
        grp = out.prep.groups[o.group]
        for phase in o.phases:
            if not any(c["phase"] == phase for c in grp.classes.values()):
                continue
            pid = o.group if not grp.llm else f"{o.group}/{phase}"
            engine_id = o.group if o.engine in ("colocated", "single") else pid
            ids[(o.group, phase)] = pid
            cids = [cid for cid, c in grp.classes.items() if c["phase"] == phase]
            load = sum(grp.classes[c]["load"] for c in cids)
            names = [qual(gi, n) for c in cids for gi, n in grp.classes[c]["ops"]]
            svc = sum(grp.classes[c]["load"] * o.load.service_ms[c] for c in cids) / load if load else \
                max(o.load.service_ms[c] for c in cids)
            heavy = max(cids, key=lambda c: (grp.classes[c]["load"] * o.load.service_ms[c], str(c)))
            kind = grp.classes[heavy]["op"].kind
            dev = (catalog or {}).get(o.device) if isinstance(catalog, dict) else None
            kvp = default_kv_precision(dev, o.option.precision) if grp.llm and dev is not None else \
                (o.option.precision if grp.llm else None)
            status, scale = _calibration(o.load.costs[heavy])
            keep = {"kv_retention": o.load.kv_retention, "retained_gb": o.load.retained_gb,
                    "prefill_saved_share": o.load.prefill_saved_share,
                    "retained_requests": o.load.retained_requests} if grp.llm else {}
            pools.append(Pool(pid, grp.model if grp.llm else None, kind, o.engine, engine_id, o.device,
                              o.option.tp, o.option.pp, o.option.precision, kvp, o.load.batch,
                              o.load.max_batch, o.load.replicas, names, load, svc,
                              o.load.tbt_ms if phase == "decode" else None, o.load.memory_gb, status,
                              [svc * scale[0], svc * scale[1]] if scale else None, **keep,
                              wait_ms=o.load.wait_ms, utilization=o.load.utilization))
    return pools, ids


def _calibration(c) -> tuple[str | None, tuple | None]:
    """(status, (low, high) factors on latency) of an OpCost: how sure the cost model is of it."""
    iv = getattr(c, "latency_interval_ms", None)
    status = getattr(c, "calibration_status", None)
    if not iv or iv[0] is None or not c.latency_ms:
        return status, None
    return status, (iv[0] / c.latency_ms, iv[1] / c.latency_ms)


def plan_from(pb: milp.Problem, out, baselines=(), ir="", inputs=None, catalog=None) -> Plan:
    from hetagent.placement.assign import assign
    from hetagent.placement.servers import bill, bom, device_counts
    ev, multi = out.evaluation, len(pb.graphs) > 1
    qual = (lambda gi, n: f"{pb.graphs[gi].workflow}/{n}") if multi else (lambda gi, n: n)
    pools, pool_id = pools_of(pb, out, catalog)
    deployment, used = assign(pb, out.prep, out.choice, ev.servers, pool_id, pb.mode)
    deployment["bill"] = bom(pb, used)
    if used != ev.servers:           # the layout needed more servers than the MILP's rows said: bill them
        extra, total = bill(pb, used)
        ev.per_hour += total - bill(pb, ev.servers)[1]
        ev.breakdown.update(extra)
        ev.counts = device_counts(pb, used)
        ev.servers = used
    placements, per_stage = [], {}
    for gi, g in enumerate(pb.graphs):
        for op in milp.topo_order_ops(g):
            key = (gi, op.name)
            ms = ev.op_ms.get(key, 0.0)
            per_stage[qual(gi, op.name)] = ms
            o = ev.placed.get(key)
            if o is not None:
                gid, cid, phase = out.prep.member_of[gi][op.name]
                c = o.load.costs[cid]
                status, scale = _calibration(c)
                placements.append(Placement(qual(gi, op.name), op.kind, o.device, o.option.tp, o.option.pp,
                                            o.load.batch, o.load.replicas, o.option.precision, ms, c.bound,
                                            pool_id.get((gid, phase)), status,
                                            [ms * scale[0], ms * scale[1]] if scale else None,
                                            o.load.service_ms[cid]))
            elif op.kind == milp.KV:     # the hand-off: shown on the decode side's device
                succ = [ev.placed.get((gi, s)) for s in g.successors(op.name)]
                dev = next((s.device for s in succ if s is not None), "")
                placements.append(Placement(qual(gi, op.name), op.kind, dev, 1, 1, 1, 0, "fp16", ms,
                                            "network" if ms > 0 else "latency"))
    worst = max(range(len(pb.graphs)), key=lambda i: ev.end_to_end_ms[i] / (pb.graphs[i].sla_ms or math.inf)
                if pb.graphs[i].sla_ms else -1.0)
    sla = pb.graphs[worst].sla_ms
    meets = all(g.sla_ms is None or ev.end_to_end_ms[i] <= g.sla_ms + 1e-6 for i, g in enumerate(pb.graphs))
    rph = 3600.0 * sum(g.rate_rps for g in pb.graphs)
    tph = 3600.0 * sum(g.rate_rps * tokens_per_request(g) for g in pb.graphs)
    per_req = ev.per_hour / rph if rph else None
    tco = {"per_hour": ev.per_hour, "per_million_tokens": ev.per_hour / tph * 1e6 if tph else None,
           "per_request": per_req, "per_thousand_requests": per_req * 1000 if per_req is not None else None,
           "breakdown": ev.breakdown}
    predicted = {"end_to_end_ms": ev.end_to_end_ms[worst], "per_stage_ms": per_stage, "sla_ms": sla,
                 "meets_sla": meets, "percentile": pb.graphs[worst].sla_percentile,
                 "p50_ms": None, "p95_ms": None, "p99_ms": None, "validated": None}
    fleet = {d: n for d, n in sorted(ev.counts.items()) if n > 0}
    return Plan([g.workflow for g in pb.graphs], fleet, placements, predicted, tco, list(baselines),
                out.info.to_json(), ir, dict(inputs or {}), pools=pools, deployment=deployment)
