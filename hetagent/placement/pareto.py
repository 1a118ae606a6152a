"""TCO versus SLA: sweep the end-to-end SLA from the fastest possible placement to the latency of the
cheapest one ignoring the SLA; every point is one MILP solve. The same SLA applies to every workflow."""
from __future__ import annotations

from dataclasses import replace

from hetagent.placement import milp
from hetagent.placement.solve import solve_problem


def _with_sla(pb, sla):
    return replace(pb, graphs=[replace(g, sla_ms=sla) for g in pb.graphs], soft_sla_penalty=None)


def pareto(pb: milp.Problem, slas: list[float] | None = None, points: int = 8,
           time_limit_s: float = 30, gap: float = 1e-4) -> list[dict]:
    """[{sla_ms, feasible, per_hour, end_to_end_ms, status}] sorted by SLA; points on the curve are
    the distinct (latency, cost) plans found."""
    if slas is None:
        fast = solve_problem(replace(pb, objective="makespan", soft_sla_penalty=None),
                             time_limit_s=time_limit_s)
        cheap = solve_problem(_with_sla(replace(pb, objective="tco"), None),   # cheapest, no SLA
                              time_limit_s=time_limit_s, gap=gap)
        if fast.evaluation is None or cheap.evaluation is None:
            return []
        lo, hi = max(fast.evaluation.end_to_end_ms), max(cheap.evaluation.end_to_end_ms)
        hi = max(hi, lo)
        k = max(2, points)
        # geometric spacing: cost changes fastest just above the fastest possible latency
        slas = [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)] if hi > lo > 0 else [lo]
    out = []
    for s in sorted(slas):
        r = solve_problem(_with_sla(replace(pb, objective="tco"), s), time_limit_s=time_limit_s, gap=gap)
        ev = r.evaluation
        out.append({"sla_ms": s, "feasible": ev is not None, "status": r.info.status,
                    "per_hour": ev.per_hour if ev else None,
                    "end_to_end_ms": max(ev.end_to_end_ms) if ev else None})
    return out
