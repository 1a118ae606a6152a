"""Workflow -> Module: one `func.func` per workflow (the main one first, then its sub-agents).

Nodes become operations in dependency order; `inputs` become operands. A loop becomes an `scf.while`
whose condition is `agent.continue` and whose body is the loop's nodes; a branch becomes an
`scf.index_switch` on `agent.choose`, one region per arm; a sub-agent a `func.call`. The workflow's SLA and
rate sit on its function as `agent.*` attributes.
"""
from __future__ import annotations

from graphlib import TopologicalSorter

from xdsl.dialects import func, scf
from xdsl.dialects.builtin import (ArrayAttr, DenseArrayBase, FloatAttr, IntegerAttr, ModuleOp,
                                   StringAttr, i64)
from xdsl.ir import Block, Region, SSAValue

from hetagent.ir import dialects as d
from hetagent.workflow import dist as wd
from hetagent.workflow import model as wm

DEFAULT_TTS_TOKENS_PER_SECOND = 3.0  # speech rate: about 2.3 words/s x 1.3 tokens/word


def build(workflow: wm.Workflow) -> ModuleOp:
    """The module of a workflow: its function first, then one per distinct sub-agent."""
    builder = _ModuleBuilder()
    builder.function(workflow, main=True)
    return ModuleOp(builder.funcs)


class _ModuleBuilder:
    def __init__(self):
        self.funcs: list[func.FuncOp] = []
        self.names: dict[int, str] = {}

    def function(self, wf: wm.Workflow, main: bool) -> str:
        key = id(wf)
        if key in self.names:
            return self.names[key]
        name = wf.name
        taken = {f.sym_name.data for f in self.funcs}
        i = 2
        while name in taken:
            name, i = f"{wf.name}_{i}", i + 1
        self.names[key] = name
        block = Block(arg_types=[] if main else [d.text(d.DYNAMIC)])
        arg = None if main else block.args[0]
        values: dict[str, SSAValue] = {}
        outputs = _Scope(self, block, values, [arg] if arg is not None else []).emit(wf.nodes)
        block.add_op(func.ReturnOp(*outputs))
        fn = func.FuncOp(name, ([a.type for a in block.args], [o.type for o in outputs]),
                         Region(block))
        attrs = {"agent.role": StringAttr("main" if main else "subagent"),
                 "agent.rate": FloatAttr(wf.rate, 64)}
        if wf.sla is not None:
            attrs["agent.sla_ms"] = FloatAttr(wf.sla.latency_ms, 64)
            attrs["agent.sla_percentile"] = FloatAttr(wf.sla.percentile, 64)
            if wf.sla.iterations is not None:
                attrs["agent.sla_iterations"] = IntegerAttr(wf.sla.iterations, i64)
        fn.attributes.update(attrs)
        if main:
            self.funcs.insert(0, fn)
        else:
            self.funcs.append(fn)
        return name


class _Scope:
    """Emits one list of nodes into a block; `entry` are the values a node with no inputs consumes;
    `grows`: the enclosing loop's context grows (LLM calls share their prefix by default)."""

    def __init__(self, mb: _ModuleBuilder, block: Block, values: dict, entry: list[SSAValue],
                 grows: bool = False):
        self.mb, self.block, self.values, self.entry, self.grows = mb, block, values, entry, grows

    def emit(self, nodes: list) -> list[SSAValue]:
        """Emit nodes in dependency order; return the outputs (output nodes, else the sinks)."""
        by_id = {n.id: n for n in nodes}
        order = TopologicalSorter({n.id: [r for r in n.inputs if r in by_id] for n in nodes})
        consumed: set[str] = set()
        for node_id in order.static_order():
            node = by_id[node_id]
            consumed.update(node.inputs)
            self.values[node_id] = self.node(node)
        outs = [self.values[n.id] for n in nodes if isinstance(n, wm.OutputNode)]
        return outs or [self.values[n.id] for n in nodes if n.id not in consumed]

    def add(self, op):
        self.block.add_op(op)
        return op.results[0] if op.results else None

    def operands(self, node) -> list[SSAValue]:
        values = [self.values[r] for r in node.inputs] if node.inputs else list(self.entry)
        return self.homogeneous(values, node.id)

    def homogeneous(self, values: list[SSAValue], name: str) -> list[SSAValue]:
        """Operands of one op share one type (upstream IRDL unifies variadic operands): values of
        differing types are first cast, each by a one-operand agent.join, to the joined type."""
        if len({v.type for v in values}) <= 1:
            return values
        common = _joined_type(values)
        return [v if v.type == common else
                self.add(d.make("agent.join", f"{name}.in{i}", [v], common))
                for i, v in enumerate(values)]

    def in_tokens(self, node) -> int:
        total = 0
        for v in self.operands(node):
            if isinstance(v.type, d.TextType):
                total += max(v.type.tokens.value.data, 0)
        return total

    def in_audio_ms(self, node) -> int:
        return sum(max(v.type.ms.value.data, 0) for v in self.operands(node)
                   if isinstance(v.type, d.AudioType))

    def node(self, n) -> SSAValue:
        ins = self.operands(n)
        mk = lambda name, rtype, **a: self.add(d.make(name, n.id, ins, rtype, **a))  # noqa: E731
        if isinstance(n, wm.InputNode):
            rtype = (d.audio(round(n.audio_seconds * 1000)) if n.audio_seconds else
                     d.text(n.text_tokens) if n.text_tokens or not n.bytes else d.data(n.bytes))
            return mk("agent.input", rtype, text_tokens=n.text_tokens,
                      audio_ms=round(n.audio_seconds * 1000), bytes=n.bytes)
        if isinstance(n, wm.OutputNode):
            return mk("agent.output", ins[0].type if len(ins) == 1 else _joined_type(ins))
        if isinstance(n, wm.SpeechToTextNode):
            ms = round(n.audio_seconds * 1000) if n.audio_seconds is not None else self.in_audio_ms(n)
            return mk("speech.stt", d.text(n.output_tokens), model=n.model, audio_ms=ms,
                      output_tokens=n.output_tokens)
        if isinstance(n, wm.TextToSpeechNode):
            tokens = n.text_tokens if n.text_tokens is not None else self.in_tokens(n)
            secs = n.audio_seconds if n.audio_seconds is not None else \
                tokens / DEFAULT_TTS_TOKENS_PER_SECOND
            ms = round(secs * 1000)
            return mk("speech.tts", d.audio(ms), model=n.model, text_tokens=tokens, audio_ms=ms)
        if isinstance(n, wm.LlmNode):
            prompt, output = _tokens(n.prompt_tokens), _tokens(n.output_tokens)
            out = d.text(output)
            if n.hosted is not None:
                h = n.hosted
                op = d.make("llm.remote", n.id, ins, out, provider=h.provider, model=h.model,
                            prompt_tokens=prompt, output_tokens=output,
                            input_usd_per_million=h.input_usd_per_million,
                            output_usd_per_million=h.output_usd_per_million,
                            latency_ms=h.latency_ms, tokens_per_second=h.tokens_per_second)
            else:
                op = d.make("llm.call", n.id, ins, out, model=n.model, prompt_tokens=prompt,
                            output_tokens=output)
                if (n.prefix_shared if n.prefix_shared is not None else self.grows):
                    op.attributes["prefix_shared"] = d.to_attr(d.I, 1)
            for key, value in (("prompt_dist", n.prompt_tokens), ("output_dist", n.output_tokens)):
                if isinstance(value, wd.Dist) and not value.constant:
                    op.attributes[key] = d.to_attr(d.FS, value.to_attr())
            if n.sla is not None:
                if n.sla.ttft_ms is not None:
                    op.attributes["ttft_ms"] = FloatAttr(n.sla.ttft_ms, 64)
                if n.sla.tbt_ms is not None:
                    op.attributes["tbt_ms"] = FloatAttr(n.sla.tbt_ms, 64)
            return self.add(op)
        if isinstance(n, wm.EmbedNode):
            return mk("embed.encode", d.vectors(n.texts, 384), model=n.model, tokens=n.tokens,
                      texts=n.texts)
        if isinstance(n, wm.MemorySearchNode):
            return mk("memory.search", d.text(n.top_k * n.result_tokens), index_size=n.index_size,
                      dims=n.dims, top_k=n.top_k, embed_model=n.embed_model,
                      query_tokens=n.query_tokens, rerank=int(n.rerank), result_tokens=n.result_tokens)
        if isinstance(n, wm.MemoryLoadNode):
            return mk("memory.load", d.data(n.bytes), bytes=n.bytes)
        if isinstance(n, wm.MemoryStoreNode):
            return mk("memory.store", d.data(n.bytes), bytes=n.bytes)
        if isinstance(n, wm.ToolNode):
            extra = {}
            if isinstance(n.latency_ms, wd.Dist) and not n.latency_ms.constant:
                extra["latency_dist"] = n.latency_ms.to_attr()
            return mk("tool.invoke", d.text(n.result_tokens), tool=n.tool, latency_ms=wd.mean_of(n.latency_ms),
                      latency_cv=n.latency_cv, request_bytes=n.request_bytes,
                      response_bytes=n.response_bytes, cpu_ms=n.cpu_ms, **extra)
        if isinstance(n, wm.CodeNode):
            op = d.make("compute.code", n.id, ins, d.data(n.output_bytes), cpu_ms=n.cpu_ms)
            if n.source is not None:   # the code `hetagent run` executes in the sandbox
                op.attributes["language"] = StringAttr(n.language or "python3")
                op.attributes["source"] = StringAttr(n.source)
            return self.add(op)
        if isinstance(n, wm.LoopNode):
            return self.loop(n, ins)
        if isinstance(n, wm.BranchNode):
            return self.branch(n, ins)
        if isinstance(n, wm.SubAgentNode):
            callee = self.mb.function(n.target, main=False)
            sub_fn = next(f for f in self.mb.funcs if f.sym_name.data == callee)
            arg = self.add(d.make("agent.join", f"{n.id}.args", ins, d.text(d.DYNAMIC)))
            call = func.CallOp(callee, [arg], sub_fn.function_type.outputs.data)
            call.attributes["node"] = StringAttr(n.id)
            self.block.add_op(call)
            if len(call.results) == 1:
                return call.results[0]
            results = self.homogeneous(list(call.results), f"{n.id}.out")
            return self.add(d.make("agent.join", f"{n.id}.out", results, _joined_type(results)))
        raise AssertionError(f"unhandled node kind {n.kind}")

    def nested(self, block: Block, entry: list[SSAValue], nodes: list, node_id: str,
               grows: bool | None = None) -> SSAValue:
        scope = _Scope(self.mb, block, self.values, entry, self.grows if grows is None else grows)
        outs = scope.homogeneous(scope.emit(nodes), f"{node_id}.exit")
        joined = scope.add(d.make("agent.join", f"{node_id}.exit", outs, _joined_type(outs)))
        block.add_op(scf.YieldOp(joined))
        return joined

    def loop(self, n: wm.LoopNode, ins: list[SSAValue]) -> SSAValue:
        body_type = d.text(d.DYNAMIC)  # the carried context grows each iteration
        init = self.add(d.make("agent.join", f"{n.id}.entry", ins, body_type))
        before = Block(arg_types=[body_type])
        attrs: dict = {}
        expected = n.expected_iterations
        if isinstance(expected, wd.Dist):
            reach = wd.count_reach(expected, n.max_iterations)
            attrs["reach_probabilities"] = reach
            expected = sum(reach)        # counts above max_iterations are cut to it
        growth = context_growth(n)
        if growth > 0:
            attrs.update(context_growth_tokens=growth, tool_ms=tool_ms(n.body))
        cond = d.make("agent.continue", n.id, [before.args[0]], None,
                      expected_iterations=float(expected), max_iterations=n.max_iterations, **attrs)
        before.add_ops([cond, scf.ConditionOp(cond.results[0], before.args[0])])
        after = Block(arg_types=[body_type])
        self.nested(after, [after.args[0]], n.body, n.id, grows=growth > 0)
        loop = scf.WhileOp([init], [body_type], Region(before), Region(after))
        loop.attributes["node"] = StringAttr(n.id)
        self.block.add_op(loop)
        return loop.results[0]

    def branch(self, n: wm.BranchNode, ins: list[SSAValue]) -> SSAValue:
        choose = self.add(d.make("agent.choose", n.id, ins, None,
                                 probabilities=[a.probability for a in n.arms]))
        regions, types = [], []
        for arm in n.arms:
            block = Block()
            out = self.nested(block, ins, arm.nodes, f"{n.id}.{arm.name}") if arm.nodes else None
            if out is None:  # an empty arm passes its inputs on
                joined = d.make("agent.join", f"{n.id}.{arm.name}.exit", ins, _joined_type(ins))
                block.add_ops([joined, scf.YieldOp(joined.results[0])])
                out = joined.results[0]
            regions.append(Region(block))
            types.append(out.type)
        result_type = _joined_type_of(types)
        for region in regions:  # every arm yields the same (size-varying) type
            yield_op = region.block.last_op
            old = yield_op.operands[0].owner
            if old.results[0].type != result_type:
                new = d.make("agent.join", old.attributes["node"].data, list(old.operands), result_type)
                region.block.insert_op_before(new, old)
                old.results[0].replace_all_uses_with(new.results[0])
                old.detach()
                old.erase()
        cases = DenseArrayBase.from_list(i64, list(range(len(n.arms) - 1)))
        switch = scf.IndexSwitchOp(choose, cases, regions[-1], regions[:-1], [result_type])
        switch.attributes["node"] = StringAttr(n.id)
        switch.attributes["arms"] = ArrayAttr([StringAttr(a.name) for a in n.arms])
        self.block.add_op(switch)
        return switch.results[0]


def _tokens(x) -> int:
    """A token count's IR attribute: the mean, rounded (a distribution rides beside it)."""
    return int(round(wd.mean_of(x)))


def context_growth(loop: wm.LoopNode) -> float:
    """Tokens one iteration adds to the prompts of the loop's LLM calls: `context_growth_tokens`, or with
    `auto` what the body produces: its LLM calls' output and its tools' and searches' results, arms weighted
    by their probabilities, an inner loop's by its expected iterations."""
    g = loop.context_growth_tokens
    if g is None:
        return 0.0
    if g != "auto":
        return float(g)

    def produced(nodes) -> float:
        total = 0.0
        for n in nodes:
            if isinstance(n, wm.LlmNode):
                total += wd.mean_of(n.output_tokens)
            elif isinstance(n, wm.ToolNode):
                total += n.result_tokens
            elif isinstance(n, wm.MemorySearchNode):
                total += n.top_k * n.result_tokens
            elif isinstance(n, wm.BranchNode):
                total += sum(a.probability * produced(a.nodes) for a in n.arms)
            elif isinstance(n, wm.LoopNode):
                total += wd.mean_of(n.expected_iterations) * produced(n.body)
        return total
    return produced(loop.body)


def tool_ms(nodes) -> float:
    """Expected time one pass over `nodes` spends outside LLM calls (tools' latency and CPU work, code):
    the longest path through them, arms weighted by probability, an inner loop times its expected count.
    It is how long an LLM call's KV cache waits for the next iteration's call."""
    ids = {n.id for n in nodes}
    done: dict = {}

    def own(n) -> float:
        if isinstance(n, wm.ToolNode):
            return wd.mean_of(n.latency_ms) + n.cpu_ms
        if isinstance(n, wm.CodeNode):
            return n.cpu_ms
        if isinstance(n, wm.BranchNode):
            return sum(a.probability * tool_ms(a.nodes) for a in n.arms)
        if isinstance(n, wm.LoopNode):
            return wd.mean_of(n.expected_iterations) * tool_ms(n.body)
        return 0.0

    order = TopologicalSorter({n.id: [r for r in n.inputs if r in ids] for n in nodes}).static_order()
    by_id = {n.id: n for n in nodes}
    for nid in order:
        n = by_id[nid]
        done[nid] = own(n) + max((done[r] for r in n.inputs if r in ids), default=0.0)
    return max(done.values(), default=0.0)


def _joined_type(values: list[SSAValue]):
    return _joined_type_of([v.type for v in values])


def _joined_type_of(types):
    """Audio if any part is audio, else text (sizes vary across arms and iterations)."""
    if any(isinstance(t, d.AudioType) for t in types):
        return d.audio(d.DYNAMIC)
    if types and all(isinstance(t, d.BytesType) for t in types):
        return d.data(d.DYNAMIC)
    return d.text(d.DYNAMIC)
