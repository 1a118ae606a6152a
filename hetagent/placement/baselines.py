"""Homogeneous baselines: for each device kind K, every pool K can serve goes on K, the rest on the
cheapest CPU; the same MILP, restricted, picks engines, TP, replicas and counts, sized and queued by the
same rules as the plan. A baseline that cannot meet the SLA is reported infeasible with the TCO of its
cheapest placement ignoring the SLA (the paper's all-CO row: $0.06, 160 ms, violates)."""
from __future__ import annotations

from dataclasses import replace

from hetagent.placement import milp
from hetagent.placement.plan import Baseline
from hetagent.placement.solve import solve_problem


def _requests_per_hour(pb) -> float:
    return 3600.0 * sum(g.rate_rps for g in pb.graphs)


def baseline_devices(pb: milp.Problem) -> list[str]:
    return _devices(milp.prepare(replace(pb, objective="offline")))


def _devices(prep) -> list[str]:
    return sorted({o.device for opts in prep.options.values() for o in opts})


def cheapest_cpu(pb: milp.Problem, devices, host_of: str | None = None) -> str | None:
    """The CPU the rest goes on: with server offers, the host CPU of `host_of`'s cheapest server (its free
    cores come with it), else the cheapest CPU that can be bought or rented on its own."""
    cpus = [d for d in devices if d in pb.cpus]
    if pb.offers:
        hosts = sorted((of.total / max(of.count, 1), of.cpu) for of in pb.offers.values()
                       if of.device == host_of and not of.cpu_only and of.cpu in cpus)
        if hosts:
            return hosts[0][1]
        cpus = [d for d in cpus if d in pb.hour_cost]
    return min(cpus, key=lambda d: (pb.hour_cost.get(d, {}).get("total", 0.0), d)) if cpus else None


def restriction(pb: milp.Problem, prep: milp.Prepared, device: str) -> dict:
    """{(graph index, operator): {device}}: the device where the operator's pool can run there, else the
    cheapest CPU (an empty set when there is none)."""
    cpu = cheapest_cpu(pb, _devices(prep), device)
    out = {}
    for gi, mine in enumerate(prep.member_of):
        for op, (gid, _, _) in mine.items():
            devs = {o.device for o in prep.options[gid]}
            d = device if device in devs else cpu
            out[(gi, op)] = {d} if d else set()
    return out


def baseline(pb: milp.Problem, device: str, time_limit_s: float = 30, gap: float = 1e-4,
             prep: milp.Prepared | None = None) -> Baseline:
    prep = prep or milp.prepare(replace(pb, objective="offline"))    # every option, whatever its latency
    restrict = restriction(pb, prep, device)
    out = solve_problem(pb, restrict, time_limit_s, gap)
    rph = _requests_per_hour(pb)
    if out.evaluation is not None:
        ev = out.evaluation
        b = Baseline(device, True, ev.per_hour, ev.per_hour / rph if rph else None,
                     max(ev.end_to_end_ms, default=0.0))
        b.outcome = out  # kept so that place() never returns a plan worse than a baseline
        return b
    loose = solve_problem(replace(pb, objective="offline", soft_sla_penalty=None), restrict, time_limit_s,
                          gap, use_caps=True)
    if loose.evaluation is None:
        missing = [op for (gi, op), d in restrict.items() if not d]
        note = f"cannot run {', '.join(missing[:3])}" if missing else "no placement within the fleet"
        return Baseline(device, False, None, None, None, note)
    ev = loose.evaluation      # evaluate() counts SLA-path latency whatever the objective
    return Baseline(device, False, ev.per_hour, ev.per_hour / rph if rph else None,
                    max(ev.end_to_end_ms, default=0.0), "misses the SLA")


def baselines(pb: milp.Problem, time_limit_s: float = 30, gap: float = 1e-4) -> list[Baseline]:
    """One Baseline per device kind that can run at least one pool."""
    prep = milp.prepare(replace(pb, objective="offline"))
    return [baseline(pb, d, time_limit_s, gap, prep) for d in _devices(prep)
            if not (pb.offers and d not in pb.hour_cost)]     # a host CPU only: nothing to buy on its own
