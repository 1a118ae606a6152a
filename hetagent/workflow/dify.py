"""Dify DSL importer: recognises a Dify app export by its content and converts it to a native workflow.

    from hetagent.workflow import loader
    wf = loader.load("app.yml")                       # a Dify export compiles like a native file
    text = to_yaml("app.yml", {"gpt-4o": "llama-3-70b"})  # the native YAML, defaults listed on top

Forms read: DSL 0.1.x to 0.6.x (`kind: app`, `version`; files without either are read as the oldest form;
a version newer than 0.6 is imported with a warning), `app.mode` workflow / advanced-chat (a graph) and
chat / agent-chat / completion (a top-level `model_config`, no graph), and the JSON wrapper
`{"data": "<yaml>"}` of Dify's API (surrogate-pair escapes of emoji repaired).

Mapping (docs/dify.md has the table): start -> input; end, answer -> output (an answer in mid-flow is
transparent: what follows it consumes what it consumed); llm, parameter-extractor -> llm;
question-classifier -> llm followed by a branch, one arm per class; if-else -> a branch, one arm per case
plus `else` (0.1.0 files: top-level `conditions`, arms `true`/`false`); a node with
`error_strategy: fail-branch` and a `fail-branch` edge -> the node followed by a success/fail branch;
agent (node) and agent-chat (app) -> a loop whose body is an llm call followed by its tools (one arm per
tool when there are several); knowledge-retrieval(-v2) -> memory_search (which embeds the query, searches
and, when enabled, reranks), preceded by a small router llm call in `single` mode with several datasets;
tool, http-request -> tool; code, template-transform, variable-aggregator / variable-assigner, assigner,
document-extractor, list-operator -> code (CPU work); iteration, loop -> loop over their children
(`parentId`); a parallel iteration runs k copies of its body side by side per round; iteration-start,
loop-start, loop-end and custom-note nodes are dropped; trigger-* nodes -> input; any other type -> code,
with a DifyImportWarning naming the node. Edges give `inputs`; `sourceHandle` picks the arm; variable
references (`{{#node.var#}}` and selectors) add an input where they add a dependency the edges do not
already give (never one that would make a cycle). A reference into a container is a reference to the
container; a reference into a sibling arm is dropped.

Defaults (Dify does not record these; every one is listed in the header of `to_yaml`'s output):
  - prompt_tokens: the template's own text (ASCII characters / 4 + one token per other character) plus
    VAR_TOKENS (200) per variable reference, QUERY_TOKENS (64) per sys.query, CONTEXT_TOKENS (1024) for
    {{#context#}} or a `context` selector, HISTORY_TOKENS_PER_TURN (200) x window size (MEMORY_TURNS = 10
    when the window is off) for conversation memory, IMAGE_TOKENS (765) when vision is on.
  - output_tokens: OUTPUT_TOKENS (512), or `completion_params.max_tokens` when smaller; classifier
    CLASSIFIER_OUTPUT_TOKENS (32); parameter-extractor 32 + 32 per parameter; retrieval router 32.
  - hosted models: PRICES below (list prices per million tokens, with source and date); a model not in
    the table gets DEFAULT_PRICE (gpt-4o's) and a warning; latency and tokens/s: the native defaults.
  - branch probabilities: equal over the arms; a fail-branch fails with FAIL_PROBABILITY (0.05).
  - iteration: ITERATION_ITEMS (3) expected items, ITERATION_MAX (10) at most; parallel iteration:
    k = min(parallel_nums (default 10), 3) copies per round, ceil(items / k) rounds.
  - loop node: at most `loop_count` (default LOOP_MAX = 10) iterations; expected = loop_count without
    break conditions, else (1 + loop_count) / 2.
  - agent node: at most `maximum_iterations` (default AGENT_MAX = 3), agent-chat app: `max_iteration`
    (default AGENT_CHAT_MAX = 5); expected AGENT_EXPECTED (2), capped at the maximum.
  - tools: TOOL_LATENCY_MS (800) per builtin/api/plugin/mcp tool call, WORKFLOW_TOOL_LATENCY_MS (3000)
    for a workflow-as-tool, HTTP_LATENCY_MS (300) per http-request.
  - CPU work (cpu_ms): code and template-transform 20 (a sandbox round trip), document-extractor 50,
    others 1; an unknown node type 5.
  - retrieval: INDEX_SIZE (100000) vectors per dataset, dims 384, top_k from the node (default 4).
  - input: 64 tokens per text variable and per sys.query, 256 per paragraph, 4 per number/select,
    FILE_BYTES (1 MiB) per file variable; audio_seconds 5 when speech-to-text is on.
  - rate 1 request/s and no SLA (Dify records neither).
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

from hetagent.errors import InputError, WorkflowError
from hetagent.workflow import safeyaml

__all__ = ["DifyImportWarning", "is_dify", "to_native", "to_yaml", "PRICES", "KNOWN_VERSION"]


class DifyImportWarning(UserWarning):
    """Something in a Dify export was guessed or degraded (unknown node type, unknown model price...)."""


KNOWN_VERSION = (0, 6)  # newest DSL minor version whose forms this importer knows

# token and size defaults (module docstring)
VAR_TOKENS = 200
QUERY_TOKENS = 64
CONTEXT_TOKENS = 1024
HISTORY_TOKENS_PER_TURN = 200
MEMORY_TURNS = 10
IMAGE_TOKENS = 765
OUTPUT_TOKENS = 512
CLASSIFIER_OUTPUT_TOKENS = 32
FAIL_PROBABILITY = 0.05
ITERATION_ITEMS = 3
ITERATION_MAX = 10
PARALLEL_NUMS = 10
LOOP_MAX = 10
AGENT_MAX = 3
AGENT_CHAT_MAX = 5
AGENT_EXPECTED = 2
TOOL_LATENCY_MS = 800.0
WORKFLOW_TOOL_LATENCY_MS = 3000.0
HTTP_LATENCY_MS = 300.0
INDEX_SIZE = 100_000
TOP_K = 4
FILE_BYTES = 1 << 20
CPU_MS = {"code": 20.0, "template-transform": 20.0, "document-extractor": 50.0}
CPU_MS_OTHER = 1.0
CPU_MS_UNKNOWN = 5.0
STT_MODEL = "whisper-large-v3"

# Hosted-model list prices, USD per million tokens (input, output). Matched on the model name (lower
# case, a vendor prefix such as `anthropic.` or `us.anthropic.` removed) by longest prefix; the provider
# does not matter (a Claude model behind openai_api_compatible or Bedrock is priced as Claude).
# Prices in CNY are converted at 7.2 CNY/USD. Each entry: (name prefix, in, out, source, date seen).
_OPENAI = "https://openai.com/api/pricing/"
_ANTHROPIC = "https://www.anthropic.com/pricing#api"
_DEEPSEEK = "https://api-docs.deepseek.com/quick_start/pricing"
_QWEN = "https://help.aliyun.com/zh/model-studio/models"
PRICES: list[tuple[str, float, float, str, str]] = [
    ("gpt-4o-mini", 0.15, 0.60, _OPENAI, "2024-07-18"),
    ("gpt-4o", 2.50, 10.00, _OPENAI, "2024-10-01"),
    ("gpt-4.1-nano", 0.10, 0.40, _OPENAI, "2025-04-14"),
    ("gpt-4.1-mini", 0.40, 1.60, _OPENAI, "2025-04-14"),
    ("gpt-4.1", 2.00, 8.00, _OPENAI, "2025-04-14"),
    ("gpt-4-turbo", 10.00, 30.00, _OPENAI, "2024-04-09"),
    ("gpt-4", 30.00, 60.00, _OPENAI, "2024-04-09"),
    ("gpt-3.5-turbo", 0.50, 1.50, _OPENAI, "2024-01-25"),
    ("o1-mini", 1.10, 4.40, _OPENAI, "2025-01-31"),
    ("o3-mini", 1.10, 4.40, _OPENAI, "2025-01-31"),
    ("o1", 15.00, 60.00, _OPENAI, "2024-12-17"),
    ("claude-3-5-sonnet", 3.00, 15.00, _ANTHROPIC, "2024-10-22"),
    ("claude-3-7-sonnet", 3.00, 15.00, _ANTHROPIC, "2025-02-24"),
    ("claude-sonnet-4", 3.00, 15.00, _ANTHROPIC, "2025-05-22"),
    ("claude-3-5-haiku", 0.80, 4.00, _ANTHROPIC, "2024-11-04"),
    ("claude-3-haiku", 0.25, 1.25, _ANTHROPIC, "2024-03-13"),
    ("claude-3-sonnet", 3.00, 15.00, _ANTHROPIC, "2024-03-04"),
    ("claude-3-opus", 15.00, 75.00, _ANTHROPIC, "2024-03-04"),
    ("deepseek-chat", 0.27, 1.10, _DEEPSEEK, "2025-02-09"),
    ("deepseek-reasoner", 0.55, 2.19, _DEEPSEEK, "2025-02-09"),
    ("deepseek-coder", 0.27, 1.10, _DEEPSEEK + " (the API serves deepseek-coder as deepseek-chat)",
     "2025-02-09"),
    ("deepseek-v3", 0.28, 1.11, "https://www.volcengine.com/docs/82379/1099320 (CNY 2 / 8)",
     "2025-03-24"),
    ("deepseek-r1", 0.56, 2.22, "https://www.volcengine.com/docs/82379/1099320 (CNY 4 / 16)",
     "2025-02-01"),
    ("yi-large-turbo", 1.67, 1.67, "https://platform.lingyiwanwu.com/docs/pricing (CNY 12 / 12)",
     "2024-05-13"),
    ("yi-lightning", 0.14, 0.14, "https://platform.lingyiwanwu.com/docs/pricing (CNY 0.99 / 0.99)",
     "2024-10-16"),
    ("yi-large", 2.78, 2.78, "https://platform.lingyiwanwu.com/docs/pricing (CNY 20 / 20)", "2024-05-13"),
    ("qwen-max", 0.33, 1.33, _QWEN + " (CNY 2.4 / 9.6)", "2025-01-25"),
    ("qwen-plus", 0.11, 0.28, _QWEN + " (CNY 0.8 / 2)", "2024-09-19"),
    ("qwen-turbo", 0.04, 0.08, _QWEN + " (CNY 0.3 / 0.6)", "2024-09-19"),
]
DEFAULT_PRICE = (2.50, 10.00)  # an unknown hosted model: priced like gpt-4o, with a warning
_LOCAL_PROVIDERS = ("ollama", "xinference", "localai", "openllm", "vllm", "triton_inference_server",
                    "gpustack", "lm_studio")

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_REF_RE = re.compile(r"\{\{#([^#{}]+?)#\}\}")
_MARKERS = ("iteration-start", "loop-start", "loop-end")
_CONTAINERS = ("iteration", "loop")
_SYS = ("sys", "env", "conversation", "context", "rag")
_CPU_TYPES = ("code", "template-transform", "variable-aggregator", "variable-assigner", "assigner",
              "document-extractor", "list-operator")


# ---------------------------------------------------------------------------------------------------
def is_dify(data) -> bool:
    """A Dify export: a mapping with `app`, `workflow.graph` or `model_config`, or the API's
    {"data": "<yaml>"} wrapper."""
    if not isinstance(data, dict):
        return False
    if "nodes" in data and "app" not in data and "workflow" not in data:
        return False  # a native workflow
    if "app" in data or isinstance(data.get("workflow"), dict) or isinstance(data.get("model_config"),
                                                                             dict):
        return True
    inner = data.get("data")
    return isinstance(inner, str) and (set(data) == {"data"} or bool(
        re.search(r"^(app|workflow|kind|model_config):", inner, re.M)))


def to_native(located, self_host: dict[str, str] | None = None):
    """(native workflow data, Located whose lines map native paths to lines of the Dify file)."""
    conv = _Converter(located, self_host or {})
    native, lines = conv.run()
    for msg in conv.warnings:
        warnings.warn(msg, DifyImportWarning, stacklevel=3)
    return native, safeyaml.Located(native, lines, located.file)


def convert(located, self_host: dict[str, str] | None = None):
    """(native data, lines, notes, warnings) without emitting warnings: notes list every default."""
    conv = _Converter(located, self_host or {})
    native, lines = conv.run()
    return native, lines, conv.notes, conv.warnings


def to_yaml(path, self_host: dict[str, str] | None = None, *, config_dir=None) -> str:
    """The native workflow YAML equivalent to a Dify export, validated, with the defaults to review
    listed in comments on top."""
    import yaml

    from hetagent.workflow import loader
    file = str(path)
    text = safeyaml.read_text(path)
    located = safeyaml.load(text, file)
    if not is_dify(located.data):
        raise WorkflowError("not a Dify export: no `app`, `workflow.graph` or `model_config` at the "
                            "top level", file=file, line=1)
    native, _lines, notes, warns = convert(located, self_host)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DifyImportWarning)
        loader.loads(text, file=file, base_dir=Path(path).resolve().parent, config_dir=config_dir,
                     self_host=self_host)  # validate: errors name lines of the Dify file
    for msg in warns:
        warnings.warn(msg, DifyImportWarning, stacklevel=2)
    head = [f"# Imported from the Dify export {Path(file).name} by `hetagent import dify`.",
            "# Dify records no SLA, request rate or token counts: the values below marked as defaults",
            "# are guesses (hetagent/workflow/dify.py documents each); review and override them.",
            "# Add an SLA, e.g.  sla: {latency_ms: 10000, percentile: 95}",
            "#", "# Defaults used:"]
    head += [f"#   {n}" for n in notes] or ["#   (none)"]
    if warns:
        head += ["#", "# Warnings:"] + [f"#   {w}" for w in warns]
    body = yaml.safe_dump(_ordered(native), sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(head) + "\n" + body


def _ordered(v):
    """Native data with each node's keys in reading order: id, kind, inputs, description, the rest."""
    if isinstance(v, list):
        return [_ordered(x) for x in v]
    if isinstance(v, dict):
        first = [k for k in ("name", "id", "kind", "inputs", "description") if k in v]
        return {k: _ordered(v[k]) for k in first + [k for k in v if k not in first]}
    return v


# ---------------------------------------------------------------------------------------------------
def _fix_surrogates(s: str) -> str:
    """JSON writes emoji as surrogate pairs (\\ud83e\\udd16); join them into the real characters."""
    if not any("\ud800" <= c <= "\udfff" for c in s):
        return s
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _tokens_of_text(s: str) -> int:
    ascii_n = sum(1 for c in s if ord(c) < 128)
    return math.ceil(ascii_n / 4) + (len(s) - ascii_n)


def _symbol(s: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_\-]", "_", s.strip())
    out = re.sub(r"_+", "_", out).strip("_-")
    if not out or not re.search(r"[A-Za-z0-9]", out):
        return ""
    return out if _ID_RE.match(out) else "n" + out


def _num(v, default):
    """A number from a Dify field that may be a constant wrapper {type: constant, value: N} or a string."""
    if isinstance(v, dict) and "value" in v:
        v = v["value"]
    if isinstance(v, bool) or v is None:
        return default
    if isinstance(v, (int, float)):
        return v
    try:
        return float(str(v).strip())
    except ValueError:
        return default


def _version(v) -> tuple[int, ...] | None:
    if v is None:
        return None
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(v))
    return tuple(int(x or 0) for x in m.groups()) if m else None


def price_of(model_name: str) -> tuple[float, float, str, str] | None:
    """(input $/M, output $/M, source, date) of a hosted model name, or None when not in PRICES."""
    name = model_name.lower().strip()
    name = re.sub(r"^(?:[a-z]{2}\.)?(?:anthropic|openai|meta|deepseek)[./]", "", name)
    best = None
    for prefix, pin, pout, src, date in PRICES:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, pin, pout, src, date)
    return best[1:] if best else None


def _provider_short(provider: str) -> str:
    """`langgenius/openai/openai` -> `openai`."""
    p = str(provider or "unknown").strip().split("/")[-1] or "unknown"
    return p.split(":")[0]


# ---------------------------------------------------------------------------------------------------
class _Block:
    """A structured piece of a scope: a plain node, or a branching node with its arms."""

    def __init__(self, did: str, arms: list | None = None):
        self.did, self.arms = did, arms  # arms: [(handle, name, probability, [blocks])]


class _Converter:
    def __init__(self, located, self_host: dict[str, str]):
        self.file = located.file
        self.self_host = {str(k).strip(): str(v).strip() for k, v in self_host.items()}
        self.used_self_host: set[str] = set()
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.hosted_seen: list[str] = []
        data, lines, self.wrapped = located.data, located.lines, False
        if isinstance(data, dict) and isinstance(data.get("data"), str) and not (
                "app" in data or "workflow" in data):
            self.wrapped = True
            self.outer_line = lines.get(("data",), 1)
            try:
                inner = safeyaml.load(_fix_surrogates(data["data"]), self.file)
            except InputError as e:
                raise WorkflowError(f"the API wrapper's `data` is not a Dify export: {e.reason}",
                                    file=self.file, line=self.outer_line) from None
            data, lines = inner.data, {}
        self.doc, self.src_lines = data, lines
        self.native_ids: set[str] = set()

    # ---- errors, lines ------------------------------------------------------------------------
    def line(self, path: tuple) -> int | None:
        if self.wrapped:
            return self.outer_line
        p = tuple(path)
        while p:
            if p in self.src_lines:
                return self.src_lines[p]
            p = p[:-1]
        return self.src_lines.get((), 1)

    def fail(self, msg: str, path: tuple = ()):
        raise WorkflowError(msg, file=self.file, line=self.line(path))

    def warn(self, msg: str):
        self.warnings.append(msg)

    def note(self, nid: str, what: str):
        self.notes.append(f"{nid}: {what}")

    def new_id(self, base: str) -> str:
        nid = base if _ID_RE.match(base) else ("n" + re.sub(r"[^A-Za-z0-9_\-]", "_", base))
        out, k = nid, 2
        while out in self.native_ids:
            out, k = f"{nid}_{k}", k + 1
        self.native_ids.add(out)
        return out

    # ---- top level ----------------------------------------------------------------------------
    def run(self):
        doc = self.doc
        if not isinstance(doc, dict):
            self.fail("not a Dify export: the top level is not a mapping")
        app = doc.get("app") if isinstance(doc.get("app"), dict) else {}
        self.mode = str(app.get("mode") or "")
        ver = _version(doc.get("version"))
        self.version = doc.get("version")
        if doc.get("version") is None:
            self.note("(file)", "no DSL `version`: read as the oldest form (0.1.0)")
        elif ver is None:
            self.warn(f"DSL version {doc.get('version')!r} is not a version number; importing anyway")
        elif ver[:2] > KNOWN_VERSION:
            self.warn(f"DSL version {doc.get('version')} is newer than the {KNOWN_VERSION[0]}."
                      f"{KNOWN_VERSION[1]}.x this importer knows; importing anyway")
        if "kind" in doc and doc["kind"] != "app":
            self.fail(f"not a Dify app export: `kind` is {doc['kind']!r}, not 'app'", ("kind",))
        wf = doc.get("workflow")
        graph = wf.get("graph") if isinstance(wf, dict) else None
        model_config = doc.get("model_config")
        if not isinstance(model_config, dict) and isinstance(app.get("model_config"), dict):
            model_config = app["model_config"]
        name = _symbol(str(app.get("name") or "")) or _symbol(Path(self.file).stem) or "dify_app"
        if name and not re.match(r"^[A-Za-z_]", name):
            name = "n" + name
        desc = (f"Imported from Dify app '{_fix_surrogates(str(app.get('name') or ''))}' "
                f"(mode {self.mode or 'unknown'}, DSL {self.version or 'unversioned'})")
        native = {"name": name, "description": desc, "rate": 1.0, "nodes": []}
        lines = {(): 1, ("name",): self.line(("app", "name")), ("nodes",): 1}
        if graph is not None:
            if not isinstance(graph, dict):
                self.fail("`workflow.graph` is not a mapping", ("workflow", "graph"))
            if self.mode and self.mode not in ("workflow", "advanced-chat"):
                self.warn(f"app mode '{self.mode}' with a graph: imported as a workflow")
            features = wf.get("features") if isinstance(wf.get("features"), dict) else {}
            nodes, node_lines = self.graph(graph, features)
            lines[("nodes",)] = self.line(("workflow", "graph", "nodes"))
        elif isinstance(model_config, dict):
            nodes, node_lines = self.app_without_graph(model_config,
                                                       ("model_config",) if "model_config" in doc
                                                       else ("app", "model_config"))
        elif isinstance(wf, dict):
            self.fail("Dify export without a graph: `workflow.graph` is missing", ("workflow",))
        else:
            self.fail("not a Dify export: no `workflow.graph` and no `model_config`")
        native["nodes"] = nodes
        self._lines(nodes, ("nodes",), node_lines, lines)
        unused = set(self.self_host) - self.used_self_host
        if unused:
            seen = ", ".join(sorted(set(self.hosted_seen))) or "none"
            raise WorkflowError(f"--self-host {sorted(unused)[0]}: no hosted model of that name in "
                                f"this export (hosted models: {seen})", file=self.file, line=1)
        return native, lines

    def _lines(self, nodes, prefix, node_lines, out, parent_ln=None):
        for i, n in enumerate(nodes):
            p = prefix + (i,)
            ln = node_lines.get(n["id"], parent_ln)
            if ln is not None:
                out[p] = ln
                for k in n:
                    out[p + (k,)] = ln
            if n["kind"] == "loop":
                self._lines(n["body"], p + ("body",), node_lines, out, ln)
            elif n["kind"] == "branch":
                for a, arm in enumerate(n["arms"]):
                    if ln is not None:
                        out[p + ("arms", a)] = ln
                    self._lines(arm["nodes"], p + ("arms", a, "nodes"), node_lines, out, ln)

    # ---- models ---------------------------------------------------------------------------------
    def llm_model(self, nid: str, model, title: str) -> dict:
        """`model` or `hosted` fields for a Dify model block {provider, name|model, completion_params}."""
        if not isinstance(model, dict):
            model = {}
        name = str(model.get("name") or model.get("model") or "").strip()
        provider = str(model.get("provider") or "").strip()
        short = _provider_short(provider)
        if not name:
            self.warn(f"Dify node {title}: no model named; priced as an unknown hosted model")
            name = "unknown"
        self.hosted_seen.append(name)
        for key in (name, f"{short}/{name}", f"{provider}/{name}"):
            for k, v in self.self_host.items():
                if k.lower() == key.lower():
                    self.used_self_host.add(k)
                    return {"model": v}
        price = price_of(name)
        if price is None:
            pin, pout = DEFAULT_PRICE
            hint = (f" (served by {short}, probably on your own hardware)"
                    if short in _LOCAL_PROVIDERS else "")
            self.warn(f"Dify node {title}: hosted model '{short}/{name}'{hint} has no known price; "
                      f"priced at ${pin}/${pout} per million tokens; use --self-host {name}=MODEL "
                      f"to run an open model instead")
            self.note(nid, f"hosted {short}/{name}: default price ${pin}/${pout} per million tokens")
        else:
            pin, pout = price[0], price[1]
        return {"hosted": {"provider": short, "model": name, "input_usd_per_million": pin,
                           "output_usd_per_million": pout}}

    def output_tokens(self, nid, model, default=OUTPUT_TOKENS) -> int:
        params = model.get("completion_params") if isinstance(model, dict) else None
        mt = _num((params or {}).get("max_tokens"), None) if isinstance(params, dict) else None
        if mt is not None and mt > 0 and mt < default:
            return int(mt)
        self.note(nid, f"output_tokens {default} (default)")
        return default

    def prompt_tokens(self, nid: str, texts: list, extra: int = 0, why: str = "") -> int:
        own, refs = 0, 0
        for t in texts:
            if not isinstance(t, str):
                continue
            for m in _REF_RE.finditer(t):
                ref = m.group(1)
                if ref == "context":
                    refs += CONTEXT_TOKENS
                elif ref in ("sys.query", "sys.query_prompt"):
                    refs += QUERY_TOKENS
                else:
                    refs += VAR_TOKENS
            own += _tokens_of_text(_REF_RE.sub("", t))
        total = max(1, own + refs + extra)
        self.note(nid, f"prompt_tokens {total} (estimate: {own} of template text, {refs} for variable "
                       f"references{', ' + why if why else ''})")
        return total

    # ---- graph --------------------------------------------------------------------------------
    def graph(self, graph: dict, features: dict):
        raw_nodes = graph.get("nodes", [])
        raw_edges = graph.get("edges", [])
        if not isinstance(raw_nodes, list):
            self.fail("`workflow.graph.nodes` is not a list", ("workflow", "graph", "nodes"))
        if not isinstance(raw_edges, list):
            self.fail("`workflow.graph.edges` is not a list", ("workflow", "graph", "edges"))
        npath = ("workflow", "graph", "nodes")
        self.nodes: dict[str, dict] = {}      # dify id -> data (with _type, _title, _path, _parent)
        order: list[str] = []
        skipped: set[str] = set()
        for i, n in enumerate(raw_nodes):
            if not isinstance(n, dict) or n.get("id") in (None, ""):
                self.fail(f"graph node #{i} has no `id`", npath + (i,))
            did = str(n["id"])
            if did in self.nodes or did in skipped:
                self.fail(f"Dify node '{did}': duplicate node id", npath + (i, "id"))
            data = n.get("data")
            wrapper = str(n.get("type") or "")
            if wrapper == "custom-note":
                skipped.add(did)
                continue
            if not isinstance(data, dict):
                self.fail(f"Dify node '{did}': no `data` mapping", npath + (i,))
            typ = str(data.get("type") or "")
            title = _fix_surrogates(str(data.get("title") or ""))
            if typ in _MARKERS or wrapper in ("custom-iteration-start", "custom-loop-start"):
                skipped.add(did)
                parent = n.get("parentId")
                if parent not in (None, "") and str(parent) not in [str(x.get("id")) for x in raw_nodes
                                                                    if isinstance(x, dict)]:
                    self.fail(f"Dify node '{did}': its container '{parent}' (parentId) does not exist",
                              npath + (i, "parentId"))
                continue
            if not typ:
                typ = "(no type)"
            parent = n.get("parentId")
            if parent in (None, ""):
                if data.get("isInIteration") and data.get("iteration_id"):
                    parent = data["iteration_id"]
                elif data.get("isInLoop") and data.get("loop_id"):
                    parent = data["loop_id"]
            rec = {"data": data, "type": typ, "title": title, "path": npath + (i,),
                   "parent": str(parent) if parent not in (None, "") else None, "id": did}
            self.nodes[did] = rec
            order.append(did)
        if not self.nodes:
            self.fail("the Dify graph has no nodes", npath)
        for did in order:
            rec = self.nodes[did]
            p = rec["parent"]
            if p is not None:
                if p not in self.nodes:
                    self.fail(f"Dify node '{did}' ({rec['title']}): its container '{p}' (parentId) "
                              f"does not exist", rec["path"] + ("parentId",))
                if self.nodes[p]["type"] not in _CONTAINERS:
                    self.fail(f"Dify node '{did}' ({rec['title']}): its container '{p}' is a "
                              f"{self.nodes[p]['type']} node, not an iteration or loop",
                              rec["path"] + ("parentId",))
        # containment must not cycle
        for did in order:
            seen, p = {did}, self.nodes[did]["parent"]
            while p is not None:
                if p in seen:
                    self.fail(f"Dify node '{did}': containers (parentId) form a cycle",
                              self.nodes[did]["path"])
                seen.add(p)
                p = self.nodes[p]["parent"]
        self.order = {d: k for k, d in enumerate(order)}
        # edges
        self.edges: list[tuple[str, str, str]] = []  # (source, handle, target) between kept nodes
        epath = ("workflow", "graph", "edges")
        for i, e in enumerate(raw_edges):
            if not isinstance(e, dict):
                self.fail(f"graph edge #{i} is not a mapping", epath + (i,))
            eid = e.get("id") or f"#{i}"
            for end in ("source", "target"):
                v = e.get(end)
                if v in (None, ""):
                    self.fail(f"Dify edge '{eid}': no `{end}`", epath + (i,))
                v = str(v)
                if v not in self.nodes and v not in skipped:
                    other = "source" if end == "target" else "target"
                    self.fail(f"Dify edge '{eid}': {end} node '{v}' does not exist (its {other} is "
                              f"'{e.get(other)}')", epath + (i, end))
            s, t = str(e["source"]), str(e["target"])
            if s in skipped or t in skipped:
                continue
            handle = str(e.get("sourceHandle") or "source")
            self.edges.append((s, handle, t))
        self.preds: dict[str, list[tuple[str, str]]] = {d: [] for d in self.nodes}
        self.succs: dict[str, list[tuple[str, str]]] = {d: [] for d in self.nodes}
        for s, h, t in self.edges:
            if (s, h) not in self.preds[t]:
                self.preds[t].append((s, h))
            if (t, h) not in self.succs[s]:
                self.succs[s].append((t, h))
        # build
        self.exit: dict[tuple, str] = {}       # (dify id, copy) -> native id successors consume
        self.entry: dict[tuple, str] = {}      # (dify id, copy) -> native id that takes the inputs
        self.branch_of: dict[tuple, str] = {}  # (dify id, copy) -> native branch container id
        self.info: dict[str, dict] = {}        # native id -> {chain, did, copy, node}
        self.node_lines: dict[str, int] = {}
        top = [d for d in order if self.nodes[d]["parent"] is None]
        blocks = self.structure(top)
        nodes = self.emit(blocks, (), ())
        self.wire(nodes)
        self.features(nodes, features)
        return nodes, self.node_lines

    # ---- structure: branches from sourceHandle -------------------------------------------------
    def handles(self, did: str) -> list[tuple[str, str]] | None:
        """The arms (handle, name) of a branching node, or None for a plain node."""
        rec = self.nodes[did]
        d, typ = rec["data"], rec["type"]
        out_handles = [h for _, h in self.succs[did]]
        arms: list[tuple[str, str]] = []
        if typ == "if-else":
            cases = d.get("cases")
            if isinstance(cases, list) and cases:
                for c in cases:
                    if isinstance(c, dict):
                        cid = str(c.get("case_id") or c.get("id") or "")
                        if cid:
                            arms.append((cid, cid))
            else:  # 0.1.0: top-level conditions, one case
                arms.append(("true", "true"))
            arms.append(("false", "else"))
        elif typ == "question-classifier":
            for c in d.get("classes") or []:
                if isinstance(c, dict) and c.get("id") not in (None, ""):
                    arms.append((str(c["id"]), _fix_surrogates(str(c.get("name") or c["id"]))))
        elif "fail-branch" in out_handles:
            arms = [("success-branch", "success"), ("fail-branch", "fail")]
        else:
            return None
        known = {h for h, _ in arms}
        if not arms and not out_handles:
            return None
        for h in out_handles:
            if h not in known and not (h in ("source", "success-branch") and
                                       "success-branch" in known):
                arms.append((h, h))
                known.add(h)
        return arms

    def _arm_handle(self, did: str, h: str) -> str:
        if h == "source" and self.nodes[did]["type"] not in ("if-else", "question-classifier"):
            return "success-branch"
        return h

    def structure(self, scope: list[str]) -> list[_Block]:
        sset = set(scope)
        order = self.topo(scope)
        absorbed: set[str] = set()
        blocks = []
        for b in order:
            if b in absorbed:
                continue
            arms_h = self.handles(b)
            if arms_h is None:
                blocks.append(_Block(b))
                continue
            desc = self.descendants(b, sset)
            arms = []
            for h, name in arms_h:
                arm: set[str] = set()
                changed = True
                while changed:
                    changed = False
                    for n in order:
                        if n in arm or n in absorbed or n not in desc or n == b:
                            continue
                        ok, linked = True, False
                        for p, ph in self.preds[n]:
                            if p == b:
                                if self._arm_handle(b, ph) == h:
                                    linked = True
                                else:
                                    ok = False
                            elif p in arm:
                                linked = True
                            elif p in desc and p in sset:
                                ok = False
                        if ok and linked:
                            arm.add(n)
                            changed = True
                absorbed |= arm
                arms.append((h, name, [n for n in order if n in arm]))
            n_arms = len(arms)
            if self.nodes[b]["type"] not in ("if-else", "question-classifier") and n_arms == 2:
                probs = [1 - FAIL_PROBABILITY, FAIL_PROBABILITY]
                self.note(self.nid_of(b), f"fail-branch probability {FAIL_PROBABILITY} (default)")
            else:
                probs = [1.0 / n_arms] * n_arms
                probs[-1] = 1.0 - sum(probs[:-1])
                self.note(self.nid_of(b), f"{n_arms} arms, probability {1 / n_arms:.3g} each "
                                          "(default: equal)")
            blocks.append(_Block(b, [(h, name, pr, self.structure(members))
                                     for (h, name, members), pr in zip(arms, probs)]))
        return blocks

    def nid_of(self, did: str) -> str:
        return did if _ID_RE.match(did) else "n" + re.sub(r"[^A-Za-z0-9_\-]", "_", did)

    def topo(self, scope: list[str]) -> list[str]:
        sset = set(scope)
        indeg = {n: 0 for n in scope}
        for n in scope:
            for p, _ in self.preds[n]:
                if p in sset and p != n:
                    indeg[n] += 1
        ready = sorted([n for n in scope if indeg[n] == 0], key=self.order.get)
        out = []
        while ready:
            n = ready.pop(0)
            out.append(n)
            for t, _ in self.succs[n]:
                if t in sset and t != n:
                    indeg[t] -= 1
                    if indeg[t] == 0:
                        ready.append(t)
                        ready.sort(key=self.order.get)
        if len(out) < len(scope):  # a cycle: the loader names it after conversion
            out += sorted([n for n in scope if n not in out], key=self.order.get)
        return out

    def descendants(self, b: str, sset: set[str]) -> set[str]:
        seen, stack = set(), [b]
        while stack:
            n = stack.pop()
            for t, _ in self.succs[n]:
                if t in sset and t not in seen:
                    seen.add(t)
                    stack.append(t)
        return seen

    # ---- emission ------------------------------------------------------------------------------
    def emit(self, blocks: list[_Block], chain: tuple, copy: tuple) -> list[dict]:
        out = []
        for blk in blocks:
            did = blk.did
            rec = self.nodes[did]
            if blk.arms is None:
                out += self.emit_node(did, chain, copy)
                continue
            if rec["type"] == "if-else":
                bid = self.new_id(self.nid_of(did) + self.sfx(copy))
                self.entry[(did, copy)] = bid
                self.exit[(did, copy)] = bid
                self.pending(bid, did, copy, chain, role="main")
            else:
                out += self.emit_node(did, chain, copy)
                bid = self.new_id(self.nid_of(did) + self.sfx(copy) + "_branch")
                self.info[bid] = {"chain": chain, "did": did, "copy": copy, "role": "branch",
                                  "fixed": [self.exit[(did, copy)]]}
                self.node_lines[bid] = self.line(rec["path"] + ("id",))
            self.branch_of[(did, copy)] = bid
            arms = []
            for a, (h, name, prob, sub) in enumerate(blk.arms):
                arms.append({"name": str(name), "probability": prob,
                             "nodes": self.emit(sub, chain + ((bid, a),), copy)})
            node = {"id": bid, "kind": "branch", "description": self.describe(did), "arms": arms}
            self.info[bid]["node"] = node
            out.append(node)
        return out

    @staticmethod
    def sfx(copy: tuple) -> str:
        return "".join(f"_p{k}" for k in copy)

    def describe(self, did: str) -> str:
        rec = self.nodes[did]
        t = f" '{rec['title']}'" if rec["title"] else ""
        return f"Dify {rec['type']} node {did}{t}"

    def pending(self, nid: str, did: str, copy: tuple, chain: tuple, role: str, fixed=None):
        self.info[nid] = {"chain": chain, "did": did, "copy": copy, "role": role,
                          "fixed": list(fixed or [])}
        self.node_lines[nid] = self.line(self.nodes[did]["path"] + ("id",))

    def emit_node(self, did: str, chain: tuple, copy: tuple) -> list[dict]:
        rec = self.nodes[did]
        d, typ, title = rec["data"], rec["type"], rec["title"]
        base = self.nid_of(did) + self.sfx(copy)
        nid = self.new_id(base)
        label = f"'{did}' ({title})" if title else f"'{did}'"
        desc = self.describe(did)
        nodes: list[dict] = []
        first = nid
        if typ == "start" or typ.startswith("trigger"):
            node = {"id": nid, "kind": "input", "description": desc, **self.start_payload(nid, d)}
        elif typ in ("end", "answer"):
            node = {"id": nid, "kind": "output", "description": desc}
        elif typ in ("llm", "parameter-extractor", "question-classifier"):
            node = {"id": nid, "kind": "llm", "description": desc, **self.llm_fields(nid, d, typ)}
        elif typ == "agent":
            node = self.agent_loop(nid, d, desc, label, chain)
        elif typ in ("knowledge-retrieval", "knowledge-retrieval-v2"):
            nodes, node = self.retrieval(nid, d, desc, label)
            if nodes:
                first = nodes[0]["id"]
        elif typ in ("tool", "http-request"):
            node = {"id": nid, "kind": "tool", "description": desc, **self.tool_fields(nid, d, typ)}
        elif typ in _CPU_TYPES:
            ms = CPU_MS.get(typ, CPU_MS_OTHER)
            self.note(nid, f"cpu_ms {ms:g} (default for {typ})")
            node = {"id": nid, "kind": "code", "description": desc, "cpu_ms": ms}
        elif typ in _CONTAINERS:
            node = self.container(nid, did, d, desc, chain, copy)
        elif typ in ("if-else",):  # an if-else always becomes a branch; never reached
            node = {"id": nid, "kind": "code", "description": desc, "cpu_ms": CPU_MS_OTHER}
        else:
            self.warn(f"Dify node {label}: node type '{typ}' is unknown to hetagent; imported as "
                      f"generic CPU work ({CPU_MS_UNKNOWN:g} ms)")
            self.note(nid, f"unknown type '{typ}': code, cpu_ms {CPU_MS_UNKNOWN:g}")
            node = {"id": nid, "kind": "code", "description": desc + " (unknown type: CPU work)",
                    "cpu_ms": CPU_MS_UNKNOWN}
        for n in nodes:
            self.pending(n["id"], did, copy, chain, role="aux", fixed=n.pop("_fixed", []))
            self.info[n["id"]]["node"] = n
        self.pending(nid, did, copy, chain, role="main" if first == nid else "exit",
                     fixed=node.pop("_fixed", []))
        self.info[nid]["node"] = node
        if first != nid:
            self.info[first]["role"] = "main"
        self.entry[(did, copy)] = first
        self.exit[(did, copy)] = nid
        return nodes + [node]

    def start_payload(self, nid: str, d: dict) -> dict:
        text, nbytes = 0, 0
        for v in d.get("variables") or []:
            if not isinstance(v, dict):
                continue
            t = str(v.get("type") or "text-input")
            if t in ("file", "file-list"):
                nbytes += FILE_BYTES
            elif t == "paragraph":
                text += 256
            elif t in ("number", "select", "checkbox"):
                text += 4
            else:
                text += 64
        if self.mode == "advanced-chat" or not text and not nbytes:
            text += QUERY_TOKENS
        self.note(nid, f"input text_tokens {text}, bytes {nbytes} (defaults per variable)")
        out = {"text_tokens": text}
        if nbytes:
            out["bytes"] = nbytes
        return out

    def llm_fields(self, nid: str, d: dict, typ: str) -> dict:
        model = d.get("model") if isinstance(d.get("model"), dict) else {}
        texts: list = []
        extra, why = 0, []
        if typ == "llm":
            pt = d.get("prompt_template")
            if isinstance(pt, dict):
                pt = [pt]
            for m in pt or []:
                if isinstance(m, dict):
                    texts.append(m.get("jinja2_text") if m.get("edition_type") == "jinja2"
                                 else m.get("text"))
            ctx = d.get("context")
            if isinstance(ctx, dict) and ctx.get("enabled") and not any(
                    isinstance(t, str) and "{{#context#}}" in t for t in texts):
                extra += CONTEXT_TOKENS
                why.append(f"{CONTEXT_TOKENS} of context")
            vision = d.get("vision")
            if isinstance(vision, dict) and vision.get("enabled"):
                extra += IMAGE_TOKENS
                why.append(f"{IMAGE_TOKENS} for an image")
            out_tokens = self.output_tokens(nid, model)
        elif typ == "parameter-extractor":
            texts.append(d.get("instruction"))
            params = d.get("parameters") or []
            texts += [str(p) for p in params]
            extra += QUERY_TOKENS + 300
            why.append("300 of extraction instructions")
            out_tokens = 32 + 32 * len(params)
            self.note(nid, f"output_tokens {out_tokens} (32 + 32 per parameter)")
        else:  # question-classifier
            texts.append(d.get("instruction") or d.get("instructions"))
            texts += [str(c.get("name")) for c in d.get("classes") or [] if isinstance(c, dict)]
            extra += QUERY_TOKENS + 400
            why.append("400 of classification instructions")
            out_tokens = CLASSIFIER_OUTPUT_TOKENS
            self.note(nid, f"output_tokens {out_tokens} (classifier default)")
        mem = d.get("memory")
        if isinstance(mem, dict):
            win = mem.get("window") if isinstance(mem.get("window"), dict) else {}
            turns = int(_num(win.get("size"), MEMORY_TURNS)) if win.get("enabled") else MEMORY_TURNS
            extra += turns * HISTORY_TOKENS_PER_TURN
            why.append(f"{turns} turns of memory")
            texts.append(mem.get("query_prompt_template"))
        fields = self.llm_model(nid, model, self.describe_short(d, nid))
        fields["prompt_tokens"] = self.prompt_tokens(nid, texts, extra, ", ".join(why))
        fields["output_tokens"] = out_tokens
        return fields

    @staticmethod
    def describe_short(d: dict, nid: str) -> str:
        t = d.get("title")
        return f"'{nid}' ({_fix_surrogates(str(t))})" if t else f"'{nid}'"

    def tool_fields(self, nid: str, d: dict, typ: str) -> dict:
        if typ == "http-request":
            method = str(d.get("method") or "get").upper()
            url = str(d.get("url") or "")
            host = re.sub(r"^[a-z]+://", "", url).split("/")[0] or "http"
            self.note(nid, f"latency_ms {HTTP_LATENCY_MS:g} (http-request default)")
            body = d.get("body") if isinstance(d.get("body"), dict) else {}
            req = 1024 if str(body.get("type") or "none") != "none" else 256
            return {"tool": f"http {method} {host}"[:80], "latency_ms": HTTP_LATENCY_MS,
                    "request_bytes": req}
        ptype = str(d.get("provider_type") or "builtin")
        prov = str(d.get("provider_name") or d.get("provider_id") or "tool")
        tname = str(d.get("tool_name") or d.get("tool_label") or "tool")
        lat = WORKFLOW_TOOL_LATENCY_MS if ptype == "workflow" else TOOL_LATENCY_MS
        self.note(nid, f"latency_ms {lat:g} ({ptype} tool default)")
        return {"tool": f"{_provider_short(prov)}/{tname}"[:80], "latency_ms": lat}

    def agent_tools(self, tools) -> list[str]:
        names = []
        for t in tools or []:
            if not isinstance(t, dict) or t.get("enabled") is False:
                continue
            prov = _provider_short(str(t.get("provider_name") or t.get("provider_id") or "tool"))
            names.append(f"{prov}/{t.get('tool_name') or t.get('tool_label') or 'tool'}"[:80])
        return names

    def agent_body(self, nid: str, model: dict, texts: list, tools: list[str], title: str) -> list:
        llm_id = self.new_id(f"{nid}_llm")
        fields = self.llm_model(llm_id, model, title)
        extra = 300 + 150 * len(tools)
        body = [{"id": llm_id, "kind": "llm", "description": "agent step: decide, call a tool or answer",
                 **fields,
                 "prompt_tokens": self.prompt_tokens(llm_id, texts, extra,
                                                     "300 of agent instructions, 150 per tool schema"),
                 "output_tokens": self.output_tokens(llm_id, model, 256)}]
        tool_nodes = []
        for tname in tools:
            tid = self.new_id(f"{nid}_{_symbol(tname.split('/')[-1]) or 'tool'}")
            self.note(tid, f"latency_ms {TOOL_LATENCY_MS:g} (agent tool default)")
            tool_nodes.append({"id": tid, "kind": "tool", "description": f"agent tool {tname}",
                               "tool": tname, "latency_ms": TOOL_LATENCY_MS})
        if len(tool_nodes) == 1:
            tool_nodes[0]["inputs"] = [llm_id]
            body += tool_nodes
        elif tool_nodes:
            bid = self.new_id(f"{nid}_tools")
            k = len(tool_nodes)
            probs = [1.0 / k] * k
            probs[-1] = 1.0 - sum(probs[:-1])
            self.note(bid, f"{k} tools, probability {1 / k:.3g} each (default: equal)")
            body.append({"id": bid, "kind": "branch", "description": "the tool the agent calls",
                         "inputs": [llm_id],
                         "arms": [{"name": t["tool"], "probability": p, "nodes": [t]}
                                  for t, p in zip(tool_nodes, probs)]})
        return body

    def agent_loop(self, nid: str, d: dict, desc: str, label: str, chain: tuple) -> dict:
        params = d.get("agent_parameters") if isinstance(d.get("agent_parameters"), dict) else {}
        mp = params.get("model")
        model = mp.get("value") if isinstance(mp, dict) and isinstance(mp.get("value"), dict) else (
            mp if isinstance(mp, dict) else {})
        if not model and isinstance(d.get("model"), dict):
            model = d["model"]
        tools_p = params.get("tools")
        tools = self.agent_tools(tools_p.get("value") if isinstance(tools_p, dict) else tools_p)
        mcp = params.get("mcp_server") or params.get("mcp_servers_config")
        if mcp and not tools:
            tools = ["mcp/server"]
        texts = []
        for k in ("instruction", "query", "system_prompt"):
            v = params.get(k)
            texts.append(v.get("value") if isinstance(v, dict) else v)
        mx = int(_num(params.get("maximum_iterations") or params.get("max_iterations"), 0))
        if mx < 1:
            mx = AGENT_MAX
            self.note(nid, f"max_iterations {mx} (agent default)")
        exp = min(AGENT_EXPECTED, mx)
        self.note(nid, f"expected_iterations {exp} (default)")
        body = self.agent_body(nid, model, texts, tools, label)
        return {"id": nid, "kind": "loop", "description": desc + " (agent loop)",
                "expected_iterations": exp, "max_iterations": mx, "body": body}

    def retrieval(self, nid: str, d: dict, desc: str, label: str):
        datasets = d.get("dataset_ids") or []
        n_ds = max(1, len(datasets)) if isinstance(datasets, list) else 1
        mode = str(d.get("retrieval_mode") or "multiple")
        mrc = d.get("multiple_retrieval_config") if isinstance(d.get("multiple_retrieval_config"),
                                                               dict) else {}
        top_k = _num(d.get("top_n") or d.get("top_k") or mrc.get("top_k"), None)
        if top_k is None:
            top_k = TOP_K
            self.note(nid, f"top_k {TOP_K} (default)")
        top_k = max(1, int(top_k))
        if "reranking_enable" in mrc:
            rerank = bool(mrc.get("reranking_enable")) and mrc.get("reranking_mode") != "weighted_score"
        elif "reranking_enable" in d:
            rerank = bool(d.get("reranking_enable"))
        else:
            rm = mrc.get("reranking_model")
            rerank = mode != "single" and isinstance(rm, dict) and bool(rm.get("model"))
        size = INDEX_SIZE * n_ds
        self.note(nid, f"index_size {size} ({INDEX_SIZE} vectors per dataset, default)")
        node = {"id": nid, "kind": "memory_search", "description": desc, "index_size": size,
                "top_k": top_k, "rerank": rerank}
        pre = []
        src = d.get("single_retrieval_config")
        if mode == "single" and n_ds > 1 and isinstance(src, dict):
            rid = self.new_id(f"{nid}_router")
            fields = self.llm_model(rid, src.get("model"), label)
            pre.append({"id": rid, "kind": "llm", "description": "retrieval router: picks a dataset",
                        **fields, "prompt_tokens": 256 + 64 * n_ds, "output_tokens": 32})
            self.note(rid, f"prompt_tokens {256 + 64 * n_ds}, output_tokens 32 (router default)")
            node["_fixed"] = [rid]
        return pre, node

    def container(self, nid: str, did: str, d: dict, desc: str, chain: tuple, copy: tuple) -> dict:
        typ = self.nodes[did]["type"]
        children = [c for c in self.nodes if self.nodes[c]["parent"] == did]
        children.sort(key=self.order.get)
        inner = chain + ((nid, 0),)
        if typ == "loop":
            mx = int(_num(d.get("loop_count"), 0))
            if mx < 1:
                mx = LOOP_MAX
                self.note(nid, f"max_iterations {mx} (loop default)")
            brk = d.get("break_conditions")
            exp = float(mx) if not brk else (1 + mx) / 2
            if brk:
                self.note(nid, f"expected_iterations {exp:g} ((1 + loop_count) / 2, default)")
            rounds_exp, rounds_max, copies = exp, mx, 1
        else:
            self.note(nid, f"expected_iterations {ITERATION_ITEMS}, max_iterations {ITERATION_MAX} "
                           f"(iteration items, default)")
            copies = 1
            if d.get("is_parallel"):
                par = int(_num(d.get("parallel_nums"), PARALLEL_NUMS)) or PARALLEL_NUMS
                copies = max(1, min(par, ITERATION_ITEMS))
                self.note(nid, f"parallel: {copies} copies of the body per round")
            rounds_exp = math.ceil(ITERATION_ITEMS / copies)
            rounds_max = math.ceil(ITERATION_MAX / copies)
        body: list[dict] = []
        if children:
            blocks = self.structure(children)
            for k in range(copies):
                body += self.emit(blocks, inner, copy + ((k,) if copies > 1 else ()))
        if not body:
            eid = self.new_id(f"{nid}_body")
            body = [{"id": eid, "kind": "code", "description": "empty loop body", "cpu_ms": CPU_MS_OTHER}]
            self.info[eid] = {"chain": inner, "did": did, "copy": copy, "role": "aux", "fixed": [],
                              "node": body[0]}
            self.node_lines[eid] = self.line(self.nodes[did]["path"] + ("id",))
        return {"id": nid, "kind": "loop", "description": desc + (" (parallel)" if copies > 1 else ""),
                "expected_iterations": float(rounds_exp), "max_iterations": int(rounds_max),
                "body": body}

    # ---- inputs --------------------------------------------------------------------------------
    def refs_in(self, did: str) -> list[str]:
        """Dify node ids a node's data refers to (selectors and {{#id.var#}} in text)."""
        found: list[str] = []

        def add(x):
            x = str(x)
            if x == "sys":
                x = "__start__"
            if (x in self.nodes or x == "__start__") and x not in found:
                found.append(x)

        def rec(v, depth=0):
            if depth > 40:
                return
            if isinstance(v, str):
                for m in _REF_RE.finditer(v):
                    add(m.group(1).split(".")[0])
            elif isinstance(v, list):
                if len(v) >= 2 and isinstance(v[0], (str, int)) and isinstance(v[1], str) and (
                        str(v[0]) in self.nodes or v[0] == "sys") and all(
                        isinstance(x, (str, int)) for x in v):
                    add(v[0])
                else:
                    for x in v:
                        rec(x, depth + 1)
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k not in ("desc", "title", "selected", "type"):
                        rec(x, depth + 1)
        rec(self.nodes[did]["data"])
        return found

    def lookup(self, table: dict, did: str, copy: tuple):
        for i in range(len(copy), -1, -1):
            if (did, copy[:i]) in table:
                return table[(did, copy[:i])]
        return None

    def visible(self, x: str, target: str) -> str | None:
        """What node x may name to depend on `target`: target, its container, or None (a sibling arm
        or x's own container)."""
        cx, ct = self.info[x]["chain"], self.info[target]["chain"]
        k = 0
        while k < min(len(cx), len(ct)) and cx[k] == ct[k]:
            k += 1
        if k == len(ct):
            ref = target
        else:
            cont = ct[k][0]
            if k < len(cx) and cx[k][0] == cont:
                return None  # a sibling arm of the same branch
            ref = cont
        if ref == x or any(c[0] == ref for c in cx):
            return None
        return ref

    def wire(self, nodes: list[dict]):
        start = [d for d in self.nodes if self.nodes[d]["type"] == "start"]
        self.start_did = start[0] if start else None
        outputs = {nid for nid, inf in self.info.items() if inf["node"]["kind"] == "output"}
        control: dict[str, list[str]] = {}
        for nid, inf in self.info.items():
            ins = list(inf["fixed"])
            if inf["role"] == "main":
                did, copy = inf["did"], inf["copy"]
                for p, h in self.preds[did]:
                    if self.handles(p) is not None:
                        t = self.lookup(self.branch_of, p, copy)
                    else:
                        t = self.lookup(self.exit, p, copy)
                    if t is not None:
                        ins.append(t)
            control[nid] = ins  # "branch" and "exit" roles: only their fixed inputs
        # resolve visibility (a reference into a container names the container)
        for nid, inf in self.info.items():
            out = []
            for t in control[nid]:
                r = self.visible(nid, t) if t in self.info else None
                if r is not None and r not in out:
                    out.append(r)
            node = inf["node"]
            if out:
                node["inputs"] = out
            elif "inputs" in node and not node["inputs"]:
                del node["inputs"]
        # data references that add a dependency
        for nid, inf in list(self.info.items()):
            if inf["role"] != "main":
                continue
            for r in self.refs_in(inf["did"]):
                if r == "__start__":
                    if self.start_did is None:
                        continue
                    r = self.start_did
                t = self.lookup(self.exit, r, inf["copy"])
                if t is None or t not in self.info:
                    continue
                v = self.visible(nid, t)
                if v is None or v in outputs:
                    continue
                self.add_data_edge(nid, v)
        # an output in mid-flow is transparent: what follows it consumes what it consumed
        done: dict[str, list[str]] = {}

        def through(nid, stack=()):
            if nid in done:
                return done[nid]
            out = []
            for t in self.info[nid]["node"].get("inputs", []):
                if t in outputs and t not in stack:
                    for u in through(t, stack + (nid,)):
                        u2 = self.visible(nid, u)
                        if u2 is not None and u2 not in out:
                            out.append(u2)
                elif t not in outputs and t not in out:
                    out.append(t)
            done[nid] = out
            return out
        for nid, inf in self.info.items():
            node = inf["node"]
            if any(t in outputs for t in node.get("inputs", [])):
                new = through(nid)
                if new:
                    node["inputs"] = new
                else:
                    del node["inputs"]
        # order each scope topologically (stable)
        self.sort_scope(nodes)

    def scope_anchor(self, x: str, t: str) -> str:
        """The node standing for x in t's scope (x itself or x's container there)."""
        ct = self.info[t]["chain"]
        cx = self.info[x]["chain"]
        if len(cx) > len(ct):
            return cx[len(ct)][0]
        return x

    def ancestors(self, x: str) -> set[str]:
        seen, stack = set(), [x]
        while stack:
            n = stack.pop()
            for i in self.info[n]["node"].get("inputs", []):
                if i not in seen and i in self.info:
                    seen.add(i)
                    stack.append(i)
            # a node without inputs inside a container consumes the container's inputs
            ch = self.info[n]["chain"]
            if ch and not self.info[n]["node"].get("inputs"):
                c = ch[-1][0]
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return seen

    def add_data_edge(self, x: str, t: str):
        anchor = self.scope_anchor(x, t)
        if t == anchor:
            return
        if t in self.ancestors(x) or t in self.ancestors(anchor):
            return  # already a dependency
        if anchor in self.ancestors(t) or x in self.ancestors(t):
            return  # would make a cycle
        self.info[x]["node"].setdefault("inputs", []).append(t)

    def sort_scope(self, nodes: list[dict]):
        ids = {n["id"] for n in nodes}
        pos = {n["id"]: i for i, n in enumerate(nodes)}
        indeg = {n["id"]: sum(1 for i in n.get("inputs", []) if i in ids) for n in nodes}
        by_id = {n["id"]: n for n in nodes}
        ready = sorted([i for i in ids if indeg[i] == 0], key=pos.get)
        out = []
        while ready:
            i = ready.pop(0)
            out.append(by_id[i])
            for n in nodes:
                if i in n.get("inputs", []):
                    indeg[n["id"]] -= n["inputs"].count(i)
                    if indeg[n["id"]] == 0:
                        ready.append(n["id"])
                        ready.sort(key=pos.get)
        if len(out) == len(nodes):
            nodes[:] = out
        for n in nodes:
            if n["kind"] == "loop":
                self.sort_scope(n["body"])
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    self.sort_scope(a["nodes"])

    # ---- features: speech-to-text and text-to-speech -----------------------------------------
    def features(self, nodes: list[dict], features: dict):
        def on(key):
            f = features.get(key)
            return isinstance(f, dict) and bool(f.get("enabled"))
        inputs = [n for n in nodes if n["kind"] == "input"]
        if on("speech_to_text") and inputs:
            src = inputs[0]
            sid = self.new_id("speech_to_text")
            src["audio_seconds"] = 5
            self.note(src["id"], "audio_seconds 5 (speech-to-text on, default)")
            stt = {"id": sid, "kind": "speech_to_text", "model": STT_MODEL,
                   "description": "Dify feature speech_to_text", "inputs": [src["id"]]}
            self.note(sid, f"model {STT_MODEL} (Dify's hosted speech-to-text, run locally)")

            def redirect(ns):
                for n in ns:
                    if n is not stt and src["id"] in n.get("inputs", []):
                        n["inputs"] = [sid if i == src["id"] else i for i in n["inputs"]]
                    if n["kind"] == "loop":
                        redirect(n["body"])
                    elif n["kind"] == "branch":
                        for a in n["arms"]:
                            redirect(a["nodes"])
            redirect(nodes)
            nodes.insert(nodes.index(src) + 1, stt)
            self.node_lines[sid] = self.line(("workflow", "features", "speech_to_text"))
        if on("text_to_speech"):
            def add_tts(ns):
                for n in list(ns):
                    if n["kind"] == "output":
                        tid = self.new_id(f"{n['id']}_tts")
                        tts = {"id": tid, "kind": "text_to_speech",
                               "description": "Dify feature text_to_speech"}
                        if n.get("inputs"):
                            tts["inputs"] = n["inputs"]
                        n["inputs"] = [tid]
                        ns.insert(ns.index(n), tts)
                        self.node_lines[tid] = self.line(("workflow", "features", "text_to_speech"))
                    elif n["kind"] == "loop":
                        add_tts(n["body"])
                    elif n["kind"] == "branch":
                        for a in n["arms"]:
                            add_tts(a["nodes"])
            add_tts(nodes)

    # ---- chat, agent-chat and completion apps (no graph) ------------------------------------------
    def app_without_graph(self, mc: dict, path: tuple):
        ln = self.line(path)
        node_lines: dict[str, int] = {}
        nodes: list[dict] = []

        def add(n):
            self.native_ids.add(n["id"])
            nodes.append(n)
            node_lines[n["id"]] = ln
            return n["id"]
        text = QUERY_TOKENS if self.mode != "completion" else 0
        nbytes = 0
        for item in mc.get("user_input_form") or []:
            if isinstance(item, dict):
                for t, v in item.items():
                    if t in ("file", "file-list"):
                        nbytes += FILE_BYTES
                    else:
                        text += 256 if t == "paragraph" else 4 if t in ("number", "select") else 64
        text = text or QUERY_TOKENS
        self.note("start", f"input text_tokens {text} (defaults per variable)")
        inp = {"id": "start", "kind": "input", "description": f"Dify {self.mode or 'chat'} app input",
               "text_tokens": text}
        if nbytes:
            inp["bytes"] = nbytes
        prev = add(inp)

        def on(key):
            f = mc.get(key)
            return isinstance(f, dict) and bool(f.get("enabled"))
        if on("speech_to_text"):
            inp["audio_seconds"] = 5
            prev = add({"id": "speech_to_text", "kind": "speech_to_text", "model": STT_MODEL,
                        "inputs": [prev], "description": "Dify feature speech_to_text"})
        ds = mc.get("dataset_configs") if isinstance(mc.get("dataset_configs"), dict) else {}
        dsets = ds.get("datasets")
        dsets = dsets.get("datasets") if isinstance(dsets, dict) else dsets
        n_ds = len([x for x in dsets or [] if isinstance(x, dict) and
                    (x.get("dataset") or {}).get("enabled", True) is not False])
        context = 0
        if n_ds:
            top_k = int(_num(ds.get("top_k"), TOP_K) or TOP_K)
            rerank = bool(ds.get("reranking_enabled") or (ds.get("reranking_model") or {}).get(
                "reranking_model_name")) and ds.get("retrieval_model") != "single"
            self.note("retrieval", f"index_size {INDEX_SIZE * n_ds} ({INDEX_SIZE} per dataset)")
            prev = add({"id": "retrieval", "kind": "memory_search", "inputs": [prev],
                        "description": "Dify dataset_configs: retrieval", "top_k": top_k,
                        "index_size": INDEX_SIZE * n_ds, "rerank": rerank})
            context = CONTEXT_TOKENS
        model = mc.get("model") if isinstance(mc.get("model"), dict) else {}
        texts = [mc.get("pre_prompt")]
        cpc = mc.get("chat_prompt_config")
        if isinstance(cpc, dict):
            texts += [m.get("text") for m in cpc.get("prompt") or [] if isinstance(m, dict)]
        cpc = mc.get("completion_prompt_config")
        if isinstance(cpc, dict) and isinstance(cpc.get("prompt"), dict):
            texts.append(cpc["prompt"].get("text"))
        am = mc.get("agent_mode") if isinstance(mc.get("agent_mode"), dict) else {}
        history = MEMORY_TURNS * HISTORY_TOKENS_PER_TURN if self.mode != "completion" else 0
        if self.mode == "agent-chat" or am.get("enabled"):
            tools = self.agent_tools(am.get("tools"))
            mx = int(_num(am.get("max_iteration"), 0))
            if mx < 1:
                mx = AGENT_CHAT_MAX
                self.note("agent", f"max_iterations {mx} (agent-chat default)")
            exp = min(AGENT_EXPECTED, mx)
            self.note("agent", f"expected_iterations {exp} (default)")
            self.native_ids.add("agent")
            body = self.agent_body("agent", model, texts, tools, "agent")
            body[0]["prompt_tokens"] += context + history
            prev = add({"id": "agent", "kind": "loop", "inputs": [prev],
                        "description": f"Dify agent-chat ({am.get('strategy') or 'function_call'})",
                        "expected_iterations": exp, "max_iterations": mx, "body": body})
            for n in body:
                node_lines[n["id"]] = ln
                if n["kind"] == "branch":
                    for a in n["arms"]:
                        for t in a["nodes"]:
                            node_lines[t["id"]] = ln
        else:
            self.native_ids.add("llm")
            fields = self.llm_model("llm", model, "'llm'")
            why = f"{context} of context, {history} of history" if context or history else ""
            prev = add({"id": "llm", "kind": "llm", "inputs": [prev],
                        "description": f"Dify {self.mode or 'chat'} app model", **fields,
                        "prompt_tokens": self.prompt_tokens("llm", texts + ["{{#sys.query#}}"],
                                                            context + history, why),
                        "output_tokens": self.output_tokens("llm", model)})
        if on("text_to_speech"):
            prev = add({"id": "text_to_speech", "kind": "text_to_speech", "inputs": [prev],
                        "description": "Dify feature text_to_speech"})
        add({"id": "answer", "kind": "output", "inputs": [prev], "description": "the app's answer"})
        return nodes, node_lines
