"""From files to a Plan: load and compile the workflows, price them, place them.

    plan_sources(workflows, fleet=..., tco=..., ...) -> Plan     (no validation by simulation)
    p = planning_inputs(workflows, fleet, tco, catalog, profiles, precisions)   # price once ...
    plan_planning(p, rate=..., sla_ms=..., headroom=...) -> Plan              # ... solve many times

hetagent.api.plan adds the validation by simulation on top (the simulator is a later stage); the
runtime's re-planner calls plan_sources directly. Every stage used here sits above placement.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from hetagent.guarded import read_text
from hetagent.ir.build import build
from hetagent.ir.text import parse_module
from hetagent.passes.registry import DEFAULT_PIPELINE
from hetagent.passes.registry import run as run_passes
from hetagent.workflow import loader
from hetagent.workflow.model import Workflow

PLAN_PRECISIONS = ("fp16", "bf16")  # LLM precisions planned by default: no quantization


def compile_source(source):
    """A compiled module from a workflow, a workflow path or a compiled .mlir path."""
    if isinstance(source, (str, Path)) and str(source).endswith(".mlir"):
        return run_passes(parse_module(read_text(source, "mlir"), str(source)), "decompose,unroll")
    wf = source if isinstance(source, Workflow) else loader.load(source)
    return run_passes(build(wf), DEFAULT_PIPELINE)


def _source_record(source, module) -> dict:
    """What plan.json keeps of a workflow so that it can be solved again without the file."""
    name = next(iter(module.ops)).sym_name.data
    if isinstance(source, Workflow):
        return {"name": name, "file": source._source_file, "text": source._source_text,
                "format": "yaml"}
    path = Path(source)
    fmt = "mlir" if path.suffix == ".mlir" else "yaml"
    return {"name": name, "file": str(path), "text": read_text(path, "mlir" if fmt == "mlir" else "workflow"),
            "format": fmt}


@dataclass
class Planning:
    """What planning workflows on a fleet needs, computed once (the cost tables take seconds) and shared
    by every solve of them: validation rounds, sweeps, baselines. `cache` keeps the serving pools'
    replica candidates between solves."""
    sources: list
    modules: list
    graphs: list
    tables: list | None
    fleet: object
    tco: object
    devices: dict
    profiles: object
    inputs: dict
    cache: dict = field(default_factory=dict)
    servers: bool = False       # the fleet comes as server and instance types (the default catalog, no profiles)


def planning_inputs(workflows, fleet=None, tco="default", catalog=None, profiles=None,
                    precisions=None) -> Planning:
    """Load, compile and price the workflows; read the fleet and the economics."""
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.costmodel.operators import cost_table
    from hetagent.costmodel.profiles import load_profiles, profiles_cover
    from hetagent.costmodel.tco import load_tco
    from hetagent.ir.opgraph import extract
    precisions = PLAN_PRECISIONS if precisions is None else precisions
    sources = [workflows] if isinstance(workflows, (str, Path, Workflow)) else list(workflows)
    modules = [compile_source(s) for s in sources]
    graphs = [extract(run_passes(m, "decompose,unroll")) for m in modules]
    prof = load_profiles(profiles) if profiles else None
    fleet_obj = load_fleet(fleet) if fleet is not None else None
    if catalog is None:
        catalog = fleet_obj.catalog if fleet_obj is not None else "default"
    tco_params = load_tco(tco)
    devices, servers = priced_devices(fleet_obj, catalog, prof)
    tables = None
    if prof is None or not profiles_cover(graphs, prof):
        tables = [cost_table(g, devices, precisions=precisions) for g in graphs]
    inputs = {"workflows": [_source_record(s, m) for s, m in zip(sources, modules)],
              "fleet": _file_record(fleet_obj.path if fleet_obj else None, fleet),
              "tco": _file_record(tco_params.path if getattr(tco_params, "path", None) else None, tco),
              "catalog": catalog, "precisions": list(precisions) if precisions else None}
    return Planning(sources, modules, graphs, tables, fleet_obj, tco_params, devices, prof, inputs,
                    servers=servers)


def priced_devices(fleet_obj, catalog: str, profiles=None) -> tuple[dict, bool]:
    """The devices the cost tables price for this fleet, and whether the fleet comes as whole servers:
    the fleet's devices (no fleet: every catalog device that can be bought), and with server types the
    CPUs that host them (CPU-side pools run on the hosts' free cores)."""
    from hetagent.costmodel.fleet import buyable_devices, uses_servers
    devices = fleet_obj.resolve()[0] if fleet_obj is not None else buyable_devices(catalog)
    servers = uses_servers(catalog) and profiles is None
    if servers:
        devices = {**devices, **_host_cpus(devices, fleet_obj.mode if fleet_obj else "buy", catalog)}
    return devices, servers


def _host_cpus(devices: dict, mode: str, catalog: str) -> dict:
    """The catalog CPUs hosting the fleet's accelerators in their server (or instance) types: CPU-side
    pools run on those hosts' free cores, so the cost tables price them."""
    from hetagent.costmodel.devices import load_catalog
    from hetagent.costmodel.servers import load_instance_types, load_server_types
    cat = load_catalog(catalog)
    types = (load_instance_types if mode == "rent" else load_server_types)(None, {**cat, **devices})
    return {st.host_cpu: cat[st.host_cpu] for st in types.values()
            if st.accelerator in devices and st.host_cpu in cat and st.host_cpu not in devices}


def _file_record(path, given) -> dict | None:
    if given is None and path is None:
        return None
    rec = {"name": str(given) if given is not None else None, "file": str(path) if path else None}
    if path and Path(path).is_file():
        rec["text"] = read_text(path, "profiles")   # fleets, TCO files and profiles: already checked
    return rec


def plan_sources(workflows, *, fleet=None, tco="default", catalog=None, profiles=None, precisions=None,
                 **kwargs):
    """Place one or more workflows (paths, Workflows or compiled .mlir paths) on one fleet.

    fleet: a fleet name or file (configs/fleets; default: every catalog device may be bought);
    tco: a TCO name or file; profiles: a measured-profiles file overriding the cost model; the other
    keywords are plan_planning's. Returns a hetagent.placement.Plan; raises PlacementError explaining
    why when no plan exists. The plan is not validated by simulation (hetagent.api.plan does that)."""
    return plan_planning(planning_inputs(workflows, fleet, tco, catalog, profiles, precisions), **kwargs)


def with_headroom(graphs, sla_ms=None, rate=None, headroom: dict | None = None) -> list:
    """The graphs as they are solved: the user's SLA and rate overrides, times the headroom factors."""
    head = headroom or {}
    sf, rf = float(head.get("sla_factor", 1.0)), float(head.get("rate_factor", 1.0))
    return [replace(g, sla_ms=None if (sla_ms or g.sla_ms) is None else (sla_ms or g.sla_ms) * sf,
                    rate_rps=(rate or g.rate_rps) * rf) for g in graphs]


def plan_planning(p: Planning, *, rate=None, sla_ms=None, objective="tco", soft_sla_penalty=None,
                  time_limit_s=30.0, gap=1e-4, headroom: dict | None = None, with_baselines=True,
                  cross_vendor_kv: bool = False):
    """Place prepared workflows. headroom: {"sla_factor", "rate_factor"}: plan every workflow for its
    SLA x sla_factor at its rate x rate_factor (validation's margin); plan.json keeps the user's SLA
    and rate and `inputs.headroom`, and `predicted` states the user's SLA. cross_vendor_kv: let a prefill
    pool and its decode pool sit on devices of two vendors (no serving engine moves a KV cache between
    vendors today; the plan says so when it uses it)."""
    from hetagent.placement import place
    from hetagent.placement.annotate import placed_ir
    inputs = dict(p.inputs)
    head = {k: float(v) for k, v in (headroom or {}).items() if v is not None and float(v) != 1.0}
    sf, rf = head.get("sla_factor", 1.0), head.get("rate_factor", 1.0)
    planned = with_headroom(p.graphs, sla_ms, rate, head)
    inputs.update(sla_ms=sla_ms, rate=rate, headroom=head or None)
    result = place(planned, p.tables, p.fleet, p.tco, p.devices, soft_sla_penalty=soft_sla_penalty,
                   objective=objective, time_limit_s=time_limit_s, gap=gap, profiles=p.profiles, inputs=inputs,
                   with_baselines=with_baselines, cache=p.cache, cross_vendor_kv=cross_vendor_kv,
                   servers=p.servers)
    if head:                  # state the plan against the user's SLA; the headroom is in inputs
        pr = result.predicted
        if pr.get("sla_ms") is not None:
            pr["planned_sla_ms"] = pr["sla_ms"]
            pr["sla_ms"] = pr["sla_ms"] / sf
            pr["meets_sla"] = pr["end_to_end_ms"] <= pr["sla_ms"] + 1e-6
        if rf != 1.0:         # the fleet carries rate x rate_factor; what a request costs is at the user's
            t = result.tco
            for k in ("per_million_tokens", "per_request", "per_thousand_requests"):
                if t.get(k) is not None:
                    t[k] *= rf
    result.ir = placed_ir(p.modules, result.placements, qualified=len(p.graphs) > 1)
    for b in result.baselines:
        if b.plan is not None:
            b.plan.ir = placed_ir(p.modules, b.plan.placements, qualified=len(p.graphs) > 1)
    return result


def derated_planning(p: Planning, device: str, factor: float) -> Planning:
    """The same planning with every operator on `device` at `factor` x the cost model's rate (its times
    divided by factor): the pessimistic end of a device's interval without pricing every operator again.
    Rows without the device are the same objects, rows shared by several operators stay shared, and the
    cache is shared: it is keyed by the rows' identities, so the caller keeps the result alive while the
    cache lives (robustness checks hold every derated planning until they are done)."""
    from hetagent.costmodel.operators import derate_cost
    if p.tables is None:
        return p
    memo: dict = {}
    tables = []
    for g, table in zip(p.graphs, p.tables):
        kinds = {o.name: o.kind for o in g.operators}
        out = {}
        for name, row in table.items():
            if id(row) not in memo:
                touched = any(o.device == device and not isinstance(c, str) for o, c in row.items())
                memo[id(row)] = {o: (derate_cost(c, factor, kinds.get(name, "")) if o.device == device
                                     and not isinstance(c, str) else c) for o, c in row.items()} if touched else row
            out[name] = memo[id(row)]
        tables.append(out)
    return replace(p, tables=tables)
