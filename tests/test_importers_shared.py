"""Every real trace file and LangGraph program in ../shared/data/agents (SOURCES.md says what each is and
its traps): each imports, compiles and plans, or is refused with one line saying why."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hetagent.errors import HetagentError
from hetagent.workflow import loader
from hetagent.workflow.importers.base import render
from hetagent.workflow.importers.traces import import_traces

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT.parent / "shared" / "data" / "agents"
TRACES = sorted((AGENTS / "traces").glob("*.json")) if AGENTS.is_dir() else []
needs_shared = pytest.mark.skipif(not TRACES, reason=f"{AGENTS} is absent")

# file -> (traces, llm calls, tool calls, input tokens, output tokens, skipped spans), from SOURCES.md
EXPECTED = {
    "anyagent_OPENAI_trace.json": (1, 3, 2, 269 + 359 + 392, 16 + 14 + 46, 0),
    "anyagent_GOOGLE_trace.json": (1, 3, 3, 672 + 770 + 809, 16 + 14 + 56, 0),
    "anyagent_AGNO_trace.json": (1, 3, 2, 395 + 483 + 518, 16 + 14 + 44, 0),
    "anyagent_TINYAGENT_trace.json": (1, 4, 3, 328 + 414 + 449 + 178, 16 + 14 + 43 + 83, 0),
    "langfuse_crewai-2025-07-11.trace.json": (1, 1, 0, 190, 164, 0),
    "langfuse_pydantic-ai-tools-2025-12-04.trace.json": (1, 4, 3, 417 + 131 + 502 + 265, 53 + 69 + 14 + 73, 3),
    "langfuse_agno-2025-06-11.trace.json": (1, 2, 1, 163 + 663, 20 + 225, 2),
    "langfuse_koog-2025-08-26.trace.json": (1, 2, 2, 47 + 168, 106 + 19, 0),
    "langfuse_vercel-aisdk-2025-11-17.trace.json": (1, 1, 1, 62, 85, 1),
    "langfuse_csharp-agent-with-gemini-2026-03-09.trace.json": (1, 3, 2, 3004 + 2546 + 2497, 167 + 47 + 200, 2),
}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hetagent.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@needs_shared
def test_every_shared_trace_file_is_expected():
    assert sorted(p.name for p in TRACES) == sorted(EXPECTED)


@needs_shared
@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
def test_shared_trace_imports_compiles_and_plans(path, tmp_path):
    traces, llm, tools, tin, tout, skipped = EXPECTED[path.name]
    imp = import_traces([path])
    s = imp.summary
    assert (s["traces"], s["llm_calls"], s["tool_calls"]) == (traces, llm, tools)
    assert s["tokens_per_request"] == {"input": tin, "output": tout}
    assert len(s["skipped"]) == skipped
    out = tmp_path / "wf.yaml"
    out.write_text(render(imp, file=str(out)))
    loader.load(out)
    r = _cli("compile", str(out))
    assert r.returncode == 0 and "llm.remote" in r.stdout, r.stderr
    r = _cli("plan", str(out), "--json")
    assert r.returncode == 0, r.stderr
    tco = json.loads(r.stdout)["tco"]
    planned = tco["per_request"] / tco["per_million_tokens"] * 1e6
    assert abs(planned - (tin + tout)) / (tin + tout) < 0.05


@needs_shared
def test_shared_trace_traps():
    by = {p.name: p for p in TRACES}
    agno = import_traces([by["langfuse_agno-2025-06-11.trace.json"]]).summary
    assert all("wraps the LLM call" in x["why"] for x in agno["skipped"])          # nested pairs: inner counted
    vercel = import_traces([by["langfuse_vercel-aisdk-2025-11-17.trace.json"]]).summary
    assert "ai.generateText" in vercel["skipped"][0]["span"] and "(14/43 tokens)" in vercel["skipped"][0]["why"]
    google = import_traces([by["anyagent_GOOGLE_trace.json"]])
    assert any("6 span(s) name a parent that is not in the files" in w for w in google.warnings)
    tools = [x for n in google.data["nodes"] if n["kind"] == "loop" for b in n["body"] if b["kind"] == "branch"
             for a in b["arms"] for x in a["nodes"]]
    assert "final_output" in {t["tool"] for t in tools}                              # a final-answer tool counts
    koog = import_traces([by["langfuse_koog-2025-08-26.trace.json"]]).data["nodes"]
    parallel = [n for n in koog if n["kind"] == "tool"]                              # typed SPAN, run in parallel
    assert {n["tool"] for n in parallel} == {"HelloTool", "ByeTool"} and parallel[0]["inputs"] == parallel[1]["inputs"]
    pyd = import_traces([by["langfuse_pydantic-ai-tools-2025-12-04.trace.json"]])
    assert all("not a call, but reports" in x["why"] for x in pyd.summary["skipped"])   # agent totals
    sub = next(n for n in pyd.data["nodes"] if n["kind"] == "subagent")
    assert len([n for n in sub["inline"]["nodes"] if n["kind"] == "tool"]) == 3       # 3 tools in parallel
    csharp = import_traces([by["langfuse_csharp-agent-with-gemini-2026-03-09.trace.json"]])
    assert any("the trace began upstream" in w for w in csharp.warnings)


@needs_shared
def test_all_shared_traces_at_once(tmp_path):
    out = tmp_path / "all.yaml"
    r = _cli("import", "traces", *map(str, TRACES), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["traces"] == 10 and doc["llm_calls"] == sum(e[1] for e in EXPECTED.values())
    wf = loader.load(out)
    assert wf.nodes[1].kind in ("llm", "branch", "loop")
    assert _cli("compile", str(out)).returncode == 0


# ---- the LangGraph programs ------------------------------------------------------------------------------
LG = AGENTS / "langgraph"
# (target, graph) -> None when it imports, else the refusal it must give (a regex of its one line)
PROGRAMS = {
    ("agents-from-scratch/langgraph.json", "langgraph101"): None,
    ("agents-from-scratch/langgraph.json", "email_assistant"): None,
    ("agents-from-scratch/langgraph.json", "email_assistant_hitl"): None,
    ("agents-from-scratch/langgraph.json", "email_assistant_hitl_memory"): None,
    ("agents-from-scratch/langgraph.json", "email_assistant_hitl_memory_gmail"):
        r"email_assistant_hitl_memory_gmail.py does not exist",
    ("agents-from-scratch/langgraph.json", "cron"): r"cron.py does not exist",
    ("local-deep-researcher/langgraph.json", None): None,
    ("executive-ai-assistant/langgraph.json", "main"):
        r"needs the module 'langchain.agents.react'|imports 'langchain.agents.react'",
    ("executive-ai-assistant/langgraph.json", "cron"): r"imports 'langchain_core.pydantic_v1', which the installed",
    ("executive-ai-assistant/langgraph.json", "general_reflection_graph"): None,
    ("executive-ai-assistant/langgraph.json", "multi_reflection_graph"): None,
    ("langgraph-bigtool/langgraph_bigtool/graph.py:create_agent", None):
        r"'create_agent' is a function of 2 arguments, not a graph",
}


@needs_shared
@pytest.mark.parametrize("target, graph", list(PROGRAMS), ids=lambda x: str(x))
def test_shared_langgraph_program(target, graph, tmp_path):
    pytest.importorskip("langgraph")
    for mod in ("langchain_openai", "langchain_anthropic", "langchain_ollama", "html2text", "markdownify",
                "tavily", "duckduckgo_search", "langchain_community"):
        pytest.importorskip(mod)     # the programs' own dependencies (the langgraph extra brings them)
    from hetagent.workflow.importers.langgraph import import_langgraph
    refusal = PROGRAMS[(target, graph)]
    where = str(LG / target) if ":" not in target else f"{LG / target.split(':')[0]}:{target.split(':')[1]}"
    if refusal is not None:
        with pytest.raises(HetagentError, match=refusal) as e:
            import_langgraph(where, graph=graph)
        assert "\n" not in str(e.value)
        return
    imp = import_langgraph(where, graph=graph)
    out = tmp_path / "wf.yaml"
    out.write_text(render(imp, file=str(out)))
    assert imp.summary["llm_nodes"] >= 1
    r = _cli("compile", str(out))
    assert r.returncode == 0, r.stderr
    r = _cli("plan", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tco"]["per_request"] > 0


@needs_shared
def test_shared_program_details():
    pytest.importorskip("langchain_openai")
    pytest.importorskip("langchain_ollama")
    pytest.importorskip("langchain_community")
    from hetagent.workflow.importers.langgraph import import_langgraph
    imp = import_langgraph(str(LG / "agents-from-scratch/langgraph.json"), graph="email_assistant")
    assert imp.summary["subagents"] == 1 and imp.summary["loops"] == 1     # triage -> response-agent subgraph
    sub = next(n for n in imp.data["nodes"] if n["kind"] == "branch")["arms"][0]["nodes"][0]
    loop = next(n for n in sub["inline"]["nodes"] if n["kind"] == "loop")
    assert loop["body"][0]["hosted"]["model"] == "gpt-4.1"                   # init_chat_model("openai:gpt-4.1")
    names = {a["name"] for a in loop["body"][1]["arms"]}
    assert {"write_email", "schedule_meeting", "check_calendar_availability", "Done"} <= names
    ldr = import_langgraph(str(LG / "local-deep-researcher/langgraph.json"))
    assert ldr.summary["loops"] == 1                                             # web_research ... reflect loop
    assert any("llama3.2" in w and "local runtime" in w for w in ldr.warnings)   # Configuration.local_llm default
    hitl = import_langgraph(str(LG / "agents-from-scratch/langgraph.json"), graph="email_assistant_hitl")
    assert any("waits for a human" in w for w in hitl.warnings)
    multi = import_langgraph(str(LG / "executive-ai-assistant/langgraph.json"), graph="multi_reflection_graph")
    assert any("'determine_what_to_update' routes with Command and Send but declares no destinations" in w
               for w in multi.warnings)


@needs_shared
def test_bigtool_library_in_a_program(tmp_path):
    """langgraph-bigtool is a library: a small program builds its agent (fake model, two tools)."""
    pytest.importorskip("langgraph")
    from hetagent.workflow.importers.langgraph import import_langgraph
    prog = tmp_path / "bigtool_agent.py"
    prog.write_text(
        f"import sys\nsys.path.insert(0, {str(LG / 'langgraph-bigtool')!r})\n"
        "from langchain_core.language_models.fake_chat_models import GenericFakeChatModel\n"
        "from langchain_core.messages import AIMessage\nfrom langchain_core.tools import tool\n"
        "from langgraph_bigtool import create_agent\n"
        "class M(GenericFakeChatModel):\n    model_name: str = 'gpt-4o-mini'\n"
        "    def bind_tools(self, tools, **kw):\n        return self\n"
        "@tool\ndef add(a: int, b: int) -> int:\n    '''Add.'''\n    return a + b\n"
        "@tool\ndef mul(a: int, b: int) -> int:\n    '''Multiply.'''\n    return a * b\n"
        "graph = create_agent(M(messages=iter([AIMessage('x')])), {'add': add, 'mul': mul}).compile()\n")
    imp = import_langgraph(f"{prog}:graph")
    assert imp.summary["loops"] == 1 and imp.summary["llm_nodes"] == 1
    loop = next(n for n in imp.data["nodes"] if n["kind"] == "loop")
    route = next(n for n in loop["body"] if n["kind"] == "branch")
    assert {a["name"] for a in route["arms"]} == {"select_tools", "tools"}     # Send per tool call
