"""Lowering and compilation: torch module -> linalg MLIR (torch-mlir) -> IREE .vmfb, or -> ONNX."""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from importlib import metadata

from hetagent.backends.codegen.layer import Graph
from hetagent.backends.codegen.targets import Target
from hetagent.errors import HetagentError


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes an asset (part of the cache key)."""
    out = {}
    for pkg in ("iree-base-compiler", "torch-mlir", "torch", "onnx"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _need(module: str, package: str, what: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise HetagentError(f"{what} needs the package '{package}'; install it with "
                            f"`pip install {package}`") from e


def _torch_args(graph: Graph):
    import numpy as np
    import torch
    ins = [torch.from_numpy(a) for a in graph.sample_inputs()]
    # zeros of the right shapes suffice for tracing: weights never shape the graph
    ws = [torch.from_numpy(np.zeros(w.shape, dtype=w.dtype)) for w in graph.weights]
    return ins, ws


def lower_to_linalg(graph: Graph) -> str:
    """torch.export the reference module and lower it with torch-mlir to linalg-on-tensors MLIR text.

    The function is `@main(inputs..., weights...)`: weights are parameters, not constants."""
    _need("torch_mlir.fx", "torch-mlir", "code generation (torch -> linalg)")
    from torch_mlir import fx
    ins, ws = _torch_args(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = fx.export_and_import(graph.module, *ins, *ws, output_type="linalg-on-tensors",
                                          func_name="main")
        except Exception as e:   # torch.export or torch-mlir could not lower a construct
            raise HetagentError(f"torch-mlir could not lower {graph.kind} ({graph.model}): "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return str(module)


def compile_iree(mlir_text: str, target: Target) -> bytes:
    """Compile linalg MLIR for one IREE target; a compiler error raises HetagentError with its first
    diagnostic."""
    _need("iree.compiler", "iree-base-compiler", "code generation (IREE)")
    import iree.compiler as ic
    try:
        return ic.compile_str(mlir_text, target_backends=[target.iree_backend],
                              extra_args=target.iree_flags())
    except Exception as e:
        text = str(e)
        diag = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() and "invoking" not in ln.lower()
                and not ln.lower().startswith("error code")]
        raise HetagentError(f"IREE could not compile for {target.name}: "
                            f"{diag[0] if diag else text.splitlines()[0] if text else type(e).__name__}") from e


def export_onnx(graph: Graph, path: str, opset: int = 17) -> None:
    """Export the reference module to ONNX with weights as graph inputs (bound at load time)."""
    _need("onnx", "onnx", "the ONNX fallback")
    import torch
    ins, ws = _torch_args(graph)
    names = [t.name for t in graph.inputs] + [w.name for w in graph.weights]
    tmp = f"{path}.tmp"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph.module, tuple(ins + ws), tmp, dynamo=False, input_names=names,
                              output_names=[t.name + ("_out" if t.name in names else "") for t in graph.outputs],
                              opset_version=opset, do_constant_folding=True)
        except Exception as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise HetagentError(f"ONNX export of {graph.kind} ({graph.model}) failed: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    os.replace(tmp, path)
