"""The workflow: a typed description of an agent, as written in YAML or built in Python.

Every field carries a description: `hetagent schema` prints the JSON Schema generated from these classes,
so editors can complete and check workflow files. Node kinds are a discriminated union on `kind`.

    name: voice_agent
    sla: {latency_ms: 2500, percentile: 95}
    rate: 2
    nodes:
      - {id: audio, kind: input, audio_seconds: 6}
      - {id: stt, kind: speech_to_text, model: whisper-large-v3, inputs: [audio]}
      ...
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr, WithJsonSchema,
                      model_validator)

from hetagent.workflow import dist as _dist

# Bounds on every number: far beyond real use, far below what breaks the IR (sizes are int64 attributes,
# and products such as top_k x result_tokens must fit) or the arithmetic after it (inf, NaN).
MAX_TOKENS = 10**9            # any token count
MAX_SIZE = 10**12             # bytes, vectors in an index, iterations
MAX_FIGURE = 1e12             # times (ms, s), prices, speeds
NonNeg = Annotated[float, Field(ge=0, le=MAX_FIGURE, allow_inf_nan=False)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_SIZE)]
MAX_LOOP_COPIES = 1000   # `unroll` makes at most this many copies of a loop body; a longer loop's
                         # unlikely tail is folded, but its SLA path is checked copy by copy
Positive = Annotated[float, Field(gt=0, le=MAX_FIGURE, allow_inf_nan=False)]
Ref = Annotated[str, Field(min_length=1, description="id of another node")]
NodeId = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$",
                             description="unique id of this node, used by `inputs` of other nodes")]


def _distributed(integer: bool, minimum: float, maximum: float, dist_maximum: float | None = None):
    """A field holding a number or a distribution (hetagent.workflow.dist): validated into an int/float or a
    Dist, written back as given."""
    num = {"type": "integer" if integer else "number", "minimum": minimum, "maximum": maximum}
    schema = {"anyOf": [
        num,
        {"type": "object", "additionalProperties": False, "required": ["mean"],
         "properties": {"mean": num, "p50": num, "p95": num, "p99": num},
         "description": "a mean and any of its percentiles"},
        {"type": "object", "additionalProperties": False, "required": ["histogram"],
         "properties": {"histogram": {"type": "array", "minItems": 1, "items": {
             "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number", "minimum": 0}}}},
         "description": "[value, weight] pairs"}]}
    return Annotated[Any, PlainValidator(lambda v: _dist.parse(v, integer=integer, minimum=minimum, maximum=maximum,
                                                             dist_maximum=dist_maximum)),
                     PlainSerializer(lambda v: v.source if isinstance(v, _dist.Dist) else v),
                     WithJsonSchema(schema)]


def _growth(v):
    if v is None or v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_TOKENS:
        raise ValueError(f"expected a number of tokens (0 to {MAX_TOKENS:g}) or `auto`")
    return v


Growth = Annotated[Any, PlainValidator(_growth), WithJsonSchema(
    {"anyOf": [{"type": "number", "minimum": 0}, {"const": "auto"}, {"type": "null"}]})]
Tokens = _distributed(True, 0, MAX_TOKENS)       # a token count or its distribution
Millis = _distributed(False, 0, MAX_FIGURE)      # a latency or its distribution
# a loop's iteration count or its distribution; a distribution's copies are all made (no folded tail)
Iterations = _distributed(False, 1, MAX_SIZE, dist_maximum=MAX_LOOP_COPIES)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Sla(_Strict):
    """End-to-end latency bound of one request."""
    latency_ms: Positive = Field(description="bound on end-to-end latency in milliseconds")
    percentile: float = Field(95.0, gt=0, le=100, allow_inf_nan=False,
                              description="latency percentile the bound applies to")
    iterations: int | None = Field(None, ge=1, le=MAX_SIZE, description=(
        "`sla_iterations`: loop iterations assumed on the SLA path (default: each loop's maximum)"))


class StageSla(_Strict):
    """Per-stage bounds of one LLM call."""
    ttft_ms: Positive | None = Field(None, description="time to first token bound (prefill)")
    tbt_ms: Positive | None = Field(None, description="time between tokens bound (decode)")


class _Node(_Strict):
    id: NodeId
    inputs: list[Ref] = Field(default_factory=list, description=(
        "ids of the nodes whose output this node consumes; inside a loop or branch arm, a node with "
        "no inputs consumes the container's inputs"))
    description: str | None = Field(None, description="free text, ignored by the compiler")


class InputNode(_Node):
    """Where a request enters: its payload size."""
    kind: Literal["input"]
    text_tokens: Tokens = Field(0, description="text payload in tokens")
    audio_seconds: NonNeg = Field(0, description="audio payload in seconds (16 kHz mono)")
    bytes: NonNegInt = Field(0, description="other payload in bytes (files, images)")


class OutputNode(_Node):
    """Where a result leaves the workflow."""
    kind: Literal["output"]


class SpeechToTextNode(_Node):
    """Speech recognition (Whisper family): decomposed into frontend, encoder and decoder."""
    kind: Literal["speech_to_text"]
    model: str = Field(description="model card id, e.g. whisper-large-v3")
    audio_seconds: NonNeg | None = Field(None, description="audio length (default: the input's)")
    output_tokens: Tokens = Field(64, description="transcript length in tokens")


class TextToSpeechNode(_Node):
    """Speech synthesis: decomposed into phonemization and synthesis."""
    kind: Literal["text_to_speech"]
    model: str = Field("piper-joe-medium", description="model card id of the TTS voice")
    text_tokens: Tokens | None = Field(None, description="text to speak in tokens (default: input's)")
    audio_seconds: NonNeg | None = Field(None, description="length of the speech produced "
                                         "(default: text_tokens / 3 tokens per second)")


class HostedModel(_Strict):
    """An LLM served by an outside provider's API: priced per token, no local hardware."""
    provider: str = Field(description="provider name, e.g. openai")
    model: str = Field(description="the provider's model name, e.g. gpt-4o")
    input_usd_per_million: NonNeg = Field(description="$ per million prompt tokens")
    output_usd_per_million: NonNeg = Field(description="$ per million output tokens")
    latency_ms: NonNeg = Field(400, description="network and queueing latency to first token")
    tokens_per_second: Positive = Field(60, description="provider's decode speed")


class LlmNode(_Node):
    """One LLM call: decomposed into prefill, KV transfer and decode."""
    kind: Literal["llm"]
    model: str | None = Field(None, description="model card id (configs/models), self-hosted")
    hosted: HostedModel | None = Field(None, description="a hosted model instead of `model`")
    prompt_tokens: Tokens = Field(description=(
        "prompt length in tokens (context included), a number or a distribution; in a loop with "
        "`context_growth_tokens`, the first iteration's"))
    output_tokens: Tokens = Field(description="generated tokens, a number or a distribution")
    prefix_shared: bool | None = Field(None, description=(
        "the prompt begins with the previous iteration's prompt and output, which the engine may still "
        "hold (default: true inside a loop with `context_growth_tokens`, else false)"))
    sla: StageSla | None = Field(None, description="per-stage bounds (TTFT, time between tokens)")

    @model_validator(mode="after")
    def _one_model(self):
        if (self.model is None) == (self.hosted is None):
            raise ValueError("give exactly one of `model` (self-hosted) or `hosted`")
        return self


class EmbedNode(_Node):
    """Text embedding."""
    kind: Literal["embed"]
    model: str = Field("all-minilm-l6-v2", description="embedding model card id")
    tokens: Tokens = Field(64, description="tokens per text")
    texts: int = Field(1, ge=1, le=10**6, description="texts embedded per request")


class MemorySearchNode(_Node):
    """Retrieval: embeds the query, searches a vector index, optionally reranks."""
    kind: Literal["memory_search"]
    index_size: int = Field(ge=1, le=MAX_SIZE, description="vectors in the index")
    dims: int = Field(384, ge=1, le=10**6, description="vector dimensions")
    top_k: int = Field(5, ge=1, le=10**6, description="results returned")
    embed_model: str = Field("all-minilm-l6-v2", description="model embedding the query")
    query_tokens: Tokens = Field(32, description="query length in tokens")
    rerank: bool = Field(False, description="rerank the top_k with a cross-encoder")
    result_tokens: Tokens = Field(256, description="tokens of text handed on per result")


class MemoryLoadNode(_Node):
    """Read conversation memory or state."""
    kind: Literal["memory_load"]
    bytes: NonNegInt = Field(4096, description="bytes read")


class MemoryStoreNode(_Node):
    """Write conversation memory or state."""
    kind: Literal["memory_store"]
    bytes: NonNegInt = Field(4096, description="bytes written")


class ToolNode(_Node):
    """An external tool or API: network wait (lookup) plus local CPU work (compute)."""
    kind: Literal["tool"]
    tool: str = Field("tool", description="tool name, e.g. web_search")
    latency_ms: Millis = Field(description="external latency: its mean, or a distribution")
    latency_cv: NonNeg = Field(0.5, description=(
        "spread of a latency given as a number: coefficient of variation (lognormal); unused when "
        "`latency_ms` is a distribution"))
    request_bytes: NonNegInt = Field(1024, description="bytes sent")
    response_bytes: NonNegInt = Field(8192, description="bytes received")
    cpu_ms: NonNeg = Field(1.0, description="local CPU work on the response, ms on one core")
    result_tokens: Tokens = Field(256, description="tokens of text the tool result adds")


MAX_SOURCE_CHARS = 65536


class CodeNode(_Node):
    """Local code (parsing, templating, glue). With `source`, `hetagent run` runs it for real in a
    bubblewrap sandbox; without, a stand-in burns `cpu_ms`. `cpu_ms` is what planning assumes either way."""
    kind: Literal["code"]
    cpu_ms: NonNeg = Field(1.0, description="CPU work in ms on one core")
    output_bytes: NonNegInt = Field(1024, description="bytes produced")
    language: Literal["python3"] | None = Field(None, description=(
        "language of `source` (python3, the default when `source` is given)"))
    source: str | None = Field(None, min_length=1, max_length=MAX_SOURCE_CHARS, description=(
        "Python source defining `main(**inputs) -> dict`, as Dify's code nodes do; each parameter of "
        "main receives the input of that name, else the upstream text"))

    @model_validator(mode="after")
    def _language_needs_source(self):
        if self.language is not None and self.source is None:
            raise ValueError("`language` needs `source` (the code to run)")
        return self


class BranchArm(_Strict):
    name: str = Field(description="arm name")
    probability: float = Field(ge=0, le=1, allow_inf_nan=False, description="probability this arm is taken")
    nodes: list["Node"] = Field(default_factory=list, description="nodes run in this arm")


class BranchNode(_Node):
    """A conditional: exactly one arm runs; arm probabilities sum to 1."""
    kind: Literal["branch"]
    arms: list[BranchArm] = Field(min_length=1, description="the arms")


class LoopNode(_Node):
    """A loop (agent <-> tool): the body runs at least once and at most max_iterations times."""
    kind: Literal["loop"]
    expected_iterations: Iterations = Field(description=(
        "mean iterations (geometric up to max_iterations), or their distribution"))
    max_iterations: int = Field(ge=1, le=MAX_SIZE, description="bound on iterations")
    context_growth_tokens: Growth = Field(None, description=(
        "tokens each iteration adds to the prompts of the LLM calls in the body (its output and the tool "
        "results); `auto`: the body's output and result tokens, weighted by branch probabilities; "
        "default: none (every iteration sends the same prompt)"))
    body: list["Node"] = Field(min_length=1, description="nodes run each iteration")

    @model_validator(mode="after")
    def _bounds(self):
        it = self.expected_iterations
        if _dist.mean_of(it) > self.max_iterations:
            raise ValueError(f"expected_iterations {_dist.mean_of(it):g} exceeds "
                             f"max_iterations {self.max_iterations}")
        if isinstance(it, _dist.Dist) and it.quantile(0.99) > self.max_iterations + 1e-9:
            raise ValueError(f"the iteration distribution's p99 {it.quantile(0.99):.4g} is beyond max_iterations "
                             f"{self.max_iterations} (counts above it are cut to it)")
        return self


class SubAgentNode(_Node):
    """A nested workflow, inline or from a file (path relative to this file)."""
    kind: Literal["subagent"]
    workflow: str | None = Field(None, description="path of a workflow file")
    inline: "Workflow | None" = Field(None, description="a nested workflow written in place")
    _resolved: "Workflow | None" = PrivateAttr(None)  # the loaded file or the inline workflow

    @property
    def target(self) -> "Workflow":
        return self._resolved if self._resolved is not None else self.inline

    @model_validator(mode="after")
    def _one_source(self):
        if (self.workflow is None) == (self.inline is None):
            raise ValueError("give exactly one of `workflow` (a file) or `inline`")
        return self


Node = Annotated[Union[InputNode, OutputNode, SpeechToTextNode, TextToSpeechNode, LlmNode, EmbedNode,
                       MemorySearchNode, MemoryLoadNode, MemoryStoreNode, ToolNode, CodeNode,
                       BranchNode, LoopNode, SubAgentNode], Field(discriminator="kind")]

NODE_KINDS = ("input", "output", "speech_to_text", "text_to_speech", "llm", "embed", "memory_search",
              "memory_load", "memory_store", "tool", "code", "branch", "loop", "subagent")
CONTAINER_KINDS = ("branch", "loop")


class Workflow(_Strict):
    """An agent workflow: nodes joined by `inputs` references, with its SLA and offered rate."""
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$", description="workflow name (a symbol)")
    description: str | None = Field(None, description="free text")
    version: Literal[1] = Field(1, description="format version")
    sla: Sla | None = Field(None, description="end-to-end SLA")
    rate: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False,
                        description="offered load in requests per second")
    nodes: list[Node] = Field(min_length=1, description="the nodes, in any order")
    _source_text: str | None = PrivateAttr(None)  # the text it was loaded from, kept for plan.json
    _source_file: str | None = PrivateAttr(None)

    def walk(self):
        """Every node, containers before their contents (not into sub-agents)."""
        def rec(nodes):
            for n in nodes:
                yield n
                if isinstance(n, LoopNode):
                    yield from rec(n.body)
                elif isinstance(n, BranchNode):
                    for arm in n.arms:
                        yield from rec(arm.nodes)
        yield from rec(self.nodes)


BranchArm.model_rebuild()
LoopNode.model_rebuild()
SubAgentNode.model_rebuild()
Workflow.model_rebuild()


def json_schema() -> dict:
    schema = Workflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hetagent workflow"
    return schema
