"""The ingress: one Serve deployment per workflow that drives each request through the operator graph.

`IngressCore` (no Ray needed, so it is tested with stand-in pools) does the work; `bind_ingress` wraps it
in a Serve deployment whose HTTP routes (hetagent.runtime.service) are served through Serve's proxy, and
whose methods (`submit`, `warm_up`, `stats`, `rebind`) `hetagent run`, the live view and the slow path
call through its deployment handle.

A request:
1. draws its control decisions (iterations per loop, an arm per branch): its active operators;
2. is admitted or refused at once (hetagent.runtime.admission: measured service, the work queued ahead,
   its deadline);
3. runs every operator when its predecessors are done: each chain of operators that one unit serves goes
   there in one call through the unit's deployment handle; operators of copies or arms not taken pass
   their inputs through; a KV hand-off (`llm.kv_transfer`) has no pool, its stage time is the decode
   side's rebuild of the KV cache;
4. ends at its deadline at the latest (`deadline_ms`, else `deadline_factor` x the SLA): completed,
   failed or refused, never left waiting. Calls in flight at the deadline are cancelled (Serve passes the
   cancellation to the replica).

Retries: a call whose replica died (Ray's actor errors), whose engine process died, or whose pool was
replaced by a new plan is sent again, through the handle, to a live replica of the operator's current
pool (Serve routes around dead replicas and starts new ones), with backoff, until the deadline. No
request is lost: every one ends in exactly one of completed, failed, refused.

/metrics (Prometheus): requests by status; per pool retries, failures, refusals and lost calls (a call
still unanswered when its request reached its deadline); end-to-end and per-operator latency; in
flight; the admission's estimated wait and each pool's backlog and measured service time.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import deque

import numpy as np

from hetagent.errors import HetagentError
from hetagent.runtime.admission import Admission
from hetagent.runtime.executors import merge

RETRYABLE = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError",
             "OwnerDiedError", "ObjectLostError", "ObjectFetchTimedOutError", "NodeDiedError",
             "WorkerCrashedError", "ReferenceCountingAssertionError", "OutOfMemoryError",
             "DeploymentUnavailableError", "ReplicaUnavailableError", "EngineUnavailable",
             "SandboxKilled", "UnroutedOperator")
MOVED_CHECK_S = 1.0          # how often a waiting call checks that its operator has not moved
WARM_UP_PATHS = 4            # warm-up requests: one down each of the most frequent paths
WARM_UP_MS = 600_000.0       # the warm-up request's deadline (and a request's when there is no SLA)
STANDIN_HOST_SHARE = 0.5      # of the host's cores the stand-ins may use before their outputs are shared


class UnroutedOperator(Exception):
    """A call went to a pool that no longer serves its operator (a new plan moved it): retried."""


def retryable(e: BaseException) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & set(RETRYABLE))


def one_line(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        return one_line(cause)
    s = str(e).strip()
    if isinstance(e, HetagentError) and s:
        return s.splitlines()[0][:500]
    lines = [ln for ln in s.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:400] if lines else ''}".rstrip(": ")


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


def _pct(xs, ps=(50, 95, 99)) -> dict:
    if not len(xs):
        return {f"p{p}": None for p in ps}
    a = np.asarray(xs, float)
    return {f"p{p}": round(float(np.percentile(a, p)), 3) for p in ps}


class Prom:
    """The ingress's Prometheus registry."""

    def __init__(self, pools: list[str]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        r = self.registry = CollectorRegistry()
        self.requests = Counter("hetagent_requests", "Requests by final status", ["status"], registry=r)
        self.retries = Counter("hetagent_pool_retries", "Calls sent again after their replica died or "
                               "their pool was replaced", ["pool"], registry=r)
        self.failures = Counter("hetagent_pool_failures", "Requests failed by an error in this pool",
                                ["pool"], registry=r)
        self.refusals = Counter("hetagent_pool_refusals", "Requests refused at admission because "
                                "this pool's (or host's) backlog would miss their deadline", ["pool"],
                                registry=r)
        self.lost = Counter("hetagent_pool_lost", "Calls still unanswered when their request reached "
                            "its deadline (the request failed; a late answer is dropped)", ["pool"],
                            registry=r)
        self.latency = Histogram("hetagent_latency_seconds", "End-to-end latency of completed requests",
                                 buckets=(.05, .1, .25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120), registry=r)
        self.stage = Histogram("hetagent_stage_latency_seconds", "Per-operator latency", ["operator"],
                               buckets=(.001, .005, .01, .05, .1, .25, .5, 1, 2, 5, 10), registry=r)
        self.inflight = Gauge("hetagent_inflight", "Requests in flight", registry=r)
        self.sla = Gauge("hetagent_sla_attainment", "Fraction of completed requests within the SLA "
                         "(last 60 s)", registry=r)
        self.wait = Gauge("hetagent_admission_wait_seconds", "Estimated wait of a request arriving now "
                          "(the longest backlog of a pool or host)", registry=r)
        self.backlog = Gauge("hetagent_pool_backlog_seconds", "Work admitted and not yet done, over the "
                             "pool's slots (or the host's cores)", ["pool"], registry=r)
        self.service = Gauge("hetagent_pool_service_seconds", "Measured service time per call, mean "
                             "over the pool's operators", ["pool"], registry=r)
        for s in ("completed", "failed", "refused"):
            self.requests.labels(s)
        for p in pools:
            for c in (self.retries, self.failures, self.refusals, self.lost):
                c.labels(p)

    def text(self) -> str:
        from prometheus_client import generate_latest
        return generate_latest(self.registry).decode()


class Record:
    __slots__ = ("id", "status", "latency_ms", "error", "stages", "service", "ops", "retries",
                 "refused_by", "kv", "estimate")

    def __init__(self, rid: str):
        self.id, self.status, self.latency_ms, self.error = rid, "pending", None, None
        self.stages, self.service, self.ops = {}, {}, {}
        self.retries, self.refused_by, self.kv, self.estimate = 0, None, [], None

    def to_json(self, output: dict | None = None) -> dict:
        return {"id": self.id, "status": self.status, "latency_ms": self.latency_ms,
                "error": self.error, "stages": self.stages, "service": self.service, "ops": self.ops,
                "retries": self.retries, "refused_by": self.refused_by, "kv": self.kv,
                "estimate": self.estimate, "output": output or {}}


class IngressCore:
    """The request path. `call_unit(route, request)` is awaited for each call: (metas, payload)."""

    def __init__(self, cfg: dict, call_unit):
        self.call_unit = call_unit
        self.sla_ms = cfg.get("sla_ms")
        self.deadline_factor = float(cfg.get("deadline_factor") or 2.0)
        self.rng = random.Random(cfg.get("seed", 0))
        self._ids = itertools.count(1)
        self.compiled = dict(cfg.get("compiled") or {})
        self.fused = [list(f) for f in cfg.get("fused") or []]
        self._install(cfg["graph"], cfg["routes"], cfg["unit_of"], cfg["chains"], cfg.get("emulated", []))
        self.admission = Admission(self.graph, self.unit_of,
                                   {u: r.capacity for u, r in self.routes.items()},
                                   cpu_real=set(cfg.get("cpu_real") or ()), cores=cfg.get("cores") or 1,
                                   enabled=bool(cfg.get("admission", True)))
        self.standin: dict[str, str] = {}     # unit -> "shared" (see warm_up)
        self.emulation: dict = {}
        self.prom = Prom(sorted(self.routes))
        self.recent: deque = deque(maxlen=20000)  # (t_end, t_sent, status, latency_ms, stages)
        self.inflight = 0
        self.unit_calls: dict[str, int] = {}      # calls in flight per unit (from this ingress)
        self.prom.inflight.set_function(lambda: self.inflight)
        self.prom.sla.set_function(lambda: self.stats(60).get("sla_attainment") or 0.0)
        self.prom.wait.set_function(lambda: max(self.admission.backlog().values(), default=0.0) / 1000)

    def _install(self, graph, routes, unit_of, chains, emulated) -> None:
        self.graph, self.routes = graph, dict(routes)
        self.unit_of, self.chains = dict(unit_of), {h: list(m) for h, m in chains.items()}
        self.head_of = {m: h for h, ms in self.chains.items() for m in ms}
        self.emulated = list(emulated)
        self.emulated_kv = {n for n, op in graph.operators.items() if op.kind == "llm.kv_transfer"
                            and any(s in self.emulated for s in graph.succs[n])}
        first = {graph.operators[n].kind for n in graph.order if not graph.preds[n]}
        last = {graph.operators[n].kind for n in graph.sinks}
        self.audio_in = "speech.frontend" in first
        self.audio_out = "speech.synthesize" in last

    def rebind(self, graph, routes, unit_of, chains, emulated) -> None:
        """A new plan's routes: requests already running keep their graph; every call from now on
        (and every retry) goes to the operator's pool in the new routes."""
        self._install(graph, routes, unit_of, chains, emulated)
        self.admission.graph = graph
        self.admission.set_routes(unit_of, {u: r.capacity for u, r in routes.items()})
        for u in routes:
            for c in (self.prom.retries, self.prom.failures, self.prom.refusals, self.prom.lost):
                c.labels(u)

    # -- a request ------------------------------------------------------------------------------------
    async def handle(self, payload: dict, *, deadline_ms: float | None = None,
                     request_id: str | None = None, warmup: bool = False,
                     decisions: dict | None = None) -> dict:
        rid = request_id or f"r{next(self._ids)}-{uuid.uuid4().hex[:6]}"
        rec = Record(rid)
        g, unit_of, chains, head_of = self.graph, self.unit_of, self.chains, self.head_of
        decisions = decisions or g.draw(self.rng)
        active = g.active(decisions)
        t0 = time.time()
        explicit = deadline_ms is not None
        budget_ms = deadline_ms if explicit else (self.deadline_factor * self.sla_ms if self.sla_ms
                                                   else WARM_UP_MS)
        if warmup:                  # the first call of every stand-in and engine: not held to the SLA
            budget_ms = max(budget_ms, WARM_UP_MS)
        if not warmup:
            d = self.admission.decide(active, deadline_ms=deadline_ms if explicit else None,
                                      sla_ms=self.sla_ms)
            rec.estimate = {"latency_ms": round(d.estimate.latency_ms, 3),
                            "wait_ms": round(d.estimate.wait_ms, 3),
                            "correction": round(d.estimate.correction, 3)}
            if not d.admit:
                rec.status, rec.error = "refused", d.reason
                rec.refused_by = d.estimate.bottleneck
                self.prom.refusals.labels(d.estimate.bottleneck or "deadline").inc()
                return self._finish(rec, t0, None, warmup)
        self.admission.admit(rid, active)
        self.inflight += 1
        ctx = {"request_id": rid, "deadline": t0 + budget_ms / 1000, "sent": t0, "warmup": warmup,
               "session": payload.get("session") if isinstance(payload, dict) else None}
        outstanding: dict[str, int] = {}
        out = None
        try:
            out = await asyncio.wait_for(
                self._flow(payload, ctx, rec, active, g, unit_of, chains, head_of, outstanding),
                timeout=max(0.0, budget_ms / 1000 - (time.time() - t0)))
            rec.status = "completed"
            if rec.estimate:
                self.admission.observe_latency((time.time() - t0) * 1000,
                                               rec.estimate["latency_ms"] + rec.estimate["wait_ms"])
        except (asyncio.TimeoutError, TimeoutError):
            waiting = sorted(u for u, k in outstanding.items() if k > 0)
            for u in waiting:
                self.prom.lost.labels(u).inc()
            rec.status = "failed"
            rec.error = (f"no answer within its deadline of {budget_ms / 1000:.3g} s" +
                         (f" (waiting on {', '.join(waiting)})" if waiting else ""))
        except Exception as e:  # noqa: BLE001 - a failed request is answered with its error
            rec.status, rec.error = "failed", one_line(e)
            pool = getattr(e, "hetagent_pool", None)
            if pool:
                self.prom.failures.labels(pool).inc()
        finally:
            self.inflight -= 1
            self.admission.release(rid)
        return self._finish(rec, t0, out, warmup)

    def _finish(self, rec: Record, t0: float, out: dict | None, warmup: bool) -> dict:
        now = time.time()
        rec.latency_ms = round((now - t0) * 1000, 3)
        if not warmup:
            self.prom.requests.labels(rec.status).inc()
            if rec.status == "completed":
                self.prom.latency.observe(rec.latency_ms / 1000)
                for op, ms in rec.stages.items():
                    self.prom.stage.labels(op).observe(ms / 1000)
            self.recent.append((now, t0, rec.status, rec.latency_ms, dict(rec.stages)))
        return rec.to_json(_public(out) if out else None)

    async def _flow(self, payload, ctx, rec, active, g, unit_of, chains, head_of, outstanding) -> dict:
        outs: dict[str, list] = {}
        events = {n: asyncio.Event() for n in g.order}

        async def run(name: str):
            try:
                for p in g.preds[name]:
                    await events[p].wait()
                if head_of.get(name, name) != name:      # a chain member: its head ran it
                    return
                members = chains.get(name, [name])
                ins = [x for p in g.preds[name] for x in outs[p]] or [payload]
                if name not in active or name not in unit_of:
                    if name in active and name in self.emulated_kv:    # the plan's transfer time
                        t = time.time()
                        await asyncio.sleep(g.operators[name].latency_ms / 1000)
                        rec.stages[name] = (time.time() - t) * 1000
                        rec.kv.append({"operator": name, "bytes": 0, "ms": rec.stages[name],
                                       "mode": "emulated"})
                    for m in members:
                        outs[m] = ins                     # skipped copy or arm, or the KV hand-off
                    return
                out = await self._run_chain(members, ctx, ins, rec, unit_of, outstanding)
                for m in members:
                    outs[m] = [out]
            finally:
                for m in chains.get(name, [name]):
                    events[m].set()

        try:
            async with asyncio.TaskGroup() as tg:
                for n in g.order:
                    tg.create_task(run(n))
        except BaseExceptionGroup as eg:                  # the first operator's error, as itself
            raise eg.exceptions[0] from None
        for n in g.order:          # a real KV hand-off's stage: export on prefill, import (or rebuild) on decode
            op = g.operators[n]
            if op.kind == "llm.kv_transfer" and n in active:
                dec = next((s for s in g.succs[n] if g.operators[s].kind == "llm.decode"), None)
                pre = next((s for s in g.preds[n] if g.operators[s].kind == "llm.prefill"), None)
                m = rec.ops.get(dec) or {}
                if "kv_restore_ms" in m:
                    ms = m["kv_restore_ms"]
                    if m.get("kv_mode") == "transfer":
                        ms += (rec.ops.get(pre) or {}).get("kv_export_ms", 0.0)
                    rec.stages[n] = ms
                    rec.kv.append({"operator": n, "bytes": m.get("kv_bytes", 0),
                                   "ms": ms, "mode": m.get("kv_mode")})

        return merge([x for n in g.sinks for x in outs[n]])

    async def _run_chain(self, members, ctx, ins, rec, unit_of, outstanding) -> dict:
        """A chain in one call when one unit serves it now, else member by member."""
        i = 0
        out = None
        while i < len(members):
            u = self.unit_of.get(members[i], unit_of.get(members[i]))
            j = i + 1
            while j < len(members) and self.unit_of.get(members[j], unit_of.get(members[j])) == u:
                j += 1
            out = await self._call(u, members[i:j], ctx, ins, rec, outstanding)
            ins = [out]
            i = j
        return out

    async def _call(self, unit, members, ctx, ins, rec, outstanding) -> dict:
        attempt = 0
        while True:
            u = self.unit_of.get(members[0], unit)     # the current route: a new plan may move it
            route = self.routes.get(u)
            req = {"ops": members, "ctx": ctx, "inputs": ins, "standin": self.standin.get(u, "full")}
            t = time.time()
            busy = self.unit_calls.get(u, 0)
            self.unit_calls[u] = busy + 1
            try:
                if route is None or any(m not in route.ops for m in members):
                    raise UnroutedOperator(f"no pool serves {', '.join(members)} now")
                metas, out = await self._answer(route, req, members[0])
            except asyncio.CancelledError:       # the request's deadline: this call goes unanswered
                outstanding[u] = outstanding.get(u, 0) + 1
                raise
            except Exception as e:  # noqa: BLE001
                if not retryable(e):
                    e.hetagent_pool = u
                    raise
                attempt += 1
                rec.retries += 1
                self.prom.retries.labels(u).inc()
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
                continue
            finally:
                self.unit_calls[u] -= 1
            wall = (time.time() - t) * 1000
            extra = max(0.0, wall - sum(m.get("service_ms") or 0 for m in metas)) / max(1, len(metas))
            if route is not None and busy < route.capacity:          # found a free slot: a hop's cost
                self.admission.observe_overhead(u, extra * len(metas))
            for op, m in zip(members, metas):
                rec.stages[op] = (m.get("service_ms") or 0) + extra
                rec.service[op] = m.get("service_ms")
                rec.ops[op] = {k: m[k] for k in ("emulated", "own_ms", "cpu_ms", "predicted_ms",
                                                  "standin_set_pace", "shared", "compiled",
                                                  "kv_restore_ms", "kv_export_ms", "kv_bytes", "kv_mode",
                                                  "pid")
                               if k in m}
                self.admission.done(ctx["request_id"], op)
                if not ctx.get("warmup"):        # first calls are cold: not what a pool serves at
                    self.admission.observe(op, u, m)
            return out

    async def _answer(self, route, req, op: str):
        """The unit's answer; a call whose operator a new plan moved to another pool while it waited
        (its old pool may have no replica left to answer) is withdrawn and sent again."""
        task = asyncio.ensure_future(self.call_unit(route, req))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=MOVED_CHECK_S)
                if done:
                    return task.result()
                now = self.routes.get(self.unit_of.get(op, ""))
                if now is None or now.app != route.app:
                    raise UnroutedOperator(f"{op} moved from {route.app} to "
                                           f"{now.app if now else 'no pool'} while its call waited")
        finally:
            if not task.done():
                task.cancel()

    # -- start-up: what the stand-ins cost, and whether the host carries them -------------------------
    def variants(self, most: int = WARM_UP_PATHS) -> list[dict]:
        """Control decisions covering the workflow's most frequent paths (distinct active sets)."""
        rng = random.Random(7)
        seen: dict[frozenset, list] = {}
        for _ in range(400):
            d = self.graph.draw(rng)
            key = frozenset(self.graph.active(d))
            seen.setdefault(key, [d, 0])[1] += 1
        return [d for d, _ in sorted(seen.values(), key=lambda v: -v[1])[:most]]

    async def warm_up(self, payload: dict, rate_rps: float, mode: str = "auto") -> dict:
        """A request down each of the workflow's most frequent paths (up to WARM_UP_PATHS) with every
        emulated pool in shared mode: each stand-in runs once per distinct input, which measures its
        CPU time (and fills the shared outputs for this input). Then, with mode `auto`, an emulated
        pool keeps shared outputs only while the stand-ins at the plan's rate would need more than
        STANDIN_HOST_SHARE of the host's cores, heaviest first (`full`: none, `shared`: all).
        Returns what was decided and why; warm-up requests are not counted."""
        emulated_units = {self.unit_of[n] for n in self.emulated if n in self.unit_of}
        self.standin = {u: "shared" for u in emulated_units}
        g = self.graph
        by_unit_kind: dict[tuple, list] = {}
        for dec in self.variants(WARM_UP_PATHS if emulated_units else 1):
            res = await self.handle(payload, warmup=True, decisions=dec)
            if res["status"] != "completed":
                raise HetagentError(f"the warm-up request failed: {res['error']}")
            for op, m in res["ops"].items():
                if m.get("emulated") and not m.get("shared"):
                    by_unit_kind.setdefault((self.unit_of[op], g.operators[op].kind), []) \
                        .append(m["cpu_ms"])
        demand: dict[str, float] = {}          # cores each emulated pool's full stand-ins need
        for n in self.emulated:
            u = self.unit_of.get(n)
            ms = by_unit_kind.get((u, g.operators[n].kind))
            if u is None or not ms:
                continue
            demand[u] = demand.get(u, 0.0) + rate_rps * g.operators[n].weight * float(np.mean(ms)) / 1000
        cores = max(self.admission.cores.values(), default=1)
        budget = STANDIN_HOST_SHARE * cores
        total = sum(demand.values())
        if mode == "auto":
            shared, left = [], total
            for u, d in sorted(demand.items(), key=lambda kv: -kv[1]):
                if left <= budget:
                    break
                shared.append(u)
                left -= d
        else:
            shared = sorted(emulated_units) if mode == "shared" else []
        self.standin = {u: "shared" for u in shared}
        need = (f"one stand-in per call at {rate_rps:g} req/s would keep {total:.2f} of this host's "
                f"{cores} cores busy (budget {budget:g})")
        if not emulated_units:
            why = ""
        elif shared:
            why = (f"{need}: {len(shared)} emulated pool(s) compute identical inputs once "
                   f"({', '.join(sorted(shared))}); every call still holds its predicted device time")
        else:
            why = f"{need}: each call runs its stand-in"
        if mode != "auto" and emulated_units:
            why += f" (--standin {mode})"
        self.emulation = {"mode": mode, "rate_rps": rate_rps, "host_cores": cores,
                          "standin_cores_needed": round(total, 3), "budget_cores": budget,
                          "shared": sorted(shared),
                          "standin_cpu_ms": {f"{u} {k}": round(float(np.mean(v)), 3)
                                             for (u, k), v in sorted(by_unit_kind.items())},
                          "why": why}
        return self.emulation

    # -- what the service and the slow path read ---------------------------------------------------------
    def stats(self, window_s: float = 10.0) -> dict:
        now = time.time()
        rs = [r for r in self.recent if r[1] >= now - window_s]
        done = [r for r in rs if r[2] == "completed"]
        lat = [r[3] for r in done]
        stages: dict[str, list] = {}
        for r in done:
            for op, ms in r[4].items():
                stages.setdefault(op, []).append(ms)
        att = None
        if lat:
            att = 1.0 if not self.sla_ms else round(sum(x <= self.sla_ms for x in lat) / len(lat), 4)
        return {"rate": len(rs) / window_s, "completed": len(done),
                "refused": sum(r[2] == "refused" for r in rs),
                "failed": sum(r[2] == "failed" for r in rs),
                "latency_ms": _pct(lat), "sla_attainment": att, "inflight": self.inflight,
                "stages": {op: float(np.median(v)) for op, v in stages.items()},
                "wait_ms": round(max(self.admission.backlog().values(), default=0.0), 3)}

    def health(self) -> dict:
        return {"status": "ok", "workflow": self.graph.workflow, "pools": len(self.routes),
                "inflight": self.inflight, "emulated": list(self.emulated),
                "standin_shared": sorted(u for u, m in self.standin.items() if m == "shared"),
                "input": "audio" if self.audio_in else "text",
                "output": "audio" if self.audio_out else "text",
                "admission_wait_ms": round(max(self.admission.backlog().values(), default=0.0), 3)}

    def metrics_text(self) -> str:
        snap = self.admission.snapshot()
        for u in self.routes:
            self.prom.backlog.labels(u).set(snap["backlog_ms"].get(u, 0.0) / 1000)
            ops = [snap["service_ms"].get(n, 0.0) for n, v in self.unit_of.items() if v == u]
            self.prom.service.labels(u).set((sum(ops) / len(ops) / 1000) if ops else 0.0)
        return self.prom.text()


# ---- Serve -----------------------------------------------------------------------------------------

def _serve_ingress_class():
    from ray import serve

    from hetagent.runtime.service import create_app

    @serve.deployment
    @serve.ingress()
    class Ingress:
        def __init__(self, cfg: dict, units: dict | None = None):
            self.cfg = cfg
            self.handles: dict = dict(units or {})   # built from a Serve config: handles by deployment
            self.core = IngressCore(cfg, self._call_unit)

        async def _call_unit(self, route, req):
            h = self.handles.get(route.app)
            if h is None:
                h = self.handles[route.app] = serve.get_deployment_handle(route.deployment, route.app)
            return await h.call.remote(req)

        async def submit(self, payload: dict, deadline_ms: float | None = None) -> dict:
            return await self.core.handle(payload, deadline_ms=deadline_ms)

        async def warm_up(self, payload: dict, rate_rps: float, mode: str = "auto") -> dict:
            return await self.core.warm_up(payload, rate_rps, mode)

        async def stats(self, window_s: float = 10.0) -> dict:
            return self.core.stats(window_s)

        async def health(self) -> dict:
            return self.core.health()

        async def rebind(self, graph, routes, unit_of, chains, emulated) -> None:
            self.core.rebind(graph, routes, unit_of, chains, emulated)

        def __serve_build_asgi_app__(self):
            return create_app(self.core, api_key_digest=self.cfg.get("api_key_digest"),
                              max_body_bytes=self.cfg.get("max_body_bytes") or (8 << 20))

    return Ingress


_CLASSES: dict = {}
INGRESS_SLOTS = 100_000     # requests at once: never Serve's queue (503), the ingress admits (429)


def bind_ingress(cfg: dict, node_id: str | None = None, units: dict | None = None):
    """The ingress application: one replica, on the node `node_id` (the driver's: where Serve's HTTP
    proxy and the loopback tool are, and a node the runtime does not lose with a worker). `units`
    ({deployment name: bound pool}) makes the pools part of this application (hetagent.runtime.app);
    without it the ingress finds each pool's own application by name."""
    from hetagent.runtime.pools import REPLICA_ENV, SERVE_LOGGING
    if "ingress" not in _CLASSES:
        _CLASSES["ingress"] = _serve_ingress_class()
    opts = {"num_cpus": 0, "runtime_env": {"env_vars": dict(REPLICA_ENV)}}
    if node_id:
        opts["label_selector"] = {"ray.io/node-id": node_id}
    return _CLASSES["ingress"].options(
        name="ingress", num_replicas=1, max_ongoing_requests=INGRESS_SLOTS, max_queued_requests=-1,
        ray_actor_options=opts,
        health_check_period_s=5, graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=5,
        max_constructor_retry_count=2, logging_config=SERVE_LOGGING).bind(cfg, *([units] if units else []))
