"""`fuse`: merge adjacent CPU-only operators whose separation costs a transfer and buys no parallelism.

A CPU operator (tool.compute, compute.code, compute.fused) whose only user is another CPU operator that
has no other operand runs strictly before it: apart, they may land on different hosts and pay a
transfer; together they lose nothing. They become one `compute.fused` whose CPU time is the sum.
A code node with its own `source` never fuses: the runtime runs that source, each in its sandbox.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.passes import ModulePass

from hetagent.ir import dialects as d

CPU_ONLY = ("tool.compute", "compute.code", "compute.fused")
_CARRIED = ("reach_probability", "sla_path")


def _parts(op) -> list[str]:
    if op.name == "compute.fused":
        return [a.data for a in op.attributes["parts"].data]
    return [op.attributes["node"].data]


def fusable(producer, consumer) -> bool:
    return (producer.name in CPU_ONLY and consumer.name in CPU_ONLY
            and "source" not in producer.attributes and "source" not in consumer.attributes
            and len(consumer.operands) == 1 and consumer.operands[0].owner is producer
            and len(producer.results) == 1 and len(list(producer.results[0].uses)) == 1
            and all(producer.attributes.get(k) == consumer.attributes.get(k) for k in _CARRIED))


def _next_in_chain(op):
    """The one user of `op` when the two fuse, else None."""
    if getattr(op, "name", None) not in CPU_ONLY or len(op.results) != 1:   # a block argument's
        return None                                                          # owner is a Block
    uses = list(op.results[0].uses)
    if len(uses) != 1:
        return None
    consumer = uses[0].operation
    return consumer if fusable(op, consumer) else None


def _fuse_block(block) -> None:
    """Every maximal chain in the block becomes one compute.fused, built once (linear in the chain's
    length; fusing pair by pair copied the growing list of parts at every step)."""
    heads = [op for op in block.ops if op.name in CPU_ONLY and _next_in_chain(op) is not None
             and not (len(op.operands) == 1 and _next_in_chain(op.operands[0].owner) is op)]
    for head in heads:
        chain = [head]
        while (nxt := _next_in_chain(chain[-1])) is not None:
            chain.append(nxt)
        tail = chain[-1]
        parts = [p for op in chain for p in _parts(op)]
        fused = d.make("compute.fused", "+".join(parts), list(head.operands), tail.results[0].type,
                       cpu_ms=sum(op.attributes["cpu_ms"].value.data for op in chain),
                       parts=ArrayAttr([StringAttr(p) for p in parts]))
        for k in _CARRIED:
            if k in tail.attributes:
                fused.attributes[k] = tail.attributes[k]
        block.insert_op_before(fused, tail)
        tail.results[0].replace_all_uses_with(fused.results[0])
        for op in reversed(chain):
            op.detach()
            op.erase()


def fuse(module: ModuleOp) -> None:
    blocks = [block for op in module.walk() for region in op.regions for block in region.blocks]
    for block in blocks:
        _fuse_block(block)


@dataclass(frozen=True)
class FusePass(ModulePass):
    name = "fuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fuse(op)
