"""`unroll`: a loop of at most N iterations becomes N guarded copies of its body.

Copy k runs with the probability of reaching it. Iterations are geometric: the loop goes on with
probability q after each iteration, q chosen so that the expected count, capped at N, is the workflow's
`expected_iterations`: sum_{k=1..N} q^(k-1) = E. So copy k carries `reach_probability = q^(k-1)`; cost is
weighted by it. The SLA is checked on the path of the workflow's `sla_iterations` copies (default N):
copies beyond it carry `sla_path = 0`. Operators in copy k are renamed `<loop>.it<k>.<name>`.
Innermost loops unroll first, so nested copies multiply their probabilities.

Huge loops are folded, never materialized: when N exceeds MAX_LOOP_COPIES, only the copies on the SLA
path and those reached with probability >= TAIL_PROBABILITY are made (at most MAX_LOOP_COPIES); one more
copy, `it<K+1>`, stands for the whole tail K+1..N: its `reach_probability` is the tail's expected number
of executions, sum_{k>K} q^(k-1) (it may exceed 1), so cost and load stay exact in expectation. A loop
whose SLA path alone needs more than MAX_LOOP_COPIES copies cannot be checked and is refused.
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


def _unroll_one(loop: scf.WhileOp, sla_iterations: int | None, has_sla: bool, budget: list[int]) -> None:
    """Unrolls one loop; `budget` holds the operations the module's copies may still add."""
    cond = next(op for op in loop.before_region.block.ops if op.name == "agent.continue")
    expected = cond.attributes["expected_iterations"].value.data
    n = cond.attributes["max_iterations"].value.data
    loop_name = loop.attributes["node"].data
    body = loop.after_region.block
    parent = loop.parent_block()
    current = loop.operands[0]
    sla_copies = n if sla_iterations is None else min(sla_iterations, n)
    try:
        k_made = materialized_copies(expected, n, sla_copies if has_sla else 0)
    except IRError as e:
        raise IRError(f"loop '{loop_name}': {e}") from None
    q = continue_probability(expected, n)
    copies = [(k, q ** (k - 1), k <= sla_copies) for k in range(1, k_made + 1)]
    if k_made < n:   # the folded tail, off the SLA path (every SLA copy is among the first k_made)
        copies.append((k_made + 1, tail_weight(expected, n, k_made), False))
    adds = sum(1 for _ in body.walk()) * len(copies)
    if adds > budget[0]:
        raise IRError(f"loop '{loop_name}': unrolling its {len(copies)} copies would pass "
                      f"{MAX_UNROLLED_OPS} operations in all (nested loops multiply); lower "
                      f"max_iterations or expected_iterations")
    budget[0] -= adds
    for k, reach, on_path in copies:
        mapper = {body.args[0]: current}
        for op in body.ops:
            if isinstance(op, scf.YieldOp):
                current = mapper.get(op.operands[0], op.operands[0])
                break
            new = op.clone(value_mapper=mapper)
            for inner in new.walk():
                _mark(inner, f"{loop_name}.it{k}", reach, on_path)
            parent.insert_op_before(new, loop)
    loop.results[0].replace_all_uses_with(current)
    loop.detach()
    loop.erase()


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
