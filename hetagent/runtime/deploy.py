"""Plan -> Ray Serve: a deployment per serving pool, an ingress per workflow, make-before-break changes.

With no address an embedded local Ray starts (always a new instance, address="local", never another
process's cluster) whose custom resources mirror the plan's fleet ({device: count}); with an address,
Ray joins that cluster, whose nodes advertise device ids as resources. Serve runs on it: without HTTP
for `hetagent run` (requests go through the ingress's deployment handle), behind Serve's HTTP proxy for
`hetagent serve`.

Units: every serving pool of plan.json (`pools`) that the workflow uses is one Serve application with one
deployment (hetagent.runtime.pools). A chain of cheap operators (no model, no I/O) on one real device,
each the only successor of the one before and under the same loop and branch guards, is *fused* into one
unit of its own ("fused:<first>..<last>") whose replica runs them in one call. The ingress
(hetagent.runtime.ingress) is one more application, `<workflow>`, and reaches the units through
deployment handles.

A device is *real* when it is in `real_devices` (default `local-cpu`, plus the comma-separated
HETAGENT_REAL_DEVICES); operators on any other device are emulated (hetagent.runtime.pools). LLM
operators can be bound to existing OpenAI-compatible servers with `endpoints` ({pattern: url}; the
pattern matches an operator, its workflow node or a device).

A new plan is applied make-before-break (`apply`): units whose configuration changed are deployed under
new application names and must be running before the ingress switches its routes to them; only then are
the old applications deleted (Serve drains their calls in flight). A change of replica count alone is
Serve's lightweight in-place update (no replica restarts).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from hetagent.errors import HetagentError
from hetagent.runtime.executors import CHEAP_KINDS, OpSpec
from hetagent.runtime.graph import RtGraph, from_plan
from hetagent.runtime.pools import IO_SLOTS, PoolSpec, UnitRoute, bind_pool

log = logging.getLogger("hetagent.runtime")

DEFAULT_REAL = ("local-cpu",)


def real_devices_default() -> set[str]:
    extra = os.environ.get("HETAGENT_REAL_DEVICES", "")
    return set(DEFAULT_REAL) | {d.strip() for d in extra.split(",") if d.strip()}


def ray_init(address: str | None, fleet: dict[str, int], object_store_mb: int = 200) -> bool:
    """Starts (or joins) Ray quietly. Returns True when this call started an embedded instance."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise HetagentError("the runtime needs Ray Serve; install it with "
                            "`pip install 'ray[serve]==2.60.*'` or `pip install 'hetagent[runtime]'`") \
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


def serve_start(http: dict | None) -> None:
    """Serve on the connected Ray: HTTP proxy on http["host"]:http["port"], or none. Serve already
    running there keeps its own HTTP options."""
    try:
        from ray import serve
    except ImportError:
        raise HetagentError("the runtime needs Ray Serve; install it with "
                            "`pip install 'ray[serve]==2.60.*'` or `pip install 'hetagent[runtime]'`") \
            from None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)     # after the import, which sets INFO
    from hetagent.runtime.pools import SERVE_LOGGING
    if http:
        serve.start(proxy_location="HeadOnly", http_options={"host": http["host"], "port": http["port"]},
                    logging_config=SERVE_LOGGING)
    else:
        serve.start(proxy_location="Disabled", logging_config=SERVE_LOGGING)


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


def unit_name(op) -> str:
    """The unit that serves an operator before fusing: its serving pool (plan.json `pools[].id`)."""
    return op.pool or f"{op.node}@{op.device}"


def _app_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:@~-]", "~", text)


@dataclass
class Layout:
    """What a graph deploys as: units (Serve applications), which unit serves each operator, and the
    chains of operators that go to one unit in one call (head -> members, head first)."""
    units: dict[str, PoolSpec]
    unit_of: dict[str, str]
    chains: dict[str, list[str]]
    fused: list[list[str]] = field(default_factory=list)

    def routes(self) -> dict[str, UnitRoute]:
        return {u: UnitRoute(s.app, s.app, s.slots, list(s.ops), s.replicas)
                for u, s in self.units.items()}


class Deployment:
    """The plan deployed on Serve: graph, units, the ingress handle, what is emulated."""

    def __init__(self, plan, *, address: str | None = None, real_devices=None,
                 endpoints: dict | None = None, threads: int | None = None,
                 tool_timeout_s: float = 10.0, tool_delay_ms: float = 0.0, code_limits=None,
                 workflow_index: int = 0, fuse: bool = True, assets=None, http: dict | None = None,
                 app_prefix: str | None = None):
        from hetagent.placement.plan import load_plan
        self.plan = load_plan(plan)
        self.graph: RtGraph = from_plan(self.plan, workflow_index)
        self.workflow_index = workflow_index
        self.address = address
        self.real = set(real_devices) if real_devices is not None else real_devices_default()
        self.endpoints = dict(endpoints or {})
        # Model threads per replica: the cores this process may use, the thread count the CPU
        # calibration measured each operator with (`hetagent calibrate`).
        self.threads = threads or len(os.sched_getaffinity(0))
        self.tool_timeout_s = tool_timeout_s
        self.tool_delay_ms = tool_delay_ms
        self.code_limits = dict(code_limits or {})
        self.fuse = fuse
        self.http = http
        self.prefix = app_prefix if app_prefix is not None else f"{self.graph.workflow}."
        self.started_ray = False
        self.tool_server = None
        self.tool_url: str | None = None
        self._corpus = None
        self.events: list[dict] = []
        self.layout: Layout | None = None
        self.ingress = None                  # the ingress deployment's handle
        self.ingress_app = _app_name(app_prefix.rstrip(".") if app_prefix else self.graph.workflow)
        self.version = 1
        self.compiled: dict[str, str] = {}
        self._asset_entries = self._read_assets(assets) if assets else {}

    # -- what is where -------------------------------------------------------------------------------
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
            from hetagent.runtime.executors import corpus_vectors
            self._corpus = corpus_vectors()
        return self._corpus

    # -- compiled assets (hetagent build) ---------------------------------------------------------------
    @staticmethod
    def _read_assets(assets) -> dict[str, dict]:
        """operator -> its `built` llvm-cpu manifest entry, from DIR/manifest.json."""
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

    # -- layout ------------------------------------------------------------------------------------
    def spec_for(self, op) -> OpSpec:
        spec = OpSpec(name=op.name, kind=op.kind, attrs=dict(op.attrs), device=op.device,
                      service_ms=op.service_ms, batch=max(1, op.batch),
                      emulated=self.is_emulated(op), threads=self.threads,
                      tool_url=self.tool_url, tool_timeout_s=self.tool_timeout_s,
                      endpoint=self._endpoint_for(op), code_limits=self.code_limits, bound=op.bound,
                      code=op.attrs.get("source") if op.kind == "compute.code" else None)
        if op.kind == "memory.vector_search":
            spec.corpus_vectors = self._corpus_vectors()
        asset = self.asset_for(op)
        if asset is not None:
            spec.embed_asset = asset
            self.compiled[op.name] = "llvm-cpu " + str(asset.get("path"))
        return spec

    def _cheap(self, op) -> bool:
        return op.kind in CHEAP_KINDS and not self.is_emulated(op) and self._endpoint_for(op) is None

    def layout_for(self, graph: RtGraph, version: int = 1) -> Layout:
        """Units, routes and call chains of a graph (see the module's docstring)."""
        unit_of: dict[str, str] = {}
        for n in graph.order:
            op = graph.operators[n]
            if op.kind != "llm.kv_transfer":
                unit_of[n] = unit_name(op)

        def follows(n: str) -> str | None:
            """The operator n continues in one call: its only predecessor, whose only successor it
            is, under the same guards."""
            preds = graph.preds[n]
            if len(preds) != 1 or graph.succs[preds[0]] != [n]:
                return None
            p, op = graph.operators[preds[0]], graph.operators[n]
            return preds[0] if (p.loops, p.arms) == (op.loops, op.arms) else None

        fused: list[list[str]] = []
        if self.fuse:
            where: dict[str, int] = {}
            for n in graph.order:
                op = graph.operators[n]
                if n not in unit_of or not self._cheap(op):
                    continue
                p = follows(n)
                if p is not None and p in where and graph.operators[p].device == op.device:
                    fused[where[p]].append(n)
                    where[n] = where[p]
                else:
                    where[n] = len(fused)
                    fused.append([n])
            fused = [f for f in fused if len(f) > 1]
            for f in fused:
                for n in f:
                    unit_of[n] = f"fused:{f[0]}..{f[-1]}"
        chains: dict[str, list[str]] = {}
        head: dict[str, str] = {}
        for n in graph.order:
            if n not in unit_of:
                continue
            p = follows(n)
            if p is not None and p in head and unit_of.get(p) == unit_of[n]:
                chains[head[p]].append(n)
                head[n] = head[p]
            else:
                head[n] = n
                chains[n] = [n]
        units: dict[str, PoolSpec] = {}
        for u in dict.fromkeys(unit_of.values()):
            ops = [n for n in graph.order if unit_of.get(n) == u]
            specs = {n: self.spec_for(graph.operators[n]) for n in ops}
            first = graph.operators[ops[0]]
            pool = graph.pools.get(u) or {}
            emulated = any(s.emulated for s in specs.values())
            replicas = int(pool.get("replicas") or max(graph.operators[n].replicas for n in ops) or 1)
            batch = int(pool.get("batch") or first.batch or 1)
            max_batch = int(pool.get("max_batch") or batch)
            spec = PoolSpec(name=u, app=_app_name(self.prefix + u + (f"@v{version}" if version > 1 else "")),
                            device=pool.get("device") or first.device, ops=specs,
                            replicas=max(1, replicas), batch=max(1, batch), emulated=emulated,
                            threads=self.threads, engine=pool.get("engine") or ("fused" if u.startswith("fused:") else "single"),
                            fused=u.startswith("fused:"),
                            autoscaling=pool.get("autoscaling"))
            cheap = all(self._cheap(graph.operators[n]) for n in ops)
            spec.slots = max(IO_SLOTS, max_batch) if (spec.waits or cheap) else max(1, max_batch)
            units[u] = spec
        return Layout(units, unit_of, chains, fused)

    # -- start ---------------------------------------------------------------------------------------
    def start(self) -> "Deployment":
        if any(op.kind in ("compute.code", "compute.fused") for op in self.graph.operators.values()):
            from hetagent.backends.sandbox import require
            require()   # code nodes run only in the sandbox: refuse now, in one line, if it is missing
        # the fleet's devices, and the host CPUs of its servers that CPU-side pools run on (not in `fleet`)
        self.started_ray = ray_init(self.address, {**{d: 1 for d in self.devices_used()}, **self.graph.fleet})
        have = cluster_devices()
        missing = sorted(d for d in self.devices_used() if have.get(d, 0) <= 0)
        if missing:
            raise HetagentError(
                f"no Ray node advertises device(s) {', '.join(missing)} that the plan places "
                f"operators on; start nodes with `ray start --resources '{{\"{missing[0]}\": 1}}'`")
        serve_start(self.http)
        if any(op.kind == "tool.lookup" for op in self.graph.operators.values()):
            from hetagent.backends.http_tool import SearchToolServer
            self.tool_server = SearchToolServer(delay_ms=self.tool_delay_ms).start()
            self.tool_url = self.tool_server.url
        self.layout = self.layout_for(self.graph)
        return self

    def ingress_config(self, *, admission: bool = True, seed: int = 0, sla_ms: float | None = None,
                       deadline_factor: float = 2.0, api_key_digest: str | None = None,
                       max_body_bytes: int = 8 << 20) -> dict:
        lay = self.layout
        real_cpu = {n for n, op in self.graph.operators.items()
                    if not self.is_emulated(op) and self._endpoint_for(op) is None}
        return {"graph": self.graph, "routes": lay.routes(), "unit_of": dict(lay.unit_of),
                "chains": dict(lay.chains), "emulated": self.emulated_ops(), "cpu_real": real_cpu,
                "admission": admission, "seed": seed,
                "sla_ms": sla_ms if sla_ms is not None else self.graph.sla_ms,
                "deadline_factor": deadline_factor, "cores": self.threads,
                "api_key_digest": api_key_digest, "max_body_bytes": max_body_bytes,
                "compiled": dict(self.compiled), "fused": [list(f) for f in lay.fused]}

    def deploy(self, ingress_config: dict, route_prefix: str | None = None) -> None:
        """Runs every unit and the ingress as Serve applications, waiting until all are running."""
        from ray import serve

        from hetagent.runtime.ingress import bind_ingress
        targets = [serve.RunTarget(bind_pool(s), name=s.app, route_prefix=None, logging_config=None)
                   for s in self.layout.units.values()]
        import ray
        here = ray.get_runtime_context().get_node_id()
        targets.append(serve.RunTarget(bind_ingress(ingress_config, here), name=self.ingress_app,
                                       route_prefix=route_prefix))
        try:
            handles = serve.run_many(targets)
        except Exception as e:  # noqa: BLE001 - Serve reports a failed constructor as a long text
            raise HetagentError(f"the serving pools did not start: {_last_line(e)}") from None
        self.ingress = handles[-1]

    # -- changes ---------------------------------------------------------------------------------------
    def resize(self, unit: str, replicas: int) -> None:
        """More or fewer replicas of one unit: Serve's lightweight in-place update."""
        from ray import serve
        spec = self.layout.units[unit]
        spec.replicas = max(1, int(replicas))
        serve.run(bind_pool(spec), name=spec.app, route_prefix=None)
        # admission divides a pool's backlog over its replicas' slots: it must know the new count
        self.ingress.rebind.remote(self.graph, self.layout.routes(), dict(self.layout.unit_of),
                                   dict(self.layout.chains), self.emulated_for(self.graph)
                                   ).result(timeout_s=60)
        self.events.append({"t": round(time.time(), 3), "event": "resize", "pool": unit,
                            "replicas": spec.replicas})

    def apply(self, plan) -> dict:
        """Adopts a new plan make-before-break: new or changed units start under new names, the
        ingress switches to them once they run, then the old ones are deleted. Returns the event."""
        from ray import serve

        from hetagent.placement.plan import load_plan
        plan = load_plan(plan)
        graph = from_plan(plan, self.workflow_index)
        self.version += 1
        new = self.layout_for(graph, self.version)
        old = self.layout
        keep, start, scale = {}, {}, {}
        for u, spec in new.units.items():
            cur = old.units.get(u)
            if cur is not None and cur.signature() == spec.signature():
                spec.app = cur.app
                keep[u] = spec
                if cur.replicas != spec.replicas or cur.autoscaling != spec.autoscaling:
                    scale[u] = spec
            else:
                start[u] = spec
        t0 = time.time()
        if start:
            try:
                serve.run_many([serve.RunTarget(bind_pool(s), name=s.app, route_prefix=None)
                                for s in start.values()])
            except Exception as e:  # noqa: BLE001
                raise HetagentError(f"the new pools did not start: {_last_line(e)}") from None
        ready = time.time()
        for spec in scale.values():                  # in place, no restart
            serve.run(bind_pool(spec), name=spec.app, route_prefix=None)
        self.ingress.rebind.remote(graph, new.routes(), dict(new.unit_of), dict(new.chains),
                                   self.emulated_for(graph)).result(timeout_s=60)
        switched = time.time()
        gone = [s.app for u, s in old.units.items() if new.units.get(u) is None
                or new.units[u].app != s.app]
        delete_apps(gone)
        self.layout, self.graph, self.plan = new, graph, plan
        ev = {"t": round(switched, 3), "event": "apply", "started": sorted(start), "resized": sorted(scale),
              "deleted": gone, "new_ready_s": round(ready - t0, 3),
              "switched_after_ready": switched >= ready, "deleted_after_switch": time.time() >= switched}
        self.events.append(ev)
        return ev

    def emulated_for(self, graph: RtGraph) -> list[str]:
        return sorted(n for n, op in graph.operators.items()
                      if op.kind != "llm.kv_transfer" and self.is_emulated(op))

    # -- stop ------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        try:
            import ray
        except ImportError:
            return
        if self.tool_server is not None:
            self.tool_server.stop()
            self.tool_server = None
        if not ray.is_initialized():
            return
        if self.started_ray:             # our own instance: everything goes with it
            ray.shutdown()
            return
        # someone else's Ray: remove our applications only (all at once: each waits for its drain)
        apps = [self.ingress_app] + [s.app for s in (self.layout.units.values() if self.layout else [])]
        delete_apps(apps)


def delete_apps(apps: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    def one(app):
        try:
            serve.delete(app)
        except Exception:  # noqa: BLE001 - already gone
            pass
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(apps)))) as ex:
        list(ex.map(one, apps))


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:400]
