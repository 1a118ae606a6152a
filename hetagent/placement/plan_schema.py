"""plan.json's schema, checked every time a plan is read, before `report`, `simulate`, `run`, `serve`,
`build` or a deployment uses it (hetagent.placement.plan.read_plan_json calls `validate`).

Two layers:
- **shape**: the declarative records below (types, ranges, required keys). Numbers must be finite;
  counts are whole numbers in range. Keys a record does not list are accepted untouched (newer
  writers add keys), so adding a key to the schema is one line in the record that holds it.
- **meaning**: operator names unique, every device in the fleet, the pools and the placements one the plan's
  catalog, embedded fleet or profiles define (a plan stripped of `inputs` names no catalog: then only
  consistency is checked), every placed device in the fleet (or a host CPU of its deployment's servers), every pool's model a model card, every
  operator kind one the IR defines. `check_operators` holds placements against the operators of the embedded
  workflow once a stage has rebuilt them.

Every error is one InputError naming the file, the line (found in the JSON text on demand) and the
field, e.g. `plan.json:41: field 'placements[3].replicas': must be a whole number >= 0, got -2`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hetagent.errors import InputError, summarize
from hetagent.guarded import Located, dotted

MAX_COUNT = 1_000_000            # replicas, batch, devices of one kind
MAX_DEGREE = 1024                # tp, pp
MAX_MS = 1e12                    # any latency in ms (31 years)
MAX_USD = 1e15


class _Spec:
    optional: bool = False       # None accepted

    def check(self, value, path: tuple, fail) -> None:
        if value is None and self.optional:
            return
        self._check(value, path, fail)

    def _check(self, value, path: tuple, fail) -> None:   # each kind of value says what it accepts
        raise NotImplementedError


@dataclass(frozen=True)
class Num(_Spec):
    """A finite number (bool is not a number) within [ge, le], above gt."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    optional: bool = False

    def _check(self, value, path, fail):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(path, f"must be a finite number{self._range()}, got {_show(value)}")
        if (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt) \
                or (self.le is not None and value > self.le):
            fail(path, f"must be a number{self._range()}, got {_show(value)}")

    def _range(self) -> str:
        parts = [f">= {self.ge:g}" if self.ge is not None else "", f"> {self.gt:g}" if self.gt is not None
                 else "", f"<= {self.le:g}" if self.le is not None else ""]
        text = " and ".join(p for p in parts if p)
        return f" {text}" if text else ""


@dataclass(frozen=True)
class Int(_Spec):
    ge: int | None = None
    le: int | None = None
    optional: bool = False

    def _check(self, value, path, fail):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or (self.ge is not None and value < self.ge) or (self.le is not None and value > self.le):
            rng = " and ".join(p for p in (f">= {self.ge}" if self.ge is not None else "",
                                           f"<= {self.le}" if self.le is not None else "") if p)
            fail(path, f"must be a whole number {rng}, got {_show(value)}")


@dataclass(frozen=True)
class Str(_Spec):
    nonempty: bool = True
    optional: bool = False
    choices: tuple = ()

    def _check(self, value, path, fail):
        if not isinstance(value, str) or (self.nonempty and not value):
            fail(path, f"must be a {'non-empty ' if self.nonempty else ''}string, got {_show(value)}")
        if self.choices and value not in self.choices:
            fail(path, f"must be one of {', '.join(self.choices)}, got {_show(value)}")


@dataclass(frozen=True)
class Bool(_Spec):
    optional: bool = False

    def _check(self, value, path, fail):
        if not isinstance(value, bool):
            fail(path, f"must be true or false, got {_show(value)}")


@dataclass(frozen=True)
class ListOf(_Spec):
    item: _Spec
    min_len: int = 0
    optional: bool = False

    def _check(self, value, path, fail):
        if not isinstance(value, list):
            fail(path, f"must be a list, got {_show(value)}")
        if len(value) < self.min_len:
            fail(path, f"must hold at least {self.min_len} item(s)")
        for i, v in enumerate(value):
            self.item.check(v, path + (i,), fail)


@dataclass(frozen=True)
class MapOf(_Spec):
    value: _Spec
    optional: bool = False

    def _check(self, value, path, fail):
        if not isinstance(value, dict):
            fail(path, f"must be a mapping, got {_show(value)}")
        for k, v in value.items():
            self.value.check(v, path + (k,), fail)


@dataclass(frozen=True)
class Record(_Spec):
    """A mapping with known keys (others pass untouched); `required` keys must be present."""
    fields: dict = field(default_factory=dict)
    required: frozenset = frozenset()
    optional: bool = False

    def _check(self, value, path, fail):
        if not isinstance(value, dict):
            fail(path, f"must be a mapping, got {_show(value)}")
        for key in sorted(self.required):
            if key not in value:
                fail(path + (key,), "required field is missing")
        for key, spec in self.fields.items():
            if key in value:
                spec.check(value[key], path + (key,), fail)


class _Mismatch(Exception):
    pass


@dataclass(frozen=True)
class AnyOf(_Spec):
    """The first spec the value satisfies; else the first spec's complaint."""
    specs: tuple = ()

    def _check(self, value, path, fail):
        def quiet(*_):
            raise _Mismatch
        for spec in self.specs:
            try:
                spec.check(value, path, quiet)
                return
            except _Mismatch:
                continue
        self.specs[0].check(value, path, fail)


def _record(required=(), optional=False, **fields) -> Record:
    return Record(fields, frozenset(required), optional)


# ---- plan.json, version 1 (ARCHITECTURE.md, "Interfaces every stage keeps") -----------------------

MS = Num(ge=0, le=MAX_MS, optional=True)
PLACEMENT = _record(
    ("operator", "kind", "device", "tp", "pp", "batch", "replicas", "precision", "latency_ms", "bound"),
    operator=Str(), kind=Str(), device=Str(), tp=Int(1, MAX_DEGREE), pp=Int(1, MAX_DEGREE),
    batch=Int(1, MAX_COUNT), replicas=Int(0, MAX_COUNT), precision=Str(), latency_ms=Num(ge=0, le=MAX_MS),
    bound=Str(),
    pool=Str(optional=True), service_ms=MS,
)
POOL = _record(
    ("id", "model", "kind", "engine", "engine_id", "device", "tp", "pp", "precision", "kv_precision",
     "batch", "max_batch", "replicas", "operators", "load_rps", "latency_ms", "tbt_ms", "memory_gb"),
    id=Str(), model=Str(optional=True), kind=Str(), engine=Str(), engine_id=Str(), device=Str(),
    tp=Int(1, MAX_DEGREE), pp=Int(1, MAX_DEGREE), precision=Str(), kv_precision=Str(optional=True),
    batch=Int(0, MAX_COUNT), max_batch=Int(0, MAX_COUNT), replicas=Int(0, MAX_COUNT),
    operators=ListOf(Str()), load_rps=Num(ge=0, le=1e12), latency_ms=Num(ge=0, le=MAX_MS), tbt_ms=MS,
    memory_gb=Num(ge=0, le=1e9), wait_ms=MS, utilization=Num(ge=0, le=1, optional=True),
)
PREDICTED = _record(
    ("end_to_end_ms",),
    end_to_end_ms=Num(ge=0, le=MAX_MS),
    per_stage_ms=MapOf(Num(ge=0, le=MAX_MS)),
    sla_ms=Num(gt=0, le=MAX_MS, optional=True),
    meets_sla=Bool(optional=True),
    percentile=Num(gt=0, le=100, optional=True),
    p50_ms=MS, p95_ms=MS, p99_ms=MS,
    validated=AnyOf((Bool(optional=True), _record((), seed=Int(0), seeds=Int(0), requests=Int(0),
                                                    duration_s=Num(ge=0), holds=Bool(optional=True)))),
)
MONEY = Num(ge=0, le=MAX_USD, optional=True)
TCO = _record(
    ("per_hour", "per_million_tokens", "per_request", "per_thousand_requests"),
    per_hour=Num(ge=0, le=MAX_USD), per_million_tokens=MONEY, per_request=MONEY,
    per_thousand_requests=MONEY,
    breakdown=MapOf(_record((), capex=MONEY, power=MONEY, opex=MONEY)),
)
BASELINE = _record(("device", "feasible", "tco"), device=Str(), feasible=Bool(),
                   tco=_record((), per_hour=MONEY, per_request=MONEY))
SOLVER = _record((), status=Str(optional=True), gap=Num(ge=0, optional=True),
                 seconds=Num(ge=0, le=1e9))
FILE_RECORD = _record((), optional=True, name=Str(optional=True), file=Str(optional=True, nonempty=False),
                      text=Str(optional=True, nonempty=False))
INPUTS = _record(
    (),
    sla_ms=Num(gt=0, le=MAX_MS, optional=True), rate=Num(gt=0, le=1e9, optional=True),
    soft_sla_penalty=Num(ge=0, le=MAX_USD, optional=True), objective=Str(optional=True),
    time_limit_s=Num(gt=0, le=1e6, optional=True), gap=Num(ge=0, le=1, optional=True),
    workflows=ListOf(_record((), name=Str(optional=True), file=Str(optional=True, nonempty=False),
                             text=Str(optional=True, nonempty=False),
                             format=Str(optional=True, choices=("yaml", "mlir")))),
    fleet=FILE_RECORD, tco=FILE_RECORD, catalog=Str(optional=True),
    profiles=Str(optional=True, nonempty=False),            # the profile file's text
    headroom=_record((), optional=True, sla_factor=Num(gt=0, le=100), rate_factor=Num(gt=0, le=100)),
    precisions=ListOf(Str(), optional=True),
)
MONEY_H = Num(ge=0, le=1e12)
REPLICA = _record(("pool", "replica"), pool=Str(), replica=Int(0, MAX_COUNT), cores=Num(ge=0, le=1e9, optional=True))
SERVER = _record(
    ("id", "type", "device", "count", "host", "devices"),
    id=Str(), type=Str(), device=Str(), count=Int(0, MAX_COUNT),
    host=_record(("cores", "memory_gb"), cores=Num(ge=0, le=1e9), memory_gb=Num(ge=0, le=1e12),
                 cpu=Str(optional=True)),
    devices=ListOf(_record(("index", "capacity_gb", "memory_gb", "replicas"), index=Int(0, MAX_COUNT),
                           capacity_gb=Num(ge=0, le=1e12), memory_gb=Num(ge=0, le=1e12),
                           replicas=ListOf(REPLICA))),
    note=Str(optional=True, nonempty=False),
)
BILL_ROW = _record(
    ("type", "kind", "device", "accelerators", "servers", "usd_per_hour", "total_usd_per_hour"),
    offer=Str(optional=True), type=Str(), kind=Str(), device=Str(), accelerators=Int(0, MAX_COUNT),
    servers=Int(0, MAX_COUNT), usd_per_hour=_record(("total",), total=MONEY_H, **{k: Num(ge=0, le=1e12, optional=True) for k in (
        "capex", "power", "opex", "accelerators", "host", "network", "facility", "support")}),
    total_usd_per_hour=MONEY_H,
    owned=Bool(optional=True), note=Str(optional=True, nonempty=False), sources=MapOf(Str(nonempty=False), optional=True),
)
DEPLOYMENT = _record(
    ("servers",), optional=True,
    mode=Str(optional=True), servers=ListOf(SERVER), notes=ListOf(Str(nonempty=False), optional=True),
    bill=ListOf(BILL_ROW, optional=True),
)
ROBUSTNESS = _record(
    ("device", "status", "holds", "alternative", "threshold"),
    device=Str(), status=Str(), holds=Bool(), threshold=Num(ge=0, le=1, optional=True),
    alternative=_record(("fleet", "tco_per_hour"), optional=True, fleet=MapOf(Int(0, MAX_COUNT)),
                        tco_per_hour=Num(ge=0, le=1e12, optional=True)),
)
PLAN = _record(
    ("version", "placements"),                  # all a build needs (with `ir`); see COMPLETE
    version=Int(1, 1), workflows=ListOf(Str(), min_len=1), fleet=MapOf(Int(0, MAX_COUNT)),
    placements=ListOf(PLACEMENT), pools=ListOf(POOL), predicted=PREDICTED, tco=TCO,
    baselines=ListOf(BASELINE),
    solver=SOLVER, ir=Str(nonempty=False), inputs=INPUTS, deployment=DEPLOYMENT,
    robustness=ListOf(ROBUSTNESS, optional=True),
)


COMPLETE = ("workflows", "fleet", "predicted", "tco")   # what report, simulate, run and serve also need


# ---- checking ---------------------------------------------------------------------------------------

def validate(doc: Located, config_dir=None, complete: bool = True) -> dict:
    """Checks a parsed plan.json (hetagent.guarded.JsonLocated, or Located for a dict); returns its data.
    `complete`: the keys of COMPLETE must be there too (False: a build's placements and IR suffice).
    Raises one InputError naming the file, line and field of the first problem."""
    def fail(path, message):
        raise InputError(message, file=doc.file, line=doc.line_of(path) if doc.file else None,
                         field=dotted(path) or None)

    data = doc.data
    if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] != 1 \
            and not isinstance(data["version"], bool):
        fail(("version",), f"plan version {data['version']} is not supported (expected 1)")
    PLAN.check(data, (), fail)
    for key in COMPLETE if complete else ():
        if key not in data:
            fail((key,), "required field is missing")
    _check_meaning(data, fail, config_dir)
    return data


def _check_meaning(data: dict, fail, config_dir) -> None:
    from hetagent.ir.dialects import OPS
    seen: dict[str, int] = {}
    for i, p in enumerate(data["placements"]):
        if p["operator"] in seen:
            fail(("placements", i, "operator"), f"operator '{p['operator']}' is placed twice "
                                                f"(also placements[{seen[p['operator']]}])")
        seen[p["operator"]] = i
        if p["kind"] not in OPS:
            fail(("placements", i, "kind"), f"unknown operator kind '{p['kind']}'; kinds: "
                                            f"{summarize(sorted(OPS))}")
    fleet = data.get("fleet")
    if not data.get("inputs"):   # a stripped plan names no catalog: only consistency can be checked
        known = set(fleet or ()) | {p["device"] for p in data["placements"]} | \
            {b["device"] for b in data.get("baselines") or []}
    else:
        known = known_devices(data, fail, config_dir)
    hosts = {(s.get("host") or {}).get("cpu") for s in (data.get("deployment") or {}).get("servers") or []
             if isinstance(s, dict)}   # CPU-side pools run on the host CPUs of the servers (not in `fleet`)
    for d in fleet or ():
        if d not in known:
            fail(("fleet", d), f"unknown device '{d}'; devices: {summarize(sorted(known))}")
    for i, p in enumerate(data["placements"]):
        if p["device"] not in known:
            fail(("placements", i, "device"),
                 f"unknown device '{p['device']}'; devices: {summarize(sorted(known))}")
        if fleet is not None and p["replicas"] > 0 and p["device"] not in fleet and p["device"] not in hosts:
            fail(("placements", i, "device"), f"device '{p['device']}' holds {p['replicas']} "
                                              f"replica(s) but is not in the plan's fleet")
    models = None
    for i, pool in enumerate(data.get("pools") or []):
        if pool["device"] not in known:
            fail(("pools", i, "device"), f"unknown device '{pool['device']}'; devices: "
                                         f"{summarize(sorted(known))}")
        if pool["model"] is not None:
            if models is None:
                from hetagent.configs import list_ids
                models = set(list_ids("models", config_dir))
            if pool["model"] not in models:
                fail(("pools", i, "model"), f"unknown model '{pool['model']}'; models: "
                                            f"{summarize(sorted(models))}")
    for i, b in enumerate(data.get("baselines") or []):
        if b["device"] not in known:
            fail(("baselines", i, "device"), f"unknown device '{b['device']}'; devices: "
                                             f"{summarize(sorted(known))}")


def known_devices(data: dict, fail, config_dir=None) -> set[str]:
    """Device ids the plan may name: its catalog's, its embedded fleet's extra devices, its profiles'."""
    from hetagent.costmodel.devices import load_catalog
    from hetagent.errors import HetagentError
    inputs = data.get("inputs") or {}
    catalog = inputs.get("catalog") or "default"
    try:
        known = set(load_catalog(catalog, config_dir))
    except HetagentError as e:
        fail(("inputs", "catalog"), str(e))
    fleet = inputs.get("fleet") or {}
    if fleet.get("text"):
        from hetagent.guarded import parse_yaml
        try:
            extra = parse_yaml(fleet["text"], "plan.json fleet").data
        except InputError as e:
            fail(("inputs", "fleet", "text"), f"the embedded fleet is not valid: {e.reason}")
        for d in (extra.get("extra_devices") or []) if isinstance(extra, dict) else []:
            if isinstance(d, dict) and isinstance(d.get("id"), str):
                known.add(d["id"])
    if inputs.get("profiles"):
        from hetagent.costmodel.profiles import parse_profiles
        try:
            known |= parse_profiles(inputs["profiles"], "plan.json profiles").device_ids()
        except InputError as e:
            fail(("inputs", "profiles"), f"the embedded profiles are not valid: {e.reason}")
    return known


def check_operators(placed: list[str], expected: list[str], file: str | None,
                    workflow: str) -> None:
    """Placements and the operators rebuilt from the embedded workflow must be the same set."""
    placed_set, expected_set = set(placed), set(expected)
    missing = [o for o in expected if o not in placed_set]
    extra = [o for o in placed if o not in expected_set]
    if missing:
        raise InputError(f"operator(s) {summarize(missing)} of workflow '{workflow}' have no placement: "
                         "the plan and its workflow disagree", file=file, field="placements")
    if extra:
        raise InputError(f"placement(s) for {summarize(extra)} name no operator of workflow "
                         f"'{workflow}': the plan and its workflow disagree", file=file,
                         field="placements")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
