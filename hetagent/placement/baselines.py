"""Homogeneous baselines: for each device kind K, every operator K can run goes on K, the rest on the
cheapest CPU; the same MILP, restricted, picks TP/batch/replicas and counts. A baseline that cannot
meet the SLA is reported infeasible with the TCO of its cheapest placement ignoring the SLA (the
paper's all-CO row: $0.06, 160 ms, violates)."""
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
    return sorted({o.device for t in prep.options for opts in t.values() for o in opts})


def cheapest_cpu(pb: milp.Problem, devices) -> str | None:
    cpus = [d for d in devices if d in pb.cpus]
    return min(cpus, key=lambda d: (pb.hour_cost.get(d, {}).get("total", 0.0), d)) if cpus else None


def baseline(pb: milp.Problem, device: str, time_limit_s: float = 30, gap: float = 1e-4,
             prep: milp.Prepared | None = None) -> Baseline:
    prep = prep or milp.prepare(replace(pb, objective="offline"))    # every option, whatever its latency
    cpu = cheapest_cpu(pb, _devices(prep))
    # for each operator: device if it can run there, else the cheapest CPU
    target = {}
    for gi, t in enumerate(prep.options):
        for op, opts in t.items():
            devs = {o.device for o in opts}
            target[(gi, op)] = device if device in devs else cpu

    restrict = {k: {d} if d else set() for k, d in target.items()}

    out = solve_problem(pb, restrict, time_limit_s, gap)
    rph = _requests_per_hour(pb)
    if out.evaluation is not None:
        ev = out.evaluation
        b = Baseline(device, True, ev.per_hour, ev.per_hour / rph if rph else None,
                     max(ev.end_to_end_ms, default=0.0))
        b.outcome = out  # kept so a cheaper baseline can seed the full problem (place())
        return b
    loose = solve_problem(replace(pb, objective="offline", soft_sla_penalty=None), restrict, time_limit_s,
                          gap, use_caps=True)
    if loose.evaluation is None:
        missing = [op for (gi, op), d in target.items() if d is None]
        note = f"cannot run {', '.join(missing[:3])}" if missing else "no placement within the fleet"
        return Baseline(device, False, None, None, None, note)
    ev = loose.evaluation      # evaluate() counts SLA-path latency whatever the objective
    return Baseline(device, False, ev.per_hour, ev.per_hour / rph if rph else None,
                    max(ev.end_to_end_ms, default=0.0), "misses the SLA")

def baselines(pb: milp.Problem, time_limit_s: float = 30, gap: float = 1e-4) -> list[Baseline]:
    """One Baseline per device kind that can run at least one operator."""
    prep = milp.prepare(replace(pb, objective="offline"))
    return [baseline(pb, d, time_limit_s, gap, prep) for d in _devices(prep)]
