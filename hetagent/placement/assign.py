"""A deployable assignment: every replica of every pool on concrete devices of concrete servers.

After the MILP has chosen pools, replicas and server counts, `assign` lays them out deterministically:
servers are numbered per shape; accelerator replicas go widest TP group first, each pipeline stage's TP
group onto the fullest server of its kind that still has that many free devices (best fit); every
device's memory (weights, KV at the pool's batch and longest context, activations: the pool's
`memory_gb`) is checked against its usable memory. CPU-side pools go onto the free cores of the hosts of
the chosen accelerator servers first, and onto CPU-only servers only where hosts are short. When a
replica finds no room, a server of the cheapest shape that fits is added, and the deployment says so
(the MILP's packing rows make that rare: docs/placement.md). plan.json's `deployment` is the result.
"""
from __future__ import annotations

from hetagent.costmodel.roofline import MEMORY_UTILIZATION
from hetagent.errors import PlacementError
from hetagent.placement import servers as srv


def assign(pb, prep, choice: dict, counts: dict, pool_ids: dict, mode: str = "buy") -> tuple[dict, dict]:
    """(deployment dict, {offer id: count} actually laid out). pool_ids: {(pool, phase): plan pool id}."""
    offers = srv.offers_of(pb)
    boxes = []
    for oid in sorted(counts):
        for k in range(counts[oid]):
            boxes.append(_box(pb, offers[oid], k + 1))
    notes = []
    engines = sorted(dict.fromkeys(choice.values()), key=lambda o: (-o.option.tp, o.group, o.engine))
    for o in engines:
        ids = [pool_ids[(o.group, ph)] for ph in o.phases if (o.group, ph) in pool_ids]
        if o.cpu:
            _place_cpu(pb, boxes, offers, o, ids, notes)
            continue
        loose = all(of.kind == "device" for of in offers.values() if of.device == o.device)
        for r in range(o.load.replicas):
            for _ in range(o.option.pp):
                if loose:        # single devices (no server types): a TP group takes any free ones
                    free = [d for b in boxes if b["device"] == o.device and not b["cpu_only"]
                            for d in b["devices"] if not d["replicas"]][:o.option.tp]
                    if len(free) < o.option.tp:
                        raise PlacementError(f"pool '{ids[0] if ids else o.group}': {o.option.tp} free {o.device} "
                                             f"needed, {len(free)} left")
                    _occupy(o, ids, r, free)
                    continue
                box = _fit(boxes, o.device, o.option.tp)
                if box is None:
                    of = _cheapest_shape(offers, o.device, o.option.tp)
                    if of is None:
                        raise PlacementError(f"pool '{ids[0] if ids else o.group}': no server shape holds a TP "
                                             f"group of {o.option.tp} {o.device}")
                    box = _box(pb, of, 1 + sum(b["offer"] == of.id for b in boxes))
                    boxes.append(box)
                    notes.append(f"added one {of.id} for pool '{ids[0] if ids else o.group}' (the MILP's "
                                 f"servers had no {o.option.tp} free {o.device} left)")
                _occupy(o, ids, r, [d for d in box["devices"] if not d["replicas"]][:o.option.tp])
    used = {}
    for b in boxes:
        used[b["offer"]] = used.get(b["offer"], 0) + 1
    out = {"mode": mode, "servers": [_public(b) for b in boxes]}
    notes = list(getattr(pb, "notes", []) or []) + notes
    if notes:
        out["notes"] = notes
    return out, used


def _occupy(o, ids, r, devices):
    for d in devices:
        if d["capacity_gb"] and o.load.memory_gb > d["capacity_gb"] + 1e-9:
            raise PlacementError(f"pool '{ids[0] if ids else o.group}' needs {o.load.memory_gb:.1f} GB per "
                                 f"{o.device}, which holds {d['capacity_gb']:.1f} GB usable")
        d["memory_gb"] = round(o.load.memory_gb, 3)
        d["replicas"] = [{"pool": pid, "replica": r} for pid in ids]


def _box(pb, of, k: int) -> dict:
    cap = float(pb.memory_gb.get(of.device) or 0.0) * MEMORY_UTILIZATION
    devices = [{"index": i, "capacity_gb": round(cap, 3), "memory_gb": 0.0, "replicas": []}
               for i in range(of.count)]
    return {"id": f"{of.id}-{k}", "type": srv.type_of(of), "device": of.device, "count": 0 if of.cpu_only else of.count,
            "cpu_only": of.cpu_only, "cpu": of.device if of.cpu_only else of.cpu,
            "host": {"cores": float(of.host_cores), "memory_gb": float(of.host_memory_gb), "pools": []},
            "free_cores": float(of.host_cores), "devices": devices, "note": of.note, "offer": of.id}


def _fit(boxes, device: str, tp: int):
    """The fullest server of this accelerator kind with tp free devices (best fit)."""
    best = None
    for b in boxes:
        if b["cpu_only"] or b["device"] != device:
            continue
        free = sum(1 for d in b["devices"] if not d["replicas"])
        if free >= tp and (best is None or free < best[0]):
            best = (free, b)
    return best[1] if best else None


def _cheapest_shape(offers, device, tp):
    fits = [of for of in offers.values() if of.device == device and not of.cpu_only and of.count >= tp]
    return min(fits, key=lambda of: (of.total / max(of.count, 1), of.id)) if fits else None


def _place_cpu(pb, boxes, offers, o, ids, notes):
    """A time-shared CPU pool: its cores on accelerator hosts of its CPU kind first, then CPU-only sockets."""
    per = float(pb.cores.get(o.device, 1.0))
    need = o.devices * per
    for b in boxes:                          # hosts of accelerator servers
        if need <= 1e-9:
            break
        if b["cpu_only"] or b["cpu"] != o.device or b["free_cores"] <= 1e-9:
            continue
        take = min(need, b["free_cores"])
        b["free_cores"] -= take
        b["host"]["pools"] += [{"pool": pid, "cores": round(take, 3)} for pid in ids]
        need -= take
    for b in boxes:                          # CPU-only servers, socket by socket
        if need <= 1e-9:
            break
        if not b["cpu_only"] or b["device"] != o.device:
            continue
        for d in b["devices"]:
            used = sum(x.get("cores", 0.0) for x in d["replicas"])
            room = per - used
            if room <= 1e-9:
                continue
            take = min(need, room)
            d["replicas"] += [{"pool": pid, "replica": 0, "cores": round(take, 3)} for pid in ids]
            d["memory_gb"] = round(d["memory_gb"] + o.load.memory_gb, 3)
            need -= take
            if need <= 1e-9:
                break
    if need > 1e-6:
        notes.append(f"pool '{ids[0] if ids else o.group}': {need:.2f} of its cores found no {o.device} host; "
                     "it shares cores beyond the hosts' free ones")


def _public(b: dict) -> dict:
    out = {"id": b["id"], "type": b["type"], "device": b["device"], "count": b["count"],
           "host": {"cores": b["host"]["cores"], "memory_gb": b["host"]["memory_gb"], "cpu": b["cpu"]},
           "devices": b["devices"]}
    if b["host"]["pools"]:
        out["host"]["pools"] = b["host"]["pools"]
    if b.get("note"):
        out["note"] = b["note"]
    return out
