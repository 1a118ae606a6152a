"""Total cost of ownership per device-hour, and conversions to $ per token and per request.

buy:   capex/h = annuity payment per year / 8760, annuity = price * r / (1 - (1 + r)^-n) (price / n if r = 0)
       power/h = tdp_kW * utilization * pue * $/kWh
       opex/h  = (other_opex_fraction_of_capex_per_year * price + other_opex_usd_per_device_year) / 8760
owned: as buy with capex = 0 (sunk).
rent:  the rental price per hour (it already includes power and facility), reported as opex.

server_hour_cost prices a whole server type (hetagent.costmodel.servers) per server-hour, the bill the planner
adds up: accelerators and host (annuities), the network share (switch ports, optics, cabling per Gbps of the
server's NICs, financed like the server), power of the whole server x utilization x PUE x $/kWh, facility
(colocation $ per kW-month of the server's power) and support (a fraction of the purchase price per year).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from hetagent.configs import named_or_path
from hetagent.costmodel.devices import Device, Where, is_number, read_yaml
from hetagent.errors import CostModelError, unknown_choice

HOURS_PER_YEAR = 8760.0
MODES = ("buy", "rent", "owned")
_FIELDS = ("amortization_years", "interest_rate", "electricity_usd_per_kwh", "pue", "utilization",
           "other_opex_fraction_of_capex_per_year", "other_opex_usd_per_device_year")
# The whole bill of a server (server_hour_cost): optional in a file (0 when left out), each with its upper bound.
BILL_FIELDS = {"facility_usd_per_kw_month": 10_000.0, "network_usd_per_gbps": 10_000.0,
               "support_fraction_of_capex_per_year": 10.0, "host_cores_per_accelerator": 1_000.0,
               "host_cores_per_replica": 1_000.0}


# Upper bounds that no real economics reach (beyond them the $ figures overflow or mean nothing)
MAXIMA = {"amortization_years": 100.0, "interest_rate": 10.0, "electricity_usd_per_kwh": 100.0, "pue": 10.0,
          "utilization": 1.0, "other_opex_fraction_of_capex_per_year": 100.0,
          "other_opex_usd_per_device_year": 1e9}


@dataclass(frozen=True)
class TcoParams:
    name: str = "default"
    mode: str = "buy"
    amortization_years: float = 4.0
    interest_rate: float = 0.08
    electricity_usd_per_kwh: float = 0.40
    pue: float = 1.0
    utilization: float = 1.0
    other_opex_fraction_of_capex_per_year: float = 0.0
    other_opex_usd_per_device_year: float = 0.0
    facility_usd_per_kw_month: float = 0.0         # colocation: $ per kW of the server's power per month
    network_usd_per_gbps: float = 0.0              # switch ports, optics, cables per Gbps of server NICs (capex)
    support_fraction_of_capex_per_year: float = 0.0
    host_cores_per_accelerator: float = 0.0        # host cores the serving engine keeps per accelerator
    host_cores_per_replica: float = 0.0            # ... and per replica (engine core + API server)
    why: dict[str, str] = field(default_factory=dict, compare=False)
    path: str | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {"name": self.name, "mode": self.mode, **{k: getattr(self, k) for k in (*_FIELDS, *BILL_FIELDS)}}


def load_tco(name_or_path: str | Path = "default", config_dir=None) -> TcoParams:
    """A TCO config by name (configs/tco/<name>.yaml) or by path."""
    path = named_or_path("tco", name_or_path, config_dir)
    data, lines = read_yaml(path)
    where = Where(path, lines)
    if not isinstance(data, dict):
        raise where.error("", "a TCO config must be a mapping")
    allowed = {"name", "mode", *_FIELDS, *BILL_FIELDS}
    for k in data:
        if k not in allowed:
            raise where.error(str(k), f"unknown field; allowed: {', '.join(sorted(allowed))}")
    mode = data.get("mode", "buy")
    if mode not in MODES:
        raise where.error("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    values, why = {}, {}
    for k in (*_FIELDS, *BILL_FIELDS):
        if k not in data:
            if k in ("other_opex_usd_per_device_year", "other_opex_fraction_of_capex_per_year") or k in BILL_FIELDS:
                values[k] = 0.0
                continue
            raise where.error("", f"missing required field '{k}'")
        raw = data[k]
        if isinstance(raw, dict):
            if "value" not in raw or not (raw.get("why") or raw.get("source")):
                raise where.error(k, "expected {value, why} (say why this value was chosen)")
            why[k] = raw.get("why") or raw.get("source")
            raw = raw["value"]
        if not is_number(raw) or raw < 0:
            raise where.error(k, f"must be a non-negative number, got {raw!r}")
        top = BILL_FIELDS[k] if k in BILL_FIELDS else MAXIMA[k]
        if raw > top:
            raise where.error(k, f"must be at most {top:g}, got {raw!r}")
        values[k] = float(raw)
    if values["amortization_years"] < 0.01:
        raise where.error("amortization_years", f"must be at least 0.01 (years), got {values['amortization_years']}")
    if values["pue"] < 1:
        raise where.error("pue", f"must be at least 1.0, got {values['pue']}")
    if values["utilization"] > 1:
        raise where.error("utilization", f"must be between 0 and 1, got {values['utilization']}")
    return TcoParams(name=str(data.get("name", path.stem)), mode=mode, why=why, path=str(path), **values)


def annuity_per_year(price: float, rate: float, years: float) -> float:
    """Yearly payment that repays `price` over `years` at interest `rate`."""
    denominator = -math.expm1(-years * math.log1p(rate))    # 1 - (1 + rate)^-years, exact for tiny rates
    if rate == 0 or denominator == 0:
        return price / years
    return price * rate / denominator


def device_hour_cost(device: Device, params: TcoParams, mode: str | None = None) -> dict[str, float]:
    """{"capex", "power", "opex", "total"} in $ per device-hour (rent: the rental price, as opex)."""
    mode = mode or params.mode
    if mode not in MODES:
        raise unknown_choice("cost mode", mode, MODES)
    if mode == "rent":
        if device.rent_usd_per_hour is None:
            raise CostModelError(f"device '{device.id}' has no rental price (rent_usd_per_hour is null"
                                 f"{' in ' + device.path if device.path else ''}); buy it or pick another device")
        r = float(device.rent_usd_per_hour)
        return {"capex": 0.0, "power": 0.0, "opex": r, "total": r}
    price = device.price_usd
    if mode == "buy" and price is None:
        raise CostModelError(f"device '{device.id}' has no purchase price (price_usd is null"
                             f"{' in ' + device.path if device.path else ''}); rent it or pick another device")
    if device.tdp_w is None:
        raise CostModelError(f"device '{device.id}' has no TDP (tdp_w is null); power cannot be priced")
    capex = 0.0 if mode == "owned" else annuity_per_year(price, params.interest_rate,
                                                         params.amortization_years) / HOURS_PER_YEAR
    power = device.tdp_w / 1000.0 * params.utilization * params.pue * params.electricity_usd_per_kwh
    opex = (params.other_opex_fraction_of_capex_per_year * (price or 0.0)
            + params.other_opex_usd_per_device_year) / HOURS_PER_YEAR
    return {"capex": capex, "power": power, "opex": opex, "total": capex + power + opex}


BILL_KEYS = ("accelerators", "host", "network", "facility", "support", "capex", "power", "opex", "total")


def server_hour_cost(server_type, devices_catalog, params: TcoParams, mode: str | None = None, *,
                     spot: bool = False) -> dict[str, float]:
    """The whole bill of one server (or cloud instance) per server-hour, $ by line (BILL_KEYS).

    buy:   accelerators, host: annuities of their purchase prices (capex); network: network_usd_per_gbps x the
           server's NIC Gbps, financed the same way (capex); power: power_w x utilization x PUE x $/kWh;
           facility: facility_usd_per_kw_month x power_w (the provisioned kW, not the average draw) x 12 / 8760;
           support: (support_fraction + other_opex_fraction) x purchase price / 8760, plus
           other_opex_usd_per_device_year per accelerator (per socket on a CPU-only server); opex = facility + support.
    owned: as buy with accelerators, host and network at 0 (sunk); power, facility and support stay.
    rent:  the instance's $/hour (its spot price with spot=True) as opex; every other line 0.
    devices_catalog ({id: Device} or None) fills the accelerators' price when the server type lacks it.
    """
    mode = mode or params.mode
    if mode not in MODES:
        raise unknown_choice("cost mode", mode, MODES)
    where = f" ({server_type.path})" if getattr(server_type, "path", None) else ""
    out = dict.fromkeys(BILL_KEYS, 0.0)
    if mode == "rent":
        if server_type.kind != "instance":
            raise CostModelError(f"server type '{server_type.id}' is bought, not rented{where}; rent an instance "
                                 "type (configs/instances/) instead")
        rate = server_type.spot_usd_per_hour if spot else server_type.usd_per_hour
        if rate is None:
            raise CostModelError(f"instance type '{server_type.id}' has no {'spot' if spot else 'on-demand'} "
                                 f"price{where}")
        out["opex"] = out["total"] = float(rate)
        return out
    if server_type.kind != "server":
        raise CostModelError(f"'{server_type.id}' is a cloud instance type{where}: it can only be rented; "
                             "buy a server type (configs/servers/) instead")
    acc_price, host_price = server_type.accelerators_price_usd, server_type.host_price_usd
    if acc_price is None and server_type.accelerator and devices_catalog:
        dev = devices_catalog.get(server_type.accelerator)
        if dev is not None and dev.price_usd is not None:
            acc_price = dev.price_usd * server_type.count
    if mode == "buy" and (acc_price is None or host_price is None):
        raise CostModelError(f"server type '{server_type.id}' has no purchase price{where}; own it "
                             "(mode owned) or pick another server type")
    if server_type.power_w is None:
        raise CostModelError(f"server type '{server_type.id}' has no power figure{where}; power cannot be priced")
    price = (acc_price or 0.0) + (host_price or 0.0)
    if mode == "buy":
        factor = annuity_per_year(1.0, params.interest_rate, params.amortization_years) / HOURS_PER_YEAR
        out["accelerators"] = acc_price * factor
        out["host"] = host_price * factor
        out["network"] = (params.network_usd_per_gbps * server_type.nic_count * server_type.nic_gbps) * factor
    kw = server_type.power_w / 1000.0
    out["power"] = kw * params.utilization * params.pue * params.electricity_usd_per_kwh
    out["facility"] = params.facility_usd_per_kw_month * kw * 12.0 / HOURS_PER_YEAR
    devices = server_type.count if server_type.accelerator else server_type.host_sockets
    out["support"] = ((params.support_fraction_of_capex_per_year + params.other_opex_fraction_of_capex_per_year)
                      * price + params.other_opex_usd_per_device_year * devices) / HOURS_PER_YEAR
    out["capex"] = out["accelerators"] + out["host"] + out["network"]
    out["opex"] = out["facility"] + out["support"]
    out["total"] = out["capex"] + out["power"] + out["opex"]
    return out


def per_million_tokens(usd_per_hour: float, tokens_per_second: float) -> float:
    """$ per 1e6 tokens when `usd_per_hour` buys `tokens_per_second` of sustained throughput."""
    if tokens_per_second <= 0:
        raise CostModelError("tokens_per_second must be positive to price per token")
    return usd_per_hour / (tokens_per_second * 3600.0) * 1e6


def per_request(usd_per_hour: float, requests_per_second: float) -> float:
    if requests_per_second <= 0:
        raise CostModelError("requests_per_second must be positive to price per request")
    return usd_per_hour / (requests_per_second * 3600.0)


def per_thousand_requests(usd_per_hour: float, requests_per_second: float) -> float:
    return 1000.0 * per_request(usd_per_hour, requests_per_second)


def unit_costs(usd_per_hour: float, requests_per_second: float, tokens_per_request: float) -> dict[str, float]:
    """plan.json's tco block: per_hour, per_million_tokens, per_request, per_thousand_requests."""
    return {"per_hour": usd_per_hour,
            "per_million_tokens": per_million_tokens(usd_per_hour, requests_per_second * tokens_per_request),
            "per_request": per_request(usd_per_hour, requests_per_second),
            "per_thousand_requests": per_thousand_requests(usd_per_hour, requests_per_second)}
