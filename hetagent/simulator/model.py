"""What the simulator executes: plan.json turned into a station per operator (its service times), the
serving pools those stations share (servers, queues, batches), a DAG with guards (loop copies, branch
arms). See docs/simulator.md.

A pool is one entry of the plan's `pools` (the two entries of a co-located engine are one pool): every
operator mapped to it queues for the same servers, as every call to a model reaches one deployment.
Pool types, from the operators' kinds:
- `delay`   infinite servers, one per operator: llm.kv_transfer (link time between the prefill's and the
            decode's device, 0 on one device kind), llm.remote (network latency + ms per output token).
- `multi`   c parallel servers, one execution each, FIFO: tool.lookup (c = replicas x TOOL_CONCURRENCY,
            lognormal latency), the other CPU-only kinds (c = replicas x the CPU's cores; their
            throughput in the cost model is cores / latency).
- `batch`   replicas x pp servers, each takes up to max_batch / pp waiting executions of one operator at
            once (dynamic batching: whatever is queued when a server frees up, no waiting for a full
            batch); a batch of k takes the cost model's latency at batch k: llm.prefill of a prefill pool,
            the MoE parts, speech, embed, memory search and rerank.
- `decode`  continuous batching, `replicas` replicas of max_batch slots; all active sequences advance one
            token per step, a step takes the cost model's time per token at the current number of active
            sequences and their mean context; sequences join and leave between steps (fluid). A
            co-located engine also takes its model's prompts: a replica runs one prefill at a time (the
            prompts of one operator queued at its start, as one chunk), during which its decode steps
            last the prefill's time longer (chunked prefill), and the prompt is done after that step.
An operator the cost model cannot price (profile-only devices) keeps the plan's latency_ms at any batch.
A plan without `pools` (written before them) gets one pool per operator with the plan's replicas and
batch, and its service times anchored to the plan's latencies.
"""
from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hetagent.errors import HetagentError, InputError
from hetagent.workflow.dist import from_attr

CTX_BUCKET = 1.1        # geometric context / prompt buckets for service-time tables (10% wide)
DELAY_KINDS = {"llm.kv_transfer", "llm.remote"}
_IT = re.compile(r"^it(\d+)$")


@dataclass
class Station:
    index: int
    op: object                    # hetagent.ir.opgraph.Operator
    placement: dict
    type: str                     # delay | multi | batch | decode
    servers: int                  # multi: c; batch: servers; decode: replicas
    batch: int = 1                # batch: max batch; decode: slots per replica
    fixed_ms: float | None = None  # a constant service time (delay, multi, fixed-latency batch)
    lognormal: tuple | None = None  # tool.lookup: (mean ms, cv, extra ms)
    variable: str | None = None   # "prefill" | "decode" | "kv" | "remote": sizes from the request
    cost_fn: object = None        # (batch, tokens) -> ms   (batch: whole batch; decode: one step)
    nominal_prompt: int = 0
    nominal_output: int = 0
    scale: float = 1.0            # plan latency_ms / the cost model's at the plan's option
    factor: float = 1.0           # calibration to measured stage times (calibrate())
    pool: int = -1                # index of its SimPool
    phase: str = ""               # "prefill" for a prompt on a co-located engine
    part: str = ""                # an LLM call's part: prefill | decode | kv | remote
    dists: dict = field(default_factory=dict)   # "prompt" / "output": the IR's distributions (Dist)
    latency_dist: object = None   # tool.lookup: its latency distribution (Dist), else the lognormal
    retain: str | None = None     # a prompt whose prefix its engine keeps: "resident" | "offload"
    prev: tuple | None = None     # (prefill, decode) of the same call's previous iteration
    reload_ms: float = 0.0        # offload: the prefix's reload from host memory
    kv_gb_per_token: float = 0.0  # retained KV per token, per device
    _memo: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.op.name

    def service(self, k: int, tokens: float = 0.0, cached: float = 0.0) -> float:
        """batch: ms for a batch of k at `tokens` prompt (bucketed), `cached` of them already in the KV
        cache; decode: ms per step at k active."""
        v = self._memo.get((k, tokens, cached, None))     # the exact arguments seen before: no bucketing
        if v is not None:
            return v
        b = _bucket(tokens) if tokens else 0
        c = _bucket(cached) if cached >= 1 else 0
        key = (k, b, c)
        v = self._memo.get(key)
        if v is None:
            t = CTX_BUCKET ** b if b else 0
            v = (self.cost_fn(k, t, min(CTX_BUCKET ** c, t - 1)) if c else self.cost_fn(k, t)) * self.factor
            self._memo[key] = v
        self._memo[(k, tokens, cached, None)] = v
        return v


def _bucket(x: float) -> int:
    return max(1, round(math.log(max(x, 1.0)) / math.log(CTX_BUCKET)))


@dataclass
class SimPool:
    index: int
    name: str
    type: str                     # delay | multi | batch | decode
    servers: int                  # multi: c; batch: replicas x pp; decode: replicas
    batch: int                    # batch: the largest batch of one operator; decode: slots per replica
    device: str
    members: list                 # operator indices
    colocated: bool = False       # decode pool that also runs its model's prefills
    retain_cap: int | None = None  # resident KV retention: requests whose KV it can keep (else unbounded)
    pp: int = 1                   # co-located: pipeline stages per replica (a prompt chunk holds each 1/pp of its time)


@dataclass
class Guards:
    loops: dict        # loop key -> list of reach probabilities of copies 1..N relative to copy 1
    switches: dict     # switch id -> normalized arm probabilities
    op_loops: list     # per operator: [(loop key, k)]
    op_switch: list    # per operator: [(switch id, arm)]


@dataclass
class SimModel:
    workflow: str
    ops: list                      # Operators (executable ones), index = op id
    stations: list                 # Station per op (same index)
    preds: list                    # per op: list of predecessor op ids
    edge_ms: dict                  # (p, q) -> transfer ms for a data edge between two device kinds
    guards: Guards
    main_llm: dict                 # {"prefill": [op ids], "decode": [...], "kv": [...], "remote": [...], "name"}
    sla_ms: float | None
    sla_percentile: float
    rate_rps: float
    per_hour: float
    transfer: object = None
    devices: dict = field(default_factory=dict)
    pools: list = field(default_factory=list)     # SimPool per pool; stations[j].pool indexes it
    _edge_memo: dict = field(default_factory=dict)

    def transfer_ms(self, p: int, q: int) -> float:
        """Transfer time from op p's output to op q (0 on one device kind or across a kv hand-off)."""
        key = (p, q)
        v = self._edge_memo.get(key)
        if v is None:
            v = self._edge_memo[key] = self._transfer(p, q)
        return v

    def _transfer(self, p, q) -> float:
        a, b = self.stations[p].placement, self.stations[q].placement
        if a["device"] == b["device"] or "llm.kv_transfer" in (self.ops[p].kind, self.ops[q].kind):
            return 0.0
        if self.transfer is None:
            return 0.0
        op = self.ops[p]
        ms, _ = self.transfer(a["device"], b["device"], "edge", float(op.attrs.get("bytes_out", 0) or 0),
                              float(op.attrs.get("tokens", 0) or 0))
        return float(ms) if ms > 1e-6 else 0.0


# ------------------------------------------------------------------------------------------- loading
def load_plan(plan) -> dict:
    """plan.json as a dict from a path, a JSON string, a dict or a Plan; it must carry the placed IR."""
    from hetagent.placement.plan import read_plan
    _, d, path = read_plan(plan)
    if not d.get("ir"):
        raise InputError("plan.json has no placed IR ('ir'); write one with `hetagent plan WF -o plan.json`",
                         file=str(path) if path else None, field="ir")
    return d


def _devices(inputs: dict) -> dict:
    from hetagent.costmodel.devices import load_catalog
    catalog = inputs.get("catalog") or "default"
    try:
        devices = dict(load_catalog(catalog)) if isinstance(catalog, str) else {}
    except HetagentError:
        devices = {}
    fl = inputs.get("fleet")
    if fl:
        from hetagent.costmodel.fleet import load_fleet
        fleet = None
        path = fl.get("file")
        try:
            if fl.get("text"):
                with tempfile.TemporaryDirectory() as td:
                    f = Path(td) / (Path(path).name if path else "fleet.yaml")
                    f.write_text(fl["text"])
                    fleet = load_fleet(f)
                    got, _, _ = fleet.resolve()
            else:
                fleet = load_fleet(path or fl.get("name"))
                got, _, _ = fleet.resolve()
            devices.update(got)
        except HetagentError:
            pass
    return devices


def _profiles(inputs: dict):
    text = inputs.get("profiles")
    if not text:
        return None
    from hetagent.costmodel.profiles import parse_profiles
    try:
        return parse_profiles(text, "<plan profiles>")
    except HetagentError:
        return None


def graph_of(plan: dict, workflow: str | None = None):
    """(OpGraph, guards) of the plan's placed IR (one workflow: the first, or the one named)."""
    from hetagent.ir.opgraph import extract
    from hetagent.ir.text import parse_module
    from hetagent.passes.registry import run
    module = run(parse_module(plan["ir"], "<plan ir>"), "decompose,unroll")
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ModuleOp
    mains = [f for f in module.ops if isinstance(f, func.FuncOp)
             and (f.attributes.get("agent.role") is None or f.attributes["agent.role"].data == "main")]
    if not mains:
        raise InputError("the plan's IR has no main workflow", field="ir")
    main = mains[0]
    if workflow is not None:
        main = next((f for f in mains if f.sym_name.data == workflow), None)
        if main is None:
            raise InputError(f"workflow '{workflow}' is not in the plan; choices: "
                             f"{', '.join(f.sym_name.data for f in mains)}")
    if len(mains) > 1:       # extract() reads the first main function: keep only the chosen one
        keep = [f for f in module.ops if f is main or f not in mains]
        for f in keep:
            f.detach()
        module = ModuleOp(keep)
    graph = extract(module)
    switch_of = _switch_arms(module)
    return graph, switch_of


def _switch_arms(module) -> dict:
    """{operator name: [(switch id, arm index)]} and {switch id: arm probabilities}, mirroring extract()."""
    from xdsl.dialects import func, scf

    from hetagent.ir import dialects as d
    funcs = {f.sym_name.data: f for f in module.ops if isinstance(f, func.FuncOp)}
    main = next(f for f in funcs.values() if f.attributes.get("agent.role", None) is None
                or f.attributes["agent.role"].data == "main")
    arms: dict = {}
    probs: dict = {}

    def attr(op, key, default):
        a = op.attributes.get(key)
        return d.attr_value(a) if a is not None else default

    def walk(block, prefix, guard):
        for op in block.ops:
            if isinstance(op, scf.IndexSwitchOp):
                sid = f"{prefix}{attr(op, 'node', 'switch')}#{len(probs)}"
                p = list(attr(op.operands[0].owner, "probabilities", []))
                regions = list(op.case_regions) + [op.default_region]
                pr = (p[:len(regions) - 1] + [p[-1]]) if p else [1.0 / len(regions)] * len(regions)
                tot = sum(pr) or 1.0
                probs[sid] = [x / tot for x in pr]
                for i, region in enumerate(regions):
                    walk(region.block, prefix, guard + [(sid, i)])
                continue
            if isinstance(op, func.CallOp):
                callee = funcs[op.callee.string_value()]
                walk(callee.body.block, f"{prefix}{attr(op, 'node', callee.sym_name.data)}.", guard)
                continue
            if "node" in op.attributes:
                arms[prefix + attr(op, "node", op.name)] = list(guard)

    walk(main.body.block, "", [])
    return {"arms": arms, "probs": probs}


def _loop_guards(names: list[str], weights: dict) -> tuple[dict, list]:
    """Loop copies from operator names `<loop>.it<k>.<rest>`: per loop key the reach of copy k relative to
    copy 1 (the product of continue probabilities, from the unrolled weights), per name its guards."""
    names_set = set(names)
    per_name, loops = [], {}
    for n in names:
        segs = n.split(".")
        g = []
        for i in range(1, len(segs) - 1):
            m = _IT.match(segs[i])
            if not m:
                continue
            key, k, rest = ".".join(segs[:i]), int(m.group(1)), ".".join(segs[i + 1:])
            first = f"{key}.it1.{rest}"
            if first not in names_set:
                continue
            g.append((key, k))
            ref = weights[first]
            rel = weights[n] / ref if ref > 0 else 0.0
            lst = loops.setdefault(key, {})
            lst[k] = max(lst.get(k, 0.0), min(1.0, rel))
        per_name.append(g)
    out = {}
    for key, d in loops.items():
        n = max(d)
        r = [1.0] + [d.get(k, 0.0) for k in range(2, n + 1)]
        for i in range(1, n):                 # reach never grows with k
            r[i] = min(r[i], r[i - 1])
        out[key] = r
    return out, per_name


def _call_key(name: str) -> str:
    """An LLM call's identity across loop copies: 'agent.it2.think.decode' -> 'agent.think'."""
    segs = [s for s in name.split(".")[:-1] if not _IT.match(s)]
    return ".".join(segs)


def _main_llm(ops) -> dict:
    groups: dict = {}
    for i, op in enumerate(ops):
        if op.kind in ("llm.prefill", "llm.decode", "llm.kv_transfer", "llm.remote"):
            g = groups.setdefault(_call_key(op.name), {"prefill": [], "decode": [], "kv": [], "remote": [],
                                                       "tokens": 0.0})
            part = {"llm.prefill": "prefill", "llm.decode": "decode", "llm.kv_transfer": "kv",
                    "llm.remote": "remote"}[op.kind]
            g[part].append(i)
            if op.kind in ("llm.decode", "llm.remote"):
                g["tokens"] += op.weight * (float(op.attrs.get("prompt_tokens", 0) or 0)
                                            + float(op.attrs.get("output_tokens", 0) or 0))
    if not groups:
        return {"name": None, "prefill": [], "decode": [], "kv": [], "remote": []}
    name = max(groups, key=lambda k: (groups[k]["tokens"], k))
    return {"name": name, **{k: groups[name][k] for k in ("prefill", "decode", "kv", "remote")}}


def build(plan, workflow: str | None = None) -> SimModel:
    """The simulation model of a plan (a path, dict, JSON text or Plan)."""
    from hetagent.costmodel import operators as om
    from hetagent.placement import _transfer_fn
    d = load_plan(plan)
    inputs = d.get("inputs") or {}
    graph, sw = graph_of(d, workflow)
    qualified = len(d.get("workflows") or []) > 1
    by_name = {p["operator"]: p for p in d["placements"]}
    devices = _devices(inputs)
    profiles = _profiles(inputs)
    ops, placements = [], []
    for op in graph.operators:
        p = by_name.get(f"{graph.workflow}/{op.name}" if qualified else op.name)
        if p is None:
            p = by_name.get(op.name)
        if p is None:
            raise InputError(f"operator '{op.name}' of the IR has no placement in the plan", field="placements")
        ops.append(op)
        placements.append(p)
    idx = {op.name: i for i, op in enumerate(ops)}
    preds = [[] for _ in ops]
    for a, b in graph.edges:
        if a in idx and b in idx:
            preds[idx[b]].append(idx[a])
    weights = {op.name: op.weight for op in ops}
    loops, op_loops = _loop_guards([op.name for op in ops], weights)
    op_switch = [sw["arms"].get(op.name, []) for op in ops]
    guards = Guards(loops, sw["probs"], op_loops, op_switch)
    main = _main_llm(ops)
    pooled = bool(d.get("pools"))
    stations = []
    for i, (op, p) in enumerate(zip(ops, placements)):
        stations.append(_station(i, op, p, devices, profiles, om, ops, preds, placements, anchored=not pooled))
    for part in ("prefill", "decode", "kv", "remote"):
        for i in main[part]:
            stations[i].variable = part
    parts = {"llm.prefill": "prefill", "llm.decode": "decode", "llm.kv_transfer": "kv", "llm.remote": "remote"}
    for st in stations:
        st.part = parts.get(st.op.kind, "")
        for key in ("prompt", "output"):
            if f"{key}_dist" in st.op.attrs:
                st.dists[key] = from_attr(st.op.attrs[f"{key}_dist"])
    pools = _pools(d.get("pools") or [], stations)
    _retention(d.get("pools") or [], stations, pools, idx, devices)
    sla = inputs.get("sla_ms") if inputs.get("sla_ms") is not None else graph.sla_ms
    rate = inputs.get("rate") if inputs.get("rate") is not None else graph.rate_rps
    if qualified and inputs.get("rate") is None:
        rate = graph.rate_rps
    transfer = _transfer_fn(devices, profiles) if devices or profiles else None
    return SimModel(graph.workflow, ops, stations, preds, {}, guards, main, sla,
                    float(graph.sla_percentile or 95.0), float(rate or 1.0),
                    float((d.get("tco") or {}).get("per_hour") or 0.0), transfer, devices, pools)


def _retention(entries: list, stations: list, pools: list, idx: dict, devices: dict) -> None:
    """Prompts whose engine keeps their prefix (the plan's `kv_retention`): the previous iteration's call
    they share it with, the reload time (offload) and the retained KV per token, from the cost model at
    the pool's configuration; a resident pool's cap, `retained_requests` per replica."""
    from hetagent.costmodel import operators as om
    from hetagent.costmodel.types import DeviceOption
    by_id = {e["id"]: e for e in entries}
    for st in stations:
        e = by_id.get(st.placement.get("pool"))
        prefix = int(st.op.attrs.get("prefix_tokens", 0) or 0)
        if e is None or st.op.kind != "llm.prefill" or prefix <= 0 or e.get("kv_retention") not in (
                "resident", "offload"):
            continue
        prev = _previous_copy(st.name)
        if prev is None or prev + ".prefill" not in idx or prev + ".decode" not in idx:
            continue
        st.retain = e["kv_retention"]
        st.prev = (idx[prev + ".prefill"], idx[prev + ".decode"])
        opt = DeviceOption(e["device"], int(e.get("tp") or 1), int(e.get("pp") or 1), 1, e.get("precision") or "fp16")
        try:
            got = om.cost(st.op, opt, devices).detail.get("cached") or {}
        except HetagentError:
            got = {}
        st.kv_gb_per_token = float(got.get("kv_gb", 0.0)) / max(1, int(got.get("cached_tokens", 1) or 1))
        st.reload_ms = float(got.get("reload_ms") or 0.0) if st.retain == "offload" else 0.0
        pool = pools[st.pool]
        if st.retain == "resident" and e.get("retained_requests") is not None:
            pool.retain_cap = int(e["retained_requests"]) * max(1, int(e.get("replicas") or 1))


def _previous_copy(name: str) -> str | None:
    """'react.it3.reason.prefill' -> 'react.it2.reason': the same call one iteration earlier (the innermost
    loop's copy: the last `it<k>` segment), None in a first copy."""
    segs = name.split(".")
    for i in range(len(segs) - 2, -1, -1):
        m = _IT.match(segs[i])
        if m:
            k = int(m.group(1))
            if k <= 1:
                return None
            return ".".join(segs[:i] + [f"it{k - 1}"] + segs[i + 1:-1])
    return None


def draw_sizes(model: SimModel, n: int, rng: np.random.Generator, prompt_tokens=None, output_tokens=None):
    """Per request, the prompt (P) and output (O) tokens of every LLM operator whose sizes vary: {op index:
    array}. A call's prompt is drawn once per request (one uniform for all its loop copies, so copy k is
    copy 1's draw plus (k-1) x the loop's growth, as the IR's shifted distributions say); each execution's
    output is drawn on its own. A trace's token counts (prompt_tokens, output_tokens) set the main call's.
    No draw is made for a workflow without distributions (its runs stay as they were)."""
    P, O = {}, {}
    calls: dict = {}
    for j, st in enumerate(model.stations):
        if "prompt" in st.dists:
            calls.setdefault(_call_key(st.name), []).append(j)
    for key in sorted(calls):
        u = rng.random(n)
        for j in calls[key]:
            P[j] = model.stations[j].dists["prompt"].quantile(u)
    for j, st in enumerate(model.stations):
        if "output" in st.dists and st.part in ("decode", "remote"):
            O[j] = st.dists["output"].sample(rng, n)
    if prompt_tokens is not None and model.main_llm["name"] is not None:
        for part in ("prefill", "decode", "kv", "remote"):
            for j in model.main_llm[part]:
                P[j] = np.asarray(prompt_tokens, dtype=float)
                if part in ("decode", "remote"):
                    O[j] = np.asarray(output_tokens, dtype=float)
    return P, O


def _pools(entries: list, stations: list) -> list:
    """The SimPools: one per engine of the plan's `pools` (a co-located engine's two entries are one),
    else one per operator (plans written before pools)."""
    by_id = {e["id"]: e for e in entries}
    engine_of = {e["id"]: e.get("engine_id") or e["id"] for e in entries}
    out: list = []
    index: dict = {}
    for st in stations:
        pid = st.placement.get("pool")
        e = by_id.get(pid) if pid is not None else None
        if e is None or st.type == "delay":          # its own pool, as the placement says
            st.pool = len(out)
            out.append(SimPool(st.pool, st.name, st.type, st.servers, st.batch, st.placement["device"], [st.index]))
            continue
        key = engine_of[pid]
        if key not in index:
            pool = SimPool(len(out), key, st.type, st.servers, st.batch, e["device"], [])
            replicas = max(1, int(e.get("replicas") or 1))
            pp = max(1, int(e.get("pp") or 1))
            max_batch = max(1, int(e.get("max_batch") or 1))
            if st.type == "batch":
                pool.servers, pool.batch = replicas * pp, max(1, max_batch // pp)
            elif st.type == "decode":
                pool.servers, pool.batch = replicas, max_batch
            pool.colocated = e.get("engine") == "colocated"
            index[key] = pool
            out.append(pool)
        pool = index[key]
        st.pool = pool.index
        pool.members.append(st.index)
        if pool.colocated and st.op.kind != "llm.decode" and st.type == "batch":
            st.phase = "prefill"
            pool.type = "decode"
        elif pool.colocated:
            pool.type = "decode"
    for pool in out:
        if pool.colocated and not any(stations[j].type == "decode" for j in pool.members):
            # MoE parts are priced as whole batches: the engine runs them as batches, one part at a time
            e = next(e for e in entries if (e.get("engine_id") or e["id"]) == pool.name)
            pool.colocated, pool.type = False, "batch"
            pool.servers = max(1, int(e.get("replicas") or 1)) * max(1, int(e.get("pp") or 1))
            pool.batch = max(1, int(e.get("max_batch") or 1) // max(1, int(e.get("pp") or 1)))
            for j in pool.members:
                stations[j].phase = ""
        if pool.colocated:   # a co-located engine's servers and slots are its decode side's
            dec = next((e for e in entries if (e.get("engine_id") or e["id"]) == pool.name
                        and e.get("kind") != "llm.prefill"), None)
            if dec is not None:
                pool.servers = max(1, int(dec.get("replicas") or 1))
                pool.batch = max(1, int(dec.get("max_batch") or 1))
                pool.pp = max(1, int(dec.get("pp") or 1))
    return out


def _station(i, op, p, devices, profiles, om, ops, preds, placements, anchored: bool = True) -> Station:
    from hetagent.costmodel.types import DeviceOption
    kind = op.kind
    replicas = max(1, int(p.get("replicas") or 1))
    batch = max(1, int(p.get("batch") or 1))
    pp = max(1, int(p.get("pp") or 1))
    opt = DeviceOption(p["device"], int(p.get("tp") or 1), pp, batch, p.get("precision") or "fp16")
    dev = devices.get(p["device"])
    prompt = int(op.attrs.get("prompt_tokens", op.attrs.get("tokens", 0)) or 0)
    out = int(op.attrs.get("output_tokens", 0) or 0)
    st = Station(i, op, p, "batch", replicas * pp, batch, nominal_prompt=prompt, nominal_output=out)
    # a plan solved with measured profiles keeps the plan's latencies (the profiles priced it)
    profiled = profiles is not None
    priceable = dev is not None

    def price(o2, attrs=None):
        o = replace(op, attrs=attrs) if attrs is not None else op
        return om.cost(o, o2, devices)

    if kind == "llm.kv_transfer":
        st.type, st.servers, st.variable = "delay", 1, None
        st.fixed_ms = float(p.get("latency_ms") or 0.0)
        src = next((placements[q]["device"] for q in preds[i]), p["device"])
        dst = p["device"]
        nbytes = float(op.attrs.get("kv_bytes", 0) or 0)
        st.cost_fn = _kv_fn(src, dst, nbytes, prompt or 1, placements, devices, profiles)
        st.fixed_ms = st.cost_fn(1, prompt or 1)
        return st
    if kind == "llm.remote":
        st.type, st.servers = "delay", 1
        try:
            st.fixed_ms = price(opt).latency_ms
        except HetagentError:
            st.fixed_ms = float(p.get("latency_ms") or 0.0)
        st.cost_fn = lambda k, tokens, _o=op: _remote_ms(_o, tokens)
        return st
    if not priceable or profiled:
        return _fixed(st, p, replicas, batch)
    try:
        # pool plans: a prompt on a co-located engine runs one at a time, so batch 1 always prices
        base = price(opt if anchored else replace(opt, batch=1))
    except HetagentError:
        return _fixed(st, p, replicas, batch)
    # anchored to the plan: at the plan's own option the service time is the plan's latency_ms; the cost
    # model gives only the shape (batch size, context), so a plan keeps simulating the same after the
    # cost model or its calibration changes
    planned = float(p.get("latency_ms") or 0.0)
    scale = planned / base.latency_ms if anchored and planned > 0 and base.latency_ms > 0 else 1.0
    st.scale = scale
    if kind in om.CPU_ONLY_KINDS:
        st.type = "multi"
        cores = int(getattr(dev, "cores", None) or 1)
        if kind == "tool.lookup":
            st.servers = replicas * om.TOOL_CONCURRENCY
            mean = float(op.attrs.get("latency_ms", 0) or 0)
            cv = float(op.attrs.get("latency_cv", 0) or 0)
            st.lognormal = (mean, cv, max(0.0, base.latency_ms * scale - mean))
            if "latency_dist" in op.attrs:
                st.latency_dist = from_attr(op.attrs["latency_dist"])
        else:
            st.servers = replicas * cores
        st.fixed_ms = base.latency_ms * scale
        return st
    if kind == "llm.decode":
        st.type, st.servers, st.batch = "decode", replicas, batch * pp
        o_nom = max(1, out)

        def step(k, ctx, _o=o_nom):
            """ms per token with k active sequences at mean context ctx (0: the operator's own)."""
            kk = max(1, math.ceil(k / pp))
            attrs = dict(op.attrs)
            if ctx:
                attrs["prompt_tokens"] = max(1, round(ctx - _o / 2.0))
            try:
                return price(replace(opt, batch=kk), attrs).latency_ms / _o * scale
            except HetagentError:      # does not fit at this context: scale the nominal step linearly
                c0 = prompt + _o / 2.0
                return price(replace(opt, batch=kk)).latency_ms / _o * (max(ctx, c0) / c0) * scale
        st.cost_fn = step
        return st
    # batch stations: a batch of k at `tokens` prompt tokens (0: the operator's own size)

    plain = {k: v for k, v in op.attrs.items() if k != "prefix_tokens"}   # its reuse is the pool's, below

    def whole(k, tokens, cached=0):
        attrs = dict(plain)
        if tokens and kind == "llm.prefill":
            attrs["prompt_tokens"] = max(1, round(tokens))
        if cached and kind == "llm.prefill":
            attrs["cached_tokens"] = max(0, round(cached))
        try:
            return price(replace(opt, batch=k), attrs).latency_ms * scale
        except HetagentError:
            pass
        try:              # a size the cost model refuses at this batch (memory): scale the nominal one
            ref = price(replace(opt, batch=k), plain).latency_ms * scale
        except HetagentError:   # nor the batch: the batch runs as k single executions
            ref = k * price(replace(opt, batch=1), plain).latency_ms * scale
        new = (tokens or prompt) - (cached or 0)
        return ref * (new / prompt if prompt else 1.0)
    st.cost_fn = whole
    return st


def _fixed(st, p, replicas, batch) -> Station:
    st.type = "multi"
    st.servers = replicas * batch
    st.fixed_ms = float(p.get("latency_ms") or 0.0)
    st.variable = None
    return st


def _kv_fn(src, dst, nbytes, tokens0, placements, devices, profiles):
    if src == dst:
        return lambda k, tokens: 0.0
    from hetagent.placement import _transfer_fn
    tf = _transfer_fn(devices, profiles)

    def f(k, tokens):
        t = tokens or tokens0
        ms, _ = tf(src, dst, "llm.kv_transfer", nbytes * t / tokens0, t)
        return float(ms)
    return f


def _remote_ms(op, output_tokens):
    from hetagent.costmodel.operators import REMOTE_DEFAULTS
    a = op.attrs
    out = output_tokens or float(a.get("output_tokens", 0) or 0)
    return float(a.get("latency_ms", REMOTE_DEFAULTS["latency_ms"])) + out * float(
        a.get("ms_per_output_token", REMOTE_DEFAULTS["ms_per_output_token"]))


def nominal_ms(st: Station) -> float:
    """One execution alone: batch 1, the operator's own sizes (a decode: all its steps)."""
    if st.type in ("delay", "multi"):
        if st.lognormal is not None:
            return st.lognormal[0] + st.lognormal[2]
        return float(st.fixed_ms or 0.0)
    if st.type == "decode":
        return st.service(1) * max(1, st.nominal_output)
    return st.service(1)


def calibrate(model: SimModel, report) -> dict:
    """Scale each operator's service times so that, alone, it takes a measured run's per-stage median
    (`hetagent run --json`: per_stage_ms {op: {p50}}; a dict or a path). Returns {op: factor}; operators the
    run did not measure keep the plan's times. Separates the cost model's error from the simulator's."""
    import json
    if not isinstance(report, dict):
        p = Path(str(report))
        if not p.is_file():
            raise InputError("run report not found", file=str(report))
        try:
            report = json.loads(p.read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise InputError("not a `hetagent run --json` report", file=str(report)) from None
    stages = report.get("per_stage_ms") or {}
    out = {}
    for st in model.stations:
        v = stages.get(st.name)
        m = v.get("p50") if isinstance(v, dict) else v
        if m is None:
            continue
        m = float(m)
        nom = nominal_ms(st)
        if nom > 0:
            f = m / nom
            st.factor *= f
            st._memo.clear()
            if st.fixed_ms is not None:
                st.fixed_ms *= f
            if st.lognormal is not None:
                mean, cv, extra = st.lognormal
                st.lognormal = (mean * f, cv, extra * f)
            if st.latency_dist is not None:
                st.latency_dist = st.latency_dist.scaled(f)
            out[st.name] = f
        elif st.type in ("delay", "multi") and m > 0:
            st.fixed_ms = m
            st.cost_fn = (lambda k, tokens, _m=m: _m)
            st._memo.clear()
            out[st.name] = math.inf
    return out


# ------------------------------------------------------------------------------------------- draws
def active_masks(model: SimModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per request and operator, whether it runs: loop iteration counts and branch arms drawn per request.

    Loop L with copies 1..N: K = max {k : U < r_k}, U uniform, r_k the reach of copy k (geometric:
    r_k = q^(k-1), q from the workflow's expected count, capped at N). Branch: arm i with its probability."""
    g = model.guards
    m = len(model.ops)
    mask = np.ones((n, m), dtype=bool)
    counts = {}
    for key in sorted(g.loops):
        r = np.asarray(g.loops[key])
        u = rng.random(n)
        counts[key] = (u[:, None] < r[None, :]).sum(axis=1)      # r_1 = 1: at least one iteration
    arms = {}
    for sid in sorted(g.switches):
        cum = np.cumsum(g.switches[sid])
        cum[-1] = 1.0 + 1e-12
        arms[sid] = np.searchsorted(cum, rng.random(n), side="right")
    for j in range(m):
        for key, k in g.op_loops[j]:
            mask[:, j] &= counts[key] >= k
        for sid, a in g.op_switch[j]:
            mask[:, j] &= arms[sid] == a
    return mask, counts, arms
