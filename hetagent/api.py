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

__all__ = ["load", "compile", "to_mlir", "parse_mlir", "operator_graph", "estimate", "cost",
           "WorkflowBuilder", "Workflow", "DEFAULT_PIPELINE"]


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


def operator_graph(source):
    """The operator graph (hetagent.ir.opgraph.OpGraph) of a workflow, a path, or a module.

    A compiled .mlir path is parsed; missing `decompose` and `unroll` are applied (they are no-ops on
    a module that already had them)."""
    from hetagent.ir.opgraph import extract
    if isinstance(source, (str, Path)) and str(source).endswith(".mlir"):
        module = parse_module(Path(source).read_text(), str(source))
    elif isinstance(source, (str, Path, Workflow)):
        module = compile(source)
    else:
        module = source
    return extract(run(module, "decompose,unroll"))


def estimate(model: str, device: str, op: str, **kwargs) -> dict:
    """Latency, throughput, memory, power and bound of one LLM phase on one device option."""
    from hetagent.costmodel.estimate import estimate as _estimate
    return _estimate(model, device, op, **kwargs)


def cost(source, devices: list[str] | None = None, catalog: str = "default") -> dict:
    """Every operator of a workflow on every device: the cheapest-latency feasible option per device.

    Returns {"workflow", "catalog", "operators": [{operator, kind, weight, devices: {device:
    {latency_ms, option, bound, memory_gb} | {"infeasible": reason}}}]}."""
    from hetagent.costmodel.devices import load_catalog
    from hetagent.costmodel.operators import cost_table
    from hetagent.errors import unknown_choice
    graph = operator_graph(source)
    known = load_catalog(catalog)
    for dev in devices or []:
        if dev not in known:
            raise unknown_choice("device", dev, known)
    table = cost_table(graph, catalog, devices)
    rows = []
    for op in graph.operators:
        per_device: dict[str, dict] = {}
        for option, c in table[op.name].items():
            entry = per_device.get(option.device)
            if isinstance(c, str):
                per_device.setdefault(option.device, {"infeasible": c})
            elif entry is None or "infeasible" in entry or c.latency_ms < entry["latency_ms"]:
                per_device[option.device] = {"latency_ms": round(c.latency_ms, 4), "option": option.label(),
                                             "bound": c.bound, "memory_gb": round(c.memory_gb, 3)}
        rows.append({"operator": op.name, "kind": op.kind, "weight": round(op.weight, 4),
                     "devices": per_device})
    return {"workflow": graph.workflow, "catalog": catalog, "operators": rows}
