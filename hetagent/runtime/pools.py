"""Serving pools on Ray Serve: one deployment per serving pool of the plan (or per fused chain).

A `PoolSpec` is what hetagent.runtime.deploy builds from plan.json's `pools`: the operators the pool
serves (one executor each, hetagent.runtime.executors), its device, replicas, the calls a replica takes
at once (`slots`, Serve's `max_ongoing_requests`: the pool's `max_batch`, 64 for I/O-bound pools), and
whether it is emulated. `PoolReplica` is one replica (importable without Ray, so its behaviour is
tested directly); `bind_pool` wraps it in a Serve deployment.

A call is a chain of operators served by this unit (`{"ops", "ctx", "inputs", "standin"}`), run in
order, each on the previous one's output; the answer is `(metas, payload)`, one meta per operator.

Real operators run on one worker thread per replica (a model context is not thread-safe; I/O-bound
pools use 16), cheap ones (no model, no I/O) on the replica's event loop.

Emulated operators (a device that is not here) hold their slot for the plan's service time (its
queueing excluded: the queue forms here, in front of the slots, as it would on the device): the
stand-in computes the output on this host, and the answer is released at the later of the stand-in's
finish and `service_ms` after the call started. A compute-bound emulated operator with more calls in
the replica than the pool's planned batch is stretched in proportion (`service_ms x in_flight / batch`:
time linear in the batch); memory- and network-bound ones are not. The meta says which set the pace
(`standin_set_pace`).

When the host cannot carry a stand-in per call (the ingress decides at start-up from the stand-ins'
measured CPU time, hetagent.runtime.ingress), a pool's calls come with `standin: "shared"`: identical
inputs are computed once (single flight, the last 64 kept) and every call still holds its predicted
device time. The meta marks such calls `shared: true`.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hetagent.runtime.executors import ModelCache, OpSpec, is_cheap, make_executor, waits_on_io

RESOURCE_SLIVER = 0.001      # of a device resource per replica: lands it on a node with the device
IO_SLOTS = 64                # calls at once per replica of an I/O-bound pool
SHARED_KEEP = 64             # stand-in outputs kept per replica in shared mode
PACE_TOLERANCE_S = 0.002     # a stand-in later than its predicted time by more than this (and 10% of
                             # it) set the pace


@dataclass
class PoolSpec:
    """One Serve deployment: a serving pool of the plan, or a fused chain of cheap operators."""
    name: str                    # the pool id (plan.json `pools[].id`) or "fused:<first>..<last>"
    app: str                     # the Serve application it is deployed as
    device: str
    ops: dict[str, OpSpec]       # operator -> its executor's spec
    replicas: int = 1
    slots: int = 1               # max_ongoing_requests per replica
    batch: int = 1               # the plan's batch: calls in flight per replica that its load fills
    emulated: bool = False
    threads: int = 1
    autoscaling: dict | None = None   # {min_replicas, max_replicas} when the plan gives them
    engine: str = ""             # the plan pool's engine (colocated, prefill, decode, single) or "fused"
    fused: bool = False

    @property
    def waits(self) -> bool:
        return any(waits_on_io(s) for s in self.ops.values())

    def signature(self) -> tuple:
        """What forces new replicas when it changes (the replica count does not)."""
        return (self.device, self.slots, self.batch, self.emulated, self.engine,
                tuple(sorted((n, s.kind, s.device, round(s.service_ms, 3), s.batch,
                              s.endpoint is not None) for n, s in self.ops.items())))


def _cpu_seconds(models: ModelCache) -> float:
    """CPU time of this process and of the engine process it started."""
    t = time.process_time()
    eng = models.loaded("engine")
    if eng is not None:
        t += eng.cpu_seconds() or 0.0
    return t


def _digest(op: str, inputs: list) -> str:
    h = hashlib.blake2b(op.encode(), digest_size=16)
    h.update(pickle.dumps(inputs, protocol=5))
    return h.hexdigest()


class SharedOutputs:
    """Stand-in outputs by input, computed once (single flight), the last `keep` kept."""

    def __init__(self, keep: int = SHARED_KEEP):
        self.keep = keep
        self.done: OrderedDict = OrderedDict()
        self.running: dict[str, asyncio.Future] = {}

    async def get(self, key: str, compute):
        """(result, hit): the stored result, the one being computed, or compute() now."""
        if key in self.done:
            self.done.move_to_end(key)
            return self.done[key], True
        if key in self.running:
            return await asyncio.shield(self.running[key]), True
        fut = asyncio.get_running_loop().create_future()
        self.running[key] = fut
        try:
            res = await compute()
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()          # retrieved here: a waiter may not exist
            raise
        finally:
            self.running.pop(key, None)
        fut.set_result(res)
        self.done[key] = res
        while len(self.done) > self.keep:
            self.done.popitem(last=False)
        return res, False


class PoolReplica:
    """One replica: the executors of the pool's operators, their models, and the emulation."""

    def __init__(self, spec: PoolSpec):
        self.spec = spec
        self.user_config: dict = {}
        self.tool_server = _builtin_tool(spec)
        self.models = ModelCache(spec.threads)
        self.ex = {n: make_executor(s, self.models) for n, s in spec.ops.items()}
        for e in self.ex.values():
            e.warm()
        self.worker = ThreadPoolExecutor(max_workers=16 if spec.waits else 1,
                                         thread_name_prefix="hetagent-op")
        self.inflight = 0
        self.calls = 0
        self.shared = SharedOutputs()
        self.cores = len(os.sched_getaffinity(0))
        self.node = _node_id()

    def info(self) -> dict:
        eng = self.models.loaded("engine")
        return {"pid": os.getpid(), "pool": self.spec.name, "device": self.spec.device,
                "emulated": self.spec.emulated, "node": self.node, "cores": self.cores,
                "engine_pid": eng.proc.pid if eng is not None and eng.proc else None,
                "calls": self.calls, "user_config": self.user_config}

    def check_health(self) -> None:
        eng = self.models.loaded("engine")
        if eng is not None and not eng.alive():
            from hetagent.backends.llm_server import EngineUnavailable
            raise EngineUnavailable(f"pool {self.spec.name}: the llama.cpp engine exited")

    def close(self) -> None:
        if self.tool_server is not None:
            self.tool_server.stop()
            self.tool_server = None
        self.models.close()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def call(self, req: dict) -> tuple[list[dict], dict]:
        ops, ctx, inputs = req["ops"], req["ctx"], list(req["inputs"])
        self.calls += 1
        self.inflight += 1
        try:
            if req.get("standin") == "shared" and all(self.ex[o].spec.emulated for o in ops):
                return await self._shared_chain(ops, ctx, inputs)
            metas = []
            out: dict = {}
            for op in ops:
                t0 = time.perf_counter()
                out, info, own, cpu = await self._compute(op, ctx, inputs)
                metas.append(await self._release(op, t0, own, cpu, info, False))
                inputs = [out]
            return metas, out
        finally:
            self.inflight -= 1

    def _timed(self, ex, ctx, inputs):
        """ex.run on the worker thread, with its own wall and CPU time."""
        c0, t0 = _cpu_seconds(self.models), time.perf_counter()
        out, info = ex.run(ctx, inputs)
        child = info.get("child_cpu_ms", 0.0) / 1000     # a sandboxed code node's own process
        return out, info, time.perf_counter() - t0, _cpu_seconds(self.models) - c0 + child

    def _timed_chain(self, ops, ctx, inputs):
        res = []
        for op in ops:
            out, info, own, cpu = self._timed(self.ex[op], ctx, inputs)
            res.append((info, own, cpu))
            inputs = [out]
        return out, res

    async def _compute(self, op, ctx, inputs):
        ex = self.ex[op]
        if is_cheap(ex.spec):          # no model, no I/O: on the event loop
            return self._timed(ex, ctx, inputs)
        return await asyncio.get_running_loop().run_in_executor(self.worker, self._timed, ex, ctx, inputs)

    async def _shared_chain(self, ops, ctx, inputs):
        """Emulated calls whose stand-in outputs are shared: a chain's outputs are computed once per
        distinct input; each operator still holds its own predicted time, one after the other."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        (out, res), hit = await self.shared.get(
            _digest("+".join(ops), inputs),
            lambda: loop.run_in_executor(self.worker, self._timed_chain, ops, ctx, inputs))
        metas = []
        for op, (info, own, cpu) in zip(ops, res):
            if hit:                        # nothing computed: the lookup was this call's own time
                own, cpu = time.perf_counter() - t0, 0.0
            metas.append(await self._release(op, t0, own, cpu, info, hit))
            t0 = time.perf_counter()
        return metas, out

    async def _release(self, op, t0, own, cpu, info, hit) -> dict:
        """The meta of one operator's call; an emulated one is first held until its predicted
        device time has passed since t0."""
        spec = self.ex[op].spec
        ready = time.perf_counter() - t0          # the stand-in's (or the real operator's) finish
        meta = {"op": op, "emulated": spec.emulated, "own_ms": own * 1000, "cpu_ms": cpu * 1000,
                "pid": os.getpid(), "node": self.node, "cores": self.cores, **info}
        if spec.emulated:
            # the stand-in's own KV rebuild is not the emulated device's hand-off
            if "kv_restore_ms" in meta:
                meta["standin_kv_restore_ms"] = meta.pop("kv_restore_ms")
            stretch = max(1.0, self.inflight / max(1, self.spec.batch)) if spec.bound == "compute" else 1.0
            hold = spec.service_ms / 1000 * stretch
            if ready < hold:
                await asyncio.sleep(hold - ready)
            meta.update(predicted_ms=spec.service_ms * stretch, shared=hit,
                        standin_set_pace=ready - hold > max(PACE_TOLERANCE_S, 0.1 * hold))
        meta["service_ms"] = (time.perf_counter() - t0) * 1000
        return meta


def _builtin_tool(spec: PoolSpec):
    """The loopback search tool in this replica, for tool.lookup operators whose spec asks for it
    (hetagent.runtime.app: a pool started from a Serve config has no driver to hold the tool)."""
    from hetagent.runtime.app import BUILTIN_TOOL
    mine = [s for s in spec.ops.values() if s.kind == "tool.lookup" and s.tool_url == BUILTIN_TOOL]
    if not mine:
        return None
    from hetagent.backends.http_tool import SearchToolServer
    server = SearchToolServer().start()
    for s in mine:
        s.tool_url = server.url
    return server


def _node_id() -> str:
    try:
        import ray
        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (tests, the benchmark's direct path)
        pass
    return "local"


# ---- Serve ------------------------------------------------------------------------------------------

# Serve's documented latency flags for the replicas (docs: Serve performance tuning): user code and the
# handles' router on the replica's own event loop. Heavy work is on worker threads, never on the loop.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
               "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}


def _serve_pool_class():
    from ray import serve

    @serve.deployment
    class Pool:
        def __init__(self, spec: PoolSpec):
            self.r = PoolReplica(spec)

        async def call(self, req: dict):
            return await self.r.call(req)

        def info(self) -> dict:
            return self.r.info()

        def reconfigure(self, config: dict) -> None:
            """A Serve config's `user_config` (hetagent deploy: the engine settings of an LLM pool)."""
            self.r.user_config = dict(config or {})

        def check_health(self) -> None:
            self.r.check_health()

        def __del__(self):
            self.r.close()

    return Pool


_CLASSES: dict = {}


def bind_pool(spec: PoolSpec, *, health_check_period_s: float = 2.0):
    """The Serve application of one pool: replicas and device resources from the plan, slots as
    max_ongoing_requests, no caller-side queue limit (the ingress admits), autoscaling bounds when
    the plan has them."""
    if "pool" not in _CLASSES:
        _CLASSES["pool"] = _serve_pool_class()
    opts = dict(name=spec.app, max_ongoing_requests=max(1, spec.slots), max_queued_requests=-1,
                ray_actor_options={"num_cpus": 0, "resources": {spec.device: RESOURCE_SLIVER},
                                   "runtime_env": {"env_vars": dict(REPLICA_ENV)}},
                health_check_period_s=health_check_period_s, health_check_timeout_s=30,
                graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=10,
                max_constructor_retry_count=2, logging_config=SERVE_LOGGING)
    if spec.autoscaling:
        opts["autoscaling_config"] = {"min_replicas": int(spec.autoscaling["min_replicas"]),
                                      "max_replicas": int(spec.autoscaling["max_replicas"]),
                                      "target_ongoing_requests": max(1, spec.batch)}
    else:
        opts["num_replicas"] = max(1, spec.replicas)
    return _CLASSES["pool"].options(**opts).bind(spec)


@dataclass
class UnitRoute:
    """How the ingress reaches a unit: Serve application and deployment name, and how many calls
    the unit serves at once (`slots` per replica x `replicas`)."""
    app: str
    deployment: str
    slots: int
    ops: list[str] = field(default_factory=list)
    replicas: int = 1

    @property
    def capacity(self) -> int:
        return max(1, self.slots) * max(1, self.replicas)
