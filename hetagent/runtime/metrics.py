"""Run metrics: every request counted (completed, failed, refused, lost), latency percentiles per
stage and end to end, SLA attainment, throughput, emulated operators, predicted versus measured, and
which of the two explains a miss: the plan's prediction, or this host (`host_bound`: emulated operators
whose stand-in, not the predicted device time, set the pace on more than HOST_BOUND_SHARE of their calls).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

HOST_BOUND_SHARE = 0.05       # of an emulated operator's calls where its stand-in set the pace
MISSED_BY = 0.25              # a stage's service p50 over its prediction by more than this (and 5 ms)


def percentiles(xs, ps=(50, 95, 99)) -> dict:
    if not len(xs):
        return {f"p{p}": None for p in ps}
    a = np.asarray(xs, float)
    return {f"p{p}": round(float(np.percentile(a, p)), 3) for p in ps}


@dataclass
class RequestRecord:
    id: str
    status: str = "pending"          # completed | failed | refused | lost
    sent: float = 0.0                # time.time()
    latency_ms: float | None = None
    stages: dict = field(default_factory=dict)      # operator -> ms (queue + service)
    service: dict = field(default_factory=dict)     # operator -> ms (replica side)
    error: str | None = None
    retries: int = 0
    kv: list = field(default_factory=list)          # [{operator, bytes, ms, mode}]


class RunMetrics:
    """Thread-safe collection; summary() is the run report."""

    def __init__(self, sla_ms: float | None = None):
        self.sla_ms = sla_ms
        self.records: dict[str, RequestRecord] = {}
        self.lock = threading.Lock()
        self.started = time.time()
        self.standin: dict[str, dict] = {}            # operator -> {own_ms[], predicted_ms, slower}
        self.compiled_calls: dict[str, int] = {}      # operator -> calls run by a compiled asset

    def new(self, rid: str) -> RequestRecord:
        r = RequestRecord(rid, sent=time.time())
        with self.lock:
            self.records[rid] = r
        return r

    def record(self, rid: str, res: dict) -> None:
        """The ingress's answer for request rid (hetagent.runtime.ingress.Record.to_json)."""
        with self.lock:
            r = self.records[rid]
            r.status, r.latency_ms, r.error = res["status"], res.get("latency_ms"), res.get("error")
            r.stages, r.service = dict(res.get("stages") or {}), dict(res.get("service") or {})
            r.retries, r.kv = int(res.get("retries") or 0), list(res.get("kv") or [])
            for op, m in (res.get("ops") or {}).items():
                if m.get("compiled"):
                    self.compiled_calls[op] = self.compiled_calls.get(op, 0) + 1
                if not m.get("emulated"):
                    continue
                s = self.standin.setdefault(op, {"own_ms": [], "predicted_ms": m.get("predicted_ms"),
                                                 "slower": 0, "shared": 0, "calls": 0})
                s["calls"] += 1
                s["own_ms"].append(m.get("own_ms", 0.0))
                s["slower"] += int(bool(m.get("standin_set_pace")))
                s["shared"] += int(bool(m.get("shared")))

    def recent(self, window_s: float = 10.0) -> dict:
        """Rate, latency and attainment over the last window (the live view, the slow path)."""
        now = time.time()
        with self.lock:
            rs = [r for r in self.records.values() if r.sent >= now - window_s]
        done = [r for r in rs if r.status == "completed"]
        lat = [r.latency_ms for r in done]
        return {"rate": len(rs) / window_s, "completed": len(done),
                "refused": sum(r.status == "refused" for r in rs),
                "failed": sum(r.status == "failed" for r in rs),
                "latency_ms": percentiles(lat),
                "sla_attainment": _attain(lat, self.sla_ms),
                "stages": {op: float(np.median(v)) for op, v in _stage_lists(done).items()}}

    def summary(self, predicted: dict | None = None, emulated: list[str] | None = None,
                wall_s: float | None = None, predicted_service: dict | None = None) -> dict:
        """The run report. `predicted`: plan.json's `predicted` (per-stage latency, queueing
        included); `predicted_service`: operator -> the plan's service time (queueing excluded)."""
        with self.lock:
            rs = list(self.records.values())
            standin = {k: dict(v) for k, v in self.standin.items()}
            compiled_calls = dict(self.compiled_calls)
        done = [r for r in rs if r.status == "completed"]
        lat = [r.latency_ms for r in done]
        if wall_s is None:
            ends = [r.sent + (r.latency_ms or 0) / 1000 for r in done]
            wall_s = (max(ends) - min(r.sent for r in rs)) if done else 0.0
        per_stage = {}
        pred = (predicted or {}).get("per_stage_ms", {})
        svc_pred = predicted_service or {}
        service: dict[str, list] = {}
        for r in done:
            for op, ms in r.service.items():
                if ms is not None:
                    service.setdefault(op, []).append(ms)
        for op, v in sorted(_stage_lists(done).items()):
            per_stage[op] = {**percentiles(v), "n": len(v),
                             "service_p50": percentiles(service.get(op, []), (50,))["p50"],
                             "predicted_ms": round(pred[op], 3) if op in pred else None,
                             "predicted_service_ms": round(svc_pred[op], 3) if op in svc_pred else None}
        kv = [k for r in done for k in r.kv]
        out = {
            "requests": len(rs),
            "completed": len(done),
            "failed": sum(r.status == "failed" for r in rs),
            "refused": sum(r.status == "refused" for r in rs),
            "lost": sum(r.status not in ("completed", "failed", "refused") for r in rs),
            "latency_ms": percentiles(lat),
            "sla_ms": self.sla_ms,
            "sla_attainment": _attain(lat, self.sla_ms),
            "throughput_rps": round(len(done) / wall_s, 4) if wall_s > 0 else None,
            "wall_s": round(wall_s, 3),
            "retries": sum(r.retries for r in rs),
            "emulated": sorted(emulated or []),
            "host_bound": host_bound(standin),
            "per_stage_ms": per_stage,
            "predicted_end_to_end_ms": (predicted or {}).get("end_to_end_ms"),
            "standin": {op: {"own_ms": percentiles(v["own_ms"]), "predicted_ms": v["predicted_ms"],
                             "calls": v["calls"], "slower_than_predicted": v["slower"],
                             "shared": v["shared"]} for op, v in standin.items()},
            "kv_transfer": {"count": len(kv),
                            "mode": sorted({k.get("mode") or "-" for k in kv}),
                            "bytes": percentiles([k.get("bytes", 0) for k in kv], (50,)).get("p50"),
                            "ms": percentiles([k.get("ms", 0) for k in kv], (50, 95))},
            "compiled_calls": compiled_calls,
            "errors": sorted({r.error for r in rs if r.error})[:10],
        }
        out["diagnosis"] = diagnose(out)
        return out


def host_bound(standin: dict) -> list[str]:
    """Emulated operators whose stand-in, not the predicted device time, set the pace on more than
    HOST_BOUND_SHARE of their calls."""
    return sorted(op for op, v in standin.items()
                  if v["calls"] and v["slower"] > HOST_BOUND_SHARE * v["calls"])


def diagnose(s: dict) -> dict:
    """Which explains what was measured: the plan's prediction, or this host."""
    hb = set(s.get("host_bound") or [])
    def over(v):      # the replica's own time (no hop, no queue) over the plan's service time
        got, pred = v.get("service_p50"), v.get("predicted_service_ms") or v.get("predicted_ms")
        return bool(pred) and got is not None and got > pred * (1 + MISSED_BY) and got - pred > 5
    missed = sorted(op for op, v in s.get("per_stage_ms", {}).items() if op not in hb and over(v))
    p95, sla = (s.get("latency_ms") or {}).get("p95"), s.get("sla_ms")
    if p95 is None:
        verdict = "no request completed"
    elif not sla or p95 <= sla:
        verdict = "the SLA held at p95"
    elif hb:
        verdict = f"the SLA missed at p95 and this host was the bottleneck: {', '.join(sorted(hb))}'s " \
                  f"stand-ins set the pace (not the plan)"
    elif missed:
        verdict = f"the SLA missed at p95: the plan's prediction missed at {', '.join(missed)}"
    else:
        verdict = "the SLA missed at p95 with every stage near its prediction (queueing or overhead)"
    return {"host_bound": sorted(hb), "prediction_missed": missed, "verdict": verdict}


def _attain(lat, sla_ms) -> float | None:
    if not lat:
        return None
    if not sla_ms:
        return 1.0
    return round(sum(x <= sla_ms for x in lat) / len(lat), 4)


def _stage_lists(done) -> dict:
    d: dict[str, list] = {}
    for r in done:
        for op, ms in r.stages.items():
            d.setdefault(op, []).append(ms)
    return d


def format_summary(s: dict) -> str:
    lat = s["latency_ms"]

    def ms(v):
        return "-" if v is None else f"{v:.1f}"
    out = [f"requests {s['requests']}: completed {s['completed']}, failed {s['failed']}, "
           f"refused {s['refused']}, lost {s['lost']}",
           f"end-to-end latency ms: p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  p99 {ms(lat['p99'])}"
           + (f"  (predicted {s['predicted_end_to_end_ms']:.1f})"
              if s.get("predicted_end_to_end_ms") else ""),
           f"SLA {s['sla_ms']} ms attained by "
           + ("-" if s["sla_attainment"] is None else f"{s['sla_attainment']:.1%}")
           + " of completed; throughput "
           + ("-" if s["throughput_rps"] is None else f"{s['throughput_rps']:.3f} req/s"),
           "emulated: " + (", ".join(s["emulated"]) or "none")]
    if s.get("compiled"):
        out.append("compiled: " + ", ".join(f"{op} ({how})" for op, how in s["compiled"].items()))
    if s["per_stage_ms"]:
        rows = [("stage", "p50", "p95", "p99", "predicted", "n")]
        for op, v in s["per_stage_ms"].items():
            rows.append((op, ms(v["p50"]), ms(v["p95"]), ms(v["p99"]), ms(v["predicted_ms"]),
                         str(v["n"])))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out += ["  " + "  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows]
    emu = s.get("emulation") or {}
    if emu.get("why"):
        out.append("emulation: " + emu["why"])
    if s.get("host_bound"):
        out.append("host-bound (the stand-in, not the plan, set the pace): " + ", ".join(s["host_bound"]))
    if s.get("diagnosis"):
        if s["diagnosis"]["prediction_missed"]:
            out.append("slower than predicted (their own service time): "
                       + ", ".join(s["diagnosis"]["prediction_missed"]))
        out.append("verdict: " + s["diagnosis"]["verdict"])
    if s.get("errors"):
        out.append("errors: " + "; ".join(s["errors"]))
    return "\n".join(out)
