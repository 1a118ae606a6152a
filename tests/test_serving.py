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


# ---- prefix reuse and KV retention ----------------------------------------------------------------------

def _prefill_op(prompt=7000, prefix=6000, retain_ms=1500.0, model="llama-3-70b"):
    return Operator("p", "llm.prefill", {"model": model, "prompt_tokens": prompt, "prefix_tokens": prefix,
                                         "retain_ms": retain_ms})


def test_a_cached_prefix_is_priced_by_the_tokens_left_to_compute():
    from hetagent.costmodel.operators import cost
    from hetagent.costmodel.roofline import kv_bytes_per_token_device
    from hetagent.costmodel.models import load_model
    from hetagent.costmodel.types import DeviceOption
    o = DeviceOption("h100", 8, 1, 4, "bf16")
    full = cost(_prefill_op(), o)
    part = cost(Operator("p", "llm.prefill", {"model": "llama-3-70b", "prompt_tokens": 7000,
                                               "cached_tokens": 6000}), o)
    fresh = cost(Operator("p", "llm.prefill", {"model": "llama-3-70b", "prompt_tokens": 1000}), o)
    assert fresh.latency_ms < part.latency_ms < full.latency_ms / 3    # new tokens attend to the prefix too
    assert part.detail["flops"] < full.detail["flops"] / 4
    cached = full.detail["cached"]
    assert cached["latency_ms"] == pytest.approx(part.latency_ms)
    card = load_model("llama-3-70b")
    assert cached["kv_gb"] == pytest.approx(6000 * kv_bytes_per_token_device(card, "bf16", 8) / 1e9)
    assert cached["reload_ms"] == pytest.approx(cached["kv_gb"] / 64 * 1e3 + 0.01)   # PCIe Gen5 per direction
    gaudi = cost(_prefill_op(), DeviceOption("gaudi3", 8, 1, 4, "bf16")).detail["cached"]
    assert gaudi["reload_ms"] is None                    # no CPU tier documented for Gaudi's engine


def _colocated_members(device="h100", load=6.0, retain_ms=1500.0, prefix=6000):
    """A Llama 3 70B co-located engine (TP 8) serving one reused prompt class and one decode class, priced
    by the cost model on the real device."""
    from hetagent.costmodel.operators import cost, options_for, _device, _model
    pre = _prefill_op(prefix=prefix, retain_ms=retain_ms)
    dec = Operator("d", "llm.decode", {"model": "llama-3-70b", "prompt_tokens": 7000, "output_tokens": 300})
    dev, card = _device(device, "default"), _model("llama-3-70b")
    out = []
    for key, op, phase in (("p", pre, "prefill"), ("d", dec, "decode")):
        pts = sorted(((o.batch, cost(op, o)) for o in options_for(op, dev, card)
                      if (o.tp, o.pp, o.precision) == (8, 1, "bf16")), key=lambda t: t[0])
        out.append(Member(key, op, load, phase, tuple(pts)))
    return out


def test_retention_modes_are_engine_candidates_with_their_memory_and_savings():
    members = _colocated_members()
    loads, _ = replica_candidates(members, "colocated", tp=8)
    modes = {x.kv_retention for x in loads}
    assert modes == {"none", "resident", "offload"}
    fewest = {m: min(x.replicas for x in loads if x.kv_retention == m) for m in modes}
    assert fewest["resident"] <= fewest["none"]            # the prompts cost a seventh: fewer replicas carry them
    r = fewest["none"]
    none = engine_load(members, "colocated", r, tp=8)
    res = engine_load(members, "colocated", r, tp=8, kv_retention="resident")
    off = engine_load(members, "colocated", r, tp=8, kv_retention="offload")
    assert res.prefill_saved_share == pytest.approx(6000 / 7000, rel=0.01) and none.prefill_saved_share == 0
    assert res.prefill_saved_share < 6000 / 7000           # less the ~1% whose KV finds the reservation full
    waiting = 6.0 / r * 1.5                                # Little's law: load x the tool time, per replica
    held = serving.retained_slots(waiting)
    assert serving.erlang_b(held, waiting) <= serving.RETAIN_LOSS < serving.erlang_b(held - 1, waiting)
    per_request = members[0].curve[0][1].detail["cached"]["kv_gb"]
    assert res.retained_requests == held and res.retained_gb == pytest.approx(held * per_request)
    assert res.memory_gb == pytest.approx(none.memory_gb + res.retained_gb, rel=1e-6) or res.max_batch < none.max_batch
    assert res.latency_ms["p"] < none.latency_ms["p"] / 2            # the prompt computes 1,000 tokens, not 7,000
    assert off.latency_ms["p"] == pytest.approx(res.latency_ms["p"] + per_request / 64 * 1e3 + 0.01, rel=0.05)
    assert off.memory_gb < res.memory_gb                   # offload holds host memory, not the device's


def test_fast_tools_still_reserve_one_request():
    """Tools of a millisecond: hardly anyone waits, but a reservation of 0 would drop every KV."""
    res = engine_load(_colocated_members(retain_ms=1.0), "colocated", 4, tp=8, kv_retention="resident")
    assert res.retained_requests == 1
    assert res.prefill_saved_share == pytest.approx(6000 / 7000, rel=5e-3)   # Erlang B(1, a) ~ a: tiny
    assert serving._overflow(1.5, 1) == pytest.approx(1.5 / 2.5)            # Erlang B with one server
    assert serving.erlang_b(2, 1.0) == pytest.approx(0.2)                    # (1/2) / (1 + 1 + 1/2)


def test_retention_that_does_not_fit_is_refused_and_shrinks_the_slots():
    # tools that take minutes: hundreds of requests wait, their KV crowds out the batch
    tight = _colocated_members(retain_ms=40_000.0, load=6.0)
    got = engine_load(tight, "colocated", 1, tp=8, kv_retention="resident")
    assert isinstance(got, str) and "leaves no room for a batch" in got
    some = _colocated_members(retain_ms=30_000.0, load=6.0)
    res = engine_load(some, "colocated", 3, tp=8, kv_retention="resident")
    none = engine_load(some, "colocated", 3, tp=8)
    assert res.max_batch == 64 < none.max_batch == 128     # fewer slots fit beside the retained KV
    fits = [c.memory_gb for b, c in some[1].curve if b == 64][0]
    assert fits + res.retained_gb <= some[1].curve[0][1].detail["memory"]["capacity_gb"]


def test_offload_needs_a_cpu_tier_and_retention_a_colocated_engine():
    gaudi = _colocated_members(device="gaudi3")
    got = engine_load(gaudi, "colocated", 2, tp=8, kv_retention="offload")
    assert isinstance(got, str) and "no CPU tier" in got
    assert {x.kv_retention for x in replica_candidates(gaudi, "colocated", tp=8)[0]} == {"none", "resident"}
    assert "co-located" in engine_load(gaudi[:1], "prefill", 2, tp=8, kv_retention="resident")
    plain = _colocated_members(prefix=0)
    assert {x.kv_retention for x in replica_candidates(plain, "colocated", tp=8)[0]} == {"none"}
