"""Server types and cloud instance types: the units a fleet is bought, owned or rented in.

configs/servers/<id>.yaml, one server type each: an accelerator kind and count (or none: a CPU-only server), the
host (a catalog CPU id, sockets, cores, DRAM), NICs, the price (the whole server, or host_price_usd with the
accelerators priced from configs/devices), power of the whole server and rack units; `default_for` names the
devices whose owned counts map onto this type (one default per device).

configs/instances/<family>.yaml, the cloud instances of one provider family (a SkyPilot catalog, AWS): instance
type, provider, regions, accelerator kind and count, vCPUs, memory, $/hour on demand and spot; each entry cites
the catalog row it copies in `source`.

Every figure of a server file is {value, source} or {value, estimate: "how it was derived"} (a null value needs
a note). Unknown fields, missing sources, negative or absurd numbers: one InputError naming file, line and field.
Server and instance types whose device is not in the catalog in use are left out (and reported in `skipped`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hetagent.configs import Where, config_dir as _config_dir, read_yaml
from hetagent.costmodel.devices import DEFAULT_CATALOG, Device, is_number, load_catalog
from hetagent.errors import CatalogError, CostModelError, InputError

KINDS = ("server", "instance")
FIGURE_KEYS = {"value", "source", "estimate", "note", "date"}
# Upper bounds no real server reaches (a GB200 NVL72 rack: 72 GPUs, 120 kW, ~$3M); beyond them a typo.
MAXIMA = {"accelerators": 1024, "sockets": 1024, "cores": 100_000, "memory_gb": 1e6, "nics.count": 4096,
          "nics.gbps": 10_000, "price_usd": 1e8, "host_price_usd": 1e8, "accelerator_price_usd": 1e7,
          "power_w": 1e6, "rack_units": 100, "vcpus": 100_000, "usd_per_hour": 10_000,
          "spot_usd_per_hour": 10_000}


@dataclass(frozen=True)
class ServerType:
    id: str
    name: str
    kind: str                              # "server" (bought or owned) | "instance" (rented)
    accelerator: str | None                # device id; None: a CPU-only server or instance
    count: int                             # accelerators per server (0 for CPU-only)
    host_cpu: str | None                   # catalog CPU device id of the host
    host_sockets: int                      # CPU-only server: its sockets are the fleet's CPU devices
    host_cores: int
    host_memory_gb: float
    nic_count: int
    nic_gbps: float                        # per NIC
    price_usd: float | None                # the whole server (accelerators + host); None: cannot be bought
    accelerators_price_usd: float | None
    host_price_usd: float | None
    power_w: float | None                  # the whole server at full load
    rack_units: float | None
    usd_per_hour: float | None             # instances: on demand
    spot_usd_per_hour: float | None        # instances: spot, where the catalog row has one
    provider: str | None
    region: str | None                     # the region when there is one, else None (see regions)
    default_for: tuple = ()
    sources: dict = field(default_factory=dict, compare=False)     # {field: source}
    path: str | None = field(default=None, compare=False)
    estimates: dict = field(default_factory=dict, compare=False)   # {field: how it was derived}
    notes: dict = field(default_factory=dict, compare=False)
    vcpus: int | None = None               # instances
    regions: tuple = ()                    # instances: every region the row's price holds in
    instance_type: str | None = None       # instances: the provider's name for it

    @property
    def device(self) -> str | None:
        """The fleet device this type provides: its accelerator, or its CPU for a CPU-only type."""
        return self.accelerator or self.host_cpu

    @property
    def cpu_only(self) -> bool:
        return self.accelerator is None

    @property
    def fleet_devices(self) -> dict[str, int]:
        """{device: count} this type adds to plan.json's `fleet` (a CPU-only type: its sockets)."""
        if self.accelerator:
            return {self.accelerator: self.count}
        return {self.host_cpu: self.host_sockets} if self.host_cpu and self.host_sockets else {}

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "id", "name", "kind", "accelerator", "count", "host_cpu", "host_sockets", "host_cores",
            "host_memory_gb", "nic_count", "nic_gbps", "price_usd", "accelerators_price_usd", "host_price_usd",
            "power_w", "rack_units", "usd_per_hour", "spot_usd_per_hour", "provider", "region")}
        out["default_for"] = list(self.default_for)
        if self.kind == "instance":
            out.update(instance_type=self.instance_type, regions=list(self.regions), vcpus=self.vcpus)
        out.update(sources=dict(self.sources), estimates=dict(self.estimates), notes=dict(self.notes),
                   path=self.path)
        return out


# ---------------------------------------------------------------- reading

def _catalog(catalog, config_dir) -> dict[str, Device]:
    if catalog is None or isinstance(catalog, str):
        return load_catalog(catalog or DEFAULT_CATALOG, config_dir)
    return dict(catalog)


def _keys(raw, allowed: set, where: Where, fld: str = "", required=()) -> dict:
    if not isinstance(raw, dict):
        raise where.error(fld, "expected a mapping")
    for k in raw:
        if k not in allowed:
            name = f"{fld}.{k}" if fld else str(k)
            raise where.error(name, f"unknown field; allowed: {', '.join(sorted(allowed))}")
    for k in required:
        if k not in raw:
            raise where.error(fld, f"missing required field '{k}'")
    return raw


def _number(v, fld: str, where: Where, *, whole=False, positive=False, bound: str | None = None):
    if not is_number(v):
        raise where.error(fld, f"must be a number, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise where.error(fld, f"must be {'positive' if positive else 'non-negative'}, got {v}")
    top = MAXIMA.get(bound or fld)
    if top is not None and v > top:
        raise where.error(fld, f"{v:g} is beyond any real server (at most {top:g}); a typo?")
    if whole:
        if float(v) != int(v):
            raise where.error(fld, f"must be a whole number, got {v}")
        return int(v)
    return float(v)


class _Figures:
    """Reads {value, source|estimate, note?, date?} figures, recording their provenance."""

    def __init__(self, where: Where):
        self.where, self.sources, self.estimates, self.notes = where, {}, {}, {}

    def __call__(self, raw, fld: str, *, whole=False, positive=False, nullable=False, bound=None):
        where = self.where
        if not isinstance(raw, dict):
            raise where.error(fld, "expected a mapping {value, source} or {value, estimate: \"how\"}")
        extra = set(raw) - FIGURE_KEYS
        if extra:
            raise where.error(f"{fld}.{sorted(extra)[0]}", f"unknown key; allowed: {', '.join(sorted(FIGURE_KEYS))}")
        if "value" not in raw:
            raise where.error(fld, "missing 'value'")
        for k in ("source", "estimate", "note", "date"):
            if raw.get(k) is not None and (not isinstance(raw[k], str) or not raw[k].strip()):
                raise where.error(f"{fld}.{k}", "must be a non-empty string")
        value = raw["value"]
        if raw.get("note"):
            self.notes[fld] = raw["note"]
        if value is None:
            if not nullable:
                raise where.error(fld, "must have a value")
            if not raw.get("note"):
                raise where.error(fld, "value is null: add a note saying why")
            return None
        if not raw.get("source") and not raw.get("estimate"):
            raise where.error(fld, "every figure needs a source, or an estimate saying how it was derived")
        value = _number(value, fld, where, whole=whole, positive=positive, bound=bound)
        if raw.get("source"):
            self.sources[fld] = raw["source"]
        if raw.get("estimate"):
            self.estimates[fld] = raw["estimate"]
        return value


def _device(dev_id, fld: str, where: Where, catalog: dict[str, Device], kind: str):
    """(device or None if not in this catalog). kind: 'cpu' or 'accelerator'."""
    if not isinstance(dev_id, str) or not dev_id:
        raise where.error(fld, "must be a device id")
    dev = catalog.get(dev_id)
    if dev is not None and (dev.is_cpu != (kind == "cpu")):
        raise where.error(fld, f"'{dev_id}' is {'a CPU' if dev.is_cpu else 'an accelerator'}, expected "
                               f"{'a CPU' if kind == 'cpu' else 'an accelerator'} device id")
    return dev


def _strings(raw: dict, keys, where: Where, optional=False) -> None:
    for k in keys:
        if optional and raw.get(k) is None:
            continue
        if not isinstance(raw.get(k), str) or not raw[k].strip():
            raise where.error(k, "must be a non-empty string")


def _accelerator(raw: dict, where: Where, catalog: dict[str, Device], what: str):
    """(accelerator id or None, count, Device or None, the id when it is not in this catalog)."""
    acc = raw["accelerator"]
    count = _number(raw["accelerators"], "accelerators", where, whole=True)
    if acc is None:
        if count != 0:
            raise where.error("accelerators", f"a CPU-only {what} (accelerator: null) has accelerators: 0")
        return None, 0, None, None
    dev = _device(acc, "accelerator", where, catalog, "accelerator")
    if count < 1:
        raise where.error("accelerators", f"a {what} with an accelerator holds at least one")
    return acc, count, dev, (acc if dev is None else None)


_SERVER_TOP = {"id", "name", "accelerator", "accelerators", "default_for", "host", "nics", "price_usd",
               "host_price_usd", "accelerator_price_usd", "power_w", "rack_units", "note"}
_HOST = {"cpu", "sockets", "cores", "memory_gb", "note"}
_NICS = {"count", "gbps", "note"}


def server_from_mapping(data, where: Where, catalog: dict[str, Device], expect_id: str | None = None,
                        skipped: dict | None = None) -> ServerType | None:
    """Validate one server type (a configs/servers file's content). None when its device is not in `catalog`
    (the reason goes to `skipped`)."""
    data = _keys(data, _SERVER_TOP, where, required=("id", "name", "accelerator", "accelerators", "host", "nics",
                                                      "power_w", "rack_units"))
    _strings(data, ("id", "name"), where)
    if expect_id is not None and data["id"] != expect_id:
        raise where.error("id", f"id '{data['id']}' does not match the file name '{expect_id}'")
    fig = _Figures(where)
    acc, count, dev, missing = _accelerator(data, where, catalog, "server")
    host = _keys(data["host"], _HOST, where, "host", required=("cpu", "sockets", "cores", "memory_gb"))
    cpu = _device(host["cpu"], "host.cpu", where, catalog, "cpu")
    if cpu is None and missing is None:
        missing = host["cpu"]
    sockets = _number(host["sockets"], "host.sockets", where, whole=True, positive=True, bound="sockets")
    cores = fig(host["cores"], "host.cores", whole=True, positive=True, bound="cores")
    memory = fig(host["memory_gb"], "host.memory_gb", positive=True, bound="memory_gb")
    if host.get("note"):
        fig.notes["host"] = str(host["note"])
    nics = _keys(data["nics"], _NICS, where, "nics", required=("count", "gbps"))
    nic_count = fig(nics["count"], "nics.count", whole=True)
    nic_gbps = fig(nics["gbps"], "nics.gbps")
    if nics.get("note"):
        fig.notes["nics"] = str(nics["note"])
    power = fig(data["power_w"], "power_w", positive=True)
    rack = fig(data["rack_units"], "rack_units", positive=True)
    if data.get("note"):
        fig.notes[""] = str(data["note"])

    default_for = data.get("default_for") or []
    if not isinstance(default_for, list) or not all(isinstance(d, str) for d in default_for):
        raise where.error("default_for", "expected a list of device ids")
    own = acc if acc is not None else host["cpu"]
    for i, d in enumerate(default_for):
        if d != own:
            raise where.error(f"default_for[{i}]", f"'{d}' is not this server's device ('{own}'): an owned count "
                                                   "of a device maps only onto servers of that device")

    # price: host_price_usd (+ the accelerators from configs/devices or accelerator_price_usd), or price_usd
    dev_price = dev.price_usd if dev is not None else None
    whole = fig(data["price_usd"], "price_usd", nullable=True) if "price_usd" in data else None
    host_price = fig(data["host_price_usd"], "host_price_usd", nullable=True) if "host_price_usd" in data else None
    unit = None
    if "accelerator_price_usd" in data:
        if acc is None:
            raise where.error("accelerator_price_usd", "a CPU-only server has no accelerators to price")
        if dev_price is not None:
            raise where.error("accelerator_price_usd", f"'{acc}' has a price in configs/devices/{acc}.yaml "
                                                       f"(${dev_price:,.0f}); the server uses it: remove this field")
        unit = fig(data["accelerator_price_usd"], "accelerator_price_usd", nullable=True)
    unit = unit if unit is not None else (dev_price if acc is not None else 0.0)
    acc_price = None if unit is None else round(unit * count, 2)
    if "price_usd" not in data and "host_price_usd" not in data:
        raise where.error("", "missing 'host_price_usd' (or 'price_usd', the whole server; null with a note when "
                              "it cannot be bought)")
    if whole is not None and host_price is not None:          # both: the accelerators are the difference
        if host_price > whole:
            raise where.error("host_price_usd", f"host ${host_price:,.0f} exceeds the whole server's ${whole:,.0f}")
        split = whole - host_price
        if acc_price is not None and abs(split - acc_price) > max(1.0, 1e-6 * whole):
            raise where.error("price_usd", f"${whole:,.2f} - host ${host_price:,.2f} = ${split:,.2f}, but the "
                                           f"{count} accelerators cost ${acc_price:,.2f} at their catalog price")
        acc_price = round(split, 2)
    elif whole is not None:                                    # the whole server: host = whole - accelerators
        if acc_price is None:
            raise where.error("price_usd", "with no price for the accelerators, give host_price_usd too so the bill "
                                           "can split accelerators from host")
        if acc_price > whole:
            raise where.error("price_usd", f"${whole:,.0f} is below the accelerators' ${acc_price:,.0f}")
        host_price = round(whole - acc_price, 2)
    elif host_price is not None:                               # host + accelerators at their price
        whole = None if acc_price is None else round(acc_price + host_price, 2)
    else:                                                      # price_usd: null (with its note): not for sale
        acc_price = None

    if missing is not None:
        if skipped is not None:
            skipped[data["id"]] = f"device '{missing}' is not in this catalog"
        return None
    return ServerType(
        id=data["id"], name=data["name"], kind="server", accelerator=acc, count=count, host_cpu=host["cpu"],
        host_sockets=sockets, host_cores=cores, host_memory_gb=memory, nic_count=nic_count, nic_gbps=nic_gbps,
        price_usd=whole, accelerators_price_usd=acc_price, host_price_usd=host_price, power_w=power,
        rack_units=rack, usd_per_hour=None, spot_usd_per_hour=None, provider=None, region=None,
        default_for=tuple(default_for), sources=fig.sources, path=where.file, estimates=fig.estimates,
        notes=fig.notes)


_FAMILY_TOP = {"family", "source", "date", "host", "left_out", "instances", "note"}
_FAMILY_HOST = {"cpu", "estimate", "cores_per_vcpu"}
_INSTANCE = {"id", "instance_type", "provider", "regions", "accelerator", "accelerators", "vcpus", "memory_gb",
             "usd_per_hour", "spot_usd_per_hour", "source", "note", "host_cpu", "host_cpu_estimate", "date"}


def instances_from_mapping(data, where: Where, catalog: dict[str, Device], expect_family: str | None = None,
                           skipped: dict | None = None) -> list[ServerType]:
    """Validate one configs/instances file (a provider family); instances of devices outside `catalog` are
    left out (reasons to `skipped`)."""
    data = _keys(data, _FAMILY_TOP, where, required=("family", "source", "host", "instances"))
    _strings(data, ("family",), where)
    if expect_family is not None and data["family"] != expect_family:
        raise where.error("family", f"family '{data['family']}' does not match the file name '{expect_family}'")
    _strings(data, ("source",), where)
    _strings(data, ("date", "note"), where, optional=True)
    host = _keys(data["host"], _FAMILY_HOST, where, "host", required=("cpu", "estimate", "cores_per_vcpu"))
    if not isinstance(host["estimate"], str) or not host["estimate"].strip():
        raise where.error("host.estimate", "say how the host CPU and cores were chosen")
    per_vcpu = _number(host["cores_per_vcpu"], "host.cores_per_vcpu", where, positive=True)
    if per_vcpu > 1:
        raise where.error("host.cores_per_vcpu", f"a vCPU is at most one core, got {per_vcpu}")
    left = data.get("left_out") or []
    if not isinstance(left, list) or not all(isinstance(x, str) for x in left):
        raise where.error("left_out", "expected a list of strings (rows left out and why)")
    rows = data["instances"]
    if not isinstance(rows, list) or not rows:
        raise where.error("instances", "expected a non-empty list of instance types")
    out = []
    for i, raw in enumerate(rows):
        w = Where(where.file, where.lines, f"instances[{i}]")
        raw = _keys(raw, _INSTANCE, w, required=("id", "instance_type", "provider", "regions", "accelerator",
                                                  "accelerators", "vcpus", "memory_gb", "usd_per_hour", "source"))
        _strings(raw, ("id", "instance_type", "provider", "source"), w)
        _strings(raw, ("note", "host_cpu_estimate", "date"), w, optional=True)
        regions = raw["regions"]
        if not isinstance(regions, list) or not regions or not all(isinstance(r, str) and r for r in regions):
            raise w.error("regions", "expected a non-empty list of region names")
        acc, count, _dev, missing = _accelerator(raw, w, catalog, "instance")
        cpu_id = raw.get("host_cpu", host["cpu"])
        cpu = _device(cpu_id, "host_cpu", w, catalog, "cpu")
        if cpu is None and missing is None:
            missing = cpu_id
        vcpus = _number(raw["vcpus"], "vcpus", w, whole=True, positive=True)
        memory = _number(raw["memory_gb"], "memory_gb", w, positive=True)
        price = _number(raw["usd_per_hour"], "usd_per_hour", w, positive=True)
        spot = raw.get("spot_usd_per_hour")
        spot = None if spot is None else _number(spot, "spot_usd_per_hour", w, positive=True)
        if missing is not None:
            if skipped is not None:
                skipped[raw["id"]] = f"device '{missing}' is not in this catalog"
            continue
        cores = max(1, int(vcpus * per_vcpu))
        threads = (cpu.threads or cpu.cores or 0) if cpu is not None else 0
        sockets = vcpus // threads if acc is None and threads else 0
        src = raw["source"]
        sources = {k: src for k in ("vcpus", "memory_gb", "usd_per_hour", "accelerators")}
        if spot is not None:
            sources["spot_usd_per_hour"] = src
        notes = {"": raw["note"]} if raw.get("note") else {}
        if spot is None:
            notes["spot_usd_per_hour"] = "the catalog row has no spot price"
        estimates = {"host_cpu": raw.get("host_cpu_estimate") or host["estimate"],
                     "host_cores": f"vCPUs x {per_vcpu:g} ({host['estimate']})"}
        if acc is None:
            estimates["host_sockets"] = (f"whole sockets in {vcpus} vCPUs at {threads} threads per '{cpu_id}' "
                                         "socket")
        out.append(ServerType(
            id=raw["id"], name=f"{raw['provider']} {raw['instance_type']}", kind="instance", accelerator=acc,
            count=count, host_cpu=cpu_id, host_sockets=sockets, host_cores=cores, host_memory_gb=memory,
            nic_count=0, nic_gbps=0.0, price_usd=None, accelerators_price_usd=None, host_price_usd=None,
            power_w=None, rack_units=None, usd_per_hour=price, spot_usd_per_hour=spot, provider=raw["provider"],
            region=regions[0] if len(regions) == 1 else None, default_for=(), sources=sources, path=where.file,
            estimates=estimates, notes=notes, vcpus=vcpus, regions=tuple(regions),
            instance_type=raw["instance_type"]))
    return out


def _files(kind: str, config_dir) -> list[Path]:
    folder = _config_dir(config_dir) / kind
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def load_server_types(config_dir=None, catalog=None, skipped: dict | None = None) -> dict[str, ServerType]:
    """Every server type of configs/servers/ whose devices are in `catalog` (a catalog name, a {id: Device}
    mapping, or None: the default catalog), by id. Types left out go to `skipped` {id: reason} when given.
    Two defaults for one device: an InputError naming both files."""
    devices = _catalog(catalog, config_dir)
    out: dict[str, ServerType] = {}
    owner: dict[str, ServerType] = {}
    for path in _files("servers", config_dir):
        data, lines = read_yaml(path)
        where = Where(path, lines)
        st = server_from_mapping(data, where, devices, expect_id=path.stem, skipped=skipped)
        if st is None:
            continue
        for i, d in enumerate(st.default_for):
            if d in owner:
                raise where.error(f"default_for[{i}]", f"'{d}' already has a default server type: "
                                                       f"'{owner[d].id}' ({owner[d].path})")
            owner[d] = st
        out[st.id] = st
    return out


def load_instance_types(config_dir=None, catalog=None, skipped: dict | None = None) -> dict[str, ServerType]:
    """Every cloud instance type of configs/instances/ whose devices are in `catalog`, by id (unique across
    files). Types left out go to `skipped` {id: reason} when given."""
    devices = _catalog(catalog, config_dir)
    out: dict[str, ServerType] = {}
    for path in _files("instances", config_dir):
        data, lines = read_yaml(path)
        where = Where(path, lines)
        for i, st in enumerate(instances_from_mapping(data, where, devices, expect_family=path.stem,
                                                      skipped=skipped)):
            if st.id in out:
                raise InputError(f"instance type id '{st.id}' is also defined in {out[st.id].path}",
                                 file=str(path), line=lines.get(f"instances[{i}]"), field="id")
            out[st.id] = st
    return out


def default_server_type(device_id: str, config_dir=None, catalog=None) -> ServerType:
    """The server type an owned count of `device_id` maps onto (its `default_for`)."""
    for st in load_server_types(config_dir, catalog).values():
        if device_id in st.default_for:
            return st
    raise CatalogError(f"device '{device_id}' has no default server type (no configs/servers/*.yaml lists it in "
                       "default_for)")


def server_types_for(device_id: str, mode: str, config_dir=None, catalog=None) -> list[ServerType]:
    """The types a fleet can get `device_id` in: buy/owned: server types; rent: instance types (sorted by
    accelerators, then id). A device nothing offers: one CostModelError saying so."""
    if mode not in ("buy", "owned", "rent"):
        from hetagent.errors import unknown_choice
        raise unknown_choice("cost mode", mode, ("buy", "owned", "rent"))
    types = (load_instance_types if mode == "rent" else load_server_types)(config_dir, catalog)
    found = sorted((st for st in types.values() if st.device == device_id), key=lambda s: (s.count, s.id))
    if not found:
        if mode == "rent":
            raise CostModelError(f"device '{device_id}' cannot be rented: no instance type in configs/instances/ "
                                 "offers it (buy it or pick another device)")
        raise CostModelError(f"device '{device_id}' has no server type in configs/servers/, so it cannot be "
                             f"{'bought' if mode == 'buy' else 'owned'}")
    return found


def unrentable_devices(config_dir=None, catalog=None) -> dict[str, str]:
    """{device id: reason} for every catalog device no instance type offers."""
    devices = _catalog(catalog, config_dir)
    offered = {st.device for st in load_instance_types(config_dir, devices).values()}
    return {d: "no instance type in configs/instances/ offers it" for d in devices if d not in offered}


# ---------------------------------------------------------------- views and the `servers` command

def servers_json(mode: str = "buy", config_dir=None, catalog=None) -> dict:
    """`hetagent servers --json`: {"version": 1, "mode", "types": [...], "skipped": {id: why},
    "without": {device: why}}."""
    devices = _catalog(catalog, config_dir)
    skipped: dict[str, str] = {}
    if mode == "rent":
        types = load_instance_types(config_dir, devices, skipped)
        without = unrentable_devices(config_dir, devices)
    else:
        types = load_server_types(config_dir, devices, skipped)
        have = {st.device for st in types.values()}
        without = {d: "no server type in configs/servers/" for d in devices if d not in have}
    return {"version": 1, "mode": mode, "types": [st.to_json() for st in types.values()], "skipped": skipped,
            "without": without}


def _money(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def format_servers_table(mode: str = "buy", config_dir=None, catalog=None) -> str:
    doc = servers_json(mode, config_dir, catalog)
    if mode == "rent":
        head = ("id", "device", "n", "vCPU", "mem GB", "$/h", "spot $/h", "regions")
        rows = [(t["id"], t["accelerator"] or f"{t['host_cpu']} (cpu)", str(t["count"]), str(t["vcpus"]),
                 _money(t["host_memory_gb"]), _money(t["usd_per_hour"], 4), _money(t["spot_usd_per_hour"], 4),
                 ",".join(t["regions"])) for t in doc["types"]]
    else:
        head = ("id", "device", "n", "host", "cores", "mem GB", "NICs", "power W", "price $", "default for")
        def mark(t, key, text):
            return f"~{text}" if key in t["estimates"] else text
        rows = [(t["id"], t["accelerator"] or f"{t['host_cpu']} (cpu)", str(t["count"]),
                 f"{t['host_sockets']}x {t['host_cpu']}", mark(t, "host.cores", str(t["host_cores"])),
                 mark(t, "host.memory_gb", _money(t["host_memory_gb"])),
                 f"{t['nic_count']}x{t['nic_gbps']:g}G", mark(t, "power_w", _money(t["power_w"])),
                 mark(t, "host_price_usd", _money(t["price_usd"])), ",".join(t["default_for"]) or "-")
                for t in doc["types"]]
    table = [head, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for d, why in sorted(doc["without"].items()):
        lines.append(f"{d}: {why}")
    for i, why in sorted(doc["skipped"].items()):
        lines.append(f"left out {i}: {why}")
    lines.append("'~' = estimate (see --json for sources and methods)")
    return "\n".join(lines)


def cmd_servers(args) -> None:
    if args.json:
        sys.stdout.write(json.dumps(servers_json(args.mode, catalog=args.catalog), separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(format_servers_table(args.mode, catalog=args.catalog) + "\n")


def add_commands(subparsers) -> None:
    """Register `hetagent servers` on the CLI's subparsers."""
    s = subparsers.add_parser("servers", help="server types to buy or own, and cloud instance types to rent")
    s.add_argument("--mode", choices=["buy", "owned", "rent"], default="buy",
                   help="buy/owned: server types (configs/servers); rent: instance types (configs/instances)")
    s.add_argument("--catalog", default=DEFAULT_CATALOG, help="device catalog (default, paper-2025)")
    s.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    s.set_defaults(func=cmd_servers)
