"""The child process of `hetagent import langgraph`: loads a LangGraph program and writes what its graph
holds as JSON, so that the program's imports, prints and environment stay out of hetagent's process.

    python -m hetagent.workflow.importers.langgraph_probe SPEC.json OUT.json

SPEC names the file or module, the attribute, the folders for sys.path and the environment to add.
The program is loaded with placeholder credentials for the providers it may construct clients for, with
tracing to LangSmith off and every network connection refused (loading must not call a model or a
tool). OUT receives {"graph": ...} or {"error": "one line"}.

For each graph node it records what the node's code references, following names into closures,
module globals and the program's own helper functions (not into libraries): chat models (instances,
or classes it constructs, with the model named in the call, a module constant or a configuration
default), tools (BaseTool objects, ToolNode), compiled graphs (sub-agents), prompt strings, prebuilt
agents built at run time, and whether it calls interrupt(), returns Command or sends Send.
"""
from __future__ import annotations

import ast
import asyncio
import functools
import importlib
import importlib.util
import inspect
import json
import os
import socket
import sys
import textwrap
import traceback
import types
from pathlib import Path

PLACEHOLDER = "hetagent-import-placeholder"
CREDENTIALS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY",
               "COHERE_API_KEY", "GROQ_API_KEY", "FIREWORKS_API_KEY", "TOGETHER_API_KEY", "DEEPSEEK_API_KEY",
               "XAI_API_KEY", "TAVILY_API_KEY", "AZURE_OPENAI_API_KEY", "HUGGINGFACEHUB_API_TOKEN",
               "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "PERPLEXITY_API_KEY", "EXA_API_KEY")
QUIET = {"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false", "LANGSMITH_OTEL_ENABLED": "false"}
PROVIDERS = {"langchain_openai": "openai", "langchain_anthropic": "anthropic", "langchain_ollama": "ollama",
             "langchain_google_genai": "google", "langchain_google_vertexai": "vertexai",
             "langchain_mistralai": "mistral", "langchain_groq": "groq", "langchain_aws": "bedrock",
             "langchain_fireworks": "fireworks", "langchain_together": "together", "langchain_deepseek": "deepseek",
             "langchain_xai": "xai", "langchain_cohere": "cohere", "langchain_huggingface": "huggingface"}
LOCAL_HINTS = ("ollama", "lmstudio", "lm_studio", "vllm", "llamacpp", "llama_cpp", "localai")
AGENT_FACTORIES = ("create_react_agent", "create_agent", "create_tool_calling_agent")
MAX_DEPTH = 3


class NetworkRefused(Exception):
    pass


def _refuse(*args, **kwargs):
    target = args[1] if len(args) > 1 else (args[0] if args else "?")
    raise NetworkRefused(f"the program opened a network connection to {target!r} while loading; "
                         "`hetagent import langgraph` refuses it (it never calls a model or a tool)")


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    for k in CREDENTIALS:
        os.environ.setdefault(k, PLACEHOLDER)
    os.environ.update(QUIET)
    for k, v in (spec.get("env") or {}).items():
        os.environ.setdefault(k, str(v))
    socket.socket.connect = _refuse              # loading must not reach a provider or a tool
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    for p in reversed(spec.get("sys_path") or []):
        sys.path.insert(0, p)
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    try:
        out = {"graph": Probe(spec).run()}
    except NetworkRefused as e:
        out = {"error": str(e)}
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top != e.name and importlib.util.find_spec(top) is not None:
            msg = (f"the program imports '{e.name}', which the installed {top} {_version(top)} does not have"
                   f"{_where(e)}; the program was written for another version of {top}")
        elif top in ("langgraph", "langchain_core"):
            msg = (f"`hetagent import langgraph` needs the package '{top}'; install it with "
                   "pip install 'hetagent[langgraph]'")
        else:
            msg = (f"the program needs the module '{e.name}', which is not installed{_where(e)}; install "
                   "the program's dependencies (hetagent installs nothing)")
        out = {"error": msg}
    except ProbeError as e:
        out = {"error": str(e)}
    except Exception as e:  # the program's own failure while loading: one line, with where it happened
        msg = " ".join(str(e).split()) or type(e).__name__
        out = {"error": f"loading the program failed: {type(e).__name__}: {msg[:300]}{_where(e)}"}
    Path(out_path).write_text(json.dumps(out))
    return 0


class ProbeError(Exception):
    pass


def _version(dist: str) -> str:
    from importlib import metadata
    for name in (dist, dist.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "(version unknown)"


def _where(e: BaseException) -> str:
    """` (at file.py:12)` of the innermost frame outside Python's import machinery and site-packages."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "importlib" not in f.filename and "site-packages" not in f.filename and not f.filename.startswith("<")
              and not f.filename.endswith("langgraph_probe.py")]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


class Probe:
    def __init__(self, spec: dict):
        self.spec = spec
        self.roots = [str(Path(p).resolve()) for p in spec.get("sys_path") or []]
        self.warnings: list[str] = []

    # ---- loading ----------------------------------------------------------------------------------
    def run(self) -> dict:
        obj = self.load()
        graph = self.as_graph(obj)
        return {"name": self.spec.get("attr") or "graph", "graph": self.describe(graph, ()),
                "warnings": self.warnings}

    def load(self):
        attr = self.spec["attr"]
        if self.spec.get("file"):
            path = Path(self.spec["file"]).resolve()
            name = self.module_name(path)
            if name:
                module = importlib.import_module(name)
            else:
                mspec = importlib.util.spec_from_file_location(f"hetagent_langgraph_{path.stem}", path)
                module = importlib.util.module_from_spec(mspec)
                sys.modules[mspec.name] = module
                mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(self.spec["module"])
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                names = ", ".join(sorted(n for n in dir(module) if not n.startswith("_"))[:12])
                raise ProbeError(f"{self.spec.get('file') or self.spec['module']} has no attribute '{attr}' "
                                 f"(it has: {names})")
            obj = getattr(obj, part)
        return obj

    def module_name(self, path: Path) -> str | None:
        """The dotted name of a file under a sys.path folder whose folders are packages on the way (the
        longest such name: `src/pkg/mod.py` is pkg.mod, so the program's own imports find the same module)."""
        for root in sorted(self.roots, key=len):
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            parts = list(rel.with_suffix("").parts)
            folder = Path(root)
            ok = True
            for p in parts[:-1]:
                folder = folder / p
                if not (folder / "__init__.py").exists():
                    ok = False
                    break
            if ok and parts:
                return ".".join(parts)
        return None

    def as_graph(self, obj):
        from langgraph.graph.state import StateGraph
        if hasattr(obj, "builder") and hasattr(obj, "get_graph"):
            return obj
        if isinstance(obj, StateGraph):
            return obj.compile()
        if callable(obj) and not isinstance(obj, type):
            sig = inspect.signature(obj)
            required = [p for p in sig.parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if len(required) > 1:
                raise ProbeError(f"'{self.spec['attr']}' is a function of {len(required)} arguments, not a graph; "
                                 "point at a compiled graph, a StateGraph, or a factory taking at most a config")
            res = obj({"configurable": {}}) if required else obj()
            if inspect.iscoroutine(res):
                res = asyncio.run(res)
            return self.as_graph(res) if res is not obj else res
        raise ProbeError(f"'{self.spec['attr']}' is a {type(obj).__name__}, not a LangGraph graph (a compiled "
                         "graph, a StateGraph or a function returning one)")

    # ---- the graph --------------------------------------------------------------------------------
    def describe(self, graph, path: tuple) -> dict:
        b = graph.builder
        nodes = []
        for name, spec in b.nodes.items():
            info = {"name": name, "ends": [e for e in (spec.ends or ())]}
            info.update(self.node(spec.runnable, path + (name,)))
            nodes.append(info)
        branches = []
        for src, specs in b.branches.items():
            for bname, bs in specs.items():
                f = Finder(self.roots)
                f.callable(getattr(bs.path, "func", None) or getattr(bs.path, "afunc", None) or bs.path, 0)
                ends = list(dict.fromkeys(bs.ends.values())) if bs.ends else None
                branches.append({"source": src, "name": bname, "ends": ends, "send": "Send" in f.flags})
        return {"nodes": nodes, "edges": sorted([list(e) for e in b.edges]),
                "waiting": sorted([[sorted(s), d] for s, d in b.waiting_edges]), "branches": branches}

    def node(self, runnable, path: tuple) -> dict:
        from langgraph.prebuilt import ToolNode
        if hasattr(runnable, "builder") and hasattr(runnable, "get_graph"):
            return {"kind": "subgraph", "graph": self.describe(runnable, path)}
        if isinstance(runnable, ToolNode):
            return {"kind": "tools", "tools": sorted(runnable.tools_by_name)}
        f = Finder(self.roots)
        f.value(runnable, 0)
        out = {"kind": "code", "models": f.models, "tools": sorted(f.tools), "prompt_tokens": f.prompt_tokens(),
               "bound_tools": f.bound_tools, "flags": sorted(f.flags), "unresolved": f.unresolved}
        if f.graphs:
            out["kind"] = "subgraph"
            out["graph"] = self.describe(f.graphs[0], path)
        elif "agent_factory" in f.flags:
            out["kind"] = "agent"
        elif f.models:
            out["kind"] = "llm"
        elif f.tools:
            out["kind"] = "tools"
        elif "interrupt" in f.flags:
            out["kind"] = "human"
        return out


class Finder:
    """What a node's code references: models, tools, graphs, prompt text, control flags."""

    def __init__(self, roots: list[str]):
        self.roots = roots
        self.models: list[dict] = []
        self.tools: set[str] = set()
        self.graphs: list = []
        self.texts: dict[int, str] = {}
        self.flags: set[str] = set()
        self.bound_tools = 0
        self.unresolved: list[str] = []
        self._seen: set[int] = set()

    def prompt_tokens(self) -> int:
        from hetagent.workflow.importers.common import tokens_of_text
        return sum(tokens_of_text(t[:20000]) for t in self.texts.values())

    def own(self, f) -> bool:
        """A function of the program itself (its file is under one of the program's folders)."""
        try:
            path = str(Path(inspect.getfile(f)).resolve())
        except (TypeError, OSError):
            return False
        return any(path.startswith(r + os.sep) for r in self.roots) and "site-packages" not in path

    def add_model(self, name, provider, how):
        m = {"name": name, "provider": provider, "how": how}
        if m not in self.models:
            self.models.append(m)

    # ---- values -----------------------------------------------------------------------------------
    def value(self, v, depth: int):
        if id(v) in self._seen or depth > MAX_DEPTH + 2:
            return
        self._seen.add(id(v))
        from langchain_core.language_models import BaseLanguageModel
        from langchain_core.runnables import Runnable, RunnableBinding, RunnableSequence
        from langchain_core.tools import BaseTool
        if isinstance(v, BaseLanguageModel):
            self.add_model(model_name(v), provider_of(type(v)), f"a {type(v).__name__} object")
            return
        if isinstance(v, BaseTool):
            self.tools.add(v.name)
            return
        if hasattr(v, "builder") and hasattr(v, "get_graph"):
            self.graphs.append(v)
            return
        if isinstance(v, type):
            if issubclass(v, BaseLanguageModel):
                self.flags.add("model_class")
            return
        if isinstance(v, RunnableBinding):
            tools = (v.kwargs or {}).get("tools")
            if isinstance(tools, (list, tuple)):
                self.bound_tools = max(self.bound_tools, len(tools))
            self.value(v.bound, depth)
            return
        if isinstance(v, RunnableSequence):
            for s in v.steps:
                self.value(s, depth)
            return
        if isinstance(v, Runnable):
            for attr in ("func", "afunc", "runnable", "bound", "steps__", "default", "branches"):
                x = getattr(v, attr, None)
                if x is not None:
                    self.value(x, depth)
            return
        if isinstance(v, str):
            if len(v) >= 40:
                self.texts[id(v)] = v
            return
        if isinstance(v, dict) and len(v) <= 500:
            for x in v.values():
                self.value(x, depth + 1)
            return
        if isinstance(v, (list, tuple, set, frozenset)) and len(v) <= 500:
            for x in v:
                self.value(x, depth + 1)
            return
        if isinstance(v, functools.partial):
            self.value(v.func, depth)
            for x in list(v.args) + list(v.keywords.values()):
                self.value(x, depth + 1)
            return
        if isinstance(v, types.MethodType):
            self.value(v.__func__, depth)
            return
        if isinstance(v, types.FunctionType):
            self.callable(v, depth)

    def callable(self, f, depth: int):
        if isinstance(f, types.MethodType):
            f = f.__func__
        if not isinstance(f, types.FunctionType):
            if f is not None:
                self.value(f, depth)
            return
        own = self.own(f)
        names = set()

        def code_names(code):
            names.update(code.co_names)
            names.update(code.co_freevars)
            for c in code.co_consts:
                if isinstance(c, types.CodeType):
                    code_names(c)
        code_names(f.__code__)
        closure = {}
        if f.__closure__:
            for name, cell in zip(f.__code__.co_freevars, f.__closure__):
                try:
                    closure[name] = cell.cell_contents
                except ValueError:
                    pass
        for name in sorted(names):
            if name in closure:
                val = closure[name]
            elif name in f.__globals__:
                val = f.__globals__[name]
            else:
                continue
            self.flag(name, val)
            if isinstance(val, types.ModuleType):
                continue
            if isinstance(val, types.FunctionType) and not self.own(val):
                continue     # a library function: its internals are not the program's
            if isinstance(val, types.FunctionType) and depth >= MAX_DEPTH:
                continue
            if own or name in closure:
                self.value(val, depth + 1)
        if own:
            self.constructed_models(f)

    def flag(self, name: str, val):
        mod = getattr(val, "__module__", "") or ""
        if name == "interrupt" and mod.startswith("langgraph"):
            self.flags.add("interrupt")
        elif name == "Command" and mod.startswith("langgraph"):
            self.flags.add("Command")
        elif name == "Send" and mod.startswith("langgraph"):
            self.flags.add("Send")
        elif name in AGENT_FACTORIES and (mod.startswith("langgraph") or mod.startswith("langchain")):
            self.flags.add("agent_factory")

    # ---- models constructed in the code ---------------------------------------------------------------
    def constructed_models(self, f):
        """`ChatX(model=...)` and `init_chat_model("provider:name")` calls in a function's source."""
        from langchain_core.language_models import BaseLanguageModel
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(f)))
        except (OSError, TypeError, SyntaxError):
            return
        g = f.__globals__
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.id if isinstance(node.func, ast.Name) else (
                node.func.attr if isinstance(node.func, ast.Attribute) else None)
            target = g.get(callee) if callee else None
            if callee == "init_chat_model" or getattr(target, "__name__", "") == "init_chat_model":
                arg = _arg(node, ("model",), 0)
                name, how = self.resolve(arg, g)
                provider = None
                if name and ":" in name:
                    provider, name = name.split(":", 1)
                prov_kw = _arg(node, ("model_provider",), None)
                if prov_kw is not None:
                    provider = self.resolve(prov_kw, g)[0] or provider
                self.add_model(name, provider or "unknown", f"init_chat_model in {f.__name__}: {how}")
            elif isinstance(target, type) and issubclass(target, BaseLanguageModel):
                arg = _arg(node, ("model", "model_name", "model_id", "deployment_name"), 0)
                name, how = self.resolve(arg, g)
                self.add_model(name, provider_of(target), f"{target.__name__}(...) in {f.__name__}: {how}")
                if name is None:
                    self.unresolved.append(f"{target.__name__} in {f.__name__}")

    def resolve(self, arg, g) -> tuple[str | None, str]:
        if arg is None:
            return None, "no model named"
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value, "named in the call"
        if isinstance(arg, ast.Name) and isinstance(g.get(arg.id), str):
            return g[arg.id], f"the constant {arg.id}"
        if isinstance(arg, ast.Attribute):
            found = config_default(arg.attr, g)
            if found:
                return found[0], f"the default of {found[1]}.{arg.attr}"
        return None, "computed at run time"


def _arg(call: ast.Call, names: tuple, pos):
    for kw in call.keywords:
        if kw.arg in names:
            return kw.value
    if pos is not None and len(call.args) > pos:
        return call.args[pos]
    return None


def config_default(field: str, g: dict):
    """(default, class name) of a configuration class field in a module's globals (pydantic or
    dataclass), for `configurable.local_llm`-style model names."""
    for name, v in g.items():
        if not isinstance(v, type):
            continue
        mf = getattr(v, "model_fields", None)
        if isinstance(mf, dict) and field in mf and isinstance(mf[field].default, str):
            return mf[field].default, name
        df = getattr(v, "__dataclass_fields__", None)
        if isinstance(df, dict) and field in df and isinstance(df[field].default, str):
            return df[field].default, name
    return None


def model_name(m) -> str | None:
    for attr in ("model_name", "model", "model_id", "deployment_name", "repo_id"):
        v = getattr(m, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


def provider_of(cls) -> str:
    lname = cls.__name__.lower()
    for hint in LOCAL_HINTS:
        if hint.replace("_", "") in lname.replace("_", ""):
            return hint.replace("lmstudio", "lm_studio")
    for c in cls.__mro__:
        top = (c.__module__ or "").split(".")[0]
        if top in PROVIDERS:
            return PROVIDERS[top]
    return (cls.__module__ or "unknown").split(".")[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
