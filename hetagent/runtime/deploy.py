"""Plan -> Ray: actor pools per placed operator on nodes that advertise the operator's device.

With no address an embedded local Ray starts whose custom resources mirror the plan's fleet
({device: count}); with an address, ray.init(address) joins a cluster whose nodes advertise device
ids as resources. Every replica asks for a sliver of its device's resource (so it lands on a node
that has that device) and no CPU (num_cpus=0: two cores serve every pool; model threads are set per
replica). Operators whose device is not real here are emulated (hetagent.runtime.actors).

A device is real when it is in `real_devices` (default: `local-cpu`, plus the comma-separated
HETAGENT_REAL_DEVICES); every other device is emulated on the CPU of the node that advertises it.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import time
from dataclasses import dataclass, field

from hetagent.errors import HetagentError
from hetagent.runtime.actors import OpSpec
from hetagent.runtime.graph import RtGraph, from_plan

log = logging.getLogger("hetagent.runtime")

RESOURCE_SLIVER = 0.001
DEFAULT_REAL = ("local-cpu",)


def real_devices_default() -> set[str]:
    extra = os.environ.get("HETAGENT_REAL_DEVICES", "")
    return set(DEFAULT_REAL) | {d.strip() for d in extra.split(",") if d.strip()}


@dataclass
class Pool:
    """The replicas of one placed operator (or of a node's loop copies sharing one pool)."""
    name: str
    spec: OpSpec
    replicas: int
    actors: list = field(default_factory=list)
    inflight: list = field(default_factory=list)
    held: list = field(default_factory=list)       # per replica: request ids whose state it holds
    failures: int = 0
    spec_ref: object = None                        # the spec in the object store, pinned here

    def pick(self, rid: str, avoid: set | None = None) -> int:
        """Least-loaded replica, preferring one that already holds the request's state when it is
        no busier than the least-loaded one plus one call."""
        idx = [i for i in range(len(self.actors)) if not avoid or i not in avoid] \
            or list(range(len(self.actors)))
        least = min(self.inflight[i] for i in idx)
        local = [i for i in idx if rid in self.held[i] and self.inflight[i] <= least + 1]
        cand = local or [i for i in idx if self.inflight[i] == least]
        return min(cand, key=lambda i: self.inflight[i])

    def remember(self, i: int, rid: str) -> None:
        h = self.held[i]
        h[rid] = None
        while len(h) > 256:
            h.pop(next(iter(h)))


def ray_init(address: str | None, fleet: dict[str, int], object_store_mb: int = 200) -> bool:
    """Starts (or joins) Ray quietly. Returns True when this call started an embedded instance."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise HetagentError("the runtime needs Ray; install it with "
                            "`pip install 'ray[default]==2.60.*'` or `pip install 'hetagent[runtime]'`") \
            from None
    if ray.is_initialized():
        return False
    kw = dict(log_to_driver=False, logging_level=logging.WARNING, include_dashboard=False,
              configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kw)
            return False
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, 1),   # a new instance, never a stray one
                 resources={d: float(n) for d, n in fleet.items() if n > 0},
                 object_store_memory=object_store_mb << 20, **kw)
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user gets one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"the Ray cluster at {address}" if address else "an embedded Ray instance"
        raise HetagentError(f"cannot start {where}: {msg}") from None
    return True


def cluster_devices() -> dict[str, float]:
    """Device resources alive in the cluster now: {device: total}."""
    import ray
    out: dict[str, float] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        for k, v in (n.get("Resources") or {}).items():
            if k in ("CPU", "GPU", "memory", "object_store_memory") or k.startswith("node:") \
                    or k.startswith("accelerator_type"):
                continue
            out[k] = out.get(k, 0.0) + float(v)
    return out


class Deployment:
    """The plan deployed: graph, pools, which operator uses which pool, what is emulated."""

    def __init__(self, plan, *, address: str | None = None, real_devices=None,
                 endpoints: dict | None = None, share_copies: bool = True, threads: int | None = None,
                 tool_timeout_s: float = 10.0, tool_delay_ms: float = 0.0, code_limits=None,
                 max_restarts: int = 4, ready_timeout_s: float = 300.0, workflow_index: int = 0,
                 fuse: bool = True, assets=None):
        self.plan_source = plan
        self.graph: RtGraph = from_plan(plan, workflow_index)
        self.address = address
        self.real = set(real_devices) if real_devices is not None else real_devices_default()
        self.endpoints = dict(endpoints or {})
        self.share_copies = share_copies
        # Model threads per replica: by default the cores this process may use, the thread count the
        # CPU calibration measured each operator with (`hetagent calibrate`), so the plan's stage times
        # hold when requests do not overlap.
        self.threads = threads or len(os.sched_getaffinity(0))
        self.tool_timeout_s = tool_timeout_s
        self.tool_delay_ms = tool_delay_ms
        self.code_limits = dict(code_limits or {})
        self.max_restarts = max_restarts
        self.ready_timeout_s = ready_timeout_s
        self.pools: dict[str, Pool] = {}
        self.op_pool: dict[str, str] = {}
        self.started_ray = False
        self.tool_actor = None
        self.tool_url = None
        self._corpus = None
        self.events: list[dict] = []          # re-plans, resizes, node losses
        self.fuse = fuse
        self.groups: dict[str, list[str]] = {}   # fused chain: head operator -> members (head first)
        self.head_of: dict[str, str] = {}        # a fused member (not the head) -> its head
        self.assets_dir = assets
        self.compiled: dict[str, str] = {}       # operator -> how it runs compiled ("llvm-cpu <file>")
        self._asset_entries = self._read_assets(assets) if assets else {}

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> "Deployment":
        import ray
        if any(op.kind in ("compute.code", "compute.fused") for op in self.graph.operators.values()):
            from hetagent.backends.sandbox import require
            require()   # code nodes run only in the sandbox: refuse now, in one line, if it is missing
        self.started_ray = ray_init(self.address, self.graph.fleet)
        have = cluster_devices()
        missing = sorted(d for d in self.devices_used() if have.get(d, 0) <= 0)
        if missing:
            raise HetagentError(
                f"no Ray node advertises device(s) {', '.join(missing)} that the plan places "
                f"operators on; start nodes with `ray start --resources '{{\"{missing[0]}\": 1}}'`")
        if any(op.kind == "tool.lookup" for op in self.graph.operators.values()):
            from hetagent.runtime.actors import tool_server_actor_class
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            here = ray.get_runtime_context().get_node_id()   # loopback: the driver's own node
            self.tool_actor = tool_server_actor_class().options(
                num_cpus=0, max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(
                self.tool_delay_ms)
            self.tool_url = ray.get(self.tool_actor.url.remote(), timeout=60)
        self.build_pools(self.graph)
        return self

    def devices_used(self) -> set[str]:
        return {op.device for op in self.graph.operators.values() if op.kind != "llm.kv_transfer"}

    def emulated_ops(self) -> list[str]:
        return sorted(n for n, op in self.graph.operators.items()
                      if op.kind != "llm.kv_transfer" and self.is_emulated(op))

    def is_emulated(self, op) -> bool:
        return op.device not in self.real and self._endpoint_for(op) is None

    def _endpoint_for(self, op) -> dict | None:
        for pat, ep in self.endpoints.items():
            if op.kind not in ("llm.prefill", "llm.decode", "llm.remote"):
                continue
            if fnmatch.fnmatch(op.name, pat) or fnmatch.fnmatch(op.node, pat) or pat == op.device:
                return ep if isinstance(ep, dict) else {"base_url": str(ep)}
        return None

    def _corpus_vectors(self):
        if self._corpus is None:
            from hetagent.runtime.actors import corpus_vectors
            self._corpus = corpus_vectors()
        return self._corpus

    # -- compiled assets (hetagent build) -----------------------------------------------------------
    @staticmethod
    def _read_assets(assets) -> dict[str, dict]:
        """operator -> its `built` llvm-cpu manifest entry, from DIR/manifest.json."""
        from pathlib import Path

        from hetagent.backends.codegen import read_manifest
        d = Path(assets)
        if not (d / "manifest.json").is_file():
            raise HetagentError(f"--assets {assets}: no manifest.json there (make one with "
                                f"`hetagent build plan.json -o {assets}`)")
        out = {}
        for e in read_manifest(d).get("assets", []):
            if e.get("target") == "llvm-cpu" and e.get("status") == "built" and e.get("path"):
                out[e["operator"]] = {**e, "_base_dir": str(d.resolve())}
        return out

    def asset_for(self, op) -> dict | None:
        """The compiled asset this operator runs (embed.encode through CompiledEmbedder), if any.
        Only real operators use one: an emulated operator stands in for another device."""
        e = self._asset_entries.get(op.name) or self._asset_entries.get(op.node)
        if e is None or self.is_emulated(op) or op.kind != "embed.encode" \
                or e.get("kind") != "embed.encode":
            return None
        return e

    # -- fusion ----------------------------------------------------------------------------------
    def fusion_groups(self, graph: RtGraph) -> list[list[str]]:
        """Chains of cheap operators (hetagent.runtime.actors.CHEAP_KINDS: no model, no I/O) on one
        real device, each the only successor of the one before, with the same loop and branch guards
        (so they run or are skipped together): each chain becomes one actor call."""
        from hetagent.runtime.actors import CHEAP_KINDS
        if not self.fuse:
            return []

        def ok(n):
            op = graph.operators[n]
            return op.kind in CHEAP_KINDS and not self.is_emulated(op) \
                and self._endpoint_for(op) is None
        groups: list[list[str]] = []
        where: dict[str, int] = {}
        for n in graph.order:
            if not ok(n):
                continue
            preds = graph.preds[n]
            if len(preds) == 1 and preds[0] in where and graph.succs[preds[0]] == [n]:
                p, op = graph.operators[preds[0]], graph.operators[n]
                if (p.device, p.loops, p.arms) == (op.device, op.loops, op.arms):
                    groups[where[preds[0]]].append(n)
                    where[n] = where[preds[0]]
                    continue
            where[n] = len(groups)
            groups.append([n])
        return [g for g in groups if len(g) > 1]

    def pool_key(self, op) -> str:
        if not self.share_copies:
            return op.name
        return f"{op.node}@{op.device}/tp{op.tp}/b{op.batch}"

    def spec_for(self, op, key: str) -> OpSpec:
        spec = OpSpec(name=key, kind=op.kind, attrs=dict(op.attrs), device=op.device,
                      latency_ms=op.latency_ms, batch=max(1, op.batch),
                      emulated=self.is_emulated(op), threads=self.threads,
                      tool_url=self.tool_url, tool_timeout_s=self.tool_timeout_s,
                      endpoint=self._endpoint_for(op), code_limits=self.code_limits,
                      code=op.attrs.get("source") if op.kind == "compute.code" else None)
        if op.kind == "memory.vector_search":
            spec.corpus_vectors = self._corpus_vectors()
        asset = self.asset_for(op)
        if asset is not None:
            spec.embed_asset = asset
        return spec

    def fused_spec(self, graph: RtGraph, members: list[str], key: str) -> OpSpec:
        ops = [graph.operators[m] for m in members]
        return OpSpec(name=key, kind="fused", attrs={"members": members}, device=ops[0].device,
                      latency_ms=sum(o.latency_ms for o in ops), batch=1, threads=self.threads,
                      members=[self.spec_for(o, self.pool_key(o)) for o in ops])

    def build_pools(self, graph: RtGraph, only: set[str] | None = None) -> dict[str, Pool]:
        """Creates the pools the graph needs (all, or those of the operators in `only`)."""
        from hetagent.runtime.actors import ray_actor_class
        import ray
        Actor = ray_actor_class()
        groups = self.fusion_groups(graph)
        group_of = {m: g for g in groups for m in g}
        if only is not None:      # a fused chain is built whole
            only = set(only) | {m for n in only for m in group_of.get(n, [])}
        wanted: dict[str, tuple] = {}
        mapping: dict[str, str] = {}
        for name in graph.order:
            op = graph.operators[name]
            if op.kind == "llm.kv_transfer" or (only is not None and name not in only):
                continue
            grp = group_of.get(name)
            if grp is not None:
                key = "fused:" + "+".join(self.pool_key(graph.operators[m]) for m in grp)
                mk = (lambda k, g=grp: self.fused_spec(graph, g, k))
                r = max(max(1, graph.operators[m].replicas) for m in grp)
            else:
                key = self.pool_key(op)
                mk = (lambda k, o=op: self.spec_for(o, k))
                r = max(1, op.replicas)
            if key in wanted:
                wanted[key] = (wanted[key][0], max(wanted[key][1], r))
            else:
                wanted[key] = (mk, r)
            mapping[name] = key
            if op.kind == "embed.encode" and self.asset_for(op) is not None:
                self.compiled[name] = "llvm-cpu " + str(self.asset_for(op).get("path"))
        new = {}
        for key, (mk, r) in wanted.items():
            if key in self.pools:
                continue
            pool = Pool(key, mk(key), r)
            for i in range(r):
                self._add_actor(pool, Actor, i)
            new[key] = pool
        # wait until every new replica has loaded its model
        refs = [a.info.remote() for p in new.values() for a in p.actors]
        try:
            ray.get(refs, timeout=self.ready_timeout_s)
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise HetagentError(f"operator replicas did not start: {msg}") from None
        self.pools.update(new)          # pools first, then the mapping: the router never sees a
        self.op_pool.update(mapping)    # name whose pool is not there yet
        self.groups = {g[0]: list(g) for g in groups}
        self.head_of = {m: g[0] for g in groups for m in g[1:]}
        return new

    def _add_actor(self, pool: Pool, Actor=None, index: int | None = None) -> None:
        if Actor is None:
            from hetagent.runtime.actors import ray_actor_class
            Actor = ray_actor_class()
        import ray
        spec = pool.spec
        if pool.spec_ref is None:
            pool.spec_ref = ray.put(spec)
        waits = spec.kind in ("tool.lookup", "llm.remote") or spec.endpoint is not None
        a = Actor.options(num_cpus=0, resources={spec.device: RESOURCE_SLIVER},
                          max_restarts=self.max_restarts, max_task_retries=0,
                          max_concurrency=1000 if waits else 256).remote(
            pool.spec_ref, len(pool.actors) if index is None else index)
        pool.actors.append(a)
        pool.inflight.append(0)
        pool.held.append({})

    def resize(self, key: str, replicas: int) -> None:
        """Grows or shrinks a pool (the slow path's lever)."""
        import ray
        pool = self.pools[key]
        replicas = max(1, int(replicas))
        while len(pool.actors) < replicas:
            self._add_actor(pool)
            ray.get(pool.actors[-1].info.remote(), timeout=self.ready_timeout_s)
        while len(pool.actors) > replicas:
            a = pool.actors.pop()
            pool.inflight.pop()
            pool.held.pop()
            ray.kill(a, no_restart=True)
        pool.replicas = replicas
        self.events.append({"t": time.time(), "event": "resize", "pool": key, "replicas": replicas})

    def rebind(self, graph: RtGraph) -> list[str]:
        """Adopts a new plan's graph: operators whose placement changed get new pools; pools no
        operator uses any more are killed. Returns the operators that moved."""
        import ray
        moved = [n for n, op in graph.operators.items()
                 if n in self.graph.operators and op.kind != "llm.kv_transfer"
                 and (op.device, op.tp, op.batch) != (self.graph.operators[n].device,
                                                      self.graph.operators[n].tp,
                                                      self.graph.operators[n].batch)]
        only = set(moved)
        for members in self.groups.values():      # a fused chain with a moved member is rebuilt
            if only & set(members):
                only |= set(members)
        self.build_pools(graph, only=only)
        self.graph = graph
        want: dict[str, int] = {}
        for n, op in graph.operators.items():
            key = self.op_pool.get(n)
            if key in self.pools and op.kind != "llm.kv_transfer":
                want[key] = max(want.get(key, 1), max(1, op.replicas))
        for key, r in want.items():
            if r != len(self.pools[key].actors):
                self.resize(key, r)
        used = set(self.op_pool.values())
        for key in [k for k in self.pools if k not in used]:
            for a in self.pools[key].actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
            del self.pools[key]
        self.events.append({"t": time.time(), "event": "rebind", "moved": moved})
        return moved

    def shutdown(self) -> None:
        try:
            import ray
        except ImportError:
            return
        if not ray.is_initialized():
            return
        for p in self.pools.values():
            for a in p.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        if self.tool_actor is not None:
            try:
                ray.kill(self.tool_actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.pools.clear()
        if self.started_ray:
            ray.shutdown()
