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
    plan = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False)
    check_deployment(plan)
    b = plan.tco["breakdown"]
    assert sum(v["capex"] + v["power"] + v["opex"] for v in b.values()) == pytest.approx(plan.tco["per_hour"])
    assert all("servers" in v for v in b.values())


def test_owned_devices_plus_what_to_buy(tmp_path):
    """Buy mode with `owned:` counts: the owned units cost only power and opex, more may be bought. It
    used to be reported infeasible (PuLP kept only the last of two objective terms on one variable, so
    owned units looked like money back)."""
    free = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False,
                    fleet=_fleet(tmp_path, "name: f\nmode: buy\ndevices:\n  - {id: h100}\n"
                                           "  - {id: xeon-sapphirerapids}\n"))
    owned = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False,
                     fleet=_fleet(tmp_path, "name: f\nmode: buy\ndevices:\n  - {id: h100, owned: 2}\n"
                                            "  - {id: xeon-sapphirerapids}\n", "owned.yaml"))
    assert owned.fleet["h100"] >= 2
    assert owned.tco["per_hour"] < free.tco["per_hour"] - 0.5
    check_deployment(owned)


def test_kv_cache_stays_within_one_vendor_unless_asked():
    vendor = {d: dev.vendor for d, dev in load_catalog().items()}

    def llm_vendors(plan):
        return {vendor[p.device] for p in plan.pools if p.model == "llama-3-8b"}

    assert len(llm_vendors(api.plan(WF / "voice_agent.yaml", validate=False, robustness=False))) == 1
    crossed = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False, cross_vendor_kv=True)
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


# ---------------------------------------------------------------- whole servers and instances (issue 19)

BUY = "name: b\nmode: buy\ndevices:\n  - {id: l40s}\n  - {id: h100}\n  - {id: xeon-sapphirerapids}\n"
RENT = "name: r\nmode: rent\ndevices:\n  - {id: l4}\n  - {id: h100}\n  - {id: xeon-sapphirerapids}\n"


def check_whole_servers(plan, mode):
    """Every server of the deployment is a real server (buy, owned) or instance (rent) type, holding its
    type's accelerators; `fleet` is the sum of them; the bill and the breakdown agree."""
    from hetagent.costmodel.servers import load_instance_types, load_server_types
    types = load_instance_types() if mode == "rent" else load_server_types()
    dep = plan.deployment
    assert dep["mode"] == mode
    for s in dep["servers"]:
        st = types[s["type"]]
        assert s["device"] == st.device
        assert s["count"] == (0 if st.cpu_only else st.count) or "slots" in s.get("note", ""), s
        assert len(s["devices"]) == (st.host_sockets if st.cpu_only else s["count"])
    check_deployment(plan)
    b = plan.tco["breakdown"]
    for d, row in b.items():
        assert {"accelerators", "host", "network", "facility", "support", "servers"} <= set(row)
        assert row["servers"] == sum(1 for s in dep["servers"] if s["device"] == d)
    assert sum(r["total_usd_per_hour"] for r in dep["bill"]) == pytest.approx(
        sum(v["capex"] + v["power"] + v["opex"] for v in b.values()), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("mode", ["buy", "rent"])
@pytest.mark.parametrize("wf", sorted(p.name for p in WF.glob("*.yaml")))
def test_every_example_plans_on_whole_servers(tmp_path, wf, mode):
    plan = api.plan(WF / wf, validate=False, robustness=False, fleet=_fleet(tmp_path, BUY if mode == "buy" else RENT))
    check_whole_servers(plan, mode)
    if mode == "buy":
        assert all(s["host"]["cores"] > 0 for s in plan.deployment["servers"] if s["count"])


def test_owned_servers_form_and_owned_mapping(tmp_path):
    """`servers:` entries and device counts: 10 owned A100 are one full hgx-a100-8 and one with 2 of its 8
    slots filled, and the plan says so."""
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.placement import build_problem
    from hetagent.costmodel.tco import load_tco
    f = load_fleet(_fleet(tmp_path, "name: o\nmode: owned\ndevices:\n  - {id: a100, owned: 10}\n"
                                    "servers:\n  - {type: l4-pcie-8, owned: 1}\n"))
    assert f.has_inventory and f.servers[0].device == "l4"
    from hetagent.placement.pipeline import planning_inputs
    p = planning_inputs(WF / "rag_chat.yaml", str(f.path))
    pb = build_problem(p.graphs, p.tables, p.fleet, load_tco(), p.devices, servers=True)
    notes = {oid: (of.count, of.cap, of.note) for oid, of in pb.offers.items() if of.device in ("a100", "l4")}
    assert notes["hgx-a100-8.owned"][:2] == (8, 1)
    assert notes["hgx-a100-8.owned-2of8"][:2] == (2, 1) and "2 of its 8 slots" in notes["hgx-a100-8.owned-2of8"][2]
    assert notes["l4-pcie-8.owned"][:2] == (8, 1)
    assert pb.caps["a100"] == 10 and pb.caps["l4"] == 8
    assert "epyc-genoa" in pb.allowed           # the hosts' CPUs run CPU-side pools


def test_owned_a100_l4_fleet_plans_and_max_rate_names_the_pool():
    fleet = str(WF.parent / "fleets" / "owned-a100-l4.yaml")
    plan = api.plan(WF / "voice_agent.yaml", validate=False, robustness=False, fleet=fleet)
    check_whole_servers(plan, "owned")
    assert set(plan.fleet) <= {"a100", "l4"}
    assert all(v["capex"] == 0 for v in plan.tco["breakdown"].values())
    got = api.max_rate(WF / "voice_agent.yaml", fleet=fleet, validate=False, log=lambda s: None)
    assert got["rate_rps"] > 1.0
    assert "pool" in got["binding"] and "hgx-a100-8" in got["binding"], got["binding"]


def test_fleet_servers_are_checked_with_file_line_field(tmp_path):
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.errors import InputError
    bad = _fleet(tmp_path, "name: x\nmode: owned\nservers:\n  - {type: hgx-a100-8, owned: 1}\n"
                           "  - {type: no-such-server, owned: 1}\n")
    with pytest.raises(InputError) as e:
        load_fleet(bad)
    assert e.value.line == 5 and "servers[1].type" in str(e.value) and "unknown server type" in str(e.value)
    with pytest.raises(InputError, match="servers\\[0\\].owned"):
        load_fleet(_fleet(tmp_path, "name: x\nmode: rent\nservers:\n  - {type: aws-g5.xlarge, owned: 1}\n", "r.yaml"))
    with pytest.raises(InputError, match="servers\\[0\\].colour"):
        load_fleet(_fleet(tmp_path, "name: x\nmode: buy\nservers:\n  - {type: hgx-a100-8, colour: red}\n", "c.yaml"))


def test_schema_fleet_agrees_with_the_loader(tmp_path, capsys):
    import json

    import jsonschema
    import yaml

    from hetagent.cli import main
    main(["schema", "fleet"])
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "hetagent fleet"
    for f in (WF.parent / "fleets").glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(f.read_text()), schema)        # every shipped fleet is valid
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"mode": "buy", "servers": [{"type": "x", "colour": 1}]}, schema)


def test_rent_refuses_what_the_catalog_cannot_rent(tmp_path):
    plan = api.plan(WF / "rag_chat.yaml", validate=False, robustness=False,
                    fleet=_fleet(tmp_path, "name: r\nmode: rent\ndevices:\n  - {id: mi300x}\n  - {id: h100}\n"
                                           "  - {id: xeon-sapphirerapids}\n"))
    notes = " ".join(plan.deployment.get("notes") or [])
    assert "mi300x: refused: the catalog cannot rent it" in notes
    assert "mi300x" not in plan.fleet
    from hetagent.placement.plan import format_plan
    text = format_plan(plan)
    assert "mi300x: refused" in text
    assert any(line.strip().startswith(f"{r['servers']} x {r['type']} (instance") for r in plan.deployment["bill"]
               for line in text.splitlines())
