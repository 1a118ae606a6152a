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

from hetagent.modelcards import load_model
from hetagent.ir import dialects as d

KV_PRECISION = "fp16"  # the IR sizes the KV cache in fp16; the cost model rescales per precision


def _chain(op, stages) -> None:
    """Replace `op` by a chain of (name, suffix, result_type, attrs); the first takes op's operands."""
    node = op.attributes["node"].data
    new, prev = [], list(op.operands)
    for name, suffix, rtype, attrs in stages:
        o = d.make(name, f"{node}.{suffix}", prev, rtype, **attrs)
        new.append(o)
        prev = [o.results[0]]
    op.parent_block().insert_ops_before(new, op)
    op.results[0].replace_all_uses_with(new[-1].results[0])
    op.detach()
    op.erase()


class _Cards(dict):
    """Model cards read once per pass run."""

    def __missing__(self, model_id):
        self[model_id] = card = load_model(model_id)
        return card


def _llm(op, cards: _Cards) -> list:
    a = d.op_attrs(op)
    card = cards[a["model"]]
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
        return [
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
    return [
        ("llm.prefill", "prefill", d.kv(p, kv_bytes),
         {"model": a["model"], "prompt_tokens": p, **ttft, **dists, **shared}),
        ("llm.kv_transfer", "kv_transfer", d.kv(p, kv_bytes),
         {"model": a["model"], "tokens": p, "kv_bytes": kv_bytes}),
        ("llm.decode", "decode", d.text(o), dict(llm, **tbt, **dists)),
    ]


def _tool(op, cards: _Cards) -> list:
    a = d.op_attrs(op)
    net = {k: a[k] for k in ("tool", "latency_ms", "latency_cv", "request_bytes", "response_bytes",
                             "latency_dist") if k in a}
    return [
        ("tool.lookup", "lookup", d.data(a["response_bytes"]), net),
        ("tool.compute", "compute", op.results[0].type, {"tool": a["tool"], "cpu_ms": a["cpu_ms"]}),
    ]


def _memory_search(op, cards: _Cards) -> list:
    a = d.op_attrs(op)
    stages = [
        ("embed.encode", "embed", d.vectors(1, a["dims"]),
         {"model": a["embed_model"], "tokens": a["query_tokens"], "texts": 1}),
        ("memory.vector_search", "search", op.results[0].type,
         {"index_size": a["index_size"], "dims": a["dims"], "top_k": a["top_k"]}),
    ]
    if a["rerank"]:
        stages.append(("memory.rerank", "rerank", op.results[0].type,
                       {"model": a["embed_model"], "top_k": a["top_k"], "tokens": a["result_tokens"]}))
    return stages


def _stt(op, cards: _Cards) -> list:
    a = d.op_attrs(op)
    card = cards[a["model"]]
    frames = a["audio_ms"] * (card.audio_frames_per_second or 50) // 1000
    base = {"model": a["model"], "audio_ms": a["audio_ms"]}
    return [
        ("speech.frontend", "frontend", d.data(frames * (card.n_mels or 80) * 4), base),
        ("speech.encode", "encode", d.data(frames * (card.hidden_size or 384) * 2), base),
        ("speech.decode", "decode", op.results[0].type, dict(base, output_tokens=a["output_tokens"])),
    ]


def _tts(op, cards: _Cards) -> list:
    a = d.op_attrs(op)
    return [
        ("speech.phonemize", "phonemize", d.data(a["text_tokens"] * 8),
         {"model": a["model"], "text_tokens": a["text_tokens"]}),
        ("speech.synthesize", "synthesize", op.results[0].type, a),
    ]


STAGES = {"llm.call": _llm, "tool.invoke": _tool, "memory.search": _memory_search, "speech.stt": _stt,
          "speech.tts": _tts}


def decompose(module: ModuleOp) -> None:
    """Each decomposable op is replaced once, in a single walk (none of the new ops decomposes again):
    no rewrite worklist, so a 10,000-call workflow decomposes in linear time."""
    cards = _Cards()
    for op in [op for op in module.walk() if op.name in STAGES]:
        _chain(op, STAGES[op.name](op, cards))


@dataclass(frozen=True)
class DecomposePass(ModulePass):
    name = "decompose"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        decompose(op)
