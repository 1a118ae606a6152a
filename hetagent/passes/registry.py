"""Passes by name, and pipelines written as MLIR pass-pipeline strings ("verify,decompose,unroll,fuse")."""
from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.arg_spec import ArgSpecParseError

from hetagent.errors import HetagentError
from hetagent.ir.text import context
from hetagent.passes.decompose import DecomposePass
from hetagent.passes.fuse import FusePass
from hetagent.passes.unroll import UnrollPass
from hetagent.passes.verify import VerifyPass

DEFAULT_PIPELINE = "verify,decompose,unroll,fuse"
PASSES: dict[str, type[ModulePass]] = {p.name: p for p in (VerifyPass, DecomposePass, UnrollPass,
                                                          FusePass)}


def pipeline(spec: str = DEFAULT_PIPELINE) -> PassPipeline:
    spec = spec.strip()
    if spec.startswith("builtin.module(") and spec.endswith(")"):
        spec = spec[len("builtin.module("):-1]
    try:
        return PassPipeline.parse_spec({n: (lambda c=c: c) for n, c in PASSES.items()}, spec)
    except (ValueError, ArgSpecParseError) as e:
        msg = str(e).splitlines()[0]
        raise HetagentError(f"bad pass pipeline '{spec}': {msg}; passes: {', '.join(PASSES)}") from None


def run(module: ModuleOp, spec: str = DEFAULT_PIPELINE) -> ModuleOp:
    """Apply a pipeline in place and return the module."""
    pipeline(spec).apply(context(), module)
    return module
