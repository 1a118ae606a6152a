"""The discrete-event simulator (hetagent/runtime/simulator.py, sim_model.py, traces.py, sim_commands.py)."""
from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from hetagent import api
from hetagent.errors import HetagentError
from hetagent.simulator import commands as sim_commands, traces
from hetagent.simulator.commands import simulate
from hetagent.simulator.model import active_masks, build

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "data" / "traces"

ONE_TOOL = """
name: one_tool
sla: {latency_ms: 1000, percentile: 95}
rate: 7
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - {id: call, kind: tool, tool: api, latency_ms: 100, latency_cv: CV, request_bytes: 0, response_bytes: 0,
     cpu_ms: 0.001, result_tokens: 8, inputs: [q]}
  - {id: out, kind: output, inputs: [call]}
"""

BRANCHY = """
name: branchy
sla: {latency_ms: 5000, percentile: 90}
rate: 1
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - id: work
    kind: loop
    expected_iterations: 2.0
    max_iterations: 4
    inputs: [q]
    body:
      - id: pick
        kind: branch
        arms:
          - name: a
            probability: 0.6
            nodes:
              - {id: ta, kind: tool, tool: a, latency_ms: 10, latency_cv: 0.5, request_bytes: 0,
                 response_bytes: 0, cpu_ms: 1, result_tokens: 8}
          - name: b
            probability: 0.3
            nodes:
              - {id: tb, kind: tool, tool: b, latency_ms: 20, latency_cv: 0.5, request_bytes: 0,
                 response_bytes: 0, cpu_ms: 1, result_tokens: 8}
          - name: none
            probability: 0.1
            nodes: []
  - {id: out, kind: output, inputs: [work]}
"""


def _plan(tmp_path, text, name):
    wf = tmp_path / f"{name}.yaml"
    wf.write_text(text)
    return api.plan(str(wf), fleet="local-cpu").to_json()


@pytest.fixture(scope="module")
def cpu_plan():
    return api.plan(str(ROOT / "configs" / "workflows" / "voice_agent_cpu.yaml"), fleet="local-cpu").to_json()


@pytest.fixture(scope="module")
def branchy_plan(tmp_path_factory):
    return _plan(tmp_path_factory.mktemp("branchy"), BRANCHY, "branchy")


def _strip(r):
    r = dict(r)
    r.pop("simulator")
    return r


def test_deterministic_for_a_seed(cpu_plan):
    a = simulate(cpu_plan, rate=0.2, duration_s=3000, seed=7)
    b = simulate(cpu_plan, rate=0.2, duration_s=3000, seed=7)
    c = simulate(cpu_plan, rate=0.2, duration_s=3000, seed=8)
    assert _strip(a) == _strip(b)
    assert _strip(a) != _strip(c)


@pytest.mark.parametrize("cv", [0.0, 1.0])
def test_single_queue_matches_pollaczek_khinchine(tmp_path, cv):
    """One tool.lookup station made a single server: M/D/1 (cv 0) and, by Pollaczek-Khinchine, the mean
    wait of M/M/1 (any service law with cv 1 has W_q = rho S / (1 - rho)). rho = 0.7."""
    plan = _plan(tmp_path, ONE_TOOL.replace("CV", str(cv)), "one_tool")
    m = build(plan)
    st = next(s for s in m.stations if s.op.kind == "tool.lookup")
    pool = m.pools[st.pool]
    pool.servers = 1
    S, lam = 0.1, 7.0                                   # seconds, requests per second
    rho = lam * S
    r = simulate(plan, rate=lam, duration_s=40000, seed=1, model=m)
    got = r["stages"][st.name]["mean_ms"] / 1000
    want = S + rho * S * (1 + cv * cv) / (2 * (1 - rho))
    assert got == pytest.approx(want, rel=0.05)
    assert r["pools"][pool.name]["utilization"] == pytest.approx(rho, rel=0.02)
    wq = r["pools"][pool.name]["mean_wait_ms"] / 1000
    assert wq == pytest.approx(want - S, rel=0.08)


def test_loop_and_branch_draws_follow_their_probabilities(branchy_plan):
    m = build(branchy_plan)
    assert list(m.guards.loops) == ["work"]
    reach = m.guards.loops["work"]
    assert sum(reach) == pytest.approx(2.0, rel=1e-6)      # expected iterations
    assert len(reach) == 4                                 # capped at the maximum
    rng = np.random.default_rng(3)
    n = 200_000
    masks, counts, arms = active_masks(m, n, rng)
    k = counts["work"]
    assert k.mean() == pytest.approx(2.0, rel=0.01)
    assert k.max() == 4 and k.min() == 1
    for i in range(1, 5):                                  # P(K >= i) = q^(i-1)
        assert (k >= i).mean() == pytest.approx(reach[i - 1], abs=0.005)
    for a in arms.values():
        freq = np.bincount(a, minlength=3) / n
        assert freq == pytest.approx([0.6, 0.3, 0.1], abs=0.005)
    # an operator runs only when its copy is reached and its arm chosen; frequencies = its weight
    for j, op in enumerate(m.ops):
        assert masks[:, j].mean() == pytest.approx(op.weight, abs=0.006)


def test_loop_count_in_report(cpu_plan):
    r = simulate(cpu_plan, duration_s=100000, seed=0)
    assert r["loops"]["agent"]["mean_iterations"] == pytest.approx(1.2, abs=0.02)
    assert r["loops"]["agent"]["max"] == 2
    it2 = r["stages"]["agent.it2.think.prefill"]["count"]
    assert it2 / r["requests"] == pytest.approx(0.2, abs=0.015)


def test_sla_attainment_and_json_keys(cpu_plan):
    r = simulate(cpu_plan, duration_s=20000, seed=0)
    for k in ("requests", "completed", "latency_ms", "sla_attainment", "stages", "pools", "tokens_per_second",
              "cost_per_request", "histogram"):
        assert k in r
    assert set(r["latency_ms"]) >= {"p50", "p95", "p99"}
    assert r["requests"] == r["completed"] > 0
    assert 0.0 <= r["sla_attainment"] <= 1.0
    p50 = r["latency_ms"]["p50"]
    loose = simulate(cpu_plan, duration_s=20000, seed=0, sla_ms=1e9)
    tight = simulate(cpu_plan, duration_s=20000, seed=0, sla_ms=p50)
    assert loose["sla_attainment"] == 1.0 and loose["meets_sla"]
    assert tight["sla_attainment"] == pytest.approx(0.5, abs=0.01) and not tight["meets_sla"]
    # light load: the simulated median is close to the plan's prediction at the expected loop count
    assert r["latency_ms"]["p50"] < cpu_plan["predicted"]["end_to_end_ms"] * 1.05
    assert sum(r["histogram"]["counts"]) == r["completed"]


def test_cli_json_is_one_line(cpu_plan, tmp_path):
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(cpu_plan))
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    sim_commands.add_commands(sub)
    args = p.parse_args(["simulate", str(f), "--rate", "0.1", "--duration", "2000", "--seed", "3", "--json"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        args.func(args)
    out = buf.getvalue()
    assert out.count("\n") == 1
    doc = json.loads(out)
    assert doc["arrivals"]["rate"] == 0.1 and doc["seed"] == 3
    args = p.parse_args(["simulate", str(f), "--duration", "2000"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        args.func(args)
    assert "p95" in buf.getvalue() and "SLA" in buf.getvalue()


def test_errors_are_hetagent_errors(tmp_path, cpu_plan):
    with pytest.raises(HetagentError):
        simulate(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"version\": 1}")
    with pytest.raises(HetagentError):
        simulate(bad)
    with pytest.raises(HetagentError):
        simulate(cpu_plan, rate=-1)
    with pytest.raises(HetagentError):
        simulate(cpu_plan, arrivals="weird", duration_s=10)


def test_overload_leaves_requests_unfinished(cpu_plan):
    r = simulate(cpu_plan, rate=5.0, duration_s=200, seed=0)
    assert r["completed"] < r["requests"]
    assert r["sla_attainment"] < 0.5 and not r["meets_sla"]
    busiest = max(p["utilization"] or 0 for p in r["pools"].values())
    assert busiest > 0.95


@pytest.mark.parametrize("process", ["poisson", "gamma", "bursty"])
def test_arrival_processes_keep_the_mean_rate(process):
    rng = np.random.default_rng(0)
    t = traces.arrivals(process, 50.0, 4000.0, rng)
    assert len(t) / 4000.0 == pytest.approx(50.0, rel=0.05)
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 4000.0
    gaps = np.diff(t)
    cv = gaps.std() / gaps.mean()
    if process == "poisson":
        assert cv == pytest.approx(1.0, abs=0.03)
    elif process == "gamma":
        assert cv == pytest.approx(2.0, rel=0.1)
    else:
        assert cv > 1.1                                     # burstier than Poisson


@pytest.mark.parametrize("name,fmt,count", [
    ("azure_llm_2023_code.csv", "azure", 8819),
    ("azure_llm_2023_conv.csv.gz", "azure", None),
    ("mooncake_fast25_conversation_trace_HEAD2000.jsonl", "mooncake", 2000),
    ("mooncake_fast25_synthetic_trace_HEAD1000.jsonl", "mooncake", 1000),
])
def test_trace_readers(name, fmt, count):
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    tr = traces.read_trace(path)
    assert tr.format == fmt
    if count is not None:
        assert len(tr) == count
    assert tr.times_s[0] == 0.0 and np.all(np.diff(tr.times_s) >= 0)
    assert tr.prompt_tokens.min() >= 1 and tr.output_tokens.min() >= 1
    assert tr.rate > 0
    s = tr.scaled_to(tr.rate * 2)
    assert s.rate == pytest.approx(tr.rate * 2)


def test_trace_sets_the_main_llm_call(cpu_plan):
    path = TRACES / "azure_llm_2023_code.csv"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    tr = traces.read_trace(path)
    tr.prompt_tokens = np.minimum(tr.prompt_tokens, 1024)   # the small model's context
    r = simulate(cpu_plan, trace=tr, rate=0.05, duration_s=20000, seed=0)
    assert r["main_llm"]["call"] == "answer"
    assert r["requests"] == int((tr.scaled_to(0.05).times_s < 20000).sum())
    assert r["main_llm"]["mean_prompt_tokens"] > 512
    assert r["arrivals"]["format"] == "azure"


def test_bad_trace_says_where(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(HetagentError, match="Azure"):
        traces.read_trace(f)
    f = tmp_path / "t.jsonl"
    f.write_text('{"timestamp": 0, "input_length": 3, "output_length": 2}\n{"timestamp": 1}\n')
    with pytest.raises(HetagentError, match=":2"):
        traces.read_trace(f)


def test_continuous_batching_shares_the_decode(cpu_plan):
    """At a rate where answers overlap, decode sequences share the replica: busier, longer stages."""
    lo = simulate(cpu_plan, rate=0.02, duration_s=50000, seed=0)
    hi = simulate(cpu_plan, rate=0.12, duration_s=20000, seed=0)
    dec = next(k for k, p in hi["pools"].items() if "answer.decode" in p["operators"])
    assert hi["pools"][dec]["utilization"] > lo["pools"][dec]["utilization"]
    assert hi["stages"]["answer.decode"]["p95"] >= lo["stages"]["answer.decode"]["p95"]
    assert hi["latency_ms"]["p95"] > lo["latency_ms"]["p95"]
    assert not math.isnan(hi["latency_ms"]["p50"])


def test_validate_adds_capacity_headroom_under_bursty_traffic():
    """voice_agent at 100 req/s: the plan's pools run near 100%; under gamma (cv 4) arrivals its p95 misses
    the SLA, so validate re-plans for a higher rate and reports what that costs."""
    v = api.validate_plan(str(ROOT / "configs" / "workflows" / "voice_agent.yaml"),
                                   arrivals="gamma", arrival_params={"cv": 4.0}, duration_s=300,
                                   plan_kwargs={"rate": 100}, log=lambda s: None)
    assert not v["rounds"][0]["meets"]
    assert v["holds"] and len(v["rounds"]) >= 2
    assert v["rounds"][-1]["rate_planned"] > 100
    assert v["headroom_cost_per_hour"] > 0
    assert "headroom" in sim_commands.format_validation(v)


def test_validate_reports_when_no_headroom_helps(tmp_path):
    """A tool whose own latency spread breaks the SLA percentile: no re-plan can fix it."""
    wf = tmp_path / "t.yaml"
    wf.write_text(ONE_TOOL.replace("CV", "1.0").replace("latency_ms: 1000", "latency_ms: 150"))
    v = api.validate_plan(str(wf), duration_s=2000, plan_kwargs={"fleet": "local-cpu"},
                                   log=lambda s: None)
    assert not v["holds"]
    assert "does NOT hold" in sim_commands.format_validation(v)


def test_stage_times_calibrate_operator_times(cpu_plan):
    m = build(cpu_plan)
    names = [s.name for s in m.stations if s.type == "batch"][:2]
    report = {"per_stage_ms": {names[0]: {"p50": 1000.0}, names[1]: {"p50": 2.0}}}
    r = simulate(cpu_plan, rate=0.001, duration_s=200000, seed=0, stage_times=report)
    assert r["stages"][names[0]]["p50"] == pytest.approx(1000.0, rel=1e-6)
    assert r["stages"][names[1]]["p50"] == pytest.approx(2.0, rel=1e-6)
    assert set(r["stage_times_calibrated"]) == set(names)


def test_report_shows_the_simulated_distribution_against_the_sla(tmp_path):
    """`hetagent simulate plan.json -o simulation.json` beside the plan: the report draws it."""
    import subprocess
    import sys
    from pathlib import Path

    from hetagent import api
    ex = Path(__file__).resolve().parent.parent / "configs" / "examples" / "paper_table3"
    plan = api.plan(ex / "workflow.yaml", profiles=ex / "profiles.yaml")
    (tmp_path / "plan.json").write_text(plan.dumps())
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "simulate", str(tmp_path / "plan.json"),
                        "--duration", "600", "--json", "-o", str(tmp_path / "simulation.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    model = api.report(tmp_path / "plan.json", fmt="json", sweeps=False)
    sim = model["simulation"]
    assert sim and sim["histogram"]["counts"] and sim["latency_ms"]["p50"] > 0
    html = api.report(tmp_path / "plan.json", fmt="html", sweeps=False)
    assert "imulat" in html
