"""costmodel.serving: an engine at its load. Batches the load fills (Little's law), queueing (Erlang C),
co-located prefill + decode, CPUs time-shared, profiles as given."""
from __future__ import annotations

import math

import pytest

from hetagent.costmodel import serving
from hetagent.costmodel.serving import Member, engine_load, erlang_c, replica_candidates
from hetagent.costmodel.types import OpCost
from hetagent.ir.opgraph import Operator

GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def curve(f):
    """A cost curve whose latency at batch b is f(b) ms."""
    return tuple((b, OpCost(f(b), b * 1e3 / f(b), 1.0, 100, "compute")) for b in GRID)


def member(key, f, load, phase="other", out=1, prompt=0):
    op = Operator(str(key), "llm.decode" if phase == "decode" else "llm.prefill" if phase == "prefill"
                  else "embed.encode", {"output_tokens": out, "prompt_tokens": prompt})
    return Member(key, op, load, phase, curve(f))


def test_erlang_c_known_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)             # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(10, 0.1) < 1e-10 and erlang_c(3, 3.0) == 1.0


def test_compute_bound_engine_is_a_single_server_queue():
    """T(m) = m t1 (batching buys nothing): the birth-death engine is M/M/1, N = rho / (1 - rho); the
    latency keeps the deterministic service's wait (Pollaczek-Khinchine, M/D/1): T + rho T / (2 (1 - rho))."""
    t1, lam = 10.0, 50.0                                  # ms, per second: rho = 0.5
    got = engine_load([member("a", lambda b: b * t1, lam)], "single", 1)
    rho = lam * t1 / 1e3
    assert got.concurrency == pytest.approx(rho / (1 - rho), rel=1e-6)
    assert got.batch == 1
    assert got.latency_ms["a"] == pytest.approx(t1 + rho * t1 / (2 * (1 - rho)), rel=1e-6)
    assert got.utilization == pytest.approx(rho, rel=1e-6)


def test_birth_death_matches_a_direct_computation():
    """T(m) = 20 + 10 m ms at 50 requests/s: the stationary distribution summed by hand."""
    f, t1, lam = 20.0, 10.0, 50.0
    got = engine_load([member("a", lambda b: f + b * t1, lam)], "single", 1)
    p, norm, mean = 1.0, 1.0, 0.0
    for n in range(1, 257):
        p *= lam / (n / ((f + n * t1) / 1e3))
        norm += p
        mean += n * p
    mu = 256 / ((f + 256 * t1) / 1e3)          # beyond 256 slots the engine completes a full batch's rate
    q = lam / mu
    norm += p * q / (1 - q)
    mean += p * (256 * q / (1 - q) + q / (1 - q) ** 2)
    assert got.concurrency == pytest.approx(mean / norm, rel=1e-9)
    assert got.batch == math.ceil(mean / norm - 1e-9)


def test_overload_is_refused_with_a_reason():
    why = engine_load([member("a", lambda b: b * 30.0, 50.0)], "single", 1)    # rho = 1.5
    assert isinstance(why, str) and "cannot carry the load" in why
    loads, _ = replica_candidates([member("a", lambda b: 5.0 + b * 30.0, 50.0)], "single")
    assert loads[0].replicas == 2                         # the fewest that carry it (rho = 0.75 each)
    lat = [x.latency_ms["a"] for x in loads]
    assert lat == sorted(lat, reverse=True) and len(loads) <= serving.MAX_REPLICA_CANDIDATES


def test_queueing_beyond_the_slots():
    """One slot (an engine that serves one request at a time, llama.cpp on a CPU): beyond it requests
    wait in line; with deterministic service the M/D/1 wait rho T / (2 (1 - rho))."""
    one = OpCost(100.0, 10.0, 1.0, 100, "compute")
    got = engine_load([Member("a", Operator("a", "llm.decode", {"output_tokens": 1}), 6.0, "decode",
                              ((1, one),))], "decode", 1)
    assert got.max_batch == 1 and got.batch == 1            # 1.5 in the engine on average, one served
    assert got.concurrency == pytest.approx(0.6 / 0.4)
    assert got.wait_ms == pytest.approx(0.6 * 100.0 / (2 * 0.4))
    assert got.latency_ms["a"] == pytest.approx(100.0 + 75.0)


def test_colocated_decode_is_slowed_by_the_prefill_share():
    pre = member("p", lambda b: 40.0 * b, 5.0, "prefill", prompt=1000)        # 40 ms per prompt
    dec = member("d", lambda b: 300.0 + 1.0 * b, 5.0, "decode", out=100, prompt=1000)
    alone = engine_load([dec], "decode", 1)
    both = engine_load([pre, dec], "colocated", 1)
    rho_p = 5.0 * 0.040
    assert both.latency_ms["d"] > alone.latency_ms["d"] * (1 / (1 - rho_p)) * 0.99
    assert both.latency_ms["p"] > 40.0 + (40.0 / (1 - rho_p) - 40.0) / 2   # waits on other prompts, joins a step
    assert isinstance(engine_load([member("p", lambda b: 40.0 * b, 30.0, "prefill"), dec], "colocated", 1), str)


def test_cpu_pools_are_time_shared():
    c = OpCost(200.0, 5.0, 0.5, 10, "compute")           # 200 ms, one execution at a time per device
    got = engine_load([Member("a", Operator("a", "embed.encode", {}), 2.0, "other", ((1, c),))], "single", 1,
                      cpu=True)
    assert got.devices == pytest.approx(0.4)              # busy share, not a whole device
    assert got.replicas == 1 and got.wait_ms == pytest.approx(0.4 / 0.6 * 200.0)


def test_profiled_operators_keep_their_latency():
    c = OpCost(80.0, 12.5, 1.0, 100, "compute", 0.08, {"profiled": True})
    got = engine_load([Member("p", Operator("p", "llm.prefill", {}), 1.0, "prefill", ((1, c),))], "prefill", 1)
    assert got.latency_ms["p"] == 80.0 and got.wait_ms == 0.0 and got.price_per_hour == pytest.approx(288.0)
