"""`decompose`: high-level calls into operators that each stress one resource.

    llm.call         -> llm.prefill -> llm.kv_transfer -> llm.decode
    llm.call (MoE)   -> expert.gate -> expert.tp_prefill -> expert.merge -> comm.allreduce
                        -> llm.kv_transfer
                        -> expert.gate -> expert.tp_decode -> expert.merge -> comm.allreduce
                        (the paper's figure 7)
    tool.invoke      -> tool.lookup -> tool.compute
    memory.search    -> embed.encode -> memory.vector_search (-> memory.rerank)
    speech.stt       -> speech.frontend -> speech.encode -> speech.decode
    speech.tts       -> speech.phonemize -> speech.synthesize

Each new operator is named `<node>.<stage>`. The KV cache size comes from the model card.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (GreedyRewritePatternApplier, PatternRewriter,
                                   PatternRewriteWalker, RewritePattern, op_type_rewrite_pattern)

from hetagent.modelcards import load_model
from hetagent.ir import dialects as d

LLMCall, ToolInvoke = d.op_class("llm.call"), d.op_class("tool.invoke")
MemorySearch, Stt, Tts = d.op_class("memory.search"), d.op_class("speech.stt"), d.op_class("speech.tts")
KV_PRECISION = "fp16"  # the IR sizes the KV cache in fp16; the cost model rescales per precision


def _chain(rewriter: PatternRewriter, op, stages) -> None:
    """Replace `op` by a chain of (name, suffix, result_type, attrs); the first takes op's operands."""
    node = op.attributes["node"].data
    new, prev = [], list(op.operands)
    for name, suffix, rtype, attrs in stages:
        o = d.make(name, f"{node}.{suffix}", prev, rtype, **attrs)
        new.append(o)
        prev = [o.results[0]]
    rewriter.replace(op, new, [new[-1].results[0]])


class _Cards(dict):
    """Model cards read once per pass run."""

    def __missing__(self, model_id):
        self[model_id] = card = load_model(model_id)
        return card


class DecomposeLLM(RewritePattern):
    def __init__(self, cards: _Cards):
        self.cards = cards

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: LLMCall, rewriter: PatternRewriter):
        a = d.op_attrs(op)
        card = self.cards[a["model"]]
        p, o = a["prompt_tokens"], a["output_tokens"]
        kv_bytes = int(card.kv_bytes_per_token(KV_PRECISION) * p)
        llm = {"model": a["model"], "prompt_tokens": p, "output_tokens": o}
        ttft = {"ttft_ms": a["ttft_ms"]} if "ttft_ms" in a else {}  # bounds the prefill side
        tbt = {"tbt_ms": a["tbt_ms"]} if "tbt_ms" in a else {}      # bounds the decode side
        dists = {k: a[k] for k in ("prompt_dist", "output_dist") if k in a}   # sizes ride with both phases
        shared = {k: a[k] for k in ("prefix_shared", "prefix_tokens", "retain_ms") if k in a} \
            if a.get("prefix_shared") else {}
        if card.experts:
            moe = dict(llm, experts=card.experts["count"], top_k=card.experts["top_k"])
            act = lambda tokens: d.data(tokens * card.hidden_size * 2)  # noqa: E731  fp16 activations
            stages = [
                ("expert.gate", "prefill_gate", act(p), dict(moe, phase="prefill")),
                ("expert.tp_prefill", "prefill_experts", act(p), dict(moe, phase="prefill", **ttft)),
                ("expert.merge", "prefill_merge", act(p), dict(moe, phase="prefill")),
                ("comm.allreduce", "prefill_allreduce", d.kv(p, kv_bytes),
                 {"model": a["model"], "bytes": p * card.hidden_size * 2, "phase": "prefill"}),
                ("llm.kv_transfer", "kv_transfer", d.kv(p, kv_bytes),
                 {"model": a["model"], "tokens": p, "kv_bytes": kv_bytes}),
                ("expert.gate", "decode_gate", act(o), dict(moe, phase="decode")),
                ("expert.tp_decode", "decode_experts", act(o), dict(moe, phase="decode", **tbt)),
                ("expert.merge", "decode_merge", act(o), dict(moe, phase="decode")),
                ("comm.allreduce", "decode_allreduce", d.text(o),
                 {"model": a["model"], "bytes": o * card.hidden_size * 2, "phase": "decode"}),
            ]
        else:
            stages = [
                ("llm.prefill", "prefill", d.kv(p, kv_bytes),
                 {"model": a["model"], "prompt_tokens": p, **ttft, **dists, **shared}),
                ("llm.kv_transfer", "kv_transfer", d.kv(p, kv_bytes),
                 {"model": a["model"], "tokens": p, "kv_bytes": kv_bytes}),
                ("llm.decode", "decode", d.text(o), dict(llm, **tbt, **dists)),
            ]
        _chain(rewriter, op, stages)


class DecomposeTool(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ToolInvoke, rewriter: PatternRewriter):
        a = d.op_attrs(op)
        net = {k: a[k] for k in ("tool", "latency_ms", "latency_cv", "request_bytes", "response_bytes",
                                 "latency_dist") if k in a}
        _chain(rewriter, op, [
            ("tool.lookup", "lookup", d.data(a["response_bytes"]), net),
            ("tool.compute", "compute", op.results[0].type, {"tool": a["tool"], "cpu_ms": a["cpu_ms"]}),
        ])


class DecomposeMemorySearch(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: MemorySearch, rewriter: PatternRewriter):
        a = d.op_attrs(op)
        stages = [
            ("embed.encode", "embed", d.vectors(1, a["dims"]),
             {"model": a["embed_model"], "tokens": a["query_tokens"], "texts": 1}),
            ("memory.vector_search", "search", op.results[0].type,
             {"index_size": a["index_size"], "dims": a["dims"], "top_k": a["top_k"]}),
        ]
        if a["rerank"]:
            stages.append(("memory.rerank", "rerank", op.results[0].type,
                           {"model": a["embed_model"], "top_k": a["top_k"],
                            "tokens": a["result_tokens"]}))
        _chain(rewriter, op, stages)


class DecomposeSpeech(RewritePattern):
    def __init__(self, cards: _Cards):
        self.cards = cards

    def match_and_rewrite(self, op, rewriter: PatternRewriter):
        if isinstance(op, Stt):
            a = d.op_attrs(op)
            card = self.cards[a["model"]]
            frames = a["audio_ms"] * (card.audio_frames_per_second or 50) // 1000
            base = {"model": a["model"], "audio_ms": a["audio_ms"]}
            _chain(rewriter, op, [
                ("speech.frontend", "frontend", d.data(frames * (card.n_mels or 80) * 4), base),
                ("speech.encode", "encode", d.data(frames * (card.hidden_size or 384) * 2), base),
                ("speech.decode", "decode", op.results[0].type,
                 dict(base, output_tokens=a["output_tokens"])),
            ])
        elif isinstance(op, Tts):
            a = d.op_attrs(op)
            _chain(rewriter, op, [
                ("speech.phonemize", "phonemize", d.data(a["text_tokens"] * 8),
                 {"model": a["model"], "text_tokens": a["text_tokens"]}),
                ("speech.synthesize", "synthesize", op.results[0].type, a),
            ])


def decompose(module: ModuleOp) -> None:
    cards = _Cards()
    walker = PatternRewriteWalker(GreedyRewritePatternApplier(
        [DecomposeLLM(cards), DecomposeTool(), DecomposeMemorySearch(), DecomposeSpeech(cards)]))
    walker.rewrite_module(module)


@dataclass(frozen=True)
class DecomposePass(ModulePass):
    name = "decompose"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        decompose(op)
