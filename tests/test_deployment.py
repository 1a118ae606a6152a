"""Plans a team can buy and deploy: whole servers, every replica on concrete devices, owned fleets,
the highest rate an inventory serves, KV transfers within one vendor unless asked."""
from __future__ import annotations

from pathlib import Path

import pytest

from hetagent import api
from hetagent.costmodel.devices import load_catalog

WF = Path(__file__).resolve().parent.parent / "configs" / "workflows"


def _fleet(tmp_path, text, name="fleet.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def check_deployment(plan):
    """Every replica of every pool sits on concrete devices; device memory holds what is on it; the
    fleet is the accelerators (and CPU-only sockets) of the servers."""
    dep = plan.deployment
    assert dep["servers"], dep
    fleet: dict = {}
    placed: dict = {}
    for s in dep["servers"]:
        fleet[s["device"]] = fleet.get(s["device"], 0) + (s["count"] or len(s["devices"]))
        for d in s["devices"]:
            assert d["memory_gb"] <= d["capacity_gb"] + 1e-6 or not d["capacity_gb"], (s["id"], d)
            for r in d["replicas"]:
                placed.setdefault(r["pool"], set()).add(r.get("replica", 0))
    assert fleet == {k: v for k, v in plan.fleet.items() if v}
    cat = load_catalog()
    for p in plan.pools:
        if p.device in cat and cat[p.device].kind != "cpu":
            assert placed.get(p.id) == set(range(p.replicas)), (p.id, placed.get(p.id))


def test_voice_agent_is_deployable():
    plan = api.plan(WF / "voice_agent.yaml", validate=False)
    check_deployment(plan)
    b = plan.tco["breakdown"]
    assert sum(v["capex"] + v["power"] + v["opex"] for v in b.values()) == pytest.approx(plan.tco["per_hour"])
    assert all("servers" in v for v in b.values())


def test_owned_devices_plus_what_to_buy(tmp_path):
    """Buy mode with `owned:` counts: the owned units cost only power and opex, more may be bought. It
    used to be reported infeasible (PuLP kept only the last of two objective terms on one variable, so
    owned units looked like money back)."""
    free = api.plan(WF / "voice_agent.yaml", validate=False,
                    fleet=_fleet(tmp_path, "name: f\nmode: buy\ndevices:\n  - {id: h100}\n"
                                           "  - {id: xeon-sapphirerapids}\n"))
    owned = api.plan(WF / "voice_agent.yaml", validate=False,
                     fleet=_fleet(tmp_path, "name: f\nmode: buy\ndevices:\n  - {id: h100, owned: 2}\n"
                                            "  - {id: xeon-sapphirerapids}\n", "owned.yaml"))
    assert owned.fleet["h100"] >= 2
    assert owned.tco["per_hour"] < free.tco["per_hour"] - 0.5
    check_deployment(owned)


def test_kv_cache_stays_within_one_vendor_unless_asked():
    vendor = {d: dev.vendor for d, dev in load_catalog().items()}

    def llm_vendors(plan):
        return {vendor[p.device] for p in plan.pools if p.model == "llama-3-8b"}

    assert len(llm_vendors(api.plan(WF / "voice_agent.yaml", validate=False))) == 1
    crossed = api.plan(WF / "voice_agent.yaml", validate=False, cross_vendor_kv=True)
    assert crossed.inputs["cross_vendor_kv"] is True


def test_max_rate_of_an_owned_fleet(tmp_path):
    """The highest rate 8 A100 and 8 L4 serve the RAG agent at its SLA percentile, and what binds."""
    fleet = _fleet(tmp_path, "name: ours\nmode: owned\ndevices:\n  - {id: a100, owned: 8}\n"
                             "  - {id: l4, owned: 8}\n  - {id: xeon-sapphirerapids, owned: 2}\n")
    got = api.max_rate(WF / "rag_chat.yaml", fleet=fleet, log=lambda s: None)
    assert 1.0 < got["rate_rps"] < 40.0
    assert got["plan"].predicted["validated"]["holds"]
    assert "requests/s" in got["binding"] and ("pool" in got["binding"] or "fleet has" in got["binding"])
    above = [p for p in got["probes"] if p["rate_rps"] > got["rate_rps"] * 1.0001]
    assert above and all(not p.get("holds", p["feasible"]) for p in above if "holds" in p)
    with pytest.raises(Exception, match="inventory"):
        api.max_rate(WF / "rag_chat.yaml", fleet="default", log=lambda s: None)
