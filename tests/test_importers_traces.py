"""`hetagent import traces`: a known LangGraph agent (tests/fixtures/langgraph/support_agent.py, scripted
with GenericFakeChatModel) traced by OpenInference through the OpenTelemetry SDK into files of three
formats, imported back (structure, tokens, iteration counts, branch shares), planned (the 5% contract),
and the trace formats and traps on small files written here."""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("langgraph")
pytest.importorskip("openinference.instrumentation.langchain")

from hetagent.errors import HetagentError, InputError  # noqa: E402
from hetagent.workflow import loader  # noqa: E402
from hetagent.workflow.importers.base import render  # noqa: E402
from hetagent.workflow.importers.langgraph import import_langgraph  # noqa: E402
from hetagent.workflow.importers.traces import import_traces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "tests" / "fixtures" / "langgraph" / "support_agent.py"
RUNS = 60


def _generate(out: Path, fmt: str, runs: int, seed: int) -> list[dict]:
    r = subprocess.run([sys.executable, str(AGENT), str(out), "--runs", str(runs), "--seed", str(seed),
                        "--format", fmt], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    d = tmp_path_factory.mktemp("traces")
    out = {}
    for fmt, runs, seed in (("jsonl", RUNS, 7), ("console", 8, 3), ("otlp", 8, 5)):
        path = d / f"spans_{fmt}.json"
        out[fmt] = (path, _generate(path, fmt, runs, seed))
    return out


def _means(truth):
    n = len(truth)
    return sum(t["input"] for t in truth) / n, sum(t["output"] for t in truth) / n


def _write(imp, path: Path) -> Path:
    path.write_text(render(imp, file=str(path)))
    return path


def _plan_tokens_per_request(path: Path) -> float:
    """The contract: plan.json's tco.per_request / tco.per_million_tokens x 1e6."""
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "plan", str(path), "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    tco = json.loads(lines[0])["tco"]
    return tco["per_request"] / tco["per_million_tokens"] * 1e6


# ---- the known agent, round trip ----------------------------------------------------------------------

def test_summary_counts_every_call_once(traced):
    path, truth = traced["jsonl"]
    imp = import_traces([path])
    s = imp.summary
    assert s["traces"] == RUNS
    assert s["llm_calls"] == sum(t["llm_calls"] for t in truth)
    assert s["tool_calls"] == sum(t["cycles"] for t in truth)
    tin, tout = _means(truth)
    assert s["tokens_per_request"] == {"input": pytest.approx(tin), "output": pytest.approx(tout)}
    assert s["skipped"] == [] and s["warnings"] == []


def test_round_trip_structure_iterations_and_shares(traced, tmp_path):
    path, truth = traced["jsonl"]
    wf = loader.load(_write(import_traces([path]), tmp_path / "wf.yaml"))
    kinds = [n.kind for n in wf.nodes]
    assert kinds == ["input", "llm", "branch", "llm", "output"]       # router, the paths, answer
    router, branch, answer = wf.nodes[1], wf.nodes[2], wf.nodes[3]
    searched = [t for t in truth if t["search"]]
    share = len(searched) / len(truth)
    arms = {len(a.nodes): a for a in branch.arms}
    search_arm, direct_arm = arms[2], arms[0]
    assert search_arm.probability == pytest.approx(share)           # the observed share, exactly
    sigma = math.sqrt(0.7 * 0.3 / len(truth))
    assert abs(search_arm.probability - 0.7) < 3 * sigma             # the scripted one, within sampling error
    assert direct_arm.probability == pytest.approx(1 - share)
    loop, done = search_arm.nodes
    assert loop.kind == "loop" and done.kind == "llm"
    cycles = [t["cycles"] for t in searched]
    # iterations: the observed counts themselves (a histogram), their mean the mean
    assert loop.expected_iterations.source == {"histogram": [[k, cycles.count(k)] for k in sorted(set(cycles))]}
    assert loop.expected_iterations.mean == pytest.approx(statistics.mean(cycles))
    assert loop.max_iterations == max(cycles)
    step, tools = loop.body
    assert step.kind == "llm" and tools.kind == "branch"
    used = [name for t in searched for name in t["tools"]]
    shares = {a.name: a.probability for a in tools.arms}
    assert shares["lookup_order"] == pytest.approx(used.count("lookup_order") / len(used))
    assert abs(shares["lookup_order"] - 0.25) < 3 * math.sqrt(0.25 * 0.75 / len(used))
    # tokens per position: distributions of the scripted counts, with their means
    mean = lambda x: x.mean if hasattr(x, "mean") else x  # noqa: E731
    assert mean(router.prompt_tokens) == pytest.approx(statistics.mean(t["calls"][0][0] for t in truth), abs=0.01)
    firsts = [t["calls"][0][0] for t in truth]          # 41 distinct counts: 16 groups at their means
    assert min(firsts) <= router.prompt_tokens.low < router.prompt_tokens.high <= max(firsts)
    assert sum(w for _, w in router.prompt_tokens.source["histogram"]) == len(truth)
    assert router.output_tokens == 4                                    # all agree: a number
    assert mean(answer.prompt_tokens) == pytest.approx(statistics.mean(t["calls"][-1][0] for t in truth), abs=0.01)
    assert mean(answer.output_tokens) == pytest.approx(statistics.mean(t["calls"][-1][1] for t in truth), abs=0.01)
    assert done.prompt_tokens.mean == pytest.approx(statistics.mean(t["calls"][-2][0] for t in searched), abs=0.01)
    assert done.output_tokens == 25
    # the loop's prompts grow 120 tokens a cycle (300 + 120 i): the growth, and the first cycle's prompt
    assert loop.context_growth_tokens == pytest.approx(120, abs=0.05)
    assert step.prompt_tokens == 300
    steps = [c for t in searched for c in t["calls"][1:-2]]
    assert mean(step.output_tokens) == pytest.approx(statistics.mean(c[1] for c in steps), abs=0.01)
    assert answer.hosted.model == "gpt-4o-mini" and answer.hosted.input_usd_per_million == 0.15


def test_expected_tokens_match_the_traces_within_5_percent_when_planned(traced, tmp_path):
    path, truth = traced["jsonl"]
    wf = _write(import_traces([path]), tmp_path / "wf.yaml")
    tin, tout = _means(truth)
    planned = _plan_tokens_per_request(wf)
    assert abs(planned - (tin + tout)) / (tin + tout) < 0.05


def test_three_formats_read_alike(traced):
    for fmt in ("console", "otlp"):
        path, truth = traced[fmt]
        s = import_traces([path]).summary
        tin, tout = _means(truth)
        assert s["traces"] == len(truth)
        assert s["tokens_per_request"]["input"] == pytest.approx(tin)
        assert s["tokens_per_request"]["output"] == pytest.approx(tout)
        assert s["llm_calls"] == sum(t["llm_calls"] for t in truth)


def test_structure_from_the_program_numbers_from_the_traces(traced, tmp_path):
    path, truth = traced["jsonl"]
    structure = _write(import_langgraph(f"{AGENT}:graph"), tmp_path / "agent.yaml")
    fitted = _write(import_traces([path], structure=structure), tmp_path / "fitted.yaml")
    wf = loader.load(fitted)
    ids = {n.id: n for n in wf.walk()}
    share = sum(t["search"] for t in truth) / len(truth)
    route = ids["router_route"]
    assert [a.probability for a in route.arms] == pytest.approx([share, 1 - share])
    runs = [t["cycles"] + 1 for t in truth if t["search"]]     # the agent node runs once more than tools
    assert ids["agent_loop"].expected_iterations == pytest.approx(statistics.mean(runs))
    assert ids["agent_loop"].max_iterations == max(runs)
    assert ids["router"].output_tokens == 4 and ids["answer"].hosted.model == "gpt-4o-mini"
    tin, tout = _means(truth)
    planned = _plan_tokens_per_request(fitted)
    assert abs(planned - (tin + tout)) / (tin + tout) < 0.05


def test_cli_json_is_one_line_in_contract_order(traced, tmp_path):
    path, _ = traced["console"]
    out = tmp_path / "wf.yaml"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "import", "traces", str(path), "-o", str(out),
                        "--json"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and " " not in lines[0].split('"workflow"')[0].replace('" ', "")
    doc = json.loads(lines[0])
    assert list(doc)[:7] == ["traces", "spans", "llm_calls", "tool_calls", "skipped", "workflow",
                             "tokens_per_request"]
    assert doc["workflow"] == str(out) and out.exists()
    assert set(doc["tokens_per_request"]) == {"input", "output"}
    head = out.read_text().splitlines()[0]
    assert head.startswith("# Imported by `hetagent import traces` from 8 trace(s)")


def test_cli_json_needs_output_and_bad_files_write_nothing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "import", "traces", "x.json", "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--json needs -o" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceSpans": [\n  {"scopeSpans": [}\n]}')
    out = tmp_path / "wf.yaml"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "import", "traces", str(bad), "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and not out.exists()
    assert r.stderr.strip().count("\n") == 0 and f"{bad}:2: not JSON" in r.stderr


# ---- formats and traps, on small files ------------------------------------------------------------------

def _langfuse(observations, trace_id="t1"):
    return {"trace": {"id": trace_id, "timestamp": "2025-01-01T00:00:00.000Z"}, "observations": observations}


def _obs(oid, parent, typ, name, start, end, **kw):
    o = {"id": oid, "traceId": kw.pop("trace", "t1"), "parentObservationId": parent, "type": typ, "name": name,
         "startTime": f"2025-01-01T00:00:{start:06.3f}Z", "endTime": f"2025-01-01T00:00:{end:06.3f}Z",
         "metadata": json.dumps({"attributes": kw.pop("attrs", {})})}
    o.update(kw)
    return o


def test_nested_generations_count_once_and_parallel_tools_side_by_side(tmp_path):
    doc = _langfuse([
        _obs("root", None, "SPAN", "agent run", 0, 10),
        _obs("w1", "root", "GENERATION", "invoke", 0.1, 2, model="gpt-4o", usageDetails={"input": 900, "output": 80}),
        _obs("g1", "w1", "GENERATION", "chat gpt-4o", 0.2, 1.9, model="gpt-4o", usageDetails={"input": 300, "output": 40}),
        _obs("p", "root", "SPAN", "running 2 tools", 2, 3),
        _obs("a", "p", "SPAN", "tool.alpha", 2.0, 2.5, attrs={"gen_ai.tool.name": "alpha"}),
        _obs("b", "p", "SPAN", "tool.beta", 2.0, 2.9, attrs={"gen_ai.tool.name": "beta"}),
        _obs("g2", "root", "GENERATION", "chat gpt-4o", 3, 4, model="gpt-4o",
             usageDetails={"input": 500, "output": 60, "input_cached_tokens": 100}),
    ])
    f = tmp_path / "lf.json"
    f.write_text(json.dumps(doc))
    imp = import_traces([f])
    s = imp.summary
    assert (s["llm_calls"], s["tool_calls"]) == (2, 2)
    assert s["tokens_per_request"] == {"input": 300 + 600, "output": 100}       # cached input counts
    assert len(s["skipped"]) == 1 and "wraps the LLM call" in s["skipped"][0]["why"]
    nodes = imp.data["nodes"]
    tools = [n for n in nodes if n["kind"] == "tool"]
    assert [t["tool"] for t in tools] == ["alpha", "beta"] and tools[0]["inputs"] == tools[1]["inputs"]
    last = [n for n in nodes if n["kind"] == "llm"][-1]
    assert sorted(last["inputs"]) == sorted(t["id"] for t in tools)


def test_orphans_missing_tokens_duplicates_and_aggregates_are_reported(tmp_path):
    spans = [
        {"name": "invoke_agent a", "context": {"trace_id": "0xaa", "span_id": "0x1"}, "parent_id": None,
         "start_time": "2025-01-01T00:00:00Z", "end_time": "2025-01-01T00:00:05Z",
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 999}},
        {"name": "chat", "context": {"trace_id": "0xaa", "span_id": "0x2"}, "parent_id": "0x77",
         "start_time": "2025-01-01T00:00:01Z", "end_time": "2025-01-01T00:00:02Z",
         "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}},
        {"name": "execute_tool final_answer", "context": {"trace_id": "0xaa", "span_id": "0x3"}, "parent_id": "0x1",
         "start_time": "2025-01-01T00:00:02Z", "end_time": "2025-01-01T00:00:03Z",
         "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "final_answer"}},
    ]
    f = tmp_path / "spans.jsonl"
    f.write_text("\n".join(json.dumps(s) for s in spans) + "\n")
    imp = import_traces([f, f])                                    # the same file twice
    s = imp.summary
    assert (s["traces"], s["llm_calls"], s["tool_calls"]) == (1, 1, 1)   # final_answer is a tool call
    whys = " | ".join(x["why"] for x in s["skipped"])
    assert whys.count("the same span as in") == 3 and "999/0 input/output tokens" in whys
    warns = " | ".join(s["warnings"])
    assert "name a parent that is not in the files" in warns and "report no token counts" in warns
    assert any("none of its 1 LLM call(s) reports tokens" in w for w in s["warnings"])


def test_langsmith_runs_and_phoenix_spans(tmp_path):
    runs = [{"id": "r1", "trace_id": "r1", "name": "LangGraph", "run_type": "chain",
             "start_time": "2025-02-01T10:00:00.000000", "end_time": "2025-02-01T10:00:03.000000",
             "child_runs": [
                 {"id": "r2", "parent_run_id": "r1", "name": "ChatOpenAI", "run_type": "llm",
                  "start_time": "2025-02-01T10:00:00.100000", "end_time": "2025-02-01T10:00:01.000000",
                  "extra": {"metadata": {"ls_model_name": "gpt-4o", "ls_provider": "openai",
                                         "langgraph_node": "agent"}},
                  "prompt_tokens": 321, "completion_tokens": 12},
                 {"id": "r3", "parent_run_id": "r1", "name": "search", "run_type": "tool",
                  "start_time": "2025-02-01T10:00:01.000000", "end_time": "2025-02-01T10:00:01.400000"}]}]
    f = tmp_path / "langsmith.json"
    f.write_text(json.dumps({"runs": runs}))
    s = import_traces([f]).summary
    assert (s["llm_calls"], s["tool_calls"], s["tokens_per_request"]["input"]) == (1, 1, 321)
    phoenix = {"data": [
        {"name": "agent", "context": {"trace_id": "p1", "span_id": "s1"}, "parent_id": None, "span_kind": "AGENT",
         "start_time": "2025-03-01T00:00:00+00:00", "end_time": "2025-03-01T00:00:02+00:00", "attributes": {}},
        {"name": "llm", "context": {"trace_id": "p1", "span_id": "s2"}, "parent_id": "s1", "span_kind": "LLM",
         "start_time": "2025-03-01T00:00:00.5+00:00", "end_time": "2025-03-01T00:00:01+00:00",
         "attributes": {"llm": {"model_name": "claude-3-5-haiku", "token_count": {"prompt": 70, "completion": 9}}}}]}
    g = tmp_path / "phoenix.json"
    g.write_text(json.dumps(phoenix))
    imp = import_traces([g])
    assert imp.summary["tokens_per_request"] == {"input": 70, "output": 9}
    llm = next(n for n in imp.data["nodes"] if n["kind"] == "llm")
    assert llm["hosted"]["model"] == "claude-3-5-haiku" and llm["hosted"]["input_usd_per_million"] == 0.8


def test_rate_and_burstiness_from_root_start_times(tmp_path):
    obs = []
    for k, t0 in enumerate((0.0, 2.0, 4.0, 6.0)):
        tid = f"t{k}"
        obs.append(_langfuse([_obs("r", None, "SPAN", "run", t0, t0 + 1, trace=tid),
                              _obs("g", "r", "GENERATION", "chat", t0, t0 + 0.5, trace=tid, model="gpt-4o",
                                   usageDetails={"input": 10, "output": 5})], tid))
    f = tmp_path / "many.json"
    f.write_text(json.dumps(obs))
    imp = import_traces([f])
    assert imp.data["rate"] == pytest.approx(0.5)
    assert any("burstiness (coefficient of variation of the gaps, 1 for Poisson arrivals) 0.00" in h
               for h in imp.header)


def test_self_host_maps_a_traced_model(tmp_path, traced):
    path, _ = traced["otlp"]
    imp = import_traces([path], self_host={"gpt-4o-mini": "llama-3-8b"})
    llms = [n for n in yaml.safe_load(render(imp))["nodes"] if n["kind"] == "llm"]
    assert llms and all(n.get("model") == "llama-3-8b" for n in llms)
    with pytest.raises(HetagentError, match="--self-host gpt-9: no LLM call used a model of that name"):
        import_traces([path], self_host={"gpt-9": "llama-3-8b"})


def test_imported_distributions_and_growth_reach_the_simulation(tmp_path, traced):
    """A trace-imported agent, self-hosted: its token histograms, iteration counts and growing loop prompts
    are what the simulator draws; tokens per request stay the traces'; the loop's engine may keep its KV."""
    from hetagent import api
    from hetagent.simulator.commands import simulate
    path, truth = traced["jsonl"]
    wf = _write(import_traces([path], self_host={"gpt-4o-mini": "llama-3-8b"}), tmp_path / "self.yaml")
    plan = api.plan(str(wf), rate=2.0, validate=False, robustness=False).to_json()
    sim = simulate(plan, duration_s=6000, seed=11)
    tin, tout = _means(truth)
    assert sim["tokens_per_second"]["prompt"] == pytest.approx(2.0 * tin, rel=0.05)
    assert sim["tokens_per_second"]["generated"] == pytest.approx(2.0 * tout, rel=0.05)
    loops = next(iter(sim["loops"].values()))
    searched = [t["cycles"] for t in truth if t["search"]]
    assert loops["mean_iterations"] == pytest.approx(statistics.mean(searched), rel=0.05)
    stages = sim["stages"]
    first = next(k for k in stages if k.endswith("it1.llm_2.prefill") or (".it1." in k and k.endswith("prefill")))
    third = first.replace(".it1.", ".it3.")
    assert stages[third]["count"] < stages[first]["count"]          # fewer requests reach the third cycle
    pool = next(p for p in plan["pools"] if p["kind"] == "llm.prefill")
    got = next(p for p in sim["pools"].values() if "prefill" in p)["prefill"]
    assert got["saved_share"] == pytest.approx(pool["prefill_saved_share"], abs=0.02)


@pytest.mark.parametrize("text, pattern", [
    ("", r"empty file"),
    ("{\"hello\": 1}", r"not a span file hetagent knows.*top-level keys here: hello"),
    ("[1, 2]", r"expected a JSON object or list of spans"),
    ('{"name": "x", "context": {"span_id": "1"}}', r"has no span id or trace id"),
    ('{"name": "x", "context": {"span_id": "1", "trace_id": "2"}, "start_time": "soon"}',
     r"span time `start_time` is missing or not a time"),
])
def test_bad_span_files_one_line(tmp_path, text, pattern):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(InputError, match=pattern) as e:
        import_traces([f])
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_spans_without_calls_are_refused(tmp_path):
    f = tmp_path / "plain.json"
    f.write_text(json.dumps({"name": "GET /", "context": {"trace_id": "1", "span_id": "2"}, "parent_id": None,
                             "start_time": 1.7e9, "end_time": 1.7e9 + 1, "attributes": {"http.method": "GET"}}))
    with pytest.raises(InputError, match="no LLM or tool call among them"):
        import_traces([f])
