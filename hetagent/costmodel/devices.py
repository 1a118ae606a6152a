"""The device catalog: one YAML per device kind under configs/devices/ (or configs/devices/<catalog>/).

Every leaf figure in a device file is a mapping {value, source, note?, estimate?, date?}; a null value needs
a note saying why. `Device` carries the plain numbers (what the cost model uses) and `figures`, the same
numbers with their provenance, keyed by dotted path ("peak_tflops.fp16", "scaleup.bandwidth_gbs", ...).
Validation errors name the file, the line and the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


from hetagent.configs import Where, config_dir as _config_dir, read_yaml  # noqa: F401 (re-exported)
from hetagent.errors import unknown_choice

VENDORS = ("nvidia", "amd", "intel")
KINDS = ("gpu", "accelerator", "cpu")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4", "fp4")
FIGURE_KEYS = {"value", "source", "note", "estimate", "date"}
DEFAULT_CATALOG = "default"


MAX_FIGURE = 1e9   # no real device figure (W, $, GB, GB/s, TFLOPS, cores) comes near; overflow does


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------- data classes

@dataclass(frozen=True)
class Figure:
    value: float | None
    source: str | None
    note: str | None = None
    estimate: str | None = None     # the method, where the figure is derived rather than published
    date: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None or k == "value"}


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    vendor: str
    kind: str
    released: str | None
    peak_tflops: dict[str, float]          # dense; only the precisions with a figure (int: TOPS)
    memory_gb: float | None
    memory_bandwidth_gbs: float | None
    tdp_w: float | None
    price_usd: float | None
    rent_usd_per_hour: float | None
    scaleup_bandwidth_gbs: float | None    # per direction per device
    devices_per_node: int | None
    fast_link_group: int | None            # devices sharing the scale-up link (2 for NVLink bridges)
    pcie_bandwidth_gbs: float | None       # host link, per direction
    scaleout_nic_gbps: float | None        # per device
    cores: int | None = None
    threads: int | None = None
    base_clock_ghz: float | None = None
    all_core_clock_ghz: float | None = None
    vector_isa: str | None = None
    matrix_isa: str | None = None
    operating_cost_usd_per_hour: float | None = None   # only the paper-2025 catalog: its printed column
    architecture: str | None = None        # chip family (ampere, ada, hopper, blackwell, cdna3, ...): which fit applies
    efficiency_factor: float = 1.0         # < 1: runs at that share of the cost model's rate (derated copies, fleets)
    figures: dict[str, Figure] = field(default_factory=dict, compare=False)
    path: str | None = field(default=None, compare=False)

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def precisions(self) -> list[str]:
        return [p for p in PRECISIONS if p in self.peak_tflops]

    def sources(self) -> dict[str, str]:
        return {k: f.source for k, f in self.figures.items() if f.value is not None and f.source}

    def estimates(self) -> dict[str, str]:
        return {k: f.estimate for k, f in self.figures.items() if f.estimate}


# ---------------------------------------------------------------- parsing

_TOP = {"id", "name", "vendor", "kind", "released", "peak_tflops", "memory_gb", "memory_bandwidth_gbs",
        "tdp_w", "price_usd", "rent_usd_per_hour", "scaleup", "scaleout_nic_gbps", "host_overhead", "cpu",
        "operating_cost_usd_per_hour", "architecture", "efficiency_factor"}
_REQUIRED = ("id", "name", "vendor", "kind", "peak_tflops", "memory_gb", "memory_bandwidth_gbs", "tdp_w",
             "price_usd", "rent_usd_per_hour", "scaleup", "scaleout_nic_gbps")
_SCALEUP = {"bandwidth_gbs", "devices_per_node", "fast_link_group", "pcie_bandwidth_gbs"}
_CPU = {"cores", "threads", "base_clock_ghz", "all_core_clock_ghz", "vector", "matrix"}


def _figure(raw, fld: str, where: Where, figures: dict[str, Figure]) -> float | None:
    if not isinstance(raw, dict):
        raise where.error(fld, "expected a mapping {value, source, note?, estimate?, date?}")
    extra = set(raw) - FIGURE_KEYS
    if extra:
        raise where.error(fld, f"unknown key(s) {sorted(extra)}; allowed: {sorted(FIGURE_KEYS)}")
    if "value" not in raw:
        raise where.error(fld, "missing 'value' (use value: null with a note when nobody publishes it)")
    value, source = raw["value"], raw.get("source")
    if value is None:
        if not raw.get("note"):
            raise where.error(fld, "value is null: add a note saying why")
    else:
        if not is_number(value):
            raise where.error(fld, f"value must be a number, got {value!r}")
        if value < 0:
            raise where.error(fld, f"value must not be negative, got {value}")
        if value > MAX_FIGURE:
            raise where.error(fld, f"value {value:g} is beyond any real device (at most {MAX_FIGURE:g})")
        if not isinstance(source, str) or not source.strip():
            raise where.error(fld, "every figure needs a source")
    for k in ("note", "estimate", "date", "source"):
        if raw.get(k) is not None and not isinstance(raw[k], str):
            raise where.error(f"{fld}.{k}", "must be a string")
    figures[fld] = Figure(value, source, raw.get("note"), raw.get("estimate"), raw.get("date"))
    return value


def _section(data: dict, name: str, allowed: set, where: Where, required=()) -> dict:
    sec = data.get(name)
    if not isinstance(sec, dict):
        raise where.error(name, "expected a mapping")
    extra = set(sec) - allowed
    if extra:
        raise where.error(f"{name}.{sorted(extra)[0]}", f"unknown key; allowed: {sorted(allowed)}")
    for r in required:
        if r not in sec:
            raise where.error(name, f"missing '{r}'")
    return sec


def _int(v, fld: str, where: Where) -> int | None:
    if v is None:
        return None
    if float(v) != int(v):
        raise where.error(fld, f"must be a whole number, got {v}")
    return int(v)


def device_from_mapping(data, where: Where, expect_id: str | None = None) -> Device:
    """Validate one device mapping (a file's content, or an entry inlined in a fleet file)."""
    if not isinstance(data, dict):
        raise where.error("", "a device must be a mapping")
    for k in data:
        if k not in _TOP:
            raise where.error(str(k), f"unknown field; allowed: {', '.join(sorted(_TOP))}")
    for k in _REQUIRED:
        if k not in data:
            raise where.error("", f"missing required field '{k}'")
    for k in ("id", "name"):
        if not isinstance(data[k], str) or not data[k]:
            raise where.error(k, "must be a non-empty string")
    if expect_id is not None and data["id"] != expect_id:
        raise where.error("id", f"id '{data['id']}' does not match the file name '{expect_id}'")
    if data["vendor"] not in VENDORS:
        raise where.error("vendor", f"must be one of {', '.join(VENDORS)}, got {data['vendor']!r}")
    if data["kind"] not in KINDS:
        raise where.error("kind", f"must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    released = data.get("released")
    if released is not None and not isinstance(released, str):
        raise where.error("released", 'must be a quoted string like "2022-09"')
    arch = data.get("architecture")
    if arch is not None and (not isinstance(arch, str) or not arch or arch != arch.lower()):
        raise where.error("architecture", "must be a lower-case name like 'hopper'")

    figs: dict[str, Figure] = {}
    peaks = _section(data, "peak_tflops", set(PRECISIONS), where)
    peak_tflops = {}
    for p in PRECISIONS:
        if p in peaks:
            v = _figure(peaks[p], f"peak_tflops.{p}", where, figs)
            if v is not None:
                peak_tflops[p] = float(v)
    top = {k: _figure(data[k], k, where, figs)
           for k in ("memory_gb", "memory_bandwidth_gbs", "tdp_w", "price_usd", "rent_usd_per_hour",
                     "scaleout_nic_gbps")}
    opcost = (_figure(data["operating_cost_usd_per_hour"], "operating_cost_usd_per_hour", where, figs)
              if data.get("operating_cost_usd_per_hour") is not None else None)
    eff = (_figure(data["efficiency_factor"], "efficiency_factor", where, figs)
           if data.get("efficiency_factor") is not None else None)
    if eff is not None and not 0 < eff <= 10:
        raise where.error("efficiency_factor", f"must be in (0, 10], got {eff}")
    su = _section(data, "scaleup", _SCALEUP, where, required=("bandwidth_gbs", "devices_per_node"))
    scaleup = {k: _figure(su[k], f"scaleup.{k}", where, figs) if k in su else None for k in _SCALEUP}
    if data.get("host_overhead") is not None:
        ho = _section(data, "host_overhead", set(data["host_overhead"] or {}), where)
        for k, v in ho.items():
            _figure(v, f"host_overhead.{k}", where, figs)

    cpu = {}
    vector_isa = matrix_isa = None
    if data["kind"] == "cpu":
        sec = _section(data, "cpu", _CPU, where, required=("cores", "all_core_clock_ghz", "vector"))
        for k in ("cores", "threads", "base_clock_ghz", "all_core_clock_ghz"):
            cpu[k] = _figure(sec[k], f"cpu.{k}", where, figs) if k in sec else None
        for unit in ("vector", "matrix"):
            u = sec.get(unit)
            if u is None:
                continue
            if not isinstance(u, dict) or not isinstance(u.get("isa"), str) or not u.get("source"):
                raise where.error(f"cpu.{unit}", "expected {isa, <precision>_flops_per_cycle_per_core, source}")
            for k, v in u.items():
                if k.endswith("_per_cycle_per_core"):
                    if not is_number(v):
                        raise where.error(f"cpu.{unit}.{k}", f"must be a number, got {v!r}")
                    figs[f"cpu.{unit}.{k}"] = Figure(v, u["source"], u.get("note"), u.get("estimate"))
            if unit == "vector":
                vector_isa = u["isa"]
            else:
                matrix_isa = u["isa"]
    elif data.get("cpu") is not None:
        raise where.error("cpu", "only devices of kind 'cpu' have a cpu section")

    return Device(
        id=data["id"], name=data["name"], vendor=data["vendor"], kind=data["kind"], released=released,
        peak_tflops=peak_tflops, memory_gb=top["memory_gb"], memory_bandwidth_gbs=top["memory_bandwidth_gbs"],
        tdp_w=top["tdp_w"], price_usd=top["price_usd"], rent_usd_per_hour=top["rent_usd_per_hour"],
        scaleup_bandwidth_gbs=scaleup["bandwidth_gbs"],
        devices_per_node=_int(scaleup["devices_per_node"], "scaleup.devices_per_node", where),
        fast_link_group=_int(scaleup["fast_link_group"], "scaleup.fast_link_group", where),
        pcie_bandwidth_gbs=scaleup["pcie_bandwidth_gbs"], scaleout_nic_gbps=top["scaleout_nic_gbps"],
        cores=_int(cpu.get("cores"), "cpu.cores", where), threads=_int(cpu.get("threads"), "cpu.threads", where),
        base_clock_ghz=cpu.get("base_clock_ghz"), all_core_clock_ghz=cpu.get("all_core_clock_ghz"),
        vector_isa=vector_isa, matrix_isa=matrix_isa, operating_cost_usd_per_hour=opcost, architecture=arch,
        efficiency_factor=float(eff) if eff is not None else 1.0, figures=figs, path=where.file,
    )


def load_device(path: str | Path) -> Device:
    path = Path(path)
    data, lines = read_yaml(path)
    return device_from_mapping(data, Where(path, lines), expect_id=path.stem)


def catalog_dir(catalog: str = DEFAULT_CATALOG, config_dir=None) -> Path:
    base = _config_dir(config_dir) / "devices"
    if catalog in (None, "", DEFAULT_CATALOG):
        return base
    folder = base / catalog
    if not folder.is_dir():
        names = [DEFAULT_CATALOG] + sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise unknown_choice("catalog", catalog, names)
    return folder


def list_catalogs(config_dir=None) -> list[str]:
    base = _config_dir(config_dir) / "devices"
    return [DEFAULT_CATALOG] + sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def load_catalog(catalog: str = DEFAULT_CATALOG, config_dir=None) -> dict[str, Device]:
    """Every device of a catalog, by id (sorted). catalog 'paper-2025' reads configs/devices/paper-2025/."""
    folder = catalog_dir(catalog, config_dir)
    return {p.stem: load_device(p) for p in sorted(folder.glob("*.yaml"))}


def get_device(device_id: str, catalog: str = DEFAULT_CATALOG, config_dir=None) -> Device:
    path = catalog_dir(catalog, config_dir) / f"{device_id}.yaml"
    if not path.is_file():
        raise unknown_choice("device", device_id, load_catalog(catalog, config_dir))
    return load_device(path)


# ---------------------------------------------------------------- views

def cost_efficiency(device: Device) -> dict[str, float | None]:
    """Purchase $ per unit of each resource (None where price or the resource is unknown)."""
    def per(x):
        return round(device.price_usd / x, 4) if device.price_usd is not None and x else None
    fp16 = device.peak_tflops.get("fp16", device.peak_tflops.get("bf16"))
    return {"usd_per_gbs": per(device.memory_bandwidth_gbs), "usd_per_fp16_tflop": per(fp16),
            "usd_per_gb": per(device.memory_gb)}


_PLAIN = ("id", "name", "vendor", "kind", "released", "peak_tflops", "memory_gb", "memory_bandwidth_gbs",
          "tdp_w", "price_usd", "rent_usd_per_hour", "scaleup_bandwidth_gbs", "devices_per_node",
          "fast_link_group", "pcie_bandwidth_gbs", "scaleout_nic_gbps", "cores", "threads",
          "base_clock_ghz", "all_core_clock_ghz", "vector_isa", "matrix_isa", "operating_cost_usd_per_hour")


def device_dict(device: Device) -> dict:
    out = {k: getattr(device, k) for k in _PLAIN}
    if not device.is_cpu:
        for k in ("cores", "threads", "base_clock_ghz", "all_core_clock_ghz", "vector_isa", "matrix_isa"):
            out.pop(k)
    if device.operating_cost_usd_per_hour is None:
        out.pop("operating_cost_usd_per_hour")
    out["sources"] = device.sources()
    out["estimates"] = device.estimates()
    out["notes"] = {k: f.note for k, f in device.figures.items() if f.note}
    out["dates"] = {k: f.date for k, f in device.figures.items() if f.date}
    out["cost_efficiency"] = cost_efficiency(device)
    out["architecture"] = device.architecture
    if device.efficiency_factor != 1.0:
        out["efficiency_factor"] = device.efficiency_factor
    from hetagent.costmodel.uncertainty import device_calibration
    out["calibration"] = device_calibration(device)
    return out


def devices_json(catalog: str = DEFAULT_CATALOG, config_dir=None) -> dict:
    """`hetagent devices --json`: exactly {"version": 1, "devices": [...]}."""
    return {"version": 1, "devices": [device_dict(d) for d in load_catalog(catalog, config_dir).values()]}


def _fmt(x, digits=0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def format_devices_table(catalog: str = DEFAULT_CATALOG, config_dir=None) -> str:
    """Readable text table for `hetagent devices`; '~' marks an estimated figure."""
    devices = load_catalog(catalog, config_dir)
    from hetagent.costmodel.uncertainty import interval, status
    head = ("id", "kind", "fp16/bf16 TF", "fp8 TF", "mem GB", "BW GB/s", "TDP W", "price $", "rent $/h",
            "$/GB/s", "$/TFLOP", "calibration", "time x")
    rows = [head]
    for d in devices.values():
        def mark(key, text):
            f = d.figures.get(key)
            return f"~{text}" if f is not None and f.estimate and f.value is not None else text
        fp16_key = "peak_tflops.fp16" if "fp16" in d.peak_tflops else "peak_tflops.bf16"
        eff = cost_efficiency(d)
        rows.append((
            d.id, d.kind,
            mark(fp16_key, _fmt(d.peak_tflops.get("fp16", d.peak_tflops.get("bf16")), 1)),
            mark("peak_tflops.fp8", _fmt(d.peak_tflops.get("fp8"), 0)),
            mark("memory_gb", _fmt(d.memory_gb, 0)),
            mark("memory_bandwidth_gbs", _fmt(d.memory_bandwidth_gbs, 0)),
            mark("tdp_w", _fmt(d.tdp_w, 0)),
            mark("price_usd", _fmt(d.price_usd, 0)),
            mark("rent_usd_per_hour", _fmt(d.rent_usd_per_hour, 2)),
            _fmt(eff["usd_per_gbs"], 2), _fmt(eff["usd_per_fp16_tflop"], 1),
            st := status(d), "{low:.2f}-{high:.2f}".format(**iv) if (iv := interval(st, d))["low"] else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"catalog: {catalog or DEFAULT_CATALOG}; peaks as given in the files (default catalog: dense); '~' = estimate (see --json for sources "
                 "and methods)")
    lines.append("calibration: measured (operator measurements of the device), calibrated (end-to-end MLPerf results), "
                 "datasheet (peaks with another device's fit); time x: the range of true / predicted time its class "
                 "showed in cross-validation")
    return "\n".join(lines)
