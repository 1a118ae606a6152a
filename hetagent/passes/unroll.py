"""`unroll`: a loop of at most N iterations becomes N guarded copies of its body.

Copy k runs with the probability of reaching it. Iterations are geometric: the loop goes on with
probability q after each iteration, q chosen so that the expected count, capped at N, is the workflow's
`expected_iterations`: sum_{k=1..N} q^(k-1) = E. So copy k carries `reach_probability = q^(k-1)`; cost is
weighted by it. The SLA is checked on the path of the workflow's `sla_iterations` copies (default N):
copies beyond it carry `sla_path = 0`. Operators in copy k are renamed `<loop>.it<k>.<name>`.
Innermost loops unroll first, so nested copies multiply their probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func, scf
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from hetagent.ir import dialects as d


def continue_probability(expected: float, n: int) -> float:
    """q with sum_{k=0}^{n-1} q^k = expected (1 <= expected <= n), by bisection."""
    if n <= 1 or expected <= 1.0:
        return 0.0
    if expected >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        q = (lo + hi) / 2
        if sum(q ** k for k in range(n)) < expected:
            lo = q
        else:
            hi = q
    return (lo + hi) / 2


def reach_probabilities(expected: float, n: int) -> list[float]:
    q = continue_probability(expected, n)
    return [q ** k for k in range(n)]


def _unroll_one(loop: scf.WhileOp, sla_iterations: int | None) -> None:
    cond = next(op for op in loop.before_region.block.ops if op.name == "agent.continue")
    expected = cond.attributes["expected_iterations"].value.data
    n = cond.attributes["max_iterations"].value.data
    loop_name = loop.attributes["node"].data
    body = loop.after_region.block
    parent = loop.parent_block()
    current = loop.operands[0]
    sla_copies = n if sla_iterations is None else min(sla_iterations, n)
    for k, reach in enumerate(reach_probabilities(expected, n), start=1):
        mapper = {body.args[0]: current}
        for op in body.ops:
            if isinstance(op, scf.YieldOp):
                current = mapper.get(op.operands[0], op.operands[0])
                break
            new = op.clone(value_mapper=mapper)
            for inner in new.walk():
                _mark(inner, f"{loop_name}.it{k}", reach, k <= sla_copies)
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
    for fn in module.ops:
        if not isinstance(fn, func.FuncOp):
            continue
        sla_it = fn.attributes.get("agent.sla_iterations")
        sla_iterations = sla_it.value.data if sla_it is not None else None
        while True:
            loops = [op for op in fn.walk() if isinstance(op, scf.WhileOp)
                     and not any(isinstance(i, scf.WhileOp) for i in op.after_region.walk())]
            if not loops:
                break
            for loop in loops:
                _unroll_one(loop, sla_iterations)


@dataclass(frozen=True)
class UnrollPass(ModulePass):
    name = "unroll"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        unroll(op)


_ = d  # the loop condition op is agent.continue (hetagent.ir.dialects)
