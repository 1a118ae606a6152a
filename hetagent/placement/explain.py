"""Why no plan exists, in words a user can act on: which pool, which device, what is short.

Checks, in order, and reports the first that finds something:
  1. a pool with no usable engine option: the cost model's reasons (does not fit, ...), devices missing
     from the fleet, loads no replica count carries, and stage SLAs (best TTFT / time between tokens
     against the bound);
  2. a pool whose fastest option alone exceeds the end-to-end SLA for one of its operators;
  3. the fastest whole placement (a MILP minimizing latency, transfers included) exceeds the SLA:
     reports it and its critical path;
  4. inventory: the cheapest plan ignoring the fleet's caps needs more devices than it holds: the pools, the
     server types it would put them in and the servers the fleet holds.
A pool whose TP group is wider than every server offered for a device says so (servers.reason_short).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hetagent.placement import milp, servers
from hetagent.placement.solve import solve_problem

MAX_REASONS = 3


def _pool_name(grp) -> str:
    return f"pool '{grp.id}'"


def _no_option(pb, prep, gid, phase) -> str:
    grp = prep.groups[gid]
    what = f"{_pool_name(grp)}" + (f" ({phase})" if phase != "other" else "")
    reasons = []
    for c in grp.classes.values():
        for o, cost in c["row"].items():
            if isinstance(cost, str):
                reasons.append(f"{o.device}: {cost}")
    dropped = prep.dropped.get(gid, [])
    if not any(not isinstance(cost, str) for c in grp.classes.values() for cost in c["row"].values()):
        return f"{what} cannot run on any device: " + _summary(reasons)
    if not dropped:
        return (f"{what} has no engine configuration on which all of its operators "
                f"({len(grp.members)}) can run: " + _summary(reasons))
    items = [f"{lab}: {why}" for lab, why in dropped]
    usable = [i for i in items if "excluded" not in i and "is not in the fleet" not in i]
    if usable and all(milp.INVENTORY_SHORT in i for i in usable):
        return f"inventory too small for {what}: " + _summary(usable)
    return f"{what} has no usable engine option: " + _summary(items)


def _summary(items: list[str]) -> str:
    """The most common reasons first, the rest counted."""
    if not items:
        return "no option was priced"
    by_reason = Counter(i.split(": ", 1)[-1] for i in items)
    first = {}
    for i in items:
        first.setdefault(i.split(": ", 1)[-1], i)
    top = [first[r] for r, _ in by_reason.most_common(MAX_REASONS)]
    more = len(items) - sum(n for _, n in by_reason.most_common(MAX_REASONS))
    return "; ".join(top) + (f"; and {more} more" if more > 0 else "")


def _in_servers(pb, chosen: dict, device: str) -> str:
    """' in 2 x hgx-a100-8': the server types the uncapped plan puts `device` in ('' for single devices)."""
    offers = servers.offers_of(pb)
    kinds: dict = {}
    for oid, n in sorted(chosen.items()):
        of = offers.get(oid)
        if of is not None and of.device == device and of.kind != "device":
            kinds[servers.type_of(of)] = kinds.get(servers.type_of(of), 0) + n
    return " in " + " + ".join(f"{n} x {t}" for t, n in sorted(kinds.items())) if kinds else ""


def _held(pb, device: str) -> str:
    """': 1 x hgx-a100-8': the servers of `device` the fleet holds at most ('' when unbounded or single)."""
    held = [(servers.type_of(of), of.cap, of.note) for of in servers.offers_of(pb).values()
            if of.device == device and of.kind != "device" and of.cap and not (of.group and of.group != of.id)]
    return ": " + ", ".join(f"{n} x {t}" + (f" ({note})" if note and "slots" in note else "")
                            for t, n, note in sorted(held)) if held else ""


def explain(pb: milp.Problem, time_limit_s: float = 10, prep: milp.Prepared | None = None) -> str:
    """One paragraph saying which pool and which bound make the problem infeasible."""
    loose = milp.prepare(replace(pb, soft_sla_penalty=0.0))   # keeps options slower than the SLA
    msgs = [_no_option(pb, loose, gid, phase) for gid, phase in loose.uncovered()]
    if msgs:
        return "no plan: " + "; ".join(msgs)
    if pb.objective != "offline":
        for gid, opts in sorted(loose.options.items()):
            grp = loose.groups[gid]
            for cid, c in grp.classes.items():
                if not c["on_path"]:
                    continue
                cands = [o for o in opts if c["phase"] in o.phases]
                if not cands:
                    continue
                best = min(cands, key=lambda o: o.load.latency_ms[cid])
                lat = best.load.latency_ms[cid]
                if lat > min(c["on_path"]) + 1e-9:
                    msgs.append(f"{_pool_name(grp)}: '{c['ops'][0][1]}' takes {lat:.1f} ms at best "
                                f"({best.label()}) but the SLA allows {min(c['on_path']):g} ms")
        if msgs:
            return "no plan: " + "; ".join(msgs)
        fast = solve_problem(replace(pb, objective="makespan", soft_sla_penalty=None),
                             time_limit_s=time_limit_s, use_caps=False)
        if fast.evaluation is not None:
            ev = fast.evaluation
            for gi, g in enumerate(pb.graphs):
                if g.sla_ms is not None and ev.end_to_end_ms[gi] > g.sla_ms + 1e-6:
                    path = " -> ".join(
                        f"{n} ({ev.placed[(gi, n)].device}, {ev.op_ms.get((gi, n), 0):.1f} ms)"
                        if (gi, n) in ev.placed else f"{n} ({ev.op_ms.get((gi, n), 0):.1f} ms)"
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
            over = []
            for d, need in sorted(free.evaluation.counts.items()):
                if d in pb.caps and need > pb.caps[d]:
                    users = sorted({o.group for o in free.choice.values() if o.device == d})
                    over.append(f"{need} x {d}{_in_servers(pb, free.evaluation.servers, d)} (the fleet has "
                                f"{pb.caps[d]}{_held(pb, d)}; for pool(s) {', '.join(users)})")
            if over:
                return "no plan: inventory too small: the cheapest plan meeting the SLA needs " + \
                    ", ".join(over)
        return ("no plan: the fleet's inventory cannot hold a placement that meets the SLA "
                f"(caps: {', '.join(f'{d} {n}' for d, n in sorted(pb.caps.items()))})")
    return "no plan: no placement meets the SLA, throughput and memory limits together"
