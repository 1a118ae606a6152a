"""Does the recommendation survive the cost model being wrong about a device it relies on?

For each device of a plan's fleet whose calibration status is `datasheet` or `calibrated` (measured devices are not
re-checked), the planner is called again with that device derated to the slow end of its interval
(costmodel.uncertainty.derated: every operator on it takes `high` x its predicted time). The recommendation holds when
the derated plan buys the same device kinds. When it does not, the entry gives the alternative (fleet and TCO per
hour, priced at the derated efficiency) and, by bisection between the pessimistic factor and 1, the efficiency factor
below which the recommendation flips (`threshold`: "if the device reaches below threshold x its predicted rate, buy
the alternative"). Bisection assumes the flip is monotone in the factor, as it is when only that device's times grow.

The planner is any callable `plan_with(catalog) -> outcome`: catalog is {device id: Device}; outcome is a mapping or
object with `fleet` ({device: count}) and `tco_per_hour` (or a hetagent Plan, whose tco["per_hour"] is read), or None
when no plan exists (a raised HetagentError counts as None). Entries:
{device, status, holds, alternative {fleet, tco_per_hour} | None, threshold | None}.
"""
from __future__ import annotations

from typing import Callable

from hetagent.costmodel import uncertainty as unc
from hetagent.errors import HetagentError

CHECKED = ("datasheet", "calibrated")


def outcome(result) -> dict | None:
    """{fleet, tco_per_hour} of a planner result (mapping, object with those attributes, or a Plan); None if none."""
    if result is None:
        return None
    if isinstance(result, dict):
        fleet, tco = result.get("fleet"), result.get("tco_per_hour")
    else:
        fleet = getattr(result, "fleet", None)
        tco = getattr(result, "tco_per_hour", None)
        if tco is None and isinstance(getattr(result, "tco", None), dict):
            tco = result.tco.get("per_hour")
    if fleet is None:
        return None
    return {"fleet": {d: int(n) for d, n in fleet.items() if n}, "tco_per_hour": float(tco) if tco is not None else None}


def same_kinds(a: dict | None, b: dict | None) -> bool:
    """The default test of 'the recommendation holds': both plans exist and buy the same device kinds."""
    return a is not None and b is not None and set(a["fleet"]) == set(b["fleet"])


def _solve(plan_with, catalog):
    try:
        return outcome(plan_with(catalog))
    except HetagentError:
        return None


def robustness(plan_with: Callable, catalog: dict, devices=None, *, baseline=None, calibration: dict | None = None,
               same: Callable = same_kinds, tolerance: float = 0.01, max_solves: int = 12) -> list[dict]:
    """The `robustness` entries of a plan (module doc).

    catalog: {id: Device} the plan was made with; devices: the plan's devices (ids, or the fleet mapping; default:
    the baseline's fleet); baseline: the plan's outcome (default: plan_with(catalog)); calibration: {device id:
    {"status", "interval": {"low", "high"}}} to use instead of the cost model's (uncertainty.device_calibration);
    same(baseline, outcome) -> bool decides whether the recommendation holds; tolerance: the bisection's resolution
    on the factor; max_solves: planner calls per device at most (the pessimistic one included)."""
    base = outcome(baseline) if baseline is not None else _solve(plan_with, catalog)
    if base is None:
        raise HetagentError("robustness needs a plan: the planner found none with the catalog as given")
    ids = list(devices if devices is not None else base["fleet"])
    out = []
    for d in ids:
        if d not in catalog:
            continue
        info = (calibration or {}).get(d) or unc.device_calibration(catalog[d])
        status, high = info["status"], (info.get("interval") or {}).get("high")
        if status not in CHECKED or not high:
            continue
        pess = 1.0 / float(high)
        worst = _solve(plan_with, unc.derated(catalog, d, pess))
        if same(base, worst):
            out.append({"device": d, "status": status, "holds": True, "alternative": None, "threshold": None})
            continue
        lo, hi, solves = pess, 1.0, 1                      # flips at lo, holds at hi
        while hi - lo > tolerance and solves < max_solves:
            mid = (lo + hi) / 2.0
            o = _solve(plan_with, unc.derated(catalog, d, mid))
            solves += 1
            if same(base, o):
                hi = mid
            else:
                lo = mid
        out.append({"device": d, "status": status, "holds": False,
                    "alternative": ({"fleet": worst["fleet"], "tco_per_hour": worst["tco_per_hour"]}
                                    if worst is not None else None),
                    "threshold": round(hi, 4)})
    return out


def describe(entry: dict, base_tco_per_hour: float | None = None) -> str:
    """One sentence for the report's recommendation section."""
    d = entry["device"]
    if entry["holds"]:
        return (f"{d} ({entry['status']}): the recommendation holds at the slow end of its interval.")
    alt = entry["alternative"]
    thr = entry["threshold"]
    if alt is None:
        return (f"{d} ({entry['status']}): below {thr:.0%} of its predicted rate no plan meets the SLA.")
    fleet = " + ".join(f"{n} x {k}" for k, n in sorted(alt["fleet"].items()))
    delta = ""
    if base_tco_per_hour is not None and alt["tco_per_hour"] is not None:
        delta = f": {alt['tco_per_hour'] - base_tco_per_hour:+.2f} $/hour"
    return f"if {d} ({entry['status']}) reaches below {thr:.0%} of its predicted rate, buy {fleet} instead{delta}."
