"""The public Python API. The CLI is a thin layer over these functions.

    import hetagent
    wf = hetagent.load("configs/workflows/voice_agent.yaml")
    module = hetagent.compile(wf)                 # decomposed, unrolled, fused MLIR module
    print(hetagent.to_mlir(module))
"""
from __future__ import annotations

from pathlib import Path

from hetagent.ir.build import build
from hetagent.ir.text import parse_module, print_module
from hetagent.passes.registry import DEFAULT_PIPELINE, run
from hetagent.workflow import loader
from hetagent.workflow.builder import WorkflowBuilder
from hetagent.workflow.model import Workflow

__all__ = ["load", "compile", "to_mlir", "parse_mlir", "WorkflowBuilder", "Workflow", "DEFAULT_PIPELINE"]


def load(path: str | Path, *, self_host: dict[str, str] | None = None, config_dir=None) -> Workflow:
    """Read a workflow file: native YAML or a Dify export (YAML or JSON)."""
    return loader.load(path, self_host=self_host, config_dir=config_dir)


def compile(workflow: Workflow | str | Path, passes: str = DEFAULT_PIPELINE):  # noqa: A001
    """Workflow (or a path to one) -> MLIR module after the pass pipeline (an xDSL ModuleOp)."""
    if not isinstance(workflow, Workflow):
        workflow = load(workflow)
    return run(build(workflow), passes)


def to_mlir(module, generic: bool = False) -> str:
    return print_module(module, generic=generic)


def parse_mlir(text: str, file: str = "<string>"):
    return parse_module(text, file)
