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

from hetagent.simulator.model import SimModel, active_masks

DELAY, MULTI, BATCH, DECODE = 0, 1, 2, 3
_TYPES = {"delay": DELAY, "multi": MULTI, "batch": BATCH, "decode": DECODE}


@dataclass
class SimResult:
    arrivals_ms: np.ndarray
    done_ms: np.ndarray              # NaN: not finished by the horizon
    stage_ms: list                   # per operator: durations (ready -> done, queueing included)
    pools: list                      # per operator: dict of pool statistics
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
    """One continuous-batching decode replica (fluid token clock V)."""
    __slots__ = ("V", "busy", "ctx", "h", "j", "n", "occ", "step", "tl", "ver")

    def __init__(self, j):
        self.j, self.n, self.V, self.tl, self.step = j, 0, 0.0, 0.0, 1.0
        self.h, self.ctx, self.ver, self.busy, self.occ = [], 0.0, 0, 0.0, 0.0


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
        horizon_s: float | None = None) -> SimResult:
    """Simulate requests arriving at `arrivals_s`; token counts (per request) set the main LLM call's sizes."""
    wall0 = time.perf_counter()
    arr_np = np.asarray(arrivals_s, dtype=float) * 1000.0
    n = len(arr_np)
    M = len(model.ops)
    stations = model.stations
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
    # ---- per-request sizes of the main LLM call
    main = model.main_llm
    prompt = output = None
    if prompt_tokens is not None and main["name"] is not None:
        prompt = np.asarray(prompt_tokens, dtype=float)
        output = np.asarray(output_tokens, dtype=float)
    # ---- per-station runtime state
    stype = [_TYPES[s.type] for s in stations]
    cap = [s.servers for s in stations]
    bmax = [s.batch for s in stations]
    busy = [0] * M
    queues = [deque() for _ in range(M)]
    busy_ms = [0.0] * M
    wait_sum = [0.0] * M
    waits = [0] * M
    maxq = [0] * M
    nbatch = [0] * M
    nitems = [0] * M
    svc_list = [None] * M          # per request service times (lognormal tools, variable sizes)
    fixed = [s.fixed_ms if s.fixed_ms is not None else 0.0 for s in stations]
    tok = [None] * M               # per request tokens for batch/decode stations of the main call
    outs = [None] * M
    for j, s in enumerate(stations):
        if s.lognormal is not None:
            mean, cv, extra = s.lognormal
            svc_list[j] = (_lognormal(rng, mean, cv, n) + extra).tolist()
    if prompt is not None:
        pl, ol = prompt.tolist(), output.tolist()
        for j, s in enumerate(stations):
            if s.variable == "prefill":
                tok[j] = pl
            elif s.variable == "decode":
                tok[j] = (prompt + output / 2.0).tolist()
                outs[j] = ol
            elif s.variable == "kv":
                svc_list[j] = [s.service(1, p) for p in pl] if s.fixed_ms else None
            elif s.variable == "remote":
                svc_list[j] = [s.service(1, o) for o in ol]
    reps = [[_Rep(j) for _ in range(s.servers)] if s.type == "decode" else None for j, s in enumerate(stations)]
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
        ty = stype[j]
        if ty == MULTI:
            if busy[j] < cap[j]:
                busy[j] += 1
                sl = svc_list[j]
                s = sl[rid] if sl is not None else fixed[j]
                busy_ms[j] += s
                waits[j] += 1
                seq += 1
                heappush(heap, (t + s, seq, 5, rid, j))
            else:
                q = queues[j]
                q.append((rid, t))
                maxq[j] = max(maxq[j], len(q))
        elif ty == BATCH:
            q = queues[j]
            q.append((rid, t))
            if busy[j] < cap[j]:
                start_batch(j, t)
            elif len(q) > maxq[j]:
                maxq[j] = len(q)
        elif ty == DECODE:
            best = None
            for rep in reps[j]:
                if rep.n < bmax[j] and (best is None or rep.n < best.n):
                    best = rep
                    if rep.n == 0:
                        break
            if best is None:
                q = queues[j]
                q.append((rid, t))
                maxq[j] = max(maxq[j], len(q))
            else:
                waits[j] += 1
                join(best, rid, t)
                resched(best, t)
        else:   # DELAY
            sl = svc_list[j]
            s = sl[rid] if sl is not None else fixed[j]
            if s <= 0.0:
                finish(rid, j, t)
            else:
                busy_ms[j] += s
                seq += 1
                heappush(heap, (t + s, seq, 1, rid, j))

    def start_batch(j, t):
        nonlocal seq
        q = queues[j]
        b = bmax[j]
        tk = tok[j]
        while q and busy[j] < cap[j]:
            k = min(b, len(q))
            items = [q.popleft() for _ in range(k)]
            busy[j] += 1
            if tk is not None:
                s = service[j](k, sum(tk[i] for i, _ in items) / k)
            else:
                s = service[j](k)
            busy_ms[j] += s
            nbatch[j] += 1
            nitems[j] += k
            waits[j] += k
            for _, te in items:
                wait_sum[j] += t - te
            seq += 1
            heappush(heap, (t + s, seq, 2, j, items))

    def join(rep, rid, t):
        nonlocal seq
        j = rep.j
        if rep.n:
            dt = t - rep.tl
            rep.V += dt / rep.step
            rep.busy += dt
            rep.occ += dt * rep.n
        rep.tl = t
        tk = tok[j]
        if tk is not None:
            o, c = outs[j][rid], tk[rid]
        else:
            o, c = nom_out[j], nom_ctx[j]
        seq += 1
        heappush(rep.h, (rep.V + o, seq, rid, c))
        rep.n += 1
        rep.ctx += c

    def resched(rep, t):
        nonlocal seq
        if rep.n == 0:
            return
        j = rep.j
        rep.step = service[j](rep.n, rep.ctx / rep.n) if tok[j] is not None else service[j](rep.n)
        rep.ver += 1
        dv = rep.h[0][0] - rep.V
        seq += 1
        heappush(heap, (t + (dv * rep.step if dv > 0 else 0.0), seq, 3, rep, rep.ver))

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
        end = t
        if code == 5:                      # multi-server completion
            busy[b] -= 1
            finish(a, b, t)
            q = queues[b]
            if q and busy[b] < cap[b]:
                rid, te = q.popleft()
                wait_sum[b] += t - te
                dispatch(rid, b, t)
        elif code == 2:                    # batch completion
            busy[a] -= 1
            for rid, _ in b:
                finish(rid, a, t)
            if queues[a]:
                start_batch(a, t)
        elif code == 3:                    # decode replica: the next sequence(s) finish
            rep = a
            if b != rep.ver:
                continue
            dt = t - rep.tl
            rep.V += dt / rep.step
            rep.busy += dt
            rep.occ += dt * rep.n
            rep.tl = t
            h = rep.h
            j = rep.j
            fin = []
            while h and h[0][0] <= rep.V + 1e-6:
                _, _, rid, c = heappop(h)
                rep.n -= 1
                rep.ctx -= c
                fin.append(rid)
            if rep.n == 0:
                rep.ctx = 0.0
            q = queues[j]
            while q and rep.n < bmax[j]:
                rid, te = q.popleft()
                wait_sum[j] += t - te
                waits[j] += 1
                join(rep, rid, t)
            resched(rep, t)
            for rid in fin:
                finish(rid, j, t)
        elif code == 1:                    # delay
            finish(a, b, t)
        else:                              # 4: ready after a transfer
            dispatch(a, b, t)
    end = max(end, arr[-1] if arr else 0.0)
    for j, rs in enumerate(reps):          # close the books of the decode replicas
        if rs is None:
            continue
        for rep in rs:
            if rep.n:
                dt = end - rep.tl
                rep.busy += dt
                rep.occ += dt * rep.n
            busy_ms[j] += rep.busy
    pools = []
    for j, s in enumerate(stations):
        d = {"type": s.type, "device": s.placement["device"], "servers": s.servers, "batch": s.batch,
             "busy_ms": busy_ms[j], "wait_ms_total": wait_sum[j], "started": waits[j], "max_queue": maxq[j]}
        if s.type == "batch":
            d["batches"], d["items"] = nbatch[j], nitems[j]
        if s.type == "decode":
            d["occupancy_ms"] = sum(r.occ for r in reps[j])
        pools.append(d)
    return SimResult(arr_np, np.asarray(done, dtype=float), stage, pools, masks, counts, arms, prompt, output,
                     end, time.perf_counter() - wall0, events)
