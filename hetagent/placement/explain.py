"""Why no plan exists, in words a user can act on.

Checks, in order, and reports the first that finds something:
  1. an operator with no usable device option: the cost model's reasons (does not fit, ...), devices
     missing from the fleet, and stage SLAs (best TTFT / time between tokens vs the bound);
  2. an operator whose fastest option alone exceeds the end-to-end SLA;
  3. the fastest whole placement (a MILP minimizing latency, transfers included) exceeds the SLA:
     reports it and its critical path;
  4. inventory: the cheapest plan ignoring the fleet's caps needs more devices than it holds.
"""
from __future__ import annotations

from dataclasses import replace

from hetagent.placement import milp
from hetagent.placement.solve import solve_problem


def _opt(o) -> str:
    extra = [f"tp{o.tp}"] if o.tp > 1 else []
    extra += [f"pp{o.pp}"] if o.pp > 1 else []
    extra += [f"batch {o.batch}"] if o.batch > 1 else []
    return ", ".join([o.device] + extra)


def _no_option(pb, gi, op) -> str:
    table = pb.tables[gi].get(op.name, {})
    name = f"{op.kind} '{op.name}'"
    if not table:
        return f"{name} has no device option in the cost table"
    usable = {o: c for o, c in table.items() if not isinstance(c, str)
              and (pb.allowed is None or o.device in pb.allowed)}
    sla = op.stage_sla or {}
    if usable and op.kind == "llm.decode" and sla.get("tbt_ms") is not None:
        n = max(1.0, float(op.attrs.get("output_tokens", 1) or 1))
        o, v = min(((o, c.detail.get("tbt_ms", c.latency_ms / n)) for o, c in usable.items()),
                   key=lambda t: t[1])
        return (f"{name} needs {v:.1f} ms per token at best ({_opt(o)}) but the SLA allows "
                f"{sla['tbt_ms']:g} ms")
    if usable and op.kind == "llm.prefill" and sla.get("ttft_ms") is not None:
        o, v = min(((o, c.detail.get("ttft_ms", c.latency_ms)) for o, c in usable.items()),
                   key=lambda t: t[1])
        return (f"{name} needs {v:.1f} ms to the first token at best ({_opt(o)}) but the SLA allows "
                f"{sla['ttft_ms']:g} ms")
    if usable:
        devs = sorted({o.device for o in usable})
        return f"{name} can run on {', '.join(devs)}, but the fleet's inventory holds too few of them"
    fit = [f"{o.device}: {c}" for o, c in table.items() if isinstance(c, str)][:4]
    notin = sorted({o.device for o, c in table.items() if not isinstance(c, str)})
    parts = []
    if fit:
        parts.append("; ".join(fit))
    if notin:
        parts.append(f"it could run on {', '.join(notin)}, which the fleet does not offer")
    return f"{name} cannot run on any device: " + "; ".join(parts)


def explain(pb: milp.Problem, time_limit_s: float = 10) -> str:
    """One paragraph saying which operator and which bound make the problem infeasible."""
    prep = milp.prepare(replace(pb, soft_sla_penalty=0.0))   # keeps options slower than the SLA
    msgs = [_no_option(pb, gi, op) for gi, g in enumerate(pb.graphs) for op in g.operators
            if op.name in prep.options[gi] and not prep.options[gi][op.name]]
    if msgs:
        return "no plan: " + "; ".join(msgs)
    if pb.objective != "offline":
        for gi, g in enumerate(pb.graphs):
            if g.sla_ms is None:
                continue
            for op in g.operators:
                opts = prep.options[gi].get(op.name)
                if op.on_sla_path and opts:
                    o, c = min(opts.items(), key=lambda t: t[1].latency_ms)
                    if c.latency_ms > g.sla_ms + 1e-9:
                        msgs.append(f"{op.kind} '{op.name}' takes {c.latency_ms:.1f} ms at best "
                                    f"({_opt(o)}) but the SLA of '{g.workflow}' allows {g.sla_ms:g} ms")
        if msgs:
            return "no plan: " + "; ".join(msgs)
        fast = solve_problem(replace(pb, objective="makespan", soft_sla_penalty=None),
                             time_limit_s=time_limit_s, use_caps=False)
        if fast.evaluation is not None:
            ev = fast.evaluation
            for gi, g in enumerate(pb.graphs):
                if g.sla_ms is not None and ev.end_to_end_ms[gi] > g.sla_ms + 1e-6:
                    path = " -> ".join(
                        f"{n} ({fast.choice[(gi, n)].device}, {ev.op_ms.get((gi, n), 0):.1f} ms)"
                        if (gi, n) in fast.choice else f"{n} ({ev.op_ms.get((gi, n), 0):.1f} ms)"
                        for n in ev.critical[gi])
                    msgs.append(f"end-to-end: the fastest placement of '{g.workflow}' takes "
                                f"{ev.end_to_end_ms[gi]:.1f} ms, SLA {g.sla_ms:g} ms: the critical "
                                f"path is {path}")
            if msgs:
                return "no plan: " + "; ".join(msgs)
    if pb.caps:
        free = solve_problem(replace(pb, soft_sla_penalty=None), time_limit_s=time_limit_s,
                             use_caps=False)
        if free.evaluation is not None:
            over = [f"{need} x {d} (the fleet has {pb.caps[d]})"
                    for d, need in sorted(free.evaluation.counts.items())
                    if d in pb.caps and need > pb.caps[d]]
            if over:
                return "no plan: inventory too small: the cheapest plan meeting the SLA needs " + \
                    ", ".join(over)
        return ("no plan: the fleet's inventory cannot hold a placement that meets the SLA "
                f"(caps: {', '.join(f'{d} {n}' for d, n in sorted(pb.caps.items()))})")
    return "no plan: no placement meets the SLA, throughput and memory limits together"
