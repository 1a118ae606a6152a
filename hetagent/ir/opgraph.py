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
  compute.fused     cpu_ms, parts (the fused operators' names; made by the `fuse` pass)
Speech operators also carry `audio_ms` (the IR's unit). Every operator also has `bytes_out` (the payload it hands to its successors, for transfer time).
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


# ---- extraction ----------------------------------------------------------------------------------

_CONTROL = ("agent.input", "agent.output", "agent.join", "agent.choose", "agent.continue")


def extract(module) -> OpGraph:
    """The operator graph of a module's main workflow, sub-agent calls inlined.

    The module must be decomposed and unrolled (`hetagent.passes`); branch arms weight their
    operators by the arm's probability, loop copies by their reach probability.
    """
    from xdsl.dialects import func, scf

    from hetagent.errors import IRError
    from hetagent.ir import dialects as d

    funcs = {f.sym_name.data: f for f in module.ops if isinstance(f, func.FuncOp)}
    main = next((f for f in funcs.values()
                 if f.attributes.get("agent.role", None) is None
                 or f.attributes["agent.role"].data == "main"), None)
    if main is None:
        raise IRError("module has no main workflow function")
    operators: list[Operator] = []
    edges: set[tuple[str, str]] = set()

    def attr(op, key, default):
        a = op.attributes.get(key)
        return d.attr_value(a) if a is not None else default

    def walk_block(block, prefix: str, weight: float, on_path: bool, env: dict) -> None:
        """env maps SSA values to the operator names that produce them."""
        for op in block.ops:
            if isinstance(op, scf.WhileOp):
                raise IRError(f"loop '{attr(op, 'node', '?')}' is not unrolled: run the `unroll` pass")
            if isinstance(op, scf.IndexSwitchOp):
                choose = op.operands[0].owner
                probs = attr(choose, "probabilities", [])
                regions = list(op.case_regions) + [op.default_region]
                exits: list[str] = []
                for region, p in zip(regions, probs[:len(regions) - 1] + [probs[-1]]):
                    walk_block(region.block, prefix, weight * p, on_path, env)
                    exits += sources(region.block.last_op.operands[0], env)
                env[op.results[0]] = exits
                continue
            if isinstance(op, func.CallOp):
                callee = funcs[op.callee.string_value()]
                call_prefix = f"{prefix}{attr(op, 'node', callee.sym_name.data)}."
                inner = dict(env)
                inner[callee.body.block.args[0]] = sources(op.operands[0], env)
                walk_block(callee.body.block, call_prefix, weight, on_path, inner)
                ret = callee.body.block.last_op
                for res, val in zip(op.results, ret.operands):
                    env[res] = sources(val, inner)
                continue
            if isinstance(op, func.ReturnOp) or isinstance(op, scf.YieldOp):
                continue
            ins = [n for v in op.operands for n in sources(v, env)]
            if op.name in _CONTROL:
                if op.results:
                    env[op.results[0]] = list(dict.fromkeys(ins))
                continue
            name = prefix + attr(op, "node", op.name)
            a = d.op_attrs(op)
            stage = {k: a.pop(k) for k in ("ttft_ms", "tbt_ms") if k in a}
            reach = a.pop("reach_probability", 1.0)
            path = bool(a.pop("sla_path", 1))
            if "audio_ms" in a:
                a["audio_seconds"] = a["audio_ms"] / 1000.0
            a["bytes_out"] = d.payload_bytes(op.results[0].type) if op.results else 0
            operators.append(Operator(name, op.name, a, weight * reach, on_path and path, stage))
            for src in dict.fromkeys(ins):
                edges.add((src, name))
            if op.results:
                env[op.results[0]] = [name]

    def sources(value, env) -> list[str]:
        return env.get(value, [])

    walk_block(main.body.block, "", 1.0, True, {})
    names = [o.name for o in operators]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise IRError(f"two operators are named '{dup}'")

    def fattr(key, default):
        a = main.attributes.get(key)
        return d.attr_value(a) if a is not None else default

    position = {n: i for i, n in enumerate(names)}
    return OpGraph(workflow=main.sym_name.data, operators=operators,
                   edges=sorted(edges, key=lambda e: (position[e[0]], position[e[1]])),
                   sla_ms=fattr("agent.sla_ms", None), sla_percentile=fattr("agent.sla_percentile", 95.0),
                   rate_rps=fattr("agent.rate", 1.0))
