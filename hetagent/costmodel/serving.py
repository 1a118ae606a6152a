"""Serving engines under load: what r replicas of one engine configuration deliver for the operators
mapped to them (docs/serving.md).

    load = engine_load(members, engine, replicas, pp=1, cpu=False)   # a PoolLoad, or a str: why not
    loads = replica_candidates(members, engine, pp=1)                  # [PoolLoad] worth choosing among

A member is one operator the pool serves, with its offered load (executions per second, summed over
requests) and its cost curve on the engine's configuration: {micro-batch: OpCost} from the cost table.
Four engine kinds (`ENGINES`):
  single     one engine runs every member (speech, embeddings, tools, ...), batching what is in flight;
  prefill    an LLM's prefill pool, disaggregated from its decode pool (the KV cache moves between them);
  decode     an LLM's decode pool, continuous batching;
  colocated  prefill and decode of one model on one engine: decode steps carry chunks of the waiting
             prompts (chunked prefill), so decode is slowed by the share of time spent on prefill.

Batches are what the load fills. Per replica the engine is a birth-death process: requests arrive at
load / r; with n in the engine (continuous batching) it completes n / T(n) per second, T(n) the
load-weighted time of one execution at micro-batch max(1, n / pp) (pp micro-batches are in flight on a
pp-stage pipeline); beyond its slots (`max_batch` per replica) it completes slots / T(slots) and the
rest wait. Its stationary distribution gives the mean number in the engine N and, by Little's law, the
mean time in it. The batch is ceil(N), latencies are read at that batch, and the wait beyond them is
halved for regular (deterministic) service, as Pollaczek-Khinchine says. A memory-bound decode comes out
near N = load x T, a compute-bound engine as a single-server queue. A colocated engine first spends
rho_p = sum_prefill load_i x T_i(1) / (r x pp) of its time on prompts; its decode steps take
1 / (1 - rho_p) longer, and a prompt waits for the step it joins.

CPUs are time-shared rather than owned: on a CPU device the pool's device use is its busy share
(load x time / parallel executions per device), its batch is 1 per execution, and the wait is Erlang C
over the executions the devices it occupies can run at once.
Profiled operators (measured profiles, the paper's Table 3) keep their latencies as given: one request at
a time, no queueing, no batching.

KV retention (`kv_retention`, RETENTION): a co-located engine whose prompts reuse the previous iteration's
prefix (the cost table's `cached` detail of an llm.prefill: docs/serving.md, "Prefix reuse") is also offered
  resident  the engine keeps each request's KV while it waits on its tools (vLLM's prefix cache with the
            blocks pinned, Continuum's time-to-live; SGLang's radix cache): the prefill computes only the
            new tokens, and a reservation for the KV of the requests waiting, sized so that at most
            RETAIN_LOSS of them find it full (Erlang B: a request arriving to a full reservation is
            dropped, an M/G/c/c loss system whose offered load is load x mean wait, whatever the tool
            latency's distribution), is memory the batch cannot use: the slots shrink to what still fits;
  offload   the KV waits in host memory (vLLM's CPU offloading, LMCache) where the engine has that tier:
            the prefill computes only the new tokens after reloading the prefix over the host link (a
            latency, not engine time); device memory is not held.
`none` recomputes the prefix. The planner chooses among them like among replica counts.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaincc

ENGINES = ("colocated", "prefill", "decode", "single")
MAX_PREFILL_SHARE = 0.9     # a colocated engine busier than this with prompts cannot keep decoding
MAX_REPLICA_CANDIDATES = 12  # replica counts offered to the planner per engine configuration
GAIN_TO_KEEP = 0.01         # a larger replica count is offered while it cuts some latency by this much
DENSE_STEPS = 4             # replica counts right above the smallest feasible one are all offered
RETENTION = ("none", "resident", "offload")
RETAIN_LOSS = 0.01          # at most this share of the requests waiting on tools find the reservation full


@dataclass(frozen=True)
class Member:
    key: object             # the caller's id of the operator, e.g. (graph index, operator name)
    op: object              # hetagent.ir.opgraph.Operator
    load_rps: float         # executions per second offered to the pool
    phase: str              # prefill | decode | other
    curve: tuple            # ((micro-batch, OpCost), ...) on the engine's configuration, ascending


@dataclass
class PoolLoad:
    engine: str                     # one of ENGINES
    replicas: int                   # integer replicas (CPUs: one per device the pool keeps busy)
    batch: int                      # requests in flight per replica, rounded up (>= 1)
    concurrency: float              # the same before rounding
    max_batch: int                  # slots per replica: the largest micro-batch that fits x pp
    latency_ms: dict                # member key -> mean time in the pool (queueing + service)
    service_ms: dict                # member key -> service time at the batch
    wait_ms: float                  # mean FIFO wait for a slot (Erlang C)
    tbt_ms: float | None            # decode: one step at the batch, every sequence at its longest context
    utilization: float              # busy share of the replicas
    memory_gb: float                # per device of one replica, at max_batch
    devices: float                  # devices held: replicas x tp x pp, or the busy share on CPUs
    price_per_hour: float           # per-execution charges (hosted APIs, per-token profiles) at the load
    costs: dict = field(default_factory=dict)   # member key -> OpCost at the batch
    kv_retention: str = "none"      # one of RETENTION
    retained_gb: float = 0.0        # KV kept for requests waiting on tools, per device (offload: in host memory)
    retained_requests: int = 0      # requests whose KV that reserves, per replica (Erlang B <= RETAIN_LOSS)
    prefill_saved_share: float = 0.0   # share of the prompt tokens the engine does not recompute


# ----------------------------------------------------------------------------------------- helpers
def at_batch(curve, m: float):
    """(latency ms, OpCost of the grid point at or above m) at micro-batch m >= 1, interpolated linearly
    between the cost table's batches; None beyond the largest batch that fits. A kind the cost model does
    not batch (one point, batch 1) runs a batch of m one after another: m x its time."""
    m = max(1.0, float(m))
    if len(curve) == 1 and curve[0][0] == 1:
        return curve[0][1].latency_ms * m, curve[0][1]
    batches = _batches(curve)
    i = bisect_left(batches, m - 1e-9)
    if i == len(curve):
        return None
    b, c = curve[i]
    if i == 0 or b == m:
        return c.latency_ms, c
    b0, c0 = curve[i - 1]
    return c0.latency_ms + (m - b0) / (b - b0) * (c.latency_ms - c0.latency_ms), c


_BATCHES: dict = {}


def _batches(curve) -> tuple:
    """The curve's batch sizes (memoized by identity: curves are built once per configuration)."""
    got = _BATCHES.get(id(curve))
    if got is None or got[0] is not curve:
        got = _BATCHES[id(curve)] = (curve, tuple(b for b, _ in curve))
    return got[1]


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load a (Erlang C), from Erlang B
    = Poisson(a) pmf(c) / cdf(c)."""
    if a <= 0:
        return 0.0
    if a >= c:
        return 1.0
    if c > a + 12.0 * math.sqrt(a) + 12.0:
        return 0.0                           # more than 12 standard deviations of Poisson(a) away
    cdf = float(gammaincc(c + 1, a))
    b = math.exp(c * math.log(a) - a - math.lgamma(c + 1)) / cdf if cdf > 0 else 1.0
    return c * b / (c - a * (1.0 - b))


def fifo_wait_ms(slots: int, in_flight: float, service_ms: float) -> float:
    """Mean wait for one of `slots` when `in_flight` requests are in service on average."""
    if in_flight >= slots:
        return math.inf
    return erlang_c(slots, in_flight) * service_ms / (slots - in_flight)


def _worst_step_ms(member, c, m: float) -> float:
    """One decode step at micro-batch m with every sequence at its longest context (prompt + all output).
    The roofline's attention reads the context linearly, so the step at the mean context (what the
    cost table holds) is corrected by the attention share; without a breakdown (CPU lines) the mean step."""
    out = max(1.0, float(member.op.attrs.get("output_tokens", 1) or 1))
    lat = at_batch(member.curve, m)[0]
    step = lat / out
    attn = (c.detail.get("parts_ms") or {}).get("attention")
    if attn is None:
        return step
    prompt = float(member.op.attrs.get("prompt_tokens", 0) or 0)
    mean_ctx, worst_ctx = prompt + out / 2.0 + 1.0, prompt + out + 1.0
    return step + (attn / out) * (lat / c.latency_ms) * (worst_ctx / mean_ctx - 1.0)


# ----------------------------------------------------------------------------------------- engines
class Grid:
    """Members' latencies on their common micro-batches, as arrays: the engine's queue and the latencies
    at a batch are then a few vector operations, whatever the replica count (replica_candidates builds
    one per configuration and evaluates every replica count on it)."""

    def __init__(self, members):
        self.members = list(members)
        batched = [m.curve[-1][0] for m in self.members if len(m.curve) > 1]
        self.slots = min(batched) if batched else 1          # micro-batches every member can run
        bs = sorted({b for m in self.members for b, _ in m.curve if b <= self.slots} | {1})
        self.batches = np.array(bs, dtype=float)
        self.lat_s = np.array([[at_batch(m.curve, b)[0] / 1e3 for b in bs] for m in self.members])
        self.loads = np.array([m.load_rps for m in self.members])
        self._service: dict = {}

    def service_s(self, pp: int) -> np.ndarray:
        """Load-weighted time of one request with n = 1 .. slots x pp requests in the engine (seconds):
        each read at micro-batch max(1, n / pp). Memoized per pp."""
        got = self._service.get(pp)
        if got is None:
            n = np.arange(1, self.slots * pp + 1, dtype=float)
            m = np.maximum(1.0, n / pp)
            w = self.loads / self.loads.sum() if self.loads.sum() > 0 else np.full(len(self.loads), 1.0 / len(self.loads))
            got = self._service[pp] = w @ np.array([np.interp(m, self.batches, row) for row in self.lat_s])
        return got

    def queue(self, lam: float, pp: int, stretch: float = 1.0):
        """The engine as a birth-death process: requests arrive at `lam` per second; with n in the engine
        it completes n / T(n) per second (continuous batching: every request in flight advances), beyond
        its slots it serves slots / T(slots) and the rest wait. Returns (mean requests in the engine N,
        mean time in it N / lam, P(idle)), or None when lam exceeds what the full engine completes."""
        T = stretch * self.service_s(pp)
        S = len(T)
        n = np.arange(1, S + 1, dtype=float)
        mu = n / T
        if lam >= mu[-1] * (1.0 - 1e-9):
            return None
        if lam <= 0:
            return 0.0, float(T[0]), 1.0
        logp = np.concatenate([[0.0], np.cumsum(np.log(lam / mu))])      # p(n) / p(0), n = 0 .. S
        top = logp.max()
        p = np.exp(logp - top)
        q = lam / mu[-1]                                                 # beyond the slots: geometric
        tail_mass = p[-1] * q / (1.0 - q)
        tail_n = p[-1] * (S * q / (1.0 - q) + q / (1.0 - q) ** 2)
        z = p.sum() + tail_mass
        N = (np.arange(S + 1) @ p + tail_n) / z
        return float(N), float(N / lam), float(p[0] / z)

    def latency_ms(self, mb: float) -> np.ndarray:
        """Each member's time at micro-batch mb (>= 1, within the grid), ms."""
        return np.array([np.interp(mb, self.batches, row) for row in self.lat_s]) * 1e3


def engine_load(members, engine: str, replicas: int, *, pp: int = 1, tp: int = 1, cpu: bool = False,
                grid: Grid | None = None, kv_retention: str = "none", retention=None):
    """The PoolLoad of `replicas` replicas of one engine configuration serving `members`, or a string
    saying why they cannot (overloaded, or a batch that does not fit). `grid`: the members' Grid, when
    the caller evaluates several replica counts. kv_retention: one of RETENTION (other than none: a
    co-located engine only); `retention`: its prepared _Retention, when evaluating several counts."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}'; choices: {', '.join(ENGINES)}")
    if kv_retention not in RETENTION:
        raise ValueError(f"unknown kv_retention '{kv_retention}'; choices: {', '.join(RETENTION)}")
    if kv_retention != "none":
        if engine != "colocated" or cpu:
            return f"KV retention '{kv_retention}' applies to a co-located engine on an accelerator"
        ret = retention if retention is not None else _retention([m for m in members if m.curve], kv_retention)
        return ret if isinstance(ret, str) else _retaining(ret, max(1, int(replicas)), pp, tp)
    members = [m for m in members if m.curve]
    if not members:
        return "no member has a cost on this configuration"
    if all(c.detail.get("profiled") for m in members for _, c in m.curve):
        return _profiled(members, engine, replicas, pp, tp)
    if cpu:
        return _cpu(members, engine)
    r = max(1, int(replicas))
    if engine == "colocated" and any(m.phase == "prefill" for m in members) \
            and any(m.phase != "prefill" for m in members):
        return _colocated(members, r, pp, tp, grid)
    return _batched(members, engine, r, pp, tp, grid)


def _price(members) -> float:
    return sum(3600.0 * m.load_rps * m.curve[0][1].price_per_execution for m in members)


def _at(grid: Grid, n: float, pp: int):
    """(batch, micro-batch, latencies ms): the batch the load fills, ceil(N), within the slots."""
    batch = min(max(1, math.ceil(n - 1e-9)), grid.slots * pp)
    mb = min(max(1.0, batch / pp), float(grid.batches[-1]))
    return batch, mb, grid.latency_ms(mb)


def _queueing_ms(grid: Grid, lat_ms: np.ndarray, mean_ms: float) -> float:
    """What requests wait beyond their service at the batch, corrected for how regular service is
    (Pollaczek-Khinchine: the birth-death model assumes exponential service; a deterministic one waits
    half as long): (R - T) x (1 + cv^2) / 2, cv over the members' service times."""
    w = grid.loads / grid.loads.sum() if grid.loads.sum() > 0 else np.full(len(lat_ms), 1.0 / len(lat_ms))
    t = float(w @ lat_ms)
    cv2 = float(w @ (lat_ms - t) ** 2) / t ** 2 if t > 0 else 0.0
    return max(0.0, mean_ms - t) * (1.0 + cv2) / 2.0


def _batched(members, engine, r, pp, tp, grid=None):
    grid = grid if grid is not None else Grid(members)
    slots = grid.slots * pp
    got = grid.queue(float(grid.loads.sum()) / r, pp)
    if got is None:
        return (f"{r} replica(s) cannot carry the load: more than a full engine of {slots} requests "
                f"completes per replica")
    n, mean_s, idle = got
    batch, mb, lat_ms = _at(grid, n, pp)
    wait = _queueing_ms(grid, lat_ms, mean_s * 1e3)
    lat, svc, costs, tbt = {}, {}, {}, None
    for m, t in zip(grid.members, lat_ms):
        c = (at_batch(m.curve, mb) or (0.0, m.curve[-1][1]))[1]
        svc[m.key], costs[m.key] = float(t), c
        lat[m.key] = float(t) + wait
        if m.phase == "decode":
            w = _worst_step_ms(m, c, mb)
            tbt = w if tbt is None else max(tbt, w)
    mem = max(m.curve[-1][1].memory_gb for m in grid.members)
    return PoolLoad(engine, r, batch, n, slots, lat, svc, wait, tbt, 1.0 - idle, mem, float(r * tp * pp),
                    _price(grid.members), costs)


def _colocated(members, r, pp, tp, grid=None):
    pre = [m for m in members if m.phase == "prefill"]
    if grid is None or any(m.phase == "prefill" for m in grid.members):
        grid = Grid([m for m in members if m.phase != "prefill"])
    rho_p = sum(m.load_rps / r * m.curve[0][1].latency_ms / 1e3 for m in pre) / pp
    if rho_p >= MAX_PREFILL_SHARE:
        return (f"{r} replica(s) would spend {rho_p:.0%} of their time on prompts (at most "
                f"{MAX_PREFILL_SHARE:.0%} leaves room to decode)")
    stretch = 1.0 / (1.0 - rho_p)
    slots = grid.slots * pp
    got = grid.queue(float(grid.loads.sum()) / r, pp, stretch)
    if got is None:
        return f"{r} replica(s) cannot carry the decode load: a full engine of {slots} sequences is too slow"
    n, mean_s, idle = got
    batch, mb, lat_ms = _at(grid, n, pp)
    lat_ms = lat_ms * stretch
    wait = _queueing_ms(grid, lat_ms, mean_s * 1e3)
    lat, svc, costs = {}, {}, {}
    step = tbt = 0.0
    for m, t in zip(grid.members, lat_ms):
        c = (at_batch(m.curve, mb) or (0.0, m.curve[-1][1]))[1]
        out = max(1.0, float(m.op.attrs.get("output_tokens", 1) or 1))
        svc[m.key], costs[m.key] = float(t), c
        lat[m.key] = float(t) + wait
        step = max(step, float(t) / out)
        tbt = max(tbt, _worst_step_ms(m, c, mb) * stretch)
    for m in pre:       # a prompt shares the engine with other prompts (processor sharing), then joins a step
        t, c = m.curve[0][1].latency_ms, m.curve[0][1]
        shared = t + (t / (1.0 - rho_p) - t) / 2.0          # the P-K correction for regular service
        svc[m.key], costs[m.key] = t + step, c
        lat[m.key] = shared + step + wait
    mem = max(m.curve[-1][1].memory_gb for m in grid.members)
    busy = min(1.0, rho_p + (1.0 - rho_p) * (1.0 - idle))
    return PoolLoad("colocated", r, batch, n, slots, lat, svc, wait, tbt, busy, mem, float(r * tp * pp),
                    _price(members), costs)


@dataclass
class _Retention:
    """What keeping a pool's KV across tool calls changes, independent of the replica count."""
    mode: str
    pre: list                # prefill members, priced with their cached prefix where they have one
    dec: list                # the engine's other members
    extra: dict              # member key -> ms added to its latency (offload: the reload)
    occupancy: float         # requests waiting on tools with a retained KV, at one replica
    size_gb: float           # their mean KV per device
    saved_share: float       # prompt tokens not recomputed / all prompt tokens
    grids: dict = field(default_factory=dict)    # slots kept -> (decode members, Grid)


def _retention(members, mode):
    """The _Retention of `members` (a str saying why not)."""
    from dataclasses import replace
    pre = [m for m in members if m.phase == "prefill"]
    dec = [m for m in members if m.phase != "prefill"]
    if not pre or not dec:
        return "KV retention needs a co-located engine serving prompts and generations"
    occupancy = size = saved = total = 0.0
    extra, new_pre = {}, []
    for m in pre:
        got = m.curve[0][1].detail.get("cached")
        total += m.load_rps * float(m.op.attrs.get("prompt_tokens", 0) or 0)
        if not got or not all(c.detail.get("cached") for _, c in m.curve):
            new_pre.append(m)
            continue
        if mode == "offload" and got.get("reload_ms") is None:
            return f"no CPU tier of KV cache on this device (offload: {', '.join(_offload_vendors())} engines)"
        new_pre.append(replace(m, curve=tuple((b, _cached_cost(c)) for b, c in m.curve)))
        saved += m.load_rps * got["cached_tokens"]
        waiting = m.load_rps * float(m.op.attrs.get("retain_ms", 0) or 0) / 1e3      # Little's law
        occupancy += waiting
        size += waiting * got["kv_gb"]
        if mode == "offload":
            extra[m.key] = float(got["reload_ms"])
    if not saved:
        return "no prompt of this pool reuses a prefix"
    return _Retention(mode, new_pre, dec, extra, occupancy, size / occupancy if occupancy > 0 else 0.0,
                      saved / total if total > 0 else 0.0)


def _retaining(ret: _Retention, r, pp, tp):
    """A co-located engine that keeps (resident) or parks in host memory (offload) each request's KV
    between its calls: prompts priced with their cached prefix, the KV of the requests waiting on tools
    reserved so that at most RETAIN_LOSS of them find it full, the slots what still fits beside it."""
    from dataclasses import replace
    waiting = ret.occupancy / r
    held = retained_slots(waiting)
    retained = held * ret.size_gb
    on_device = retained if ret.mode == "resident" else 0.0
    keep = tuple(sum(1 for _, c in m.curve
                     if c.memory_gb + on_device <= (c.detail.get("memory") or {}).get("capacity_gb", math.inf))
                 for m in ret.dec)
    if not all(keep):
        return (f"keeping the KV of {held} requests waiting on tools ({on_device:.1f} GB per device) "
                "leaves no room for a batch")
    if keep not in ret.grids:      # the slots that still fit: each member's curve up to them
        dec = [m if k == len(m.curve) else replace(m, curve=m.curve[:k]) for m, k in zip(ret.dec, keep)]
        ret.grids[keep] = (dec, Grid(dec))
    dec, grid = ret.grids[keep]
    got = _colocated(ret.pre + dec, r, pp, tp, grid)
    if isinstance(got, str):
        return got
    for k, v in ret.extra.items():
        got.latency_ms[k] += v
    got.kv_retention, got.retained_gb, got.retained_requests = ret.mode, retained, held
    got.memory_gb += on_device
    got.prefill_saved_share = ret.saved_share * (1.0 - _overflow(waiting, held))
    return got


def erlang_b(servers: int, offered: float) -> float:
    """The share of arrivals that find all `servers` busy in an M/G/c/c loss system with this offered load
    (Erlang B, by its stable recursion)."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return b


def retained_slots(waiting: float) -> int:
    """The fewest requests (at least 1) a reservation must hold so that at most RETAIN_LOSS of the requests
    waiting on tools find it full; `waiting` is their mean number with no limit (the offered load)."""
    c, b = 1, waiting / (1.0 + waiting)
    while b > RETAIN_LOSS:
        c += 1
        b = waiting * b / (c + waiting * b)
    return c


def _overflow(mean: float, held: int) -> float:
    """Share of the requests waiting on tools that find the reservation of `held` full (their KV is dropped
    and their prompt recomputed): Erlang B with this offered load."""
    return erlang_b(held, mean) if mean > 0 else 0.0


def _cached_cost(c):
    """An OpCost with its prefix already in the engine (the cost table's `cached` detail)."""
    from dataclasses import replace
    got = c.detail["cached"]
    lat = float(got["latency_ms"])
    return replace(c, latency_ms=lat, throughput_rps=c.throughput_rps * c.latency_ms / lat if lat > 0 else
                   c.throughput_rps, detail=dict(c.detail, cached_tokens=got["cached_tokens"]))


def _offload_vendors():
    from hetagent.costmodel.operators import KV_OFFLOAD_VENDORS
    return KV_OFFLOAD_VENDORS


def _cpu(members, engine):
    """Time-shared CPU: devices = busy share; one execution at a time per slot of parallelism."""
    share = 0.0
    a = 0.0
    parallel = math.inf
    costs, svc = {}, {}
    for m in members:
        c = m.curve[0][1]
        share += m.load_rps / c.throughput_rps if c.throughput_rps > 0 else 0.0
        a += m.load_rps * c.latency_ms / 1e3
        parallel = min(parallel, max(1.0, c.throughput_rps * c.latency_ms / 1e3 / m.curve[0][0]))
        costs[m.key], svc[m.key] = c, c.latency_ms
    servers = max(1, math.floor(parallel * max(1, math.ceil(share - 1e-9)) + 1e-9))
    total = sum(m.load_rps for m in members) or 1.0
    mean_svc = sum(m.load_rps / total * svc[m.key] for m in members)
    wait = fifo_wait_ms(servers, a, mean_svc)
    if not math.isfinite(wait):
        return "the CPU executions cannot keep up"
    lat = {m.key: svc[m.key] + wait for m in members}
    tbt = None
    for m in members:
        if m.phase == "decode":
            w = _worst_step_ms(m, m.curve[0][1], 1)
            tbt = w if tbt is None else max(tbt, w)
    mem = max(c.memory_gb for c in costs.values())
    replicas = max(1, math.ceil(share - 1e-9))       # processes: one per CPU device it keeps busy
    return PoolLoad(engine, replicas, 1, a, 1, lat, svc, wait, tbt, min(1.0, a / servers), mem,
                    max(share, 1e-6), _price(members), costs)


def _profiled(members, engine, replicas, pp, tp):
    """Measured profiles: the given latency, one request at a time; replicas from the given throughput."""
    need = 1
    lat, costs = {}, {}
    for m in members:
        c = m.curve[0][1]
        lat[m.key], costs[m.key] = c.latency_ms, c
        if c.throughput_rps > 0:
            need = max(need, math.ceil(m.load_rps / c.throughput_rps - 1e-9))
    r = max(int(replicas), need)
    tbt = None
    for m in members:
        if m.phase == "decode":
            c = m.curve[0][1]
            out = max(1.0, float(m.op.attrs.get("output_tokens", 1) or 1))
            v = float(c.detail.get("tbt_ms") or c.latency_ms / out)
            tbt = v if tbt is None else max(tbt, v)
    mem = max(m.curve[0][1].memory_gb for m in members)
    return PoolLoad(engine, r, 1, 0.0, 1, lat, dict(lat), 0.0, tbt, 0.0, mem, float(r * tp * pp),
                    _price(members), costs)


def replica_candidates(members, engine: str, *, pp: int = 1, tp: int = 1, cpu: bool = False,
                       max_replicas: int = 100000) -> tuple[list[PoolLoad], str | None]:
    """(PoolLoads worth offering to the planner, why none when empty). From the fewest replicas that
    carry the load: the next DENSE_STEPS counts, then counts growing by a quarter while some member's
    latency still falls by GAIN_TO_KEEP, at most MAX_REPLICA_CANDIDATES. CPUs and profiled operators
    have one candidate (their device use is a share, or given). A co-located engine whose prompts reuse a
    prefix is offered with each KV retention (RETENTION) too."""
    members = [m for m in members if m.curve]
    out, why = _candidates(members, engine, pp, tp, cpu, max_replicas, "none")
    if engine == "colocated" and not cpu and any(
            m.phase == "prefill" and m.curve[0][1].detail.get("cached") for m in members):
        for mode in RETENTION[1:]:
            out += _candidates(members, engine, pp, tp, cpu, max_replicas, mode)[0]
    return out, why


def _candidates(members, engine, pp, tp, cpu, max_replicas, mode):
    decoding = [m for m in members if m.phase != "prefill"]
    grid = Grid(decoding if engine == "colocated" and len(decoding) < len(members) and decoding else members) \
        if members and not cpu and mode == "none" else None
    ret = _retention(members, mode) if mode != "none" else None
    if isinstance(ret, str):
        return [], ret

    def load(r):
        return engine_load(members, engine, r, pp=pp, tp=tp, cpu=cpu, grid=grid, kv_retention=mode, retention=ret)

    first = load(1)
    profiled = all(c.detail.get("profiled") for m in members for _, c in m.curve)
    if cpu or profiled:
        return ([first], None) if isinstance(first, PoolLoad) else ([], first)
    lo, why = 1, first
    if isinstance(first, str):           # the fewest replicas that carry the load: double, then bisect
        hi = 2
        while isinstance(got := load(hi), str):
            why, lo, hi = got, hi, hi * 2
            if hi > max_replicas:
                return [], why
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if isinstance(load(mid), PoolLoad):
                hi = mid
            else:
                lo = mid
        lo = hi
    out: list[PoolLoad] = []
    r = lo
    while len(out) < MAX_REPLICA_CANDIDATES and r <= max_replicas:
        got = load(r)
        if isinstance(got, PoolLoad):
            if not out or _faster(got, out[-1]):
                out.append(got)
            elif r - lo >= DENSE_STEPS:
                break
            if got.concurrency <= 1.0 + 1e-9 and got.wait_ms <= 1e-9:
                break            # one request per replica and no waiting: more replicas change nothing
        r = r + 1 if r - lo < DENSE_STEPS else max(r + 1, math.ceil(r * 1.25))
    return out, None


def _faster(a: PoolLoad, b: PoolLoad) -> bool:
    """a cuts some member's latency (or the TBT) by at least GAIN_TO_KEEP against b."""
    for k, v in a.latency_ms.items():
        if v < b.latency_ms[k] * (1.0 - GAIN_TO_KEEP):
            return True
    return a.tbt_ms is not None and b.tbt_ms is not None and a.tbt_ms < b.tbt_ms * (1.0 - GAIN_TO_KEEP)
