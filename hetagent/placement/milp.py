"""The placement MILP (PuLP model; solved by solve.py). docs/placement.md explains it in full.

Variables
  x[g,i,o]  binary: operator i of workflow g runs on device option o (one per operator).
  n[d]      integer: devices of kind d in the fleet (0 <= n[d] <= cap[d]).
  S[g,i]    continuous: start time of operator i (only when an SLA is modelled).
  E[g]      continuous: end-to-end latency of workflow g; s[g] >= 0 its SLA slack (soft SLA only).
  tt[e]     continuous: transfer time of an edge whose ends may sit on different devices.
  pc[e]     continuous: transfer price of such an edge (when the link has a price).

Replicas are fluid: option o of operator i serves load L = rate * weight requests/s, one replica does
throughput_rps, so it occupies share = L / throughput_rps replicas of tp*pp devices each. Devices are
pooled: n[d] >= sum share * tp*pp * x (operators may share a device's time), and, where the device's
memory is known, n[d] * mem_d >= sum memory_gb * tp*pp * max(1, share) * x (every placed operator keeps
at least one copy resident). Both are linear in x: no replica variables. The plan reports
replicas = ceil(share) per operator.

Transfers: X[i,a] = sum of x[i,o] over options on device a. For an edge p -> q with per-pair latency
L[a,b] (0 when a == b: same device kind = same node):
  tt >= sum_{b != a} L[a,b] X[q,b] - max_b L[a,b] (1 - X[p,a])    for each device a of p,
exact at a minimum. An `llm.kv_transfer` operator is not placed: it is the edge prefill -> decode with
its kv_bytes. Transfer prices use the same form (pc instead of tt).

SLA: S[q] >= S[p] + T[p] + tt(p,q) on every edge, E >= S[i] + T[i], E <= sla + s, with
T[i] = sum latency_ms * x for operators on the SLA path (0 otherwise). Stage SLAs (ttft_ms on
llm.prefill, tbt_ms on llm.decode) remove the options that break them.

Objective ($/hour): sum n[d] * hour_cost[d] + 3600 * rate * weight * (price_per_execution x + pc)
+ penalty * s. objective="offline" drops all latency constraints (minimum $ at the offered rate =
minimum $ per token, which favours the largest batches); objective="makespan" minimizes sum E
(used to explain infeasibility).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pulp

from hetagent.ir.opgraph import OpGraph

KV = "llm.kv_transfer"
TransferFn = Callable[[str, str, str, float, float], tuple[float, float]]
"""transfer(src_device, dst_device, kind, nbytes, tokens) -> (ms, $ per transfer)."""


@dataclass
class Problem:
    graphs: list[OpGraph]
    tables: list[dict]                          # per graph: {op: {DeviceOption: OpCost | str reason}}
    hour_cost: dict[str, dict]                  # device -> {capex, power, opex, total} $/hour per device
    caps: dict[str, int] = field(default_factory=dict)       # most devices of a kind (inventory)
    allowed: set[str] | None = None             # device kinds the fleet may hold; None: all
    transfer: TransferFn | None = None          # None: transfers are free and instant
    memory_gb: dict[str, float] = field(default_factory=dict)  # device memory (co-location limit)
    cpus: set[str] = field(default_factory=set)
    soft_sla_penalty: float | None = None       # $/hour per ms over the SLA; None: hard SLA
    objective: str = "tco"                      # tco | offline | makespan
    owned: dict = field(default_factory=dict)   # device -> units already owned (buy mode: capex sunk)
    owned_hour_cost: dict = field(default_factory=dict)  # device -> {capex, power, opex, total} of those
    exact_limit: int = 1000                     # above this many options, thin them (see thin())


@dataclass
class Edge:
    g: int
    src: str            # producer (placed)
    dst: str            # consumer (placed)
    via: str | None     # the llm.kv_transfer operator carrying it, if any
    weight: float
    ms: dict            # (a, b) -> ms, a != b
    usd: dict           # (a, b) -> $
    on_path: bool


@dataclass
class Prepared:
    """Usable options per operator after fleet, stage-SLA and restriction filters."""
    options: list[dict]         # per graph: {op: {DeviceOption: OpCost}} for placed operators
    transparent: list[set]      # per graph: operators not placed (kv transfers, ops absent from table)
    edges: list[Edge]
    dropped: list[dict]         # per graph: {op: [(option, reason)]}, for explanations
    thinned: bool = False       # options were thinned (large instance): optimal for the thinned set


def op_load(g: OpGraph, op) -> float:
    return g.rate_rps * op.weight


def prepare(pb: Problem, restrict: dict | None = None, keep: dict | None = None) -> Prepared:
    """Filter options; find the edges whose transfer may cost time or money.
    restrict: {(graph index, operator name): allowed device ids} (baselines).
    keep: {(graph index, operator name): option} survive thinning (a known solution stays reachable)."""
    opts_all, trans_all, dropped_all, edges = [], [], [], []
    memo: dict = {}
    rows: dict = {}       # identical rows (same object, same context) are filtered and pruned once
    arrays: dict = {}     # id(row) -> _Row
    timed = pb.objective != "offline"
    for gi, (g, table) in enumerate(zip(pb.graphs, pb.tables)):
        opts, trans, dropped = {}, set(), {}
        for op in g.operators:
            if op.name not in table or (op.kind == KV and pb.transfer is not None):
                trans.add(op.name)
                continue
            only = restrict.get((gi, op.name)) if restrict is not None else None
            row = table[op.name]
            key = (id(row), op.kind, op.attrs.get("output_tokens"), tuple(sorted((op.stage_sla or {}).items())),
                   op.on_sla_path, op_load(g, op), g.sla_ms, None if only is None else frozenset(only))
            if key not in rows:
                if id(row) not in arrays:
                    arrays[id(row)] = _Row(row)
                rows[key] = _filter(pb, g, op, arrays[id(row)], only, timed)
            opts[op.name], dropped[op.name] = rows[key]
        opts_all.append(opts), trans_all.append(trans), dropped_all.append(dropped)
    big = sum(len(o) for t in opts_all for o in t.values()) > pb.exact_limit
    if big:
        thinned: dict = {}
        for gi, g in enumerate(pb.graphs):
            for op in g.operators:
                if op.name in opts_all[gi]:
                    o = opts_all[gi][op.name]
                    key = (id(o), op_load(g, op))
                    if key not in thinned:
                        thinned[key] = thin(pb, g, op, o, timed)
                    opts_all[gi][op.name] = thinned[key]
                    kept = (keep or {}).get((gi, op.name))
                    if kept is not None and kept in o and kept not in thinned[key]:
                        opts_all[gi][op.name] = {**thinned[key], kept: o[kept]}
    for gi, g in enumerate(pb.graphs):
        opts, trans = opts_all[gi], trans_all[gi]
        if pb.transfer is None:
            break
        byname = {o.name: o for o in g.operators}

        def add(src, dst, via, kind, nbytes, tokens, weight, on_path):
            ms, usd = {}, {}
            for a in {o.device for o in opts[src]}:
                for b in {o.device for o in opts[dst]}:
                    if a != b:
                        key = (a, b, kind, nbytes, tokens)
                        if key not in memo:
                            memo[key] = pb.transfer(a, b, kind, nbytes, tokens)
                        ms[(a, b)], usd[(a, b)] = memo[key]
            if any(v > 1e-6 for v in ms.values()) or any(v > 0 for v in usd.values()):
                edges.append(Edge(gi, src, dst, via, weight, ms, usd, on_path))

        for a, b in g.edges:
            if a in opts and b in opts:
                pa = byname[a]
                add(a, b, None, "edge", float(pa.attrs.get("bytes_out", 0) or 0),
                    float(pa.attrs.get("tokens", 0) or 0), byname[b].weight,
                    pa.on_sla_path and byname[b].on_sla_path)
        for k in trans:
            op = byname[k]
            if op.kind != KV:
                continue
            for p in g.predecessors(k):
                for q in g.successors(k):
                    if p in opts and q in opts:
                        add(p, q, k, KV, float(op.attrs.get("kv_bytes", 0) or 0),
                            float(op.attrs.get("tokens", 0) or 0), op.weight,
                            op.on_sla_path and byname[p].on_sla_path and byname[q].on_sla_path)
    return Prepared(opts_all, trans_all, edges, dropped_all, big)


class _Row:
    """One cost-table row (operator -> {option: OpCost | reason}) as arrays, so filtering and pruning
    thousands of options per operator is vectorized. Built once per row object."""

    def __init__(self, row: dict):
        self.reasons = [(o, c) for o, c in row.items() if isinstance(c, str)]
        self.opts = [o for o, c in row.items() if not isinstance(c, str)]
        self.costs = [row[o] for o in self.opts]
        cs = self.costs
        self.device = np.array([o.device for o in self.opts], dtype=object)
        self.dpr = np.array([o.tp * o.pp for o in self.opts], dtype=float)
        self.lat = np.array([c.latency_ms for c in cs], dtype=float)
        self.thr = np.array([c.throughput_rps for c in cs], dtype=float)
        self.mem = np.array([c.memory_gb for c in cs], dtype=float)
        self.price = np.array([c.price_per_execution for c in cs], dtype=float)
        self.ttft = np.array([c.detail.get("ttft_ms", c.latency_ms) for c in cs], dtype=float)
        self.tbt = np.array([c.detail.get("tbt_ms", np.nan) for c in cs], dtype=float)

    def share(self, load: float) -> np.ndarray:
        """Devices one operator at `load` requests/s occupies per option (replicas x tp*pp), >= 1e-6."""
        with np.errstate(divide="ignore", invalid="ignore"):
            sh = np.where(self.thr > 0, load / self.thr, 0.0)
        return np.maximum(sh, 1e-6) * self.dpr


def _undominated(r: _Row, idx: np.ndarray, load: float, timed: bool) -> list[int]:
    """Indices (of r's options, among idx) not dominated by another option on the same device: no
    faster (when latency counts), no more device share, memory, price or devices per replica. Exact
    for this model."""
    sh = r.share(load)[idx]
    per = sh / r.dpr[idx]
    v_all = np.column_stack([r.lat[idx] if timed else np.zeros(len(idx)), sh,
                             r.mem[idx] * r.dpr[idx] * np.maximum(1.0, per), r.price[idx], r.dpr[idx]])
    out = []
    devs = r.device[idx]
    for dev in dict.fromkeys(devs):
        sel = np.nonzero(devs == dev)[0]
        if len(sel) == 1:
            out.append(int(idx[sel[0]]))
            continue
        v = v_all[sel]
        order = np.lexsort(v.T[::-1])
        v, alive = v[order], np.ones(len(order), bool)
        for k in range(len(order)):
            if alive[k]:
                out.append(int(idx[sel[order[k]]]))
                alive &= ~np.all(v >= v[k] - 1e-12, axis=1)
    return sorted(out)


def thin(pb: Problem, g: OpGraph, op, opts: dict, timed: bool) -> dict:
    """Large instances only: per device keep the options on the 2-D front of latency versus effective
    $/hour = hour_cost * max(device share, memory / device memory) + per-execution charges. Not exact
    (it ignores how shares round and pool across operators); docs/placement.md says so."""
    L = op_load(g, op)
    by_dev: dict = {}
    for o, c in opts.items():
        sh = max(L / c.throughput_rps if c.throughput_rps > 0 else 0.0, 1e-6) * o.devices_per_replica
        memc = c.memory_gb * o.devices_per_replica * max(1.0, sh / o.devices_per_replica)
        cap = pb.memory_gb.get(o.device)
        use = max(sh, memc / cap if cap else 0.0)
        eff = use * pb.hour_cost.get(o.device, {}).get("total", 0.0) + 3600 * L * c.price_per_execution
        by_dev.setdefault(o.device, []).append((c.latency_ms if timed and op.on_sla_path else 0.0, eff, o, c))
    out = {}
    for items in by_dev.values():
        items.sort(key=lambda t: (t[0], t[1]))
        best = math.inf
        for lat, eff, o, c in items:
            if eff < best - 1e-12:
                out[o], best = c, eff
    return out


def _filter(pb, g, op, r: _Row, only, timed):
    """(usable options after the fleet, stage-SLA and SLA filters, pruned; [(option, why dropped)])."""
    n = len(r.opts)
    why = list(r.reasons)
    ok = np.ones(n, bool)              # not dropped yet: an option keeps the first reason that hits it
    reason = np.full(n, None, dtype=object)

    def drop(mask, text):
        mask = mask & ok
        ok[mask] = False
        for k in np.nonzero(mask)[0]:
            reason[k] = text(k) if callable(text) else text

    if only is not None:
        drop(np.array([d not in only for d in r.device], bool), "excluded")
    if pb.allowed is not None:
        drop(np.array([d not in pb.allowed for d in r.device], bool),
             lambda k: f"{r.device[k]} is not in the fleet")
    if pb.caps:
        cap = np.array([pb.caps.get(d, math.inf) for d in r.device], float)
        drop(cap < r.dpr, lambda k: f"the fleet has {pb.caps.get(r.device[k])} {r.device[k]}, "
                                    f"needs {int(r.dpr[k])}")
    sla = op.stage_sla or {}
    if timed and op.kind == "llm.prefill" and sla.get("ttft_ms") is not None:
        drop(r.ttft > sla["ttft_ms"] + 1e-9, lambda k: f"ttft {r.ttft[k]:.1f} ms > {sla['ttft_ms']:g} ms")
    if timed and op.kind == "llm.decode" and sla.get("tbt_ms") is not None:
        steps = max(1.0, float(op.attrs.get("output_tokens", 1) or 1))
        tbt = np.where(np.isnan(r.tbt), r.lat / steps, r.tbt)
        drop(tbt > sla["tbt_ms"] + 1e-9, lambda k: f"tbt {tbt[k]:.1f} ms > {sla['tbt_ms']:g} ms")
    if timed and pb.soft_sla_penalty is None and op.on_sla_path and g.sla_ms is not None:
        drop(r.lat > g.sla_ms + 1e-9,
             lambda k: f"{r.lat[k]:.1f} ms alone exceeds the SLA of {g.sla_ms:g} ms")
    why += [(r.opts[k], reason[k]) for k in np.nonzero(~ok)[0]]
    kept = _undominated(r, np.nonzero(ok)[0], op_load(g, op), timed and op.on_sla_path)
    return {r.opts[k]: r.costs[k] for k in kept}, why


@dataclass
class Model:
    prob: pulp.LpProblem
    x: dict             # (g, op, option) -> var
    n: dict             # device -> var
    E: dict             # g -> var
    slack: dict         # g -> var
    prep: Prepared


def _lin(terms, const=0.0):
    return pulp.LpAffineExpression(terms, constant=const)


def _ge(prob, terms, rhs=0.0):
    """sum coef*var >= rhs, built without PuLP's operator overloading (much faster)."""
    prob += pulp.LpConstraint(_lin(terms), pulp.LpConstraintGE, rhs=rhs)


def build(pb: Problem, prep: Prepared, use_caps: bool = True, facility_cuts: bool = True) -> Model:
    """The PuLP model. Operators without any usable option make it infeasible (explain.py says why).
    facility_cuts: n[d] >= the devices each operator alone needs on d, for every operator and device;
    they tighten the LP bound a little (39.17 against 39.12 $/h at 1000 operators) but double its rows
    and split more operators across options. Without them only the rows that integrality does not
    imply stay: a replica spanning more devices (tp*pp) than its share rounds up to."""
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    x, X, T = {}, {}, {}
    share, mem, opened = {}, {}, {}
    cost = []                 # (var, coef) terms of the objective, $/hour
    timed = pb.objective != "offline"
    sla_graphs = {gi for gi, g in enumerate(pb.graphs)
                  if timed and (g.sla_ms is not None or pb.objective == "makespan")}
    for gi, g in enumerate(pb.graphs):
        for op in g.operators:
            if op.name not in prep.options[gi]:
                continue
            opts = prep.options[gi][op.name]
            L = op_load(g, op)
            vs = []
            for o, c in sorted(opts.items()):
                v = prob.add_variable(f"x_{gi}_{len(x)}", cat="Binary")
                x[(gi, op.name, o)] = v
                vs.append((o, c, v))
                X.setdefault((gi, op.name), {}).setdefault(o.device, []).append(v)
                sh = max(L / c.throughput_rps if c.throughput_rps > 0 else 0.0, 1e-6) * o.devices_per_replica
                share.setdefault(o.device, []).append((sh, v, o.devices_per_replica))
                # this operator alone needs ceil(share) devices, and all tp*pp devices of a replica;
                # only the second is more than n[d] >= pooled share says once n[d] is integer
                whole = math.ceil(sh - 1e-9)
                if facility_cuts or o.devices_per_replica > whole:
                    opened.setdefault((gi, op.name, o.device), []).append(
                        (v, max(o.devices_per_replica, whole)))
                if c.memory_gb > 0:
                    mem.setdefault(o.device, []).append(
                        (c.memory_gb * o.devices_per_replica * max(1.0, sh / o.devices_per_replica), v))
                if c.price_per_execution:
                    cost.append((v, 3600 * L * c.price_per_execution))
            prob += pulp.LpConstraint(_lin([(v, 1) for _, _, v in vs]), pulp.LpConstraintEQ, rhs=1)
            if op.on_sla_path and gi in sla_graphs:
                t = prob.add_variable(f"t_{gi}_{len(T)}", lowBound=0)
                prob += pulp.LpConstraint(_lin([(t, -1)] + [(v, c.latency_ms) for _, c, v in vs]),
                                          pulp.LpConstraintEQ, rhs=0)
                T[(gi, op.name)] = t
    n = {}
    for d in sorted(share):
        cap = pb.caps.get(d) if use_caps else None
        n[d] = prob.add_variable(f"n_{len(n)}", lowBound=0, upBound=cap, cat="Integer")
        _ge(prob, [(n[d], 1)] + [(v, -s) for s, v, _ in share[d]])
        if pb.memory_gb.get(d) and d in mem:
            _ge(prob, [(n[d], pb.memory_gb[d])] + [(v, -m) for m, v in mem[d]])
        hc = pb.hour_cost.get(d, {}).get("total", 0.0)
        own = pb.owned.get(d, 0)
        if own:       # the first `own` units cost only what owning them costs (power, opex)
            k = prob.add_variable(f"bought_{len(n)}", lowBound=0)
            _ge(prob, [(k, 1), (n[d], -1)], -own)        # k >= n - own: units beyond the owned are bought
            cost.append((k, hc))
            cost.append((n[d], pb.owned_hour_cost.get(d, {}).get("total", 0.0)))
            cost.append((k, -pb.owned_hour_cost.get(d, {}).get("total", 0.0)))
        elif hc:
            cost.append((n[d], hc))

    for (gi, op, d), terms in opened.items():   # facility-location rows (see facility_cuts)
        _ge(prob, [(n[d], 1)] + [(v, -k) for v, k in terms])
    Y = {}                    # (g, op, device) -> continuous indicator = sum of x on that device

    def y(gi, op, d):
        key = (gi, op, d)
        if key not in Y:
            xs = X.get((gi, op), {}).get(d, [])
            if len(xs) == 1:
                Y[key] = xs[0]
            else:
                Y[key] = prob.add_variable(f"y_{len(Y)}", lowBound=0, upBound=1)
                prob.addConstraint(pulp.LpConstraint(_lin([(Y[key], -1)] + [(v, 1) for v in xs]),
                                                     pulp.LpConstraintEQ, rhs=0))
        return Y[key]

    tt = {}
    for ei, e in enumerate(prep.edges):
        L = pb.graphs[e.g].rate_rps * e.weight
        for name, mat in (("pc", e.usd), ("tt", e.ms)):
            if not any(v > 0 for v in mat.values()) or (name == "tt" and not (e.g in sla_graphs and e.on_path)):
                continue
            var = prob.add_variable(f"{name}_{ei}", lowBound=0)
            for a in sorted({a for a, _ in mat}):
                row = {b: v for (a2, b), v in mat.items() if a2 == a and v > 0}
                if not row:
                    continue
                big = max(row.values())
                # var >= sum_b L[a,b] y[dst,b] - big (1 - y[src,a])
                _ge(prob, [(var, 1)] + [(y(e.g, e.dst, b), -v) for b, v in row.items()]
                    + [(y(e.g, e.src, a), -big)], -big)
            if name == "pc":
                cost.append((var, 3600 * L))
            else:
                tt[ei] = var
    E, slack = {}, {}
    for gi in sorted(sla_graphs):
        g = pb.graphs[gi]
        S = {op.name: prob.add_variable(f"S_{gi}_{k}", lowBound=0) for k, op in enumerate(g.operators)}
        E[gi] = prob.add_variable(f"E_{gi}", lowBound=0)

        def plus_t(name):
            return [(T[(gi, name)], 1)] if (gi, name) in T else []

        has_succ = {a for a, _ in g.edges}
        for op in g.operators:
            if op.name not in has_succ:
                _ge(prob, [(E[gi], 1), (S[op.name], -1)] + [(v, -c) for v, c in plus_t(op.name)])
        for a, b in g.edges:
            _ge(prob, [(S[b], 1), (S[a], -1)] + [(v, -c) for v, c in plus_t(a)])
        for ei, e in enumerate(prep.edges):
            if e.g == gi and ei in tt:
                _ge(prob, [(S[e.dst], 1), (S[e.src], -1), (tt[ei], -1)] + [(v, -c) for v, c in plus_t(e.src)])
        if pb.objective == "makespan":
            continue
        if pb.soft_sla_penalty is not None:
            slack[gi] = prob.add_variable(f"slack_{gi}", lowBound=0)
            _ge(prob, [(E[gi], -1), (slack[gi], 1)], -g.sla_ms)
            cost.append((slack[gi], pb.soft_sla_penalty))
        else:
            _ge(prob, [(E[gi], -1)], -g.sla_ms)
    if pb.objective == "makespan":   # fastest placement; cost only breaks ties
        prob += _lin([(v, 1) for v in E.values()] + [(v, 1e-6 * c) for v, c in cost])
    else:
        prob += _lin(cost)
    for gi, g in enumerate(pb.graphs):   # an operator with no option: state it as an infeasible row
        for op in g.operators:
            if op.name in prep.options[gi] and not prep.options[gi][op.name]:
                prob += pulp.lpSum([]) >= 1
    return Model(prob, x, n, E, slack, prep)


def choice_of(m: Model) -> dict:
    """{(g, op): DeviceOption} read from a solved model."""
    out = {}
    for (gi, op, o), v in m.x.items():
        if (v.varValue or 0) > 0.5:
            out[(gi, op)] = o
    return out


# --- evaluation of a given assignment (independent of the solver) -------------------------------

@dataclass
class Evaluation:
    end_to_end_ms: list[float]                 # per graph, SLA-path latency with transfers
    op_ms: dict                                # (g, op) -> latency ms (kv transfers: their link time)
    critical: list[list]                       # per graph: operators on the critical path
    counts: dict                               # device -> devices needed
    replicas: dict                             # (g, op) -> ceil(share)
    breakdown: dict                            # device -> {capex, power, opex} $/hour
    per_hour: float


def evaluate(pb: Problem, prep: Prepared, choice: dict) -> Evaluation:
    op_ms, replicas, share, mem, usage, widest = {}, {}, {}, {}, {}, {}
    xfer_usd = {}
    for gi, g in enumerate(pb.graphs):
        for op in g.operators:
            o = choice.get((gi, op.name))
            if o is None:
                continue
            c = prep.options[gi][op.name][o]
            L = op_load(g, op)
            op_ms[(gi, op.name)] = c.latency_ms
            sh = max(L / c.throughput_rps if c.throughput_rps > 0 else 0.0, 1e-6)
            replicas[(gi, op.name)] = max(1, math.ceil(sh - 1e-9))
            share[o.device] = share.get(o.device, 0.0) + sh * o.devices_per_replica
            widest[o.device] = max(widest.get(o.device, 0), o.devices_per_replica)
            mem[o.device] = mem.get(o.device, 0.0) + c.memory_gb * o.devices_per_replica * max(1.0, sh)
            usage[o.device] = usage.get(o.device, 0.0) + 3600 * L * c.price_per_execution
    dev = {k: o.device for k, o in choice.items()}
    tms = {}
    for e in prep.edges:
        a, b = dev.get((e.g, e.src)), dev.get((e.g, e.dst))
        ms, usd = e.ms.get((a, b), 0.0), e.usd.get((a, b), 0.0)
        tms[(e.g, e.src, e.dst)] = ms if e.on_path else 0.0
        if usd:
            usage[b] = usage.get(b, 0.0) + 3600 * pb.graphs[e.g].rate_rps * e.weight * usd
        if e.via:
            op_ms[(e.g, e.via)] = max(op_ms.get((e.g, e.via), 0.0), ms)
            xfer_usd[(e.g, e.via)] = usd
    for gi, g in enumerate(pb.graphs):
        for k in prep.transparent[gi]:
            op_ms.setdefault((gi, k), 0.0)
    counts = {}
    for d in share:
        need = math.ceil(share[d] - 1e-9)
        if pb.memory_gb.get(d):
            need = max(need, math.ceil(mem[d] / pb.memory_gb[d] - 1e-9))
        counts[d] = max(need, widest[d])
    breakdown, per_hour = {}, sum(usage.values())
    for d in sorted(set(counts) | set(usage)):
        k = counts.get(d, 0)
        own = min(k, pb.owned.get(d, 0))
        hc, ho = pb.hour_cost.get(d, {}), pb.owned_hour_cost.get(d, {})
        part = {f: (k - own) * hc.get(f, 0.0) + own * ho.get(f, 0.0) for f in ("capex", "power", "opex")}
        part["opex"] += usage.get(d, 0.0)
        breakdown[d] = part
        per_hour += (k - own) * hc.get("total", 0.0) + own * ho.get("total", 0.0)
    e2e, crit = [], []
    for gi, g in enumerate(pb.graphs):
        fin, arg = {}, {}
        byname = {o.name: o for o in g.operators}
        for name in topo_order(g):
            op = byname[name]
            start, best = 0.0, None
            for p in g.predecessors(name):
                cand = [(fin[p], p)]
                if p in prep.transparent[gi] and byname[p].kind == KV:
                    cand += [(fin[q] + tms.get((gi, q, name), 0.0), p) for q in g.predecessors(p)]
                else:
                    cand.append((fin[p] + tms.get((gi, p, name), 0.0), p))
                for t, who in cand:
                    if t > start or best is None:
                        start, best = max(start, t), who
            own = op_ms.get((gi, name), 0.0) if op.on_sla_path and name not in prep.transparent[gi] else 0.0
            fin[name], arg[name] = start + own, best
        end = max(fin.values(), default=0.0)
        e2e.append(end)
        path, cur = [], max(fin, key=fin.get) if fin else None
        while cur is not None:
            path.append(cur)
            cur = arg[cur]
        crit.append(path[::-1])
    return Evaluation(e2e, op_ms, crit, counts, replicas, breakdown, per_hour)


def topo_order(g: OpGraph) -> list[str]:
    indeg = {o.name: 0 for o in g.operators}
    succ: dict = {}
    for a, b in g.edges:
        indeg[b] += 1
        succ.setdefault(a, []).append(b)
    ready = [n for n in indeg if indeg[n] == 0]
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for b in succ.get(n, []):
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    if len(out) != len(indeg):
        raise ValueError(f"workflow '{g.workflow}' has a cycle among its operators")
    return out


def topo_order_ops(g: OpGraph) -> list:
    by = {o.name: o for o in g.operators}
    return [by[n] for n in topo_order(g)]
