"""TCO parameters, the per-device-hour cost, fleets."""
from __future__ import annotations

import pytest

from hetagent.configs import config_dir
from hetagent.costmodel.devices import get_device
from hetagent.costmodel.fleet import load_fleet
from hetagent.costmodel.tco import (
    TcoParams, annuity_per_year, device_hour_cost, load_tco, per_million_tokens, per_request,
    per_thousand_requests, unit_costs,
)
from hetagent.errors import CatalogError, CostModelError, InputError


def test_paper_tco_params():
    p = load_tco("paper-2025")
    assert (p.amortization_years, p.interest_rate, p.electricity_usd_per_kwh, p.utilization, p.pue) == (4, 0.08, 0.40, 1.0, 1.0)
    assert p.other_opex_fraction_of_capex_per_year == 0 and p.other_opex_usd_per_device_year == 0
    assert p.mode == "buy"


def test_default_tco_params_say_why():
    p = load_tco("default")
    assert p.amortization_years == 4 and 0 < p.interest_rate < 0.2 and p.pue >= 1
    for k in ("amortization_years", "interest_rate", "electricity_usd_per_kwh", "pue", "utilization"):
        assert p.why.get(k), k


def test_annuity_by_hand():
    # $25,000 at 8% over 4 years: factor 0.08 / (1 - 1.08**-4) = 0.301921 -> $7,548.02 per year
    assert annuity_per_year(25000, 0.08, 4) == pytest.approx(7548.02, abs=0.01)
    assert annuity_per_year(25000, 0.0, 4) == 6250
    cost = device_hour_cost(get_device("h100", "paper-2025"), load_tco("paper-2025"))
    assert cost["capex"] == pytest.approx(7548.02 / 8760, rel=1e-6)             # 0.8616 $/h
    assert cost["power"] == pytest.approx(0.700 * 0.40)                         # 700 W at $0.40/kWh
    assert cost["opex"] == 0
    assert cost["total"] == pytest.approx(0.8616 + 0.28, abs=1e-4)


def test_power_scales_with_pue_and_utilization_and_opex():
    p = TcoParams(electricity_usd_per_kwh=0.1, pue=1.5, utilization=0.5, other_opex_fraction_of_capex_per_year=0.1,
                  other_opex_usd_per_device_year=876)
    c = device_hour_cost(get_device("a100"), p)
    assert c["power"] == pytest.approx(0.4 * 0.5 * 1.5 * 0.1)
    assert c["opex"] == pytest.approx((0.1 * 8000 + 876) / 8760)


def test_rent_and_owned_modes():
    p = load_tco("default")
    assert device_hour_cost(get_device("h100"), p, "rent") == {"capex": 0.0, "power": 0.0, "opex": 2.965, "total": 2.965}
    with pytest.raises(CostModelError, match="mi300x.*no rental price"):
        device_hour_cost(get_device("mi300x"), p, "rent")
    owned = device_hour_cost(get_device("a100"), p, "owned")
    assert owned["capex"] == 0 and owned["power"] > 0
    with pytest.raises(CatalogError):
        device_hour_cost(get_device("a100"), p, "lease")


def test_unit_conversions():
    assert per_million_tokens(3.6, 1000) == pytest.approx(1.0)       # $3.6/h for 3.6M tokens/h
    assert per_request(3.6, 1) == pytest.approx(0.001)
    assert per_thousand_requests(3.6, 1) == pytest.approx(1.0)
    u = unit_costs(7.2, 2, 500)
    assert u == {"per_hour": 7.2, "per_million_tokens": pytest.approx(2.0), "per_request": pytest.approx(0.001),
                 "per_thousand_requests": pytest.approx(1.0)}
    with pytest.raises(CostModelError):
        per_request(1, 0)


def test_unknown_tco_and_bad_tco_file(tmp_path):
    with pytest.raises(CatalogError, match="unknown tco config 'cheap'; choices: default, paper-2025"):
        load_tco("cheap")
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nmode: buy\namortization_years: {value: 4, why: x}\ninterest_rate: {value: 0.08}\n")
    with pytest.raises(InputError) as exc:
        load_tco(path)
    assert exc.value.field == "interest_rate" and exc.value.line == 4 and "t.yaml" in str(exc.value)
    path.write_text((config_dir() / "tco" / "default.yaml").read_text().replace("pue: {value: 1.56", "pue: {value: 0.5"))
    with pytest.raises(InputError, match="field 'pue'"):
        load_tco(path)


def test_fleets():
    devices, entries, skipped = load_fleet("default").resolve()
    assert "h100" in devices and all(e.max_count is None for e in entries.values())
    # no cited device price, but their server types have one: bought as whole servers (issue 19)
    unpriced = {"mi325x", "mi355x", "h200-nvl", "gb200", "rtx-pro-6000", "arc-pro-b60"}
    assert not skipped and unpriced <= set(devices)
    devices, entries, skipped = load_fleet("rent").resolve()
    assert load_fleet("rent").mode == "rent"
    from hetagent.costmodel.servers import unrentable_devices
    assert set(skipped) == set(unrentable_devices()) and "h100" in devices      # no instance type offers them
    assert all("the catalog cannot rent it" in r for r in skipped.values())
    local = load_fleet("local-cpu")
    assert local.mode == "owned"
    devices, entries, _ = local.resolve()
    assert list(devices) == ["local-cpu"] and entries["local-cpu"].owned == 1
    cpu = devices["local-cpu"]
    assert cpu.is_cpu and cpu.cores == 2 and cpu.price_usd is None
    assert cpu.figures["peak_tflops.fp32"].estimate and "measured on this host" in cpu.figures["memory_gb"].source
    cost = device_hour_cost(cpu, load_tco("default"), "owned")
    assert cost["capex"] == 0 and cost["total"] == cost["power"] > 0


def test_bad_fleet_names_line(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("name: f\nmode: buy\ndevices:\n  - {id: h100}\n  - {id: h900, max_count: 2}\n")
    with pytest.raises(InputError) as exc:
        load_fleet(path)
    assert exc.value.line == 5 and "h900" in str(exc.value) and "f.yaml" in str(exc.value)
    path.write_text("name: f\nmode: lease\ndevices: all\n")
    with pytest.raises(InputError, match="f.yaml:2: field 'mode'"):
        load_fleet(path)
    path.write_text("name: f\nmode: owned\ndevices:\n  - {id: a100}\n")
    with pytest.raises(InputError, match="field 'devices\\[0\\]\\.owned'"):
        load_fleet(path)
