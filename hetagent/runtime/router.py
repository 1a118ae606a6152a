"""The router: each request through the operator DAG with its deadline, admission control, routing to
the least-loaded replica that holds the request's state, retries when a replica dies.

`Runtime` owns a Deployment, an asyncio loop in a background thread (so the CLI, the Python API and
the HTTP service share one code path) and the run's metrics. `submit(payload)` returns a
concurrent.futures.Future of a Result; every request ends in exactly one of completed / failed /
refused: a replica that dies mid-call is retried (on another replica, or on the same one once Ray
has restarted it) and a call that never answers is bounded by the request's deadline plus a grace
period, so no request is ever left unanswered.

Admission: the plan promises a capacity (hetagent.runtime.graph.planned_capacity); by Little's law
it can hold capacity x SLA requests in flight while meeting the SLA. Beyond that a request is
refused at once (status "refused", HTTP 429) instead of queueing every request past its SLA.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from hetagent.errors import HetagentError
from hetagent.runtime.graph import planned_capacity
from hetagent.runtime.metrics import RunMetrics

RETRYABLE = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError",
             "OwnerDiedError", "ObjectLostError", "ObjectFetchTimedOutError", "NodeDiedError",
             "WorkerCrashedError", "ReferenceCountingAssertionError", "OutOfMemoryError",
             "SandboxKilled")   # a code node's child killed with its dying worker


@dataclass
class Result:
    id: str
    status: str                       # completed | failed | refused
    latency_ms: float | None = None
    output: dict = field(default_factory=dict)
    error: str | None = None
    stages: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "status": self.status, "latency_ms": self.latency_ms,
                "error": self.error, "stages": self.stages}


def _retryable(e: BaseException) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & set(RETRYABLE))


class Runtime:
    def __init__(self, deployment, *, admission: bool = True, max_inflight: int | None = None,
                 retries: int = 6, grace_s: float | None = None, seed: int = 0,
                 sla_ms: float | None = None):
        self.d = deployment
        g = deployment.graph
        self.sla_ms = sla_ms if sla_ms is not None else g.sla_ms
        self.metrics = RunMetrics(self.sla_ms)
        self.admission = admission
        cap = planned_capacity(g)["rps"]
        sla_s = (self.sla_ms or 10_000) / 1000
        self.capacity_rps = cap
        self.max_inflight = max_inflight or (max(1, int(math.floor(cap * sla_s)))
                                             if math.isfinite(cap) else 1_000_000)
        self.retries = retries
        self.grace_s = grace_s if grace_s is not None else max(30.0, 3 * sla_s)
        self.rng = random.Random(seed)
        self.inflight = 0
        self._ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, daemon=True, name="hetagent-router")
        self.thread.start()
        self.listeners: list = []             # callables(result) for the service's metrics
        self.lock = threading.Lock()

    def _run_loop(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # -- public ----------------------------------------------------------------------------------
    def submit(self, payload: dict, request_id: str | None = None,
               deadline_s: float | None = None) -> Future:
        rid = request_id or f"r{next(self._ids)}-{uuid.uuid4().hex[:6]}"
        return asyncio.run_coroutine_threadsafe(self.handle(payload, rid, deadline_s), self.loop)

    def call(self, payload: dict, timeout: float | None = None) -> Result:
        return self.submit(payload).result(timeout)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    # -- one request -----------------------------------------------------------------------------
    async def handle(self, payload: dict, rid: str, deadline_s: float | None = None) -> Result:
        rec = self.metrics.new(rid)
        with self.lock:
            if self.admission and self.inflight >= self.max_inflight:
                rec.status = "refused"
                rec.error = (f"over capacity: {self.inflight} requests in flight, the plan "
                             f"sustains {self.max_inflight} within its SLA")
                res = Result(rid, "refused", error=rec.error)
                self._notify(res)
                return res
            self.inflight += 1
        t0 = time.time()
        budget = deadline_s if deadline_s is not None else (self.sla_ms or 60_000) / 1000
        # deadline: the SLA, which a late answer misses; cutoff: when the request is given up, which
        # bounds every tool, model and code call (a late answer is still an answer)
        ctx = {"request_id": rid, "deadline": t0 + budget, "cutoff": t0 + budget + self.grace_s,
               "sent": t0,
               "session": payload.get("session") if isinstance(payload, dict) else None}
        try:
            out, stages = await asyncio.wait_for(self._flow(payload, ctx, rec),
                                                 timeout=budget + self.grace_s)
            rec.latency_ms = (time.time() - t0) * 1000
            rec.stages = stages
            rec.status = "completed"
            res = Result(rid, "completed", rec.latency_ms, out, stages=stages)
        except asyncio.TimeoutError:
            rec.status, rec.error = "failed", (f"no answer within the deadline plus "
                                               f"{self.grace_s:g} s grace")
            res = Result(rid, "failed", (time.time() - t0) * 1000, error=rec.error)
        except Exception as e:  # noqa: BLE001 - a failed request is answered with its error
            rec.status = "failed"
            rec.error = _one_line(e)
            res = Result(rid, "failed", (time.time() - t0) * 1000, error=rec.error)
        finally:
            with self.lock:
                self.inflight -= 1
        self._notify(res)
        return res

    def _notify(self, res: Result) -> None:
        for fn in list(self.listeners):
            try:
                fn(res)
            except Exception:  # noqa: BLE001 - a listener never breaks a request
                pass

    async def _flow(self, payload: dict, ctx: dict, rec) -> tuple[dict, dict]:
        import ray
        g = self.d.graph
        with self.lock:
            decisions = g.draw(self.rng)
        active = g.active(decisions)
        groups, head_of = self.d.groups, self.d.head_of     # fused chains (one call each)
        src = ray.put(payload)
        outs: dict[str, list] = {}
        events: dict[str, asyncio.Event] = {n: asyncio.Event() for n in g.order}
        stages: dict[str, float] = {}
        errors: list[BaseException] = []

        async def run(name: str):
            try:
                for p in g.preds[name]:
                    await events[p].wait()
                if errors or name in head_of:     # a fused member: its head ran it
                    return
                ins = [r for p in g.preds[name] for r in outs[p]] or [src]
                op = g.operators[name]
                if name not in active or op.kind == "llm.kv_transfer":
                    for m in groups.get(name, [name]):
                        outs[m] = ins             # skipped copy, or the hand-off (decode restores)
                    return
                if name in groups:
                    await self._fused(groups[name], ctx, ins, rec, outs, stages)
                    return
                t = time.time()
                meta, ref = await self._call(name, ctx, ins, rec)
                stages[name] = (time.time() - t) * 1000
                rec.service[name] = meta.get("service_ms")
                self.metrics.note_standin(name, meta)
                self.metrics.note_compiled(name, meta)
                if op.kind == "llm.decode" and "kv_restore_ms" in meta:
                    kv = next((p for p in g.preds[name]
                               if g.operators[p].kind == "llm.kv_transfer"), None)
                    if kv:
                        stages[kv] = meta["kv_restore_ms"]
                        rec.kv.append((kv, meta.get("kv_bytes", 0), meta["kv_restore_ms"]))
                outs[name] = [ref]
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            finally:
                events[name].set()

        await asyncio.gather(*(run(n) for n in g.order))
        if errors:
            raise errors[0]
        sinks = [r for n in g.sinks for r in outs[n]]
        vals = await asyncio.gather(*sinks)
        from hetagent.runtime.actors import merge
        return _public(merge(list(vals))), stages

    async def _fused(self, members: list[str], ctx: dict, ins: list, rec, outs: dict,
                     stages: dict) -> None:
        """A fused chain in one actor call: each member's stage is its own service time plus an
        equal share of the call's overhead; every member's output is the chain's output (only the
        next member reads an inner one)."""
        t = time.time()
        meta, ref = await self._call(members[0], ctx, ins, rec)
        wall = (time.time() - t) * 1000
        metas = meta.get("members") or [meta]
        done = members[:len(metas)]
        extra = max(0.0, wall - sum(m.get("service_ms") or 0 for m in metas)) / len(done)
        for m, mm in zip(done, metas):
            stages[m] = (mm.get("service_ms") or 0) + extra
            rec.service[m] = mm.get("service_ms")
            outs[m] = [ref]
        for m in members[len(done):]:   # the pool was replaced by an unfused one meanwhile
            t = time.time()
            meta, ref = await self._call(m, ctx, [ref], rec)
            stages[m] = (time.time() - t) * 1000
            rec.service[m] = meta.get("service_ms")
            outs[m] = [ref]

    async def _call(self, name: str, ctx: dict, ins: list, rec):
        """One operator call with retries on dead or moved replicas; returns (meta, payload ref).

        Retries go on until the request's deadline plus half the grace period: a replica killed
        mid-call is restarted by Ray (or its pool re-placed by the slow path) meanwhile."""
        last = None
        tried: set = set()
        give_up = ctx["deadline"] + self.grace_s / 2
        attempt = 0
        while True:
            key = self.d.op_pool[name]
            pool = self.d.pools[key]
            i = pool.pick(ctx["request_id"], tried)
            actor = pool.actors[i]
            pool.inflight[i] += 1
            try:
                meta_ref, out_ref = actor.call.options(num_returns=2).remote(ctx, *ins)
                fut = asyncio.ensure_future(_await(meta_ref))
                while True:
                    done, _ = await asyncio.wait({fut}, timeout=1.0)
                    if done:
                        meta = fut.result()
                        break
                    if self.d.pools.get(self.d.op_pool[name]) is not pool or \
                            i >= len(pool.actors) or pool.actors[i] is not actor:
                        fut.cancel()
                        raise _Moved(f"operator '{name}' moved to another pool")
                pool.remember(i, ctx["request_id"])
                return meta, out_ref
            except Exception as e:  # noqa: BLE001
                if not (_retryable(e) or isinstance(e, _Moved)):
                    raise
                last = e
                pool.failures += 1
                rec.retries += 1
                tried.add(i)
                if len(tried) >= len(pool.actors):
                    tried.clear()
                attempt += 1
                if attempt > self.retries and time.time() > give_up:
                    break
                await asyncio.sleep(min(0.2 * 2 ** min(attempt, 6), 2.0))
            finally:
                if i < len(pool.inflight):
                    pool.inflight[i] -= 1
        raise HetagentError(f"operator '{name}' failed after {attempt} attempts: "
                            f"{_one_line(last)}")


class _Moved(Exception):
    pass


async def _await(ref):
    return await ref


def _public(p: dict) -> dict:
    """What a caller gets back: text, audio out, retrieved passages; no internal state."""
    out = {}
    for k in ("text", "question", "passages", "tool_results"):
        if k in p:
            out[k] = p[k]
    if "audio_out" in p:
        out["audio"] = p["audio_out"]
        out["sample_rate"] = p.get("out_rate")
    return out


def _one_line(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        return _one_line(cause)
    s = str(e).strip()
    if isinstance(e, HetagentError) and s:
        return s.splitlines()[0][:500]
    lines = [ln for ln in s.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:400] if lines else ''}".rstrip(": ")
