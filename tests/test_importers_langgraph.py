"""`hetagent import langgraph`: real LangGraph programs (tests/fixtures/langgraph, fake chat models) read
without running them: structure, models, routing warnings, langgraph.json handling, refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph")

from hetagent.errors import HetagentError, InputError  # noqa: E402
from hetagent.workflow import loader  # noqa: E402
from hetagent.workflow.importers.base import render  # noqa: E402
from hetagent.workflow.importers.langgraph import import_langgraph  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "langgraph"


def _load(imp, tmp_path, name="wf.yaml"):
    p = tmp_path / name
    p.write_text(render(imp, file=str(p)))
    return loader.load(p)


def test_known_agent_structure_and_summary(tmp_path):
    imp = import_langgraph(f"{FIX / 'support_agent.py'}:graph")
    assert imp.summary == {"nodes": 4, "edges": 7, "llm_nodes": 3, "tool_nodes": 2, "loops": 1, "branches": 2,
                           "subagents": 0, "warnings": []}
    wf = _load(imp, tmp_path)
    assert [n.kind for n in wf.nodes] == ["input", "llm", "branch", "llm", "output"]
    route = wf.nodes[2]
    assert [a.name for a in route.arms] == ["loop agent", "answer (after the branch)"]
    loop = route.arms[0].nodes[0]
    assert loop.kind == "loop" and [n.id for n in loop.body] == ["agent", "tools"]
    assert sorted(a.name for a in loop.body[1].arms) == ["lookup_order", "web_search"]
    router = wf.nodes[1]
    assert router.hosted.model == "gpt-4o-mini" and router.hosted.input_usd_per_million == 0.15
    assert router.prompt_tokens > 512          # the router's prompt text plus the state default
    text = render(imp)
    assert "# prompt_tokens" in text and "found as a ScriptedChatModel object" in text


def test_prebuilt_agents_become_model_tool_loops(tmp_path):
    for attr, tools in (("react", 2), ("v1_agent", 1)):
        wf = _load(import_langgraph(f"{FIX / 'variety.py'}:{attr}"), tmp_path, f"{attr}.yaml")
        loop = wf.nodes[1]
        assert loop.kind == "loop" and loop.body[0].kind == "llm"
        assert loop.body[0].hosted.model == "gpt-4o"
        tool_nodes = [n for n in loop.body[1:] if n.kind == "tool"] + [
            x for n in loop.body[1:] if n.kind == "branch" for a in n.arms for x in a.nodes]
        assert len(tool_nodes) == tools


def test_command_routing_declared_and_undeclared(tmp_path):
    imp = import_langgraph(f"{FIX / 'variety.py'}:commands")
    assert any("node 'reply' routes with Command but declares no destinations" in w for w in imp.warnings)
    assert any("audit cannot be reached" in w for w in imp.warnings)
    wf = _load(imp, tmp_path)
    route = next(n for n in wf.nodes if n.kind == "branch")
    assert [a.name for a in route.arms] == ["reply", "end"] and route.arms[1].nodes == []


def test_send_fan_out_subgraph_model_in_node_and_interrupt(tmp_path):
    imp = import_langgraph(f"{FIX / 'variety.py'}:report")
    assert any("'review' waits for a human" in w for w in imp.warnings)
    wf = _load(imp, tmp_path)
    ids = {n.id: n for n in wf.walk()}
    copies = [n for n in wf.walk() if n.kind == "subagent" and n.id.startswith("write_section_send_")]
    assert len(copies) == 3                                           # FANOUT_WIDTH parallel sub-agents
    inner = [n for n in copies[0].target.nodes if n.kind == "llm"][0]
    assert inner.hosted.model == "claude-3-5-haiku"                  # a module constant in ChatX(model=...)
    assert ids["review"].inputs == [c.id for c in copies]            # the join
    assert ids["summary"].kind == "subagent" and [n.kind for n in ids["summary"].target.nodes] == [
        "input", "llm", "output"]


def test_self_host_and_compile(tmp_path):
    imp = import_langgraph(f"{FIX / 'support_agent.py'}:graph", self_host={"gpt-4o-mini": "llama-3-8b"})
    wf = _load(imp, tmp_path)
    assert all(n.model == "llama-3-8b" for n in wf.walk() if n.kind == "llm")
    with pytest.raises(HetagentError, match="--self-host gpt-5: the program uses no model of that name"):
        import_langgraph(f"{FIX / 'support_agent.py'}:graph", self_host={"gpt-5": "llama-3-8b"})
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "compile", str(tmp_path / "wf.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "llm.prefill" in r.stdout and "llm.remote" not in r.stdout


def test_project_file_graph_names_env_and_dependencies(tmp_path):
    proj = tmp_path / "proj"
    pkg = proj / "src" / "myagent"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "prompts.py").write_text('SYSTEM = "You answer questions about invoices, briefly and politely."\n')
    (pkg / "graph.py").write_text(
        "import os\nfrom langgraph.graph import StateGraph, MessagesState, START, END\n"
        "from langchain_core.language_models.fake_chat_models import GenericFakeChatModel\n"
        "from langchain_core.messages import AIMessage\nfrom myagent.prompts import SYSTEM\n"
        "assert os.environ['INVOICE_DB'] == 'sqlite://x'\n"
        "class M(GenericFakeChatModel):\n    model_name: str = 'gpt-4.1-mini'\n"
        "m = M(messages=iter([AIMessage('x')]))\n"
        "def answer(state: MessagesState):\n    return {'messages': [m.invoke([('system', SYSTEM)])]}\n"
        "b = StateGraph(MessagesState)\nb.add_node('answer', answer)\nb.add_edge(START, 'answer')\n"
        "b.add_edge('answer', END)\ngraph = b.compile()\n")
    (proj / ".env").write_text("INVOICE_DB=sqlite://x\n")
    (proj / "langgraph.json").write_text(json.dumps({"dependencies": ["."], "env": ".env", "graphs": {
        "first one": "./src/myagent/graph.py:graph", "missing": "./src/myagent/nope.py:graph"}}))
    imp = import_langgraph(str(proj / "langgraph.json"), graph="first one")
    assert imp.summary["llm_nodes"] == 1
    assert imp.data["name"] == "first_one"
    llm = imp.data["nodes"][1]
    assert llm["hosted"]["model"] == "gpt-4.1-mini"
    (proj / ".env").unlink()          # an absent env file is ignored; the program itself then fails
    with pytest.raises(HetagentError, match=r"loading the program failed: KeyError: .INVOICE_DB. \(at .*graph.py:6\)"):
        import_langgraph(str(proj / "langgraph.json"))
    with pytest.raises(InputError, match=r"langgraph.json:1: field 'graphs.missing': .*nope.py does not exist"):
        import_langgraph(str(proj / "langgraph.json"), graph="missing")
    with pytest.raises(InputError, match="no graph 'other'; graphs: first one, missing"):
        import_langgraph(str(proj / "langgraph.json"), graph="other")


def test_missing_package_network_and_not_a_graph_are_one_line(tmp_path):
    cases = {
        "needs.py": ("import no_such_package_xyz\ngraph = None\n",
                     r"needs the module 'no_such_package_xyz', which is not installed \(at .*needs.py:1\)"),
        "net.py": ("import socket\nsocket.create_connection(('example.org', 443))\ngraph = None\n",
                   r"opened a network connection to .*example.org.* refuses it"),
        "notgraph.py": ("graph = 42\n", r"'graph' is a int, not a LangGraph graph"),
    }
    for name, (src, pattern) in cases.items():
        (tmp_path / name).write_text(src)
        with pytest.raises(HetagentError, match=pattern) as e:
            import_langgraph(f"{tmp_path / name}:graph")
        assert "\n" not in str(e.value)
    with pytest.raises(HetagentError, match="expected path/to/file.py:attr"):
        import_langgraph("no_colon_here")


def test_cli_json_one_line_and_nothing_written_on_error(tmp_path):
    out = tmp_path / "wf.yaml"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "import", "langgraph",
                        f"{FIX / 'variety.py'}:commands", "-o", str(out), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert list(doc) == ["nodes", "edges", "llm_nodes", "tool_nodes", "loops", "branches", "subagents",
                         "warnings", "workflow"]
    assert doc["workflow"] == str(out) and len(doc["warnings"]) == 2
    bad = tmp_path / "bad.yaml"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "import", "langgraph",
                        f"{FIX / 'variety.py'}:nothing", "-o", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and not bad.exists() and len(r.stderr.strip().splitlines()) == 1
    assert "has no attribute 'nothing'" in r.stderr
