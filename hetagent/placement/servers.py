"""Servers and instances: accelerators are bought, rented or owned in whole servers of fixed shapes
(8 x H100 HGX, 4 x L40S PCIe, a g5.xlarge with one A10G), never one at a time. docs/placement.md.

A `ServerOffer` is one shape the fleet may hold: its accelerator kind and how many it carries, the host
CPU kind and the cores and memory the host leaves free for CPU-side pools, and what one costs per hour.
The MILP chooses an integer count per offer (`add_rows`); `cheapest` chooses counts for a given demand
(evaluations outside the solver); `bill` breaks the cost down per device kind. Without server types
(measured profiles' abstract devices, a custom `hour_costs`), each device is an offer of one: the
device-count model.

Packing. An accelerator replica owns tp x pp devices, each of its pp stages a TP group inside one
server. Server sizes and TP degrees are powers of two, so replicas pack into servers exactly when, for
every TP degree k, the servers with at least k slots hold every replica whose TP degree is k or more:
    sum_{t: count_t >= k} s_t count_t >= sum_{replicas with tp >= k} tp x pp      for each k.
CPU-side pools time-share host cores: a pool priced on CPU kind c needs share x cores(c) cores, served
by the free cores of the hosts of kind c and by CPU-only servers of kind c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pulp


@dataclass(frozen=True)
class ServerOffer:
    id: str                          # server or instance type id (or the device id: one device)
    device: str                      # the accelerator kind, or for a CPU-only offer its CPU kind
    count: int                       # accelerators per server (CPU-only: sockets)
    hour_cost: dict                  # $/hour per server: total, capex, power, opex (+ accelerators, host, ...)
    cpu: str | None = None           # the host's CPU kind (accelerator servers)
    host_cores: float = 0.0          # host cores free for CPU-side pools
    host_memory_gb: float = 0.0      # host memory free for CPU-side pools
    cpu_only: bool = False
    cap: int | None = None           # most servers of this shape (inventory)
    owned: int = 0                   # servers of this shape already owned (capex sunk)
    owned_hour_cost: dict = field(default_factory=dict)
    kind: str = "server"             # server | instance | device
    note: str = ""                   # e.g. "owned: 2 of its 8 slots filled"

    @property
    def total(self) -> float:
        return float(self.hour_cost.get("total", 0.0))


def unit_offers(pb) -> dict[str, ServerOffer]:
    """One offer per device of one unit: the device-count model (no server types known)."""
    out = {}
    for d, hc in pb.hour_cost.items():
        out[d] = ServerOffer(d, d, 1, dict(hc), cpu_only=d in pb.cpus, cap=pb.caps.get(d),
                             owned=pb.owned.get(d, 0), owned_hour_cost=dict(pb.owned_hour_cost.get(d, {})),
                             kind="device")
    return out


def offers_of(pb) -> dict[str, ServerOffer]:
    return pb.offers if pb.offers else unit_offers(pb)


def tp_sizes(options) -> list[int]:
    return sorted({o.option.tp for o in options})


def add_rows(prob, pb, z: dict, cost: list, use_caps: bool = True, cores_of=None) -> dict:
    """Server count variables and the rows tying them to the chosen options; appends the objective's
    terms to `cost`. Returns {offer id: variable}. cores_of(cpu kind) -> cores per socket."""
    offers = offers_of(pb)
    s = {}
    for oid in sorted(offers):
        of = offers[oid]
        cap = of.cap if use_caps else None
        s[oid] = prob.add_variable(f"s_{len(s)}", lowBound=0, upBound=cap, cat="Integer")
        if of.owned:      # the first `owned` servers cost only what owning them costs (power, opex)
            k = prob.add_variable(f"bought_{len(s)}", lowBound=0)
            prob += pulp.LpConstraint(pulp.LpAffineExpression([(k, 1), (s[oid], -1)]), pulp.LpConstraintGE,
                                      rhs=-of.owned)
            cost.append((k, of.total))
            cost.append((s[oid], float(of.owned_hour_cost.get("total", 0.0))))
            cost.append((k, -float(of.owned_hour_cost.get("total", 0.0))))
        elif of.total:
            cost.append((s[oid], of.total))
    by_dev: dict = {}
    for o, v in z.items():
        by_dev.setdefault(o.device, []).append((o, v))
    for dev, items in sorted(by_dev.items()):
        if items[0][0].cpu:
            continue
        hosting = [of for of in offers.values() if of.device == dev and not of.cpu_only]
        packed = any(of.kind != "device" for of in hosting)    # single devices: no server to fit a TP group in
        for k in sorted({o.option.tp for o, _ in items}) if packed else [1]:
            terms = [(s[of.id], of.count) for of in hosting if of.count >= k]
            terms += [(v, -o.devices) for o, v in items if o.option.tp >= k]
            prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintGE, rhs=0)
    cpu_items: dict = {}
    for o, v in z.items():
        if o.cpu:
            cpu_items.setdefault(o.device, []).append((o, v))
    for cpu, items in sorted(cpu_items.items()):
        per = float(cores_of(cpu)) if cores_of else 1.0
        terms = [(s[of.id], of.count * per) for of in offers.values() if of.cpu_only and of.device == cpu]
        terms += [(s[of.id], of.host_cores) for of in offers.values()
                  if not of.cpu_only and of.cpu == cpu and of.host_cores > 0]
        terms += [(v, -o.devices * per) for o, v in items]
        prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintGE, rhs=0)
        mem = pb.memory_gb.get(cpu)
        if mem:
            mterms = [(s[of.id], of.count * mem) for of in offers.values() if of.cpu_only and of.device == cpu]
            mterms += [(s[of.id], of.host_memory_gb) for of in offers.values()
                       if not of.cpu_only and of.cpu == cpu and of.host_memory_gb > 0]
            mterms += [(v, -o.memory_total_gb) for o, v in items]
            prob += pulp.LpConstraint(pulp.LpAffineExpression(mterms), pulp.LpConstraintGE, rhs=0)
    return s


def cheapest(pb, options, cores_of=None) -> dict[str, int]:
    """{offer id: count}: the cheapest servers holding the chosen options (a small exact MIP)."""
    prob = pulp.LpProblem("servers", pulp.LpMinimize)
    z = {o: 1.0 for o in options}
    fixed = {o: prob.add_variable(f"z_{k}", lowBound=1, upBound=1) for k, o in enumerate(z)}
    cost: list = []
    s = add_rows(prob, pb, fixed, cost, cores_of=cores_of)
    acc: dict = {}
    for v, c in cost:
        acc[v] = acc.get(v, 0.0) + c
    prob += pulp.LpAffineExpression(list(acc.items()))
    prob.solve(pulp.HiGHS(msg=False) if pulp.HiGHS().available() else pulp.PULP_CBC_CMD(msg=False))
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return {}
    return {oid: int(round(v.varValue or 0)) for oid, v in s.items() if (v.varValue or 0) > 0.5}


def device_counts(pb, servers: dict[str, int]) -> dict[str, int]:
    """plan.json's fleet: accelerators (and CPU-only sockets) of the servers; hosts are not counted."""
    offers = offers_of(pb)
    out: dict = {}
    for oid, n in servers.items():
        of = offers[oid]
        out[of.device] = out.get(of.device, 0) + n * of.count
    return out


BILL_PARTS = ("accelerators", "host", "network", "facility", "support")


def bill(pb, servers: dict[str, int]) -> tuple[dict, float]:
    """({device kind: {capex, power, opex, accelerators, host, network, facility, support, servers}},
    $/hour) of the servers; owned servers at their owned cost."""
    offers = offers_of(pb)
    out: dict = {}
    total = 0.0
    for oid, n in sorted(servers.items()):
        of = offers[oid]
        own = min(n, of.owned)
        row = out.setdefault(of.device, {k: 0.0 for k in ("capex", "power", "opex", *BILL_PARTS)} | {"servers": 0})
        for part, hc, m in ((None, of.hour_cost, n - own), (None, of.owned_hour_cost or of.hour_cost, own)):
            for k in ("capex", "power", "opex", *BILL_PARTS):
                row[k] += m * float(hc.get(k, 0.0) or 0.0)
            total += m * float(hc.get("total", 0.0) or 0.0)
        row["servers"] += n
    return out, total


def reason_short(pb, device: str, tp: int) -> str | None:
    """Why a TP group of `tp` devices cannot be hosted on `device`, or None."""
    offers = [of for of in offers_of(pb).values() if of.device == device and not of.cpu_only]
    if not offers or all(of.kind == "device" for of in offers):
        return None
    biggest = max(of.count for of in offers)
    if biggest < tp:
        shapes = ", ".join(sorted({f"{of.id} ({of.count})" for of in offers}))
        return f"a TP group of {tp} needs {tp} {device} in one server; the largest offered holds {biggest} ({shapes})"
    return None


def round_up(x: float) -> int:
    return int(math.ceil(x - 1e-9))
