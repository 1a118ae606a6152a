"""The Plan: what placement hands to the backends, runtime and report, serialized as plan.json.

Keys (ARCHITECTURE.md, "Interfaces every stage keeps"; docs/architecture.md repeats them): version;
workflows; fleet {device: count}; pools [{id, model, kind, engine, engine_id, device, tp, pp, precision,
kv_precision, batch, max_batch, replicas, operators, load_rps, latency_ms, tbt_ms, memory_gb, kv_retention,
retained_gb, prefill_saved_share, retained_requests, wait_ms, utilization}];
placements [{operator, kind, device, tp, pp, batch, replicas, precision, latency_ms, bound, pool,
calibration_status, latency_interval_ms, service_ms}];
predicted {end_to_end_ms, per_stage_ms, sla_ms, meets_sla, percentile, p50_ms, p95_ms, p99_ms,
validated}; tco {per_hour, per_million_tokens, per_request, per_thousand_requests, breakdown {device:
{capex, power, opex}}}; baselines [{device, feasible, tco {per_hour, per_request}}]; solver {status,
gap, seconds}; ir; inputs.
With several workflows, operator names are qualified "workflow/operator" and predicted holds the
worst workflow (largest end-to-end latency relative to its SLA); meets_sla is true only if all meet.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

VERSION = 1


@dataclass
class Placement:
    operator: str
    kind: str
    device: str
    tp: int
    pp: int
    batch: int
    replicas: int
    precision: str
    latency_ms: float
    bound: str
    pool: str | None = None     # the id of the serving pool that runs it (None: not placed, a KV hand-off)
    calibration_status: str | None = None   # measured | calibrated | datasheet (costmodel/uncertainty.py)
    latency_interval_ms: list | None = None # [low, high]: latency_ms scaled by its status's interval
    service_ms: float | None = None  # one execution in its slot at the batch, queueing excluded (latency_ms
                                     # adds the pool's wait): what an emulated operator holds its slot for


@dataclass
class Pool:
    """One engine configuration serving the summed load of its operators. A co-located engine appears
    twice (its prefill and its decode entries) with engine "colocated" and one engine_id."""
    id: str
    model: str | None           # model id; None for kinds without one (tools, code, vector search)
    kind: str                   # IR op name of its phase, e.g. llm.decode
    engine: str                 # colocated | prefill | decode | single
    engine_id: str
    device: str
    tp: int
    pp: int
    precision: str
    kv_precision: str | None
    batch: int                  # requests in flight per replica that the load fills (Little's law)
    max_batch: int              # slots per replica
    replicas: int
    operators: list
    load_rps: float             # executions per second over all its operators
    latency_ms: float           # one whole execution at `batch` (decode: all output tokens), load-weighted
    tbt_ms: float | None        # decode: one step at the longest context; else None
    memory_gb: float            # per device of one replica (retained KV included)
    calibration_status: str | None = None
    latency_interval_ms: list | None = None  # [low, high] of latency_ms by its status's interval
    kv_retention: str | None = None    # LLM pools: none | resident | offload (KV kept across tool calls)
    retained_gb: float | None = None   # LLM pools: KV held for requests waiting on tools, per device
    prefill_saved_share: float | None = None   # LLM pools: share of prompt tokens not recomputed
    retained_requests: int | None = None       # LLM pools: requests that reservation holds, per replica
    wait_ms: float | None = None       # mean wait for a slot per execution at the load (Erlang C): the
                                       # queueing the plan priced (its placements' latency_ms include it)
    utilization: float | None = None   # busy share of the replicas at the load


@dataclass
class Baseline:
    device: str
    feasible: bool
    per_hour: float | None
    per_request: float | None
    end_to_end_ms: float | None = None      # not in plan.json; for summaries and tests
    note: str = ""                          # not in plan.json
    outcome: object = field(default=None, repr=False, compare=False)  # the solve (feasible ones)
    plan: object = field(default=None, repr=False, compare=False)     # its Plan, for validation
    validated: dict | None = None           # {holds, percentile_ms, requests} when simulated

    def to_json(self) -> dict:
        d = {"device": self.device, "feasible": self.feasible,
             "tco": {"per_hour": self.per_hour, "per_request": self.per_request}}
        if self.validated is not None:
            d["validated"] = dict(self.validated)
        return d


@dataclass
class Plan:
    workflows: list[str]
    fleet: dict[str, int]
    placements: list[Placement]
    predicted: dict
    tco: dict
    baselines: list[Baseline] = field(default_factory=list)
    solver: dict = field(default_factory=dict)
    ir: str = ""
    inputs: dict = field(default_factory=dict)
    version: int = VERSION
    pools: list[Pool] = field(default_factory=list)
    deployment: dict = field(default_factory=dict)   # {mode, servers: [...]}: every replica on a device
    robustness: list = field(default_factory=list)   # does the recommendation survive a slower device
    validation: dict | None = field(default=None, repr=False, compare=False)  # api.validate_plan's result

    def to_json(self) -> dict:
        return {"version": self.version, "workflows": list(self.workflows), "fleet": dict(self.fleet),
                "pools": [asdict(p) for p in self.pools], "deployment": self.deployment,
                "robustness": list(self.robustness),
                "placements": [asdict(p) for p in self.placements], "predicted": self.predicted,
                "tco": self.tco, "baselines": [b.to_json() for b in self.baselines],
                "solver": self.solver, "ir": self.ir, "inputs": self.inputs}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, d: dict | str) -> "Plan":
        if isinstance(d, str):
            d = json.loads(d)
        if d.get("version") != VERSION:
            from hetagent.errors import InputError
            raise InputError(f"plan version {d.get('version')!r} is not supported (expected {VERSION})",
                             field="version")
        bl = [Baseline(b["device"], b["feasible"], b["tco"].get("per_hour"), b["tco"].get("per_request"),
                       validated=b.get("validated")) for b in d.get("baselines", [])]
        return cls(d["workflows"], d["fleet"], [Placement(**_known(Placement, p)) for p in d["placements"]],
                   d["predicted"], d["tco"], bl, d.get("solver", {}), d.get("ir", ""), d.get("inputs", {}),
                   d["version"], [Pool(**_known(Pool, p)) for p in d.get("pools") or []],
                   d.get("deployment") or {}, list(d.get("robustness") or []))


def _known(cls, record: dict) -> dict:
    """The keys of `record` that `cls` has: plan.json may carry keys this version does not know."""
    names = cls.__dataclass_fields__
    return {k: v for k, v in record.items() if k in names}


def _money(v):
    if v is None:
        return "-"
    return f"${v:,.2f}" if abs(v) >= 1 else f"${v:.6f}".rstrip("0").rstrip(".")


def bill_lines(deployment: dict) -> list[str]:
    """One line per server or instance type of the deployment: count, contents, unit $/hour, what it is."""
    out = []
    for r in (deployment or {}).get("bill") or []:
        what = f"{r['accelerators']} x {r['device']}" if r["accelerators"] else f"{r['device']} sockets (CPU-only)"
        unit = r["usd_per_hour"]
        parts = ", ".join(f"{k} {_money(unit[k])}" for k in ("accelerators", "host", "network", "power", "facility",
                                                             "support") if unit.get(k))
        out.append(f"  {r['servers']} x {r['type']} ({r['kind']}: {what}) at {_money(unit['total'])}/hour each"
                   + (f" [{parts}]" if parts and r["kind"] != "instance" else "")
                   + (f"; {r['note']}" if r.get("note") else ""))
    for n in (deployment or {}).get("notes") or []:
        out.append(f"  note: {n}")
    return out


def format_plan(plan: Plan) -> str:
    """A readable summary: fleet, placements, latency vs SLA, TCO, saving vs the best baseline, solver."""
    out = [f"plan for {', '.join(plan.workflows)}"]
    out.append("fleet: " + (", ".join(f"{n} x {d}" for d, n in sorted(plan.fleet.items())) or "(none)"))
    out += bill_lines(plan.deployment)
    rows = [("operator", "kind", "device", "tp", "pp", "batch", "repl", "prec", "ms", "bound")]
    for p in plan.placements:
        rows.append((p.operator, p.kind, p.device, str(p.tp), str(p.pp), str(p.batch), str(p.replicas),
                     p.precision, f"{p.latency_ms:.2f}", p.bound))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if plan.pools:
        out.append("serving pools (batch = requests in flight per replica that the load fills; ms = one "
                   "execution, wait ms = its mean queueing, busy = the replicas' busy share):")
        rows = [("pool", "engine", "device", "tp", "pp", "replicas", "batch", "slots", "calls/s", "ms",
                 "wait ms", "busy", "tbt ms")]
        for q in plan.pools:
            rows.append((q.id, q.engine, q.device, str(q.tp), str(q.pp), str(q.replicas), str(q.batch),
                         str(q.max_batch), f"{q.load_rps:.3g}", f"{q.latency_ms:.1f}",
                         f"{q.wait_ms:.1f}" if q.wait_ms is not None else "-",
                         f"{q.utilization:.0%}" if q.utilization is not None else "-",
                         f"{q.tbt_ms:.2f}" if q.tbt_ms is not None else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        for q in plan.pools:
            if q.kind == "llm.prefill" and q.kv_retention in ("resident", "offload"):
                where = "in device memory" if q.kv_retention == "resident" else "in host memory"
                out.append(f"KV kept across tool calls: {q.engine_id} {q.kv_retention}, "
                           f"{q.prefill_saved_share:.1%} of prompt tokens not recomputed, {q.retained_gb:.2f} GB per "
                           f"device {where} for up to {q.retained_requests} requests waiting per replica")
    pr = plan.predicted
    sla = pr.get("sla_ms")
    v = pr.get("validated")
    if v and sla:
        pct = pr.get("percentile") or 95
        out.append(f"planned mean end-to-end (queueing included): {pr.get('end_to_end_ms', 0):.1f} ms; simulated "
                   f"p50 {pr.get('p50_ms') or 0:.1f}, p95 {pr.get('p95_ms') or 0:.1f}, p99 {pr.get('p99_ms') or 0:.1f} ms "
                   f"over {v.get('requests')} requests: SLA {sla:g} ms at p{pct:g} "
                   + ("holds" if v.get("holds") else "does NOT hold"))
    else:
        out.append(f"predicted end-to-end: {pr.get('end_to_end_ms', 0):.1f} ms"
                   + (f" vs SLA {sla:g} ms: {'meets' if pr.get('meets_sla') else 'VIOLATES'}" if sla else
                      " (no SLA)") + (" (mean, not simulated)" if sla and pr.get("validated") is None
                                      and "validated" in pr else ""))
    t = plan.tco
    tok = f", {_money(t['per_million_tokens'])} per million tokens" if t.get("per_million_tokens") else ""
    out.append(f"TCO: {_money(t['per_hour'])}/hour{tok}, {_money(t['per_request'])} per request")
    feas = [b for b in plan.baselines if b.feasible and b.per_hour is not None]
    if feas:
        best = min(feas, key=lambda b: b.per_hour)
        if best.per_hour > 0:
            save = 1 - t["per_hour"] / best.per_hour
            out.append(f"best homogeneous baseline: all {best.device} {_money(best.per_hour)}/hour; "
                       f"this plan saves {save:.1%}")
    for b in plan.baselines:
        lat = f", {b.end_to_end_ms:.1f} ms" if b.end_to_end_ms is not None else ""
        out.append(f"  baseline {b.device}: {'feasible' if b.feasible else 'infeasible'}, "
                   f"{_money(b.per_hour)}/hour, {_money(b.per_request)}/request{lat}"
                   + (f" ({b.note})" if b.note else ""))
    s = plan.solver
    gap = s.get("gap")
    out.append(f"solver: {s.get('status')}, gap {gap:.2%}, {s.get('seconds', 0):.2f} s" if gap is not None
               else f"solver: {s.get('status')}, {s.get('seconds', 0):.2f} s")
    return "\n".join(out)


def read_plan_json(source, complete: bool = False) -> tuple[dict, "object | None"]:
    """(the plan.json dict, its path or None) from a plan.json path, its JSON text, a dict or a Plan.
    Read through the guarded reader (size, JSON nesting) and validated against plan.json's schema
    (hetagent.placement.plan_schema: types, ranges, known devices and kinds) before any stage uses it;
    errors name the file, line and field. A Plan object is trusted as made. `complete`: the keys every
    stage but a build needs (workflows, fleet, predicted, tco) must be there too."""
    from pathlib import Path

    from hetagent.errors import InputError
    from hetagent.placement import plan_schema
    from hetagent.guarded import Located, parse_json, read_json
    path = None
    if isinstance(source, Plan):
        return source.to_json(), None
    if isinstance(source, (str, Path)) and not str(source).lstrip().startswith("{"):
        path = Path(source)
        if not path.exists():
            raise InputError("no such plan file (make one with `hetagent plan WF -o plan.json`)",
                             file=str(path))
        doc = read_json(path, "plan")
    elif isinstance(source, str):
        doc = parse_json(source, None, "plan")
    elif isinstance(source, dict):
        doc = Located(source, {}, None)
    else:
        raise InputError(f"expected a plan.json path, its text, a dict or a Plan, not {type(source).__name__}")
    if not isinstance(doc.data, dict) or "placements" not in doc.data:
        raise InputError("not a plan.json (no `placements` list); make one with `hetagent plan`",
                         file=str(path) if path else None)
    return plan_schema.validate(doc, complete=complete), path


def read_plan(source) -> tuple["Plan", dict, "object | None"]:
    """(Plan, the plan.json dict, its path or None) from a plan.json path, its JSON text, a dict or a
    Plan. Every stage after placement reads plans through here; errors name the file and line."""
    if isinstance(source, Plan):
        return source, source.to_json(), None
    raw, path = read_plan_json(source, complete=True)
    plan = Plan.from_json(raw)              # the schema holds every key and type from_json reads
    plan._source_file = str(path) if path else None   # later checks (its workflow) name the file
    return plan, raw, path


def load_plan(source) -> "Plan":
    """A Plan from a plan.json path, its JSON text, a dict or a Plan (see read_plan)."""
    return read_plan(source)[0]


def embedded_workflow(record: dict):
    """The Workflow a plan.json `inputs.workflows` record embeds, loaded again from its text.
    Sub-agent files are read relative to the original workflow file."""
    from pathlib import Path

    from hetagent.errors import HetagentError
    from hetagent.workflow import loader
    if not record.get("text") or record.get("format", "yaml") != "yaml":
        raise HetagentError(f"workflow '{record.get('name')}' has no embedded workflow text in plan.json; "
                            "make the plan from a workflow file")
    file = record.get("file") or "<plan.json>"
    base = Path(file).resolve().parent if record.get("file") else Path(".")
    return loader.loads(record["text"], file=file, base_dir=base)
