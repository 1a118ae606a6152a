"""plan.json -> a Ray Serve config (`serve deploy`-able, ray.serve.schema.ServeDeploySchema).

One application per workflow, built by `hetagent.runtime.app:build_app` from the plan file (args:
`plan`, `workflow`): the ingress deployment and one deployment per serving pool (the runtime's own
deployments, hetagent.runtime.pools and hetagent.runtime.ingress). Each pool's entry sets, from the
plan: `num_replicas` (or `autoscaling_config` when the plan gives bounds), `ray_actor_options`
(`num_cpus` for a CPU pool: the cores its replica keeps busy in plan.json's `deployment`; for an
accelerator pool the devices of one replica, `tp x pp` over the engines sharing them, as `num_gpus`
(NVIDIA, AMD, Intel GPU) or `HPU` (Gaudi), plus the device id as a custom resource, which the cluster's
nodes advertise), and, for an LLM pool on an accelerator, `user_config` with the engine settings
(hetagent.deploy.engines). The co-located prefill and decode pools of one engine are one engine: the
first holds the devices, the other a sliver of the device resource beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hetagent.deploy.engines import Gap, accel_of, longest_context, settings
from hetagent.runtime.app import INGRESS, deployment_name
from hetagent.runtime.deploy import unit_name

IMPORT_PATH = "hetagent.runtime.app:build_app"
SLIVER = 0.001
INGRESS_CPUS = 0.5


@dataclass
class ServeBuild:
    config: dict
    pools: int
    gaps: list[Gap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comments: dict = field(default_factory=dict)     # deployment name -> comment lines


def _device_use(raw: dict) -> tuple[dict, dict, dict]:
    """From plan.json `deployment`: {(pool, replica): [(device key, server, device)]}, {device key:
    {engine ids}}, {pool: cores of one replica (CPU pools)}."""
    engine_of = {q["id"]: q.get("engine_id") or q["id"] for q in raw.get("pools") or []}
    where: dict = {}
    engines: dict = {}
    cores: dict = {}
    for s in (raw.get("deployment") or {}).get("servers") or []:
        for d in s.get("devices") or []:
            key = (s.get("id"), d.get("index"))
            for r in d.get("replicas") or []:
                where.setdefault((r["pool"], r.get("replica", 0)), []).append((key, s, d))
                engines.setdefault(key, set()).add(engine_of.get(r["pool"], r["pool"]))
                if r.get("cores") is not None:
                    cores[r["pool"]] = max(cores.get(r["pool"], 0.0), float(r["cores"]))
    return where, engines, cores


def build_serve_config(plan, raw: dict, catalog: dict, *, engine: str, plan_ref: str,
                       http: dict | None = None) -> ServeBuild:
    """plan: the loaded Plan; raw: its plan.json dict; plan_ref: the path build_app reads."""
    from hetagent.modelcards import load_models
    from hetagent.runtime.graph import from_plan
    graphs = [from_plan(plan, i) for i in range(len(raw.get("workflows") or [None]))]
    pools = {q["id"]: q for q in raw.get("pools") or []}
    where, engines_on, cores = _device_use(raw)
    cards = load_models()
    out = ServeBuild({"proxy_location": "EveryNode",
                      "http_options": http or {"host": "0.0.0.0", "port": 8000},
                      "applications": []}, 0)
    holder: dict = {}            # engine id -> the pool that holds its devices
    for q in pools.values():
        holder.setdefault(q.get("engine_id") or q["id"], q["id"])
    by_model_phase = {(q.get("model"), q.get("engine")): q for q in pools.values() if q.get("model")}
    seen: set = set()
    for i, g in enumerate(graphs):
        units = list(dict.fromkeys(unit_name(g.operators[n]) for n in g.order
                                   if g.operators[n].kind != "llm.kv_transfer"))
        deps = [{"name": INGRESS, "num_replicas": 1, "ray_actor_options": {"num_cpus": INGRESS_CPUS}}]
        for u in units:
            q = pools.get(u) or {"id": u, "device": next(op.device for op in g.operators.values()
                                                        if unit_name(op) == u), "replicas": 1}
            dep, comments = _pool_entry(q, engine, catalog, cards, graphs, where, engines_on, cores,
                                        holder, by_model_phase, out)
            deps.append(dep)
            if comments:
                out.comments[dep["name"]] = comments
            seen.add(u)
        name = g.workflow
        out.config["applications"].append({
            "name": name, "route_prefix": "/" if len(graphs) == 1 else f"/{name}",
            "import_path": IMPORT_PATH, "args": {"plan": plan_ref, "workflow": i},
            "deployments": deps})
    out.pools = len(seen)
    return out


def _pool_entry(q, engine, catalog, cards, graphs, where, engines_on, cores, holder, by_model_phase,
                out: ServeBuild) -> tuple[dict, list[str]]:
    name = deployment_name(q["id"])
    dev = catalog.get(q["device"])
    acc = accel_of(dev)
    dep: dict = {"name": name}
    auto = q.get("autoscaling")
    if auto:
        dep["autoscaling_config"] = {"min_replicas": int(auto["min_replicas"]),
                                     "max_replicas": int(auto["max_replicas"])}
    else:
        dep["num_replicas"] = max(1, int(q.get("replicas") or 1))
    comments: list[str] = []
    if acc.family in ("cpu", "unknown") and not (dev is None and q.get("model")):
        dep["ray_actor_options"] = {"num_cpus": max(0.01, math.ceil(cores.get(q["id"], 0.01) * 100) / 100)}
        return dep, comments
    eid = q.get("engine_id") or q["id"]
    n, servers = _devices_per_replica(q, where, engines_on)
    if holder.get(eid, q["id"]) != q["id"]:
        dep["ray_actor_options"] = {"num_cpus": 0, "resources": {q["device"]: SLIVER}}
        comments.append(f"one engine with '{holder[eid]}' (engine {eid}): that deployment holds the devices")
    elif n > 1:
        # a TP x PP group: one bundle per device (the replica in the first), kept on one server
        # where the plan's deployment keeps it there
        bundles = [_device_bundle(q["device"], acc, 1) for _ in range(int(math.ceil(n)))]
        bundles[0]["CPU"] = 1
        dep["ray_actor_options"] = {"num_cpus": 1, **_actor_device(q["device"], acc, 1)}
        dep["placement_group_bundles"] = bundles
        dep["placement_group_strategy"] = "STRICT_PACK" if servers <= 1 else "PACK"
    else:
        dep["ray_actor_options"] = {"num_cpus": 1, **_actor_device(q["device"], acc, n)}
    model = q.get("model")
    if not model:
        return dep, comments
    card = cards.get(model)
    if card is None:
        gap = Gap(q["id"], f"model '{model}' has no model card: no engine model id")
        out.gaps.append(gap)
        comments.append(f"GAP: {gap.why}")
        return dep, comments
    peer = None
    if q.get("engine") in ("prefill", "decode"):
        peer = by_model_phase.get((model, "decode" if q["engine"] == "prefill" else "prefill"))
    user, gaps, notes = settings(
        q, engine=engine, card=card, context=longest_context(graphs, model),
        mem_fraction=_mem_fraction(q, dev, where, engines_on), accel=acc, peer=peer,
        peer_accel=accel_of(catalog.get(peer["device"])) if peer else None,
        replicas=dep.get("num_replicas", 1))
    dep["user_config"] = user
    out.gaps.extend(gaps)
    out.notes.extend(notes)
    comments += [f"GAP: {g.why}" for g in gaps] + [n.split(": ", 1)[-1] for n in notes]
    return dep, comments


def _device_bundle(device: str, acc, n) -> dict:
    b = {device: n}
    if acc.ray_gpu:
        b["GPU"] = n
    elif acc.family == "gaudi":
        b["HPU"] = n
    return b


def _actor_device(device: str, acc, n) -> dict:
    """ray_actor_options for n devices: num_gpus (GPUs), HPU (Gaudi) and the device id resource."""
    b = _device_bundle(device, acc, n)
    gpus = b.pop("GPU", None)
    return {**({"num_gpus": gpus} if gpus is not None else {}), "resources": b}


def _devices_per_replica(q, where, engines_on) -> tuple[float, int]:
    """(devices one replica holds: each of its devices over the engines that share it, from plan.json
    `deployment`, else tp x pp; the servers its devices are on)."""
    best, servers = 0.0, 1
    for (pool, _r), places in where.items():
        if pool != q["id"]:
            continue
        best = max(best, sum(1.0 / max(1, len(engines_on.get(key, ()))) for key, _s, _d in places))
        servers = max(servers, len({s.get("id") for _k, s, _d in places}))
    n = best or float(int(q.get("tp") or 1) * int(q.get("pp") or 1))
    return (int(n) if float(n).is_integer() else round(n, 3)), servers


def _mem_fraction(q, dev, where, engines_on) -> float:
    """The share of a device's memory the engine may take: the usable memory the plan allows
    (`capacity_gb`) over the device's, split among the engines on it by their `memory_gb`."""
    total = float(dev.memory_gb or 0) if dev is not None else 0.0
    for (pool, _r), places in where.items():
        if pool != q["id"] or not places:
            continue
        _key, _s, d = places[0]
        cap = float(d.get("capacity_gb") or total)
        used = float(d.get("memory_gb") or 0)
        mine = float(q.get("memory_gb") or 0)
        share = mine / used if used > 0 and len(engines_on.get(_key, ())) > 1 else 1.0
        return (cap / total if total else 0.9) * min(1.0, share)
    return 0.9
