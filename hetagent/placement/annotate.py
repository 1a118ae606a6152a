"""The placed IR: each operator of the module gets `place = #agent.place<device, tp, pp, batch,
replicas, precision>` from the plan. Several workflows share one module (their functions side by side).
An operator inside a sub-agent called from several places takes its first call site's placement."""
from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from hetagent.ir.dialects import PlaceAttr
from hetagent.ir.text import print_module


def placed_ir(modules: list[ModuleOp], placements, qualified: bool) -> str:
    """MLIR text of `modules` merged, operators annotated. `qualified`: plan names are "wf/op"."""
    by_name = {p.operator: p for p in placements}
    merged = ModuleOp([])
    for module in modules:
        module = module.clone()            # the callers' modules stay as they were (solved again later)
        main = next(iter(module.ops))
        wf = main.sym_name.data
        calls = {}  # function name -> the node name of its first call site (operator prefix)
        for fn in module.ops:
            for op in fn.walk():
                if isinstance(op, func.CallOp) and "node" in op.attributes:
                    calls.setdefault(op.callee.string_value(), op.attributes["node"].data + ".")
        for fn in list(module.ops):
            prefix = "" if fn is main else calls.get(fn.sym_name.data, "")
            for op in fn.walk():
                node = op.attributes.get("node")
                if node is None:
                    continue
                name = prefix + node.data
                p = by_name.get(f"{wf}/{name}" if qualified else name)
                if p is not None:
                    op.attributes["place"] = PlaceAttr.make(p.device, p.tp, p.pp, p.batch, p.replicas,
                                                            p.precision)
            fn.detach()
            merged.body.block.add_op(fn)
    return print_module(merged)
