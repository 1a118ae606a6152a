"""Runtime benchmarks on Ray Serve -> benchmarks/results/runtime_overhead.json

1. Per-hop orchestration overhead: a chain of HOPS trivial operators (memory.load) through the ingress
   and the pools' deployment handles at concurrency 1; overhead per hop = (the ingress's end-to-end
   latency - the operators' own service time) / hops, fused (one call for the chain) and unfused (one
   handle call per operator), against a direct Python call of the same executor. Target: fused median
   <= 1 ms.
2. Throughput of voice_agent_cpu (local-cpu fleet, every operator real, LLM pools on llama.cpp's
   server) closed-loop (C=4 by default, 20 requests) against the bottleneck's measured capacity: the
   smallest of each pool's replicas / its busy time per request, the device's cores / all operators'
   busy (wall) time per request (the definition the previous runtime was measured with), and the
   device's cores / all operators' CPU time per request; busy times from requests run alone.
   Target >= 90 %.
3. Overload through Serve's HTTP proxy: open-loop Poisson at 2x the capacity from 2: what is refused
   (HTTP 429) and how fast, and whether the admitted requests meet the SLA. Target: refusals at once,
   admitted p95 within the SLA.
4. A pool's replica process killed mid-run (the LLM decode pool, SIGKILL) during open-loop traffic at
   the capacity: every request completed, failed or refused, none lost, none failed by the kill.
5. SLA attainment at the rate the CPU plan promises (open loop at the plan's rate). Target >= 99 %.

    python benchmarks/runtime_overhead.py [--quick] [--skip-models] [--skip-overhead] [--skip-sla]
                                          [--skip-overload] [--requests N] [--concurrency C]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HOPS = 8


def chain_yaml(hops: int) -> str:
    lines = ["name: chain", "sla: {latency_ms: 1000, percentile: 95}", "rate: 10", "nodes:",
             "  - {id: q, kind: input, text_tokens: 8}"]
    prev = "q"
    for i in range(hops):
        lines.append(f"  - {{id: h{i}, kind: memory_load, bytes: 64, inputs: [{prev}]}}")
        prev = f"h{i}"
    lines.append(f"  - {{id: out, kind: output, inputs: [{prev}]}}")
    return "\n".join(lines) + "\n"


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def overhead(n: int, fuse: bool = True) -> dict:
    from hetagent import api
    from hetagent.runtime.commands import deploy
    from hetagent.runtime.executors import Executor, OpSpec
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "chain.yaml"
        f.write_text(chain_yaml(HOPS))
        plan = api.plan(str(f), fleet="local-cpu", validate=False).to_json()
    load0 = _load()
    rt = deploy(plan, fuse=fuse, app_prefix=f"chain{'-fused' if fuse else ''}.")
    try:
        payload = {"text": "x", "question": "x"}
        for _ in range(5):
            rt.call(payload, timeout=60)
        per_hop = []
        for _ in range(n):
            res = rt.call(payload, timeout=60)
            own = sum(v or 0 for v in res["service"].values())
            per_hop.append((res["latency_ms"] - own) / HOPS)
        calls = len(rt.d.layout.chains)
        units = len(rt.d.layout.units)
    finally:
        rt.close()
    ex = Executor(OpSpec("h", "memory.load", {}, "local-cpu", 0.0))
    t = time.perf_counter()
    k = 20000
    for _ in range(k):
        ex.run({"session": "s"}, [payload])
    direct_ms = (time.perf_counter() - t) * 1000 / k
    return {"hops": HOPS, "requests": n, "fused": fuse, "handle_calls_per_request": calls,
            "deployments": units, "loadavg_before_after": [load0, _load()],
            "per_hop_ms": {"median": round(statistics.median(per_hop), 3),
                           "p95": round(sorted(per_hop)[int(0.95 * (len(per_hop) - 1))], 3)},
            "direct_call_ms": round(direct_ms, 5), "target_median_ms": 1.0,
            "meets_target": statistics.median(per_hop) <= 1.0}


def cpu_plan():
    from hetagent import api
    return api.plan(str(ROOT / "configs/workflows/voice_agent_cpu.yaml"), fleet="local-cpu").to_json()


LONG = 600_000.0      # an explicit deadline far away: the closed loop measures throughput, not admission


def capacity(rt, payload, alone_n: int) -> dict:
    """Each request run alone: per-operator service and CPU time; the bottleneck's capacity."""
    runs = []
    for _ in range(alone_n):
        res = rt.call(payload, timeout=600, deadline_ms=LONG)
        assert res["status"] == "completed", res["error"]
        runs.append(res)
    unit_of = rt.d.layout.unit_of
    cores = len(os.sched_getaffinity(0))
    busy = statistics.median(sum(v or 0 for v in r["service"].values()) for r in runs)
    cpu = statistics.median(sum(m.get("cpu_ms", 0) for m in r["ops"].values()) for r in runs)
    pool_busy: dict[str, list] = {}
    for r in runs:
        per: dict[str, float] = {}
        for op, v in r["service"].items():
            per[unit_of[op]] = per.get(unit_of[op], 0.0) + (v or 0)
        for u, v in per.items():
            pool_busy.setdefault(u, []).append(v)
    cands = {f"pool {u} ({rt.d.layout.units[u].replicas} replica)":
             1000.0 * rt.d.layout.units[u].replicas / statistics.median(v)
             for u, v in pool_busy.items() if statistics.median(v) > 0 and not rt.d.layout.units[u].waits}
    cands[f"device local-cpu ({cores} cores, busy time)"] = 1000.0 * cores / busy
    cands[f"device local-cpu ({cores} cores, CPU time)"] = 1000.0 * cores / cpu
    svc: dict[str, list] = {}
    for r in runs:
        for op, v in r["service"].items():
            svc.setdefault(op, []).append(v or 0)
    return {"candidates": cands, "busy_ms": busy, "cpu_ms": cpu,
            "service_ms": {k: round(statistics.median(v), 1) for k, v in sorted(svc.items())}}


def closed_loop(rt, payload, n: int, c: int) -> dict:
    from hetagent.runtime import load
    rt.metrics.records.clear()
    t0 = time.time()
    futs = load.closed_loop(lambda p: rt.submit(p, deadline_ms=LONG), payload, n, c)
    load.drain(futs)
    s = rt.report(time.time() - t0)
    ends = sorted(r.sent + r.latency_ms / 1000 for r in rt.metrics.records.values()
                  if r.status == "completed")
    k1, k2 = c - 1, len(ends) - c
    steady = (k2 - k1) / (ends[k2] - ends[k1]) if k2 > k1 and ends[k2] > ends[k1] else None
    return {"summary": s, "steady_rps": steady}


def http_open_loop(port: int, wav_b64: str, n: int, rate: float, seed: int = 0,
                   during=None) -> list[dict]:
    """n requests to POST /invoke with Poisson gaps at `rate`; each: code, seconds, latency_ms."""
    rng = random.Random(seed)
    out: list[dict] = [None] * n
    body = json.dumps({"audio_wav_b64": wav_b64}).encode()

    def one(i):
        t = time.perf_counter()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invoke", body,
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=900) as r:
                doc, code = json.loads(r.read()), r.status
        except urllib.error.HTTPError as e:
            doc, code = json.loads(e.read() or b"{}"), e.code
        except Exception as e:  # noqa: BLE001 - a request the service never answered: lost
            doc, code = {"error": str(e)}, None
        out[i] = {"code": code, "seconds": time.perf_counter() - t,
                  "latency_ms": doc.get("latency_ms"), "error": doc.get("error")}
    threads = []
    for i in range(n):
        th = threading.Thread(target=one, args=(i,))
        th.start()
        threads.append(th)
        if during is not None and i == n // 3:
            during()
        time.sleep(rng.expovariate(rate))
    for th in threads:
        th.join()
    return out


def http_summary(res: list[dict], sla_ms: float) -> dict:
    ok = [r for r in res if r["code"] == 200]
    refused = [r for r in res if r["code"] == 429]
    lat = sorted(r["seconds"] * 1000 for r in ok)
    ref = sorted(r["seconds"] * 1000 for r in refused)

    def pct(xs, p):
        return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1) if xs else None
    return {"requests": len(res), "completed": len(ok), "refused": len(refused),
            "failed": sum(r["code"] not in (200, 429, None) for r in res),
            "lost": sum(r["code"] is None for r in res),
            "admitted_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95), "max": lat[-1] if lat else None},
            "admitted_within_sla": round(sum(x <= sla_ms for x in lat) / len(lat), 4) if lat else None,
            "refusal_ms": {"p50": pct(ref, 50), "p95": pct(ref, 95), "max": ref[-1] if ref else None},
            "errors": sorted({r["error"][:160] for r in res if r["code"] not in (200, 429) and r["error"]})}


def models(plan, a) -> dict:
    """2-4 on one deployment of voice_agent_cpu behind Serve's HTTP proxy."""
    from ray import serve

    from hetagent.runtime import load
    from hetagent.runtime.commands import Runner
    from hetagent.runtime.service import port_free, wav_bytes
    port = 18765
    while not port_free("127.0.0.1", port):
        port += 1
    rt = Runner(plan, http={"host": "127.0.0.1", "port": port}, route_prefix="/").start()
    out = {}
    try:
        payload = load.request_input(rt.d.graph)
        wav = base64.b64encode(wav_bytes(payload["audio"], 16000)).decode()
        load0 = _load()
        cap = capacity(rt, payload, 3)
        bottleneck = min(cap["candidates"], key=cap["candidates"].get)
        rps = cap["candidates"][bottleneck]
        wall = cap["candidates"][[k for k in cap["candidates"] if "busy time" in k][0]]
        n, c = a.requests or (8 if a.quick else 20), a.concurrency
        cl = closed_loop(rt, payload, n, c)
        s = cl["summary"]
        out["throughput"] = {
            "requests": n, "concurrency": c, "bottleneck": bottleneck, "capacity_rps": round(rps, 4),
            "capacity_candidates_rps": {k: round(v, 4) for k, v in
                                        sorted(cap["candidates"].items(), key=lambda kv: kv[1])[:4]},
            "busy_ms_per_request_alone": round(cap["busy_ms"], 1),
            "cpu_ms_per_request_alone": round(cap["cpu_ms"], 1), "service_ms_alone": cap["service_ms"],
            "throughput_rps": s["throughput_rps"],
            "throughput_steady_rps": round(cl["steady_rps"], 4) if cl["steady_rps"] else None,
            "ratio_to_busy_time_capacity": round(s["throughput_rps"] / wall, 3),
            "ratio_to_bottleneck": round(s["throughput_rps"] / rps, 3),
            "ratio_steady_to_bottleneck": round(cl["steady_rps"] / rps, 3) if cl["steady_rps"] else None,
            "target": 0.9, "completed": s["completed"], "lost": s["lost"],
            "loadavg_before_after": [load0, _load()], "per_stage_ms": s["per_stage_ms"],
            "latency_ms": s["latency_ms"], "kv_transfer": s["kv_transfer"]}
        print(json.dumps({k: v for k, v in out["throughput"].items()
                          if k not in ("per_stage_ms", "service_ms_alone")}), file=sys.stderr)
        if not a.skip_overload:
            sla = rt.sla_ms
            time.sleep(5)
            load0 = _load()
            k = 24 if a.quick else 60
            res = http_open_loop(port, wav, k, 2 * rps, seed=1)
            out["overload"] = {"rate_rps": round(2 * rps, 4), "sla_ms": sla,
                               "loadavg_before_after": [load0, _load()], **http_summary(res, sla)}
            print(json.dumps(out["overload"]), file=sys.stderr)
            time.sleep(20)                                # the queue drains
            unit = "gemma-3-270m/decode"
            app = rt.d.layout.units[unit].app
            victim = serve.get_deployment_handle(app, app).info.remote().result(timeout_s=120)
            load0 = _load()

            def kill():
                time.sleep(2.0)
                os.kill(victim["pid"], signal.SIGKILL)
            res = http_open_loop(port, wav, 12 if a.quick else 24, rps, seed=2,
                                 during=lambda: threading.Thread(target=kill).start())
            after = serve.get_deployment_handle(app, app).info.remote().result(timeout_s=300)
            st = rt.stats(600)
            out["replica_killed"] = {"pool": unit, "killed_pid": victim["pid"],
                                     "new_pid": after["pid"], "rate_rps": round(rps, 4),
                                     "loadavg_before_after": [load0, _load()],
                                     **http_summary(res, sla)}
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            out["replica_killed"]["retries_metric"] = [ln for ln in metrics.splitlines()
                                                       if ln.startswith("hetagent_pool_retries_total")
                                                       and unit in ln]
            out["replica_killed"]["window"] = {k: st[k] for k in ("completed", "failed", "refused")}
            print(json.dumps(out["replica_killed"]), file=sys.stderr)
    finally:
        rt.close()
    return out


def sla(plan, n: int) -> dict:
    from hetagent.runtime.commands import run
    s = run(plan, requests=n)          # open loop at the plan's own rate
    return {"requests": n, "rate": s["mode"], "completed": s["completed"], "lost": s["lost"],
            "refused": s["refused"], "sla_ms": s["sla_ms"], "sla_attainment": s["sla_attainment"],
            "latency_ms": s["latency_ms"], "predicted_end_to_end_ms": s["predicted_end_to_end_ms"],
            "per_stage_ms": s["per_stage_ms"], "target": 0.99}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-sla", action="store_true")
    ap.add_argument("--skip-overload", action="store_true")
    ap.add_argument("--requests", type=int, help="closed-loop requests (default 20, 8 with --quick)")
    ap.add_argument("--concurrency", type=int, default=4, help="closed-loop requests in flight")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/runtime_overhead.json"))
    a = ap.parse_args()
    n = 30 if a.quick else 100
    res = {"host_cpus": os.cpu_count()}
    import ray

    from hetagent.runtime.deploy import ray_init, serve_start
    try:
        if not a.skip_overhead:
            ray_init(None, {"local-cpu": 1})
            serve_start(None)
            res["overhead"] = overhead(n)
            res["overhead_unfused"] = overhead(n, fuse=False)
            print(json.dumps(res["overhead"]), file=sys.stderr)
            print(json.dumps(res["overhead_unfused"]), file=sys.stderr)
            ray.shutdown()
        if not a.skip_models:
            plan = cpu_plan()
            res.update(models(plan, a))
            if not a.skip_sla:
                res["sla"] = sla(plan, 4 if a.quick else 20)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: (v if not isinstance(v, dict) else
                          {kk: vv for kk, vv in v.items() if kk not in ("per_stage_ms", "service_ms_alone")})
                      for k, v in res.items()}, separators=(",", ":")))


if __name__ == "__main__":
    main()
