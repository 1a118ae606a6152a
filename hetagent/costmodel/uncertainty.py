"""How sure the cost model is about a device: its calibration status, the evidence, and the interval it earns.

Status (the strongest evidence the device has):
- `measured`: operator-level measurements of that device (the shared Vidur / AIConfigurator tables: a100, a40, l40s;
  a `hetagent calibrate --gpu` file; for CPUs, the host `hetagent calibrate` ran on);
- `calibrated`: end-to-end measurements of that device (MLPerf Inference v4.1 Llama 2 70B Offline results);
- `datasheet`: the device's own datasheet peaks with another device's fit (its family's or the generic one) and its
  vendor stack's end-to-end factor where one exists.

Each status carries an interval {low, high} of factors on predicted time, fitted from cross-validated residuals of
that class (fit.py `intervals`; docs/costmodel.md "How sure"): the true time of a prediction t fell in
[low x t, high x t] in the validation (p5-p95, or the whole range where the cases are few). CPUs other than the
calibration host get none: scaling a CPU calibration by datasheet peaks was never validated. `derated(catalog, device, factor)` returns a catalog copy in
which one device runs at `factor` times the predicted rate, so any planner call can price it at the pessimistic end
of its interval (`pessimistic_factor`).
"""
from __future__ import annotations

import dataclasses

from hetagent.costmodel import calibration as cal

STATUSES = ("measured", "calibrated", "datasheet")


def _cpu_host_match(device) -> bool:
    from hetagent.costmodel.operators import _same_host
    c = cal.load_cpu_calibration()
    return bool(c) and _same_host(device, c.get("host") or {})


def same_figures(device, calibration: dict | None = None) -> bool:
    """The device has the datasheet figures its id's fit was made with (False for another catalog's figures, e.g.
    paper-2025's sparse H100 peak: the fit's evidence is about other numbers)."""
    doc = calibration or cal.load_gpu_calibration()
    rec = ((doc.get("provenance") or {}).get("figures") or {}).get(device.id)
    if not rec:
        return True
    now = cal.figures_of(device)
    return all((rec[k] is None) == (now[k] is None) and (rec[k] is None or abs(now[k] - rec[k]) <= 0.01 * rec[k])
               for k in rec)


def status(device, calibration: dict | None = None) -> str:
    """The device's calibration status (see module doc)."""
    if getattr(device, "kind", "gpu") == "cpu":
        return "measured" if _cpu_host_match(device) else "datasheet"
    doc = calibration or cal.load_gpu_calibration()
    if cal.measured_devices().get(device.id) if calibration is None else False:
        return "measured"                          # a calibrate --gpu file: measured whatever the catalog says
    if not same_figures(device, calibration):
        return "datasheet"
    if cal.is_measured(device.id, calibration):
        return "measured"
    if device.id in ((doc.get("end_to_end") or {}).get("devices") or {}):
        return "calibrated"
    return "datasheet"


def interval(status_: str, device=None, calibration: dict | None = None) -> dict:
    """{low, high} factors on predicted time for a status (CPUs measured on this host: the CPU calibration's own)."""
    doc = calibration or cal.load_gpu_calibration()
    iv = doc.get("intervals") or {}
    key = status_
    if device is not None and getattr(device, "kind", "gpu") == "cpu":
        # a CPU's own calibration host is validated (leave-one-size-out); scaling it to another CPU by datasheet
        # peaks never was: no interval rather than one borrowed from GPUs
        key = "cpu_measured" if status_ == "measured" else None
    entry = iv.get(key)
    if not entry:
        return {"low": None, "high": None}
    return {"low": entry["low"], "high": entry["high"]}


def sources(device, calibration: dict | None = None) -> list[str]:
    """The evidence behind the device's predictions, most specific first."""
    doc = calibration or cal.load_gpu_calibration()
    out = []
    if getattr(device, "kind", "gpu") == "cpu":
        c = cal.load_cpu_calibration()
        if c and _cpu_host_match(device):
            h = c.get("host") or {}
            out.append(f"hetagent calibrate on {h.get('cpu')} ({h.get('cores')} cores), {str(h.get('date'))[:10]}: "
                       f"cpu_calibration.json")
        elif c:
            out.append("cpu_calibration.json measured on another host, scaled by datasheet peaks and bandwidth")
        out.append("datasheet: " + (device.sources().get("peak_tflops.fp32") or "configs/devices"))
        return out
    meas = cal.measured_devices().get(device.id) if calibration is None else None
    if meas:
        out.append(f"hetagent calibrate --gpu on {meas.get('host')} ({meas.get('gpu_name')}), {meas.get('date')}: "
                   f"{meas['file']}")
    prov = doc.get("provenance") or {}
    if device.id in doc["devices"] and device.id != "generic":
        files = [f for f in (prov.get("files") or {}) if f.split("/")[-1].startswith(device.id + "__")]
        if files:
            out.append(f"Vidur profiles @{prov.get('commit')}: {len(files)} tables (GEMM, elementwise)")
        if device.id in (prov.get("aiconfigurator_rows") or {}):
            out.append(f"AIConfigurator vLLM 0.14.0 / NCCL 2.27.3 tables @{str(prov.get('aiconfigurator_commit'))[:12]} "
                       "(GEMM, attention, all-reduce)")
    e2e = ((doc.get("end_to_end") or {}).get("devices") or {}).get(device.id)
    if e2e:
        out.append(f"MLPerf Inference v4.1 Llama 2 70B Offline ({e2e['engine']}): {len(e2e['submissions'])} result(s) "
                   f"{', '.join(e2e['submissions'])}; efficiency {e2e['efficiency']} relative to H100 SXM")
    _, src = cal.gpu_params(device.id, calibration, getattr(device, "architecture", None))
    if not out or not (device.id in doc["devices"] or meas):
        level = "generic fit across a100, a40, l40s" if src == "generic" else f"{src.replace(':', ' ')} fit"
        out.append(f"operator model: {level} on this device's datasheet peaks")
    f, fsrc = cal.end_to_end_efficiency(device.id, getattr(device, "vendor", None), calibration)
    if fsrc.startswith("stack:"):
        st = doc["end_to_end"]["stacks"][device.vendor]
        out.append(f"vendor stack factor {st['efficiency']} ({st['engine']}, median of {', '.join(st['devices'])})")
    elif fsrc == "none" and status(device, calibration) == "datasheet":
        out.append(f"no end-to-end measurement of any {getattr(device, 'vendor', '')} device: no stack factor")
    return out


def device_calibration(device, calibration: dict | None = None) -> dict:
    """`hetagent devices --json`'s `calibration` entry: {status, sources, interval {low, high}}."""
    st = status(device, calibration)
    return {"status": st, "sources": sources(device, calibration), "interval": interval(st, device, calibration)}


def latency_interval_ms(latency_ms: float, status_: str, device=None) -> list:
    """[low, high] of a predicted latency for a status."""
    iv = interval(status_, device)
    if iv["low"] is None:
        return [None, None]
    return [latency_ms * iv["low"], latency_ms * iv["high"]]


def pessimistic_factor(device) -> float:
    """The efficiency factor at the slow end of the device's interval (1 / high)."""
    iv = interval(status(device), device)
    return 1.0 / iv["high"] if iv["high"] else 1.0


def derated(catalog: dict, device_id: str, factor: float) -> dict:
    """A copy of the catalog ({id: Device}) in which `device_id` runs at `factor` x the cost model's rate (every
    operator on it takes 1/factor as long); the other devices are the same objects."""
    if device_id not in catalog:
        from hetagent.errors import unknown_choice
        raise unknown_choice("device", device_id, catalog)
    if not factor > 0:
        raise ValueError(f"efficiency factor must be positive, got {factor}")
    out = dict(catalog)
    dev = catalog[device_id]
    out[device_id] = dataclasses.replace(dev, efficiency_factor=float(getattr(dev, "efficiency_factor", 1.0)) * factor)
    return out
