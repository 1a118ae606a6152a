"""The slow path: re-plan when the measured load or the fleet drifts from the plan, with a penalty on
change, and resize pools. Advisory mode prints the proposed change without applying it. A plan is
applied make-before-break (hetagent.runtime.deploy.Deployment.apply): its new pools run before the
ingress switches to them, and only then are the old ones removed.

Triggers, checked every `interval_s` over the last `window_s` of requests:
- fleet: a device the plan uses is no longer advertised by any live Ray node (a node or a device
  pool lost) -> re-plan on what remains (an owned fleet of the devices still alive);
- rate: the measured arrival rate differs from the planned rate by more than `drift` (relative)
  -> re-plan at the measured rate;
- latency: a stage's measured median exceeds its prediction by more than `drift` and the end-to-end
  p95 misses the SLA -> one more replica for that stage's pool (Serve's in-place scale-up, no solve).

Change penalty: a candidate plan replaces the current one only if its TCO per hour, inflated by
`change_penalty` per changed placement (as a fraction of the operators), beats the current plan's
by more than `change_penalty`, or the current plan is no longer feasible (a lost device, a rate it
cannot carry). A plan abandoned in the last `cooldown_s` is never re-adopted, so the runtime cannot
flap between two plans.
"""
from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from hetagent.errors import HetagentError


def _signature(plan) -> tuple:
    return tuple(sorted((p.operator, p.device, p.tp, p.batch, p.replicas) for p in plan.placements))


def changed_placements(a, b) -> int:
    pa = {p.operator: (p.device, p.tp, p.batch, p.replicas) for p in a.placements}
    pb = {p.operator: (p.device, p.tp, p.batch, p.replicas) for p in b.placements}
    return sum(pa.get(k) != v for k, v in pb.items()) + sum(k not in pb for k in pa)


def remaining_fleet_yaml(plan, alive: dict[str, float]) -> str:
    """An owned fleet of the devices still alive (counts from the cluster), extra devices kept."""
    extra = []
    rec = (plan.inputs or {}).get("fleet") or {}
    if rec.get("text"):
        try:
            extra = (yaml.safe_load(rec["text"]) or {}).get("extra_devices") or []
        except yaml.YAMLError:
            extra = []
    devs = [{"id": d, "owned": max(1, int(n)), "max_count": max(1, int(n))}
            for d, n in sorted(alive.items()) if n >= 1]
    if not devs:
        raise HetagentError("no device is left in the cluster to re-plan on")
    doc = {"name": "remaining", "mode": "owned",
           "catalog": (plan.inputs or {}).get("catalog") or "default", "devices": devs}
    if extra:
        doc["extra_devices"] = [e for e in extra if e.get("id") in alive]
    return yaml.safe_dump(doc, sort_keys=False)


def solve_again(plan, *, rate: float | None = None, alive: dict[str, float] | None = None):
    """The plan's workflows placed again at `rate` on the devices `alive` (None: the same fleet)."""
    from hetagent.placement.pipeline import plan_sources
    from hetagent.placement.plan import embedded_workflow
    inputs = plan.inputs or {}
    wfs = [embedded_workflow(rec) for rec in inputs.get("workflows") or []]
    kw = dict(tco=_tco_arg(inputs), sla_ms=inputs.get("sla_ms"),
              rate=rate if rate is not None else inputs.get("rate"))
    if inputs.get("precisions"):
        kw["precisions"] = tuple(inputs["precisions"])
    with tempfile.TemporaryDirectory(prefix="hetagent-replan-") as tmp:
        fleet = None
        if alive is not None:
            f = Path(tmp) / "remaining.yaml"
            f.write_text(remaining_fleet_yaml(plan, alive))
            fleet = str(f)
        else:
            fleet = _fleet_arg(inputs, tmp)
        return plan_sources(wfs if len(wfs) > 1 else wfs[0], fleet=fleet, **kw)


def _tco_arg(inputs):
    rec = inputs.get("tco") or {}
    return rec.get("name") or "default"


def _fleet_arg(inputs, tmp):
    rec = inputs.get("fleet") or {}
    if rec.get("text"):
        f = Path(tmp) / "fleet.yaml"
        f.write_text(rec["text"])
        return str(f)
    return rec.get("name")


class Replanner:
    def __init__(self, rt, *, advisory: bool = False, interval_s: float = 5.0, window_s: float = 20.0,
                 drift: float = 0.5, change_penalty: float = 0.1, cooldown_s: float = 60.0,
                 min_requests: int = 5, out=None, solver=None):
        self.rt = rt
        self.advisory = advisory
        self.interval_s, self.window_s, self.drift = interval_s, window_s, drift
        self.change_penalty, self.cooldown_s, self.min_requests = change_penalty, cooldown_s, min_requests
        self.out = out or sys.stderr
        self.solver = solver or solve_again
        self.plan = _as_plan(rt.plan)
        self.abandoned: dict[tuple, float] = {}
        self.events: list[dict] = []
        self._stop = threading.Event()
        self.thread = None
        self.lock = threading.Lock()

    def start(self) -> "Replanner":
        self.thread = threading.Thread(target=self._loop, daemon=True, name="hetagent-replan")
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.thread:
            self.thread.join(timeout=10)

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the slow path never takes the service down
                self._event("error", error=str(e).splitlines()[0] if str(e) else type(e).__name__)

    def _event(self, kind: str, **kw) -> dict:
        ev = {"t": round(time.time(), 3), "event": kind, "advisory": self.advisory, **kw}
        self.events.append(ev)
        msg = " ".join(f"{k}={v}" for k, v in kw.items())
        print(f"hetagent replan: {kind}{' (advisory)' if self.advisory else ''}: {msg}",
              file=self.out, flush=True)
        return ev

    # -- one check -----------------------------------------------------------------------------
    def check(self) -> dict | None:
        with self.lock:
            from hetagent.runtime.deploy import cluster_devices
            used = self.rt.devices_used()
            alive = cluster_devices()
            lost = sorted(d for d in used if alive.get(d, 0) < 1)
            if lost:
                return self._replan(f"device(s) lost: {', '.join(lost)}", alive=alive, forced=True)
            rec = self.rt.recent(self.window_s)
            planned = self.rt.graph.rate_rps
            n = rec["completed"] + rec["refused"] + rec["failed"]
            if n >= self.min_requests and planned > 0 and \
                    abs(rec["rate"] - planned) / planned > self.drift:
                return self._replan(f"rate {rec['rate']:.3g}/s vs planned {planned:.3g}/s",
                                    rate=rec["rate"])
            return self._latency_drift(rec)

    def _latency_drift(self, rec) -> dict | None:
        sla = self.rt.sla_ms
        p95 = rec["latency_ms"].get("p95")
        if not sla or p95 is None or p95 <= sla or rec["completed"] < self.min_requests:
            return None
        g = self.rt.graph
        worst, ratio = None, 1 + self.drift
        for op, ms in rec["stages"].items():
            pred = g.operators[op].service_ms if op in g.operators else 0
            if pred > 1 and ms / pred > ratio:
                worst, ratio = op, ms / pred
        if worst is None:
            return None
        key = self.rt.unit_of(worst)
        if key is None:
            return None
        n = self.rt.replicas(key) + 1
        ev = self._event("resize", stage=worst, measured_over_predicted=round(ratio, 2),
                         pool=key, replicas=n)
        if not self.advisory:
            self.rt.resize(key, n)
        return ev

    def _replan(self, reason: str, *, rate=None, alive=None, forced=False) -> dict | None:
        try:
            new = self.solver(self.plan, rate=rate, alive=alive)
        except HetagentError as e:
            return self._event("replan-infeasible", reason=reason, error=str(e).splitlines()[0])
        now = time.time()
        sig = _signature(new)
        if sig == _signature(self.plan):
            return None
        if not forced and now - self.abandoned.get(sig, -1e18) < self.cooldown_s:
            return None                                  # no flapping back
        changes = changed_placements(self.plan, new)
        frac = changes / max(1, len(new.placements))
        cur, cand = float(self.plan.tco.get("per_hour") or 0), float(new.tco.get("per_hour") or 0)
        cur_ok = bool(self.plan.predicted.get("meets_sla", True)) and rate is None
        if not forced and cur_ok and cand * (1 + self.change_penalty * frac) \
                >= cur * (1 - self.change_penalty):
            return None
        ev = self._event("replan", reason=reason, changed_placements=changes,
                         fleet=new.fleet, per_hour=round(cand, 6), was_per_hour=round(cur, 6))
        if not self.advisory:
            applied = self.rt.apply(new)
            self.abandoned[_signature(self.plan)] = now
            self.plan = new
            ev["applied"] = applied
        return ev


def _as_plan(p):
    from hetagent.placement.plan import load_plan
    return load_plan(p)