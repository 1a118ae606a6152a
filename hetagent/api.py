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
from hetagent.passes.registry import DEFAULT_PIPELINE
from hetagent.passes.registry import run as run_passes
from hetagent.workflow import loader
from hetagent.workflow.builder import WorkflowBuilder
from hetagent.workflow.model import Workflow

__all__ = ["load", "compile", "to_mlir", "parse_mlir", "operator_graph", "estimate", "cost", "plan",
           "sweep_sla", "report", "run", "simulate", "validate_plan", "Client", "WorkflowBuilder", "Workflow", "DEFAULT_PIPELINE"]

PLAN_PRECISIONS = ("fp16", "bf16")  # LLM precisions planned by default: no quantization


def load(path: str | Path, *, self_host: dict[str, str] | None = None, config_dir=None) -> Workflow:
    """Read a workflow file: native YAML or a Dify export (YAML or JSON)."""
    return loader.load(path, self_host=self_host, config_dir=config_dir)


def compile(workflow: Workflow | str | Path, passes: str = DEFAULT_PIPELINE):  # noqa: A001
    """Workflow (or a path to one) -> MLIR module after the pass pipeline (an xDSL ModuleOp)."""
    if not isinstance(workflow, Workflow):
        workflow = load(workflow)
    return run_passes(build(workflow), passes)


def to_mlir(module, generic: bool = False) -> str:
    return print_module(module, generic=generic)


def parse_mlir(text: str, file: str = "<string>"):
    return parse_module(text, file)


def _module(source):
    """A compiled module from a workflow, a workflow path or a compiled .mlir path."""
    if isinstance(source, (str, Path)) and str(source).endswith(".mlir"):
        return run_passes(parse_module(Path(source).read_text(), str(source)), "decompose,unroll")
    return compile(source)


def _source_record(source, module) -> dict:
    """What plan.json keeps of a workflow so that it can be solved again without the file."""
    name = next(iter(module.ops)).sym_name.data
    if isinstance(source, Workflow):
        return {"name": name, "file": source._source_file, "text": source._source_text,
                "format": "yaml"}
    path = Path(source)
    fmt = "mlir" if path.suffix == ".mlir" else "yaml"
    return {"name": name, "file": str(path), "text": path.read_text(), "format": fmt}


def _planning_inputs(workflows, fleet, tco, catalog, profiles, precisions):
    """Everything `plan` and `sweep_sla` share: graphs, modules, cost tables and economics."""
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.costmodel.operators import cost_table
    from hetagent.costmodel.profiles import load_profiles, profiles_cover
    from hetagent.costmodel.tco import load_tco
    from hetagent.ir.opgraph import extract
    sources = [workflows] if isinstance(workflows, (str, Path, Workflow)) else list(workflows)
    modules = [_module(s) for s in sources]
    graphs = [extract(run_passes(m, "decompose,unroll")) for m in modules]
    prof = load_profiles(profiles) if profiles else None
    fleet_obj = load_fleet(fleet) if fleet is not None else None
    if catalog is None:
        catalog = fleet_obj.catalog if fleet_obj is not None else "default"
    tco_params = load_tco(tco)
    devices = {}
    if fleet_obj is not None:
        devices, _, _ = fleet_obj.resolve()
    else:
        from hetagent.costmodel.devices import load_catalog
        devices = load_catalog(catalog)
    tables = None
    if prof is None or not profiles_cover(graphs, prof):
        tables = [cost_table(g, devices, precisions=precisions) for g in graphs]
    inputs = {"workflows": [_source_record(s, m) for s, m in zip(sources, modules)],
              "fleet": _file_record(fleet_obj.path if fleet_obj else None, fleet),
              "tco": _file_record(tco_params.path if getattr(tco_params, "path", None) else None, tco),
              "catalog": catalog, "precisions": list(precisions) if precisions else None}
    return sources, modules, graphs, tables, fleet_obj, tco_params, devices, prof, inputs


def _file_record(path, given) -> dict | None:
    if given is None and path is None:
        return None
    rec = {"name": str(given) if given is not None else None, "file": str(path) if path else None}
    if path and Path(path).is_file():
        rec["text"] = Path(path).read_text()
    return rec


def plan(workflows, *, fleet=None, tco="default", catalog=None, profiles=None, rate=None,
         sla_ms=None, precisions=PLAN_PRECISIONS, objective="tco", soft_sla_penalty=None,
         time_limit_s=30.0, gap=1e-4):
    """Place one or more workflows (paths, Workflows or compiled .mlir paths) on one fleet.

    fleet: a fleet name or file (configs/fleets; default: every catalog device may be bought);
    tco: a TCO name or file; profiles: a measured-profiles file overriding the cost model.
    Returns a hetagent.placement.Plan; raises PlacementError explaining why when no plan exists."""
    from hetagent.placement import place
    from hetagent.placement.annotate import placed_ir
    (sources, modules, graphs, tables, fleet_obj, tco_params, devices, prof,
     inputs) = _planning_inputs(workflows, fleet, tco, catalog, profiles, precisions)
    result = place(graphs, tables, fleet_obj, tco_params, devices, sla_ms=sla_ms, rate=rate,
                   soft_sla_penalty=soft_sla_penalty, objective=objective, time_limit_s=time_limit_s,
                   gap=gap, profiles=prof, inputs=inputs)
    result.ir = placed_ir(modules, result.placements, qualified=len(graphs) > 1)
    return result


def sweep_sla(workflows, *, points: int = 8, slas=None, fleet=None, tco="default", catalog=None,
              profiles=None, rate=None, precisions=PLAN_PRECISIONS, time_limit_s=30.0, gap=1e-4):
    """The TCO-versus-SLA Pareto curve: [{sla_ms, feasible, status, per_hour, end_to_end_ms}]."""
    from hetagent.placement import build_problem
    from hetagent.placement.pareto import pareto
    (_, _, graphs, tables, fleet_obj, tco_params, devices, prof,
     _) = _planning_inputs(workflows, fleet, tco, catalog, profiles, precisions)
    pb = build_problem(graphs, tables, fleet_obj, tco_params, devices, rate=rate, profiles=prof)
    return pareto(pb, slas=slas, points=points, time_limit_s=time_limit_s, gap=gap)


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
    return extract(run_passes(module, "decompose,unroll"))


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


def report(plan, fmt: str | None = None, out=None, **kwargs):
    """The TCO report of a plan (a Plan, plan.json path, text or dict): HTML, Markdown or JSON.
    Writes `out` when given; returns the text (html, md) or the report model (json)."""
    from hetagent.report import report as _report
    return _report(plan, fmt, out, **kwargs)


def run(plan, **kwargs) -> dict:
    """Deploy a plan on Ray (embedded, or an existing cluster with address=...) and send requests;
    returns the run report (requests, completed, failed, refused, lost, latency_ms, sla_attainment, ...)."""
    from hetagent.runtime.commands import run as _run
    return _run(plan, **kwargs)


def simulate(plan, **kwargs) -> dict:
    """Run a plan in virtual time against Poisson, bursty or trace arrivals (hetagent.runtime.simulator):
    requests, completed, latency_ms {p50, p95, p99}, sla_attainment, per-stage and per-pool figures."""
    from hetagent.runtime.sim_commands import simulate as _simulate
    return _simulate(plan, **kwargs)


def validate_plan(workflows, plan=None, **kwargs) -> dict:
    """Simulate a plan and, while its SLA percentile fails, re-plan with more headroom; returns the
    final plan, whether it holds, the rounds and what the headroom costs."""
    from hetagent.runtime.sim_commands import validate_plan as _validate
    return _validate(workflows, plan, **kwargs)


def __getattr__(name):
    if name == "Client":  # the HTTP client of `hetagent serve`; imported on use (needs httpx)
        from hetagent.runtime.client import Client
        return Client
    raise AttributeError(name)
