"""Device calibrations from `hetagent calibrate --gpu`: the measurements of one GPU become that device's parameters.

`hetagent calibrate --gpu` (backends/calibrate.py) times, on the GPU at hand, GEMMs over a sweep of token counts at
transformer shapes (16-bit, and fp8 where torch can), causal prefill attention and single-token decode attention
(torch scaled_dot_product_attention), the largest square matmuls and a device-memory copy. It writes
hetagent/costmodel/data/measured/<device id>.json with the host, the date, the GPU and the catalog peaks it was
compared with. This module fits the cost model's formulas (the same least squares as fit.py) on those samples when
the cost model first needs the device (calibration.measured_devices, cached by file time): the device's status
becomes `measured` and its own parameters replace its family's for every class the file measured.

An older file with only the square-matmul and copy figures (version 1) still gives GEMM efficiencies: the best
measured TFLOP/s over the datasheet peak, the copy bandwidth over the datasheet bandwidth.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hetagent.errors import CostModelError


def catalog_id_for_gpu(name: str, catalog: dict | None = None) -> str | None:
    """The catalog id of a CUDA / ROCm device name ('NVIDIA H100 80GB HBM3' -> h100, 'NVIDIA H100 PCIe' -> h100-pcie):
    each catalog name scores the words it shares with the device name (vendor and memory size left out) minus the
    words it lacks, plus one half when its id appears in the name; the best positive score wins (None otherwise)."""
    if catalog is None:
        from hetagent.costmodel.devices import load_catalog
        catalog = load_catalog()

    def words(text):
        return [w for w in text.lower().replace("-", " ").replace("_", " ").replace(",", " ").split()
                if w not in ("nvidia", "amd", "intel", "instinct", "tesla") and not w.endswith("gb")]
    cuda = words(name)
    have, joined = set(cuda), " ".join(cuda)
    best, score = None, 0.0
    for dev in catalog.values():
        if getattr(dev, "kind", "gpu") == "cpu":
            continue
        ws = words(dev.name)
        sc = sum(1 for w in ws if w in have) - sum(1 for w in ws if w not in have)
        if dev.id.replace("-", " ") in joined:
            sc += 0.5
        if sc > score:
            best, score = dev.id, sc
    return best


def _peaks(doc: dict, device_id: str) -> dict:
    """{precision: FLOP/s, "bandwidth": B/s}: the catalog peaks the file recorded, else the catalog's now."""
    rec = doc.get("gpu", {}).get("catalog_peaks")
    if rec:
        out = {k: float(v) * 1e12 for k, v in (rec.get("tflops") or {}).items()}
        out["bandwidth"] = float(rec["bandwidth_gbs"]) * 1e9
        return out
    from hetagent.costmodel.devices import get_device
    d = get_device(device_id)
    out = {k: float(v) * 1e12 for k, v in d.peak_tflops.items()}
    out["bandwidth"] = float(d.memory_bandwidth_gbs) * 1e9
    return out


def fit_measurements(doc: dict, device_id: str) -> tuple[dict, dict]:
    """(parameters by class, fit statistics) from one `calibrate --gpu` document."""
    from hetagent.costmodel import fit
    g = doc.get("gpu") or {}
    pk = _peaks(doc, device_id)
    bw = pk["bandwidth"]
    params, stats = {}, {}
    rows = g.get("gemm") or []
    for cls, dtypes in (("gemm", ("fp16", "bf16")), ("gemm_fp8", ("fp8",))):
        sel = [r for r in rows if r[0] in dtypes]
        if len(sel) >= 6:
            a = np.array([r[1:] for r in sel], float)          # m, n, k, seconds
            prec = "fp8" if cls == "gemm_fp8" else ("fp16" if "fp16" in pk else "bf16")
            arr = {"m": a[:, 0], "n": a[:, 1], "k": a[:, 2], "t": a[:, 3], "peak": np.full(len(a), pk[prec]),
                   "bw": np.full(len(a), bw), "wb": np.full(len(a), 1.0 if cls == "gemm_fp8" else 2.0)}
            params[cls] = fit.fit_gemm(arr)
            stats[cls] = fit._stats(fit.gemm_predict(arr, params[cls]) / arr["t"])
    pre = g.get("attention_prefill") or []
    if len(pre) >= 6:
        a = np.array(pre, float)                               # b, n, heads, kv_heads, head_dim, seconds
        arr = {"b": a[:, 0], "n": a[:, 1], "h": a[:, 2], "kv": a[:, 3], "hd": a[:, 4], "t": a[:, 5],
               "kvb": np.full(len(a), 2.0), "peak": np.full(len(a), pk.get("fp16", pk.get("bf16"))),
               "bw": np.full(len(a), bw)}
        params["attention_prefill"] = fit.fit_prefill(arr)
        stats["attention_prefill"] = fit._stats(fit.prefill_predict(arr, params["attention_prefill"]) / arr["t"])
    dec = g.get("attention_decode") or []
    if len(dec) >= 4:
        a = np.array(dec, float)                               # b, context, heads, kv_heads, head_dim, kv bytes, s
        arr = {"b": a[:, 0], "ctx": a[:, 1], "h": a[:, 2], "kv": a[:, 3], "hd": a[:, 4], "kvb": a[:, 5], "t": a[:, 6],
               "bw": np.full(len(a), bw), "fit": np.ones(len(a), bool)}
        params["attention_decode"] = fit.fit_decode(arr)
        stats["attention_decode"] = fit._stats(fit.decode_predict(arr, params["attention_decode"]) / arr["t"])
    if "gemm" not in params and g.get("peak_matmul_tflops") and g.get("mem_bandwidth_gbs"):
        best = max(float(v) for k, v in g["peak_matmul_tflops"].items() if k in ("fp16", "bf16"))
        prec = "fp16" if "fp16" in pk else "bf16"
        from hetagent.costmodel import calibration as cal
        base = cal.load_gpu_calibration()["devices"]["generic"]["gemm"]
        params["gemm"] = dict(base, eff_compute=round(min(best * 1e12 / pk[prec], 1.0), 4),
                              eff_memory=round(min(float(g["mem_bandwidth_gbs"]) * 1e9 / bw, 1.2), 4))
        stats["gemm"] = {"from": "square matmul peak and copy bandwidth (version 1 file)"}
    return params, stats


def device_calibration_from_file(path) -> dict | None:
    """{device, params, stats, host, gpu_name, date, file} of one `calibrate --gpu` file; None for files without a
    device id (a GPU the catalog does not know). A file that cannot be read or fitted is an error naming it."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CostModelError(f"{p}: not a readable calibration file ({e})") from e
    g = doc.get("gpu") or {}
    device_id = g.get("device_id") or p.stem
    if not device_id:
        return None
    try:
        params, stats = fit_measurements(doc, device_id)
    except (KeyError, IndexError, ValueError) as e:
        raise CostModelError(f"{p}: cannot fit the measurements ({e}); re-run `hetagent calibrate --gpu`") from e
    if not params:
        return None
    host = doc.get("host") or {}
    return {"device": device_id, "params": params, "stats": stats, "file": str(p),
            "host": host.get("hostname") or host.get("cpu"), "date": str(host.get("date", ""))[:10],
            "gpu_name": g.get("name")}
