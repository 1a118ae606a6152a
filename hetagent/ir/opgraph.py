"""The operator graph: the decomposed IR seen as a flat DAG, the form the cost model and placement read.

`extract(module)` walks a module after `decompose` and `unroll` (loops already expanded into guarded
copies) and returns one OpGraph per `agent.graph`. Each Operator carries its IR op name (`kind`), its
payload sizes (`attrs`), how many times it runs per request on average (`weight`: the product of branch
probabilities and the probability of reaching a loop copy), and whether it lies on the path the SLA is
checked on (`on_sla_path`: loop copies beyond the workflow's `sla_iterations` do not).

Attribute vocabulary per kind (all sizes per single execution, one request):
  llm.prefill       model, prompt_tokens
  llm.decode        model, prompt_tokens, output_tokens       (context grows prompt -> prompt+output)
  llm.kv_transfer   model, tokens, kv_bytes                   (prefill -> decode hand-off)
  llm.remote        model, provider, prompt_tokens, output_tokens   (hosted API, priced per token)
  expert.gate, expert.tp_prefill, expert.merge, comm.allreduce, expert.tp_decode
                    model, prompt_tokens, output_tokens, experts, top_k, phase ("prefill"|"decode")
  speech.frontend   model, audio_seconds                      (log-mel features)
  speech.encode     model, audio_seconds
  speech.decode     model, audio_seconds, output_tokens
  speech.phonemize  model, text_tokens
  speech.synthesize model, text_tokens, audio_seconds
  embed.encode      model, tokens, texts
  memory.vector_search  index_size, dims, top_k
  memory.rerank     model, top_k, tokens
  memory.load, memory.store   bytes
  tool.lookup       tool, latency_ms, latency_cv, request_bytes, response_bytes
  tool.compute      tool, cpu_ms
  compute.code      cpu_ms
Every operator also has `bytes_out` (the payload it hands to its successors, for transfer time).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Operator:
    name: str                 # unique within the workflow, e.g. "agent.it2.think.prefill"
    kind: str                 # IR op name, e.g. "llm.prefill"
    attrs: dict               # payload sizes, vocabulary above
    weight: float = 1.0       # expected executions per request
    on_sla_path: bool = True  # counted in the end-to-end SLA
    stage_sla: dict = field(default_factory=dict)  # {"ttft_ms": .., "tbt_ms": ..} where the workflow sets them


@dataclass
class OpGraph:
    workflow: str
    operators: list[Operator]
    edges: list[tuple[str, str]]      # (producer, consumer) data dependencies; a DAG
    sla_ms: float | None = None       # end-to-end latency bound
    sla_percentile: float = 95.0
    rate_rps: float = 1.0             # offered requests per second

    def op(self, name: str) -> Operator:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, Operator]:
        return {o.name: o for o in self.operators}

    def predecessors(self, name: str) -> list[str]:
        return [a for a, b in self.edges if b == name]

    def successors(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]
