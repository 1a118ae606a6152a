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


def plan(workflows, *, fleet=None, tco="default", catalog=None, profiles=None, rate=None,
         sla_ms=None, precisions=None, objective="tco", soft_sla_penalty=None,
         time_limit_s=30.0, gap=1e-4):
    """Place one or more workflows (paths, Workflows or compiled .mlir paths) on one fleet.

    fleet: a fleet name or file (configs/fleets; default: every catalog device may be bought);
    tco: a TCO name or file; profiles: a measured-profiles file overriding the cost model;
    precisions: LLM precisions allowed (default: fp16 and bf16, no quantization).
    Returns a hetagent.placement.Plan; raises PlacementError explaining why when no plan exists."""
    from hetagent.placement.pipeline import plan_sources
    return plan_sources(workflows, fleet=fleet, tco=tco, catalog=catalog, profiles=profiles, rate=rate,
                        sla_ms=sla_ms, precisions=precisions, objective=objective,
                        soft_sla_penalty=soft_sla_penalty, time_limit_s=time_limit_s, gap=gap)


def sweep_sla(workflows, *, points: int = 8, slas=None, fleet=None, tco="default", catalog=None,
              profiles=None, rate=None, precisions=None, time_limit_s=30.0, gap=1e-4):
    """The TCO-versus-SLA Pareto curve: [{sla_ms, feasible, status, per_hour, end_to_end_ms}]."""
    from hetagent.placement import build_problem
    from hetagent.placement.pareto import pareto
    from hetagent.placement.pipeline import planning_inputs
    (_, _, graphs, tables, fleet_obj, tco_params, devices, prof,
     _) = planning_inputs(workflows, fleet, tco, catalog, profiles, precisions)
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
    """Run a plan in virtual time against Poisson, bursty or trace arrivals (hetagent.simulator.engine):
    requests, completed, latency_ms {p50, p95, p99}, sla_attainment, per-stage and per-pool figures."""
    from hetagent.simulator.commands import simulate as _simulate
    return _simulate(plan, **kwargs)


def validate_plan(workflows, given=None, *, seed: int = 0, duration_s: float | None = None,
                  arrivals: str = "poisson", arrival_params: dict | None = None, max_rounds: int = 6,
                  plan_kwargs: dict | None = None, log=None) -> dict:
    """Simulate a plan; while the SLA percentile fails, re-plan with more headroom.

    Two kinds of headroom, chosen from what the simulation shows:
    - capacity: when a pool runs hot (utilization >= 0.85) and requests spend more than 5% of their time
      queueing, the planner's rate is raised by 25% (more replicas), while the simulation keeps the
      offered rate;
    - latency: otherwise the SLA given to the planner is shrunk by the observed excess plus 2%:
      sla_planned x min(SLA / simulated percentile, 0.95) x 0.98.
    Stops when the simulated percentile holds, the planner finds no plan, or after max_rounds.
    Returns {"plan": the final Plan, "holds", "sla_ms", "rate", "rounds": [{sla_planned_ms,
    rate_planned, per_hour, predicted_ms, simulated_ms, attainment, meets, headroom}],
    "headroom_cost_per_hour", "headroom_cost_fraction", "simulation": the final simulate() dict}."""
    import math
    import sys
    from hetagent.errors import PlacementError
    from hetagent.simulator import model as sim_model
    from hetagent.simulator.commands import _ms
    from hetagent.simulator.commands import simulate as _simulate
    kw = dict(plan_kwargs or {})
    ap = dict(arrival_params or {})
    say = log or (lambda s: print(s, file=sys.stderr))
    current = given if given is not None else plan(workflows, **kw)
    base = current
    m0 = sim_model.build(current)
    sla = m0.sla_ms
    rate = m0.rate_rps
    sim = _simulate(current, rate=rate, duration_s=duration_s, seed=seed, arrivals=arrivals, model=m0, **ap)
    planned, planned_rate = kw.get("sla_ms") or sla, kw.get("rate") or rate
    rounds = [_round(planned, planned_rate, current, sim, None)]
    if not sla:
        say("validate: the plan carries no SLA; nothing to validate")
    while sla and not sim["meets_sla"] and len(rounds) <= max_rounds:
        got = sim["latency_at_sla_percentile_ms"] or math.inf
        hot = max((p["utilization"] or 0.0) for p in sim["pools"].values()) if sim["pools"] else 0.0
        waited = sum(p["mean_wait_ms"] * p["executions"] for p in sim["pools"].values())
        per_req = (sim["latency_ms"]["mean"] or 0.0) * max(sim["completed"], 1)
        if hot >= 0.85 and (not math.isfinite(got) or waited > 0.05 * per_req):
            planned_rate *= 1.25
            what = f"capacity: planning for {planned_rate:.4g} req/s"
        else:
            planned *= min(sla / got, 0.95) * 0.98 if math.isfinite(got) else 0.8
            what = f"latency: planning for an SLA of {planned:.1f} ms"
        say(f"validate: simulated p{sim['sla_percentile']:g} {_ms(got)} vs SLA {sla:g} ms; headroom {what}")
        try:
            current = plan(workflows, **{**kw, "sla_ms": planned, "rate": planned_rate})
        except PlacementError as e:
            say(f"validate: no plan with that headroom: {e}")
            break
        # the new plan carries the headroom; judge it at the user's rate and SLA
        sim = _simulate(current, rate=rate, duration_s=duration_s, seed=seed, arrivals=arrivals, sla_ms=sla, **ap)
        rounds.append(_round(planned, planned_rate, current, sim, what))
    extra = current.tco["per_hour"] - base.tco["per_hour"]
    return {"plan": current, "holds": bool(sim["meets_sla"]) if sla else True, "rounds": rounds, "sla_ms": sla,
            "rate": rate, "headroom_cost_per_hour": extra,
            "headroom_cost_fraction": extra / base.tco["per_hour"] if base.tco["per_hour"] else None,
            "simulation": sim}


def _round(planned, planned_rate, plan, sim, headroom) -> dict:
    return {"sla_planned_ms": planned, "rate_planned": planned_rate, "per_hour": plan.tco["per_hour"],
            "predicted_ms": plan.predicted.get("end_to_end_ms"),
            "simulated_ms": sim.get("latency_at_sla_percentile_ms"),
            "attainment": sim.get("sla_attainment"), "meets": sim.get("meets_sla"), "headroom": headroom}




def __getattr__(name):
    if name == "Client":  # the HTTP client of `hetagent serve`; imported on use (needs httpx)
        from hetagent.runtime.client import Client
        return Client
    raise AttributeError(name)
