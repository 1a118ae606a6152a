"""Admission by deadline from what the pools measure as they run.

The ingress asks, for each new request, when it would finish if admitted now, and refuses it at once
(HTTP 429) when that is past its deadline. The estimate uses nothing but what is known at that moment:

- `service_ms[op]`: the time one call of the operator holds its pool (queueing excluded), an
  exponentially weighted mean of what replicas report (seeded by the plan's prediction);
- `cpu_ms[op]`: the host CPU time one call costs (the replica process and its engine process), so a
  host whose cores every pool shares is a resource of its own (seeded by the prediction for operators
  on a real CPU, 0 for emulated ones until their stand-in is measured);
- `overhead_ms[unit]`: what a call to the pool costs beyond its service time (the handle's hop there
  and back), measured on calls that found a free slot;
- the work still ahead: every admitted request's remaining calls, known exactly because a request's
  loop iterations and branch arms are drawn when it arrives.

What this model leaves out (other processes on the host, a slot's dispatch jitter) is measured too:
`correction` is the ratio of completed requests' latency to the estimate they were admitted with,
learnt fast when requests run slower than estimated and forgotten slowly (exponential means with
weights 0.3 up, 0.1 down, within 0.5-4), and multiplies every estimate. How widely requests scatter
around their corrected estimate is measured too: `spread` is the 95th percentile of the last 50
completed requests' ratios over their median (1 until 8 have completed). On a host where work
contends for the cores, one request runs 30 % over its estimate while the next runs on time, and a
limit that holds the mean would let the tail past the SLA.

For a request x: its own path L0 is the longest path through its active operators at the measured
service times plus each call's overhead; the wait W is the longest backlog among the resources it
uses: a pool's remaining calls times (service + overhead: a slot turns over when the answer is back
and the next call dispatched) over its slots (replicas x concurrent calls per replica), less the time
x takes to reach the pool on its own path (the pool drains while x travels to it: the text-to-speech
pool at the end of a voice agent's path is not a wait for a request that has not been transcribed),
and a host's remaining CPU work over its cores.
Its estimated finish is L0 + W.

A request with an explicit deadline (`deadline_ms`) is refused when L0 + W exceeds it (a deadline of 1 ms
is refused at once). A request without one is held to the SLA: refused when L0 + W exceeds
min(`target`, 1 / spread) x SLA, unless the wait is within `tolerance` x SLA (a request whose own path
is longer than the SLA is not refused on an idle system: the SLA is a percentile, and refusing it would
help no one).
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Estimate:
    latency_ms: float            # L0: the request's own path at the measured service times
    wait_ms: float               # W: the longest backlog ahead of it
    bottleneck: str | None       # the pool or host of that backlog
    correction: float = 1.0      # measured latency / estimate of recent requests

    @property
    def finish_ms(self) -> float:
        return (self.latency_ms + self.wait_ms) * self.correction


@dataclass
class Decision:
    admit: bool
    estimate: Estimate
    reason: str = ""


CORRECTION_UP, CORRECTION_DOWN = 0.3, 0.1
CORRECTION_RANGE = (0.5, 4.0)
SPREAD_WINDOW, SPREAD_MIN, SPREAD_PERCENTILE = 50, 8, 95


class Admission:
    """Thread-safe bookkeeping of admitted work and measured service; `decide` is the policy."""

    def __init__(self, graph, unit_of: dict[str, str], slots: dict[str, int], *, cpu_real: set[str],
                 cores: int, target: float = 0.9, tolerance: float = 0.1, alpha: float = 0.3,
                 enabled: bool = True):
        self.graph = graph
        self.unit_of = dict(unit_of)             # operator -> the unit (deployment) that serves it
        self.slots = {u: max(1, int(n)) for u, n in slots.items()}
        self.target, self.tolerance, self.alpha = target, tolerance, alpha
        self.enabled = enabled
        self.service_ms = {n: max(0.0, op.service_ms) for n, op in graph.operators.items()}
        # CPU work per call: a real CPU operator keeps about one core busy for its service time until
        # measured; an emulated one costs what its stand-in measures (nothing known yet)
        self.cpu_ms = {n: (op.service_ms if n in cpu_real else 0.0)
                       for n, op in graph.operators.items()}
        self.overhead_ms: dict[str, float] = {}
        self.host_of: dict[str, str] = {u: "local" for u in self.slots}
        self.cores: dict[str, int] = {"local": max(1, int(cores))}
        self.pending: dict[str, Counter] = {}
        self.correction = 1.0
        self.ratios: deque = deque(maxlen=SPREAD_WINDOW)    # latency / estimate of completed requests
        self._spread = 1.0                                   # of `ratios`, from SPREAD_MIN of them on
        self.lock = threading.Lock()

    # -- bookkeeping -----------------------------------------------------------------------------
    def set_routes(self, unit_of: dict[str, str], slots: dict[str, int]) -> None:
        with self.lock:
            self.unit_of = dict(unit_of)
            for u, n in slots.items():
                self.slots[u] = max(1, int(n))
                self.host_of.setdefault(u, "local")

    def calls(self, active: set[str]) -> Counter:
        """The calls a request with these active operators makes, one per operator with a pool."""
        return Counter(n for n in active if n in self.unit_of)

    def admit(self, rid: str, active: set[str]) -> None:
        with self.lock:
            self.pending[rid] = self.calls(active)

    def done(self, rid: str, op: str) -> None:
        with self.lock:
            c = self.pending.get(rid)
            if c is not None and c.get(op, 0) > 0:
                c[op] -= 1

    def release(self, rid: str) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def observe_latency(self, latency_ms: float, estimated_ms: float) -> None:
        """A completed request's latency against the finish it was admitted with (uncorrected)."""
        if estimated_ms <= 0:
            return
        r = min(CORRECTION_RANGE[1], max(CORRECTION_RANGE[0], latency_ms / estimated_ms))
        with self.lock:
            a = CORRECTION_UP if r > self.correction else CORRECTION_DOWN
            self.correction = (1 - a) * self.correction + a * r
            self.ratios.append(r)
            if len(self.ratios) >= SPREAD_MIN:     # once per completion, not per admission decision
                x = np.asarray(self.ratios)
                self._spread = max(1.0, float(np.percentile(x, SPREAD_PERCENTILE) / np.median(x)))

    def spread(self) -> float:
        """How far the slow requests run over the typical one, relative to their estimates (>= 1)."""
        return self._spread

    def observe_overhead(self, unit: str, ms: float) -> None:
        """A call's time at the ingress beyond its operators' service, on a call that did not queue."""
        a = self.alpha
        with self.lock:
            self.overhead_ms[unit] = (1 - a) * self.overhead_ms.get(unit, ms) + a * max(0.0, ms)

    def observe(self, op: str, unit: str, meta: dict) -> None:
        """A replica's report of one call: service time, CPU time, where it ran."""
        a = self.alpha
        with self.lock:
            s = meta.get("service_ms")
            if s is not None:
                self.service_ms[op] = (1 - a) * self.service_ms.get(op, s) + a * float(s)
            c = meta.get("cpu_ms")
            if c is not None:
                self.cpu_ms[op] = (1 - a) * self.cpu_ms.get(op, c) + a * float(c)
            node, cores = meta.get("node"), meta.get("cores")
            if node:
                self.host_of[unit] = node
                if cores:
                    self.cores[node] = max(1, int(cores))

    # -- the estimate ------------------------------------------------------------------------------
    def _path_ms(self, active: set[str]) -> tuple[float, dict[str, float]]:
        """The request's own path, and when it first reaches each pool it calls."""
        g = self.graph
        finish: dict[str, float] = {}
        reach: dict[str, float] = {}
        for n in g.order:
            start = max((finish[p] for p in g.preds[n]), default=0.0)
            own = 0.0
            if n in active and n in self.unit_of:
                u = self.unit_of[n]
                own = self.service_ms.get(n, 0.0) + self.overhead_ms.get(u, 0.0)
                reach[u] = min(reach.get(u, start), start)
            finish[n] = start + own
        return max(finish.values(), default=0.0), reach

    def backlog(self) -> dict[str, float]:
        """ms of work ahead per pool (over its slots) and per host (over its cores)."""
        with self.lock:
            unit_ms: dict[str, float] = {}
            host_ms: dict[str, float] = {}
            for c in self.pending.values():
                for op, k in c.items():
                    if k <= 0:
                        continue
                    u = self.unit_of.get(op)
                    if u is None:
                        continue
                    # a slot turns over in the service time plus the hop back and the next dispatch
                    cycle = self.service_ms.get(op, 0.0) + self.overhead_ms.get(u, 0.0)
                    unit_ms[u] = unit_ms.get(u, 0.0) + k * cycle
                    h = self.host_of.get(u, "local")
                    host_ms[h] = host_ms.get(h, 0.0) + k * self.cpu_ms.get(op, 0.0)
            out = {u: ms / self.slots.get(u, 1) for u, ms in unit_ms.items()}
            out.update({f"host:{h}": ms / self.cores.get(h, 1) for h, ms in host_ms.items()})
            return out

    def estimate(self, active: set[str]) -> Estimate:
        with self.lock:
            path, reach = self._path_ms(active)
            corr = self.correction
        hosts = {f"host:{self.host_of.get(u, 'local')}" for u in reach}
        wait, worst = 0.0, None
        for name, ms in self.backlog().items():
            if name in reach:
                ms -= reach[name]
            elif name not in hosts:
                continue
            if ms > wait:
                wait, worst = ms, name
        return Estimate(path, wait, worst, corr)

    def decide(self, active: set[str], *, deadline_ms: float | None, sla_ms: float | None) -> Decision:
        est = self.estimate(active)
        if not self.enabled:
            return Decision(True, est)
        where = f" (queue at {est.bottleneck})" if est.bottleneck else ""
        if est.correction != 1.0:
            where += f", x{est.correction:.2f} as recent requests ran"
        if deadline_ms is not None:
            if est.finish_ms > deadline_ms:
                return Decision(False, est, f"cannot meet its deadline of {deadline_ms:.0f} ms: "
                                f"estimated {est.finish_ms:.0f} ms ({est.latency_ms:.0f} ms of "
                                f"service + {est.wait_ms:.0f} ms of waiting{where})")
            return Decision(True, est)
        if not sla_ms:
            return Decision(True, est)
        target = min(self.target, 1.0 / self.spread())
        limit = max(target * sla_ms, est.latency_ms * est.correction + self.tolerance * sla_ms)
        if est.finish_ms > limit:
            held = f" (held to {target:.2f} x: recent requests scatter that far)" \
                if target < self.target else ""
            return Decision(False, est, f"over capacity: estimated {est.finish_ms:.0f} ms "
                            f"({est.latency_ms:.0f} ms of service + {est.wait_ms:.0f} ms of "
                            f"waiting{where}) against the SLA of {sla_ms:.0f} ms{held}")
        return Decision(True, est)

    def snapshot(self) -> dict:
        """For /metrics and /health: measured service per operator, backlog per pool and host."""
        with self.lock:
            svc = dict(self.service_ms)
            cpu = dict(self.cpu_ms)
            inflight = len(self.pending)
        return {"service_ms": svc, "cpu_ms": cpu, "backlog_ms": self.backlog(), "admitted": inflight,
                "correction": self.correction, "spread": self.spread()}
