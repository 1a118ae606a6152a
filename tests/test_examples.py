"""Every bundled example workflow plans end to end: compile, price, place, within its SLA, and never
worse than the best homogeneous fleet."""
import pytest

from hetagent import api

from conftest import WORKFLOWS

PLANNABLE = [w for w in WORKFLOWS if w.stem != "researcher"]  # researcher is a sub-agent (no SLA)


@pytest.mark.slow
@pytest.mark.parametrize("path", PLANNABLE, ids=lambda p: p.stem)
def test_example_plans_within_its_sla(path):
    fleet = "local-cpu" if path.stem == "voice_agent_cpu" else None
    plan = api.plan(path, fleet=fleet, time_limit_s=60, robustness=False)
    assert plan.predicted["meets_sla"], plan.predicted
    assert plan.solver["status"] in ("optimal", "feasible")
    feasible = [b.per_hour for b in plan.baselines if b.feasible]
    if feasible:
        assert plan.tco["per_hour"] <= min(feasible) + 1e-9
    kinds = {p.kind for p in plan.placements}
    assert "llm.decode" in kinds or "expert.tp_decode" in kinds
    assert "#agent.place<" in plan.ir
