"""Span files read into one shape: `Span` (trace, id, parent, name, start and end in seconds, flat
attributes, the exporter's own type, tokens and model where the exporter reports them).

Formats, recognised by content, not by file name:
  - OTLP JSON (`{"resourceSpans": [...]}`), one document or one per line (the OpenTelemetry
    Collector's file exporter); ids in hex (the OTLP/JSON rule) or base64 (protobuf's JSON mapping);
  - what OpenTelemetry Python's ConsoleSpanExporter writes: `span.to_json()` documents one after another
    (`context.trace_id` "0x...", `parent_id`, ISO times);
  - JSON lines of spans in any of these shapes, a JSON list of them, or an object with a `spans` list
    (any-agent's AgentTrace: integer ids, times in ns);
  - Langfuse exports: `{"trace": {...}, "observations": [...]}` (one or a list), or bare observations
    (type GENERATION / SPAN / TOOL / AGENT / EVENT, ISO times, `usageDetails`, OTel attributes in
    `metadata.attributes`);
  - LangSmith runs: `run_type`, `parent_run_id`, `trace_id`, `extra.metadata`, `prompt_tokens` /
    `completion_tokens` or the usage in `outputs`, nested `child_runs`; a list, `{"runs": [...]}` or lines;
  - Phoenix spans: `context.span_id` / `context.trace_id`, `parent_id`, `span_kind`, attributes nested
    or flattened (`attributes.llm.token_count.prompt`), as its REST API (`{"data": [...]}`) or a
    dataframe's `to_json(orient="records")` / lines write them.
Errors name the file and the line (of the span's id where a span is at fault).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hetagent.errors import InputError

MAX_BYTES = 512 << 20  # a span file larger than this is refused, not read into memory


@dataclass
class Span:
    trace: str
    id: str
    parent: str | None
    name: str
    start: float                    # seconds since the epoch
    end: float
    attrs: dict = field(default_factory=dict)   # flat: "gen_ai.usage.input_tokens" -> value
    hint: str = ""                  # the exporter's own type: GENERATION, llm, LLM, SpanKind.CLIENT...
    model: str | None = None        # reported by the exporter itself (Langfuse `model`, ...)
    input_tokens: int | None = None
    output_tokens: int | None = None
    file: str = ""
    line: int | None = None

    @property
    def duration_ms(self) -> float:
        return max(0.0, (self.end - self.start) * 1000.0)


class _Reader:
    def __init__(self, file: str, text: str):
        self.file, self.text = file, text
        self.spans: list[Span] = []

    def fail(self, msg: str, line: int | None = None):
        raise InputError(msg, file=self.file, line=line)

    def line_of(self, needle) -> int | None:
        if needle in (None, ""):
            return None
        i = self.text.find(str(needle))
        return self.text.count("\n", 0, i) + 1 if i >= 0 else None

    # ---- entry ----------------------------------------------------------------------------------
    def read(self) -> list[Span]:
        docs = self.documents()
        for doc, line in docs:
            self.document(doc, line)
        return self.spans

    def documents(self) -> list[tuple[object, int]]:
        """The JSON values of the file with the line each starts on: one document, JSON lines, or
        documents written one after another (the console exporter)."""
        text = self.text.lstrip("\ufeff")
        dec = json.JSONDecoder()
        out, i, n = [], 0, len(text)
        while True:
            while i < n and text[i] in " \t\r\n":
                i += 1
            if i >= n:
                break
            line = text.count("\n", 0, i) + 1
            try:
                value, j = dec.raw_decode(text, i)
            except json.JSONDecodeError as e:
                where = text.count("\n", 0, e.pos) + 1
                self.fail(f"not JSON: {e.msg}", where)
            out.append((value, line))
            i = j
        if not out:
            self.fail("empty file: no spans", 1)
        return out

    def document(self, doc, line: int):
        if isinstance(doc, list):
            for item in doc:
                self.document(item, self.line_of(_any_id(item)) or line)
            return
        if not isinstance(doc, dict):
            self.fail(f"expected a JSON object or list of spans, found {type(doc).__name__}", line)
        if "resourceSpans" in doc:
            return self.otlp(doc, line)
        if "observations" in doc and isinstance(doc["observations"], list):
            trace = doc.get("trace") if isinstance(doc.get("trace"), dict) else {}
            for o in doc["observations"]:
                self.langfuse(o, trace)
            return
        for key in ("spans", "runs", "data", "traces"):
            if isinstance(doc.get(key), list) and not self.span_like(doc):
                for item in doc[key]:
                    self.document(item, self.line_of(_any_id(item)) or line)
                return
        if "run_type" in doc:
            return self.langsmith(doc, None)
        if "traceId" in doc and ("parentObservationId" in doc or doc.get("type") in _LANGFUSE_TYPES):
            return self.langfuse(doc, {})
        if self.span_like(doc):
            return self.generic(doc, line)
        keys = ", ".join(sorted(map(str, doc))[:8])
        self.fail("not a span file hetagent knows: expected OTLP JSON (resourceSpans), spans (JSON lines, "
                  "a list, {\"spans\": [...]}, the console exporter's output), a Langfuse, LangSmith or "
                  f"Phoenix export (top-level keys here: {keys})", line)

    @staticmethod
    def span_like(d: dict) -> bool:
        ctx = d.get("context")
        return ("name" in d and (isinstance(ctx, dict) and ("span_id" in ctx or "spanId" in ctx)
                                 or "spanId" in d or "span_id" in d or "context.span_id" in d))

    # ---- formats --------------------------------------------------------------------------------
    def otlp(self, doc: dict, line: int):
        for rs in doc.get("resourceSpans") or []:
            if not isinstance(rs, dict):
                self.fail("resourceSpans holds a non-object", line)
            for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                scope = (ss.get("scope") or ss.get("instrumentationLibrary") or {}).get("name", "")
                for s in ss.get("spans") or []:
                    sid = _otlp_id(s.get("spanId"))
                    ln = self.line_of(s.get("spanId")) or line
                    if not sid or not s.get("traceId"):
                        self.fail(f"OTLP span '{s.get('name', '?')}' has no spanId or traceId", ln)
                    attrs = _with_metadata({a.get("key"): _otlp_value(a.get("value"))
                                            for a in s.get("attributes") or [] if isinstance(a, dict)})
                    if scope:
                        attrs.setdefault("otel.scope.name", scope)
                    self.add(Span(_otlp_id(s["traceId"]), sid, _otlp_id(s.get("parentSpanId")) or None,
                                  str(s.get("name") or ""), self.time(s.get("startTimeUnixNano"), ln, "startTimeUnixNano"),
                                  self.time(s.get("endTimeUnixNano"), ln, "endTimeUnixNano"), attrs,
                                  hint=str(s.get("kind") or ""), line=ln))

    def generic(self, d: dict, line: int):
        """OTel SDK JSON (console exporter, any-agent), Phoenix, and flattened dataframe rows."""
        flat = _flatten(d)
        ctx = d.get("context") if isinstance(d.get("context"), dict) else {}
        trace = ctx.get("trace_id", ctx.get("traceId", flat.get("context.trace_id", d.get("trace_id", d.get("traceId")))))
        sid = ctx.get("span_id", ctx.get("spanId", flat.get("context.span_id", d.get("span_id", d.get("spanId")))))
        parent = d.get("parent_id", d.get("parentSpanId", d.get("parent_span_id")))
        if isinstance(d.get("parent"), dict):
            parent = d["parent"].get("span_id", d["parent"].get("spanId"))
        ln = self.line_of(sid) or line      # an integer id is written in decimal: found the same way
        if sid in (None, "") or trace in (None, ""):
            self.fail(f"span '{d.get('name', '?')}' has no span id or trace id", ln)
        attrs = d.get("attributes") if isinstance(d.get("attributes"), dict) else {}
        attrs = _with_metadata(_flatten(attrs))
        for k, v in flat.items():  # a dataframe row: attributes.* columns
            if k.startswith("attributes.") and v is not None:
                attrs.setdefault(k[len("attributes."):], v)
        kind = d.get("span_kind") or d.get("kind") or ""
        self.add(Span(_norm_id(trace), _norm_id(sid), _norm_id(parent) if parent not in (None, "") else None,
                      str(d.get("name") or ""), self.time(d.get("start_time", d.get("startTime")), ln, "start_time"),
                      self.time(d.get("end_time", d.get("endTime")), ln, "end_time"), attrs,
                      hint=str(kind), line=ln))

    def langfuse(self, o: dict, trace: dict):
        if not isinstance(o, dict):
            self.fail("an observation is not an object")
        ln = self.line_of(o.get("id"))
        if not o.get("id") or not (o.get("traceId") or trace.get("id")):
            self.fail(f"Langfuse observation '{o.get('name', '?')}' has no id or traceId", ln)
        md = o.get("metadata")
        if isinstance(md, str):
            try:
                md = json.loads(md)
            except json.JSONDecodeError:
                md = {}
        md = md if isinstance(md, dict) else {}
        attrs = md.get("attributes") if isinstance(md.get("attributes"), dict) else {}
        attrs = _flatten(attrs)
        for k, v in md.items():
            if k not in ("attributes", "resourceAttributes", "scope") and not isinstance(v, (dict, list)):
                attrs.setdefault(f"metadata.{k}", v)
        scope = md.get("scope")
        if isinstance(scope, dict) and scope.get("name"):
            attrs.setdefault("otel.scope.name", scope["name"])
        usage = o.get("usageDetails") if isinstance(o.get("usageDetails"), dict) else {}
        tin = _usage_sum(usage, "input") if usage else as_int(o.get("promptTokens") or o.get("inputUsage"))
        tout = _usage_sum(usage, "output") if usage else as_int(o.get("completionTokens") or o.get("outputUsage"))
        if not usage and not tin and not tout:   # Langfuse writes 0 usage on every observation without any
            tin = tout = None
        start = self.time(o.get("startTime"), ln, "startTime")
        end = self.time(o.get("endTime"), ln, "endTime") if o.get("endTime") else start
        self.add(Span(str(o.get("traceId") or trace.get("id")), str(o["id"]),
                      str(o["parentObservationId"]) if o.get("parentObservationId") else None,
                      str(o.get("name") or ""), start, end, attrs, hint=str(o.get("type") or ""),
                      model=o.get("model") or None, input_tokens=tin, output_tokens=tout, line=ln))

    def langsmith(self, r: dict, parent: str | None):
        ln = self.line_of(r.get("id"))
        if not r.get("id"):
            self.fail(f"LangSmith run '{r.get('name', '?')}' has no id", ln)
        extra = r.get("extra") if isinstance(r.get("extra"), dict) else {}
        attrs = {f"metadata.{k}": v for k, v in (extra.get("metadata") or {}).items()
                 if not isinstance(v, (dict, list))}
        inv = extra.get("invocation_params") if isinstance(extra.get("invocation_params"), dict) else {}
        model = (extra.get("metadata") or {}).get("ls_model_name") or inv.get("model") or inv.get("model_name")
        tin, tout = as_int(r.get("prompt_tokens")), as_int(r.get("completion_tokens"))
        if tin is None and tout is None:
            tin, tout = _langsmith_usage(r.get("outputs"))
        start = self.time(r.get("start_time"), ln, "start_time")
        end = self.time(r.get("end_time"), ln, "end_time") if r.get("end_time") else start
        rid = str(r["id"])
        self.add(Span(str(r.get("trace_id") or parent or rid), rid,
                      str(r.get("parent_run_id") or parent) if (r.get("parent_run_id") or parent) else None,
                      str(r.get("name") or ""), start, end, attrs, hint=str(r.get("run_type") or ""),
                      model=model, input_tokens=tin, output_tokens=tout, line=ln))
        for child in r.get("child_runs") or []:
            if isinstance(child, dict):
                child.setdefault("trace_id", r.get("trace_id") or rid)
                self.langsmith(child, rid)

    # ---- values ---------------------------------------------------------------------------------
    def time(self, v, line, what) -> float:
        t = parse_time(v)
        if t is None:
            self.fail(f"span time `{what}` is missing or not a time: {v!r}", line)
        return t

    def add(self, span: Span):
        span.file = self.file
        self.spans.append(span)


_LANGFUSE_TYPES = ("GENERATION", "SPAN", "EVENT", "TOOL", "AGENT", "CHAIN", "RETRIEVER", "EMBEDDING",
                   "EVALUATOR", "GUARDRAIL")


def read_spans(path) -> list[Span]:
    """Every span in one file (any format above), or InputError naming the file and line."""
    p = Path(path)
    file = str(path)
    if not p.exists():
        raise InputError("no such file", file=file)
    if p.is_dir():
        raise InputError("is a folder; give span files", file=file)
    if p.stat().st_size > MAX_BYTES:
        raise InputError(f"larger than {MAX_BYTES >> 20} MiB; split it", file=file)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError("not UTF-8 text (a binary file, e.g. OTLP protobuf? export JSON instead)",
                         file=file, line=line) from None
    return _Reader(file, text).read()


def parse_time(v) -> float | None:
    """Seconds since the epoch from ns / us / ms / s numbers (by magnitude) or ISO 8601 text (naive
    means UTC)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", v):
        v = float(v)
    if isinstance(v, (int, float)):
        x = float(v)
        for scale in (1e18, 1e15, 1e12):   # ns, us, ms since 1970 (from about 2001 on)
            if x >= scale:
                return x / (scale / 1e9)
        return x
    if isinstance(v, str):
        s = v.strip().replace(" ", "T", 1)
        s = re.sub(r"(\.\d{6})\d+", r"\1", s)       # Python takes at most microseconds
        s = re.sub(r"Z$", "+00:00", s)
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _with_metadata(attrs: dict) -> dict:
    """OpenInference writes `metadata` as one JSON string (LangGraph's langgraph_node, ls_provider, ...):
    its keys become `metadata.*` attributes."""
    md = attrs.get("metadata")
    if isinstance(md, str) and md.startswith("{"):
        try:
            parsed = json.loads(md)
        except json.JSONDecodeError:
            return attrs
        if isinstance(parsed, dict):
            for k, v in _flatten(parsed).items():
                attrs.setdefault(f"metadata.{k}", v)
    return attrs


def _otlp_value(v):
    if not isinstance(v, dict):
        return v
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return as_int(v["intValue"])
    if "arrayValue" in v:
        return [_otlp_value(x) for x in (v["arrayValue"].get("values") or [])]
    if "kvlistValue" in v:
        return {x.get("key"): _otlp_value(x.get("value")) for x in v["kvlistValue"].get("values") or []}
    return None


def _otlp_id(v) -> str:
    """OTLP/JSON ids are hex; protobuf's JSON mapping writes base64. Either becomes lowercase hex."""
    if v in (None, ""):
        return ""
    s = str(v)
    if re.fullmatch(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}", s):
        return s.lower()
    try:
        raw = base64.b64decode(s, validate=True)
        if len(raw) in (8, 16):
            return raw.hex()
    except (binascii.Error, ValueError):
        pass
    return s.lower()


def _norm_id(v) -> str:
    if isinstance(v, int):
        return f"{v:x}"
    return str(v).strip().lower().removeprefix("0x")


def _any_id(item):
    if isinstance(item, dict):
        ctx = item.get("context") if isinstance(item.get("context"), dict) else {}
        return item.get("id") or item.get("spanId") or ctx.get("span_id") or item.get("name")
    return None


def as_int(v) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _usage_sum(usage: dict, side: str) -> int | None:
    """Langfuse usageDetails: `input` plus the `input_*` parts Langfuse keeps apart (cached prompt
    tokens, audio); `prompt_details.*` style keys are breakdowns already inside `input`."""
    vals = [as_int(v) for k, v in usage.items() if k == side or k.startswith(side + "_")]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def _langsmith_usage(outputs) -> tuple[int | None, int | None]:
    if not isinstance(outputs, dict):
        return None, None
    tu = ((outputs.get("llm_output") or {}).get("token_usage") or {}) if isinstance(outputs.get("llm_output"), dict) else {}
    if tu:
        return as_int(tu.get("prompt_tokens")), as_int(tu.get("completion_tokens"))
    for gen in (outputs.get("generations") or [])[:1]:
        g = gen[0] if isinstance(gen, list) and gen else gen
        msg = (g or {}).get("message") if isinstance(g, dict) else None
        um = ((msg or {}).get("kwargs") or {}).get("usage_metadata") if isinstance(msg, dict) else None
        if isinstance(um, dict):
            return as_int(um.get("input_tokens")), as_int(um.get("output_tokens"))
    return None, None
