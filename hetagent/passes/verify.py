"""`verify`: the module is well-formed: ops verify (sizes >= 0, SSA dominance), node names are unique
per function, every function call names a function of the module, and the graph is acyclic."""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from hetagent.errors import IRError
from hetagent.ir.dialects import OP_CLASSES


def verify(module: ModuleOp) -> None:
    try:
        module.verify()
    except VerifyException as e:
        raise IRError(f"IR does not verify: {str(e).strip().splitlines()[0]}") from None
    funcs = {f.sym_name.data for f in module.ops if isinstance(f, func.FuncOp)}
    if not funcs:
        raise IRError("IR has no workflow function (func.func)")
    for fn in module.ops:
        if not isinstance(fn, func.FuncOp):
            raise IRError(f"unexpected top-level op {fn.name}; only func.func")
        seen: set[str] = set()
        for op in fn.walk():
            if isinstance(op, func.CallOp) and op.callee.string_value() not in funcs:
                raise IRError(f"@{fn.sym_name.data}: call to unknown function "
                              f"@{op.callee.string_value()}")
            if type(op) in _LEAVES and op.name not in ("agent.join", "agent.output"):
                name = op.attributes["node"].data
                if name in seen and op.name != "agent.continue":
                    raise IRError(f"@{fn.sym_name.data}: two operations are named '{name}'")
                seen.add(name)


_LEAVES = set(OP_CLASSES.values())


@dataclass(frozen=True)
class VerifyPass(ModulePass):
    name = "verify"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        verify(op)
