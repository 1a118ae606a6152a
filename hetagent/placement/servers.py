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
    type: str = ""                   # the server or instance type id (plan.json's deployment.servers[].type)
    group: str = ""                  # offers of one physical server (an owned one, its slots filled or not):
                                     # together at most `cap`
    source: dict = field(default_factory=dict, compare=False)   # {figure: source or estimate} for the report

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


def type_of(of: ServerOffer) -> str:
    return of.type or of.id


def _offer(st, hour_cost: dict, params, oid: str | None = None, **kw) -> ServerOffer:
    """A ServerOffer of a server or instance type: its host cores less what serving engines keep per
    accelerator (the TCO file's host_cores_per_accelerator), its host memory."""
    keep = float(getattr(params, "host_cores_per_accelerator", 0.0) or 0.0) * st.count
    cpu_only = st.accelerator is None
    sources = {k: v for k, v in st.sources.items()}
    sources.update({k: f"estimate: {v}" for k, v in st.estimates.items() if k not in sources})
    return ServerOffer(oid or st.id, st.device, st.host_sockets if cpu_only else st.count, dict(hour_cost),
                       cpu=st.host_cpu, host_cores=0.0 if cpu_only else max(0.0, st.host_cores - keep),
                       host_memory_gb=0.0 if cpu_only else float(st.host_memory_gb), cpu_only=cpu_only,
                       kind=st.kind, type=st.id, source=sources, **kw)


def _partial(st, filled: int, catalog: dict):
    """The server type with only `filled` of its accelerator slots filled: the accelerators' price and power
    scale down by the missing cards (each at its catalog TDP), the host stays."""
    from dataclasses import replace
    if st.accelerator is None:            # a CPU-only server with some sockets empty: scaled per socket
        f = filled / st.host_sockets
        scale = (lambda x: None if x is None else x * f)
        return replace(st, host_sockets=filled, host_cores=int(st.host_cores * f), host_memory_gb=st.host_memory_gb * f,
                       power_w=scale(st.power_w), host_price_usd=scale(st.host_price_usd), price_usd=scale(st.price_usd))
    dev = catalog.get(st.accelerator)
    missing = st.count - filled
    power = st.power_w - missing * float(getattr(dev, "tdp_w", 0.0) or 0.0) if st.power_w is not None else None
    acc = st.accelerators_price_usd * filled / st.count if st.accelerators_price_usd is not None else None
    whole = acc + st.host_price_usd if acc is not None and st.host_price_usd is not None else None
    return replace(st, count=filled, power_w=power, accelerators_price_usd=acc, price_usd=whole)


def owned_mapping(device: str, owned: int, st, catalog: dict) -> list[tuple]:
    """[(server type, servers, note)]: `owned` devices as servers of their default server type `st`, full
    servers and one partially filled server (e.g. "one hgx-a100-8 with 2 of its 8 slots filled")."""
    size = st.count or st.host_sockets
    full, rest = divmod(owned, size)
    out = []
    if full:
        out.append((st, full, f"owned: {owned} {device} as {full} x {st.id} ({size} each)"
                    + (f" and one with {rest} of its {size} slots filled" if rest else "")))
    if rest:
        out.append((_partial(st, rest, catalog), 1, f"owned: one {st.id} with {rest} of its {size} slots "
                                                     f"filled ({device})"))
    return out


def server_offers(devices, catalog: dict, params, mode: str, *, owned: dict | None = None,
                  fleet_servers=(), config_dir=None) -> tuple[dict[str, ServerOffer], set]:
    """({offer id: ServerOffer}, devices without any server or instance type) for the fleet devices
    `devices` (accelerators and CPUs) of the default catalog. buy: every server type with a price, plus the
    owned servers (device counts mapped onto default server types, and `servers:` entries); rent: the instance
    types (on demand), dominated ones dropped; owned: only the owned servers. Owned servers cost what owning
    costs (server_hour_cost in mode owned: power, facility, support) and are capped at what is owned."""
    from hetagent.costmodel.servers import load_instance_types, load_server_types
    from hetagent.costmodel.tco import server_hour_cost
    from hetagent.errors import CostModelError
    owned = owned or {}
    servers = load_server_types(config_dir, catalog)
    types = load_instance_types(config_dir, catalog) if mode == "rent" else servers
    listed = {fs.type: fs for fs in fleet_servers}
    out: dict[str, ServerOffer] = {}

    def own(st, n, note, oid):
        hc = server_hour_cost(st, catalog, params, "owned")
        out[oid] = _offer(st, hc, params, oid, cap=n, note=note)

    for d in sorted(devices):
        mine = sorted((st for st in types.values() if st.device == d), key=lambda s: (s.count, s.id))
        if mode != "owned":
            for st in mine:
                fs = listed.get(st.id)
                cap = None if fs is None or fs.max_count is None else fs.max_count - fs.owned
                try:
                    hc = server_hour_cost(st, catalog, params, mode)
                except CostModelError:
                    continue                      # not for sale (price null): owned copies only
                if cap != 0:
                    out[st.id] = _offer(st, hc, params, cap=cap)
        if mode != "rent":
            for fs in fleet_servers:
                if fs.owned and fs.device == d:
                    own(servers[fs.type], fs.owned, f"owned: {fs.owned} x {fs.type}", f"{fs.type}.owned")
            if owned.get(d):
                default = next((st for st in servers.values() if d in st.default_for), None)
                if default is not None:
                    for st, n, note in owned_mapping(d, owned[d], default, catalog):
                        have, size = st.count or st.host_sockets, default.count or default.host_sockets
                        oid = f"{default.id}.owned" + ("" if have == size else f"-{have}of{size}")
                        own(st, n, note, oid)
                        if have < size and mode == "buy" and default.accelerator:
                            _fill(out, oid, st, default, catalog, params)
    out = prune(out)
    have = {of.device for of in out.values()}
    return out, {d for d in devices if d not in have}


def _fill(out: dict, oid: str, partial, full, catalog: dict, params) -> None:
    """Buy mode: the owned, partially filled server `oid` may get its empty slots filled with bought cards, to
    each power of two up to the full server (its TP groups then span owned and bought cards). The variants
    share the server (`group`): at most one of them is used."""
    from hetagent.costmodel.tco import server_hour_cost
    base = out[oid]
    out[oid] = ServerOffer(**{**base.__dict__, "group": oid})
    owned_hc = server_hour_cost(partial, catalog, params, "owned")
    bought_from = server_hour_cost(partial, catalog, params, "buy")
    size = 1
    while size < full.count:
        size *= 2
        if size <= partial.count:
            continue
        target = _partial(full, size, catalog) if size < full.count else full
        more = server_hour_cost(target, catalog, params, "buy")
        hc = {k: owned_hc[k] + more[k] - bought_from[k] for k in owned_hc}
        fid = f"{oid}+{size - partial.count}"
        out[fid] = _offer(target, hc, params, fid, cap=base.cap, group=oid,
                          note=f"{base.note}; {size - partial.count} more bought to fill it to {size}")


def prune(offers: dict[str, ServerOffer]) -> dict[str, ServerOffer]:
    """Drop offers another of the same device, size and host CPU beats on every count: no dearer, no fewer free
    host cores or memory, no tighter cap (rent mode's many providers of one instance shape)."""
    kept = {}
    for oid, a in offers.items():
        if a.owned or a.cap is not None:
            kept[oid] = a
            continue
        beaten = False
        for bid, b in offers.items():
            if bid == oid or b.cap is not None or b.owned or b.device != a.device or b.count != a.count \
                    or b.cpu != a.cpu or b.cpu_only != a.cpu_only:
                continue
            if b.total <= a.total and b.host_cores >= a.host_cores and b.host_memory_gb >= a.host_memory_gb \
                    and (b.total, -b.host_cores, -b.host_memory_gb, bid) < (a.total, -a.host_cores,
                                                                            -a.host_memory_gb, oid):
                beaten = True
                break
        if not beaten:
            kept[oid] = a
    return kept


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
    groups: dict = {}
    for of in offers.values():
        if of.group:
            groups.setdefault(of.group, []).append(of)
    for gid, members in sorted(groups.items()):      # an owned server is used once, whichever way it is filled
        cap = offers[gid].cap if gid in offers else members[0].cap
        if cap is not None and len(members) > 1:
            prob += pulp.LpConstraint(pulp.LpAffineExpression([(s[of.id], 1) for of in members]),
                                      pulp.LpConstraintLE, rhs=cap)
    if use_caps:              # device caps (max_count, owned mode) on whole servers: sum servers x size <= cap
        for dev, cap in sorted(pb.caps.items()):
            terms = [(s[of.id], of.count) for of in offers.values() if of.device == dev and of.kind != "device"]
            if terms:
                prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintLE, rhs=cap)
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


def bom(pb, servers: dict[str, int]) -> list[dict]:
    """plan.json's deployment.bill: one row per server or instance shape of the plan, its count, the unit $/hour
    by line (owned servers at their owned cost) and where the figures come from."""
    offers = offers_of(pb)
    rows = []
    for oid, n in sorted(servers.items()):
        of = offers[oid]
        unit = {k: round(float(of.hour_cost.get(k, 0.0) or 0.0), 6) for k in ("total", "power", *BILL_PARTS)}
        rows.append({"offer": oid, "type": type_of(of), "kind": of.kind, "device": of.device,
                     "accelerators": 0 if of.cpu_only else of.count, "servers": n, "usd_per_hour": unit,
                     "total_usd_per_hour": round(n * unit["total"], 6), "owned": bool(of.cap and "owned" in of.note),
                     "note": of.note, "sources": dict(of.source)})
    return rows


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
