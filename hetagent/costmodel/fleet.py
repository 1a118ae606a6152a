"""Fleets: what may be bought or rented, or an owned inventory (configs/fleets/<name>.yaml).

Schema: {name, mode: buy|rent|owned, catalog?: default, devices: all | [{id, max_count?, owned?}],
extra_devices?: [device mappings inline, same schema as configs/devices/*.yaml]}.
`owned` is how many the user already has (capex sunk); `max_count` caps how many a plan may use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hetagent.configs import named_or_path
from hetagent.costmodel.devices import Device, Where, device_from_mapping, load_catalog, read_yaml
from hetagent.errors import summarize, unknown_choice

MODES = ("buy", "rent", "owned")
MAX_UNITS = 1_000_000   # devices of one kind a fleet may own or cap at


@dataclass(frozen=True)
class FleetEntry:
    id: str
    max_count: int | None = None     # None: no cap
    owned: int = 0                   # units already owned (capex sunk)


@dataclass(frozen=True)
class Fleet:
    name: str
    mode: str
    catalog: str = "default"
    devices: str | tuple[FleetEntry, ...] = "all"
    extra_devices: dict[str, Device] = field(default_factory=dict)
    path: str | None = None

    def resolve(self, config_dir=None) -> tuple[dict[str, Device], dict[str, FleetEntry], dict[str, str]]:
        """(devices by id, entries by id, skipped {id: reason}) for this fleet.

        Devices the mode cannot price are skipped with a reason: no price in buy mode, no rent in rent mode.
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
        skipped = {}
        for i in list(entries):
            d = catalog[i]
            if self.mode == "buy" and d.price_usd is None and entries[i].owned == 0:
                skipped[i] = "no purchase price (price_usd is null)"
            elif self.mode == "rent" and d.rent_usd_per_hour is None:
                skipped[i] = "no rental price (rent_usd_per_hour is null)"
            if i in skipped:
                del entries[i]
        return {i: catalog[i] for i in entries}, entries, skipped


def load_fleet(name_or_path: str | Path = "default", config_dir=None) -> Fleet:
    """A fleet by name (configs/fleets/<name>.yaml) or by path."""
    path = named_or_path("fleets", name_or_path, config_dir)
    data, lines = read_yaml(path)
    where = Where(path, lines)
    if not isinstance(data, dict):
        raise where.error("", "a fleet must be a mapping")
    allowed = {"name", "mode", "catalog", "devices", "extra_devices"}
    for k in data:
        if k not in allowed:
            raise where.error(str(k), f"unknown field; allowed: {', '.join(sorted(allowed))}")
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

    raw = data.get("devices", "all")
    if raw == "all":
        devices: str | tuple[FleetEntry, ...] = "all"
    elif isinstance(raw, list) and raw:
        entries = []
        for i, e in enumerate(raw):
            w = Where(path, lines, f"devices[{i}]")
            if isinstance(e, str):
                e = {"id": e}
            if not isinstance(e, dict) or not isinstance(e.get("id"), str):
                raise w.error("", "expected {id, max_count?, owned?}")
            bad = set(e) - {"id", "max_count", "owned"}
            if bad:
                raise w.error(sorted(bad)[0], "unknown key; allowed: id, max_count, owned")
            for k in ("max_count", "owned"):
                v = e.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_UNITS):
                    raise w.error(k, f"must be a whole number from 0 to {MAX_UNITS}, got {v!r}")
            owned = e.get("owned") or 0
            if mode == "owned" and owned == 0:
                raise w.error("owned", "an owned fleet must say how many units it owns")
            if e.get("max_count") is not None and e["max_count"] < owned:
                raise w.error("max_count", f"max_count {e['max_count']} is below owned {owned}")
            entries.append(FleetEntry(e["id"], e.get("max_count"), owned))
        devices = tuple(entries)
    else:
        raise where.error("devices", "expected 'all' or a non-empty list of {id, max_count?, owned?}")
    fleet = Fleet(name=str(data.get("name", path.stem)), mode=mode, catalog=catalog, devices=devices,
                  extra_devices=extra, path=str(path))
    if devices != "all":             # fail early, naming the line, on an unknown id
        known = set(load_catalog(catalog, config_dir)) | set(extra)
        for i, e in enumerate(devices):
            if e.id not in known:
                raise Where(path, lines, f"devices[{i}]").error(
                    "id", f"unknown device '{e.id}' in catalog '{catalog}'; choices: {summarize(sorted(known), 24)}")
    return fleet


def buyable_devices(catalog: str = "default", config_dir=None) -> dict[str, Device]:
    """Every catalog device that can be bought: those with a purchase price. What planning without a fleet uses
    ("every catalog device may be bought"), as the default fleet resolves in buy mode."""
    return {k: d for k, d in load_catalog(catalog, config_dir).items() if d.price_usd is not None}
