"""The agent dialects: payload types, the #agent.place attribute, and the operations of an agent graph.

One table, OPS, declares every operation: its name, its required attributes and their kinds, and what
it means. The xDSL classes and the IRDL definition for upstream MLIR (agent.irdl.mlir) are both generated
from it, so they cannot drift apart. Control flow uses upstream MLIR's own structured ops: a workflow is
a `func.func`, a sub-agent a `func.call`, a branch an `scf.index_switch` on an `agent.choose`, and a loop
an `scf.while` whose condition is an `agent.continue`; those need terminators, and upstream IRDL cannot
define terminators.

    %0 = agent.input {node = "audio", ...} : () -> !agent.audio<6000 : i64>
    %1 = speech.stt(%0) {node = "stt", model = "whisper-large-v3", ...} : (...) -> !agent.text<64 : i64>

Payload sizes live in the types: !agent.text<tokens>, !agent.audio<milliseconds>, !agent.bytes<n>,
!agent.kv<tokens, bytes>, !agent.vectors<count, dims>. -1 means "varies" (values leaving a branch or
carried around a loop; `agent.join` converts). After placement an op carries
`place = #agent.place<"h100", tp, pp, batch, replicas, "fp16">`.
"""
from __future__ import annotations

import functools

from xdsl.dialects.builtin import (ArrayAttr, FloatAttr, IndexType, IntegerAttr, IntegerType,
                                   StringAttr, i64)
from xdsl.ir import Dialect, ParametrizedAttribute, TypeAttribute, VerifyException
from xdsl.irdl import (IRDLOperation, irdl_attr_definition, irdl_op_definition, param_def,
                       result_def, var_operand_def, attr_def, opt_attr_def)

DYNAMIC = -1

# ---- types -------------------------------------------------------------------------------------


class _Sized(ParametrizedAttribute, TypeAttribute):
    """A payload type whose integer parameters are sizes (>= 0, or -1 for "varies")."""

    def verify(self) -> None:
        for p in self.parameters:
            if p.value.data < DYNAMIC:
                raise VerifyException(f"{self.name}: negative size {p.value.data}")

    def sizes(self) -> tuple[int, ...]:
        return tuple(p.value.data for p in self.parameters)


@irdl_attr_definition
class TextType(_Sized):
    """Text, sized in tokens."""
    name = "agent.text"
    tokens: IntegerAttr = param_def()


@irdl_attr_definition
class AudioType(_Sized):
    """Audio, sized in milliseconds (16 kHz mono)."""
    name = "agent.audio"
    ms: IntegerAttr = param_def()


@irdl_attr_definition
class BytesType(_Sized):
    """Opaque data (files, tool payloads, memory records), sized in bytes."""
    name = "agent.bytes"
    count: IntegerAttr = param_def()


@irdl_attr_definition
class KvType(_Sized):
    """An LLM's KV cache for `tokens` tokens, `bytes` in size."""
    name = "agent.kv"
    tokens: IntegerAttr = param_def()
    nbytes: IntegerAttr = param_def()


@irdl_attr_definition
class VectorsType(_Sized):
    """Embedding vectors: `count` vectors of `dims` dimensions."""
    name = "agent.vectors"
    count: IntegerAttr = param_def()
    dims: IntegerAttr = param_def()


PAYLOAD_TYPES = (TextType, AudioType, BytesType, KvType, VectorsType)


@functools.lru_cache(maxsize=65536)  # types are immutable: build each one once
def text(tokens: int) -> TextType:
    return TextType(IntegerAttr(int(tokens), i64))


@functools.lru_cache(maxsize=65536)  # types are immutable: build each one once
def audio(ms: int) -> AudioType:
    return AudioType(IntegerAttr(int(ms), i64))


@functools.lru_cache(maxsize=65536)  # types are immutable: build each one once
def data(nbytes: int) -> BytesType:
    return BytesType(IntegerAttr(int(nbytes), i64))


@functools.lru_cache(maxsize=65536)  # types are immutable: build each one once
def kv(tokens: int, nbytes: int) -> KvType:
    return KvType(IntegerAttr(int(tokens), i64), IntegerAttr(int(nbytes), i64))


@functools.lru_cache(maxsize=65536)  # types are immutable: build each one once
def vectors(count: int, dims: int) -> VectorsType:
    return VectorsType(IntegerAttr(int(count), i64), IntegerAttr(int(dims), i64))


def payload_bytes(t) -> int:
    """Bytes a value of this type occupies on the wire (text: 4 bytes per token; audio: 16 kHz int16)."""
    if isinstance(t, TextType):
        return max(t.tokens.value.data, 0) * 4
    if isinstance(t, AudioType):
        return max(t.ms.value.data, 0) * 32
    if isinstance(t, BytesType):
        return max(t.count.value.data, 0)
    if isinstance(t, KvType):
        return max(t.nbytes.value.data, 0)
    if isinstance(t, VectorsType):
        return max(t.count.value.data, 0) * max(t.dims.value.data, 0) * 4
    return 0


@irdl_attr_definition
class PlaceAttr(ParametrizedAttribute):
    """Where placement put an operator: device id, TP and PP degree, batch, replicas, precision."""
    name = "agent.place"
    device: StringAttr = param_def()
    tp: IntegerAttr = param_def()
    pp: IntegerAttr = param_def()
    batch: IntegerAttr = param_def()
    replicas: IntegerAttr = param_def()
    precision: StringAttr = param_def()

    @staticmethod
    def make(device: str, tp: int, pp: int, batch: int, replicas: int, precision: str) -> "PlaceAttr":
        return PlaceAttr(StringAttr(device), IntegerAttr(tp, i64), IntegerAttr(pp, i64),
                         IntegerAttr(batch, i64), IntegerAttr(replicas, i64), StringAttr(precision))


# ---- operations ----------------------------------------------------------------------------------
# Attribute kinds: "str" (StringAttr), "int" (i64 IntegerAttr, >= 0), "float" (f64 FloatAttr, >= 0),
# "array" (an array attribute). Every operation also has `node` (str): the workflow node it comes from, made
# unique by the passes, and may carry `place` (#agent.place) and loop-copy attributes.

S, I, F, FS = "str", "int", "float", "array"
_LLM = {"model": S, "prompt_tokens": I, "output_tokens": I}
_TOOL_NET = {"tool": S, "latency_ms": F, "latency_cv": F, "request_bytes": I, "response_bytes": I}
_MOE = {"model": S, "prompt_tokens": I, "output_tokens": I, "experts": I, "top_k": I, "phase": S}

# name -> (required attributes, results: "one" | "none" | "index" | "i1", doc)
OPS: dict[str, tuple[dict[str, str], str, str]] = {
    "agent.input": ({"text_tokens": I, "audio_ms": I, "bytes": I}, "one",
                    "A request's payload entering the workflow (or a sub-agent's argument)."),
    "agent.output": ({}, "one", "A result leaving the workflow; passes its operand on."),
    "agent.join": ({}, "one", "Joins values into one whose size varies (branch and loop exits)."),
    "agent.choose": ({"probabilities": FS}, "index", "Picks a branch arm with these probabilities."),
    "agent.continue": ({"expected_iterations": F, "max_iterations": I}, "i1",
                       "Whether a loop goes on: geometric with this mean, capped at the maximum."),
    "llm.call": (dict(_LLM), "one", "One LLM call on a self-hosted model."),
    "llm.prefill": ({"model": S, "prompt_tokens": I}, "one", "Prompt processing: compute-bound."),
    "llm.kv_transfer": ({"model": S, "tokens": I, "kv_bytes": I}, "one",
                        "Hands the KV cache from prefill to decode: network-bound when they differ."),
    "llm.decode": (dict(_LLM), "one", "Token generation: memory-bandwidth-bound."),
    "llm.remote": ({"provider": S, "model": S, "prompt_tokens": I, "output_tokens": I,
                    "input_usd_per_million": F, "output_usd_per_million": F, "latency_ms": F,
                    "tokens_per_second": F}, "one", "An LLM call to a hosted API, priced per token."),
    "expert.gate": (dict(_MOE), "one", "MoE router: picks the top-k experts per token."),
    "expert.tp_prefill": (dict(_MOE), "one", "Expert FFNs with tensor parallelism, prefill."),
    "expert.tp_decode": (dict(_MOE), "one", "Expert FFNs with tensor parallelism, decode."),
    "expert.merge": (dict(_MOE), "one", "Weighted sum of the experts' outputs."),
    "comm.allreduce": ({"model": S, "bytes": I, "phase": S}, "one", "Tensor-parallel all-reduce."),
    "speech.stt": ({"model": S, "audio_ms": I, "output_tokens": I}, "one", "Speech to text."),
    "speech.frontend": ({"model": S, "audio_ms": I}, "one", "Log-mel features (CPU)."),
    "speech.encode": ({"model": S, "audio_ms": I}, "one", "Audio encoder."),
    "speech.decode": ({"model": S, "audio_ms": I, "output_tokens": I}, "one", "Transcript decoder."),
    "speech.tts": ({"model": S, "text_tokens": I, "audio_ms": I}, "one", "Text to speech."),
    "speech.phonemize": ({"model": S, "text_tokens": I}, "one", "Text to phonemes (CPU)."),
    "speech.synthesize": ({"model": S, "text_tokens": I, "audio_ms": I}, "one",
                          "Acoustic model and vocoder."),
    "embed.encode": ({"model": S, "tokens": I, "texts": I}, "one", "Text embedding."),
    "memory.search": ({"index_size": I, "dims": I, "top_k": I, "embed_model": S, "query_tokens": I,
                       "rerank": I, "result_tokens": I}, "one", "Retrieval over a vector index."),
    "memory.vector_search": ({"index_size": I, "dims": I, "top_k": I}, "one",
                             "Nearest-neighbour search."),
    "memory.rerank": ({"model": S, "top_k": I, "tokens": I}, "one", "Cross-encoder reranking."),
    "memory.load": ({"bytes": I}, "one", "Read memory or state."),
    "memory.store": ({"bytes": I}, "one", "Write memory or state."),
    "tool.invoke": ({**_TOOL_NET, "cpu_ms": F}, "one", "A tool call: network wait plus CPU work."),
    "tool.lookup": (dict(_TOOL_NET), "one", "The tool's external request: latency-bound."),
    "tool.compute": ({"tool": S, "cpu_ms": F}, "one", "Local work on the tool's response."),
    "compute.code": ({"cpu_ms": F}, "one", "Local code."),
    "compute.fused": ({"cpu_ms": F, "parts": FS}, "one",
                      "CPU operators fused by `fuse`; `parts` lists the fused nodes' names."),
}

# Optional attributes: name -> {attribute: (kind, meaning)}. xDSL declares and checks them; upstream IRDL has no
# optional attributes, and MLIR keeps attributes an op does not declare (discardable), so agent.irdl.mlir lists
# only the required ones above and upstream tools accept either.
_DIST = "a distribution: its quantile function as knots [u0, q0, u1, q1, ...] (hetagent.workflow.dist)"
_LLM_DISTS = {"prompt_dist": (FS, "prompt tokens, " + _DIST), "output_dist": (FS, "output tokens, " + _DIST)}
_PREFIX = {"prefix_shared": (I, "1: the prompt begins with the previous iteration's context"),
           "prefix_tokens": (I, "tokens of the prompt the previous iteration's call left in the engine"),
           "retain_ms": (F, "mean time that call's KV waits for this one (tool calls in between)")}
OPTIONAL: dict[str, dict[str, tuple[str, str]]] = {
    "agent.continue": {
        "reach_probabilities": (FS, "P(iterations >= k), k = 1 .. max, of an iteration distribution (else geometric)"),
        "context_growth_tokens": (F, "tokens each iteration adds to the prompts of the body's LLM calls"),
        "tool_ms": (F, "expected tool and code time of one iteration: how long a call's KV waits for the next")},
    "llm.call": {**_LLM_DISTS, **_PREFIX},
    "llm.remote": dict(_LLM_DISTS),
    "llm.prefill": {**_LLM_DISTS, **_PREFIX,
                    "cached_tokens": (I, "prompt tokens already in the KV cache: prefill computes the rest")},
    "llm.decode": dict(_LLM_DISTS),
    "tool.invoke": {"latency_dist": (FS, "external latency in ms, " + _DIST)},
    "tool.lookup": {"latency_dist": (FS, "external latency in ms, " + _DIST)},
}

_ATTR_CLASS = {S: StringAttr, I: IntegerAttr, F: FloatAttr, FS: ArrayAttr}
_IRDL_BASE = {S: '"#builtin.string"', I: '"#builtin.integer"', F: '"#builtin.float"',
              FS: '"#builtin.array"'}


def _verify_sizes(self) -> None:
    if len({v.type for v in self.operands}) > 1:
        raise VerifyException(f"{self.name} '{self.node.data}': operands must share one type "
                              "(cast with agent.join)")
    spec = {**OPS[self.name][0], **{k: v[0] for k, v in OPTIONAL.get(self.name, {}).items()}}
    for key, kind in spec.items():
        a = self.attributes.get(key)
        if a is not None and kind in (I, F) and a.value.data < 0:
            raise VerifyException(f"{self.name} '{self.node.data}': {key} must be >= 0, got {a.value.data}")


def _make_op(name: str, attrs: dict[str, str], results: str, doc: str) -> type[IRDLOperation]:
    ns: dict = {"name": name, "__doc__": doc, "inputs": var_operand_def(),
                "node": attr_def(StringAttr), "place": opt_attr_def(PlaceAttr), "verify_": _verify_sizes}
    for key, kind in attrs.items():
        ns[key] = attr_def(_ATTR_CLASS[kind])
    for key, (kind, _) in OPTIONAL.get(name, {}).items():
        ns[key] = opt_attr_def(_ATTR_CLASS[kind])
    if results == "one":
        ns["out"] = result_def()
    elif results == "index":
        ns["out"] = result_def(IndexType)
    elif results == "i1":
        ns["out"] = result_def(IntegerType)
    cls_name = "".join(p.capitalize() for p in name.replace(".", "_").split("_")) + "Op"
    return irdl_op_definition(type(cls_name, (IRDLOperation,), ns))


OP_CLASSES: dict[str, type[IRDLOperation]] = {n: _make_op(n, *spec) for n, spec in OPS.items()}


def op_class(name: str) -> type[IRDLOperation]:
    return OP_CLASSES[name]


def make(name: str, node: str, inputs=(), result_type=None, **attrs) -> IRDLOperation:
    """Build an operation of the table: make("llm.prefill", "think.prefill", [v], text(1), model=...)."""
    spec = {**OPS[name][0], **{k: v[0] for k, v in OPTIONAL.get(name, {}).items()}}
    attributes = {"node": StringAttr(node)}
    for key, value in attrs.items():
        attributes[key] = to_attr(spec.get(key), value)
    res = [] if OPS[name][1] == "none" else [result_type if result_type is not None else
                                            (IndexType() if OPS[name][1] == "index" else IntegerType(1))]
    return OP_CLASSES[name].create(operands=list(inputs), result_types=res, attributes=attributes)


def to_attr(kind: str | None, value):
    if isinstance(value, (StringAttr, IntegerAttr, FloatAttr, ArrayAttr, PlaceAttr)):
        return value
    if isinstance(value, (str, int, float)):  # attributes are immutable: build each one once
        return _scalar_attr(kind, value, type(value))
    return _make_attr(kind, value)


@functools.lru_cache(maxsize=65536)
def _scalar_attr(kind, value, _type):
    return _make_attr(kind, value)


def _make_attr(kind, value):
    if kind == FS or isinstance(value, (list, tuple)):
        return ArrayAttr([FloatAttr(float(v), 64) if not isinstance(v, str) else StringAttr(v)
                          for v in value])
    if kind == S or isinstance(value, str):
        return StringAttr(str(value))
    if kind == I or (kind is None and isinstance(value, (int, bool))):
        return IntegerAttr(int(value), i64)
    return FloatAttr(float(value), 64)


def attr_value(attr):
    """Plain Python value of an attribute."""
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, (IntegerAttr, FloatAttr)):
        return attr.value.data
    if isinstance(attr, ArrayAttr):
        return [attr_value(a) for a in attr.data]
    return attr


def op_attrs(op) -> dict:
    """An operation's attributes as plain values (without `node` and `place`)."""
    return {k: attr_value(v) for k, v in op.attributes.items() if k not in ("node", "place")}


def _dialects() -> list[Dialect]:
    by_prefix: dict[str, list] = {}
    for name, cls in OP_CLASSES.items():
        by_prefix.setdefault(name.split(".")[0], []).append(cls)
    attrs = {"agent": [*PAYLOAD_TYPES, PlaceAttr]}
    return [Dialect(prefix, ops, attrs.get(prefix, [])) for prefix, ops in by_prefix.items()]


DIALECTS = _dialects()


# ---- IRDL for upstream MLIR -----------------------------------------------------------------------

def irdl_text() -> str:
    """The IRDL definition of every dialect above (shipped as hetagent/ir/agent.irdl.mlir)."""
    lines = ["// Generated from hetagent/ir/dialects.py by `python -m hetagent.ir.irdl`; do not edit.",
             "// Check the IR with: iree-opt --irdl-file=hetagent/ir/agent.irdl.mlir module.mlir",
             "// Required attributes only: the optional ones (distributions, prefix reuse) are discardable."]
    for dialect in DIALECTS:
        lines.append(f"irdl.dialect @{dialect.name} {{")
        if dialect.name == "agent":
            for t in PAYLOAD_TYPES:
                lines += _irdl_params("type", t)
            lines += _irdl_params("attribute", PlaceAttr)
        for op in dialect.operations:
            lines += _irdl_op(op.name)
        lines.append("}")
    return "\n".join(lines) + "\n"


def _irdl_params(what: str, cls) -> list[str]:
    params = [f for f, _ in cls.get_irdl_definition().parameters]
    out = [f"  irdl.{what} @{cls.name.split('.', 1)[1]} {{"]
    for i, f in enumerate(params):
        base = '"#builtin.string"' if f in ("device", "precision") else '"#builtin.integer"'
        out.append(f"    %p{i} = irdl.base {base}")
    out.append(f"    irdl.parameters({', '.join(f'{f}: %p{i}' for i, f in enumerate(params))})")
    out.append("  }")
    return out


def _irdl_op(name: str) -> list[str]:
    attrs, results, _ = OPS[name]
    out = [f"  irdl.operation @{name.split('.', 1)[1]} {{", "    %in = irdl.any",
           "    %node = irdl.base \"#builtin.string\""]
    names = ['"node" = %node']
    for i, (key, kind) in enumerate(attrs.items()):
        out.append(f"    %a{i} = irdl.base {_IRDL_BASE[kind]}")
        names.append(f'"{key}" = %a{i}')
    out.append(f"    irdl.attributes {{{', '.join(names)}}}")
    out.append("    irdl.operands(inputs: variadic %in)")
    if results == "one":
        out += ["    %out = irdl.any", "    irdl.results(out: %out)"]
    elif results == "index":
        out += ["    %out = irdl.is index", "    irdl.results(out: %out)"]
    elif results == "i1":
        out += ["    %out = irdl.is i1", "    irdl.results(out: %out)"]
    out.append("  }")
    return out
