"""Plans that hold under load: serving pools as the unit of placement, batches the load fills, queueing,
time between tokens at the longest context, validation by simulation, the same plan for the same inputs.
Each rule is checked on the bundled examples, where the plan before pools broke it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hetagent import api
from hetagent.costmodel.devices import load_catalog

WF = Path(__file__).resolve().parent.parent / "configs" / "workflows"


@pytest.fixture(scope="module")
def voice():
    return api.plan(WF / "voice_agent.yaml", validate=False, robustness=False)


@pytest.fixture(scope="module")
def coding():
    return api.plan(WF / "coding_agent.yaml", validate=False, robustness=False)


def test_every_call_to_a_model_shares_one_pool(voice, coding):
    """The loop copies of `think` and `answer` (llama-3-8b) reach one prefill and one decode engine; the
    coding agent's five 70B iterations one engine with one TP degree and batch."""
    pool_of = {p.operator: p.pool for p in voice.placements}
    think = [pool_of[f"agent.it{k}.think.decode"] for k in (1, 2, 3)] + [pool_of["answer.decode"]]
    assert len(set(think)) == 1 and think[0].startswith("llama-3-8b/")
    by_id = {p.id: p for p in voice.pools}
    assert set(by_id[think[0]].operators) >= {"agent.it1.think.decode", "answer.decode"}
    seventy = [p for p in coding.placements if p.kind == "llm.decode" and "70b" in (p.pool or "")]
    assert len(seventy) >= 5
    assert len({(p.device, p.tp, p.pp, p.batch, p.replicas, p.pool) for p in seventy}) == 1
    assert all(p.pool in by_id or p.kind == "llm.kv_transfer" for p in voice.placements)


def test_replicas_are_integers_owning_whole_devices(voice, coding):
    cat = load_catalog()
    for plan in (voice, coding):
        need: dict = {}
        engines = {}
        for p in plan.pools:
            assert isinstance(p.replicas, int) and p.replicas >= 1
            if cat[p.device].kind != "cpu":
                engines[p.engine_id] = (p.device, p.replicas * p.tp * p.pp)   # a co-located engine once
        for dev, n in engines.values():
            need[dev] = need.get(dev, 0) + n
        for dev, n in need.items():
            assert plan.fleet[dev] == n, (dev, plan.fleet, need)


def test_batch_is_what_the_load_fills(voice):
    """Little's law per replica: requests in flight = load / replicas x time in the engine; the batch is
    that, rounded up. Before pools the decode was priced at batch 128 with about 5 in flight."""
    for p in voice.pools:
        if p.engine == "single" and p.device.startswith(("xeon", "epyc")):
            continue
        in_flight = p.load_rps / p.replicas * p.latency_ms / 1e3
        assert p.batch <= p.max_batch
        assert p.batch - 1 - 1e-6 <= in_flight <= p.batch * 1.05 + 0.05, (p.id, p.batch, in_flight)
    dec = next(p for p in voice.pools if p.kind == "llm.decode")
    assert dec.batch < 32                     # about 25 calls/s x ~0.5 s, not 128


def test_lower_rate_costs_more_per_request():
    """At 1 request/s a decode engine runs nearly empty: each request pays for more device time."""
    hi = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False)
    lo = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False, rate=1.0)
    assert lo.tco["per_request"] > 2 * hi.tco["per_request"]
    dec = lambda pl: next(p for p in pl.pools if p.kind == "llm.decode")
    assert dec(lo).batch < dec(hi).batch


def test_time_between_tokens_at_the_longest_context(voice):
    """TBT is one decode step with every sequence at prompt + all output tokens: no shorter than the mean
    step, and within the workflow's 20 ms."""
    for p in voice.pools:
        if p.kind != "llm.decode":
            continue
        assert p.tbt_ms is not None and p.tbt_ms <= 20.0 + 1e-9
        assert p.tbt_ms >= p.latency_ms / 128 * 0.999     # answer: 128 output tokens, the longest


def test_plan_is_validated_and_a_fresh_simulation_meets_the_percentile(tmp_path):
    plan = api.plan(WF / "voice_agent.yaml", log=lambda s: None)
    pr = plan.predicted
    assert pr["validated"]["holds"] and pr["meets_sla"] and pr["percentile"] == 95
    assert pr["validated"]["requests"] >= 3 * 7000 and pr["validated"]["seeds"] == 3
    assert pr["p50_ms"] <= pr["p95_ms"] <= pr["p99_ms"] and pr["p95_ms"] <= pr["sla_ms"]
    out = tmp_path / "plan.json"
    out.write_text(plan.dumps())
    fresh = api.simulate(str(out), seed=1234)           # another seed, 20,000 requests
    assert fresh["meets_sla"], fresh["latency_at_sla_percentile_ms"]
    assert json.loads(out.read_text())["predicted"]["validated"]["holds"] is True


def test_same_inputs_same_plan():
    a = api.plan(WF / "rag_chat.yaml", validate=False, robustness=False)
    b = api.plan(WF / "rag_chat.yaml", validate=False, robustness=False)
    strip = lambda pl: {k: v for k, v in json.loads(pl.dumps()).items() if k != "solver"}
    assert strip(a) == strip(b)


def test_colocated_engine_when_one_device_serves_both_phases(tmp_path):
    """At a low rate on a fleet of L40S only, one engine holding the weights once serves prefill and
    decode (chunked prefill) for less than two pools would cost. (L40S comes in 1, 4 and 8-card servers, so
    a second pool would need more servers; an 8 x H100 HGX server holds two pools for the same price.)"""
    fleet = tmp_path / "l40s.yaml"
    fleet.write_text("name: l40s-only\nmode: buy\ncatalog: default\ndevices:\n  - {id: l40s}\n"
                     "  - {id: xeon-sapphirerapids}\n")
    plan = api.plan(WF / "rag_chat.yaml", fleet=str(fleet), rate=0.5, validate=False, robustness=False)
    llm = [p for p in plan.pools if p.model]
    assert {p.engine for p in llm} == {"colocated"}
    assert len({p.engine_id for p in llm}) == 1 and {p.kind for p in llm} == {"llm.prefill", "llm.decode"}
    assert plan.fleet["l40s"] == llm[0].replicas * llm[0].tp * llm[0].pp


def test_queueing_is_in_the_planned_latency():
    """Planned at 5 times the rate, operators wait for their pools: per-operator latency includes a
    wait, and the plan is sized with more replicas."""
    base = api.plan(WF / "rag_chat.yaml", validate=False, robustness=False)
    busy = api.plan(WF / "rag_chat.yaml", validate=False, robustness=False, rate=100.0)
    reps = lambda pl: sum(p.replicas for p in pl.pools if not p.device.startswith(("xeon", "epyc")))
    assert reps(busy) > reps(base)
    assert busy.tco["per_hour"] > base.tco["per_hour"]
    assert all(math.isfinite(p.latency_ms) for p in busy.placements)
