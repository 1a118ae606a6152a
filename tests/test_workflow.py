"""The workflow format: examples load, the builder matches YAML, the schema documents every field,
and every bad file gives one line naming file, line and field."""
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import hetagent
from hetagent.errors import HetagentError, InputError
from hetagent.workflow import loader
from hetagent.workflow.model import json_schema

from conftest import ROOT, WORKFLOWS

VOICE = ROOT / "configs" / "workflows" / "voice_agent.yaml"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_examples_load_and_match_schema(path):
    wf = hetagent.load(path)
    assert wf.nodes
    jsonschema.validate(yaml.safe_load(path.read_text()), json_schema())


def test_schema_documents_every_field():
    schema = json_schema()
    missing = []
    for name, definition in schema["$defs"].items():
        for field, spec in definition.get("properties", {}).items():
            if field not in ("kind",) and "description" not in spec:
                missing.append(f"{name}.{field}")
    assert not missing, f"undocumented fields: {missing}"


def test_builder_makes_the_same_workflow_as_yaml():
    b = hetagent.WorkflowBuilder("voice_agent", sla_ms=3000, percentile=95, rate=10,
                                 description="Voice assistant from the paper; Llama 3 8B with a "
                                             "web-search tool loop.")
    b.input("audio_in", audio_seconds=6)
    b.speech_to_text("transcribe", model="whisper-large-v3", output_tokens=48, inputs=["audio_in"])
    with b.loop("agent", expected_iterations=1.5, max_iterations=3, inputs=["transcribe"],
                description="the LLM writes a search query and reads the results, at most three "
                            "times") as body:
        body.llm("think", model="llama-3-8b", prompt_tokens=512, output_tokens=64,
                 sla={"ttft_ms": 250, "tbt_ms": 20})
        body.tool("web_search", tool="web_search", latency_ms=300, latency_cv=0.6, request_bytes=512,
                  response_bytes=16384, cpu_ms=4, result_tokens=384, inputs=["think"])
    b.llm("answer", model="llama-3-8b", prompt_tokens=1024, output_tokens=128,
          sla={"ttft_ms": 250, "tbt_ms": 20}, inputs=["agent"])
    b.text_to_speech("speak", model="piper-joe-medium", inputs=["answer"])
    b.output("audio_out", inputs=["speak"])
    built = b.build()
    from_yaml = hetagent.load(VOICE)
    assert built.model_dump() == from_yaml.model_dump()
    assert hetagent.to_mlir(hetagent.compile(built)) == hetagent.to_mlir(hetagent.compile(from_yaml))


def test_builder_errors_like_a_file():
    b = hetagent.WorkflowBuilder("w")
    b.llm("a", model="llama-9b", prompt_tokens=1, output_tokens=1)
    with pytest.raises(InputError, match="unknown model 'llama-9b'"):
        b.build()


GOOD_HEAD = "name: w\nnodes:\n"

# (case, file text, expected message part, expected line or None)
BAD = [
    ("yaml_syntax", "name: w\nnodes: [\n  {id: a\n", "YAML syntax error", 4),
    ("empty", "", "the file is empty", None),
    ("only_comment", "# nothing\n", "the file is empty", None),
    ("top_level_list", "- a\n- b\n", "top level must be a mapping", 1),
    ("top_level_scalar", "42\n", "top level must be a mapping", 1),
    ("python_tag", "name: !!python/object/apply:os.system ['touch /tmp/pwned']\nnodes: []\n",
     "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed", 1),
    ("custom_tag", "name: !secret w\nnodes: []\n", "tag '!secret' is not allowed", 1),
    ("alias_bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     "alias bomb", None),
    ("unknown_kind", GOOD_HEAD + "  - {id: a, kind: teleport}\n", "unknown node kind 'teleport'", 3),
    ("missing_kind", GOOD_HEAD + "  - {id: a}\n", "missing `kind`", 3),
    ("dangling_ref", GOOD_HEAD + "  - {id: a, kind: input}\n  - {id: b, kind: output, inputs: [zz]}\n",
     "input 'zz' does not name a node", 4),
    ("cycle", GOOD_HEAD + "  - {id: a, kind: code, inputs: [b]}\n  - {id: b, kind: code, inputs: [a]}\n",
     "cycle outside a loop", None),
    ("self_loop", GOOD_HEAD + "  - {id: a, kind: code, inputs: [a]}\n", "lists itself", 3),
    ("unknown_model", GOOD_HEAD + "  - id: a\n    kind: llm\n    model: gpt-99\n    prompt_tokens: 1\n"
     "    output_tokens: 1\n", "unknown model 'gpt-99'", 5),
    ("negative_size", GOOD_HEAD + "  - id: a\n    kind: llm\n    model: llama-3-8b\n"
     "    prompt_tokens: -5\n    output_tokens: 1\n", "greater than or equal to 0", 6),
    ("missing_size", GOOD_HEAD + "  - id: a\n    kind: llm\n    model: llama-3-8b\n    output_tokens: 1\n",
     "required field is missing", 3),
    ("string_size", GOOD_HEAD + "  - {id: a, kind: tool, latency_ms: fast}\n", "latency_ms", 3),
    ("branch_sum", GOOD_HEAD + "  - id: br\n    kind: branch\n    arms:\n      - {name: x, probability: 0.5}\n"
     "      - {name: y, probability: 0.4}\n", "sum to 0.9, not 1", 6),
    ("unknown_field", GOOD_HEAD + "  - {id: a, kind: code, cpu_mss: 3}\n", "unknown field 'cpu_mss'", 3),
    ("duplicate_id", GOOD_HEAD + "  - {id: a, kind: code}\n  - {id: a, kind: code}\n",
     "duplicate node id 'a'", 4),
    ("duplicate_key", "name: w\nname: v\nnodes: []\n", "duplicate key 'name'", 2),
    ("no_nodes", "name: w\nnodes: []\n", "at least 1 item", 2),
    ("bad_name", "name: 'has space'\nnodes:\n  - {id: a, kind: code}\n", "field 'name'", 1),
    ("loop_bounds", GOOD_HEAD + "  - id: l\n    kind: loop\n    expected_iterations: 5\n"
     "    max_iterations: 2\n    body: [{id: a, kind: code}]\n", "exceeds max_iterations", 3),
    ("ref_into_loop", GOOD_HEAD + "  - id: l\n    kind: loop\n    expected_iterations: 1\n"
     "    max_iterations: 2\n    body: [{id: a, kind: code}]\n  - {id: b, kind: code, inputs: [a]}\n",
     "refer to 'l' instead", 8),
    ("sub_missing", GOOD_HEAD + "  - {id: s, kind: subagent, workflow: nowhere.yaml}\n",
     "'nowhere.yaml' does not exist", 3),
    ("sub_self", GOOD_HEAD + "  - {id: s, kind: subagent, workflow: SELF}\n", "includes itself", 3),
    ("merge_key", "base: &b {id: a, kind: code}\nname: w\nnodes:\n  - {<<: *b}\n", "merge keys", 4),
    ("code_syntax", GOOD_HEAD + "  - id: c\n    kind: code\n    source: |\n      def main(:\n"
     "        pass\n", "Python syntax error in the source, line 1", 5),
    ("code_no_main", GOOD_HEAD + "  - {id: c, kind: code, source: 'x = 1'}\n",
     "must define a top-level function main", 3),
    ("code_language_only", GOOD_HEAD + "  - {id: c, kind: code, language: python3}\n",
     "`language` needs `source`", 3),
    ("code_javascript", GOOD_HEAD + "  - {id: c, kind: code, language: javascript, source: 'x'}\n",
     "field 'nodes[0].language'", 3),
    # distributions (hetagent.workflow.dist)
    ("dist_no_mean", GOOD_HEAD + "  - id: a\n    kind: llm\n    model: llama-3-8b\n"
     "    prompt_tokens: {p50: 100}\n    output_tokens: 1\n", "needs its `mean`", 6),
    ("dist_falling", GOOD_HEAD + "  - {id: t, kind: tool, latency_ms: {mean: 100, p50: 90, p95: 80}}\n",
     "p95 80 is below p50 90", 3),
    ("dist_mean_low", GOOD_HEAD + "  - {id: t, kind: tool, latency_ms: {mean: 10, p50: 90, p95: 400}}\n",
     "below what these percentiles allow", 3),
    ("dist_unknown_key", GOOD_HEAD + "  - {id: t, kind: tool, latency_ms: {mean: 10, p90: 20}}\n",
     "unknown key 'p90'", 3),
    ("dist_bad_histogram", GOOD_HEAD + "  - id: a\n    kind: llm\n    model: llama-3-8b\n    prompt_tokens: 10\n"
     "    output_tokens: {histogram: [[10, 1], [20]]}\n", "histogram entry 1", 7),
    ("dist_histogram_mixed", GOOD_HEAD + "  - {id: t, kind: tool, latency_ms: {histogram: [[1, 1]], mean: 1}}\n",
     "a histogram stands alone", 3),
    ("dist_negative_weight", GOOD_HEAD + "  - {id: t, kind: tool, latency_ms: {histogram: [[1, -1]]}}\n",
     "weight must be >= 0", 3),
    ("iterations_beyond_max", GOOD_HEAD + "  - id: l\n    kind: loop\n    expected_iterations: {histogram: "
     "[[1, 1], [5, 1]]}\n    max_iterations: 4\n    body: [{id: a, kind: code}]\n", "beyond max_iterations", 3),
    ("prefix_without_growth", GOOD_HEAD + "  - id: l\n    kind: loop\n    expected_iterations: 2\n"
     "    max_iterations: 3\n    body:\n      - {id: a, kind: llm, model: llama-3-8b, prompt_tokens: 10,"
     " output_tokens: 1, prefix_shared: true}\n", "needs an enclosing loop with `context_growth_tokens`", 8),
    ("prefix_outside_loop", GOOD_HEAD + "  - {id: a, kind: llm, model: llama-3-8b, prompt_tokens: 10,"
     " output_tokens: 1, prefix_shared: true}\n", "prefix_shared", 3),
    ("growth_word", GOOD_HEAD + "  - id: l\n    kind: loop\n    expected_iterations: 2\n    max_iterations: 3\n"
     "    context_growth_tokens: lots\n    body: [{id: a, kind: code}]\n", "a number of tokens (0 to 1e+09) or `auto`", 7),
]


@pytest.mark.parametrize("case,text,message,line", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_line_and_field(tmp_path, case, text, message, line):
    path = tmp_path / f"{case}.yaml"
    path.write_text(text.replace("SELF", path.name))
    with pytest.raises(InputError) as err:
        hetagent.load(path)
    msg = str(err.value)
    assert message in msg, msg
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg
    if line is not None:
        assert err.value.line == line, msg


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="binary data"):
        hetagent.load(path)
    path.write_bytes(b"name: w\n\xff\xfe\x80 bad utf8\n")
    with pytest.raises(InputError, match="not UTF-8"):
        hetagent.load(path)


def test_python_tag_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nnodes: []\n")
    with pytest.raises(InputError):
        hetagent.load(path)
    assert not marker.exists()


def test_cli_error_is_one_line_exit_1_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_HEAD + "  - {id: a, kind: teleport}\n")
    out = tmp_path / "out.mlir"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "compile", str(bad), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and f"{bad}:3" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.mlir*"))


def test_cli_usage_error_exits_2():
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "compile"], capture_output=True, text=True)
    assert r.returncode == 2


# ---- fuzzing: whatever the bytes, the loader either returns a Workflow or raises one HetagentError --

def _assert_clean(text: str, tmp_path: Path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        hetagent.load(path)
    except HetagentError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=True), st.text(max_size=20))
node_like = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["a", "b", "c", "1x", ""]), st.text(max_size=5)),
     "kind": st.one_of(st.sampled_from(["input", "llm", "tool", "loop", "branch", "code", "output",
                                        "subagent", "memory_search", "bogus"]), yaml_scalars)},
    optional={"inputs": st.lists(st.sampled_from(["a", "b", "c", "zz"]), max_size=3),
              "model": st.sampled_from(["llama-3-8b", "nope", 3]),
              "prompt_tokens": yaml_scalars, "output_tokens": yaml_scalars,
              "latency_ms": yaml_scalars, "expected_iterations": yaml_scalars,
              "max_iterations": yaml_scalars, "body": st.just([{"id": "q", "kind": "code"}]),
              "arms": st.just([{"name": "x", "probability": 0.3}]), "workflow": st.text(max_size=8)})
documents = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.just("w"), yaml_scalars),
                           "nodes": st.lists(node_like, max_size=5)},
                          optional={"rate": yaml_scalars, "sla": st.dictionaries(
                              st.sampled_from(["latency_ms", "percentile", "x"]), yaml_scalars)}),
    st.lists(yaml_scalars), yaml_scalars)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_fuzz_structured_documents(tmp_path, doc):
    _assert_clean(yaml.safe_dump(doc), tmp_path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("name:odes-[]{},&*!|>'\"#\n\t 0123456789abkx:%@`")),
               max_size=200))
def test_fuzz_raw_text(tmp_path, text):
    _assert_clean(text, tmp_path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_fuzz_bytes(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        hetagent.load(path)
    except HetagentError as e:
        assert "\n" not in str(e)


def test_loader_check_is_json_roundtrippable():
    wf = hetagent.load(VOICE)
    assert json.loads(wf.model_dump_json())["name"] == "voice_agent"
    assert loader.node_paths(wf)["think"] == ("nodes", 2, "body", 0)


def test_code_node_carries_python_source(tmp_path):
    path = tmp_path / "code.yaml"
    path.write_text(GOOD_HEAD + "  - id: c\n    kind: code\n    language: python3\n    source: |\n"
                    "      def main(text: str) -> dict:\n          return {'text': text[::-1]}\n")
    node = hetagent.load(path).nodes[0]
    assert node.language == "python3" and node.source.startswith("def main(text")


# ---- distributions ----------------------------------------------------------------------------------

def test_distribution_forms_keep_their_mean_and_percentiles():
    import numpy as np
    from hetagent.workflow import dist
    assert dist.parse(300) == 300 and isinstance(dist.parse(300, integer=True), int)
    h = dist.parse({"histogram": [[2000, 3], [6000, 5], [12000, 2]]})
    assert h.mean == pytest.approx((2000 * 3 + 6000 * 5 + 12000 * 2) / 10)
    assert [h.quantile(p) for p in (0.1, 0.5, 0.95)] == [2000, 6000, 12000]
    p = dist.parse({"mean": 6000, "p50": 5200, "p95": 11000, "p99": 15000})
    assert p.mean == pytest.approx(6000, rel=1e-9)
    assert [p.quantile(x) for x in (0.5, 0.95, 0.99)] == pytest.approx([5200, 11000, 15000])
    # a lognormal's own percentiles give back (about) that lognormal: median 800, sigma 0.6
    mu, sigma = np.log(800), 0.6
    ln = {"mean": float(np.exp(mu + sigma ** 2 / 2)), "p50": 800.0,
          "p95": float(np.exp(mu + 1.6449 * sigma)), "p99": float(np.exp(mu + 2.3263 * sigma))}
    d = dist.parse(ln)
    assert d.quantile(0.25) == pytest.approx(np.exp(mu - 0.6745 * sigma), rel=0.02)
    rng = np.random.default_rng(1)
    assert d.sample(rng, 400000).mean() == pytest.approx(ln["mean"], rel=0.01)
    assert dist.parse({"mean": 7}).constant


def test_distribution_round_trips_through_the_ir_attribute():
    from hetagent.workflow import dist
    d = dist.parse({"mean": 100, "p50": 80, "p95": 200})
    back = dist.from_attr(d.to_attr())
    assert back.mean == pytest.approx(d.mean) and back.quantile(0.95) == pytest.approx(200)


def test_iteration_counts_from_a_histogram_and_from_percentiles():
    from hetagent.workflow import dist
    h = dist.parse({"histogram": [[1, 2], [3, 1], [4, 1]]}, minimum=1)
    assert dist.count_reach(h, 4) == pytest.approx([1.0, 0.5, 0.5, 0.25])
    p = dist.parse({"mean": 2.5, "p50": 2, "p95": 5}, minimum=1)
    assert sum(dist.count_reach(p, 400)) == pytest.approx(2.5, rel=0.01)      # E[K] = sum P(K >= k)
    assert sum(dist.count_reach(p, 6)) < 2.5                # counts above the bound are cut to it


def test_workflow_with_distributions_dumps_as_written(tmp_path):
    text = (GOOD_HEAD + "  - id: l\n    kind: loop\n    expected_iterations: {histogram: [[1, 1], [3, 1]]}\n"
            "    max_iterations: 3\n    context_growth_tokens: auto\n    body:\n"
            "      - {id: a, kind: llm, model: llama-3-8b, prompt_tokens: {mean: 500, p50: 450, p95: 900},"
            " output_tokens: {histogram: [[50, 1], [150, 1]]}}\n"
            "      - {id: t, kind: tool, latency_ms: {mean: 800, p50: 600, p99: 3000}, inputs: [a]}\n")
    path = tmp_path / "d.yaml"
    path.write_text(text)
    wf = hetagent.load(path)
    loop = wf.nodes[0]
    assert loop.expected_iterations.mean == 2 and loop.body[0].output_tokens.mean == 100
    dumped = wf.model_dump()["nodes"][0]
    assert dumped["expected_iterations"] == {"histogram": [[1, 1], [3, 1]]}
    assert dumped["body"][1]["latency_ms"] == {"mean": 800, "p50": 600, "p99": 3000}
    jsonschema.validate(yaml.safe_load(text), json_schema())
