"""Request arrivals for the simulator: trace readers and synthetic arrival processes.

Traces (`read_trace(path)`, format detected from the content):
- Azure LLM inference trace 2023 (CSV, optionally .gz): header `TIMESTAMP,ContextTokens,GeneratedTokens`,
  TIMESTAMP a wall-clock time `2023-11-16 18:17:03.9799600` (or seconds as a number).
- Mooncake FAST'25 traces (JSON lines): `{"timestamp": ms, "input_length": n, "output_length": n,
  "hash_ids": [...]}`; hash_ids (prefix-cache blocks) are read and ignored.
Either gives arrival times in seconds from the first request, and per request the prompt and output token
counts (the simulator applies them to the workflow's main LLM call).

Synthetic processes (`arrivals(process, rate, duration_s, rng, ...)`), all with mean rate `rate` per second:
- `poisson`: exponential inter-arrival times, mean 1/rate (coefficient of variation 1).
- `gamma`: gamma inter-arrival times with mean 1/rate and coefficient of variation `cv` (shape 1/cv^2,
  scale cv^2/rate); cv > 1 is burstier than Poisson, cv < 1 smoother.
- `bursty`: a two-state Markov-modulated Poisson process (MMPP-2). The process alternates between a calm
  and a burst state with exponential sojourn times; the burst state lasts `burst_s` seconds on average
  and occupies a fraction `burst_fraction` of the time; its rate is `burst_factor` times the calm rate.
  The calm rate is rate / (1 - f + f x factor), so the long-run mean is `rate`.
Everything is drawn from the numpy Generator given, so a seed fixes the arrivals.
"""
from __future__ import annotations

import gzip
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from hetagent.errors import InputError

PROCESSES = ("poisson", "gamma", "bursty")


@dataclass
class Trace:
    """Arrival times (seconds from the first request, sorted) and per-request token counts."""
    times_s: np.ndarray
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    source: str = ""
    format: str = ""

    def __len__(self) -> int:
        return len(self.times_s)

    @property
    def rate(self) -> float:
        """Mean arrivals per second over the trace's span."""
        n = len(self.times_s)
        span = float(self.times_s[-1] - self.times_s[0]) if n > 1 else 0.0
        return (n - 1) / span if span > 0 else float(n)

    def window(self, duration_s: float | None) -> Trace:
        if duration_s is None:
            return self
        keep = self.times_s < duration_s
        return Trace(self.times_s[keep], _cut(self.prompt_tokens, keep), _cut(self.output_tokens, keep),
                     self.source, self.format)

    def scaled_to(self, rate: float) -> Trace:
        """The same requests with time compressed or stretched so that the mean rate is `rate`."""
        if rate <= 0:
            raise InputError(f"rate must be positive, got {rate:g}")
        f = self.rate / rate
        return Trace(self.times_s * f, self.prompt_tokens, self.output_tokens, self.source, self.format)


def _cut(a, keep):
    return None if a is None else a[keep]


def _open_text(path: Path):
    """The trace's text: the file size limit of hetagent.guarded, and the same limit on what a gzip file
    expands to (read no further: a small archive may expand without bound)."""
    from hetagent.guarded import LIMITS
    limit = LIMITS["trace"]
    size = path.stat().st_size
    if size > limit:
        raise InputError(f"trace file is {size} bytes; the limit is {limit}", file=str(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
                raw = f.read(limit + 1)
        except (OSError, EOFError) as e:
            raise InputError(f"not a readable gzip file: {e}", file=str(path)) from None
        if len(raw) > limit:
            raise InputError(f"trace expands to more than {limit} bytes", file=str(path))
    return raw.decode("utf-8", errors="replace")


def read_trace(path: str | Path) -> Trace:
    """An Azure (CSV) or Mooncake (JSON lines) trace; the format is detected from the first line."""
    p = Path(path)
    if not p.is_file():
        raise InputError("trace file not found", file=str(path))
    text = _open_text(p)
    first = text.lstrip()[:1]
    if first == "{":
        return _mooncake(text, str(path))
    return _azure(text, str(path))


def _azure(text: str, file: str) -> Trace:
    import csv
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("empty trace", file=file) from None
    low = [h.lower() for h in header]
    try:
        it, ic, ig = low.index("timestamp"), low.index("contexttokens"), low.index("generatedtokens")
    except ValueError:
        raise InputError("not an Azure LLM trace: expected a header TIMESTAMP,ContextTokens,GeneratedTokens "
                         "(or a Mooncake JSON-lines trace)", file=file, line=1) from None
    ts, ctx, gen = [], [], []
    for lineno, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            ts.append(_timestamp(row[it]))
            ctx.append(_tokens(float(row[ic])))
            gen.append(_tokens(float(row[ig])))
        except (ValueError, IndexError, OverflowError):
            raise InputError(f"cannot read row {str(row)[:120]} (timestamp, then token counts from 0 to "
                             f"{MAX_TRACE_TOKENS})", file=file, line=lineno) from None
    return _finish(ts, ctx, gen, file, "azure")


MAX_TRACE_TOKENS = 10**9


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("not finite")
    return x


def _tokens(x) -> int:
    """A token count: a whole number (or a float holding one) from 0 to MAX_TRACE_TOKENS."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
            or not 0 <= x <= MAX_TRACE_TOKENS:
        raise ValueError(f"token count {x!r}")
    return int(x)


def _timestamp(s: str) -> float:
    s = s.strip()
    try:
        return _finite(float(s))
    except ValueError:
        if s.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            raise
        pass
    # '2023-11-16 18:17:03.9799600': 7 fractional digits; datetime takes at most 6
    if "." in s:
        head, frac = s.split(".", 1)
        return datetime.fromisoformat(head).timestamp() + float("0." + frac)
    return datetime.fromisoformat(s).timestamp()


def _mooncake(text: str, file: str) -> Trace:
    ts, ctx, gen = [], [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            ts.append(_finite(float(r["timestamp"]) / 1000.0))
            ctx.append(_tokens(r["input_length"]))
            gen.append(_tokens(r["output_length"]))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            raise InputError("not a Mooncake trace line: expected timestamp (ms), input_length, "
                             "output_length", file=file, line=lineno) from None
    return _finish(ts, ctx, gen, file, "mooncake")


def _finish(ts, ctx, gen, file, fmt) -> Trace:
    if not ts:
        raise InputError("the trace holds no requests", file=file)
    t = np.asarray(ts, dtype=float)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    c = np.maximum(np.asarray(ctx, dtype=np.int64)[order], 1)
    g = np.maximum(np.asarray(gen, dtype=np.int64)[order], 1)
    return Trace(t, c, g, file, fmt)


# ---------------------------------------------------------------------------------------- processes
def poisson_arrivals(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    return _renewal(rate, duration_s, rng, lambda n: rng.exponential(1.0 / rate, n))


def gamma_arrivals(rate: float, duration_s: float, rng: np.random.Generator, cv: float = 2.0) -> np.ndarray:
    if cv <= 0:
        raise InputError(f"gamma arrivals: cv must be positive, got {cv:g}")
    shape = 1.0 / cv ** 2
    return _renewal(rate, duration_s, rng, lambda n: rng.gamma(shape, 1.0 / (rate * shape), n))


def _renewal(rate, duration_s, rng, draw) -> np.ndarray:
    _check(rate, duration_s)
    expected = rate * duration_s
    chunks, t0 = [], 0.0
    n = int(expected + 6 * np.sqrt(expected) + 16)
    while True:
        t = t0 + np.cumsum(draw(n))
        chunks.append(t)
        if t[-1] >= duration_s:
            break
        t0 = float(t[-1])
    t = np.concatenate(chunks)
    return t[t < duration_s]


def mmpp_arrivals(rate: float, duration_s: float, rng: np.random.Generator, burst_factor: float = 4.0,
                  burst_fraction: float = 0.1, burst_s: float = 10.0) -> np.ndarray:
    """Two-state MMPP with long-run mean `rate` (see the module docstring)."""
    _check(rate, duration_s)
    if burst_factor < 1 or not 0 < burst_fraction < 1 or burst_s <= 0:
        raise InputError("bursty arrivals: need burst_factor >= 1, 0 < burst_fraction < 1, burst_s > 0")
    calm_rate = rate / (1 - burst_fraction + burst_fraction * burst_factor)
    calm_s = burst_s * (1 - burst_fraction) / burst_fraction   # mean calm sojourn
    out, t, burst = [], 0.0, bool(rng.random() < burst_fraction)
    while t < duration_s:
        stay = rng.exponential(burst_s if burst else calm_s)
        end = min(t + stay, duration_s)
        lam = calm_rate * (burst_factor if burst else 1.0)
        k = rng.poisson(lam * (end - t))
        if k:
            out.append(np.sort(rng.uniform(t, end, k)))
        t, burst = end, not burst
    return np.concatenate(out) if out else np.zeros(0)


def arrivals(process: str, rate: float, duration_s: float, rng: np.random.Generator, *, cv: float = 2.0,
             burst_factor: float = 4.0, burst_fraction: float = 0.1, burst_s: float = 10.0) -> np.ndarray:
    """Arrival times in seconds in [0, duration_s) from one of PROCESSES."""
    if process == "poisson":
        return poisson_arrivals(rate, duration_s, rng)
    if process == "gamma":
        return gamma_arrivals(rate, duration_s, rng, cv)
    if process == "bursty":
        return mmpp_arrivals(rate, duration_s, rng, burst_factor, burst_fraction, burst_s)
    raise InputError(f"unknown arrival process '{process}'; choices: {', '.join(PROCESSES)}")


def _check(rate, duration_s):
    if not rate or rate <= 0:
        raise InputError(f"arrival rate must be positive, got {rate}")
    if duration_s <= 0:
        raise InputError(f"duration must be positive, got {duration_s:g} s")
