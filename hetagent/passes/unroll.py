"""`unroll`: a loop of at most N iterations becomes N guarded copies of its body.

Copy k runs with the probability of reaching it. Iterations are geometric: the loop goes on with
probability q after each iteration, q chosen so that the expected count, capped at N, is the workflow's
`expected_iterations`: sum_{k=1..N} q^(k-1) = E. So copy k carries `reach_probability = q^(k-1)`; cost is
weighted by it. A loop whose iterations follow a distribution carries `reach_probabilities` (P(K >= k))
instead, and copy k carries that. The SLA is checked on the path of the workflow's `sla_iterations` copies
(default N): copies beyond it carry `sla_path = 0`. Operators in copy k are renamed `<loop>.it<k>.<name>`.
Innermost loops unroll first, so nested copies multiply their probabilities.

Huge loops are folded, never materialized: when N exceeds MAX_LOOP_COPIES, only the copies on the SLA
path and those reached with probability >= TAIL_PROBABILITY are made (at most MAX_LOOP_COPIES); one more
copy, `it<K+1>`, stands for the whole tail K+1..N: its `reach_probability` is the tail's expected number
of executions, sum_{k>K} q^(k-1) (it may exceed 1), so cost and load stay exact in expectation. A loop
whose SLA path alone needs more than MAX_LOOP_COPIES copies cannot be checked and is refused.

Growing context: a loop with `context_growth_tokens` G adds (k-1) G tokens to the prompt of every LLM call
in copy k (and the sizes that follow from it: the KV cache and its hand-off, a prompt distribution's
values). A prefill that shares its prefix (`prefix_shared`) gets, from copy 2 on, `prefix_tokens`: the
tokens of its prompt that the same call of the previous iteration left in the engine (that prompt and
its output, prompt_k - G + output, at most prompt_k - 1: one new token is always computed), and
`retain_ms`: how long that KV waits for it (the loop's `tool_ms`). The loop that sets them is the
innermost one around the call; an outer loop's growth shifts them too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func, scf
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from hetagent.errors import IRError
from hetagent.ir import dialects as d
from hetagent.workflow.dist import from_attr
from hetagent.workflow.model import MAX_LOOP_COPIES  # copies made per loop at most

TAIL_PROBABILITY = 1e-6       # in a loop longer than MAX_LOOP_COPIES, copies reached less often fold
MAX_UNROLLED_OPS = 200_000    # operations all copies of all loops of a module may add (nested loops
                              # multiply their copies)


def _geometric_sum(q: float, n: int) -> float:
    """sum_{k=0}^{n-1} q^k in closed form (no loop over n terms)."""
    if q >= 1.0:
        return float(n)
    if q <= 0.0:
        return 1.0
    return -math.expm1(n * math.log(q)) / (1.0 - q)


def continue_probability(expected: float, n: int) -> float:
    """q with sum_{k=0}^{n-1} q^k = expected (1 <= expected <= n), by bisection on the closed form."""
    if n <= 1 or expected <= 1.0:
        return 0.0
    if expected >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        q = (lo + hi) / 2
        if _geometric_sum(q, n) < expected:
            lo = q
        else:
            hi = q
    return (lo + hi) / 2


def reach_probabilities(expected: float, n: int) -> list[float]:
    q = continue_probability(expected, n)
    return [q ** k for k in range(n)]


def materialized_copies(expected: float, n: int, sla_copies: int) -> int:
    """K, the copies of a loop of at most n iterations that unroll makes one by one (K == n: no fold).
    `sla_copies`: copies on the SLA path (0 when the workflow has no SLA)."""
    if n <= MAX_LOOP_COPIES:
        return n
    if sla_copies > MAX_LOOP_COPIES:
        raise IRError(f"a loop of up to {n} iterations puts {sla_copies} on the SLA path; at most "
                      f"{MAX_LOOP_COPIES} can be checked: set the workflow's sla.iterations")
    q = continue_probability(expected, n)
    likely = MAX_LOOP_COPIES if q >= 1.0 else (
        1 if q <= 0.0 else 1 + int(math.log(TAIL_PROBABILITY) / math.log(q)))
    return max(1, min(MAX_LOOP_COPIES, max(likely, sla_copies)))


def tail_weight(expected: float, n: int, k: int) -> float:
    """Expected executions of copies k+1..n: sum_{j=k}^{n-1} q^j."""
    q = continue_probability(expected, n)
    if q >= 1.0:
        return float(n - k)
    return q ** k * _geometric_sum(q, n - k)


def _copies(cond, sla_copies: int, has_sla: bool) -> list[tuple[int, float, bool]]:
    """(k, reach, on the SLA path) for every copy unroll makes; the last may stand for a folded tail."""
    a = cond.attributes
    n = a["max_iterations"].value.data
    given = a.get("reach_probabilities")
    on_path = sla_copies if has_sla else 0
    if given is not None:        # an iteration distribution: P(K >= k), zero past its support
        r = [float(d.attr_value(x)) for x in given.data][:n]
        k_made = min(n, max(len(r), on_path))
        if k_made > MAX_LOOP_COPIES:   # refuses an SLA path it cannot check, else folds the tail
            k_made = min(MAX_LOOP_COPIES, max(materialized_copies(1.0, n, on_path), len(r)))
        copies = [(k, r[k - 1] if k <= len(r) else 0.0, k <= sla_copies) for k in range(1, k_made + 1)]
        if k_made < len(r):
            copies.append((k_made + 1, sum(r[k_made:]), False))
        return copies
    expected = a["expected_iterations"].value.data
    k_made = materialized_copies(expected, n, on_path)
    q = continue_probability(expected, n)
    copies = [(k, q ** (k - 1), k <= sla_copies) for k in range(1, k_made + 1)]
    if k_made < n:   # the folded tail, off the SLA path (every SLA copy is among the first k_made)
        copies.append((k_made + 1, tail_weight(expected, n, k_made), False))
    return copies


def _unroll_one(loop: scf.WhileOp, sla_iterations: int | None, has_sla: bool, budget: list[int]) -> None:
    """Unrolls one loop; `budget` holds the operations the module's copies may still add."""
    cond = next(op for op in loop.before_region.block.ops if op.name == "agent.continue")
    n = cond.attributes["max_iterations"].value.data
    growth = float(d.attr_value(cond.attributes.get("context_growth_tokens", FloatAttr(0.0, 64))))
    wait = float(d.attr_value(cond.attributes.get("tool_ms", FloatAttr(0.0, 64))))
    loop_name = loop.attributes["node"].data
    body = loop.after_region.block
    parent = loop.parent_block()
    current = loop.operands[0]
    sla_copies = n if sla_iterations is None else min(sla_iterations, n)
    try:
        copies = _copies(cond, sla_copies, has_sla)
    except IRError as e:
        raise IRError(f"loop '{loop_name}': {e}") from None
    adds = sum(1 for _ in body.walk()) * len(copies)
    if adds > budget[0]:
        raise IRError(f"loop '{loop_name}': unrolling its {len(copies)} copies would pass "
                      f"{MAX_UNROLLED_OPS} operations in all (nested loops multiply); lower "
                      f"max_iterations or expected_iterations")
    budget[0] -= adds
    for k, reach, on_path in copies:
        mapper = {body.args[0]: current}
        made = []
        for op in body.ops:
            if isinstance(op, scf.YieldOp):
                current = mapper.get(op.operands[0], op.operands[0])
                break
            new = op.clone(value_mapper=mapper)
            for inner in new.walk():
                _mark(inner, f"{loop_name}.it{k}", reach, on_path)
            parent.insert_op_before(new, loop)
            made.append(new)
        if growth > 0:
            current = _grow(made, k, growth, wait, current)
    loop.results[0].replace_all_uses_with(current)
    loop.detach()
    loop.erase()


_PROMPTED = ("llm.call", "llm.prefill", "llm.decode", "llm.remote", "expert.gate", "expert.tp_prefill",
             "expert.tp_decode", "expert.merge")


def _grow(made: list, k: int, growth: float, wait: float, current):
    """Copy k of a loop whose context grows by `growth` tokens per iteration: prompts, the sizes that follow
    from them, and the prefix the previous copy left (see the module's doc). Returns the copy's yielded
    value (replaced if its op was rebuilt with a larger result type)."""
    extra = (k - 1) * growth
    ops = [o for top in made for o in top.walk() if "node" in o.attributes]
    by_node = {o.attributes["node"].data: o for o in ops}
    ratio: dict = {}          # call (node name less the stage) -> new / old prompt
    for op in ops:
        a = op.attributes
        call = a["node"].data.rsplit(".", 1)[0]
        if op.name in _PROMPTED and "prompt_tokens" in a:
            old = a["prompt_tokens"].value.data
            new = old + extra
            ratio[call] = new / old if old > 0 else 1.0
            a["prompt_tokens"] = d.to_attr(d.I, int(round(new)))
            if "prompt_dist" in a:
                a["prompt_dist"] = d.to_attr(d.FS, from_attr(d.attr_value(a["prompt_dist"])).shifted(extra).to_attr())
            if "prefix_tokens" in a:       # an inner loop set it: its previous copy grew as much
                if a["prefix_tokens"].value.data > 0:
                    a["prefix_tokens"] = d.to_attr(d.I, a["prefix_tokens"].value.data + int(round(extra)))
            elif a.get("prefix_shared") is not None and a["prefix_shared"].value.data and \
                    op.name in ("llm.call", "llm.prefill"):
                out = _output_of(op, by_node)
                prefix = 0 if k == 1 else int(round(min(new - growth + out, new - 1)))
                a["prefix_tokens"] = d.to_attr(d.I, max(0, prefix))
                if prefix > 0:
                    a["retain_ms"] = d.to_attr(d.F, wait)
            prefill = op.name in ("llm.call", "llm.prefill", "expert.tp_prefill") or (
                "phase" in a and a["phase"].data == "prefill")
            if prefill and op.name != "llm.call" and old > 0 and extra > 0:
                current = _resize(op, new / old, current)
        elif op.name == "llm.kv_transfer" and extra > 0:
            old = a["tokens"].value.data
            if old > 0:
                a["tokens"] = d.to_attr(d.I, int(round(old + extra)))
                a["kv_bytes"] = d.to_attr(d.I, int(round(a["kv_bytes"].value.data * (old + extra) / old)))
                current = _resize(op, (old + extra) / old, current)
        elif op.name == "comm.allreduce" and extra > 0 and a["phase"].data == "prefill":
            r = ratio.get(call, 1.0)
            a["bytes"] = d.to_attr(d.I, int(round(a["bytes"].value.data * r)))
            current = _resize(op, r, current)
    return current


def _output_of(op, by_node) -> float:
    """Output tokens of the call a prefill belongs to (its decode in the same copy)."""
    if "output_tokens" in op.attributes:
        return float(op.attributes["output_tokens"].value.data)
    node = op.attributes["node"].data
    dec = by_node.get(node.removesuffix(".prefill") + ".decode")
    return float(dec.attributes["output_tokens"].value.data) if dec is not None else 0.0


def _resize(op, ratio: float, current):
    """Rebuild op with its payload type scaled by ratio (xDSL types are immutable)."""
    t = op.results[0].type
    if not isinstance(t, (d.KvType, d.BytesType)) or ratio == 1.0:
        return current
    sizes = [max(0, int(round(v * ratio))) if v >= 0 else v for v in t.sizes()]
    new_type = d.kv(*sizes) if isinstance(t, d.KvType) else d.data(sizes[0])
    new = type(op).create(operands=list(op.operands), result_types=[new_type], attributes=dict(op.attributes))
    op.parent_block().insert_op_before(new, op)
    op.results[0].replace_all_uses_with(new.results[0])
    was = op.results[0]
    op.detach()
    op.erase()
    return new.results[0] if current is was else current


def _mark(op, prefix: str, reach: float, on_sla_path: bool) -> None:
    if "node" not in op.attributes:
        return
    op.attributes["node"] = StringAttr(f"{prefix}.{op.attributes['node'].data}")
    old = op.attributes.get("reach_probability")
    op.attributes["reach_probability"] = FloatAttr(reach * (old.value.data if old else 1.0), 64)
    old_path = op.attributes.get("sla_path")
    keep = on_sla_path and (old_path is None or old_path.value.data == 1)
    op.attributes["sla_path"] = IntegerAttr(int(keep), i64)


def unroll(module: ModuleOp) -> None:
    budget = [MAX_UNROLLED_OPS]
    for fn in module.ops:
        if not isinstance(fn, func.FuncOp):
            continue
        sla_it = fn.attributes.get("agent.sla_iterations")
        sla_iterations = sla_it.value.data if sla_it is not None else None
        has_sla = any("agent.sla_ms" in f.attributes for f in module.ops)  # sub-agents inline into it
        while True:
            loops = [op for op in fn.walk() if isinstance(op, scf.WhileOp)
                     and not any(isinstance(i, scf.WhileOp) for i in op.after_region.walk())]
            if not loops:
                break
            for loop in loops:
                _unroll_one(loop, sla_iterations, has_sla, budget)


@dataclass(frozen=True)
class UnrollPass(ModulePass):
    name = "unroll"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        unroll(op)


_ = d  # the loop condition op is agent.continue (hetagent.ir.dialects)
