"""`hetagent run` and `hetagent serve`, and the Python API `run(plan, ...)`.

The CLI calls `add_commands(subparsers)` to register both commands; hetagent.api re-exports `run`
and `Client`.
"""
from __future__ import annotations

import json
import os
import sys
import time

from hetagent.errors import HetagentError


def _load_plan(plan):
    from hetagent.placement.plan import load_plan
    return load_plan(plan)


def deploy(plan, *, address=None, real_devices=None, endpoints=None, admission=True,
           max_inflight=None, seed=0, threads=None, tool_timeout_s=10.0, tool_delay_ms=0.0,
           code_limits=None, retries=6, sla_ms=None, fuse=True, assets=None):
    """Deploys a plan and returns a started Runtime (call .close() and .d.shutdown() when done).

    `fuse`: chains of cheap operators on one device run as one actor call. `assets`: a folder made
    by `hetagent build` whose `built` llvm-cpu assets replace the eager model (embed.encode)."""
    from hetagent.runtime.deploy import Deployment
    from hetagent.runtime.router import Runtime
    d = Deployment(_load_plan(plan), address=address, real_devices=real_devices,
                   endpoints=endpoints, threads=threads, tool_timeout_s=tool_timeout_s,
                   tool_delay_ms=tool_delay_ms, code_limits=code_limits, fuse=fuse, assets=assets)
    try:
        d.start()
    except BaseException:
        d.shutdown()
        raise
    return Runtime(d, admission=admission, max_inflight=max_inflight, seed=seed, retries=retries,
                   sla_ms=sla_ms)


def drive(rt, *, requests=20, rate=None, concurrency=None, text=None, seed=0,
          timeout_s=None, replanner=None) -> dict:
    """Sends the load to a running Runtime and returns the run report (a dict)."""
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
    s = rt.metrics.summary(g.predicted, rt.d.emulated_ops(), wall)
    s["mode"] = {"closed_loop": concurrency} if concurrency else \
        {"open_loop_rate": rate if rate is not None else g.rate_rps}
    s["capacity_rps"] = round(rt.capacity_rps, 4) if rt.capacity_rps != float("inf") else None
    s["max_inflight"] = rt.max_inflight
    s["events"] = list(rt.d.events) + (replanner.events if replanner else [])
    s["compiled"] = dict(rt.d.compiled)
    s["fused"] = [list(m) for m in rt.d.groups.values()]
    return s


def run(plan, *, requests: int = 20, rate: float | None = None, concurrency: int | None = None,
        address: str | None = None, real_devices=None, endpoints=None, admission: bool = True,
        max_inflight: int | None = None, seed: int = 0, text: str | None = None,
        replan: str = "off", timeout_s: float | None = None, threads: int | None = None,
        assets=None, fuse: bool = True) -> dict:
    """Deploys `plan` (a Plan, its JSON, or a plan.json path), sends `requests` requests (open-loop
    Poisson at `rate`, default the plan's, or closed-loop with `concurrency` in flight) and returns
    the run report: requests, completed, failed, refused, lost, latency_ms {p50, p95, p99},
    sla_attainment, throughput_rps, emulated, compiled, fused, per_stage_ms, ...

    `assets`: a folder made by `hetagent build`; operators with a `built` llvm-cpu asset there run
    the compiled executable in place of the eager model (`compiled` in the report names them)."""
    if requests < 0:
        raise HetagentError("--requests must be 0 or more")
    if concurrency is not None and concurrency < 1:
        raise HetagentError("--concurrency must be at least 1")
    rt = deploy(plan, address=address, real_devices=real_devices, endpoints=endpoints,
                admission=admission, max_inflight=max_inflight, seed=seed, threads=threads,
                assets=assets, fuse=fuse)
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
        rt.d.shutdown()


# ---- CLI -----------------------------------------------------------------------------------------

def _endpoints(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HetagentError(f"--endpoint '{pair}': expected PATTERN=URL, e.g. "
                                f"'answer.*=http://127.0.0.1:8000' or 'h100=http://...'")
        k, v = pair.split("=", 1)
        out[k.strip()] = {"base_url": v.strip()}
    return out


def cmd_run(args) -> None:
    from hetagent.runtime.metrics import format_summary
    s = run(args.plan, requests=args.requests, rate=args.rate, concurrency=args.concurrency,
            address=args.address, endpoints=_endpoints(args.endpoint), seed=args.seed,
            admission=not args.no_admission, replan=args.replan, text=args.text,
            real_devices=(set(args.real.split(",")) if args.real else None),
            assets=args.assets, fuse=not args.no_fuse)
    if args.json:
        sys.stdout.write(json.dumps(s, separators=(",", ":"), default=str) + "\n")
    else:
        sys.stdout.write(format_summary(s) + "\n")


def cmd_serve(args) -> None:
    from hetagent.runtime.service import serve
    serve(args.plan, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("HETAGENT_API_KEY"),
          address=args.address, endpoints=_endpoints(args.endpoint),
          replan=args.replan, view=not args.no_view,
          real_devices=(set(args.real.split(",")) if args.real else None))


def add_commands(subparsers) -> None:
    """Registers `run` and `serve` on the CLI's subparsers (argparse)."""
    p = subparsers.add_parser("run", help="deploy a plan on Ray and send it requests",
                              description="Deploy plan.json (embedded local Ray unless --address) "
                              "and send N requests; report latency, SLA attainment, throughput.")
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
    p.add_argument("--replan", choices=("off", "advisory", "apply"), default="off",
                   help="slow path: re-plan on drift (advisory prints the proposal)")
    p.add_argument("--no-admission", action="store_true", help="never refuse requests")
    p.add_argument("--text", help="the question asked (spoken with Piper for voice workflows)")
    p.add_argument("--assets", metavar="DIR", help="a folder made by `hetagent build`: operators "
                   "with a built llvm-cpu asset run it in place of the eager model")
    p.add_argument("--no-fuse", action="store_true", help="one actor call per operator (no fused "
                   "chains of cheap operators)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.set_defaults(func=cmd_run)

    s = subparsers.add_parser("serve", help="serve a plan over HTTP (FastAPI)",
                              description="A long-running HTTP service: POST /v1/invoke, "
                              "GET /health, GET /metrics, POST /v1/chat/completions.")
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
