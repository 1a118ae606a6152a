"""The plan as the runtime reads it: operator DAG, placements, per-request guards (loops, branches).

plan.json embeds the workflow source (inputs.workflows[i].text); the graph is rebuilt from it with
the same passes the planner ran, so operator names match the placements one to one. The placed IR
(plan["ir"]) is the fallback when the text is missing.

Guards: unrolled loop copies are named `<prefix><loop>.it<k>.<node>`; at run time each request draws
how many iterations it runs (geometric with the plan's continue probability, as in
hetagent.passes.unroll) and operators of copies it does not reach are skipped. Branch arms are drawn by
their probabilities; operators of arms not taken are skipped.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hetagent.errors import HetagentError

_IT = re.compile(r"^it(\d+)$")


@dataclass
class Loop:
    key: str            # scope prefix + loop id, e.g. "agent" or "research_a.dig"
    q: float            # continue probability
    max_iterations: int
    reach: list | None = None   # P(iterations >= k) of an iteration distribution (else geometric with q)


@dataclass
class Branch:
    key: str
    probabilities: list[float]


@dataclass
class RtOperator:
    name: str
    kind: str
    attrs: dict
    weight: float
    on_sla_path: bool
    device: str
    tp: int = 1
    batch: int = 1
    replicas: int = 1
    precision: str = "fp32"
    latency_ms: float = 0.0  # the plan's time per execution, the pool's queueing included
    loops: list[tuple[str, int]] = field(default_factory=list)     # (loop key, copy k)
    arms: list[tuple[str, int]] = field(default_factory=list)      # (branch key, arm index)
    node: str = ""          # the workflow node (loop copy stripped)
    bound: str = ""
    pool: str | None = None  # the serving pool (plan.json `pools[].id`); None for a KV hand-off
    service_ms: float | None = None  # one execution in its slot, queueing excluded (None: latency_ms)

    def __post_init__(self):
        if self.service_ms is None:
            self.service_ms = self.latency_ms

    @property
    def waits(self) -> bool:
        """Network-bound operators wait on I/O: a replica serves many requests at once."""
        return self.bound == "network" or self.kind in ("tool.lookup", "llm.remote")


@dataclass
class RtGraph:
    workflow: str
    operators: dict[str, RtOperator]
    order: list[str]                        # topological
    preds: dict[str, list[str]]
    succs: dict[str, list[str]]
    loops: dict[str, Loop]
    branches: dict[str, Branch]
    sla_ms: float | None
    rate_rps: float
    fleet: dict[str, int]
    predicted: dict
    pools: dict[str, dict] = field(default_factory=dict)    # plan.json `pools` by id

    @property
    def sinks(self) -> list[str]:
        return [n for n in self.order if not self.succs[n]]

    def draw(self, rng: random.Random) -> dict:
        """One request's control decisions: iterations per loop, arm per branch."""
        its = {}
        for key, lp in self.loops.items():
            n = 1
            if lp.reach is not None:
                u = rng.random()
                n = max(1, sum(1 for r in lp.reach if u < r))
            else:
                while n < lp.max_iterations and rng.random() < lp.q:
                    n += 1
            its[key] = n
        arms = {key: _pick(br.probabilities, rng) for key, br in self.branches.items()}
        return {"iterations": its, "arms": arms}

    def active(self, decisions: dict) -> set[str]:
        its, arms = decisions["iterations"], decisions["arms"]
        out = set()
        for name in self.order:
            op = self.operators[name]
            if all(k <= its.get(key, 10 ** 9) for key, k in op.loops) and \
                    all(arms.get(key, a) == a for key, a in op.arms):
                out.add(name)
        return out


def _pick(probs: list[float], rng: random.Random) -> int:
    x, acc = rng.random(), 0.0
    for i, p in enumerate(probs):
        acc += p
        if x < acc:
            return i
    return len(probs) - 1


def _structure(wf, prefix: str, loops: dict, branches: dict, arm_of: dict, base_dir: Path | None,
               depth: int = 0, has_sla: bool | None = None, sla_iterations: int | None = None) -> None:
    """Collects loops, branches and which node ids sit in which branch arm (by scope prefix).
    Loops get the copies `unroll` made: `has_sla` (the main workflow has one) and the enclosing
    workflow's `sla_iterations` decide where it folded a long loop's tail."""
    from hetagent.passes.unroll import continue_probability, materialized_copies
    from hetagent.workflow.dist import Dist, count_reach
    if depth > 8:
        return
    if hasattr(wf, "nodes"):      # a workflow, not a list of nodes: its own sla_iterations
        sla_iterations = wf.sla.iterations if wf.sla is not None else None
        has_sla = (wf.sla is not None) if has_sla is None else has_sla
    for node in wf.nodes if hasattr(wf, "nodes") else wf:
        kind = getattr(node, "kind", None)
        if kind == "loop":
            key = prefix + node.id
            n = node.max_iterations
            on_path = min(n, sla_iterations or n) if has_sla else 0
            it = node.expected_iterations
            if isinstance(it, Dist):      # unroll makes a copy per reachable count (or SLA copy)
                reach = count_reach(it, n)
                copies = min(n, max(len(reach), on_path))
                loops[key] = Loop(key, 0.0, copies, reach)
            else:
                made = materialized_copies(it, n, on_path)
                copies = n if made >= n else made + 1   # unroll's copies, the last a folded tail
                loops[key] = Loop(key, continue_probability(it, n), copies)
            for k in range(1, copies + 1):
                _structure(node.body, f"{key}.it{k}.", loops, branches, arm_of, base_dir, depth + 1,
                           has_sla, sla_iterations)
        elif kind == "branch":
            key = prefix + node.id
            branches[key] = Branch(key, [a.probability for a in node.arms])
            for i, arm in enumerate(node.arms):
                for inner in arm.nodes:
                    arm_of[prefix + inner.id] = (key, i)
                _structure(arm.nodes, prefix, loops, branches, arm_of, base_dir, depth + 1, has_sla,
                           sla_iterations)
        elif kind == "subagent":
            sub = None
            inline = getattr(node, "inline", None)
            file = getattr(node, "file", None)
            try:
                if inline is not None:
                    sub = inline
                elif file and base_dir is not None:
                    from hetagent.workflow import loader
                    sub = loader.load(base_dir / file)
            except HetagentError:
                sub = None
            if sub is not None:
                _structure(sub, f"{prefix}{node.id}.", loops, branches, arm_of,
                           base_dir, depth + 1, has_sla)


def _guards(name: str, loops: dict, arm_of: dict) -> tuple[list, list, str]:
    parts = name.split("+")[0].split(".")
    lg, ag = [], []
    for i in range(1, len(parts)):
        m = _IT.match(parts[i])
        if m and ".".join(parts[:i]) in loops:
            lg.append((".".join(parts[:i]), int(m.group(1))))
    for i in range(1, len(parts) + 1):
        pre = ".".join(parts[:i])
        if pre in arm_of:
            ag.append(arm_of[pre])
    node = ".".join(p for j, p in enumerate(parts)
                    if not (_IT.match(p) and ".".join(parts[:j]) in loops))
    return lg, ag, node


def from_plan(plan, workflow_index: int = 0) -> RtGraph:
    """The runtime graph of a plan (a Plan or its JSON dict) for one of its workflows."""
    from hetagent.placement.plan import read_plan
    plan, _, plan_path = read_plan(plan)
    plan_path = plan_path or getattr(plan, "_source_file", None)
    recs = (plan.inputs or {}).get("workflows") or []
    wf = None
    base_dir = None
    if recs and workflow_index < len(recs) and recs[workflow_index].get("text") \
            and recs[workflow_index].get("format", "yaml") == "yaml":
        from hetagent.placement.plan import embedded_workflow
        rec = recs[workflow_index]
        base_dir = Path(rec["file"]).resolve().parent if rec.get("file") else Path(".")
        wf = embedded_workflow(rec)
        from hetagent.ir.build import build
        from hetagent.ir.opgraph import extract
        from hetagent.passes.registry import DEFAULT_PIPELINE, run
        graph = extract(run(build(wf), DEFAULT_PIPELINE))
    elif plan.ir:
        from hetagent.ir.opgraph import extract
        from hetagent.ir.text import parse_module
        from hetagent.passes.registry import run
        graph = extract(run(parse_module(plan.ir, "<plan.ir>"), "decompose,unroll"))
    else:
        raise HetagentError("the plan holds neither its workflow text nor its IR: make it again "
                            "with `hetagent plan`")
    loops: dict[str, Loop] = {}
    branches: dict[str, Branch] = {}
    arm_of: dict = {}
    if wf is not None:
        _structure(wf, "", loops, branches, arm_of, base_dir)
    else:   # from the IR alone: loops recovered from copy names and weights
        for op in graph.operators:
            lg, _, _ = _guards(op.name, {}, {})
            parts = op.name.split(".")
            for i, p in enumerate(parts):
                m = _IT.match(p)
                if m and i:
                    key = ".".join(parts[:i])
                    lp = loops.setdefault(key, Loop(key, 0.0, 1))
                    k = int(m.group(1))
                    lp.max_iterations = max(lp.max_iterations, k)
                    if k == 2 and op.weight > 0:
                        lp.q = max(lp.q, min(1.0, op.weight))
    multi = len(plan.workflows) > 1
    placements = {}
    for p in plan.placements:
        name = p.operator
        if multi:
            wname, _, rest = name.partition("/")
            if wname != graph.workflow:
                continue
            name = rest
        placements[name] = p
    from hetagent.placement.plan_schema import check_operators
    check_operators(list(placements), [o.name for o in graph.operators],
                    str(plan_path) if plan_path else None, graph.workflow)
    ops: dict[str, RtOperator] = {}
    for o in graph.operators:
        p = placements[o.name]
        lg, ag, node = _guards(o.name, loops, arm_of)
        ops[o.name] = RtOperator(o.name, o.kind, dict(o.attrs), o.weight, o.on_sla_path, p.device,
                                 p.tp, p.batch, p.replicas, p.precision, float(p.latency_ms or 0.0),
                                 lg, ag, node, p.bound, getattr(p, "pool", None),
                                 float(p.service_ms) if p.service_ms is not None else None)
    preds = {n: [] for n in ops}
    succs = {n: [] for n in ops}
    for a, b in graph.edges:
        if a in ops and b in ops:
            preds[b].append(a)
            succs[a].append(b)
    order = _topo(list(ops), preds)
    sla = graph.sla_ms
    if plan.inputs.get("sla_ms") is not None:
        sla = float(plan.inputs["sla_ms"])
    elif plan.predicted.get("sla_ms") is not None:
        sla = float(plan.predicted["sla_ms"])
    rate = float(plan.inputs.get("rate") or graph.rate_rps or 1.0)
    pools = {}
    for q in getattr(plan, "pools", None) or []:
        q = q if isinstance(q, dict) else asdict(q)
        pools[q["id"]] = q
    return RtGraph(graph.workflow, ops, order, preds, succs, loops, branches, sla, rate,
                   dict(plan.fleet), dict(plan.predicted), pools)


def _topo(names: list[str], preds: dict) -> list[str]:
    done, out = set(), []
    pending = list(names)
    while pending:
        progressed = False
        for n in list(pending):
            if all(p in done for p in preds[n]):
                out.append(n)
                done.add(n)
                pending.remove(n)
                progressed = True
        if not progressed:
            raise HetagentError(f"the operator graph has a cycle through '{pending[0]}'")
    return out


def planned_capacity(g: RtGraph) -> dict:
    """Requests per second the plan can sustain: per operator pool and per device, the minimum wins.

    An operator pool serves replicas x batch executions per service time (queueing excluded); it runs
    `weight` times per request. A device kind of count n is busy sum(weight x service / batch) per
    request over its operators (CPU operators share their device)."""
    per_op, busy = {}, {}
    for op in g.operators.values():
        if op.replicas <= 0 or op.service_ms <= 0 or op.weight <= 0 or op.waits:
            continue
        per_op[op.name] = op.replicas * max(op.batch, 1) * 1000.0 / (op.service_ms * op.weight)
        busy[op.device] = busy.get(op.device, 0.0) + op.weight * op.service_ms / max(op.batch, 1)
    per_dev = {d: max(g.fleet.get(d, 1), 1) * 1000.0 / b for d, b in busy.items() if b > 0}
    cands = list(per_op.values()) + list(per_dev.values())
    cap = min(cands) if cands else math.inf
    return {"rps": cap, "per_operator": per_op, "per_device": per_dev}
