"""`fuse`: merge adjacent CPU-only operators whose separation costs a transfer and buys no parallelism.

A CPU operator (tool.compute, compute.code, compute.fused) whose only user is another CPU operator that
has no other operand runs strictly before it: apart, they may land on different hosts and pay a
transfer; together they lose nothing. They become one `compute.fused` whose CPU time is the sum.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern

from hetagent.ir import dialects as d

CPU_ONLY = ("tool.compute", "compute.code", "compute.fused")
_CARRIED = ("reach_probability", "sla_path")


def _parts(op) -> list[str]:
    if op.name == "compute.fused":
        return [a.data for a in op.attributes["parts"].data]
    return [op.attributes["node"].data]


def fusable(producer, consumer) -> bool:
    return (producer.name in CPU_ONLY and consumer.name in CPU_ONLY
            and len(consumer.operands) == 1 and consumer.operands[0].owner is producer
            and len(producer.results) == 1 and len(list(producer.results[0].uses)) == 1
            and all(producer.attributes.get(k) == consumer.attributes.get(k) for k in _CARRIED))


class FuseCpuChain(RewritePattern):
    def match_and_rewrite(self, consumer, rewriter: PatternRewriter):
        if consumer.name not in CPU_ONLY or len(consumer.operands) != 1:
            return
        producer = consumer.operands[0].owner
        if not fusable(producer, consumer):
            return
        parts = _parts(producer) + _parts(consumer)
        fused = d.make("compute.fused", "+".join(parts), list(producer.operands),
                       consumer.results[0].type,
                       cpu_ms=producer.attributes["cpu_ms"].value.data +
                       consumer.attributes["cpu_ms"].value.data,
                       parts=ArrayAttr([StringAttr(p) for p in parts]))
        for k in _CARRIED:
            if k in consumer.attributes:
                fused.attributes[k] = consumer.attributes[k]
        rewriter.replace(consumer, fused)
        rewriter.erase(producer)


def fuse(module: ModuleOp) -> None:
    PatternRewriteWalker(FuseCpuChain(), apply_recursively=True).rewrite_module(module)


@dataclass(frozen=True)
class FusePass(ModulePass):
    name = "fuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fuse(op)
