"""Server types, cloud instance types, and the whole bill of a server (configs/servers, configs/instances,
hetagent.costmodel.servers, tco.server_hour_cost)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hetagent.configs import config_dir
from hetagent.costmodel.devices import load_catalog
from hetagent.costmodel.servers import (
    ServerType, default_server_type, load_instance_types, load_server_types, server_types_for, servers_json,
    unrentable_devices,
)
from hetagent.costmodel.tco import (
    BILL_KEYS, TcoParams, annuity_per_year, device_hour_cost, load_tco, server_hour_cost,
)
from hetagent.errors import CatalogError, CostModelError, InputError

SHARED_PRICES = Path(__file__).resolve().parents[2] / "shared" / "data" / "prices"
CSV_NAMES = {"H100": "h100", "A100-80G": "a100", "L40S": "l40s", "L4": "l4", "A40": "a40", "B200": "b200",
             "H200": "h200", "RTXPro6000": "rtx-pro-6000"}
LEFT_OUT = {"V100", "V100-32G", "A100"}


def _full_catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def servers():
    return load_server_types(catalog=_full_catalog())


@pytest.fixture(scope="module")
def instances():
    return load_instance_types(catalog=_full_catalog())


def _copy_configs(tmp_path: Path) -> Path:
    dst = tmp_path / "configs"
    shutil.copytree(config_dir(), dst)
    return dst


# ---------------------------------------------------------------- the shipped files

def test_every_shipped_file_loads(servers, instances):
    files = sorted(p.stem for p in (config_dir() / "servers").glob("*.yaml"))
    assert sorted(servers) == files and len(files) >= 39
    skipped = {}
    assert load_instance_types(skipped=skipped) and not skipped          # every device is a catalog device
    # a narrower catalog leaves out the types of the devices it lacks, each saying why
    paper = load_server_types(catalog="paper-2025", skipped=skipped)
    assert set(paper) | set(skipped) == set(files) and "hgx-h100-8" in paper
    paper_ids = set(load_catalog("paper-2025"))
    for sid, why in skipped.items():
        st = servers[sid]
        gone = [d for d in (st.accelerator, st.host_cpu) if d and d not in paper_ids]
        assert gone and f"device '{gone[0]}' is not in this catalog" == why
    assert all(isinstance(s, ServerType) and s.kind == "server" for s in servers.values())
    assert all(s.kind == "instance" and s.usd_per_hour > 0 for s in instances.values())
    assert len(instances) >= 70


def test_every_catalog_device_has_exactly_one_default_server_type(servers):
    cat = _full_catalog()
    owners = {}
    for st in servers.values():
        for d in st.default_for:
            owners.setdefault(d, []).append(st.id)
    assert {d: len(v) for d, v in owners.items()} == {d: 1 for d in cat}
    for d in cat:
        st = default_server_type(d, catalog=cat)
        assert st.device == d
        if cat[d].is_cpu:
            assert st.cpu_only and st.count == 0 and st.fleet_devices == {d: st.host_sockets}
        else:
            assert st.count == (72 if d == "gb200" else 8)      # SXM/OAM boxes and 8-card PCIe servers


def test_pcie_cards_come_in_one_four_and_eight_card_servers(servers):
    for dev in ("l4", "t4", "a10g", "a40", "l40s", "h100-pcie", "h200-nvl", "rtx-pro-6000", "arc-pro-b60"):
        counts = sorted(s.count for s in servers.values() if s.accelerator == dev)
        assert counts == [1, 4, 8], dev


def test_host_cpus_are_catalog_cpus(servers, instances):
    cat = _full_catalog()
    for st in [*servers.values(), *instances.values()]:
        assert st.host_cpu in cat and cat[st.host_cpu].is_cpu, st.id
        assert st.host_cores > 0 and st.host_memory_gb > 0


def _figures(node, path=""):
    """Every {value, ...} mapping in a raw server file, with its dotted path."""
    if isinstance(node, dict):
        if "value" in node:
            yield path, node
            return
        for k, v in node.items():
            yield from _figures(v, f"{path}.{k}" if path else str(k))


def test_every_figure_has_a_source_or_an_estimate(servers):
    for path in sorted((config_dir() / "servers").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        figs = dict(_figures(raw))
        for k in ("host.cores", "host.memory_gb", "nics.count", "nics.gbps", "power_w", "rack_units"):
            assert k in figs, f"{path.name}: {k} is not a figure"
        assert "host_price_usd" in figs or "price_usd" in figs, path.name
        for k, f in figs.items():
            if f["value"] is None:
                assert f.get("note"), f"{path.name}: {k} is null without a note"
            else:
                assert (f.get("source") or "").strip() or (f.get("estimate") or "").strip(), f"{path.name}: {k}"
        st = servers[path.stem]
        for k in figs:
            if figs[k]["value"] is not None:
                assert k in st.sources or k in st.estimates, f"{path.name}: {k} provenance not recorded"


def test_buy_price_is_accelerators_plus_host(servers):
    cat = _full_catalog()
    for st in servers.values():
        assert st.price_usd is not None, st.id                 # every shipped type can be bought
        assert st.price_usd == pytest.approx(st.accelerators_price_usd + st.host_price_usd, abs=0.01), st.id
        dev = cat.get(st.accelerator)
        if dev is not None and dev.price_usd is not None:
            assert st.accelerators_price_usd == pytest.approx(st.count * dev.price_usd), st.id
        if st.cpu_only:
            assert st.accelerators_price_usd == 0
    h100 = servers["hgx-h100-8"]
    assert (h100.accelerators_price_usd, h100.host_price_usd, h100.price_usd) == (200000, 32010, 232010)
    assert servers["gb200-nvl72"].price_usd == 3_000_000 and servers["gb200-nvl72"].count == 72


def _csv_rows(name):
    with open(SHARED_PRICES / name, newline="") as f:
        return list(csv.DictReader(f))


def _num(x):
    return float(x) if x not in ("", None) else None


@pytest.mark.parametrize("family, name", [
    ("digitalocean", "skypilot_catalog_v6_do_vms.csv"),
    ("nebius", "skypilot_catalog_v7_nebius_vms.csv"),
    ("shadeform", "skypilot_catalog_v7_shadeform_vms_SUBSET.csv"),
])
def test_instance_rows_match_the_shared_catalogs(instances, family, name):
    if not (SHARED_PRICES / name).is_file():
        pytest.skip(f"shared data {name} not present")
    mine = [st for st in instances.values() if st.path and Path(st.path).stem == family]
    by_type = {}
    for st in mine:
        for region in st.regions:
            assert (st.instance_type, region) not in by_type, st.id
            by_type[(st.instance_type, region)] = st
    covered = set()
    for r in _csv_rows(name):
        key = (r["InstanceType"], r["Region"])
        acc = (r["AcceleratorName"] or "").strip()
        st = by_type.get(key)
        if acc in LEFT_OUT or (not acc and st is None):
            assert st is None, key                                   # left out, and the file says so
            text = (config_dir() / "instances" / f"{family}.yaml").read_text()
            assert r["InstanceType"] in text.split("instances:")[0], key
            continue
        assert st is not None, f"{key} is missing from configs/instances/{family}.yaml"
        covered.add(key)
        expected = "h100-pcie" if r["InstanceType"] == "lambdalabs_H100" else CSV_NAMES.get(acc)
        assert st.accelerator == expected, key
        assert st.count == int(float(r["AcceleratorCount"] or 0)), key
        assert st.vcpus == int(float(r["vCPUs"])), key
        assert st.host_memory_gb == pytest.approx(float(r["MemoryGiB"])), key
        assert st.usd_per_hour == pytest.approx(float(r["Price"])), key
        assert st.spot_usd_per_hour == (pytest.approx(_num(r["SpotPrice"])) if _num(r["SpotPrice"]) else None), key
        assert name in st.sources["usd_per_hour"] and r["InstanceType"] in st.sources["usd_per_hour"]
        if st.spot_usd_per_hour is None:
            assert "no spot price" in st.notes["spot_usd_per_hour"]
    assert covered == set(by_type), "instance entries with no row in the shared catalog"


def test_aws_rows_are_the_ones_the_device_catalog_cites(instances):
    cat = load_catalog()
    assert instances["aws-g4dn.xlarge"].usd_per_hour == cat["t4"].rent_usd_per_hour
    assert instances["aws-g5.xlarge"].usd_per_hour == cat["a10g"].rent_usd_per_hour
    m7i = instances["aws-m7i.48xlarge"]
    assert m7i.cpu_only and m7i.host_cpu == "xeon-sapphirerapids"
    assert m7i.usd_per_hour == pytest.approx(2 * cat["xeon-sapphirerapids"].rent_usd_per_hour)
    assert m7i.host_sockets == 1 and m7i.host_cores == 96      # whole 112-thread catalog sockets in 192 vCPUs
    assert instances["nebius-cpu-d3-192vcpu-768gb"].fleet_devices == {"epyc-genoa": 1}
    assert instances["nebius-cpu-d3-4vcpu-16gb"].host_sockets == 0
    for st in (instances["aws-g4dn.xlarge"], instances["aws-g5.xlarge"]):
        assert "aws.amazon.com" in st.sources["usd_per_hour"] and st.spot_usd_per_hour is None


def test_devices_that_cannot_be_rented_say_so():
    cat = _full_catalog()
    without = unrentable_devices(catalog=cat)
    assert {"mi300x", "gaudi3"} <= set(without)
    with pytest.raises(CostModelError, match="device 'mi300x' cannot be rented"):
        server_types_for("mi300x", "rent", catalog=cat)
    rent_h200 = server_types_for("h200", "rent", catalog=cat)
    assert rent_h200 and all(st.kind == "instance" and st.accelerator == "h200" for st in rent_h200)
    assert [s.count for s in server_types_for("l4", "buy")] == [1, 4, 8]
    assert [s.id for s in server_types_for("epyc-genoa", "owned")] == ["cpu-epyc-genoa-2s"]
    assert {s.id for s in server_types_for("epyc-genoa", "rent")} >= {"nebius-cpu-d3-192vcpu-768gb"}
    with pytest.raises(CatalogError, match="device 'h900' has no default server type"):
        default_server_type("h900")
    with pytest.raises(CatalogError, match="unknown cost mode 'lease'"):
        server_types_for("l4", "lease")


# ---------------------------------------------------------------- the whole bill

def _factor(p):
    return annuity_per_year(1.0, p.interest_rate, p.amortization_years) / 8760.0


def test_server_hour_cost_buy_by_hand(servers):
    p = load_tco("default")
    st = servers["hgx-h100-8"]
    c = server_hour_cost(st, load_catalog(), p, "buy")
    f = 0.075 / (1 - 1.075 ** -4) / 8760                           # annuity factor per hour, 7.5%, 4 years
    assert c["accelerators"] == pytest.approx(200_000 * f)         # 6.8166
    assert c["host"] == pytest.approx(32_010 * f)                  # 1.0910
    assert c["network"] == pytest.approx(4.71 * 8 * 400 * f)       # 0.5139
    assert c["power"] == pytest.approx(10.2 * 1.0 * 1.56 * 0.08)   # 1.2730
    assert c["facility"] == pytest.approx(184.06 * 10.2 * 12 / 8760)   # 2.5719
    assert c["support"] == pytest.approx(0.10 * 232_010 / 8760)   # 2.6485
    assert c["capex"] == pytest.approx(c["accelerators"] + c["host"] + c["network"])
    assert c["opex"] == pytest.approx(c["facility"] + c["support"])
    assert c["total"] == pytest.approx(c["capex"] + c["power"] + c["opex"]) == pytest.approx(14.9146, abs=1e-3)
    assert set(c) == set(BILL_KEYS)


def test_server_hour_cost_owned_and_rent_by_hand(servers, instances):
    p = load_tco("default")
    owned = server_hour_cost(servers["l4-pcie-8"], load_catalog(), p, "owned")
    assert owned["accelerators"] == owned["host"] == owned["network"] == owned["capex"] == 0
    assert owned["power"] == pytest.approx(2.216 * 1.56 * 0.08)
    assert owned["facility"] == pytest.approx(184.06 * 2.216 * 12 / 8760)
    assert owned["support"] == pytest.approx(0.10 * servers["l4-pcie-8"].price_usd / 8760)
    assert owned["total"] == pytest.approx(owned["power"] + owned["facility"] + owned["support"])
    h200 = instances["nebius-gpu-h200-sxm-8gpu-128vcpu-1600gb"]
    rent = server_hour_cost(h200, None, p, "rent")
    assert rent == {**dict.fromkeys(BILL_KEYS, 0.0), "opex": 28.0, "total": 28.0}
    assert server_hour_cost(h200, None, p, "rent", spot=True)["total"] == 11.6
    with pytest.raises(CostModelError, match="no spot price"):
        server_hour_cost(instances["aws-g4dn.xlarge"], None, p, "rent", spot=True)
    with pytest.raises(CostModelError, match="bought, not rented"):
        server_hour_cost(servers["l4-pcie-8"], None, p, "rent")
    with pytest.raises(CostModelError, match="can only be rented"):
        server_hour_cost(h200, None, p, "buy")


def test_paper_economics_price_accelerators_host_and_power_only(servers):
    p = load_tco("paper-2025")
    c = server_hour_cost(servers["hgx-h100-8"], load_catalog(), p)
    assert c["network"] == c["facility"] == c["support"] == 0
    assert c["accelerators"] / 8 == pytest.approx(device_hour_cost(load_catalog()["h100"], p)["capex"])
    assert c["power"] == pytest.approx(10.2 * 0.40)


def test_tco_bill_fields_say_why(tmp_path):
    p = load_tco("default")
    for k in ("facility_usd_per_kw_month", "network_usd_per_gbps", "support_fraction_of_capex_per_year",
              "host_cores_per_accelerator", "host_cores_per_replica"):
        assert getattr(p, k) > 0 and p.why.get(k), k
        assert getattr(load_tco("paper-2025"), k) == 0 and load_tco("paper-2025").why.get(k), k
    assert TcoParams().facility_usd_per_kw_month == 0                   # files without them keep loading
    path = tmp_path / "t.yaml"
    path.write_text((config_dir() / "tco" / "default.yaml").read_text().replace(
        "facility_usd_per_kw_month: {value: 184.06", "facility_usd_per_kw_month: {value: 1840000"))
    with pytest.raises(InputError, match="field 'facility_usd_per_kw_month': must be at most"):
        load_tco(path)


# ---------------------------------------------------------------- bad files

@pytest.mark.parametrize("old, new, field, message, line_key", [
    ("power_w: {value: 10200, source:", "power_w: {value: 10200, sorce:", "power_w.sorce", "unknown key", "power_w"),
    ("rack_units: {value: 8, source:", "rack_units: {value: -8, source:", "rack_units", "must be positive",
     "rack_units"),
    ("power_w: {value: 10200, source:", "power_w: {value: 1000000000, source:", "power_w", "beyond any real server",
     "power_w"),
    ("accelerators: 8\n", "accelerators: 8\ncolour: green\n", "colour", "unknown field", "colour"),
    ("  sockets: 2\n", "  sockets: 2.5\n", "host.sockets", "whole number", "sockets"),
    ("  cpu: xeon-sapphirerapids\n", "  cpu: h100\n", "host.cpu", "expected a CPU", "cpu"),
    ("default_for: [h100]", "default_for: [a100]", "default_for[0]", "not this server's device", "default_for"),
])
def test_bad_server_file_names_file_line_and_field(tmp_path, old, new, field, message, line_key):
    cfg = _copy_configs(tmp_path)
    path = cfg / "servers" / "hgx-h100-8.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError) as exc:
        load_server_types(config_dir=cfg)
    e = exc.value
    assert e.file.endswith("hgx-h100-8.yaml") and e.field == field and message in str(e), str(e)
    want = next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                if line.lstrip().startswith(line_key + ":"))
    assert e.line == want and f"hgx-h100-8.yaml:{want}: field '{field}'" in str(e)


def test_figure_without_source_or_estimate(tmp_path):
    cfg = _copy_configs(tmp_path)
    path = cfg / "servers" / "l4-pcie-8.yaml"
    lines = path.read_text().splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("power_w:"))
    lines[i] = "power_w: {value: 2216}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"l4-pcie-8.yaml:{i + 1}: field 'power_w': every figure needs a source"):
        load_server_types(config_dir=cfg)


def test_price_that_does_not_add_up_and_two_defaults(tmp_path):
    cfg = _copy_configs(tmp_path)
    path = cfg / "servers" / "hgx-h100-8.yaml"
    path.write_text(path.read_text() + 'price_usd: {value: 250000, estimate: "a quote"}\n')
    with pytest.raises(InputError, match=r"field 'price_usd'.*accelerators cost \$200,000"):
        load_server_types(config_dir=cfg)
    shutil.copy(config_dir() / "servers" / "hgx-h100-8.yaml", path)
    other = cfg / "servers" / "l4-pcie-4.yaml"
    other.write_text(other.read_text().replace("default_for: []", "default_for: [l4]"))
    with pytest.raises(InputError, match="'l4' already has a default server type"):
        load_server_types(config_dir=cfg)


def test_bad_instance_file_names_file_line_and_field(tmp_path):
    cfg = _copy_configs(tmp_path)
    path = cfg / "instances" / "aws.yaml"
    text = path.read_text()
    path.write_text(text.replace("    usd_per_hour: 0.526\n", "    usd_per_hour: -0.526\n", 1))
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if "usd_per_hour: -0.526" in l)
    with pytest.raises(InputError) as exc:
        load_instance_types(config_dir=cfg)
    assert exc.value.line == line and exc.value.field == "instances[0].usd_per_hour"
    path.write_text(text.replace("    vcpus: 4\n", "    vcpus: 4\n    gpus: 1\n", 1))
    with pytest.raises(InputError, match=r"aws.yaml:\d+: field 'instances\[0\]\.gpus': unknown field"):
        load_instance_types(config_dir=cfg)
    path.write_text(text.replace("accelerator: t4", "accelerator: epyc-genoa", 1))
    with pytest.raises(InputError, match="expected an accelerator"):
        load_instance_types(config_dir=cfg)
    path.write_text(text)
    dup = cfg / "instances" / "aws2.yaml"
    dup.write_text(text.replace("family: aws", "family: aws2"))
    with pytest.raises(InputError, match="instance type id 'aws-g4dn.xlarge' is also defined"):
        load_instance_types(config_dir=cfg)


# ---------------------------------------------------------------- the command

def test_servers_command_json_and_table():
    doc = servers_json("buy", catalog=_full_catalog())
    assert doc["version"] == 1 and doc["mode"] == "buy" and not doc["skipped"] and not doc["without"]
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "servers", "--json", "--mode", "rent"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == 1
    rent = json.loads(out[0])
    assert rent["mode"] == "rent" and {"mi300x", "gaudi3"} <= set(rent["without"])
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "servers"], capture_output=True, text=True)
    assert r.returncode == 0 and "hgx-h100-8" in r.stdout and "cpu-epyc-genoa-2s" in r.stdout
