"""The discrete-event simulator: runs a plan (plan.json) in virtual time.

`run(model, arrivals_s, rng, ...)` simulates the requests arriving at `arrivals_s` (seconds) through the
stations of a `sim_model.SimModel` and returns a `SimResult`; `hetagent.simulator.commands.simulate`
is the user-facing entry (plan, trace or rate, duration, seed -> dict). The model and every
distribution are described in docs/simulator.md.

Mechanics. One heap of events (time, sequence number, code, a, b); the sequence number breaks ties in
insertion order, so a run is a deterministic function of the seed. Random draws are made up front with
numpy (loop counts, branch arms, tool latencies), so the event loop draws nothing. Per request, the set
of operators that run (its "pattern") is looked up among the distinct patterns, each compiled once into
a DAG (operators that do not run are bypassed). Service times come from per-station tables
(operator x batch size x context bucket) filled on first use from the cost model.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from heapq import heappop, heappush

import numpy as np

from hetagent.simulator.model import SimModel, active_masks, draw_sizes

DELAY, MULTI, BATCH, DECODE = 0, 1, 2, 3
_TYPES = {"delay": DELAY, "multi": MULTI, "batch": BATCH, "decode": DECODE}


@dataclass
class SimResult:
    arrivals_ms: np.ndarray
    done_ms: np.ndarray              # NaN: not finished by the horizon
    stage_ms: list                   # per operator: durations (ready -> done, queueing included)
    pools: list                      # per pool: dict of pool statistics (members: operator indices)
    masks: np.ndarray                # per request and operator: ran
    loop_counts: dict
    branch_arms: dict
    prompt: np.ndarray | None
    output: np.ndarray | None
    end_ms: float
    wall_s: float
    events: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def latency_ms(self) -> np.ndarray:
        return self.done_ms - self.arrivals_ms


class _Rep:
    """One continuous-batching decode replica (fluid token clock V). On a co-located engine `extra` is
    the time the prefill in progress adds to each step."""
    __slots__ = ("V", "busy", "ctx", "extra", "h", "k", "n", "occ", "prefilling", "step", "tl", "ver")

    def __init__(self, k):
        self.k, self.n, self.V, self.tl, self.step = k, 0, 0.0, 0.0, 1.0
        self.h, self.ctx, self.ver, self.busy, self.occ = [], 0.0, 0, 0.0, 0.0
        self.extra, self.prefilling = 0.0, False


def _lognormal(rng, mean, cv, n):
    if mean <= 0:
        return np.zeros(n)
    if cv <= 0:
        return np.full(n, float(mean))
    s2 = math.log1p(cv * cv)
    return rng.lognormal(math.log(mean) - s2 / 2.0, math.sqrt(s2), n)


def _compile_pattern(model: SimModel, active):
    """(succ, npred, sources, n_active) of the DAG of the operators that run."""
    m = len(model.ops)
    through = [None] * m     # active operators whose output reaches each operator's output
    succ = [[] for _ in range(m)]
    npred = [0] * m
    sources = []
    for j in range(m):       # operator order is topological (extract walks producers first)
        eff = []
        for p in model.preds[j]:
            for a in through[p]:
                if a not in eff:
                    eff.append(a)
        if active[j]:
            through[j] = (j,)
            npred[j] = len(eff)
            if not eff:
                sources.append(j)
            for a in eff:
                succ[a].append((j, model.transfer_ms(a, j)))
        else:
            through[j] = tuple(eff)
    return succ, npred, sources, int(sum(1 for a in active if a))


def run(model: SimModel, arrivals_s, rng: np.random.Generator, *, prompt_tokens=None, output_tokens=None,
        horizon_s: float | None = None, max_events: int | None = None) -> SimResult:
    """Simulate requests arriving at `arrivals_s`; token counts (per request) set the main LLM call's sizes.
    Raises InputError once more than `max_events` events have run (None: no limit)."""
    wall0 = time.perf_counter()
    arr_np = np.asarray(arrivals_s, dtype=float) * 1000.0
    n = len(arr_np)
    M = len(model.ops)
    stations = model.stations
    pools = model.pools
    P = len(pools)
    masks, counts, arms = active_masks(model, n, rng)
    # ---- distinct patterns
    if n:
        packed = np.packbits(masks, axis=1)
        uniq, inverse = np.unique(packed, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        pats = [_compile_pattern(model, np.unpackbits(u)[:M].astype(bool)) for u in uniq]
    else:
        inverse, pats = np.zeros(0, dtype=int), []
    pat_of = inverse.tolist()
    # ---- per-request sizes of the main LLM call (a trace's)
    main = model.main_llm
    prompt = output = None
    if prompt_tokens is not None and main["name"] is not None:
        prompt = np.asarray(prompt_tokens, dtype=float)
        output = np.asarray(output_tokens, dtype=float)
    # ---- per-pool runtime state (operators of one pool share servers, queues and replicas)
    pool_of = [s.pool for s in stations]
    ptype = [_TYPES[p.type] for p in pools]
    cap = [p.servers for p in pools]
    bmax = [p.batch for p in pools]
    pipe = [max(1, p.pp) for p in pools]         # co-located engines: pipeline stages per replica
    busy = [0] * P
    queues = [deque() for _ in range(P)]
    prefills = [deque() for _ in range(P)]       # co-located engines: prompts waiting for a replica
    busy_ms = [0.0] * P
    wait_sum = [0.0] * P
    waits = [0] * P
    maxq = [0] * P
    nbatch = [0] * P
    nitems = [0] * P
    # a decode pool's steps are priced by one of its decode operators at the replica's mean context
    step_op = [next((j for j in p.members if stations[j].type == "decode"), p.members[0]) for p in pools]
    is_prefill = [s.phase == "prefill" for s in stations]
    # ---- per-operator service
    svc_list = [None] * M          # per request service times (lognormal tools, variable sizes)
    fixed = [s.fixed_ms if s.fixed_ms is not None else 0.0 for s in stations]
    tok = [None] * M               # per request tokens for batch/decode stations of the main call
    outs = [None] * M
    for j, s in enumerate(stations):
        if s.latency_dist is not None:
            svc_list[j] = (s.latency_dist.sample(rng, n) + s.lognormal[2]).tolist()
        elif s.lognormal is not None:
            mean, cv, extra = s.lognormal
            svc_list[j] = (_lognormal(rng, mean, cv, n) + extra).tolist()
    P, O = draw_sizes(model, n, rng, prompt, output)     # every LLM operator whose sizes vary
    for j, s in enumerate(stations):
        if j not in P and j not in O:
            continue
        pj = P.get(j, np.full(n, float(s.nominal_prompt)))
        oj = O.get(j, np.full(n, float(s.nominal_output)))
        if s.part == "prefill":
            tok[j] = pj.tolist()
        elif s.part == "decode":
            tok[j] = (pj + oj / 2.0).tolist()
            outs[j] = oj.tolist()
        elif s.part == "kv":
            svc_list[j] = [s.service(1, p) for p in pj.tolist()] if s.fixed_ms else None
        elif s.part == "remote":
            svc_list[j] = [s.service(1, o) for o in oj.tolist()]
    # ---- KV kept across tool calls: a prompt's prefix held from its previous call's end to its start
    retained = [j for j, s in enumerate(stations) if s.retain]
    next_of = {stations[j].prev[1]: j for j in retained}           # previous decode -> the prompt after it
    holding: dict = {}           # (request, prompt) -> cached tokens it will not recompute
    reloaded: set = set()
    held = [0] * len(pools)
    held_gb = [0.0] * len(pools)
    held_area = [0.0] * len(pools)      # integral of held GB over time
    held_last = [0.0] * len(pools)
    held_max = [0] * len(pools)
    evicted = [0] * len(pools)
    pre_tokens = [0.0] * len(pools)     # prompt tokens computed
    pre_cached = [0.0] * len(pools)     # prompt tokens found in the cache
    nom_prompt = [float(s.nominal_prompt) for s in stations]
    nom_output = [float(s.nominal_output) for s in stations]

    def size(arrs, j, rid, nominal):
        a = arrs.get(j)
        return float(a[rid]) if a is not None else nominal[j]

    def hold_change(k, t, dgb, dn):
        held_area[k] += held_gb[k] * (t - held_last[k])
        held_last[k] = t
        held_gb[k] += dgb
        held[k] += dn
        held_max[k] = max(held_max[k], held[k])
    reps = [[_Rep(k) for _ in range(p.servers)] if p.type == "decode" else None for k, p in enumerate(pools)]
    reload = [s.reload_ms for s in stations]
    nom_out = [max(1, s.nominal_output) for s in stations]
    nom_ctx = [s.nominal_prompt + s.nominal_output / 2.0 for s in stations]
    stage = [[] for _ in range(M)]
    arr = arr_np.tolist()
    done = [math.nan] * n
    left = [0] * n
    pend = [None] * n
    rdy = [None] * n
    succs = [None] * n
    heap: list = []
    seq = 0
    horizon = math.inf if horizon_s is None else horizon_s * 1000.0
    service = [s.service for s in stations]

    def finish(rid, j, t):
        nonlocal seq
        r = rdy[rid]
        stage[j].append(t - r[j])
        q = next_of.get(j)
        if q is not None and masks[rid, q]:      # this call's KV waits for the next iteration's prompt
            sq, k = stations[q], pool_of[q]
            p_prev, p_next = size(P, sq.prev[0], rid, nom_prompt), size(P, q, rid, nom_prompt)
            cached = max(0.0, min(p_prev + size(O, j, rid, nom_output), p_next - 1.0))
            cap_k = pools[k].retain_cap
            if cap_k is not None and held[k] >= cap_k:
                evicted[k] += 1               # no room: dropped, the prompt is computed whole
            elif cached > 0:
                holding[(rid, q)] = cached
                hold_change(k, t, cached * sq.kv_gb_per_token, 1)
        left[rid] -= 1
        if left[rid] == 0:
            done[rid] = t
        pr = pend[rid]
        for q, d in succs[rid][j]:
            tq = t + d
            r[q] = max(r[q], tq)
            pr[q] -= 1
            if pr[q] == 0:
                if r[q] > t:
                    seq += 1
                    heappush(heap, (r[q], seq, 4, rid, q))
                else:
                    dispatch(rid, q, t)

    def dispatch(rid, j, t):
        nonlocal seq
        k = pool_of[j]
        ty = ptype[k]
        if ty == MULTI:
            if busy[k] < cap[k]:
                busy[k] += 1
                sl = svc_list[j]
                s = sl[rid] if sl is not None else fixed[j]
                busy_ms[k] += s
                waits[k] += 1
                seq += 1
                heappush(heap, (t + s, seq, 5, rid, j))
            else:
                q = queues[k]
                q.append((rid, j, t))
                maxq[k] = max(maxq[k], len(q))
        elif ty == BATCH:
            q = queues[k]
            q.append((rid, j, t))
            if busy[k] < cap[k]:
                start_batch(k, t)
            elif len(q) > maxq[k]:
                maxq[k] = len(q)
        elif ty == DECODE:
            if is_prefill[j]:
                if reload[j] > 0 and (rid, j) in holding and (rid, j) not in reloaded:
                    reloaded.add((rid, j))        # offload: the prefix comes back from host memory first
                    seq += 1
                    heappush(heap, (t + reload[j], seq, 4, rid, j))
                    return
                prefills[k].append((rid, j, t))
                maxq[k] = max(maxq[k], len(prefills[k]))
                start_prefill(k, t)
                return
            best = None
            for rep in reps[k]:
                if rep.n < bmax[k] and (best is None or rep.n < best.n):
                    best = rep
                    if rep.n == 0:
                        break
            if best is None:
                q = queues[k]
                q.append((rid, j, t))
                maxq[k] = max(maxq[k], len(q))
            else:
                waits[k] += 1
                join(best, rid, j, t)
                resched(best, t)
        else:   # DELAY
            sl = svc_list[j]
            s = sl[rid] if sl is not None else fixed[j]
            if s <= 0.0:
                finish(rid, j, t)
            else:
                busy_ms[k] += s
                seq += 1
                heappush(heap, (t + s, seq, 1, rid, j))

    def take(q, b):
        """Up to b queued items of the head's operator (one operator per batch)."""
        j0 = q[0][1]
        items, rest = [], deque()
        while q:
            it = q.popleft()
            if it[1] == j0 and len(items) < b:
                items.append(it)
            else:
                rest.append(it)
        q.extend(rest)
        return j0, items

    def start_batch(k, t):
        nonlocal seq
        q = queues[k]
        while q and busy[k] < cap[k]:
            j, items = take(q, bmax[k])
            kk = len(items)
            busy[k] += 1
            tk = tok[j]
            if stations[j].part == "prefill":
                pre_tokens[k] += sum(tk[i] for i, _, _ in items) if tk is not None else kk * nom_prompt[j]
            s = service[j](kk, sum(tk[i] for i, _, _ in items) / kk) if tk is not None else service[j](kk)
            busy_ms[k] += s
            nbatch[k] += 1
            nitems[k] += kk
            waits[k] += kk
            for _, _, te in items:
                wait_sum[k] += t - te
            seq += 1
            heappush(heap, (t + s, seq, 2, k, (j, items)))

    def advance(rep, t):
        if rep.n:
            dt = t - rep.tl
            rep.V += dt / rep.step
            rep.busy += dt
            rep.occ += dt * rep.n
        rep.tl = t

    def join(rep, rid, j, t):
        nonlocal seq
        advance(rep, t)
        tk = tok[j]
        if tk is not None:
            o, c = outs[j][rid], tk[rid]
        else:
            o, c = nom_out[j], nom_ctx[j]
        seq += 1
        heappush(rep.h, (rep.V + o, seq, rid, c, j))
        rep.n += 1
        rep.ctx += c

    def resched(rep, t):
        nonlocal seq
        if rep.n == 0:
            return
        k = rep.k
        rep.step = service[step_op[k]](rep.n, rep.ctx / rep.n) + rep.extra
        rep.ver += 1
        dv = rep.h[0][0] - rep.V
        seq += 1
        heappush(heap, (t + (dv * rep.step if dv > 0 else 0.0), seq, 3, rep, rep.ver))

    def start_prefill(k, t):
        """Co-located engine: a replica with no prefill in progress takes the queued prompts of one
        operator as one chunk; its decode steps last that much longer until the chunk is done."""
        nonlocal seq
        q = prefills[k]
        while q:
            free = [r for r in reps[k] if not r.prefilling]
            if not free:
                return
            rep = min(free, key=lambda r: r.n)
            j, items = take(q, bmax[k])
            kk = len(items)
            tk = tok[j]
            cached = 0.0
            for i, _, _ in items:
                c = holding.pop((i, j), 0.0)
                if c:
                    hold_change(k, t, -c * stations[j].kv_gb_per_token, -1)
                    cached += c
            prompt_sum = sum(tk[i] for i, _, _ in items) if tk is not None else kk * nom_prompt[j]
            pre_tokens[k] += prompt_sum - cached
            pre_cached[k] += cached
            if cached:
                s = service[j](kk, prompt_sum / kk, cached / kk)
            else:
                s = service[j](kk, prompt_sum / kk) if tk is not None else service[j](kk)
            advance(rep, t)
            base = service[step_op[k]](rep.n, rep.ctx / rep.n) if rep.n else 0.0
            # a pp-stage pipeline holds each stage s / pp for the chunk (the engine's share, as the plan's
            # rho_p), and takes the next chunk then; the chunk itself is done after all s, joining a step
            held_ms = s / pipe[k]
            rep.prefilling, rep.extra = True, held_ms
            resched(rep, t)
            if not rep.n:
                busy_ms[k] += held_ms
            nbatch[k] += 1
            nitems[k] += kk
            waits[k] += kk
            for _, _, te in items:
                wait_sum[k] += t - te
            seq += 1
            if pipe[k] == 1:
                heappush(heap, (t + s + base, seq, 6, rep, (j, items)))
                continue
            heappush(heap, (t + held_ms + base, seq, 6, rep, (j, ())))
            for rid, _, _ in items:
                seq += 1
                heappush(heap, (t + s + base, seq, 1, rid, j))

    ai = 0
    events = 0
    end = 0.0
    while True:
        if ai < n and (not heap or arr[ai] <= heap[0][0]):
            t = arr[ai]
            if t > horizon:
                break
            rid = ai
            ai += 1
            events += 1
            pat = pats[pat_of[rid]]
            succ, npred, sources, nact = pat
            succs[rid] = succ
            pend[rid] = npred[:]
            rdy[rid] = [t] * M
            left[rid] = nact
            if nact == 0:
                done[rid] = t
                continue
            for j in sources:
                dispatch(rid, j, t)
            continue
        if not heap:
            break
        t, _, code, a, b = heappop(heap)
        if t > horizon:
            break
        events += 1
        if max_events is not None and events > max_events:
            from hetagent.errors import InputError
            raise InputError(f"the simulation passed its limit of {max_events:g} events; shorten "
                             "--duration or lower --rate, or raise --max-events")
        end = t
        if code == 5:                      # multi-server completion
            k = pool_of[b]
            busy[k] -= 1
            finish(a, b, t)
            q = queues[k]
            if q and busy[k] < cap[k]:
                rid, j, te = q.popleft()
                wait_sum[k] += t - te
                dispatch(rid, j, t)
        elif code == 2:                    # batch completion
            busy[a] -= 1
            j, items = b
            for rid, _, _ in items:
                finish(rid, j, t)
            if queues[a]:
                start_batch(a, t)
        elif code == 3:                    # decode replica: the next sequence(s) finish
            rep = a
            if b != rep.ver:
                continue
            advance(rep, t)
            h = rep.h
            k = rep.k
            fin = []
            while h and h[0][0] <= rep.V + 1e-6:
                _, _, rid, c, j = heappop(h)
                rep.n -= 1
                rep.ctx -= c
                fin.append((rid, j))
            if rep.n == 0:
                rep.ctx = 0.0
            q = queues[k]
            while q and rep.n < bmax[k]:
                rid, j, te = q.popleft()
                wait_sum[k] += t - te
                waits[k] += 1
                join(rep, rid, j, t)
            resched(rep, t)
            for rid, j in fin:
                finish(rid, j, t)
        elif code == 6:                    # co-located engine: a prefill chunk is done
            rep = a
            j, items = b
            advance(rep, t)
            rep.prefilling, rep.extra = False, 0.0
            resched(rep, t)
            for rid, _, _ in items:
                finish(rid, j, t)
            start_prefill(rep.k, t)
        elif code == 1:                    # delay
            finish(a, b, t)
        else:                              # 4: ready after a transfer
            dispatch(a, b, t)
    end = max(end, arr[-1] if arr else 0.0)
    for k, rs in enumerate(reps):          # close the books of the decode replicas
        if rs is None:
            continue
        for rep in rs:
            if rep.n:
                dt = end - rep.tl
                rep.busy += dt
                rep.occ += dt * rep.n
            busy_ms[k] += rep.busy
    out_pools = []
    for k, p in enumerate(pools):
        d = {"name": p.name, "type": p.type, "device": p.device, "servers": p.servers, "batch": p.batch,
             "busy_ms": busy_ms[k], "wait_ms_total": wait_sum[k], "started": waits[k], "max_queue": maxq[k],
             "members": list(p.members), "colocated": p.colocated}
        if p.type == "batch" or p.colocated:
            d["batches"], d["items"] = nbatch[k], nitems[k]
        if p.type == "decode":
            d["occupancy_ms"] = sum(r.occ for r in reps[k])
        if pre_tokens[k] or pre_cached[k]:
            d["prefill_tokens"], d["prefill_cached"] = pre_tokens[k], pre_cached[k]
        if any(stations[j].retain for j in p.members):
            hold_change(k, end, 0.0, 0)
            d["retained"] = {"mean_gb_per_replica": held_area[k] / end / max(1, p.servers) if end > 0 else 0.0,
                             "max_requests": held_max[k], "evicted": evicted[k], "cap": p.retain_cap}
        out_pools.append(d)
    return SimResult(arr_np, np.asarray(done, dtype=float), stage, out_pools, masks, counts, arms, prompt,
                     output, end, time.perf_counter() - wall0, events, {"sizes": (P, O)})
