"""The Dify importer (hetagent.workflow.importers.dify): the 19 shared real exports, a fixture for every form
DIFY.md describes that they lack, bad input, --self-host, and `hetagent import dify`."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from hetagent.errors import WorkflowError
from hetagent.workflow import loader, safeyaml
from hetagent.workflow.importers import dify, dify_defaults, hosted
from hetagent.workflow.importers.common import fix_surrogates
from hetagent.workflow.model import BranchNode, LlmNode, LoopNode, MemorySearchNode

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "dify"
SHARED = ROOT.parent / "shared" / "data" / "workflows" / "dify"
SHARED_FILES = sorted(SHARED.glob("*.yml")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(not SHARED_FILES, reason=f"{SHARED} is absent")

# every node type DIFY.md names, and where it is covered (a fixture or a shared file)
DIFY_NODE_TYPES = {
    "start", "end", "answer", "llm", "question-classifier", "parameter-extractor", "agent",
    "knowledge-retrieval", "knowledge-retrieval-v2", "tool", "http-request", "code",
    "template-transform", "variable-aggregator", "assigner", "document-extractor", "list-operator",
    "if-else", "iteration", "loop", "iteration-start", "loop-start",
}


def load(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DifyImportWarning)
        return loader.load(FIX / name if isinstance(name, str) else name, **kw)


DifyImportWarning = dify.DifyImportWarning


def native(path, self_host=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DifyImportWarning)
        text = Path(path).read_text(encoding="utf-8")
        data, _ = dify.to_native(safeyaml.load(text, str(path)), self_host or {})
    return data


def by_id(wf):
    return {n.id: n for n in wf.walk()}


def types_in(path) -> set[str]:
    text = Path(path).read_text(encoding="utf-8")
    data = safeyaml.load(text, str(path)).data
    if set(data) == {"data"}:
        data = yaml.safe_load(fix_surrogates(data["data"]))
    nodes = ((data.get("workflow") or {}).get("graph") or {}).get("nodes") or []
    return {(n.get("data") or {}).get("type") for n in nodes} - {None, ""}


# ---- the 19 real exports --------------------------------------------------------------------------

@needs_shared
def test_all_nineteen_present():
    assert len(SHARED_FILES) == 19


@needs_shared
@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: p.name)
def test_shared_export_imports_and_validates(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DifyImportWarning)
        wf = loader.load(path)
    assert [str(w.message) for w in caught if issubclass(w.category, DifyImportWarning)] == []
    kinds = {n.kind for n in wf.walk()}
    assert "input" in kinds and "output" in kinds
    for n in wf.walk():
        if isinstance(n, LlmNode):  # every hosted model in the 19 files has a listed price
            assert n.hosted is not None and n.hosted.input_usd_per_million > 0
            assert hosted.price_of(n.hosted.model) is not None, n.hosted.model


@needs_shared
@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: p.name)
def test_shared_export_compiles(path):
    api = pytest.importorskip("hetagent.api")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DifyImportWarning)
        module = api.compile(path)
    text = api.to_mlir(module)
    assert "agent.input" in text and "agent.output" in text


@needs_shared
def test_shared_structures():
    wf = load(SHARED / "Document_chat_template.yml")  # 0.1.0 if-else + classifier + retrieval
    ids = by_id(wf)
    ie = ids["n1720795610192"]
    assert isinstance(ie, BranchNode) and [a.name for a in ie.arms] == ["true", "else"]
    cls = ids["n1720795163496_branch"]
    assert [a.name for a in cls.arms] == ["安装", "提问", "架构", "其他"]
    assert all(abs(a.probability - 0.25) < 1e-9 for a in cls.arms)
    kr = ids["n1720800677771"]
    assert isinstance(kr, MemorySearchNode) and kr.rerank and kr.top_k == 2
    assert ids["n1720800734485"].rerank is False  # single mode: no rerank
    wf = load(SHARED / "micro_payment_demo.yml")  # an answer in mid-flow is transparent
    ids = by_id(wf)
    assert ids["n1749221017459"].inputs == ["n1749220945757"]
    wf = load(SHARED / "translation_workflow.yml")  # the aggregator after the branch names it
    assert by_id(wf)["n1721118847307"].inputs == ["n1721118545228"]


# ---- forms the shared files lack ------------------------------------------------------------------

def test_loop_node():
    wf = load("loop_node.yml")
    loop = by_id(wf)["n1748000000001"]
    assert isinstance(loop, LoopNode)
    assert loop.max_iterations == 4 and loop.expected_iterations == 2.5  # break conditions
    assert [n.id for n in loop.body] == ["n1748000000003", "n1748000000004"]  # markers dropped
    assert loop.body[0].inputs == [] and loop.body[0].output_tokens == 300  # max_tokens
    assert by_id(wf)["end"].inputs == ["n1748000000001"]
    check = by_id(wf)["n1748000000004"]     # a python3 code node keeps its code
    assert check.kind == "code" and check.language == "python3"
    assert check.source == "def main(x): return {}"


def test_agent_node_with_maximum_iterations():
    wf = load("agent_node.yml")
    agent = by_id(wf)["n2"]
    assert isinstance(agent, LoopNode) and agent.max_iterations == 6 and agent.expected_iterations == 2
    llm = agent.body[0]
    assert llm.hosted.model == "claude-3-5-sonnet-20241022" and llm.hosted.input_usd_per_million == 3
    tools = agent.body[1]
    assert isinstance(tools, BranchNode)  # the disabled tool is left out
    assert [a.name for a in tools.arms] == ["tavily/tavily_search", "time/current_time"]


def test_agent_chat_app_without_graph():
    wf = load("agent_chat_app.yml")
    ids = by_id(wf)
    assert ids["agent"].max_iterations == 7 and ids["agent"].inputs == ["retrieval"]
    assert ids["retrieval"].rerank and ids["retrieval"].top_k == 3
    assert ids["answer"].kind == "output"


def test_chat_app_with_speech():
    wf = load("chat_app.yml")
    assert [n.kind for n in wf.nodes] == ["input", "speech_to_text", "llm", "text_to_speech", "output"]
    assert wf.nodes[0].audio_seconds > 0


def test_completion_app():
    wf = load("completion_app.yml")
    llm = by_id(wf)["llm"]
    assert llm.hosted.model == "qwen-max" and llm.output_tokens == 200


def test_file_without_version():
    wf = load("no_version.yml")
    assert wf.name == "Unversioned" and [n.kind for n in wf.nodes] == ["input", "llm", "output"]
    assert any("no DSL `version`" in n for n in dify.convert(
        safeyaml.load((FIX / "no_version.yml").read_text(), "x"))[2])


def test_api_json_wrapper_with_surrogate_pairs():
    raw = (FIX / "api_wrapper.json").read_text()
    assert "\\ud83e\\udd16" in raw
    wf = load("api_wrapper.json")
    assert "🤖" in wf.description and wf.name == "Robot_app"
    assert loader.loads(raw, file="w.json").name == "Robot_app"


def test_knowledge_retrieval_v2_and_router():
    wf = load("knowledge_v2.yml")
    ids = by_id(wf)
    v2 = ids["n1750000000001"]
    assert isinstance(v2, MemorySearchNode) and v2.top_k == 6 and v2.rerank
    assert v2.index_size == 3 * dify_defaults.INDEX_SIZE
    assert ids["n1750000000002"].inputs == ["n1750000000002_router"]  # single mode, 2 datasets
    assert ids["n1750000000003"].rerank is False  # weighted_score: no cross-encoder
    assert ids["n1750000000004"].prompt_tokens > dify_defaults.CONTEXT_TOKENS + 4 * dify_defaults.HISTORY_TOKENS_PER_TURN
    # data references ({{#id.var#}} in the answer) become inputs; the tool after the answer
    # consumes what the answer consumed
    assert set(ids["answer"].inputs) == {"n1750000000004", "n1750000000002", "n1750000000003"}
    assert set(ids["n1750000000005"].inputs) == set(ids["answer"].inputs)
    assert ids["n1750000000005"].kind == "tool"


def test_cpu_nodes_assigners_and_http():
    wf = load("cpu_nodes.yml")
    ids = by_id(wf)
    for nid in ("dx", "lo", "tt", "cd", "va", "vo", "a1", "a2"):
        assert ids[nid].kind == "code", nid
    assert ids["dx"].cpu_ms == 50 and ids["tt"].cpu_ms == 20
    assert ids["cd"].source is None      # javascript: a stand-in, the code is not carried over
    assert ids["hr"].kind == "tool" and ids["hr"].latency_ms == dify_defaults.HTTP_LATENCY_MS
    assert set(ids["va"].inputs) == {"tt", "hr"}
    assert ids["s"].bytes == dify_defaults.FILE_BYTES


def test_if_else_010_top_level_conditions():
    wf = load("ifelse_010.yml")
    ids = by_id(wf)
    br = ids["n11"]
    assert [a.name for a in br.arms] == ["true", "else"]
    assert [[n.id for n in a.nodes] for a in br.arms] == [["n12"], ["n13"]]
    assert ids["n14"].inputs == ["n11"]  # the join names the branch


def test_question_classifier_arms_and_if_else_cases():
    wf = load("classifier.yml")
    ids = by_id(wf)
    br = ids["qc_branch"]
    assert br.inputs == ["qc"] and ids["qc"].kind == "llm"
    assert [a.name for a in br.arms] == ["billing", "tech", "chit-chat", "unused"]
    assert [len(a.nodes) for a in br.arms] == [1, 3, 0, 0]
    ie = ids["ie"]
    assert [a.name for a in ie.arms] == ["true", "5a1b", "else"]
    assert abs(sum(a.probability for a in ie.arms) - 1) < 1e-9
    assert ids["page"].inputs == ["ie"]   # reached from two cases: after the if-else
    assert ids["shared"].inputs == ["qc_branch"]  # reached from two classes: after the branch


def test_parallel_iteration_as_parallel_copies():
    wf = load("parallel_iteration.yml")
    it = by_id(wf)["n3"]
    assert isinstance(it, LoopNode) and it.inputs == ["n2"]
    assert [n.id for n in it.body] == ["n4_p0", "n5_p0", "n4_p1", "n5_p1"]
    assert by_id(wf)["n5_p1"].inputs == ["n4_p1"]
    assert it.expected_iterations == 2 and it.max_iterations == 5  # ceil(3/2), ceil(10/2)


def test_error_strategy_fail_branch():
    wf = load("fail_branch.yml")
    ids = by_id(wf)
    br = ids["main_branch"]
    assert [(a.name, a.probability) for a in br.arms] == [("success", 0.95), ("fail", 0.05)]
    assert [n.id for n in br.arms[1].nodes] == ["backup"]
    assert ids["fmt"].inputs == ["main_branch"] and ids["fmt"].kind == "code"  # default-value: no arm
    hb = ids["hook_branch"]
    assert [[n.id for n in a.nodes] for a in hb.arms] == [["e"], ["log"]]


def test_unknown_node_type_warns_and_degrades():
    with pytest.warns(DifyImportWarning, match=r"'h' \(Approve\): node type 'human-input'"):
        wf = loader.load(FIX / "unknown_type.yml")
    ids = by_id(wf)
    assert ids["h"].kind == "code" and ids["t"].kind == "input"  # trigger-* is a start
    assert "note" not in ids


def test_unknown_hosted_model_gets_default_price_with_warning():
    with pytest.warns(DifyImportWarning, match="qwen2.5:7b.*no known price"):
        wf = loader.load(FIX / "unknown_type.yml")
    llm = by_id(wf)["l"]
    assert (llm.hosted.input_usd_per_million, llm.hosted.output_usd_per_million) == hosted.DEFAULT_PRICE


def test_dsl_06_version_accepted_newer_warned(tmp_path):
    text = (FIX / "unknown_type.yml").read_text()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DifyImportWarning)
        loader.load(FIX / "knowledge_v2.yml")
    assert not [w for w in caught if "newer" in str(w.message)]
    p = tmp_path / "future.yml"
    p.write_text(text.replace("version: 0.6.0", "version: 1.0.0"))
    with pytest.warns(DifyImportWarning, match="newer"):
        loader.load(p)


def test_every_dify_node_type_is_covered():
    seen = set()
    for p in list(FIX.glob("*.yml")) + list(FIX.glob("*.json")) + SHARED_FILES:
        seen |= types_in(p)
    assert DIFY_NODE_TYPES <= seen, DIFY_NODE_TYPES - seen


# ---- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, pattern", [
    ("bad_edge.yml", r"bad_edge.yml:11: Dify edge 'e2': target node '1717000000999' does not exist"),
    ("bad_parent.yml", r"bad_parent.yml:8: Dify node '5' \(Orphan\): its container '1717000000777'"),
    ("not_dify.yml", r"not a Dify export"),
])
def test_bad_input_one_line(name, pattern):
    with pytest.raises(WorkflowError, match=pattern) as e:
        loader.load(FIX / name)
    assert "\n" not in str(e.value)


def test_not_dify_at_all_for_import(tmp_path):
    p = tmp_path / "plain.yml"
    p.write_text("hello: world\n")
    with pytest.raises(WorkflowError, match="not a Dify export"):
        dify.to_yaml(p)
    w = tmp_path / "w.json"
    w.write_text('{"data": "just: [text"}')
    with pytest.raises(WorkflowError, match="API wrapper"):
        loader.load(w)


def test_duplicate_and_missing_fields(tmp_path):
    p = tmp_path / "dup.yml"
    p.write_text("app: {mode: workflow, name: d}\nworkflow:\n  graph:\n    nodes:\n"
                 "    - {id: '1', data: {type: start}}\n    - {id: '1', data: {type: end}}\n"
                 "    edges: []\n")
    with pytest.raises(WorkflowError, match="Dify node '1': duplicate node id"):
        loader.load(p)
    p.write_text("app: {mode: workflow, name: d}\nworkflow:\n  graph:\n    nodes:\n"
                 "    - {id: '1', data: {type: start}}\n    edges:\n    - {source: '1'}\n")
    with pytest.raises(WorkflowError, match="no `target`"):
        loader.load(p)


def test_validation_errors_name_a_line_of_the_dify_file(tmp_path):
    p = tmp_path / "cyc.yml"
    p.write_text("app: {mode: workflow, name: c}\nworkflow:\n  graph:\n    nodes:\n"
                 "    - {id: a, data: {type: code}}\n    - {id: b, data: {type: code}}\n"
                 "    edges:\n    - {source: a, target: b}\n    - {source: b, target: a}\n")
    with pytest.raises(WorkflowError, match=r"cyc.yml:[56]: .*cycle"):
        loader.load(p)


# ---- --self-host ----------------------------------------------------------------------------------

def test_self_host_replaces_hosted_model():
    data = native(FIX / "classifier.yml", {"gpt-4o": "llama-3-70b"})
    arms = {a["name"]: a["nodes"] for a in data["nodes"][2]["arms"]}
    assert arms["billing"][0]["model"] == "llama-3-70b" and "hosted" not in arms["billing"][0]
    assert data["nodes"][1]["hosted"]["model"] == "gpt-4o-mini"  # matched by the exact name
    data = native(FIX / "classifier.yml", {"openai/gpt-4o-mini": "llama-3-8b"})  # provider/name
    assert data["nodes"][1]["model"] == "llama-3-8b"
    wf = load("classifier.yml", self_host={"gpt-4o": "llama-3-70b", "gpt-4o-mini": "llama-3-8b"})
    assert by_id(wf)["bill"].model == "llama-3-70b" and by_id(wf)["qc"].model == "llama-3-8b"


def test_self_host_errors():
    with pytest.raises(WorkflowError, match="--self-host gpt-5: no hosted model"):
        load("classifier.yml", self_host={"gpt-5": "llama-3-70b"})
    with pytest.raises(WorkflowError, match="unknown model 'no-such-card'"):
        load("classifier.yml", self_host={"gpt-4o": "no-such-card"})


# ---- to_yaml and the CLI ------------------------------------------------------------------------------

def test_to_yaml_round_trips_and_lists_defaults(tmp_path):
    text = dify.to_yaml(FIX / "classifier.yml", {"gpt-4o": "llama-3-70b"})
    assert text.startswith("# Imported from the Dify export classifier.yml")
    assert "prompt_tokens" in text.split("name:")[0]  # the defaults are listed in comments
    p = tmp_path / "native.yaml"
    p.write_text(text)
    wf = loader.load(p)
    assert by_id(wf)["bill"].model == "llama-3-70b"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hetagent.cli", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_cli_import_and_compile(tmp_path):
    out = tmp_path / "wf.yaml"
    r = _cli("import", "dify", str(FIX / "agent_node.yml"), "-o", str(out))
    if r.returncode == 2 and "invalid choice" in r.stderr:
        pytest.skip("the CLI has no `import` command yet")
    assert r.returncode == 0, r.stderr
    assert loader.load(out).name == "Agent_node"
    r = _cli("compile", str(FIX / "agent_node.yml"), "--self-host", "claude-3-5-sonnet-20241022=llama-3-70b")
    assert r.returncode == 0, r.stderr
    assert "llm.remote" not in r.stdout
    bad = tmp_path / "bad.yaml"
    r = _cli("import", "dify", str(FIX / "bad_edge.yml"), "-o", str(bad))
    assert r.returncode == 1 and not bad.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "1717000000999" in r.stderr
