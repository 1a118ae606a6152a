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
  - hosted models: hosted.PRICES (list prices per million tokens, with source and date); a model not in
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
    others 1; an unknown node type 5. A python3 code node also keeps its code (`language`, `source`:
    `hetagent run` runs it in the sandbox); other languages, or code that does not parse, get a stand-in.
  - retrieval: INDEX_SIZE (100000) vectors per dataset, dims 384, top_k from the node (default 4).
  - input: 64 tokens per text variable and per sys.query, 256 per paragraph, 4 per number/select,
    FILE_BYTES (1 MiB) per file variable; audio_seconds 5 when speech-to-text is on.
  - rate 1 request/s and no SLA (Dify records neither).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from hetagent.errors import InputError, WorkflowError
from hetagent.workflow import safeyaml
from hetagent.workflow.importers.common import ID_RE, fix_surrogates, number, ordered, symbol, tokens_of_text
from hetagent.workflow.importers.dify_defaults import (CONTEXT_TOKENS, KNOWN_VERSION, OUTPUT_TOKENS,
                                                       QUERY_TOKENS, VAR_TOKENS, _REF_RE, _version)
from hetagent.workflow.importers.dify_graph import GraphMixin
from hetagent.workflow.importers.dify_nodes import NodeMixin
from hetagent.workflow.importers.hosted import DEFAULT_PRICE, LOCAL_PROVIDERS, PRICES, price_of, provider_short

__all__ = ["DifyImportWarning", "is_dify", "to_native", "to_yaml", "PRICES", "KNOWN_VERSION"]


class DifyImportWarning(UserWarning):
    """Something in a Dify export was guessed or degraded (unknown node type, unknown model price...)."""


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
    body = yaml.safe_dump(ordered(native), sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(head) + "\n" + body


class _Converter(GraphMixin, NodeMixin):
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
                inner = safeyaml.load(fix_surrogates(data["data"]), self.file)
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
        nid = base if ID_RE.match(base) else ("n" + re.sub(r"[^A-Za-z0-9_\-]", "_", base))
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
        name = symbol(str(app.get("name") or "")) or symbol(Path(self.file).stem) or "dify_app"
        if name and not re.match(r"^[A-Za-z_]", name):
            name = "n" + name
        desc = (f"Imported from Dify app '{fix_surrogates(str(app.get('name') or ''))}' "
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
        short = provider_short(provider)
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
                    if short in LOCAL_PROVIDERS else "")
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
        mt = number((params or {}).get("max_tokens"), None) if isinstance(params, dict) else None
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
            own += tokens_of_text(_REF_RE.sub("", t))
        total = max(1, own + refs + extra)
        self.note(nid, f"prompt_tokens {total} (estimate: {own} of template text, {refs} for variable "
                       f"references{', ' + why if why else ''})")
        return total
