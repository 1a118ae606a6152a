"""Hypothesis strategies for hostile fleets, TCO files and plan.json, and the consumers each case goes
through. tests/test_fuzz.py runs a short fuzz; benchmarks/fuzz_inputs.py runs >= 10,000 cases per
format with the same strategies and consumers, counting outcomes.

An outcome is "ok" (accepted and used), "refused" (one HetagentError line; the file named where the
error is about the file), or a failure: "internal" (any other exception), "multiline", "unnamed" (a
file error that does not name the file), "hang" (over the time limit)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
CATALOG_IDS = ["h100", "a100", "l4", "t4", "mi300x", "xeon-sapphirerapids", "epyc-genoa", "local-cpu"]

numbers = st.one_of(st.integers(-10, 10), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 0.5, 1e308]),
                    st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12),
                    st.sampled_from(["all", "buy", "rent", "owned", "default", "h100", ""]))
plausible = st.one_of(st.integers(0, 1000), st.floats(0, 1e4, allow_nan=False), st.sampled_from([1, 2, 0.5]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=6), inner,
                                                                            max_size=3)), max_leaves=6)


# ---- workflows ----------------------------------------------------------------------------------

node_like = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["a", "b", "c", "L", "1x", ""]), st.text(max_size=5)),
     "kind": st.one_of(st.sampled_from(["input", "llm", "tool", "loop", "branch", "code", "output",
                                        "speech_to_text", "subagent", "memory_search", "bogus"]), scalars)},
    optional={"inputs": st.lists(st.sampled_from(["a", "b", "c", "L", "zz"]), max_size=3),
              "model": st.sampled_from(["llama-3-8b", "whisper-tiny", "nope", 3]),
              "prompt_tokens": numbers, "output_tokens": numbers, "latency_ms": numbers,
              "expected_iterations": numbers, "max_iterations": numbers, "index_size": numbers,
              "body": st.lists(st.fixed_dictionaries({"id": st.sampled_from(["q", "r"]),
                                                      "kind": st.sampled_from(["code", "tool", "llm"])},
                                                     optional={"inputs": st.lists(
                                                         st.sampled_from(["q", "L", "a"]), max_size=2)}),
                               max_size=2),
              "arms": st.just([{"name": "x", "probability": 0.3}, {"name": "y", "probability": 0.7}]),
              "workflow": st.text(max_size=8),
              "source": st.one_of(st.text(max_size=30), st.just("def main(text):\n    return {}\n")),
              "language": st.one_of(st.just("python3"), scalars)})
def _shipped(kind: str) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "configs" / kind).glob("*.yaml"))
            if "subagent" not in p.read_text() or kind != "workflows"]


def from_shipped(kind: str):
    """A shipped config with 1-3 leaves replaced by hostile or plausible values, or deleted: most stay
    close enough to valid to reach the stages after the loader."""
    return st.sampled_from(_shipped(kind)).flatmap(
        lambda base: mutated(base, st.one_of(plausible, numbers, json_values)))


workflows = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.just("w"), scalars), "nodes": st.lists(node_like, max_size=5)},
                          optional={"rate": numbers, "sla": st.dictionaries(
                              st.sampled_from(["latency_ms", "percentile", "iterations", "x"]), numbers)}),
    st.lists(scalars), scalars, from_shipped("workflows"))


# ---- fleets --------------------------------------------------------------------------------------

def _device_template() -> dict:
    doc = yaml.safe_load((ROOT / "configs" / "fleets" / "local-cpu.yaml").read_text())
    return doc["extra_devices"][0]


DEVICE = _device_template()


def _leaf_paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _leaf_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _leaf_paths(v, prefix + (i,))


def _set(doc, path, value):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    if value is _DELETE:
        if isinstance(cur, dict):
            cur.pop(path[-1], None)
        elif isinstance(cur, list) and len(cur) > path[-1]:
            cur.pop(path[-1])
    else:
        cur[path[-1]] = value


_DELETE = object()


@st.composite
def mutated(draw, base: dict, values=json_values, max_edits: int = 3):
    """`base` with 1..max_edits random values replaced (or deleted) at random paths."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = list(_leaf_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        _set(doc, path, draw(st.one_of(values, st.just(_DELETE))))
    return doc


entries = st.one_of(
    st.sampled_from(CATALOG_IDS + ["h900", ""]),
    st.fixed_dictionaries({"id": st.one_of(st.sampled_from(CATALOG_IDS + ["h900"]), scalars)},
                          optional={"max_count": numbers, "owned": numbers, "extra": scalars}))
fleets_structured = st.fixed_dictionaries(
    {"mode": st.one_of(st.sampled_from(["buy", "rent", "owned"]), scalars)},
    optional={"name": scalars, "catalog": st.one_of(st.sampled_from(["default", "paper-2025", "nope"]), scalars),
              "devices": st.one_of(st.just("all"), st.lists(entries, max_size=4), scalars),
              "extra_devices": st.lists(st.one_of(st.just(DEVICE), mutated(DEVICE)), max_size=2),
              "bogus": scalars})
fleets = st.one_of(fleets_structured, from_shipped("fleets"))


# ---- TCO files -----------------------------------------------------------------------------------

TCO_FIELDS = ("amortization_years", "interest_rate", "electricity_usd_per_kwh", "pue", "utilization",
              "other_opex_fraction_of_capex_per_year", "other_opex_usd_per_device_year")
tco_value = st.one_of(numbers, scalars, st.fixed_dictionaries({"value": numbers, "why": st.text(max_size=8)}),
                      st.fixed_dictionaries({}, optional={"value": scalars, "why": scalars}))
tcos_structured = st.fixed_dictionaries(
    {k: st.one_of(tco_value, st.sampled_from([1, 4, 0.08, 1.5])) for k in TCO_FIELDS[:5]},
    optional={"name": scalars, "mode": st.one_of(st.sampled_from(["buy", "rent", "owned"]), scalars),
              **{k: tco_value for k in TCO_FIELDS[5:]}, "bogus": scalars})
tcos = st.one_of(tcos_structured, from_shipped("tco"))


# ---- plan.json -----------------------------------------------------------------------------------

plan_numbers = st.one_of(numbers, plausible, st.sampled_from([-1, -2, 0, 1e-300, 1e12, 1e13]))


def plans(base: dict):
    """A real plan with random edits (any JSON value, numbers favoured, deletions), as JSON text."""
    return mutated(base, st.one_of(plan_numbers, plausible, json_values), max_edits=3).map(
        lambda d: json.dumps(d, indent=1))


# ---- consumers -----------------------------------------------------------------------------------

TINY = """
name: tiny
sla: {latency_ms: 4000, percentile: 95}
rate: 2
nodes:
  - {id: q, kind: input, text_tokens: 32}
  - {id: answer, kind: llm, model: gemma-3-270m, prompt_tokens: 64, output_tokens: 8, inputs: [q]}
  - {id: tool, kind: tool, latency_ms: 20, inputs: [answer]}
"""


def use_workflow(path: Path) -> None:
    import hetagent
    hetagent.to_mlir(hetagent.compile(hetagent.load(path)))


def use_fleet(path: Path, tiny: Path, plan_it: bool) -> None:
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.costmodel.tco import device_hour_cost, load_tco
    from hetagent.errors import HetagentError
    fleet = load_fleet(path)
    devices, entries, _ = fleet.resolve()
    params = load_tco("default")
    for dev in devices.values():
        try:
            device_hour_cost(dev, params, fleet.mode)
        except HetagentError:
            pass
    if plan_it:
        from hetagent import api
        api.plan(str(tiny), fleet=str(path), time_limit_s=5, validate=False, robustness=False)


def use_tco(path: Path, tiny: Path, plan_it: bool) -> None:
    from hetagent.costmodel.devices import load_catalog
    from hetagent.costmodel.tco import device_hour_cost, load_tco, unit_costs
    from hetagent.errors import HetagentError
    params = load_tco(path)
    for dev in load_catalog().values():
        for mode in ("buy", "owned", "rent"):
            try:
                cost = device_hour_cost(dev, params, mode)
                unit_costs(cost["total"], 2.0, 100.0)
            except HetagentError:
                pass
    if plan_it:
        from hetagent import api
        api.plan(str(tiny), tco=str(path), time_limit_s=5, validate=False, robustness=False)


def use_plan(path: Path, deep: bool) -> None:
    from hetagent.placement.plan import format_plan, read_plan
    plan, raw, _ = read_plan(path)
    format_plan(plan)
    if deep:
        from hetagent.report.model import build
        from hetagent.simulator.commands import simulate
        simulate(raw, duration_s=5, seed=0)
        build(raw, sweeps=False)


def outcome(path: Path, run) -> tuple[str, str]:
    """('ok' | 'refused' | 'internal' | 'multiline' | 'unnamed', detail) for one case."""
    from hetagent.errors import HetagentError, InputError
    try:
        run()
    except HetagentError as e:
        msg = str(e)
        if "\n" in msg:
            return "multiline", msg[:300]
        if isinstance(e, InputError) and e.file is not None and str(path) not in msg:
            return "unnamed", msg[:300]
        return "refused", msg[:300]
    except Exception as e:   # noqa: BLE001  the thing being counted
        return "internal", f"{type(e).__name__}: {str(e)[:300]}"
    return "ok", ""
