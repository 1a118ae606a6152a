"""`hetagent run` and `hetagent serve`, and the Python API `run(plan, ...)`.

`Runner` is a plan deployed on Ray Serve (hetagent.runtime.deploy) with its ingress warmed up: the
CLI, the Python API, the HTTP service and the slow path share it. The CLI calls
`add_commands(subparsers)` to register both commands; hetagent.api re-exports `run` and `Client`.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from hetagent.errors import HetagentError


def _load_plan(plan):
    from hetagent.placement.plan import load_plan
    return load_plan(plan)


class Runner:
    """A plan on Ray Serve: `start()`, `submit(payload)` -> Future of the ingress's answer, `call`,
    `stats`, and for the slow path `recent`, `devices_used`, `apply`, `resize`; `close()` at the end.

    `standin`: `auto` (emulated pools share stand-in outputs of identical inputs when the host cannot
    carry one stand-in per call at the plan's rate, decided by the warm-up request), `full` or
    `shared`. `deadline_factor`: a request without `deadline_ms` is failed at this many SLAs."""

    def __init__(self, plan, *, address=None, real_devices=None, endpoints=None, admission=True,
                 seed=0, threads=None, tool_timeout_s=10.0, tool_delay_ms=0.0, code_limits=None,
                 sla_ms=None, fuse=True, assets=None, http=None, route_prefix=None,
                 api_key_digest=None, max_body_bytes=8 << 20, deadline_factor=2.0,
                 standin="auto", app_prefix=None):
        from hetagent.runtime.deploy import Deployment
        from hetagent.runtime.metrics import RunMetrics
        if standin not in ("auto", "full", "shared"):
            raise HetagentError(f"--standin {standin}: choose auto, full or shared")
        self.d = Deployment(_load_plan(plan), address=address, real_devices=real_devices,
                            endpoints=endpoints, threads=threads, tool_timeout_s=tool_timeout_s,
                            tool_delay_ms=tool_delay_ms, code_limits=code_limits, fuse=fuse,
                            assets=assets, http=http, app_prefix=app_prefix)
        self.sla_ms = sla_ms if sla_ms is not None else self.d.graph.sla_ms
        self.metrics = RunMetrics(self.sla_ms)
        self.standin = standin
        self.emulation: dict = {}
        self._cfg = dict(admission=admission, seed=seed, sla_ms=self.sla_ms,
                         deadline_factor=deadline_factor, api_key_digest=api_key_digest,
                         max_body_bytes=max_body_bytes)
        self.route_prefix = route_prefix
        self.pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="hetagent-client")
        self.events: list[dict] = []

    # -- life ---------------------------------------------------------------------------------------
    def start(self) -> "Runner":
        try:
            self.d.start()
            self.d.deploy(self.d.ingress_config(**self._cfg), self.route_prefix)
            self.emulation = self._warm_up()
        except BaseException:
            self.close()
            raise
        return self

    def _warm_up(self) -> dict:
        from hetagent.runtime import load
        from hetagent.runtime.ingress import one_line
        payload = load.request_input(self.d.graph)
        try:
            return self.d.ingress.warm_up.remote(payload, self.d.graph.rate_rps, self.standin) \
                .result(timeout_s=900)
        except Exception as e:  # noqa: BLE001 - Serve wraps the ingress's error with its traceback
            raise HetagentError(one_line(e)) from None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.d.shutdown()

    # -- requests -----------------------------------------------------------------------------------
    def submit(self, payload: dict, deadline_ms: float | None = None) -> Future:
        rid = f"c{uuid.uuid4().hex[:10]}"
        self.metrics.new(rid)
        return self.pool.submit(self._one, rid, payload, deadline_ms)

    def _one(self, rid: str, payload: dict, deadline_ms: float | None) -> dict:
        try:
            res = self.d.ingress.submit.remote(payload, deadline_ms).result()
        except Exception as e:  # noqa: BLE001 - the ingress itself failed: the request failed
            from hetagent.runtime.ingress import one_line
            res = {"status": "failed", "error": f"the ingress failed: {one_line(e)}", "latency_ms": None}
        self.metrics.record(rid, res)
        return res

    def call(self, payload: dict, timeout: float | None = None, deadline_ms: float | None = None) -> dict:
        return self.submit(payload, deadline_ms).result(timeout)

    def stats(self, window_s: float = 10.0) -> dict:
        return self.d.ingress.stats.remote(window_s).result(timeout_s=30)

    # -- what the slow path needs ------------------------------------------------------------------------
    recent = stats

    @property
    def graph(self):
        return self.d.graph

    @property
    def plan(self):
        return self.d.plan

    def devices_used(self) -> set[str]:
        return self.d.devices_used()

    def unit_of(self, op: str) -> str | None:
        return self.d.layout.unit_of.get(op)

    def replicas(self, unit: str) -> int:
        return self.d.layout.units[unit].replicas

    def resize(self, unit: str, replicas: int) -> None:
        self.d.resize(unit, replicas)

    def apply(self, plan) -> dict:
        return self.d.apply(plan)

    def report(self, wall_s: float | None = None) -> dict:
        g = self.d.graph
        s = self.metrics.summary(g.predicted, self.d.emulated_ops(), wall_s,
                                 {n: op.service_ms for n, op in g.operators.items()})
        from hetagent.runtime.graph import planned_capacity
        cap = planned_capacity(g)["rps"]
        s["capacity_rps"] = round(cap, 4) if cap != float("inf") else None
        s["emulation"] = self.emulation
        s["events"] = list(self.d.events) + list(self.events)
        s["compiled"] = dict(self.d.compiled)
        s["fused"] = [list(f) for f in self.d.layout.fused]
        s["pools"] = {u: {"app": sp.app, "replicas": sp.replicas, "slots": sp.slots,
                          "emulated": sp.emulated, "operators": list(sp.ops)}
                      for u, sp in self.d.layout.units.items()}
        from hetagent.runtime.metrics import diagnose
        s["diagnosis"] = diagnose(s)
        return s


def deploy(plan, **kw) -> Runner:
    """Deploys a plan on Ray Serve and returns the started Runner (call .close() when done).

    `fuse`: chains of cheap operators on one device run as one call. `assets`: a folder made by
    `hetagent build` whose `built` llvm-cpu assets replace the eager model (embed.encode)."""
    return Runner(plan, **kw).start()


def drive(rt: Runner, *, requests=20, rate=None, concurrency=None, text=None, seed=0,
          timeout_s=None, replanner=None) -> dict:
    """Sends the load to a started Runner and returns the run report (a dict)."""
    from hetagent.runtime import load
    g = rt.d.graph
    payload = load.request_input(g, text or load.QUESTION)
    t0 = time.time()
    if concurrency:
        futs = load.closed_loop(rt.submit, payload, requests, concurrency)
    else:
        r = rate if rate is not None else g.rate_rps
        if r <= 0:
            raise HetagentError("--rate must be positive")
        futs = load.open_loop(rt.submit, payload, requests, r, seed=seed)
    load.drain(futs, timeout=timeout_s)
    wall = time.time() - t0
    if replanner is not None:
        rt.events.extend(replanner.events)
    s = rt.report(wall)
    s["mode"] = {"closed_loop": concurrency} if concurrency else \
        {"open_loop_rate": rate if rate is not None else g.rate_rps}
    return s


def run(plan, *, requests: int = 20, rate: float | None = None, concurrency: int | None = None,
        address: str | None = None, real_devices=None, endpoints=None, admission: bool = True,
        seed: int = 0, text: str | None = None, replan: str = "off", timeout_s: float | None = None,
        threads: int | None = None, assets=None, fuse: bool = True, standin: str = "auto") -> dict:
    """Deploys `plan` (a Plan, its JSON, or a plan.json path) on Ray Serve, sends `requests` requests
    (open-loop Poisson at `rate`, default the plan's, or closed-loop with `concurrency` in flight) and
    returns the run report: requests, completed, failed, refused, lost, latency_ms {p50, p95, p99},
    sla_attainment, throughput_rps, emulated, host_bound, diagnosis, emulation, per_stage_ms, ...

    `assets`: a folder made by `hetagent build`; operators with a `built` llvm-cpu asset there run
    the compiled executable in place of the eager model (`compiled` in the report names them)."""
    if requests < 0:
        raise HetagentError("--requests must be 0 or more")
    if concurrency is not None and concurrency < 1:
        raise HetagentError("--concurrency must be at least 1")
    if rate is not None and rate <= 0:
        raise HetagentError("--rate must be positive")
    rt = deploy(plan, address=address, real_devices=real_devices, endpoints=endpoints,
                admission=admission, seed=seed, threads=threads, assets=assets, fuse=fuse,
                standin=standin)
    rp = None
    try:
        if replan != "off":
            from hetagent.runtime.replan import Replanner
            rp = Replanner(rt, advisory=(replan == "advisory")).start()
        return drive(rt, requests=requests, rate=rate, concurrency=concurrency, text=text,
                     seed=seed, timeout_s=timeout_s, replanner=rp)
    finally:
        if rp:
            rp.stop()
        rt.close()


# ---- CLI -----------------------------------------------------------------------------------------

def _endpoints(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HetagentError(f"--endpoint '{pair}': expected PATTERN=URL, e.g. "
                                f"'answer.*=http://127.0.0.1:8000' or 'h100=http://...'")
        k, v = pair.split("=", 1)
        if not v.strip().startswith(("http://", "https://")):
            raise HetagentError(f"--endpoint '{pair}': the URL must start with http:// or https://")
        out[k.strip()] = {"base_url": v.strip()}
    return out


def _real(arg) -> set[str] | None:
    if not arg:
        return None
    devs = {d.strip() for d in arg.split(",") if d.strip()}
    if not devs:
        raise HetagentError("--real: give device ids separated by commas, e.g. local-cpu,l4")
    return devs


def cmd_run(args) -> None:
    from hetagent.runtime.metrics import format_summary
    endpoints, real = _endpoints(args.endpoint), _real(args.real)
    _load_plan(args.plan)                         # a bad plan: one line, before Ray starts
    s = run(args.plan, requests=args.requests, rate=args.rate, concurrency=args.concurrency,
            address=args.address, endpoints=endpoints, seed=args.seed,
            admission=not args.no_admission, replan=args.replan, text=args.text,
            real_devices=real, assets=args.assets, fuse=not args.no_fuse, standin=args.standin)
    if args.json:
        sys.stdout.write(json.dumps(s, separators=(",", ":"), default=str) + "\n")
    else:
        sys.stdout.write(format_summary(s) + "\n")


def cmd_serve(args) -> None:
    from hetagent.runtime.service import serve
    endpoints, real = _endpoints(args.endpoint), _real(args.real)
    _load_plan(args.plan)
    serve(args.plan, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("HETAGENT_API_KEY"),
          address=args.address, endpoints=endpoints, replan=args.replan, view=not args.no_view,
          real_devices=real)


def add_commands(subparsers) -> None:
    """Registers `run` and `serve` on the CLI's subparsers (argparse)."""
    p = subparsers.add_parser("run", help="deploy a plan on Ray Serve and send it requests",
                              description="Deploy plan.json on Ray Serve (embedded local Ray unless "
                              "--address) and send N requests; report latency, SLA attainment, "
                              "throughput, and whether the plan or this host set the pace.")
    p.add_argument("plan", help="plan.json from `hetagent plan`")
    p.add_argument("--requests", type=int, default=20, help="requests to send (default 20)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, help="open-loop Poisson rate, req/s (default: the plan's)")
    g.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    p.add_argument("--address", help="an existing Ray cluster (any address ray.init accepts)")
    p.add_argument("--endpoint", action="append", metavar="PATTERN=URL",
                   help="bind LLM operators (name, node or device pattern) to an "
                        "OpenAI-compatible server; repeatable")
    p.add_argument("--real", help="comma-separated devices that are really here "
                                  "(default: local-cpu); others are emulated")
    p.add_argument("--standin", choices=("auto", "full", "shared"), default="auto",
                   help="emulated operators: a stand-in per call (full), identical inputs computed "
                        "once (shared), or shared where the host cannot carry full (auto, default)")
    p.add_argument("--replan", choices=("off", "advisory", "apply"), default="off",
                   help="slow path: re-plan on drift (advisory prints the proposal)")
    p.add_argument("--no-admission", action="store_true", help="never refuse requests")
    p.add_argument("--text", help="the question asked (spoken with Piper for voice workflows)")
    p.add_argument("--assets", metavar="DIR", help="a folder made by `hetagent build`: operators "
                   "with a built llvm-cpu asset run it in place of the eager model")
    p.add_argument("--no-fuse", action="store_true", help="one call per operator (no fused "
                   "chains of cheap operators)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.set_defaults(func=cmd_run)

    s = subparsers.add_parser("serve", help="serve a plan over HTTP through Ray Serve",
                              description="A long-running HTTP service on Ray Serve's proxy: POST "
                              "/invoke, /v1/chat/completions; GET /health, /metrics (and Serve's "
                              "/-/routes, /-/healthz).")
    s.add_argument("plan")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; any "
                   "other needs --api-key or HETAGENT_API_KEY)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="required bearer key (or HETAGENT_API_KEY)")
    s.add_argument("--address")
    s.add_argument("--endpoint", action="append", metavar="PATTERN=URL")
    s.add_argument("--real")
    s.add_argument("--replan", choices=("off", "advisory", "apply"), default="advisory")
    s.add_argument("--no-view", action="store_true", help="no live terminal view on stderr")
    s.set_defaults(func=cmd_serve)
