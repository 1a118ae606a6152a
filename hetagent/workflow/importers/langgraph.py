"""`hetagent import langgraph TARGET [--graph NAME] [-o workflow.yaml] [--json] [--self-host NAME=ID]`:
a workflow from a LangGraph program, read without running it.

    imp = import_langgraph("agent.py:graph")                   # a file and an attribute
    imp = import_langgraph("my_pkg.agent:graph")               # a module on sys.path
    imp = import_langgraph("langgraph.json", graph="agent")    # a LangGraph project (default: its first)

A `langgraph.json` names graphs as `./path/file.py:attr`; local paths in its `dependencies` (and their
`src/` folders) go on sys.path, other dependencies must already be installed (nothing is installed), an
`env` file that exists is read for variables the environment lacks (absent: ignored). The program is
loaded in a child process (langgraph_probe) with placeholder credentials and the network refused; a
missing package is one line naming it.

The graph becomes a workflow (structure.py turns edges into branches and loops):
  - a node whose code uses a chat model -> an llm node: the model named in the program (an object's
    model name, a literal or constant in `ChatX(model=...)` / `init_chat_model(...)`, or a
    configuration class default), hosted (llm.remote, priced from hosted.PRICES; DEFAULT_PRICE and a
    warning when unknown or not found) unless `--self-host NAME=ID` maps it to a catalog model;
    prompt_tokens = the prompt strings its code references + STATE_TOKENS + TOOL_SCHEMA_TOKENS per
    bound tool, output_tokens = OUTPUT_TOKENS;
  - a ToolNode, or a node that calls tools and no model -> a tool node (a branch over the tools, equal
    shares, when it may call several), TOOL_LATENCY_MS each; tools a model node references are bound
    to its model (their schemas count in its prompt);
  - a compiled graph used as a node (or called inside one) -> an inline sub-agent; a prebuilt agent
    (create_react_agent, create_agent) built inside a node -> a sub-agent looping llm <-> tools;
  - a node that calls interrupt() -> code (a human's wait is not timed: a warning says so);
    any other node -> code (CPU_MS);
  - conditional edges and Command destinations -> a branch with equal shares; an edge to END -> an
    empty arm; cycles -> loops (LOOP_EXPECTED expected iterations, LOOP_MAX at most); a Send fan-out
    -> parallel sub-agents (FANOUT_WIDTH copies; FANOUT_TOOL_CALLS when the target runs tools: one
    Send per tool call); static edges to several nodes -> nodes side by side.
Command or Send targets the graph does not declare (`Command[Literal[...]]`, `destinations=`) are
warnings naming the node. `hetagent import traces --structure` replaces these defaults with measured
numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hetagent import configs
from hetagent.errors import HetagentError, InputError
from hetagent.workflow import safeyaml
from hetagent.workflow.importers.base import Imported, counts
from hetagent.workflow.importers.common import symbol
from hetagent.workflow.importers.hosted import DEFAULT_PRICE, LOCAL_PROVIDERS, price_of

STATE_TOKENS = 512            # the state (messages) a node hands its model beyond its own prompt text
TOOL_SCHEMA_TOKENS = 150      # per tool bound to the model
OUTPUT_TOKENS = 256
INPUT_TEXT_TOKENS = 64        # the request
TOOL_LATENCY_MS = 800.0
CPU_MS = 1.0
LOOP_EXPECTED = 2.0
LOOP_MAX = 5
FANOUT_WIDTH = 3
FANOUT_TOOL_CALLS = 1
PROBE_TIMEOUT_S = 300


def import_langgraph(target: str, *, graph: str | None = None, self_host: dict[str, str] | None = None,
                     config_dir=None) -> Imported:
    spec, label = resolve_target(target, graph)
    probed = probe(spec, label)
    from hetagent.workflow.importers.langgraph_structure import GraphWriter
    known = set(configs.list_ids("models", config_dir))
    writer = GraphWriter(self_host or {}, known)
    name = symbol(spec.get("graph_name") or spec["attr"]) or "langgraph_agent"
    data = writer.workflow(name, probed["graph"], label)
    writer.check_self_host()
    warns = probed.get("warnings", []) + writer.warnings
    c = counts(data)
    header = [f"Imported by `hetagent import langgraph` from {label} (read, not run).",
              "LangGraph records no token counts, latencies, iteration counts or branch shares: the values "
              "below marked as defaults are guesses (hetagent/workflow/importers/langgraph.py documents each);",
              "`hetagent import traces FILE --structure THIS.yaml` fills in measured ones.",
              "Add an SLA, e.g.  sla: {latency_ms: 10000, percentile: 95}"]
    if warns:
        header += ["Warnings:"] + [f"  {w}" for w in warns]
    summary = {"nodes": writer.graph_nodes, "edges": writer.graph_edges, "llm_nodes": c.get("llm", 0),
               "tool_nodes": c.get("tool", 0), "loops": c.get("loop", 0), "branches": c.get("branch", 0),
               "subagents": c.get("subagent", 0), "warnings": warns}
    return Imported("langgraph", data, header, writer.notes, warns, summary)


# ---- the target ------------------------------------------------------------------------------------

def resolve_target(target: str, graph: str | None) -> tuple[dict, str]:
    """(probe spec, label): what to load and how to call it in messages."""
    t = str(target)
    if t.endswith(".json"):
        return _from_project(Path(t), graph)
    if graph is not None:
        raise HetagentError("--graph picks a graph of a langgraph.json; TARGET here is "
                            f"'{t}', not a langgraph.json")
    if ":" not in t:
        raise HetagentError(f"TARGET '{t}': expected path/to/file.py:attr, package.module:attr or a "
                            "langgraph.json")
    where, attr = t.rsplit(":", 1)
    if not attr:
        raise HetagentError(f"TARGET '{t}': no attribute after ':'")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise InputError("no such Python file", file=where)
        folder = path.resolve().parent
        while (folder / "__init__.py").exists() and folder.parent != folder:
            folder = folder.parent      # the folder above the file's package: `pkg/graph.py` is pkg.graph
        return {"file": str(path.resolve()), "attr": attr, "sys_path": [str(folder)], "env": {}}, t
    return {"module": where, "attr": attr, "sys_path": [str(Path.cwd())], "env": {}}, t


def _from_project(path: Path, graph: str | None) -> tuple[dict, str]:
    file = str(path)
    if not path.is_file():
        raise InputError("no such file", file=file)
    located = safeyaml.load(safeyaml.read_text(path), file)
    doc = located.data
    if not isinstance(doc, dict) or not isinstance(doc.get("graphs"), dict) or not doc["graphs"]:
        raise InputError("not a LangGraph project file: no `graphs` mapping", file=file,
                         line=located.line_of(("graphs",)) or 1, field="graphs")
    graphs = doc["graphs"]
    name = graph if graph is not None else next(iter(graphs))
    if name not in graphs:
        raise InputError(f"no graph '{name}'; graphs: {', '.join(graphs)}", file=file,
                         line=located.line_of(("graphs",)), field="graphs")
    entry = graphs[name]
    if isinstance(entry, dict):
        entry = entry.get("path")
    line = located.line_of(("graphs", name))
    if not isinstance(entry, str) or ":" not in entry:
        raise InputError(f"graph '{name}': expected 'path/file.py:attr', got {entry!r}", file=file, line=line,
                         field=f"graphs.{name}")
    where, attr = entry.rsplit(":", 1)
    base = path.resolve().parent
    sys_path: list[str] = []
    deps = doc.get("dependencies") or []
    if not isinstance(deps, list):
        raise InputError("`dependencies` is not a list", file=file, line=located.line_of(("dependencies",)),
                         field="dependencies")
    for d in deps:
        if isinstance(d, str) and (d.startswith(".") or d.startswith("/")):
            folder = (base / d).resolve()
            for f in (folder / "src", folder):
                if f.is_dir() and str(f) not in sys_path:
                    sys_path.append(str(f))
    env = {}
    env_entry = doc.get("env")
    if isinstance(env_entry, dict):
        env = {str(k): str(v) for k, v in env_entry.items()}
    elif isinstance(env_entry, str) and (base / env_entry).is_file():
        env = _read_env_file(base / env_entry)
    spec: dict = {"attr": attr, "sys_path": sys_path, "env": env, "cwd": str(base), "graph_name": name}
    if where.endswith(".py") or "/" in where:
        py = (base / where).resolve()
        if not py.is_file():
            raise InputError(f"graph '{name}': {where} does not exist", file=file, line=line,
                             field=f"graphs.{name}")
        spec["file"] = str(py)
        if not any(py.is_relative_to(p) for p in sys_path):
            sys_path.append(str(py.parent))
    else:
        spec["module"] = where
    return spec, f"{file} graph '{name}' ({entry})"


def _read_env_file(path: Path) -> dict:
    env = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.removeprefix("export ").split("=", 1)
        env[k.strip()] = v.strip().strip("'\"")
    return env


def probe(spec: dict, label: str) -> dict:
    """Run langgraph_probe in a child process; its answer, or HetagentError with its one line."""
    with tempfile.TemporaryDirectory(prefix="hetagent-langgraph-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec))
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[3])      # hetagent importable in the child as here
        env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
        try:
            r = subprocess.run([sys.executable, "-m", "hetagent.workflow.importers.langgraph_probe",
                                str(spec_file), str(out_file)], capture_output=True, text=True, env=env,
                               timeout=PROBE_TIMEOUT_S, cwd=spec.get("cwd") or None)
        except subprocess.TimeoutExpired:
            raise HetagentError(f"{label}: loading the program took more than {PROBE_TIMEOUT_S} s") from None
        if not out_file.exists():
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise HetagentError(f"{label}: loading the program failed (exit {r.returncode}): {last[:300]}")
        out = json.loads(out_file.read_text())
    if "error" in out:
        raise HetagentError(f"{label}: {out['error']}")
    return out["graph"]


# ---- hosted models -----------------------------------------------------------------------------------

def model_fields(model: dict | None, self_host: dict, used: set, known: set, warn, note) -> dict:
    """`model` (self-hosted) or `hosted` fields for a model the program names (None: not found)."""
    name = (model or {}).get("name")
    provider = (model or {}).get("provider") or "unknown"
    if not name:
        name = "unknown"
    for key in (name, f"{provider}/{name}", f"{provider}:{name}"):
        for k, v in self_host.items():
            if k.lower() == key.lower():
                used.add(k)
                note(f"model {name}: self-hosted as {v} (--self-host)")
                return {"model": v}
    if name.lower() in known:
        return {"model": name.lower()}
    price = price_of(name) if name != "unknown" else None
    if price is None:
        pin, pout = DEFAULT_PRICE
        local = " (served by a local runtime, probably on your own hardware)" if provider in LOCAL_PROVIDERS else ""
        what = f"model '{name}'" if name != "unknown" else "a model whose name is computed at run time"
        warn(f"{what} from {provider}{local} has no known price: priced at ${pin}/${pout} per million "
             f"tokens; --self-host {name}=MODEL runs an open model instead")
        note(f"model {provider}/{name}: default price ${pin}/${pout} per million tokens "
             f"({(model or {}).get('how', 'no model found')})")
    else:
        pin, pout, src, date = price
        note(f"model {name}: ${pin}/${pout} per million tokens, {src} ({date}); found as "
             f"{(model or {}).get('how', '?')}")
    return {"hosted": {"provider": provider, "model": name, "input_usd_per_million": pin,
                       "output_usd_per_million": pout}}
