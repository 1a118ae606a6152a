"""Agent workloads as they behave (the distributions / growing context / KV retention issue): the coding
agent plans with growing context and keeps its KV where that pays; the simulator charges prompts for their
uncached tokens, holds the retained memory, and its prefill work agrees with the plan's within 10%;
distributions reach the simulation."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hetagent import api
from hetagent.simulator.commands import simulate
from hetagent.simulator.model import graph_of

from conftest import ROOT

CODING = ROOT / "configs" / "workflows" / "coding_agent.yaml"
H100 = ("name: h100s\nmode: buy\ncatalog: default\ndevices: [{id: h100, max_count: 64}, "
        "{id: xeon-sapphirerapids, max_count: 8}]\n")


def planned_prefill(plan: dict, pool: dict) -> tuple[float, float]:
    """(prompt tokens computed, found cached) per second that the plan expects of an LLM pool: every prefill
    operator's executions per second x its prompt, less its reusable prefix when the pool keeps it."""
    g, _ = graph_of(plan)
    rate = plan["inputs"].get("rate") or g.rate_rps
    keep = pool["kv_retention"] in ("resident", "offload")
    computed = cached = 0.0
    for op in g.operators:
        if op.kind == "llm.prefill" and op.name in pool["operators"]:
            c = op.attrs.get("prefix_tokens", 0) if keep else 0
            computed += rate * op.weight * (op.attrs["prompt_tokens"] - c)
            cached += rate * op.weight * c
    return computed, cached


def _pool(plan, kind="llm.prefill"):
    return next(p for p in plan["pools"] if p["kind"] == kind and p["model"])


def _sim_pool(sim, plan):
    return next(p for name, p in sim["pools"].items() if name.startswith(_pool(plan)["model"]))


@pytest.fixture(scope="module")
def coding():
    return api.plan(str(CODING), validate=False, robustness=False).to_json()


@pytest.fixture(scope="module")
def h100_coding(tmp_path_factory):
    fleet = tmp_path_factory.mktemp("fleet") / "h100s.yaml"
    fleet.write_text(H100)
    return api.plan(str(CODING), fleet=str(fleet), validate=False, robustness=False).to_json()


def test_coding_agent_grows_its_context_and_keeps_its_kv(coding):
    pre = _pool(coding)
    assert pre["engine"] == "colocated" and pre["kv_retention"] in ("resident", "offload")
    assert pre["prefill_saved_share"] > 0.6 and pre["retained_gb"] > 0
    assert pre["retained_requests"] >= 1
    dec = _pool(coding, "llm.decode")
    assert (dec["kv_retention"], dec["retained_gb"]) == (pre["kv_retention"], pre["retained_gb"])
    g, _ = graph_of(coding)
    prompts = [o.attrs["prompt_tokens"] for o in g.operators if o.kind == "llm.prefill"]
    assert prompts == [6000 + 1025 * k for k in range(8)]       # auto growth: 300 + 0.5 x 400 + 0.35 x 1500
    computed, cached = planned_prefill(coding, pre)
    assert pre["prefill_saved_share"] == pytest.approx(cached / (computed + cached), rel=0.01)   # less overflow


def test_simulated_prefill_work_agrees_with_the_plan(coding):
    """The Done-means check: prompt tokens the simulated engine computes (and finds cached) per second are
    within 10% of what the plan priced."""
    sim = simulate(coding, duration_s=2500, seed=3)
    computed, cached = planned_prefill(coding, _pool(coding))
    got = _sim_pool(sim, coding)
    assert got["prefill"]["computed_per_s"] == pytest.approx(computed, rel=0.10)
    assert got["prefill"]["cached_per_s"] == pytest.approx(cached, rel=0.10)
    assert got["prefill"]["saved_share"] == pytest.approx(_pool(coding)["prefill_saved_share"], rel=0.10)
    held = got["retained"]
    assert held["max_requests"] <= held["cap"]                   # the reservation is never exceeded
    assert held["mean_gb_per_replica"] <= _pool(coding)["retained_gb"]
    assert held["evicted"] < 0.05 * sim["requests"]


def test_without_prefix_sharing_the_prefix_is_recomputed(tmp_path):
    text = CODING.read_text().replace("        output_tokens: 300\n", "        output_tokens: 300\n"
                                      "        prefix_shared: false\n")
    assert "prefix_shared: false" in text
    wf = tmp_path / "coding_no_reuse.yaml"
    wf.write_text(text)
    plan = api.plan(str(wf), validate=False, robustness=False).to_json()
    pre = _pool(plan)
    assert pre["kv_retention"] == "none" and pre["prefill_saved_share"] == 0 and pre["retained_gb"] == 0
    sim = simulate(plan, duration_s=1500, seed=1)
    computed, cached = planned_prefill(plan, pre)
    got = _sim_pool(sim, plan)["prefill"]
    assert cached == 0 and got["cached_per_s"] == 0
    assert got["computed_per_s"] == pytest.approx(computed, rel=0.10)


def test_resident_reservation_full_means_recompute(coding):
    """With no room reserved, every request's KV is dropped at its tool call: nothing is found cached."""
    plan = copy.deepcopy(coding)
    for p in plan["pools"]:
        if p["model"]:
            p["kv_retention"], p["retained_requests"] = "resident", 0
    got = _sim_pool(simulate(plan, duration_s=600, seed=2), plan)
    assert got["prefill"]["cached_per_s"] == 0 and got["retained"]["evicted"] > 0


def test_offload_reloads_the_prefix_over_the_host_link(h100_coding):
    plan = copy.deepcopy(h100_coding)
    pre = _pool(plan)
    assert pre["device"] == "h100" and pre["kv_retention"] in ("resident", "offload")
    for p in plan["pools"]:
        if p["model"]:
            p["kv_retention"] = "offload"
    off = simulate(plan, duration_s=800, seed=4)
    for p in plan["pools"]:
        if p["model"]:
            p["kv_retention"] = "resident"
    res = simulate(plan, duration_s=800, seed=4)
    name = "react.it3.reason.prefill"
    assert off["stages"][name]["mean_ms"] > res["stages"][name]["mean_ms"]    # the reload comes first
    assert _sim_pool(off, plan)["prefill"]["saved_share"] == pytest.approx(pre["prefill_saved_share"], rel=0.1)


DISTRIBUTED = """
name: sampled
sla: {latency_ms: 30000, percentile: 95}
rate: 1
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - id: ask
    kind: llm
    model: llama-3-8b
    prompt_tokens: {mean: 2000, p50: 1500, p95: 5000}
    output_tokens: {histogram: [[50, 3], [400, 1]]}
    inputs: [q]
  - {id: look, kind: tool, latency_ms: {histogram: [[100, 1], [1000, 1]]}, inputs: [ask]}
  - {id: out, kind: output, inputs: [look]}
"""


def test_distributions_are_sampled_by_the_simulator(tmp_path):
    wf = tmp_path / "sampled.yaml"
    wf.write_text(DISTRIBUTED)
    fleet = tmp_path / "h100s.yaml"
    fleet.write_text(H100)
    plan = api.plan(str(wf), fleet=str(fleet), validate=False, robustness=False).to_json()
    sim = simulate(plan, duration_s=8000, seed=5)
    assert sim["tokens_per_second"]["prompt"] == pytest.approx(2000, rel=0.03)     # the mean, at 1 req/s
    assert sim["tokens_per_second"]["generated"] == pytest.approx(137.5, rel=0.05)
    look = sim["stages"]["look.lookup"]
    assert look["mean_ms"] == pytest.approx(550, rel=0.05)                          # half 100 ms, half 1 s
    assert look["p50"] < 200 and look["p95"] > 900
    dec = sim["stages"]["ask.decode"]
    assert dec["p95"] > 4 * dec["p50"]                       # a quarter of the answers are 8x longer
    again = simulate(plan, duration_s=8000, seed=5)
    assert json.dumps(again["latency_ms"]) == json.dumps(sim["latency_ms"])         # still one per seed
    assert np.isfinite(sim["latency_ms"]["p95"])


def test_report_explains_the_retention_choice(coding, tmp_path):
    from hetagent.report import build_model
    from hetagent.report.markdown import render
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(coding))
    model = build_model(plan, sweeps=False, budget_s=120)
    rows = model["placement"]["retention"]
    assert len(rows) == 1 and rows[0]["kv_retention"] == _pool(coding)["kv_retention"]
    rc = rows[0]["recompute"]
    assert rc["feasible"] and rc["delta_per_hour"] == pytest.approx(rc["per_hour"] - coding["tco"]["per_hour"])
    assert rc["delta_per_hour"] >= -1e-6            # the plan may keep it: never dearer than recomputing
    text, _ = render(model, charts=False)
    assert "KV cache across tool calls" in text
    para = next(line for line in text.splitlines() if "kv_retention:" in line)
    assert f"saves {_pool(coding)['prefill_saved_share']:.1%} of the prompt work" in para
    assert f"keeps room for {_pool(coding)['retained_requests']}" in para
    assert "Solved again with every prefix recomputed" in para
