"""Fleets: what may be bought or rented, or an owned inventory (configs/fleets/<name>.yaml).

Schema (FLEET_SCHEMA below, printed by `hetagent schema fleet`; the loader checks the same definition):
{name, mode: buy|rent|owned, catalog?: default, devices?: all | [{id, max_count?, owned?}],
servers?: [{type, owned?, max_count?}], extra_devices?: [device mappings inline, as configs/devices/*.yaml]}.
`owned` is how many the user already has (capex sunk); `max_count` caps how many a plan may use. A device
count is in accelerators (or CPU sockets); an owned count maps onto servers of the device's default server
type (docs/placement.md). `servers` lists server types (configs/servers) or, in rent mode, instance types
(configs/instances) by id; without `devices`, the fleet holds only the devices of its servers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hetagent.configs import named_or_path
from hetagent.costmodel.devices import DEFAULT_CATALOG, Device, Where, device_from_mapping, load_catalog, read_yaml
from hetagent.errors import summarize, unknown_choice

MODES = ("buy", "rent", "owned")
MAX_UNITS = 1_000_000   # devices (or servers) of one kind a fleet may own or cap at

_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_UNITS}
FLEET_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "hetagent fleet",
    "description": "What a plan may buy or rent, or an owned inventory (configs/fleets/<name>.yaml).",
    "type": "object",
    "required": ["mode"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "the fleet's name (default: the file name)"},
        "mode": {"enum": list(MODES), "description": "buy: servers are bought (capex annuity); rent: cloud "
                 "instances by the hour; owned: only what is owned (capex sunk)"},
        "catalog": {"type": "string", "description": "device catalog (default; paper-2025 prices single "
                    "devices, without server types)"},
        "devices": {"description": "'all' (every catalog device the mode can price) or the devices allowed",
                    "oneOf": [{"const": "all"}, {"type": "array", "minItems": 1, "items": {"oneOf": [
                        {"type": "string", "description": "a device id"},
                        {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
                            "id": {"type": "string", "description": "a catalog device id"},
                            "max_count": {**_COUNT, "description": "most devices (accelerators or CPU sockets) "
                                          "a plan may hold"},
                            "owned": {**_COUNT, "description": "devices already owned; they map onto servers "
                                      "of the device's default server type"}}}]}}]},
        "servers": {"type": "array", "minItems": 1, "description": "server types (buy, owned) or instance "
                    "types (rent) by id, with what is owned of each",
                    "items": {"type": "object", "required": ["type"], "additionalProperties": False,
                              "properties": {
                                  "type": {"type": "string", "description": "a configs/servers id (buy, owned) "
                                           "or a configs/instances id (rent)"},
                                  "owned": {**_COUNT, "description": "servers of this type already owned"},
                                  "max_count": {**_COUNT, "description": "most servers of this type a plan "
                                                "may hold (owned mode: the owned count)"}}}},
        "extra_devices": {"type": "array", "description": "devices added to the catalog for this fleet, "
                          "each as a configs/devices/*.yaml mapping", "items": {"type": "object"}},
    },
}
_TOP = set(FLEET_SCHEMA["properties"])
_DEVICE_KEYS = set(FLEET_SCHEMA["properties"]["devices"]["oneOf"][1]["items"]["oneOf"][1]["properties"])
_SERVER_KEYS = set(FLEET_SCHEMA["properties"]["servers"]["items"]["properties"])


def fleet_json_schema() -> dict:
    """The JSON Schema of fleet files (`hetagent schema fleet`)."""
    return FLEET_SCHEMA


@dataclass(frozen=True)
class FleetEntry:
    id: str
    max_count: int | None = None     # None: no cap
    owned: int = 0                   # units already owned (capex sunk)


@dataclass(frozen=True)
class FleetServer:
    type: str                        # server type id (buy, owned) or instance type id (rent)
    device: str                      # the device it provides (accelerator, or CPU of a CPU-only type)
    owned: int = 0                   # servers already owned
    max_count: int | None = None     # most servers of this type; None: no cap (owned mode: owned)


def uses_servers(catalog: str | None) -> bool:
    """Whether a catalog's devices come as whole servers and instances (configs/servers, configs/instances):
    the default catalog does; others (paper-2025) price single devices."""
    return (catalog or DEFAULT_CATALOG) == DEFAULT_CATALOG


def _server_priced(catalog: dict, mode: str, config_dir=None) -> set[str]:
    """Devices some server type (buy) or instance type (rent) can price."""
    from hetagent.costmodel.servers import load_instance_types, load_server_types
    if mode == "rent":
        return {st.device for st in load_instance_types(config_dir, catalog).values()}
    return {st.device for st in load_server_types(config_dir, catalog).values()
            if st.price_usd is not None or (st.host_price_usd is not None and st.accelerators_price_usd is not None)}


@dataclass(frozen=True)
class Fleet:
    name: str
    mode: str
    catalog: str = "default"
    devices: str | tuple[FleetEntry, ...] = "all"
    extra_devices: dict[str, Device] = field(default_factory=dict)
    path: str | None = None
    servers: tuple[FleetServer, ...] = ()

    @property
    def has_inventory(self) -> bool:
        """Whether something caps what the fleet may hold (owned or max counts): --max-rate needs it."""
        entries = () if self.devices == "all" else self.devices
        return any(e.max_count is not None or e.owned for e in entries) or \
            any(s.max_count is not None or s.owned for s in self.servers) or (self.mode == "owned" and self.servers)

    def resolve(self, config_dir=None) -> tuple[dict[str, Device], dict[str, FleetEntry], dict[str, str]]:
        """(devices by id, entries by id, skipped {id: reason}) for this fleet.

        Devices the mode cannot price are skipped with a reason: no price in buy mode, nothing to rent in rent
        mode. With the default catalog a device is priced by its server types (buy) or instance types (rent):
        a device that only comes in servers can be bought, and one no instance type offers cannot be rented.
        The devices of `servers` are in the fleet (without a count of their own).
        """
        catalog = {**load_catalog(self.catalog, config_dir), **self.extra_devices}
        if self.devices == "all":
            entries = {i: FleetEntry(i) for i in catalog}
        else:
            entries = {}
            for e in self.devices:
                if e.id not in catalog:
                    raise unknown_choice(f"device in fleet '{self.name}'", e.id, catalog)
                entries[e.id] = e
        for s in self.servers:
            entries.setdefault(s.device, FleetEntry(s.device))
        servers = uses_servers(self.catalog)
        priced = _server_priced(catalog, self.mode, config_dir) if servers and self.mode != "owned" else set()
        listed = {s.device for s in self.servers}
        skipped = {}
        for i in list(entries):
            d = catalog[i]
            if i in listed or i in self.extra_devices and (self.mode == "owned" or entries[i].owned):
                continue
            if self.mode == "buy" and d.price_usd is None and entries[i].owned == 0 and i not in priced:
                skipped[i] = "no purchase price (price_usd is null) and no server type with a price"
            elif self.mode == "rent" and servers and i not in self.extra_devices and i not in priced:
                skipped[i] = ("the catalog cannot rent it: no instance type in configs/instances/ offers it "
                              "(buy or own it instead)")
            elif self.mode == "rent" and not servers and d.rent_usd_per_hour is None:
                skipped[i] = "no rental price (rent_usd_per_hour is null)"
            if i in skipped:
                del entries[i]
        return {i: catalog[i] for i in entries}, entries, skipped


def _count(e: dict, k: str, w: Where):
    v = e.get(k)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_UNITS):
        raise w.error(k, f"must be a whole number from 0 to {MAX_UNITS}, got {v!r}")
    return v


def _entry(e, key: str, allowed: set, mode: str, what: str, w: Where) -> tuple[dict, int, int | None]:
    """One entry of a fleet's `devices` or `servers` list checked (a bare string is its `key`): the entry,
    how many are owned, and the most allowed (max_count, None: no limit)."""
    if isinstance(e, str):
        e = {key: e}
    if not isinstance(e, dict) or not isinstance(e.get(key), str):
        raise w.error("", f"expected {{{key}, max_count?, owned?}}")
    bad = set(e) - allowed
    if bad:
        raise w.error(sorted(bad)[0], f"unknown key; allowed: {', '.join(sorted(allowed))}")
    owned, cap = _count(e, "owned", w) or 0, _count(e, "max_count", w)
    if mode == "owned" and owned == 0:
        raise w.error("owned", f"an owned fleet must say how many {what} it owns")
    if cap is not None and cap < owned:
        raise w.error("max_count", f"max_count {cap} is below owned {owned}")
    return e, owned, cap


def _device_entries(raw, mode: str, path, lines) -> tuple[FleetEntry, ...]:
    entries = []
    for i, e in enumerate(raw):
        w = Where(path, lines, f"devices[{i}]")
        e, owned, cap = _entry(e, "id", _DEVICE_KEYS, mode, "units", w)
        entries.append(FleetEntry(e["id"], cap, owned))
    return tuple(entries)


def _server_entries(raw, mode: str, catalog: str, extra: dict, path, lines, config_dir) -> tuple[FleetServer, ...]:
    from hetagent.costmodel.servers import load_instance_types, load_server_types
    if not isinstance(raw, list) or not raw:
        raise Where(path, lines).error("servers", "expected a non-empty list of {type, owned?, max_count?}")
    if not uses_servers(catalog):
        raise Where(path, lines).error("servers", f"catalog '{catalog}' prices single devices; servers need the "
                                                  f"'{DEFAULT_CATALOG}' catalog")
    devices = {**load_catalog(catalog, config_dir), **extra}
    types = (load_instance_types if mode == "rent" else load_server_types)(config_dir, devices)
    out, seen = [], set()
    for i, e in enumerate(raw):
        w = Where(path, lines, f"servers[{i}]")
        e, owned, cap = _entry(e, "type", _SERVER_KEYS, mode, "servers of each type", w)
        st = types.get(e["type"])
        if st is None:
            what = "instance type (configs/instances/; rent mode)" if mode == "rent" else \
                "server type (configs/servers/)"
            raise w.error("type", f"unknown {what} '{e['type']}'; choices: {summarize(sorted(types), 24)}")
        if e["type"] in seen:
            raise w.error("type", f"'{e['type']}' is listed twice")
        seen.add(e["type"])
        if mode == "rent" and owned:
            raise w.error("owned", "rented instances are not owned (mode: rent)")
        out.append(FleetServer(st.id, st.device, owned, cap))
    return tuple(out)


def load_fleet(name_or_path: str | Path = "default", config_dir=None) -> Fleet:
    """A fleet by name (configs/fleets/<name>.yaml) or by path."""
    path = named_or_path("fleets", name_or_path, config_dir)
    data, lines = read_yaml(path)
    where = Where(path, lines)
    if not isinstance(data, dict):
        raise where.error("", "a fleet must be a mapping")
    for k in data:
        if k not in _TOP:
            raise where.error(str(k), f"unknown field; allowed: {', '.join(sorted(_TOP))}")
    mode = data.get("mode")
    if mode not in MODES:
        raise where.error("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    catalog = data.get("catalog", "default")
    if not isinstance(catalog, str):
        raise where.error("catalog", "must be a catalog name")

    extra = {}
    raw_extra = data.get("extra_devices") or []
    if not isinstance(raw_extra, list):
        raise where.error("extra_devices", "expected a list of device mappings")
    for i, d in enumerate(raw_extra):
        dev = device_from_mapping(d, Where(path, lines, f"extra_devices[{i}]"))
        extra[dev.id] = dev

    servers = _server_entries(data["servers"], mode, catalog, extra, path, lines, config_dir) \
        if "servers" in data else ()
    raw = data.get("devices", "all" if not servers else None)
    if raw is None:
        devices: str | tuple[FleetEntry, ...] = ()
    elif raw == "all":
        devices = "all"
    elif isinstance(raw, list) and raw:
        devices = _device_entries(raw, mode, path, lines)
    else:
        raise where.error("devices", "expected 'all' or a non-empty list of {id, max_count?, owned?}")
    fleet = Fleet(name=str(data.get("name", path.stem)), mode=mode, catalog=catalog, devices=devices,
                  extra_devices=extra, path=str(path), servers=servers)
    if devices != "all":             # fail early, naming the line, on an unknown id
        known = set(load_catalog(catalog, config_dir)) | set(extra)
        for i, e in enumerate(devices):
            if e.id not in known:
                raise Where(path, lines, f"devices[{i}]").error(
                    "id", f"unknown device '{e.id}' in catalog '{catalog}'; choices: {summarize(sorted(known), 24)}")
    return fleet


def buyable_devices(catalog: str = "default", config_dir=None) -> dict[str, Device]:
    """Every catalog device that can be bought: those with a purchase price, or (default catalog) a server type
    with one. What planning without a fleet uses ("every catalog device may be bought"), as the default fleet
    resolves in buy mode."""
    devices = load_catalog(catalog, config_dir)
    priced = _server_priced(devices, "buy", config_dir) if uses_servers(catalog) else set()
    return {k: d for k, d in devices.items() if d.price_usd is not None or k in priced}
