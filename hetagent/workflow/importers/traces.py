"""`hetagent import traces FILE... [-o workflow.yaml] [--structure WORKFLOW] [--json]`: a workflow from
recorded spans.

    imp = import_traces(["spans.jsonl"])                 # structure and numbers from the traces
    imp = import_traces(["spans.jsonl"], structure="agent.yaml")   # numbers only, into that workflow
    text = base.render(imp)

Files are read by trace_formats (OTLP JSON, OTel SDK JSON, Langfuse, LangSmith, Phoenix), spans grouped
into traces and read as calls by trace_calls (classification and the traps it reports), the shape
shared by the traces inferred by trace_shapes; this module writes it as nodes:
  - an LLM node per position: prompt and output tokens the means of its calls (every input and output
    token, cached or not), the model most of its calls used (the others listed in its comment); a hosted
    model is priced from hosted.PRICES (DEFAULT_PRICE and a warning when unknown), its latency and
    decode rate fitted from the calls' durations (duration = latency + output tokens / rate, least
    squares over three or more calls with different outputs; else DEFAULT_TOKENS_PER_SECOND and the
    rest of the mean duration as latency); a model that is a catalog id, or one `--self-host NAME=ID`
    names, is self-hosted;
    Where the calls' counts differ, prompt and output tokens are distributions: a histogram of the
    observed counts (hetagent.workflow.dist.summarize: every distinct value, or 16 groups of equal
    count at their means), scaled to those means;
  - a tool node per tool and position: latency the durations' histogram (their mean with one call),
    result tokens from the recorded output text where spans carry it;
  - loops with the histogram of LLM-tool cycles per trace as their iterations (the count when all
    agree) and the maximum seen; where the loop's prompts grow from cycle to cycle, the loop's
    `context_growth_tokens` is the growth that keeps the loop's prompt tokens per trace the traces'
    (fit_growth), and its LLM node's prompt the first cycle's;
    branches with the observed share of each path; nested agents as inline sub-agents;
  - rate from the root spans' start times ((n - 1) / time from first to last; with one trace,
    DEFAULT_RATE), burstiness (coefficient of variation of the gaps) and the observed end-to-end
    latencies in the header (no SLA is set: traces record none).
Expected tokens per request of the workflow equal the traces' mean input + output tokens per trace (the
means are weighted by how often each node runs), up to rounding to whole tokens.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from hetagent import configs
from hetagent.errors import HetagentError, InputError
from hetagent.workflow import dist as wd
from hetagent.workflow.importers.base import Imported
from hetagent.workflow.importers.common import symbol, tokens_of_text, unique_id
from hetagent.workflow.importers.hosted import DEFAULT_PRICE, price_of, vendor_of
from hetagent.workflow.importers.trace_calls import TraceSet, read_traces
from hetagent.workflow.importers.trace_formats import read_spans
from hetagent.workflow.importers.trace_shapes import (AgentBlock, Branch, Loop, LlmBlock, Parallel, ToolBlock,
                                                      elements, merge)

DEFAULT_RATE = 1.0                    # requests per second when one trace gives no arrival rate
DEFAULT_TOKENS_PER_SECOND = 60.0      # a hosted model's decode rate when the calls cannot fit one
INPUT_TEXT_TOKENS = 64                # the request payload (traces record the prompts, not the request)
DEFAULT_PROMPT_TOKENS = 1024          # an LLM node none of whose calls reports tokens
DEFAULT_OUTPUT_TOKENS = 256
_OUTPUT_KEYS = ("gen_ai.output", "output.value", "gen_ai.tool.call.result", "ai.toolCall.result", "tool.output")
_ARGS_KEYS = ("gen_ai.tool.args", "input.value", "gen_ai.tool.call.arguments", "ai.toolCall.args",
              "tool.parameters")


def import_traces(paths: list, *, structure=None, self_host: dict[str, str] | None = None,
                  config_dir=None) -> Imported:
    if not paths:
        raise HetagentError("give at least one span file")
    spans = []
    for p in paths:
        spans += read_spans(p)
    ts = read_traces(spans)
    if ts.llm_calls + ts.tool_calls == 0:
        raise InputError(f"{len(ts.traces)} trace(s), {ts.spans} span(s), but no LLM or tool call among "
                         "them (nothing reports a model, tokens, a tool name or an LLM/tool span type)",
                         file=str(paths[0]))
    known = set(configs.list_ids("models", config_dir))
    writer = NodeWriter(ts, self_host or {}, known)
    if structure is not None:
        from hetagent.workflow.importers.trace_structure import fit_structure
        data, base_dir = fit_structure(structure, ts, writer, config_dir=config_dir)
    else:
        name = symbol(Path(str(paths[0])).stem.split(".")[0]) or "traced_agent"
        blocks = merge([elements(t.steps) for t in ts.traces])
        data = {"name": name, "description": f"Inferred from {len(ts.traces)} recorded trace(s)",
                "rate": 1.0, "nodes": writer.workflow_nodes(blocks)}
        base_dir = None
    writer.check_self_host()
    rate, header_rate = arrivals(ts)
    data["rate"] = rate
    n = len(ts.traces)
    tin = sum(t[0] for t in ts.tokens) / n
    tout = sum(t[1] for t in ts.tokens) / n
    header = [f"Imported by `hetagent import traces` from {n} trace(s), {ts.spans} span(s) in "
              f"{', '.join(Path(f).name for f in ts.files)} ({_span_dates(ts)}).",
              f"{ts.llm_calls} LLM call(s), {ts.tool_calls} tool call(s); tokens per request (mean per "
              f"trace): {tin:.1f} input + {tout:.1f} output."]
    if structure is not None:
        header.append(f"Structure from {structure}; the numbers below come from the traces where a node's "
                      "comment says so, else they are the structure's own.")
    header += header_rate
    header.append("Traces record no SLA; add one, e.g.  sla: {latency_ms: 10000, percentile: 95}")
    if ts.skipped:
        header.append(f"Skipped {len(ts.skipped)} span(s): " + "; ".join(
            f"{s['span']}: {s['why']}" for s in ts.skipped[:8]) + (" ..." if len(ts.skipped) > 8 else ""))
    warns = ts.warnings + writer.warnings
    if warns:
        header += ["Warnings:"] + [f"  {w}" for w in warns]
    summary = {"traces": n, "spans": ts.spans, "llm_calls": ts.llm_calls, "tool_calls": ts.tool_calls,
               "skipped": ts.skipped, "tokens_per_request": {"input": tin, "output": tout},
               "warnings": warns}
    return Imported("traces", data, header, writer.notes, warns, summary, base_dir=base_dir)


def arrivals(ts: TraceSet) -> tuple[float, list[str]]:
    """(rate, header lines): arrival rate and burstiness from the root spans, observed latencies."""
    starts = sorted(t.root.start for t in ts.traces)
    lat = sorted((t.root.end - t.root.start) * 1000 for t in ts.traces)
    lines = [f"End-to-end (root spans): p50 {_pct(lat, 50):.0f} ms, p95 {_pct(lat, 95):.0f} ms, "
             f"max {lat[-1]:.0f} ms."]
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    if len(starts) < 2 or span <= 0:
        lines.append(f"rate: {DEFAULT_RATE:g} request/s (default: one trace, or traces that start together, "
                     "give no arrival rate; plan with --rate)")
        return DEFAULT_RATE, lines
    rate = (len(starts) - 1) / span
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    cv = statistics.pstdev(gaps) / statistics.mean(gaps) if statistics.mean(gaps) > 0 else 0.0
    lines.append(f"rate: {rate:.6g} request/s from {len(starts)} root start times over {span:.6g} s; "
                 f"burstiness (coefficient of variation of the gaps, 1 for Poisson arrivals) {cv:.2f}. "
                 "Sampled or filtered traces make it lower than the real load: plan with --rate if so.")
    return rate, lines


def _pct(xs: list[float], p: float) -> float:
    k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


def _span_dates(ts: TraceSet) -> str:
    first = min(t.root.start for t in ts.traces)
    last = max(t.root.end for t in ts.traces)
    a, b = (datetime.fromtimestamp(x, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") for x in (first, last))
    return f"{a} to {b} UTC"


class NodeWriter:
    """Native nodes from merged blocks (or from calls matched to a given structure), with the comment
    lines that say where their numbers came from."""

    def __init__(self, ts: TraceSet, self_host: dict[str, str], known_models: set[str]):
        self.ts, self.known = ts, known_models
        self.self_host = {str(k).strip(): str(v).strip() for k, v in self_host.items()}
        self.used_self_host: set[str] = set()
        self.models_seen: set[str] = set()
        self.ids: set[str] = set()
        self.notes: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        self._warned: set[str] = set()

    def new_id(self, base: str) -> str:
        return unique_id(base, self.ids)

    def workflow_nodes(self, blocks: list) -> list[dict]:
        inp = self.new_id("request")
        self.notes[inp] = [f"text_tokens {INPUT_TEXT_TOKENS}: default (traces record prompts, not the "
                           "request); the LLM nodes carry the measured prompt sizes"]
        nodes = [{"id": inp, "kind": "input", "text_tokens": INPUT_TEXT_TOKENS}]
        body, last = self.emit(blocks, [inp])
        out = self.new_id("response")
        return nodes + body + [{"id": out, "kind": "output", "inputs": last}]

    # ---- blocks ---------------------------------------------------------------------------------
    def emit(self, blocks: list, prev: list[str]) -> tuple[list[dict], list[str]]:
        nodes: list[dict] = []
        for b in blocks:
            new, prev = self.block(b, prev)
            nodes += new
        return nodes, prev

    def block(self, b, prev: list[str]) -> tuple[list[dict], list[str]]:
        if isinstance(b, LlmBlock):
            n = self.llm_node(self.new_id("llm"), b.calls)
        elif isinstance(b, ToolBlock):
            n = self.tool_node(self.new_id(b.name), b.name, b.calls)
        elif isinstance(b, AgentBlock):
            n = self.agent_node(b)
        elif isinstance(b, Parallel):
            nodes, last = [], []
            for m in b.members:
                new, ids = self.block(m, prev)
                nodes += new
                last += ids
            return nodes, last
        elif isinstance(b, Branch):
            n = self.branch_node(b)
        elif isinstance(b, Loop):
            if max(b.iterations) == 1:   # one cycle in every trace: no loop to speak of
                return self.emit(b.body, prev)
            n = self.loop_node(b)
        else:
            raise TypeError(b)
        if prev:
            n["inputs"] = list(prev)
        return [n], [n["id"]]

    def branch_node(self, b: Branch) -> dict:
        bid = self.new_id("path")
        arms, total = [], 0.0
        for i, arm in enumerate(b.arms):
            p = arm.count / b.reached if i < len(b.arms) - 1 else 1.0 - total
            total += p
            nodes, _ = self.emit(arm.blocks, [])
            arms.append({"name": arm.name, "probability": p, "nodes": nodes})
        self.notes[bid] = ["observed: " + ", ".join(f"'{a.name}' {a.count} of {b.reached}" for a in b.arms)]
        return {"id": bid, "kind": "branch", "arms": arms}

    def loop_node(self, b: Loop) -> dict:
        lid = self.new_id("agent_loop")
        exp = statistics.mean(b.iterations)
        hist = Counter(b.iterations)
        self.notes[lid] = ["LLM-tool cycles per trace: " + ", ".join(f"{k} x{hist[k]}" for k in sorted(hist))
                           + f" (mean {exp:.4g}, max {max(b.iterations)})"]
        body, _ = self.emit(b.body, [])
        node = {"id": lid, "kind": "loop",
                "expected_iterations": exp if len(hist) == 1 else wd.summarize(b.iterations),
                "max_iterations": max(b.iterations), "body": body}
        fit = fit_growth(b.sequences)
        llm = body[0] if body and body[0].get("kind") == "llm" else None
        if fit is not None and llm is not None:
            growth, firsts, note = fit
            node["context_growth_tokens"] = round(growth, 1)
            llm["prompt_tokens"] = _tokens(firsts)
            self.notes[lid].append(note)
            self.notes[llm["id"]] = [f"prompt: the first cycle's ({wd.mean_of(_parse(llm['prompt_tokens'])):.1f} "
                                     "tokens on average); later cycles add the loop's context_growth_tokens"] + \
                self.notes.get(llm["id"], [])
        return node

    def agent_node(self, b: AgentBlock) -> dict:
        aid = self.new_id(b.name)
        inner = self.workflow_nodes(b.body)
        self.notes[aid] = [f"nested agent '{b.name}': {len(b.calls)} run(s) in {_traces(b.calls)} trace(s)"]
        return {"id": aid, "kind": "subagent", "description": f"agent '{b.name}' as recorded",
                "inline": {"name": symbol(b.name) or "agent", "nodes": inner}}

    # ---- nodes from calls ---------------------------------------------------------------------------
    def llm_node(self, nid: str, calls: list, per_request: float | None = None) -> dict:
        """An llm node from its calls; `per_request` (expected runs per request in a given structure)
        scales the token means so expected tokens per request match the traces'."""
        known = [c for c in calls if c.input_tokens is not None or c.output_tokens is not None]
        node: dict = {"id": nid, "kind": "llm"}
        models = Counter(c.name for c in calls)
        model = models.most_common(1)[0][0]
        node.update(self.model_fields(nid, model, calls))
        if known:
            tin = sum(c.input_tokens or 0 for c in known)
            tout = sum(c.output_tokens or 0 for c in known)
            runs = len(calls) if per_request is None else per_request * len(self.ts.traces)
            scale = len(calls) / len(known)     # calls without counts: assumed like the others
            pin, pout = tin * scale / runs, tout * scale / runs
            ins = [c.input_tokens for c in known if c.input_tokens is not None] or [0]
            outs = [c.output_tokens for c in known if c.output_tokens is not None] or [0]
            node["prompt_tokens"], node["output_tokens"] = _tokens(ins, pin), _tokens(outs, pout)
            note = [f"from {len(calls)} LLM call(s) in {_traces(calls)} trace(s): input tokens mean "
                    f"{statistics.mean(ins):.1f} (min {min(ins)}, max {max(ins)}), output mean "
                    f"{statistics.mean(outs):.1f} (min {min(outs)}, max {max(outs)})"]
            if per_request is not None and abs(runs - len(calls)) > 1e-9:
                note.append(f"ran {len(calls)} times in {len(self.ts.traces)} traces where the structure expects "
                            f"{per_request:.4g} per request: tokens per run {pin:.1f} / {pout:.1f} keep the "
                            "tokens per request")
            if len(known) < len(calls):
                note.append(f"{len(calls) - len(known)} call(s) report no tokens: taken as the mean of the others")
        else:
            node["prompt_tokens"], node["output_tokens"] = DEFAULT_PROMPT_TOKENS, DEFAULT_OUTPUT_TOKENS
            note = [f"from {len(calls)} LLM call(s), none reporting tokens: prompt {DEFAULT_PROMPT_TOKENS}, "
                    f"output {DEFAULT_OUTPUT_TOKENS} (defaults)"]
            self.warn(f"node '{nid}': none of its {len(calls)} LLM call(s) reports tokens; default token counts")
        if len(models) > 1:
            note.append("models: " + ", ".join(f"{m} x{k}" for m, k in models.most_common()) + f" ({model} used)")
        else:
            note.append(f"model: {model}")
        self.notes[nid] = note + self.notes.get(nid, [])
        return node

    def model_fields(self, nid: str, model: str, calls: list) -> dict:
        self.models_seen.add(model)
        provider = Counter(c.provider for c in calls if c.provider).most_common(1)
        provider = provider[0][0] if provider else (model.split("/")[0] if "/" in model else "unknown")
        bare = model.split("/")[-1]
        for key in (model, bare, f"{provider}/{bare}"):
            for k, v in self.self_host.items():
                if k.lower() == key.lower():
                    self.used_self_host.add(k)
                    return {"model": v}
        if bare.lower() in self.known:
            return {"model": bare.lower()}
        price = price_of(bare)
        if price is None:
            pin, pout = DEFAULT_PRICE
            self.warn(f"hosted model '{model}' has no known price: priced at ${pin}/${pout} per million "
                      f"tokens; --self-host {bare}=MODEL runs an open model instead")
            src = "default price (unknown model)"
        else:
            pin, pout, url, date = price
            src = f"list price {url} ({date})"
            if provider == "unknown":
                provider = vendor_of(url)
        hosted = {"provider": provider, "model": model, "input_usd_per_million": pin,
                  "output_usd_per_million": pout}
        lat, tps, how = fit_latency(calls)
        hosted["latency_ms"], hosted["tokens_per_second"] = round(lat, 1), round(tps, 2)
        self.notes.setdefault(nid, []).append(f"${pin}/${pout} per million tokens: {src}; {how}")
        return {"hosted": hosted}

    def tool_node(self, nid: str, name: str, calls: list, per_request: float | None = None) -> dict:
        ms = [c.span.duration_ms for c in calls]
        mean = statistics.mean(ms)
        cv = statistics.pstdev(ms) / mean if len(ms) > 1 and mean > 0 else 0.5
        node = {"id": nid, "kind": "tool", "tool": name[:80], "latency_ms": round(mean, 3),
                "latency_cv": round(cv, 3)}
        if len(set(ms)) > 1:            # the durations as they were, not a lognormal of their mean and cv
            node["latency_ms"] = wd.summarize([round(x, 3) for x in ms])
            del node["latency_cv"]
        note = [f"from {len(calls)} call(s) in {_traces(calls)} trace(s): latency mean {mean:.1f} ms "
                f"(min {min(ms):.1f}, max {max(ms):.1f})" + ("" if len(ms) > 1 else "; latency_cv 0.5 default")]
        outs = [_text(c.span.attrs, _OUTPUT_KEYS) for c in calls]
        outs = [o for o in outs if o is not None]
        if outs:
            node["result_tokens"] = int(round(statistics.mean(tokens_of_text(o) for o in outs)))
            node["response_bytes"] = int(round(statistics.mean(len(o.encode()) for o in outs)))
            note.append(f"result size from {len(outs)} recorded output(s)")
        args = [_text(c.span.attrs, _ARGS_KEYS) for c in calls]
        args = [a for a in args if a is not None]
        if args:
            node["request_bytes"] = int(round(statistics.mean(len(a.encode()) for a in args)))
        self.notes[nid] = note
        return node

    def warn(self, msg: str):
        if msg not in self._warned:
            self._warned.add(msg)
            self.warnings.append(msg)

    def check_self_host(self):
        unused = set(self.self_host) - self.used_self_host
        if unused:
            seen = ", ".join(sorted(self.models_seen)) or "none"
            raise HetagentError(f"--self-host {sorted(unused)[0]}: no LLM call used a model of that name "
                                f"(models in these traces: {seen})")


def fit_latency(calls: list) -> tuple[float, float, str]:
    """(latency_ms, tokens_per_second, how) of a hosted model from its calls' durations."""
    pts = [(c.output_tokens, c.span.duration_ms) for c in calls if c.output_tokens is not None]
    if len(pts) >= 3 and len({o for o, _ in pts}) >= 2:
        mo = statistics.mean(o for o, _ in pts)
        md = statistics.mean(d for _, d in pts)
        sxx = sum((o - mo) ** 2 for o, _ in pts)
        b = sum((o - mo) * (d - md) for o, d in pts) / sxx
        a = md - b * mo
        if b > 0 and a >= 0:
            return a, 1000.0 / b, (f"latency {a:.0f} ms and {1000 / b:.1f} tokens/s fitted on {len(pts)} "
                                   "calls (duration = latency + output / rate)")
    ms = [c.span.duration_ms for c in calls]
    md = statistics.mean(ms)
    mo = statistics.mean(o for o, _ in pts) if pts else 0.0
    lat = md - mo / DEFAULT_TOKENS_PER_SECOND * 1000
    if lat >= 0:
        return lat, DEFAULT_TOKENS_PER_SECOND, (f"{DEFAULT_TOKENS_PER_SECOND:g} tokens/s (default), latency "
                                                f"{lat:.0f} ms: the rest of the mean duration {md:.0f} ms")
    tps = mo * 1000 / md if md > 0 else DEFAULT_TOKENS_PER_SECOND
    return 0.0, tps, f"{tps:.1f} tokens/s: mean output {mo:.0f} tokens in the mean duration {md:.0f} ms"


def _tokens(values: list, mean: float | None = None):
    """A token count field from observed counts: their mean as a whole number when all agree, else their
    histogram (hetagent.workflow.dist.summarize), scaled so that its mean is `mean` (default theirs)."""
    m = statistics.mean(values) if mean is None else mean
    if len(set(values)) <= 1:
        return int(round(m))
    h = wd.summarize(values)
    have = sum(v * w for v, w in h["histogram"]) / sum(w for _, w in h["histogram"])
    if have > 0 and abs(have - m) > 1e-9:
        h["histogram"] = [[round(v * m / have, 3), w] for v, w in h["histogram"]]
    return h


def _parse(field):
    return wd.parse(field, minimum=0)


def fit_growth(sequences: list) -> tuple[float, list, str] | None:
    """(tokens a loop's prompts grow by per cycle, the first cycles' prompts, a note) from the LLM calls of
    each trace's loop in order, or None when they do not grow. The growth G is the one that keeps the loop's
    prompt tokens per trace: with first prompts P1 (mean p1) and the observed iteration counts K, the
    workflow expects E[sum_k (P1 + (k-1) G)] = p1 E[K] + G E[K (K-1) / 2]; G solves that = the traces'
    mean prompt tokens per loop. Counts without tokens are left out of every sum."""
    seqs = [[c.input_tokens for c in s] for s in sequences if s and all(c.input_tokens is not None for c in s)]
    if len(seqs) == 0 or not any(len(s) > 1 for s in seqs):
        return None
    firsts = [s[0] for s in seqs]
    p1 = statistics.mean(firsts)
    total = statistics.mean(sum(s) for s in seqs)
    pairs = statistics.mean(len(s) * (len(s) - 1) / 2 for s in seqs)
    mean_k = statistics.mean(len(s) for s in seqs)
    growth = (total - p1 * mean_k) / pairs
    steps = [b - a for s in seqs for a, b in zip(s, s[1:])]
    if growth <= 0.5:
        return None
    note = (f"prompts grow {growth:.1f} tokens per cycle (the loop's prompt tokens per trace kept; consecutive "
            f"cycles differ by {statistics.mean(steps):.1f} on average, min {min(steps)}, max {max(steps)})")
    return growth, firsts, note


def _traces(calls) -> int:
    return len({c.span.trace for c in calls})


def _text(attrs: dict, keys) -> str | None:
    for k in keys:
        v = attrs.get(k)
        if isinstance(v, str) and v:
            return v
    return None
