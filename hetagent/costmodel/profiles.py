"""Measured profiles: numbers a user supplies that override the analytical cost model.

A profile file (YAML) gives latency and price per (operator kind, device), a price per device-hour,
and latency and price per transfer between two devices. Devices may exist in the profile alone (the
paper's abstract HP and CO devices). The paper's Table 3 is configs/examples/paper_table3/profiles.yaml:

    version: 1
    name: paper-table3
    devices:                      # optional; ids not in the catalog are declared here
      hp: {description: high-performance accelerator}
      co: {description: cost-optimized accelerator, price_per_hour: 0.0, memory_gb: 48, cpu: false}
    operators:                    # one entry per (kind, device [, option]); later entries win
      - kind: llm.prefill
        device: hp
        latency_ms: 80            # per execution; or latency_ms_per_token (x the operator's tokens)
        price_per_token: 0.00008  # and/or price_per_execution ($)
        # optional: match {attr: value} (e.g. model), operator (one operator's name), tp, pp, batch,
        #           precision, throughput_rps (per replica; default batch*1000/latency_ms),
        #           memory_gb, power_w, bound, ttft_ms, tbt_ms, tokens (attr name holding the token count)
    transfers:                    # between two devices; none when both ends share a device
      - from: hp
        to: co
        latency_ms: 10            # and/or latency_ms_per_token
        price_per_token: 0.000005 # and/or price_per_execution
        # optional: kinds [llm.kv_transfer] (default: every edge), both_directions (default false)

Tokens of an operator: llm.prefill prompt_tokens, llm.decode output_tokens, llm.kv_transfer tokens,
llm.remote prompt_tokens + output_tokens, otherwise attrs["tokens"] (or the attr named by `tokens`).
Errors name the file, line and field (InputError).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


from hetagent.costmodel.types import BOUNDS, DeviceOption, OpCost
from hetagent.errors import InputError

_TOKEN_ATTR = {"llm.prefill": ("prompt_tokens",), "llm.decode": ("output_tokens",),
               "llm.kv_transfer": ("tokens",), "llm.remote": ("prompt_tokens", "output_tokens")}


@dataclass
class ProfileDevice:
    id: str
    price_per_hour: float | None = None   # $/hour per device; None: the TCO model prices it
    memory_gb: float | None = None
    cpu: bool = False
    description: str = ""


@dataclass
class ProfileEntry:
    kind: str
    option: DeviceOption
    latency_ms: float = 0.0
    latency_ms_per_token: float = 0.0
    price_per_execution: float = 0.0
    price_per_token: float = 0.0
    throughput_rps: float | None = None
    memory_gb: float = 0.0
    power_w: float = 0.0
    bound: str = "latency"
    ttft_ms: float | None = None
    tbt_ms: float | None = None
    match: dict = field(default_factory=dict)
    operator: str | None = None
    tokens: str | None = None
    line: int = 0


@dataclass
class ProfileTransfer:
    src: str
    dst: str
    latency_ms: float = 0.0
    latency_ms_per_token: float = 0.0
    price_per_execution: float = 0.0
    price_per_token: float = 0.0
    kinds: tuple[str, ...] = ()
    line: int = 0


@dataclass
class Profiles:
    source: str
    name: str = ""
    devices: dict[str, ProfileDevice] = field(default_factory=dict)
    entries: list[ProfileEntry] = field(default_factory=list)
    transfers: list[ProfileTransfer] = field(default_factory=list)
    text: str = ""                       # the file's text, kept so a plan can embed it

    def device_ids(self) -> set[str]:
        return set(self.devices) | {e.option.device for e in self.entries}


# --- YAML with line numbers --------------------------------------------------------------------

class _Map(dict):
    lines: dict
    line: int


def _as_maps(located, data=None, path: tuple = ()):
    """The guarded reader's plain data (hetagent.guarded) with every mapping as a _Map carrying its
    line and its keys' lines, as the checks below expect."""
    data = located.data if data is None and not path else data
    if isinstance(data, dict):
        m = _Map()
        m.line = located.line_of(path) or 1
        m.lines = {}
        for k, v in data.items():
            m[k] = _as_maps(located, v, path + (k,))
            m.lines[k] = located.line_of(path + (k,))
        return m
    if isinstance(data, list):
        return [_as_maps(located, v, path + (i,)) for i, v in enumerate(data)]
    return data


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def err(self, msg, m=None, key=None):
        line = None
        if isinstance(m, _Map):
            line = m.lines.get(key, m.line) if key is not None else m.line
        return InputError(msg, file=self.source, line=line, field=key)

    def num(self, m, key, default=0.0, minimum=0.0):
        if key not in m or m[key] is None:
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < minimum:
            raise self.err(f"must be a number >= {minimum:g}, got {v!r}", m, key)
        return float(v)

    def intv(self, m, key, default=1):
        v = m.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.err(f"must be an integer >= 1, got {v!r}", m, key)
        return v

    def string(self, m, key, required=False, default=None):
        if key not in m:
            if required:
                raise self.err(f"missing required field '{key}'", m)
            return default
        v = m[key]
        if not isinstance(v, str) or not v:
            raise self.err(f"must be a non-empty string, got {v!r}", m, key)
        return v

    def check_keys(self, m, allowed, what):
        for k in m:
            if k not in allowed:
                raise self.err(f"unknown field in {what}; allowed: {', '.join(sorted(allowed))}", m, k)


_DEV_KEYS = {"price_per_hour", "memory_gb", "cpu", "description", "name"}
_OP_KEYS = {"kind", "device", "latency_ms", "latency_ms_per_token", "price_per_execution", "price_per_token",
            "throughput_rps", "memory_gb", "power_w", "bound", "ttft_ms", "tbt_ms", "match", "operator",
            "tokens", "tp", "pp", "batch", "precision"}
_TR_KEYS = {"from", "to", "latency_ms", "latency_ms_per_token", "price_per_execution", "price_per_token",
            "kinds", "both_directions"}


def parse_profiles(text: str, source: str = "<profiles>") -> Profiles:
    """Parse profile YAML text; errors name `source`, the line and the field."""
    from hetagent.guarded import parse_yaml
    r = _Reader(source)
    doc = _as_maps(parse_yaml(text, source))
    if not isinstance(doc, _Map):
        raise InputError("a profile file is a mapping with devices, operators, transfers", file=source)
    r.check_keys(doc, {"version", "name", "devices", "operators", "transfers", "description"}, "the profile")
    if doc.get("version", 1) != 1:
        raise r.err("only version 1 is known", doc, "version")
    prof = Profiles(source=source, name=str(doc.get("name", "")), text=text)
    devs = doc.get("devices") or {}
    if not isinstance(devs, dict):
        raise r.err("must be a mapping {device id: {...}}", doc, "devices")
    for did, d in devs.items():
        d = d if d is not None else _Map()
        if not isinstance(d, dict):
            raise r.err("must be a mapping", devs, did)
        r.check_keys(d, _DEV_KEYS, f"device '{did}'")
        pph = r.num(d, "price_per_hour", None)
        mem = r.num(d, "memory_gb", None)
        prof.devices[str(did)] = ProfileDevice(str(did), pph, mem, bool(d.get("cpu", False)),
                                               str(d.get("description", d.get("name", ""))))
    ops = doc.get("operators") or []
    if not isinstance(ops, list):
        raise r.err("must be a list", doc, "operators")
    for e in ops:
        if not isinstance(e, _Map):
            raise r.err("each operator entry must be a mapping", doc, "operators")
        r.check_keys(e, _OP_KEYS, "an operator entry")
        kind, dev = r.string(e, "kind", True), r.string(e, "device", True)
        bound = e.get("bound", "latency")
        if bound not in BOUNDS:
            raise r.err(f"must be one of {', '.join(BOUNDS)}", e, "bound")
        if "latency_ms" not in e and "latency_ms_per_token" not in e:
            raise r.err("needs latency_ms or latency_ms_per_token", e, "latency_ms")
        match = e.get("match") or {}
        if not isinstance(match, dict):
            raise r.err("must be a mapping {attr: value}", e, "match")
        thr = r.num(e, "throughput_rps", None)
        if thr is not None and thr <= 0:
            raise r.err("must be > 0", e, "throughput_rps")
        opt = DeviceOption(dev, r.intv(e, "tp"), r.intv(e, "pp"), r.intv(e, "batch"),
                           r.string(e, "precision", default="fp16"))
        prof.entries.append(ProfileEntry(
            kind, opt, r.num(e, "latency_ms"), r.num(e, "latency_ms_per_token"),
            r.num(e, "price_per_execution"), r.num(e, "price_per_token"), thr, r.num(e, "memory_gb"),
            r.num(e, "power_w"), bound, r.num(e, "ttft_ms", None), r.num(e, "tbt_ms", None), dict(match),
            r.string(e, "operator"), r.string(e, "tokens"), e.line))
    trs = doc.get("transfers") or []
    if not isinstance(trs, list):
        raise r.err("must be a list", doc, "transfers")
    for t in trs:
        if not isinstance(t, _Map):
            raise r.err("each transfer entry must be a mapping", doc, "transfers")
        r.check_keys(t, _TR_KEYS, "a transfer entry")
        kinds = t.get("kinds") or []
        if isinstance(kinds, str):
            kinds = [kinds]
        if not isinstance(kinds, list):
            raise r.err("must be a list of operator kinds", t, "kinds")
        src, dst = r.string(t, "from", True), r.string(t, "to", True)
        vals = [r.num(t, k) for k in ("latency_ms", "latency_ms_per_token", "price_per_execution",
                                      "price_per_token")]
        prof.transfers.append(ProfileTransfer(src, dst, *vals, tuple(kinds), t.line))
        if t.get("both_directions", False):
            prof.transfers.append(ProfileTransfer(dst, src, *vals, tuple(kinds), t.line))
    return prof


def load_profiles(path: str | Path) -> Profiles:
    """Read a profile file (errors name the file, line and field)."""
    from hetagent.guarded import read_text
    return parse_profiles(read_text(path, "profiles"), str(path))


# --- lookups ------------------------------------------------------------------------------------

def op_tokens(op, attr: str | None = None) -> float:
    """Token count an operator's per-token figures multiply."""
    names = (attr,) if attr else _TOKEN_ATTR.get(op.kind, ("tokens",))
    return float(sum(float(op.attrs.get(n, 0) or 0) for n in names))


def _matches(e: ProfileEntry, op) -> bool:
    if e.kind != op.kind or (e.operator and e.operator != op.name):
        return False
    return all(str(op.attrs.get(k)) == str(v) for k, v in e.match.items())


def profile_cost_table(graph, profiles: Profiles) -> dict:
    """{operator name: {DeviceOption: OpCost}} for the operators the profile covers (same shape as
    costmodel.operators.cost_table); operators without a matching entry are left out."""
    table: dict = {}
    for op in graph.operators:
        opts: dict = {}
        for e in profiles.entries:          # later entries override earlier ones
            if not _matches(e, op):
                continue
            lat, price = charge(e, op_tokens(op, e.tokens))
            thr = e.throughput_rps or (e.option.batch * 1000.0 / lat if lat > 0 else 1e9)
            detail = {"source": f"{profiles.source}:{e.line}", "profiled": True}
            if e.ttft_ms is not None:
                detail["ttft_ms"] = e.ttft_ms
            if e.tbt_ms is not None:
                detail["tbt_ms"] = e.tbt_ms
            opts[e.option] = OpCost(lat, thr, e.memory_gb, e.power_w, e.bound, price, detail)
        if opts:
            table[op.name] = opts
    return table


def apply_profiles(table: dict, graph, profiles: Profiles) -> dict:
    """The analytical `table` with profiled operators overridden: for an operator a profile covers on
    device D, the profile's options replace every analytical option on D; other devices stay."""
    prof = profile_cost_table(graph, profiles)
    out = {name: dict(opts) for name, opts in table.items()}
    for name, popts in prof.items():
        devs = {o.device for o in popts}
        kept = {o: c for o, c in out.get(name, {}).items() if o.device not in devs}
        kept.update(popts)
        out[name] = kept
    return out


def profile_transfer(profiles: Profiles, src: str, dst: str, kind: str | None = None,
                     tokens: float = 0.0) -> tuple[float, float] | None:
    """(latency ms, price $) of one transfer src -> dst from the profile, or None if it names none.
    Same device: (0, 0)."""
    if src == dst:
        return 0.0, 0.0
    hit = None
    for t in profiles.transfers:
        if t.src == src and t.dst == dst and (not t.kinds or kind in t.kinds):
            hit = t
    return None if hit is None else charge(hit, tokens)


def charge(e: ProfileEntry | ProfileTransfer, tokens: float) -> tuple[float, float]:
    """(latency ms, price $) of one execution of a profiled operator or transfer over `tokens`."""
    return (e.latency_ms + e.latency_ms_per_token * tokens,
            e.price_per_execution + e.price_per_token * tokens)


def profile_hour_costs(profiles: Profiles) -> dict[str, dict]:
    """{device: {capex, power, opex, total}} for devices whose price per hour the profile gives."""
    return {d.id: {"capex": 0.0, "power": 0.0, "opex": d.price_per_hour, "total": d.price_per_hour}
            for d in profiles.devices.values() if d.price_per_hour is not None}


def profiles_cover(graphs, profiles: Profiles) -> bool:
    """Profiles alone suffice when they price every operator of every workflow (KV hand-offs are
    transfers, priced by the profile's `transfers`)."""
    for g in graphs:
        table = profile_cost_table(g, profiles)
        if any(not any(not isinstance(c, str) for c in table.get(o.name, {}).values())
               for o in g.operators if o.kind != "llm.kv_transfer"):
            return False
    return True
