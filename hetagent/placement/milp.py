"""The placement MILP over serving pools (PuLP model; solved by solve.py). docs/placement.md explains it.

A pool is one engine configuration serving every operator mapped to it, as one vLLM deployment serves
every call to its model (`pool_group`): an LLM's prefill and decode operators of every workflow, a
speech or embedding model's operators, a tool's calls. An LLM pool is either one co-located engine or a
prefill pool plus a decode pool (disaggregated, the KV cache crossing between them). An option is an
engine configuration (device, TP, PP, precision) with an integer replica count; costmodel.serving says
what it delivers at the pool's summed load: the batch the load fills, each operator's latency with
queueing, the time between tokens, memory (prepare()).

Variables
  z[o]     binary: option o of its pool (and phase) is chosen; one per pool and phase.
  n[d]     integer: devices of kind d in the fleet (0 <= n[d] <= cap[d]).
  L[c]     continuous: latency of one class of operators (same pool, same cost row) = sum z x latency.
  S[g,i]   continuous: start time of operator i (only when an SLA is modelled).
  E[g]     continuous: end-to-end latency of workflow g; s[g] >= 0 its SLA slack (soft SLA only).
  tt[e]    continuous: transfer time of an edge whose ends may sit on different devices.
  pc[e]    continuous: transfer price of such an edge (when the link has a price).

Devices: an accelerator replica owns tp x pp whole devices, n[d] >= sum z x replicas x tp x pp; CPUs are
time-shared, n[d] >= sum z x busy share, and where a CPU's memory is known n[d] x mem >= sum z x memory.
Transfers: Y[p,a] = sum of z over the options of operator p's pool and phase on device a. For an edge
p -> q with per-pair latency T[a,b] (0 when a == b):
  tt >= sum_{b != a} T[a,b] Y[q,b] - max_b T[a,b] (1 - Y[p,a])    for each device a of p.
An `llm.kv_transfer` operator is not placed: it is the edge prefill -> decode with its kv_bytes.
SLA: S[q] >= S[p] + L[p] + tt(p,q) on every edge, E >= S[i] + L[i], E <= sla + s. Stage SLAs (TTFT on
prefill operators, time between tokens on decode) remove the options that break them.
Objective ($/hour): sum n[d] x hour_cost[d] + per-execution charges + transfer charges + penalty x s.
objective="offline" drops all latency constraints; "makespan" minimizes sum E (cost breaks ties).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pulp

from hetagent.costmodel import serving
from hetagent.costmodel.operators import CPU_ONLY_KINDS, LLM_KINDS, MOE_KINDS
from hetagent.costmodel.types import DeviceOption
from hetagent.ir.opgraph import OpGraph
from hetagent.placement import servers

KV = "llm.kv_transfer"
TransferFn = Callable[[str, str, str, float, float], tuple[float, float]]
"""transfer(src_device, dst_device, kind, nbytes, tokens) -> (ms, $ per transfer)."""
_COPY = re.compile(r"\.it\d+(?=\.)")
INVENTORY_SHORT = "the fleet holds"     # marks the reasons that more inventory would remove


@dataclass
class Problem:
    graphs: list[OpGraph]
    tables: list[dict]                          # per graph: {op: {DeviceOption: OpCost | str reason}}
    hour_cost: dict[str, dict]                  # device -> {capex, power, opex, total} $/hour per device
    caps: dict[str, int] = field(default_factory=dict)       # most devices of a kind (inventory)
    allowed: set[str] | None = None             # device kinds the fleet may hold; None: all
    transfer: TransferFn | None = None          # None: transfers are free and instant
    memory_gb: dict[str, float] = field(default_factory=dict)  # device memory (CPU co-location limit)
    cpus: set[str] = field(default_factory=set)
    soft_sla_penalty: float | None = None       # $/hour per ms over the SLA; None: hard SLA
    objective: str = "tco"                      # tco | offline | makespan
    owned: dict = field(default_factory=dict)   # device -> units already owned (buy mode: capex sunk)
    owned_hour_cost: dict = field(default_factory=dict)  # device -> {capex, power, opex, total} of those
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # shared by solves of these tables
    offers: dict = field(default_factory=dict)  # server / instance shapes (servers.ServerOffer); {}: one per device
    cores: dict = field(default_factory=dict)   # CPU kind -> cores per socket (host cores for CPU-side pools)
    mode: str = "buy"                           # buy | rent | owned (plan.json's deployment.mode)
    vendors: dict = field(default_factory=dict)  # device -> vendor (KV transfers stay within one)
    cross_vendor_kv: bool = False               # allow a prefill pool and its decode pool on two vendors
    notes: list = field(default_factory=list)   # what the plan's deployment states (refused devices, pricing)


# ------------------------------------------------------------------------------------------ pools
def pool_group(g: OpGraph, op) -> tuple[str, str]:
    """(pool id, phase) of an operator. One engine serves every call to a model; a tool, a hosted API, a
    code node each have one service. Phase: prefill | decode (LLMs) | other."""
    a, kind = op.attrs, op.kind
    if kind in LLM_KINDS or kind in MOE_KINDS:
        pre = kind in ("llm.prefill", "expert.tp_prefill") or a.get("phase") == "prefill"
        return f"{a.get('model') or 'llm'}", "prefill" if pre else "decode"
    if kind in CPU_ONLY_KINDS:
        name = a.get("tool") or a.get("model") or f"{g.workflow}/{_COPY.sub('', op.name)}"
        return f"{kind}:{name}", "other"
    if a.get("model"):
        return f"{a['model']}", "other"
    return f"{kind}:{a.get('index_size', '')}x{a.get('dims', '')}", "other"


@dataclass
class Group:
    """A pool to be placed: its operators, grouped into classes that share one cost row."""
    id: str
    phases: tuple                   # ("prefill", "decode") for an LLM, else ("other",)
    llm: bool
    model: str | None
    kind: str                       # the IR op name of its first operator (pools of one kind: that kind)
    members: list = field(default_factory=list)    # (graph index, operator name, class id)
    classes: dict = field(default_factory=dict)    # class id -> {"phase", "row", "ops": [...], "load"}


@dataclass(frozen=True)
class PoolOption:
    group: str
    engine: str                     # colocated | prefill | decode | single
    option: DeviceOption            # device, tp, pp, batch (the pool's batch per replica), precision
    load: object                    # costmodel.serving.PoolLoad
    cpu: bool

    @property
    def phases(self) -> tuple:
        return {"colocated": ("prefill", "decode"), "prefill": ("prefill",), "decode": ("decode",)}.get(
            self.engine, ("other",))

    @property
    def device(self) -> str:
        return self.option.device

    @property
    def devices(self) -> float:
        return self.load.devices

    @property
    def memory_total_gb(self) -> float:
        """CPU pools: memory held across the share of devices they occupy."""
        return self.load.memory_gb * max(1.0, self.load.devices)

    @property
    def kv_retention(self) -> str:
        return getattr(self.load, "kv_retention", "none")

    def label(self) -> str:
        o = self.option
        keep = "" if self.kv_retention == "none" else f"/kv-{self.kv_retention}"
        return f"{o.device}/tp{o.tp}/pp{o.pp}/{o.precision}/x{self.load.replicas}/{self.engine}{keep}"

    def _identity(self) -> tuple:
        return (self.group, self.engine, self.option, self.load.replicas, self.kv_retention)

    def __hash__(self):
        return hash(self._identity())

    def __eq__(self, other):
        return isinstance(other, PoolOption) and self._identity() == other._identity()


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
    groups: dict                    # pool id -> Group
    options: dict                   # pool id -> [PoolOption] usable (filtered, pruned)
    member_of: list                 # per graph: {operator: (pool id, class id, phase)}
    transparent: list               # per graph: operators not placed (kv transfers, ops absent from table)
    edges: list
    dropped: dict                   # pool id -> [(label, why)] for explanations

    def uncovered(self) -> list:
        """(pool id, phase) pairs that no usable option serves: the problem is infeasible."""
        out = []
        for gid, grp in sorted(self.groups.items()):
            for ph in grp.phases:
                if any(c["phase"] == ph for c in grp.classes.values()) and \
                        not any(ph in o.phases for o in self.options[gid]):
                    out.append((gid, ph))
        return out


def op_load(g: OpGraph, op) -> float:
    return g.rate_rps * op.weight


def prepare(pb: Problem, restrict: dict | None = None, prune: bool = True) -> Prepared:
    """Pools, their options (engine configurations x replica counts with what they deliver), and the
    edges whose transfer may cost time or money.
    restrict: {(graph index, operator name): allowed device ids} (baselines); an engine keeps a device
    only if every operator it serves may use it (a co-located LLM engine: those of both phases).
    prune=False keeps dominated options (to find a plan's own)."""
    groups: dict = {}
    member_of, trans = [], []
    allowed_by_group: dict = {}
    for gi, (g, table) in enumerate(zip(pb.graphs, pb.tables)):
        mine, tr = {}, set()
        for op in g.operators:
            if op.name not in table or (op.kind == KV and pb.transfer is not None):
                tr.add(op.name)
                continue
            gid, phase = pool_group(g, op)
            grp = groups.get(gid)
            if grp is None:
                llm = op.kind in LLM_KINDS or op.kind in MOE_KINDS
                grp = groups[gid] = Group(gid, ("prefill", "decode") if llm else ("other",), llm,
                                          op.attrs.get("model"), op.kind)
            row = table[op.name]
            cid = (id(row), phase, tuple(sorted((op.stage_sla or {}).items())))
            cls = grp.classes.get(cid)
            if cls is None:
                cls = grp.classes[cid] = {"phase": phase, "row": row, "ops": [], "load": 0.0,
                                          "stage_sla": dict(op.stage_sla or {}), "on_path": [],
                                          "op": op}
            cls["ops"].append((gi, op.name))
            cls["load"] += op_load(g, op)
            if op.on_sla_path and g.sla_ms is not None:
                cls["on_path"].append(g.sla_ms)
            grp.members.append((gi, op.name, cid))
            mine[op.name] = (gid, cid, phase)
            if restrict is not None:
                only = restrict.get((gi, op.name))
                if only is not None:
                    per = allowed_by_group.setdefault(gid, {})
                    per[phase] = set(only) if phase not in per else per[phase] & set(only)
        member_of.append(mine)
        trans.append(tr)
    options, dropped = {}, {}
    timed = pb.objective != "offline"
    for gid, grp in groups.items():
        options[gid], dropped[gid] = _pool_options(pb, grp, allowed_by_group.get(gid), timed, prune)
    edges = _edges(pb, groups, options, member_of, trans)
    return Prepared(groups, options, member_of, trans, edges, dropped)


def _configs(pb: Problem, grp: Group, engine: str, phase_filter) -> dict:
    key = ("configs", engine, tuple(sorted((str(cid), id(c["row"])) for cid, c in grp.classes.items())))
    if key not in pb.cache:
        pb.cache[key] = _configs_uncached(grp, phase_filter)
    return pb.cache[key]


def _configs_uncached(grp: Group, phase_filter) -> dict:
    """{(device, tp, pp, precision): {class id: curve}} for the configurations on which every class of the
    chosen phases has at least one priced batch."""
    out: dict = {}
    classes = [(cid, c) for cid, c in grp.classes.items() if phase_filter(c["phase"])]
    if not classes:
        return {}
    for k, (cid, c) in enumerate(classes):
        per: dict = {}
        for o, cost in c["row"].items():
            if isinstance(cost, str):
                continue
            per.setdefault((o.device, o.tp, o.pp, o.precision), []).append((o.batch, cost))
        if k == 0:
            out = {key: {cid: tuple(sorted(v, key=lambda t: t[0]))} for key, v in per.items()}
        else:
            out = {key: {**d, cid: tuple(sorted(per[key], key=lambda t: t[0]))}
                   for key, d in out.items() if key in per}
    # precisions with the same rates (fp16 and bf16 on most devices) give identical engines: keep one
    seen, kept = set(), {}
    for key in sorted(out):
        sig = (key[:3], tuple((cid, tuple((b, c.latency_ms, c.memory_gb, c.price_per_execution)
                                          for b, c in curve)) for cid, curve in out[key].items()))
        if sig not in seen:
            seen.add(sig)
            kept[key] = out[key]
    return kept


def _pool_options(pb: Problem, grp: Group, only: dict | None, timed: bool, prune: bool = True):
    """Usable options of one pool and the reasons others were dropped."""
    why: list = []
    roles = [("colocated", lambda p: True), ("prefill", lambda p: p == "prefill"),
             ("decode", lambda p: p == "decode")] if grp.llm else [("single", lambda p: True)]
    out: list[PoolOption] = []
    for engine, phases in roles:
        for (dev, tp, pp, prec), curves in sorted(_configs(pb, grp, engine, phases).items()):
            label = f"{dev}/tp{tp}/pp{pp}/{prec}/{engine}"
            phases_here = {"colocated": ("prefill", "decode"), "prefill": ("prefill",),
                           "decode": ("decode",)}.get(engine, ("other",))
            if only is not None and any(ph in only and dev not in only[ph] for ph in phases_here):
                why.append((label, "excluded"))
                continue
            if pb.allowed is not None and dev not in pb.allowed:
                why.append((label, f"{dev} is not in the fleet"))
                continue
            cap = pb.caps.get(dev)
            short = servers.reason_short(pb, dev, tp) if pb.offers else None
            if short:
                why.append((label, short))
                continue
            if cap is not None and cap < tp * pp:
                why.append((label, f"a replica needs {tp * pp} {dev}; {INVENTORY_SHORT} {cap}"))
                continue
            members = [serving.Member(cid, grp.classes[cid]["op"], grp.classes[cid]["load"],
                                      grp.classes[cid]["phase"], curve) for cid, curve in curves.items()]
            cpu = dev in pb.cpus
            key = ("loads", engine, dev, tp, pp, prec, cpu,
                   tuple((str(m.key), id(m.curve), round(m.load_rps, 12)) for m in members))
            if key not in pb.cache:
                pb.cache[key] = serving.replica_candidates(members, engine, pp=pp, tp=tp, cpu=cpu)
            loads, reason = pb.cache[key]
            if not loads:
                why.append((label, reason or "no replica count carries the load"))
                continue
            for load in loads:
                lab = f"{label}/x{load.replicas}"
                bad = _stage_sla_miss(grp, load, timed, pb)
                if bad:
                    why.append((lab, bad))
                    continue
                if cap is not None and not cpu and load.devices > cap + 1e-9:
                    why.append((lab, f"needs {load.devices:g} {dev}; {INVENTORY_SHORT} {cap}"))
                    continue
                out.append(PoolOption(grp.id, engine, DeviceOption(dev, tp, pp, load.batch, prec), load, cpu))
    return (_undominated(grp, out, timed) if prune else out), why


def _stage_sla_miss(grp: Group, load, timed: bool, pb: Problem) -> str | None:
    if not timed:
        return None
    for cid, lat in load.latency_ms.items():
        c = grp.classes[cid]
        sla = c["stage_sla"]
        if c["phase"] == "prefill" and sla.get("ttft_ms") is not None and lat > sla["ttft_ms"] + 1e-9:
            return f"ttft {lat:.1f} ms > {sla['ttft_ms']:g} ms"
        if c["phase"] == "decode" and sla.get("tbt_ms") is not None and load.tbt_ms is not None \
                and load.tbt_ms > sla["tbt_ms"] + 1e-9:
            return f"tbt {load.tbt_ms:.1f} ms > {sla['tbt_ms']:g} ms"
        if pb.soft_sla_penalty is None and c["on_path"] and lat > min(c["on_path"]) + 1e-9:
            return f"{lat:.1f} ms alone exceeds the SLA of {min(c['on_path']):g} ms"
    return None


def _undominated(grp: Group, opts: list, timed: bool) -> list:
    """Options not dominated by another of the same engine kind on the same device: no slower for any
    class on an SLA path (when latency counts), no more devices, memory or per-execution charges."""
    if len(opts) <= 1:
        return opts
    timed_cids = sorted((cid for cid, c in grp.classes.items() if c["on_path"]), key=str) if timed else []
    out = []
    keys = {}
    for k, o in enumerate(opts):
        keys.setdefault((o.engine, o.device), []).append(k)
    for idx in keys.values():
        rows = []
        for k in idx:
            o = opts[k]
            lat = [o.load.latency_ms.get(cid, 0.0) for cid in timed_cids]
            rows.append(lat + [o.load.tbt_ms or 0.0 if timed else 0.0, o.devices, o.memory_total_gb,
                               o.load.price_per_hour])
        v = np.array(rows, dtype=float)
        order = np.lexsort(v.T[::-1])
        v = v[order]
        alive = np.ones(len(order), bool)
        for j in range(len(order)):
            if alive[j]:
                out.append(opts[idx[order[j]]])
                alive &= ~np.all(v >= v[j] - 1e-9, axis=1)
    return out


def _edges(pb: Problem, groups, options, member_of, trans) -> list:
    if pb.transfer is None:
        return []
    memo: dict = {}
    edges = []
    devs: dict = {}
    for gid, opts in options.items():
        for o in opts:
            for ph in o.phases:
                devs.setdefault((gid, ph), set()).add(o.device)
    for gi, g in enumerate(pb.graphs):
        mine = member_of[gi]
        byname = {o.name: o for o in g.operators}

        def devices_of(name):
            gid, _, phase = mine[name]
            return devs.get((gid, phase), set())

        def add(src, dst, via, kind, nbytes, tokens, weight, on_path):
            ms, usd = {}, {}
            for a in devices_of(src):
                for b in devices_of(dst):
                    if a != b:
                        key = (a, b, kind, nbytes, tokens)
                        if key not in memo:
                            memo[key] = pb.transfer(a, b, kind, nbytes, tokens)
                        ms[(a, b)], usd[(a, b)] = memo[key]
            if any(v > 1e-6 for v in ms.values()) or any(v > 0 for v in usd.values()):
                edges.append(Edge(gi, src, dst, via, weight, ms, usd, on_path))

        for a, b in g.edges:
            if a in mine and b in mine:
                pa = byname[a]
                add(a, b, None, "edge", float(pa.attrs.get("bytes_out", 0) or 0),
                    float(pa.attrs.get("tokens", 0) or 0), byname[b].weight,
                    pa.on_sla_path and byname[b].on_sla_path)
        for k in trans[gi]:
            op = byname[k]
            if op.kind != KV:
                continue
            for p in g.predecessors(k):
                for q in g.successors(k):
                    if p in mine and q in mine:
                        add(p, q, k, KV, float(op.attrs.get("kv_bytes", 0) or 0),
                            float(op.attrs.get("tokens", 0) or 0), op.weight,
                            op.on_sla_path and byname[p].on_sla_path and byname[q].on_sla_path)
    return edges


# ------------------------------------------------------------------------------------------ model
@dataclass
class Model:
    prob: pulp.LpProblem
    z: dict             # PoolOption -> var
    n: dict             # server offer id -> var (servers.add_rows)
    E: dict             # g -> var
    slack: dict         # g -> var
    prep: Prepared


def _lin(terms, const=0.0):
    """sum coef x var; repeated variables add up (LpAffineExpression keeps only the last of a list's
    duplicates: owned servers' cost terms used to cancel each other that way)."""
    acc: dict = {}
    for v, c in terms:
        acc[v] = acc.get(v, 0.0) + c
    return pulp.LpAffineExpression(list(acc.items()), constant=const)


def _ge(prob, terms, rhs=0.0):
    """sum coef*var >= rhs, built without PuLP's operator overloading (much faster)."""
    prob += pulp.LpConstraint(_lin(terms), pulp.LpConstraintGE, rhs=rhs)


def build(pb: Problem, prep: Prepared, use_caps: bool = True) -> Model:
    """The PuLP model. A pool without any usable option makes it infeasible (explain.py says why)."""
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    z: dict = {}
    cost = []                 # (var, coef) terms of the objective, $/hour
    timed = pb.objective != "offline"
    sla_graphs = {gi for gi, g in enumerate(pb.graphs)
                  if timed and (g.sla_ms is not None or pb.objective == "makespan")}
    Y: dict = {}              # (pool, phase, device) -> [vars]
    for gid in sorted(prep.options):
        grp, opts = prep.groups[gid], prep.options[gid]
        for o in opts:
            v = prob.add_variable(f"z_{len(z)}", cat="Binary")
            z[o] = v
            if o.load.price_per_hour:
                cost.append((v, o.load.price_per_hour))
            for ph in o.phases:
                Y.setdefault((gid, ph, o.device), []).append(v)
        for ph in grp.phases:
            if any(c["phase"] == ph for c in grp.classes.values()):
                prob += pulp.LpConstraint(_lin([(z[o], 1) for o in opts if ph in o.phases]),
                                          pulp.LpConstraintEQ, rhs=1)
        if grp.llm and not pb.cross_vendor_kv and pb.vendors:
            # no serving engine moves a KV cache between vendors today: prefill and decode on one vendor
            for v in sorted({pb.vendors.get(o.device) for o in opts} - {None}):
                terms = [(z[o], 1) for o in opts if "prefill" in o.phases and pb.vendors.get(o.device) == v]
                terms += [(z[o], -1) for o in opts if "decode" in o.phases and pb.vendors.get(o.device) == v]
                prob += pulp.LpConstraint(_lin(terms), pulp.LpConstraintEQ, rhs=0)
    # latency of each class on an SLA path: one variable, referenced by every operator of the class
    L: dict = {}
    for gid, grp in prep.groups.items():
        for cid, c in grp.classes.items():
            if not (c["on_path"] or pb.objective == "makespan") or not sla_graphs:
                continue
            terms = [(z[o], o.load.latency_ms[cid]) for o in prep.options[gid] if c["phase"] in o.phases]
            if not terms:
                continue
            var = prob.add_variable(f"L_{len(L)}", lowBound=0)
            prob += pulp.LpConstraint(_lin([(var, -1)] + terms), pulp.LpConstraintEQ, rhs=0)
            L[(gid, cid)] = var
    n = servers.add_rows(prob, pb, z, cost, use_caps, cores_of=lambda c: pb.cores.get(c, 1.0))
    ind: dict = {}            # (pool, phase, device) -> indicator (a variable or an expression's var)

    def y(gi, op, d):
        gid, _, phase = prep.member_of[gi][op]
        key = (gid, phase, d)
        if key not in ind:
            xs = Y.get(key, [])
            if len(xs) == 1:
                ind[key] = xs[0]
            else:
                ind[key] = prob.add_variable(f"y_{len(ind)}", lowBound=0, upBound=1)
                prob.addConstraint(pulp.LpConstraint(_lin([(ind[key], -1)] + [(v, 1) for v in xs]),
                                                     pulp.LpConstraintEQ, rhs=0))
        return ind[key]

    tt = {}
    for ei, e in enumerate(prep.edges):
        rate = pb.graphs[e.g].rate_rps * e.weight
        for name, mat in (("pc", e.usd), ("tt", e.ms)):
            if not any(v > 0 for v in mat.values()) or (name == "tt" and not (e.g in sla_graphs and e.on_path)):
                continue
            var = prob.add_variable(f"{name}_{ei}", lowBound=0)
            for a in sorted({a for a, _ in mat}):
                row = {b: v for (a2, b), v in mat.items() if a2 == a and v > 0}
                if not row:
                    continue
                big = max(row.values())
                # var >= sum_b T[a,b] y[dst,b] - big (1 - y[src,a])
                _ge(prob, [(var, 1)] + [(y(e.g, e.dst, b), -v) for b, v in sorted(row.items())]
                    + [(y(e.g, e.src, a), -big)], -big)
            if name == "pc":
                cost.append((var, 3600 * rate))
            else:
                tt[ei] = var
    E, slack = {}, {}
    for gi in sorted(sla_graphs):
        g = pb.graphs[gi]
        S = {op.name: prob.add_variable(f"S_{gi}_{k}", lowBound=0) for k, op in enumerate(g.operators)}
        E[gi] = prob.add_variable(f"E_{gi}", lowBound=0)
        mine = prep.member_of[gi]
        on = {op.name for op in g.operators if op.on_sla_path}

        def plus_t(name):
            if name not in on or name not in mine:
                return []
            gid, cid, _ = mine[name]
            return [(L[(gid, cid)], 1)] if (gid, cid) in L else []

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
    if prep.uncovered():                     # a pool with no option: an infeasible row
        prob += pulp.lpSum([]) >= 1
    return Model(prob, z, n, E, slack, prep)


def choice_of(m: Model) -> dict:
    """{(pool id, phase): PoolOption} read from a solved model."""
    out = {}
    for o, v in m.z.items():
        if (v.varValue or 0) > 0.5:
            for ph in o.phases:
                out[(o.group, ph)] = o
    return out


def servers_of(m: Model) -> dict:
    """{server offer id: count} read from a solved model."""
    return {oid: int(round(v.varValue or 0)) for oid, v in m.n.items() if (v.varValue or 0) > 0.5}


# --- evaluation of a given choice (independent of the solver) -------------------------------------

@dataclass
class Evaluation:
    end_to_end_ms: list[float]                 # per graph, SLA-path latency with transfers
    op_ms: dict                                # (g, op) -> latency ms (kv transfers: their link time)
    critical: list[list]                       # per graph: operators on the critical path
    counts: dict                               # device -> devices in the servers (plan.json's fleet)
    placed: dict                               # (g, op) -> PoolOption serving it
    breakdown: dict                            # device -> {capex, power, opex, accelerators, ..., servers}
    per_hour: float
    servers: dict = field(default_factory=dict)  # server offer id -> count


def option_of(prep: Prepared, choice: dict, gi: int, op: str):
    m = prep.member_of[gi].get(op)
    return None if m is None else choice.get((m[0], m[2]))


def evaluate(pb: Problem, prep: Prepared, choice: dict, servers_chosen: dict | None = None) -> Evaluation:
    """Latencies, critical paths, servers, fleet and bill of a choice. servers_chosen: {offer id: count}
    (the solver's); without it the cheapest servers that hold the choice."""
    op_ms, placed = {}, {}
    usage = {}
    chosen = list(dict.fromkeys(choice.values()))
    for o in chosen:
        if o.load.price_per_hour:
            usage[o.device] = usage.get(o.device, 0.0) + o.load.price_per_hour
    for gi, g in enumerate(pb.graphs):
        for op in g.operators:
            o = option_of(prep, choice, gi, op.name)
            if o is None:
                continue
            placed[(gi, op.name)] = o
            op_ms[(gi, op.name)] = o.load.latency_ms[prep.member_of[gi][op.name][1]]
    dev = {k: o.device for k, o in placed.items()}
    tms = {}
    for e in prep.edges:
        a, b = dev.get((e.g, e.src)), dev.get((e.g, e.dst))
        ms, usd = e.ms.get((a, b), 0.0), e.usd.get((a, b), 0.0)
        tms[(e.g, e.src, e.dst)] = ms if e.on_path else 0.0
        if usd:
            usage[b] = usage.get(b, 0.0) + 3600 * pb.graphs[e.g].rate_rps * e.weight * usd
        if e.via:
            op_ms[(e.g, e.via)] = max(op_ms.get((e.g, e.via), 0.0), ms)
    for gi, g in enumerate(pb.graphs):
        for k in prep.transparent[gi]:
            op_ms.setdefault((gi, k), 0.0)
    if servers_chosen is None:
        servers_chosen = servers.cheapest(pb, chosen, cores_of=lambda c: pb.cores.get(c, 1.0))
    counts = servers.device_counts(pb, servers_chosen)
    breakdown, per_hour = servers.bill(pb, servers_chosen)
    for d, u in usage.items():
        row = breakdown.setdefault(d, {k: 0.0 for k in ("capex", "power", "opex", *servers.BILL_PARTS)}
                                   | {"servers": 0})
        row["opex"] += u
        per_hour += u
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
    return Evaluation(e2e, op_ms, crit, counts, placed, breakdown, per_hour, dict(servers_chosen))


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
