"""Short fuzz of fleets, TCO files and plan.json (workflows: tests/test_workflow.py): whatever the file
holds, it is used or refused with one HetagentError line naming it; never an internal error.
benchmarks/fuzz_inputs.py runs the same strategies for >= 10,000 cases per format."""
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from fuzzing import TINY, fleets, outcome, plans, tcos, use_fleet, use_plan, use_tco

from conftest import ROOT

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    f = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    f.write_text(TINY)
    return f


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory):
    from hetagent import api
    f = tmp_path_factory.mktemp("plan") / "tiny.yaml"
    f.write_text(TINY)
    return api.plan(str(f), fleet="local-cpu", validate=False, robustness=False).to_json()


def _clean(kind, detail):
    assert kind in ("ok", "refused"), f"{kind}: {detail}"


@FUZZ
@given(doc=fleets)
def test_fuzz_fleets(tmp_path_factory, tiny, doc):
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    _clean(*outcome(path, lambda: use_fleet(path, tiny, plan_it=False)))


@FUZZ
@given(doc=tcos)
def test_fuzz_tco_files(tmp_path_factory, tiny, doc):
    path = tmp_path_factory.mktemp("tco") / "tco.yaml"
    path.write_text(yaml.safe_dump(doc))
    _clean(*outcome(path, lambda: use_tco(path, tiny, plan_it=False)))


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=tcos)
def test_fuzz_tco_files_through_the_planner(tmp_path_factory, tiny, doc):
    """TCO figures that load must also plan (overflowing costs once crashed the solver)."""
    path = tmp_path_factory.mktemp("tco") / "tco.yaml"
    path.write_text(yaml.safe_dump(doc))
    _clean(*outcome(path, lambda: use_tco(path, tiny, plan_it=True)))


def test_fuzz_plans(tmp_path_factory, base_plan):
    @FUZZ
    @given(text=plans(base_plan))
    def run(text):
        path = tmp_path_factory.mktemp("plan") / "plan.json"
        path.write_text(text)
        _clean(*outcome(path, lambda: use_plan(path, deep=False)))
    run()


def test_fuzz_plans_that_validate_are_simulated_and_reported(tmp_path_factory, base_plan):
    """Edits that pass the schema (other valid numbers, strings) go on to simulate and report."""
    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=plans(base_plan))
    def run(text):
        path = tmp_path_factory.mktemp("plan") / "plan.json"
        path.write_text(text)
        _clean(*outcome(path, lambda: use_plan(path, deep=True)))
    run()


def test_shipped_configs_are_accepted(tiny):
    for path in sorted((ROOT / "configs" / "fleets").glob("*.yaml")):
        assert outcome(path, lambda: use_fleet(path, tiny, plan_it=False))[0] == "ok", path
    for path in sorted((ROOT / "configs" / "tco").glob("*.yaml")):
        assert outcome(path, lambda: use_tco(path, tiny, plan_it=False))[0] == "ok", path


def test_the_fuzzer_finds_what_it_should(tmp_path, tiny):
    """The oracle is not vacuous: a fleet with a negative count is refused, naming the file."""
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"mode": "buy", "devices": [{"id": "h100", "max_count": -1}]}))
    kind, detail = outcome(path, lambda: use_fleet(path, tiny, plan_it=False))
    assert kind == "refused" and str(path) in detail
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"placements": [], "version": 1}))
    assert outcome(bad, lambda: use_plan(bad, deep=False))[0] == "refused"
    assert outcome(bad, lambda: 1 / 0)[0] == "internal"


def test_every_plan_field_nulled_or_deleted_is_used_or_refused(tmp_path, base_plan):
    """Deterministic companion of the plan fuzz: each field of a real plan (the first placement and pool
    standing for the rest) set to null or deleted, then read and summarized. Found: a missing
    tco.per_request, a null end_to_end_ms and a null solver.seconds crashed `format_plan`."""
    import copy

    from fuzzing import _DELETE, _leaf_paths, _set
    paths = [p for p in _leaf_paths(base_plan) if not (p[0] == "inputs" and len(p) > 3)
             and not (p[0] in ("pools", "placements") and len(p) > 1 and p[1] != 0)]
    path_file = tmp_path / "plan.json"
    bad = []
    for path in paths:
        for value in (None, _DELETE):
            doc = copy.deepcopy(base_plan)
            _set(doc, path, value)
            path_file.write_text(json.dumps(doc, indent=1))
            kind, detail = outcome(path_file, lambda: use_plan(path_file, deep=False))
            if kind not in ("ok", "refused"):
                bad.append((path, value is None, kind, detail))
    assert len(paths) > 50 and not bad, bad[:5]
