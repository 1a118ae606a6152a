"""Spans grouped into traces and read as calls: which span is an LLM call, a tool call or an agent,
what each reports (tokens, model, tool name), and the steps of every agent scope in time order.

Classification looks at attributes and the exporter's own type, never at one convention's operation
names alone (in order, the first that says something wins):
  1. `gen_ai.operation.name`: chat, text_completion, generate_content, completion, call_llm, generate ->
     LLM; execute_tool -> tool; invoke_agent, create_agent -> agent; embeddings -> not a call;
  2. `openinference.span.kind`: LLM; TOOL or RETRIEVER (a tool); AGENT; EMBEDDING, RERANKER: not a call;
  3. the exporter's type: Langfuse GENERATION / TOOL / AGENT / RETRIEVER, LangSmith run_type llm / tool /
     retriever, Phoenix span_kind;
  4. Vercel AI SDK `ai.operationId`: ai.toolCall -> tool; ai.generateText / ai.streamText /
     ai.generateObject / ai.streamObject and their .doGenerate / .doStream steps -> LLM;
  5. a tool name (`gen_ai.tool.name`, `tool.name`) -> tool (tools typed as plain spans);
  6. a model and token counts on a span that names no agent -> LLM;
  7. an agent name (`gen_ai.agent.name`, `agent_name`) -> agent.
Everything else (chains, graph nodes, event markers) is transparent: its children are read in its place.

Traps handled and reported, never summed silently:
  - an LLM span with LLM spans below it (a framework wrapper around the provider call, often with
    different counts) counts once, at the innermost call; the wrapper goes to `skipped`;
  - spans that are not calls but carry token counts (agent or orchestration totals) go to `skipped`;
  - a span whose parent is not in the files is attached to its trace's root, with a warning;
  - an LLM call without token counts is counted as a call; its tokens are not guessed (a warning says
    how many);
  - the same span twice (the same file given twice) is read once.
A tool span with LLM calls below it is an agent used as a tool: read as a sub-agent.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from hetagent.workflow.importers.trace_formats import Span, as_int

LLM_OPS = {"chat", "text_completion", "generate_content", "completion", "call_llm", "generate"}
TOOL_OPS = {"execute_tool"}
AGENT_OPS = {"invoke_agent", "create_agent"}
NOT_CALL_OPS = {"embeddings"}
VERCEL_LLM = re.compile(r"^ai\.(generateText|streamText|generateObject|streamObject)(\.do(Generate|Stream))?$")

_IN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
            "ai.usage.promptTokens", "ai.usage.inputTokens")
_OUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
             "ai.usage.completionTokens", "ai.usage.outputTokens")
_MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "ai.model.id",
               "metadata.ls_model_name", "model_name")
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "ai.model.provider",
                  "metadata.ls_provider")
_TOOL_KEYS = ("gen_ai.tool.name", "tool.name", "ai.toolCall.name")
_AGENT_KEYS = ("gen_ai.agent.name", "agent_name", "agent.name")
_NODE_KEYS = ("metadata.langgraph_node", "langgraph_node", "langfuse.observation.metadata.langgraph_node",
              "koog.node.name", "graph.node.id")
_UUID = re.compile(r"[._\- ]?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def classify(s: Span) -> str:
    """'llm', 'tool', 'agent', 'none' (a call of no interest: embeddings) or 'other' (transparent)."""
    a = s.attrs
    op = str(a.get("gen_ai.operation.name") or "").lower()
    if op in LLM_OPS:
        return "llm"
    if op in TOOL_OPS:
        return "tool"
    if op in AGENT_OPS:
        return "agent"
    if op in NOT_CALL_OPS:
        return "none"
    oi = str(a.get("openinference.span.kind") or "").upper()
    if oi == "LLM":
        return "llm"
    if oi in ("TOOL", "RETRIEVER"):
        return "tool"
    if oi == "AGENT":
        return "agent"
    if oi in ("EMBEDDING", "RERANKER"):
        return "none"
    hint = s.hint.upper()
    if hint in ("GENERATION", "LLM"):
        return "llm"
    if hint in ("TOOL", "RETRIEVER"):
        return "tool"
    if hint == "AGENT":
        return "agent"
    if hint in ("EMBEDDING", "RERANKER"):
        return "none"
    vid = str(a.get("ai.operationId") or a.get("operation.name") or "")
    if vid == "ai.toolCall":
        return "tool"
    if VERCEL_LLM.match(vid):
        return "llm"
    if any(a.get(k) for k in _TOOL_KEYS):
        return "tool"
    agent_named = any(a.get(k) for k in _AGENT_KEYS)
    if not agent_named and (model_of(s) and (tokens_of(s) != (None, None))):
        return "llm"
    if agent_named:
        return "agent"
    return "other"


def tokens_of(s: Span) -> tuple[int | None, int | None]:
    tin, tout = s.input_tokens, s.output_tokens
    if tin is None:
        tin = next((v for v in (as_int(s.attrs.get(k)) for k in _IN_KEYS) if v is not None), None)
    if tout is None:
        tout = next((v for v in (as_int(s.attrs.get(k)) for k in _OUT_KEYS) if v is not None), None)
    return tin, tout


def model_of(s: Span) -> str | None:
    if s.model:
        return str(s.model)
    for k in _MODEL_KEYS:
        if s.attrs.get(k):
            return str(s.attrs[k])
    return None


def provider_of(s: Span) -> str | None:
    for k in _PROVIDER_KEYS:
        if s.attrs.get(k):
            return str(s.attrs[k]).split(".")[0]
    m = model_of(s) or ""
    return m.split("/")[0] if "/" in m else None


def tool_name_of(s: Span) -> str:
    for k in _TOOL_KEYS:
        if s.attrs.get(k):
            return str(s.attrs[k])
    name = re.sub(r"^(execute_tool|running tool:?|tool[.:]|ai\.toolCall)\s*", "", s.name.strip())
    return name or s.name or "tool"


def agent_name_of(s: Span) -> str:
    for k in _AGENT_KEYS:
        if s.attrs.get(k):
            return str(s.attrs[k])
    name = _UUID.sub("", s.name)
    name = re.sub(r"^invoke_agent\s*\[?|\]$", "", name).strip(" .[]")
    name = re.sub(r"\s+run$", "", name)
    return name or "agent"


def graph_node_of(s: Span) -> str | None:
    """The LangGraph (or Koog) graph node a span reports running in, if any."""
    for k in _NODE_KEYS:
        if s.attrs.get(k):
            return str(s.attrs[k])
    return None


# ---- calls and steps -----------------------------------------------------------------------------

@dataclass
class Call:
    kind: str                       # llm, tool, agent
    span: Span
    name: str                       # model (llm), tool name, agent name
    input_tokens: int | None = None
    output_tokens: int | None = None
    provider: str | None = None
    steps: list["Step"] = field(default_factory=list)   # an agent's own steps

    @property
    def label(self) -> tuple:
        return ("L",) if self.kind == "llm" else (self.kind[0].upper(), self.name)


@dataclass
class Step:
    """Calls of one scope that overlap in time: one call, or several run in parallel."""
    calls: list[Call]

    @property
    def kind(self) -> str:
        kinds = {c.kind for c in self.calls}
        if kinds == {"llm"} and len(self.calls) == 1:
            return "L"
        if kinds == {"tool"}:
            return "T"
        if kinds == {"agent"} and len(self.calls) == 1:
            return "A"
        return "X"

    @property
    def label(self) -> tuple:
        return (self.kind,) + tuple(sorted(c.label for c in self.calls))

    @property
    def start(self) -> float:
        return min(c.span.start for c in self.calls)


@dataclass
class Trace:
    id: str
    root: Span
    steps: list[Step]
    start: float


@dataclass
class TraceSet:
    traces: list[Trace]
    spans: int
    llm_calls: int
    tool_calls: int
    skipped: list[dict]
    warnings: list[str]
    files: list[str]
    tokens: list[tuple[int, int]]            # per trace: (input, output) summed over its counted calls
    calls_without_tokens: int = 0
    children: dict = field(default_factory=dict)   # span id -> child spans (for --structure)
    by_id: dict = field(default_factory=dict)


def read_traces(spans: list[Span]) -> TraceSet:
    """Group spans into traces, classify them, and read every trace as steps of calls."""
    skipped: list[dict] = []
    warnings: list[str] = []
    seen: dict[tuple[str, str], Span] = {}
    kept: list[Span] = []
    for s in spans:
        key = (s.trace, s.id)
        if key in seen:
            skipped.append({"span": _where(s), "why": f"the same span as in {seen[key].file}: read once"})
            continue
        seen[key] = s
        kept.append(s)
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for s in kept:
        by_trace[s.trace].append(s)
    kinds = {(s.trace, s.id): classify(s) for s in kept}
    out = TraceSet([], len(spans), 0, 0, skipped, warnings, sorted({s.file for s in spans}), [])
    for tid, group in by_trace.items():
        ids = {s.id: s for s in group}
        roots = [s for s in group if s.parent is None]
        missing = [s for s in group if s.parent is not None and s.parent not in ids]
        top = sorted(roots + missing, key=lambda s: (s.start, -s.end))
        if len(roots) == 1:
            root = roots[0]
        elif len(top) == 1:
            root = top[0]
        else:   # several tops: a root that spans the others, else a virtual root over all of them
            cover = [s for s in top if all(o is s or (s.start <= o.start and o.end <= s.end) for o in top)]
            root = cover[0] if cover else Span(tid, f"virtual-root-{tid}", None, "(trace)",
                                               min(s.start for s in top), max(s.end for s in top),
                                               file=top[0].file)
        children: dict[str, list[Span]] = defaultdict(list)
        lost: list[Span] = []
        for s in group:
            if s is root:
                continue
            if s.parent in ids and s.parent != s.id:
                children[s.parent].append(s)
            else:
                children[root.id].append(s)
                if s.parent is not None:
                    lost.append(s)
        if root.parent is not None and root.parent not in ids:
            warnings.append(f"trace {tid}: its root {_where(root)} names a parent that is not in the files "
                            "(the trace began upstream): read from that root")
        if lost:
            names = ", ".join(_where(s) for s in lost[:3]) + (" ..." if len(lost) > 3 else "")
            warnings.append(f"trace {tid}: {len(lost)} span(s) name a parent that is not in the files "
                            f"({names}): read under the trace's root '{root.name}'")
        for v in children.values():
            v.sort(key=lambda s: (s.start, -s.end))
        out.children.update(children)
        out.by_id.update({s.id: s for s in group})
        top = Span(tid, f"trace-{tid}", None, "(trace)", root.start, root.end, file=root.file)
        children[top.id] = [root]              # the root is read like any span: a call, an agent, a chain
        reader = _ScopeReader(children, kinds, tid, skipped)
        steps = reader.steps(top)
        # an agent root (or a chain root holding exactly one agent) is the workflow itself
        while len(steps) == 1 and steps[0].kind == "A":
            steps = steps[0].calls[0].steps
        out.traces.append(Trace(tid, root, steps, root.start))
        out.llm_calls += reader.counts["llm"]
        out.tool_calls += reader.counts["tool"]
        out.calls_without_tokens += reader.no_tokens
        out.tokens.append((reader.tin, reader.tout))
    out.traces.sort(key=lambda t: t.start)
    if out.calls_without_tokens:
        warnings.append(f"{out.calls_without_tokens} LLM call(s) report no token counts: counted as calls, "
                        "their tokens are not in the means (the node's mean comes from the calls that do)")
    return out


def _where(s: Span) -> str:
    return f"'{s.name}' ({s.id}, {s.file}{':' + str(s.line) if s.line else ''})"


class _ScopeReader:
    def __init__(self, children, kinds, trace, skipped):
        self.children, self.kinds, self.trace, self.skipped = children, kinds, trace, skipped
        self.counts = Counter()
        self.no_tokens = 0
        self.tin = self.tout = 0
        self._llm_below: dict[str, bool] = {}

    def kind(self, s: Span) -> str:
        return self.kinds.get((s.trace, s.id), "other")

    def llm_below(self, s: Span) -> bool:
        if s.id not in self._llm_below:
            self._llm_below[s.id] = any(self.kind(c) == "llm" or self.llm_below(c)
                                        for c in self.children.get(s.id, ()))
        return self._llm_below[s.id]

    def innermost(self, s: Span) -> list[Span]:
        out = []
        for c in self.children.get(s.id, ()):
            if self.kind(c) == "llm" and not self.llm_below(c):
                out.append(c)
            else:
                out += self.innermost(c)
        return out

    def calls(self, span: Span) -> list[Call]:
        """The calls directly in this scope, in time order (not into nested agents)."""
        out: list[Call] = []
        for c in self.children.get(span.id, ()):
            k = self.kind(c)
            if k == "llm":
                if self.llm_below(c):
                    inner = self.innermost(c)
                    tin, tout = tokens_of(c)
                    said = f" ({tin}/{tout} tokens)" if tin is not None or tout is not None else ""
                    names = ", ".join(f"'{i.name}'" for i in inner[:3]) + (" ..." if len(inner) > 3 else "")
                    self.skipped.append({"span": _where(c), "why": f"wraps the LLM call(s) {names} and "
                                         f"reports them again{said}: counted once, at the innermost call"})
                    out += self.calls(c)
                else:
                    out.append(self.llm_call(c))
                    out += self.calls(c)
            elif k == "tool":
                if self.llm_below(c):   # an agent used as a tool
                    out += self.agent_call(c, tool_name_of(c))
                else:
                    self.counts["tool"] += 1
                    out.append(Call("tool", c, tool_name_of(c)))
                    self.report_totals(c)
            elif k == "agent":
                out += self.agent_call(c, agent_name_of(c))
            elif k == "none":
                self.skipped.append({"span": _where(c), "why": "an embedding or reranking call: not an LLM "
                                                               "or tool call"})
            else:
                self.report_totals(c)
                out += self.calls(c)
        return sorted(out, key=lambda x: (x.span.start, -x.span.end))

    def report_totals(self, s: Span):
        tin, tout = tokens_of(s)
        if tin or tout:
            self.skipped.append({"span": _where(s), "why": f"not a call, but reports {tin or 0}/{tout or 0} "
                                 "input/output tokens (totals of the calls below it): not counted again"})

    def llm_call(self, s: Span) -> Call:
        self.counts["llm"] += 1
        tin, tout = tokens_of(s)
        if tin is None and tout is None:
            self.no_tokens += 1
        self.tin += tin or 0
        self.tout += tout or 0
        return Call("llm", s, model_of(s) or "unknown", tin, tout, provider_of(s))

    def agent_call(self, s: Span, name: str) -> list[Call]:
        """A nested agent, or, when it holds a single step (OpenInference types any LangGraph node named
        like `agent` as AGENT), that step's calls in its place."""
        self.report_totals(s)
        steps = self.steps(s)
        if len(steps) <= 1:
            return [c for st in steps for c in st.calls]
        call = Call("agent", s, name)
        call.steps = steps
        return [call]

    def steps(self, span: Span) -> list[Step]:
        steps: list[Step] = []
        end = None
        for c in self.calls(span):
            if steps and end is not None and c.span.start < end - 1e-6:
                steps[-1].calls.append(c)
                end = max(end, c.span.end)
            else:
                steps.append(Step([c]))
                end = c.span.end
        return steps
