"""Distributions where a workflow has numbers: token counts, tool latencies, loop iterations.

A workflow field that takes a distribution accepts one of

    prompt_tokens: 6000                                   # a number: every execution the same
    prompt_tokens: {mean: 6000, p50: 5200, p95: 11000, p99: 15000}   # a mean and any of the percentiles
    prompt_tokens: {histogram: [[2000, 3], [6000, 5], [12000, 2]]}   # values with weights

and every form becomes one `Dist`: a piecewise-linear quantile function Q(u), u in [0, 1], as knots
(u, Q(u)). That one form is what the IR carries (a flat array [u0, q0, u1, q1, ...]), what the simulator
samples (inverse transform: Q(U), U uniform) and what the planner reads (its mean).

- A histogram is a step quantile function: value v_i for u in (c_(i-1), c_i], c the cumulative weights. Its
  mean is the weighted mean of the values, exactly.
- {mean, p50, p95, p99}: the given percentiles are knots; between them the logarithm of the value is linear
  in z = Phi^-1(u) (so a lognormal's percentiles give back that lognormal), below the first the first
  segment's slope continues, and the upper tail's slope is the one that makes the mean the given one
  (bisection; a mean too low for any upper tail steepens the lower tail instead, and one too low even
  then is an error naming the least mean these percentiles allow). The function is tabulated at 33
  points of z in [-4, 4] and the given percentiles. A mean alone is a constant.

The planner uses means (throughput and cost are linear in sizes); percentiles of the end-to-end latency
come from simulation, which samples these distributions, never from summing per-node percentiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
FORM = ("a number, {mean, p50, p95, p99} (mean required, percentiles optional) or "
        "{histogram: [[value, weight], ...]}")


@dataclass(frozen=True)
class Dist:
    """A piecewise-linear quantile function: knots (u, q), u from 0 to 1, both non-decreasing."""
    u: tuple
    q: tuple
    source: object = field(default=None, compare=False)    # as written in the workflow (number or mapping)

    @property
    def mean(self) -> float:
        u, q = self.u, self.q
        return float(sum((u[i + 1] - u[i]) * (q[i] + q[i + 1]) / 2.0 for i in range(len(u) - 1)))

    @property
    def low(self) -> float:
        return float(self.q[0])

    @property
    def high(self) -> float:
        return float(self.q[-1])

    @property
    def constant(self) -> bool:
        return self.q[0] == self.q[-1]

    def quantile(self, p):
        """Q(p) for p in [0, 1] (a number or an array)."""
        us, qs = np.asarray(self.u, dtype=float), np.asarray(self.q, dtype=float)
        x = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
        j = np.clip(np.searchsorted(us, x, side="right") - 1, 0, len(us) - 2)
        w = us[j + 1] - us[j]
        frac = np.where(w > 0, (x - us[j]) / np.where(w > 0, w, 1.0), 1.0)
        out = qs[j] + frac * (qs[j + 1] - qs[j])
        return float(out) if np.ndim(out) == 0 else out

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.quantile(rng.random(n))

    def shifted(self, by: float) -> "Dist":
        return Dist(self.u, tuple(v + by for v in self.q), None)

    def scaled(self, by: float) -> "Dist":
        return Dist(self.u, tuple(v * by for v in self.q), None)

    def to_attr(self) -> list[float]:
        """The flat array the IR carries: [u0, q0, u1, q1, ...]."""
        return [float(x) for pair in zip(self.u, self.q) for x in pair]

    def describe(self) -> str:
        return (f"mean {self.mean:.4g}, p50 {self.quantile(0.5):.4g}, p95 {self.quantile(0.95):.4g}, "
                f"p99 {self.quantile(0.99):.4g}")


def from_attr(values) -> Dist:
    """The Dist of an IR array attribute [u0, q0, u1, q1, ...]."""
    v = [float(x) for x in values]
    if len(v) < 4 or len(v) % 2:
        raise ValueError(f"a distribution attribute needs pairs (u, q), at least two; got {len(v)} numbers")
    return Dist(tuple(v[0::2]), tuple(v[1::2]))


def constant(x: float) -> Dist:
    return Dist((0.0, 1.0), (float(x), float(x)), x)


def mean_of(x) -> float:
    """The mean of a field that may hold a number or a Dist."""
    return x.mean if isinstance(x, Dist) else float(x)


def parse(value, *, integer: bool = False, minimum: float = 0.0, maximum: float = math.inf,
          dist_maximum: float | None = None):
    """A field's value as written -> a number (kept as is) or a Dist. Raises ValueError saying what is
    wrong (the loader adds file, line and field). A number stays within [minimum, maximum]; a
    distribution's largest value within `dist_maximum` (default: `maximum`)."""
    out = _parse(value, integer, minimum)
    top = maximum if dist_maximum is None or not isinstance(out, Dist) else dist_maximum
    high = out.high if isinstance(out, Dist) else out
    if high > top:
        raise ValueError(("the value" if not isinstance(out, Dist) else f"the distribution reaches {high:g}; it")
                         + f" must be less than or equal to {top:g}")
    return out


def _parse(value, integer: bool, minimum: float):
    if isinstance(value, bool):
        raise ValueError(f"expected {FORM}")
    if isinstance(value, (int, float)):
        if integer and isinstance(value, float) and not value.is_integer():
            raise ValueError("expected a whole number")
        _at_least(value, minimum, "the value")
        return int(value) if integer else value
    if not isinstance(value, dict):
        raise ValueError(f"expected {FORM}")
    keys = set(value)
    if "histogram" in keys:
        if keys != {"histogram"}:
            raise ValueError(f"a histogram stands alone; also given: {', '.join(sorted(keys - {'histogram'}))}")
        return _histogram(value["histogram"], minimum, value)
    allowed = {"mean"} | {k for k, _ in PERCENTILES}
    extra = keys - allowed
    if extra:
        raise ValueError(f"unknown key '{sorted(extra)[0]}'; expected {FORM}")
    if "mean" not in keys:
        raise ValueError("a distribution by percentiles needs its `mean` (the planner sizes hardware by it)")
    m = _number(value["mean"], "mean")
    _at_least(m, minimum, "mean")
    knots = []
    for k, p in PERCENTILES:
        if k in value:
            x = _number(value[k], k)
            _at_least(x, minimum, k)
            if knots and x < knots[-1][1]:
                raise ValueError(f"{k} {x:g} is below {knots[-1][2]} {knots[-1][1]:g}: percentiles cannot fall")
            knots.append((p, x, k))
    if not knots:
        return Dist((0.0, 1.0), (m, m), value)
    return _fit(m, [(p, x) for p, x, _ in knots], minimum, value)


def _number(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise ValueError(f"{what} must be a number; got {x!r}")
    return float(x)


def _at_least(x, minimum, what):
    if x < minimum:
        raise ValueError(f"{what} must be greater than or equal to {minimum:g}"
                         + ("" if what == "the value" else f"; got {x:g}"))


def _histogram(rows, minimum, source) -> Dist:
    if not isinstance(rows, list) or not rows:
        raise ValueError("histogram: a non-empty list of [value, weight] pairs")
    acc: dict = {}
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            raise ValueError(f"histogram entry {i}: a [value, weight] pair; got {row!r}")
        v, w = _number(row[0], f"histogram entry {i} value"), _number(row[1], f"histogram entry {i} weight")
        _at_least(v, minimum, f"histogram entry {i} value")
        if w < 0:
            raise ValueError(f"histogram entry {i}: weight must be >= 0; got {w:g}")
        acc[v] = acc.get(v, 0.0) + w
    total = sum(acc.values())
    if total <= 0:
        raise ValueError("histogram: the weights sum to 0")
    vals = [(v, w / total) for v, w in sorted(acc.items()) if w > 0]
    us, qs, c = [0.0], [vals[0][0]], 0.0
    for i, (v, w) in enumerate(vals):
        c = 1.0 if i == len(vals) - 1 else c + w
        if i > 0:                     # a jump to the next value
            us.append(us[-1])
            qs.append(v)
        us.append(c)
        qs.append(v)
    return Dist(tuple(us), tuple(qs), source)


Z_GRID = 4.0          # the quantile function is tabulated for z = Phi^-1(u) in [-Z_GRID, Z_GRID] ...
Z_STEPS = 33          # ... at this many evenly spaced z, plus the given percentiles and u = 0 and 1
MAX_SLOPE = 12.0      # steepest tail tried (log-value per standard deviation) when matching the mean


def _fit(m: float, knots: list, minimum: float, source) -> Dist:
    """The quantile function through the percentile knots whose mean is m: log-linear in z = Phi^-1(u)
    between the knots (a lognormal is a straight line there), extrapolated below the first knot with the
    first segment's slope (with one percentile, the upper tail's) and above the last with the slope that
    makes the tabulated function's mean m, found by bisection. A mean too low for any upper tail first
    steepens the lower tail (values nearer 0); too low even then is an error naming the least mean."""
    from scipy.special import ndtr, ndtri
    zs = [float(ndtri(p)) for p, _ in knots]
    ys = [math.log(max(x, 1e-9)) for _, x in knots]
    grid = sorted(set(np.round(np.linspace(-Z_GRID, Z_GRID, Z_STEPS), 12).tolist()) | set(zs))
    zg = np.asarray(grid)
    ug = np.concatenate([[0.0], ndtr(zg), [1.0]])
    for (p, _), z in zip(knots, zs):          # the given percentiles are knots exactly
        ug[1 + grid.index(z)] = p
    first = (ys[1] - ys[0]) / (zs[1] - zs[0]) if len(zs) > 1 else None

    def table(s_lo, s_hi):
        z = np.concatenate([[-Z_GRID - 1.0], zg, [Z_GRID + 1.0]])
        y = np.interp(z, zs, ys)
        y = np.where(z < zs[0], ys[0] + s_lo * (z - zs[0]), y)
        y = np.where(z > zs[-1], ys[-1] + s_hi * (z - zs[-1]), y)
        q = np.exp(y)
        if minimum > 0:
            q = np.maximum(q, minimum)
        return q

    def mean_of_table(q):
        return float(np.sum(np.diff(ug) * (q[1:] + q[:-1]) / 2.0))

    def solve(f, lo, hi):
        for _ in range(80):
            mid = (lo + hi) / 2.0
            if f(mid) < m:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2.0

    lo_slope = (lambda s: s) if first is None else (lambda s: max(first, 0.0))
    if mean_of_table(table(lo_slope(0.0), 0.0)) <= m:
        if mean_of_table(table(lo_slope(MAX_SLOPE), MAX_SLOPE)) < m:
            raise ValueError(f"mean {m:g} is above what these percentiles allow with any tail (at most "
                             f"{mean_of_table(table(lo_slope(MAX_SLOPE), MAX_SLOPE)):.6g})")
        s_hi = solve(lambda s: mean_of_table(table(lo_slope(s), s)), 0.0, MAX_SLOPE)
        q = table(lo_slope(s_hi), s_hi)
    else:                                       # lighter than a flat upper tail: steepen the lower one
        least = mean_of_table(table(1e6, 0.0))
        if least > m:
            raise ValueError(f"mean {m:g} is below what these percentiles allow (at least {least:.6g})")
        s_lo = solve(lambda s: -mean_of_table(table(s, 0.0)) + 2 * m, max(first or 0.0, 0.0), 1e6)
        q = table(s_lo, 0.0)
    q = np.maximum.accumulate(q)
    q = q * (m / mean_of_table(q))              # bisection's last ulp: the mean is exact
    for (p, x), z in zip(knots, zs):
        q[1 + grid.index(z)] = x
    return Dist(tuple(float(v) for v in ug), tuple(float(v) for v in q), source)


def count_reach(d: Dist, most: int, grid: int = 20000) -> list[float]:
    """P(K >= k), k = 1 .. most, of an iteration count K drawn from d: K = floor(X) + Bernoulli(frac(X)),
    X = Q(U), so E[K] = E[X] exactly; clipped to [1, most]. A histogram of whole numbers gives its own
    counts exactly. Entries stop where the distribution does (at most ceil of its largest value)."""
    most = max(1, min(most, math.ceil(d.high)))
    if _integral(d):
        return [1.0] + [float(min(1.0, _mass_at_least(d, k))) for k in range(2, most + 1)]
    u = (np.arange(grid) + 0.5) / grid
    x = np.clip(d.quantile(u), 1.0, float(most))
    lo = np.floor(x)
    frac = x - lo
    return [1.0] + [float(min(1.0, np.mean(np.where(lo >= k, 1.0, np.where(lo == k - 1, frac, 0.0)))))
                    for k in range(2, most + 1)]


def _integral(d: Dist) -> bool:
    return all(float(q).is_integer() for q in d.q) and all(
        d.q[i] == d.q[i + 1] or d.u[i] == d.u[i + 1] for i in range(len(d.u) - 1))


def _mass_at_least(d: Dist, k: int) -> float:
    return sum(d.u[i + 1] - d.u[i] for i in range(len(d.u) - 1) if d.q[i] == d.q[i + 1] and d.q[i] >= k)


def summarize(values, max_bins: int = 16) -> dict:
    """A histogram of observed values (importers): every distinct value with its count, or, with more than
    `max_bins` distinct values, `max_bins` groups of equal count, each at its group's mean (the mean of the
    whole is kept exactly)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("no values")
    distinct: dict = {}
    for x in xs:
        distinct[x] = distinct.get(x, 0) + 1
    if len(distinct) <= max_bins:
        rows = [[_tidy(v), c] for v, c in distinct.items()]
    else:
        groups = np.array_split(np.asarray(xs), max_bins)
        rows = [[_tidy(float(g.mean())), int(g.size)] for g in groups if g.size]
    return {"histogram": rows}


def _tidy(v: float):
    return int(v) if float(v).is_integer() else round(v, 3)
