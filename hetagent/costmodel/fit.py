"""Fit the GPU cost model on the shared measurements and write hetagent/costmodel/data/gpu_calibration.json.

    python -m hetagent.costmodel.calibration --data ../shared/data [-o PATH]

Needs numpy, scipy and pyarrow (the AIConfigurator tables are Parquet) and the shared data; the program itself reads
only the JSON. What is fitted, on what (docs/costmodel.md and docs/calibration.md have the formulas):

- Operator level, per measured device (a100, a40, l40s), per architecture family (ampere: a100 + a40; ada: l40s)
  and across all of them ("generic", for devices never measured):
  GEMM (Vidur's layer GEMMs, fp16; AIConfigurator's vLLM 0.14 GEMM sweep, bf16, and fp8 on L40S), elementwise
  kernels (Vidur), prefill and decode attention (AIConfigurator's FlashAttention / FlashInfer tables), NCCL
  all-reduce per group size (AIConfigurator's nccl-tests tables) and the engines' one-shot all-reduce (Vidur A100).
- End to end, per device with MLPerf Inference v4.1 Llama 2 70B Offline results (closed division), relative to the
  H100 SXM: the factor between measured and predicted per-accelerator throughput (mlperf.py), and per vendor stack
  the median of its devices' factors (used for that vendor's devices without results).
- Validation: group cross-validation per operator class on each measured device, leave-one-device-out per class
  (fit on the other devices, predict this one with its own datasheet peaks), leave-one-device-out end to end
  (the vendor stack's factor from the other devices), leave-one-submission-out end to end.
- Intervals per calibration status (uncertainty.py) from those residuals.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from hetagent.costmodel import calibration as cal

AIC_COMMIT = "095f58a51c4ca8e61b66ec108d86f223f8d559ce"
AIC_DIRS = {"a100": "a100_sxm", "l40s": "l40s"}
MEASURED_DEVICES = ("a100", "a40", "l40s")
FAMILIES = {"ampere": ("a100", "a40"), "ada": ("l40s",)}
# L2 cache per device (bytes): decode-attention rows whose KV fits in L2 are served from cache by the microbenchmark
# (it replays one layer), which a model's forward pass never does (80 layers of weights stream through L2 between two
# visits of a layer). They are left out of the decode-attention fit and reported separately.
L2_BYTES = {"a100": (40e6, "NVIDIA A100 Tensor Core GPU Architecture whitepaper (40 MB L2 cache)"),
            "l40s": (96e6, "NVIDIA Ada Lovelace GPU Architecture whitepaper v2.01 (AD102: 98,304 KB L2 cache; "
                           "L40S is a full-L2 AD102)")}
# Transformer-sized GEMMs: the AIConfigurator sweep also times N or K of 32-512, far from any layer we price.
GEMM_MIN_NK = 1024
# L40S NCCL rows on 4 and 8 GPUs crossed a slow host link (1-6 GB/s; shared/data SCHEMA.md): not fitted.
NCCL_SKIP = {"l40s": (4, 8)}
INTERVAL_QUANTILES = (0.05, 0.95)


# ------------------------------------------------------------------------------------------------ helpers
def _device(device_id):
    from hetagent.costmodel.devices import get_device
    return get_device(device_id)


def _peak(dev, precision) -> float:
    return float(dev.peak_tflops[precision]) * 1e12


def _stats(ratio) -> dict:
    """Statistics of predicted/measured time ratios: median and p90 absolute percentage error, and bias."""
    r = np.asarray(ratio, float)
    if r.size == 0:
        return {"rows": 0}
    e = np.abs(r - 1.0)
    return {"rows": int(r.size), "median_ape": round(float(np.median(e)), 4),
            "p90_ape": round(float(np.percentile(e, 90)), 4), "median_bias": round(float(np.median(r - 1.0)), 4)}


def _lsq(fun, x0, lo, hi):
    from scipy.optimize import least_squares
    return least_squares(fun, x0, bounds=(lo, hi)).x


def _groups_kfold(groups, k=5, seed=0):
    """Yield (train mask, test mask) over k folds of whole groups."""
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    for i in range(min(k, len(uniq))):
        test = np.isin(groups, uniq[i::k])
        yield ~test, test


# ------------------------------------------------------------------------------------------------ reading
def _parquet(path) -> dict:
    import pyarrow.parquet as pq
    return {k: np.asarray(v) for k, v in pq.read_table(str(path)).to_pydict().items()}


def aic_tables(aic_dir: Path, device: str) -> dict:
    base = Path(aic_dir) / AIC_DIRS[device]
    return {"gemm": _parquet(base / "gemm/vllm/0.14.0/gemm_perf.parquet"),
            "context": _parquet(base / "attention/vllm/0.14.0/context_attention_perf.parquet"),
            "generation": _parquet(base / "attention/vllm/0.14.0/generation_attention_perf.parquet"),
            "nccl": _parquet(base / "comm/nccl/2.27.3/nccl_perf.parquet")}


def gemm_arrays(device: str, vidur_rows: list, aic: dict | None, precision: str) -> dict:
    """Columns m, k, n, t (s), peak, bw, wb (weight bytes/element), group: one GEMM each, fp16/bf16 or fp8."""
    dev = _device(device)
    bw = dev.memory_bandwidth_gbs * 1e9
    cols = {c: [] for c in ("m", "k", "n", "t", "group", "source")}
    if precision != "fp8":
        for r in vidur_rows:
            for m, k, n, t, op in cal.gemm_samples([r]):
                for c, v in zip(("m", "k", "n", "t"), (m, k, n, t)):
                    cols[c].append(v)
                cols["group"].append(f"vidur:{r['hidden']}:{r['intermediate']}")
                cols["source"].append("vidur")
    if aic is not None:
        g = aic["gemm"]
        want = "fp8" if precision == "fp8" else "bfloat16"
        sel = (g["gemm_dtype"] == want) & (g["n"] >= GEMM_MIN_NK) & (g["k"] >= GEMM_MIN_NK)
        for m, n, k, t in zip(g["m"][sel], g["n"][sel], g["k"][sel], g["latency"][sel]):
            cols["m"].append(float(m)), cols["k"].append(float(k)), cols["n"].append(float(n))
            cols["t"].append(float(t) * 1e-3), cols["group"].append(f"aic:{n}x{k}"), cols["source"].append("aic")
    out = {c: np.asarray(v) for c, v in cols.items()}
    n = out["m"].size
    out["peak"] = np.full(n, _peak(dev, "fp8" if precision == "fp8" else "fp16"))
    out["bw"] = np.full(n, bw)
    out["wb"] = np.full(n, 1.0 if precision == "fp8" else 2.0)
    out["device"] = np.full(n, device)
    return out


def prefill_attention_arrays(device: str, aic: dict, kv: str = "bfloat16") -> dict:
    """Prefill-attention rows of one KV-cache dtype (the fit uses bf16; L40S's fp8-KV FlashInfer rows are only
    predicted, attention math at the 16-bit rate with half the KV bytes, and reported)."""
    dev = _device(device)
    c = aic["context"]
    sel = c["kv_cache_dtype"] == kv
    out = {"b": c["batch_size"][sel].astype(float), "n": c["isl"][sel].astype(float),
           "h": c["num_heads"][sel].astype(float), "kv": c["num_key_value_heads"][sel].astype(float),
           "hd": c["head_dim"][sel].astype(float), "t": c["latency"][sel] * 1e-3}
    out["kvb"] = np.full(out["t"].size, 1.0 if kv == "fp8" else 2.0)
    out["group"] = np.array([f"{h}/{k}" for h, k in zip(out["h"], out["kv"])])
    m = out["t"].size
    out["peak"], out["bw"] = np.full(m, _peak(dev, "fp16")), np.full(m, dev.memory_bandwidth_gbs * 1e9)
    out["device"] = np.full(m, device)
    return out


def decode_attention_arrays(device: str, aic: dict) -> dict:
    dev = _device(device)
    g = aic["generation"]
    out = {"b": g["batch_size"].astype(float), "ctx": g["step"].astype(float), "h": g["num_heads"].astype(float),
           "kv": g["num_key_value_heads"].astype(float), "hd": g["head_dim"].astype(float),
           "t": g["latency"] * 1e-3, "kvb": np.where(g["kv_cache_dtype"] == "fp8", 1.0, 2.0)}
    m = out["t"].size
    out["bytes"] = out["b"] * (out["ctx"] + 1) * 2 * out["kv"] * out["hd"] * out["kvb"]
    l2 = L2_BYTES[device][0]
    out["fit"] = (out["bytes"] >= l2) | (out["bytes"] <= 0.05 * l2)
    out["beyond_l2"] = out["bytes"] >= l2
    out["group"] = np.array([f"{h}/{k}/{d}" for h, k, d in zip(out["h"], out["kv"], g["kv_cache_dtype"])])
    out["bw"] = np.full(m, dev.memory_bandwidth_gbs * 1e9)
    out["device"] = np.full(m, device)
    return out


def nccl_arrays(device: str, aic: dict) -> dict:
    dev = _device(device)
    c = aic["nccl"]
    sel = c["op_name"] == "all_reduce"
    n = c["num_gpus"][sel].astype(float)
    byts = c["message_size"][sel] * np.where(c["nccl_dtype"][sel] == "half", 2.0, 1.0)   # elements -> bytes
    out = {"n": n, "bytes": byts.astype(float), "t": c["latency"][sel] * 1e-3,
           "bw": np.full(n.size, float(dev.scaleup_bandwidth_gbs or dev.pcie_bandwidth_gbs or 32.0) * 1e9)}
    out["fit"] = ~np.isin(n, NCCL_SKIP.get(device, ()))
    out["group"] = np.array([str(int(x)) for x in byts])
    out["device"] = np.full(n.size, device)
    return out


def _cat(arrays: list) -> dict:
    keys = set.intersection(*(set(a) for a in arrays))
    return {k: np.concatenate([a[k] for a in arrays]) for k in keys}


def _sub(a: dict, mask) -> dict:
    return {k: v[mask] for k, v in a.items()}


# ------------------------------------------------------------------------------------------------ models
def gemm_predict(a, p):
    return cal.gemm_time_s(a["m"], a["k"], a["n"], a["peak"], a["bw"], p, 2.0, a["wb"])[0]


def fit_gemm(a) -> dict:
    def f(x):
        p = dict(eff_compute=x[0], eff_memory=x[1], smooth_k=x[2], overhead_us=x[3], tile_pad_rows=cal.TILE_PAD_ROWS)
        return np.log(gemm_predict(a, p) / a["t"])
    x = _lsq(f, [0.7, 0.8, 2.0, 4.0], [0.05, 0.05, 1.0, 0.0], [1.0, 1.2, 20.0, 100.0])
    return {"eff_compute": round(float(x[0]), 4), "eff_memory": round(float(x[1]), 4), "smooth_k": round(float(x[2]), 4),
            "overhead_us": round(float(x[3]), 3), "tile_pad_rows": cal.TILE_PAD_ROWS}


def prefill_predict(a, p):
    return cal.attention_prefill_time_s(a["b"], a["n"], a["h"], a["kv"], a["hd"], a["peak"], a["bw"], p, a["kvb"])[0]


def fit_prefill(a) -> dict:
    def p_of(x):
        return dict(eff_compute=x[0], eff_memory=x[1], smooth_k=x[2], overhead_us=x[3], per_seq_head_us=x[4])
    x = _lsq(lambda x: np.log(prefill_predict(a, p_of(x)) / a["t"]), [0.5, 0.5, 2.0, 10.0, 0.2],
             [0.01, 0.01, 1.0, 0.0, 0.0], [1.0, 2.0, 20.0, 500.0, 100.0])
    return {k: round(float(v), 4) for k, v in p_of(x).items()}


def decode_predict(a, p):
    return cal.attention_decode_time_s(a["b"], a["ctx"], a["h"], a["kv"], a["hd"], a["bw"], p, a["kvb"])[0]


def fit_decode(a) -> dict:
    f = _sub(a, a["fit"])

    def p_of(x):
        return dict(eff_memory=x[0], overhead_us=x[1], per_seq_head_us=x[2], parallel_half=x[3])
    x = _lsq(lambda x: np.log(decode_predict(f, p_of(x)) / f["t"]), [0.7, 10.0, 0.1, 4.0], [0.05, 0.0, 0.0, 0.0],
             [1.5, 500.0, 50.0, 1000.0])
    return {k: round(float(v), 4) for k, v in p_of(x).items()}


def nccl_predict(a, p):
    out = np.empty(a["t"].size)
    for i, (b, n, bw) in enumerate(zip(a["bytes"], a["n"], a["bw"])):
        out[i] = cal.nccl_allreduce_time_s(b, int(n), bw, p)
    return out


def fit_nccl(a) -> dict:
    f = _sub(a, a["fit"])
    out = {}
    for n in sorted(set(f["n"].astype(int))):
        s = _sub(f, f["n"] == n)

        def pred(x, s=s, n=n):
            bus = 2.0 * (n - 1) / n * s["bytes"]
            return np.minimum(2 * (n - 1) * x[0] * 1e-6 + bus / (s["bw"] * x[1]),
                              2 * (n - 1) * x[2] * 1e-6 + bus / (s["bw"] * x[3]))
        x = _lsq(lambda x: np.log(pred(x) / s["t"]), [3.0, 0.1, 10.0, 0.7], [0.0, 0.001, 0.0, 0.001],
                 [1000.0, 5.0, 1000.0, 5.0])
        out[str(n)] = {"lat_ll_us": round(float(x[0]), 3), "eff_ll": round(float(x[1]), 4),
                       "lat_bulk_us": round(float(x[2]), 3), "eff_bulk": round(float(x[3]), 4)}
    return out


CLASSES = {"gemm": (fit_gemm, gemm_predict), "gemm_fp8": (fit_gemm, gemm_predict),
           "attention_prefill": (fit_prefill, prefill_predict), "attention_decode": (fit_decode, decode_predict),
           "allreduce": (fit_nccl, nccl_predict)}


# ------------------------------------------------------------------------------------------------ fitting
def load_operator_data(data_dir: Path) -> dict:
    """{class: {device: arrays}} plus the Vidur rows (for elementwise) and provenance counts."""
    vidur = data_dir / "profiling" / "vidur"
    aic_dir = data_dir / "profiling" / "aiconfigurator"
    rows = {d: [] for d in cal.MEASURED}
    files = {}
    for p in cal.find_mlp_tables(vidur):
        d = cal.device_of_table(p)
        if d in rows:
            rs = cal.read_mlp_rows(p)
            rows[d] += rs
            files[str(p.relative_to(vidur))] = len(rs)
    aic = {d: aic_tables(aic_dir, d) for d in AIC_DIRS}
    data = {"gemm": {}, "gemm_fp8": {}, "attention_prefill": {}, "attention_decode": {}, "allreduce": {}}
    for d in MEASURED_DEVICES:
        data["gemm"][d] = gemm_arrays(d, rows.get(d, []), aic.get(d), "bf16")
    data["gemm_fp8"]["l40s"] = gemm_arrays("l40s", [], aic["l40s"], "fp8")
    for d in AIC_DIRS:
        data["attention_prefill"][d] = prefill_attention_arrays(d, aic[d])
        data["attention_decode"][d] = decode_attention_arrays(d, aic[d])
        data["allreduce"][d] = nccl_arrays(d, aic[d])
    aic_rows = {d: {k: int(next(iter(v.values())).size) for k, v in aic[d].items()} for d in AIC_DIRS}
    fp8_prefill = {d: prefill_attention_arrays(d, aic[d], "fp8") for d in AIC_DIRS
                   if (aic[d]["context"]["kv_cache_dtype"] == "fp8").any()}
    return {"data": data, "vidur_rows": rows, "vidur_files": files, "aic_rows": aic_rows, "fp8_prefill": fp8_prefill}


def _fit(cls, devices, data):
    arrays = [data[cls][d] for d in devices if d in data[cls]]
    return CLASSES[cls][0](_cat(arrays)) if arrays else None


def fit_operators(od: dict) -> dict:
    """Per-device, per-family and generic parameters of every operator class."""
    data, rows = od["data"], od["vidur_rows"]
    peaks = {d: (_peak(_device(d), "fp16"), _device(d).memory_bandwidth_gbs * 1e9) for d in cal.MEASURED}
    devices = {}
    for d in MEASURED_DEVICES:
        entry = {}
        for cls in CLASSES:
            if d in data[cls]:
                entry[cls] = _fit(cls, [d], data)
        if rows.get(d):
            entry["elementwise"] = cal.fit_elementwise({d: rows[d]}, peaks)
        devices[d] = entry
    families = {}
    for fam, members in FAMILIES.items():
        entry = {}
        for cls in CLASSES:
            if cls == "gemm_fp8" and fam != "ada":
                continue
            p = _fit(cls, members, data)
            if p is not None:
                entry[cls] = p
        ew = {d: rows[d] for d in members if rows.get(d)}
        if ew:
            entry["elementwise"] = cal.fit_elementwise(ew, peaks)
        families[fam] = entry
    generic = {cls: _fit(cls, MEASURED_DEVICES, data) for cls in CLASSES if cls != "gemm_fp8"}
    # all-reduce: the NVLink/NVSwitch device (A100) for every device; PCIe-only families have their own (ada)
    generic["allreduce"] = devices["a100"]["allreduce"]
    generic["elementwise"] = cal.fit_elementwise({d: rows[d] for d in cal.MEASURED if rows.get(d)}, peaks)
    devices["generic"] = generic
    return {"devices": devices, "families": families}


# ------------------------------------------------------------------------------------------------ validation
def _ratio(cls, a, p):
    pred = CLASSES[cls][1](a, p)
    return pred / a["t"]


def _scope(cls, a):
    """Rows a class is judged on: decode attention beyond L2, all-reduce group sizes fitted."""
    if cls == "attention_decode":
        return _sub(a, a["beyond_l2"])
    if cls == "allreduce":
        return _sub(a, a["fit"])
    return a


def cross_validate(od: dict, fits: dict) -> dict:
    """Per class and measured device: in-sample, group 5-fold cross-validated, and leave-one-device-out ratios
    (predicted / measured time). Returns {class: {device: {in_sample, cv, lodo: stats}}} and the raw ratios."""
    data = od["data"]
    out, raw = {}, {"cv": {}, "lodo": {}}
    for cls in CLASSES:
        out[cls] = {}
        for d, a in data[cls].items():
            own = fits["devices"][d][cls]
            judged = _scope(cls, a)
            res = {"in_sample": _stats(_ratio(cls, judged, own))}
            cv = []
            for tr, te in _groups_kfold(a["group"]):
                if cls == "allreduce":
                    tr = tr | ~a["fit"]       # folds over message sizes; fit() keeps its own row selection
                p = CLASSES[cls][0](_sub(a, tr))
                cv.append(_ratio(cls, _scope(cls, _sub(a, te)), p))
            cv = np.concatenate(cv) if cv else np.array([])
            res["cv"] = _stats(cv)
            raw["cv"].setdefault(cls, []).append(cv)
            others = [x for x in data[cls] if x != d]
            if others and cls != "gemm_fp8":
                p = _fit(cls, others, data)
                lo = _ratio(cls, judged, p)
                res["lodo"] = dict(_stats(lo), fitted_on=others)
                raw["lodo"].setdefault(cls, []).append(lo)
            if cls == "attention_decode":
                res["within_l2_not_fitted"] = _stats(_ratio(cls, _sub(a, ~a["beyond_l2"] & ~a["fit"]), own))
            if cls == "attention_prefill" and d in od.get("fp8_prefill", {}):
                res["fp8_kv_flashinfer_not_fitted"] = _stats(_ratio(cls, od["fp8_prefill"][d], own))
            if cls == "allreduce" and (~a["fit"]).any():
                res["not_fitted_group_sizes"] = _stats(_ratio(cls, _sub(a, ~a["fit"]), own))
            out[cls][d] = res
    # elementwise (Vidur; leave-one-device-out between a100 and a40)
    rows = od["vidur_rows"]
    peaks = {d: (_peak(_device(d), "fp16"), _device(d).memory_bandwidth_gbs * 1e9) for d in cal.MEASURED}
    out["elementwise"] = {}
    for d in cal.MEASURED:
        other = [x for x in cal.MEASURED if x != d][0]
        own = fits["devices"][d]["elementwise"]
        res = {"in_sample": own.get("fit")}
        lo = elementwise_ratios(rows[d], peaks[d], cal.fit_elementwise({other: rows[other]}, peaks))
        res["lodo"] = dict(_stats(lo), fitted_on=[other])
        raw["lodo"].setdefault("elementwise", []).append(lo)
        cvs = []
        models = sorted({(r["hidden"], r["intermediate"]) for r in rows[d]})
        for mdl in models:
            tr = [r for r in rows[d] if (r["hidden"], r["intermediate"]) != mdl]
            te = [r for r in rows[d] if (r["hidden"], r["intermediate"]) == mdl]
            cvs.append(elementwise_ratios(te, peaks[d], cal.fit_elementwise({d: tr}, peaks)))
        cv = np.concatenate(cvs)
        res["cv"] = dict(_stats(cv), folds="leave one model out")
        raw["cv"].setdefault("elementwise", []).append(cv)
        out["elementwise"][d] = res
    return out, {k: {c: np.concatenate(v) for c, v in d.items()} for k, d in raw.items()}


def elementwise_ratios(rows, peak_bw, p) -> np.ndarray:
    out = []
    for r in rows:
        hd = r["hidden"] // r["heads"]
        b = cal.layer_elementwise_bytes(r["tokens"], r["hidden"], r["heads"], r["kv_heads"], hd, r["intermediate"],
                                        r["gated"], r["tp"])
        for op in cal.ELEMENTWISE_OPS:
            if r[op]:
                pred = p["overhead_us"][op] * 1e-6 + b[op] / (peak_bw[1] * p["eff_memory"])
                out.append(pred / (r[op] * 1e-3))
    return np.asarray(out)


# ------------------------------------------------------------------------------------------------ intervals
def _weighted_quantiles(groups: dict, qs) -> list:
    """Quantiles of log-ratios pooled over groups, each group carrying equal total weight."""
    vals, wts = [], []
    for v in groups.values():
        v = np.log(np.asarray(v, float))
        v = v[np.isfinite(v)]
        if v.size:
            vals.append(v), wts.append(np.full(v.size, 1.0 / v.size))
    v, w = np.concatenate(vals), np.concatenate(wts)
    order = np.argsort(v)
    v, w = v[order], np.cumsum(w[order]) / w.sum()
    return [float(np.exp(v[np.searchsorted(w, q)])) for q in qs]


# Reference steps whose time shares weigh the operator classes when the per-class residuals are combined into one
# interval for a whole phase (a prefill, a decode step): (model, device, precision, tp, phase, batch, tokens).
REFERENCE_STEPS = tuple(
    (m, d, prec, tp, ph, b, n)
    for m, d, prec, tps in (("llama-3-8b", "a100", "fp16", (1,)), ("llama-3-70b", "a100", "fp16", (4,)),
                            ("llama-3-8b", "l40s", "fp8", (1,)))
    for tp in tps
    for ph, b, n in (("prefill", 1, 512), ("prefill", 8, 2048), ("decode", 1, 1024), ("decode", 32, 1024),
                     ("decode", 128, 2048)))
PART_CLASS = {"linear": "gemm", "lm_head": "gemm", "experts": "gemm", "gate": "gemm", "elementwise": "elementwise",
              "merge": "elementwise", "allreduce": "allreduce"}


def class_shares() -> list[dict]:
    """Per reference step, each operator class's share of the predicted time (the engine's fixed step cost and the
    PP hand-offs count as exact); uses the calibration the cost model reads now."""
    from hetagent.costmodel import roofline as rl
    from hetagent.costmodel.devices import get_device
    from hetagent.costmodel.models import load_model
    out = []
    for m, d, prec, tp, ph, b, n in REFERENCE_STEPS:
        model, dev = load_model(m), get_device(d)
        s = (rl.prefill(model, dev, prec, tp, 1, b, n) if ph == "prefill" else rl.decode_step(model, dev, prec, tp, 1, b, n))
        shares = {}
        for part, v in s.parts.items():
            cls = "attention_" + ph if part == "attention" else PART_CLASS.get(part)
            if cls == "gemm" and prec == "fp8":
                cls = "gemm_fp8"
            if cls:
                shares[cls] = shares.get(cls, 0.0) + v.total_s / s.total_s
        out.append({"step": f"{m} {d} {prec} tp{tp} {ph} b{b} n{n}", "shares": shares})
    return out


def combined_quantiles(shares: list[dict], pools: dict, qs=INTERVAL_QUANTILES, draws=20000, seed=0) -> list:
    """Quantiles of a whole step's true/predicted time: per draw a reference step and, per operator class, one
    residual (true/predicted time) from the class's pool (an error repeats in every layer of a step, so one draw per
    class), summed with the class's share of the step; classes without a pool count as exact."""
    rng = np.random.default_rng(seed)
    tot = np.empty(draws)
    picks = rng.integers(0, len(shares), draws)
    for i, k in enumerate(picks):
        sh = shares[k]["shares"]
        t = 1.0 - sum(sh.values())
        for cls, w in sh.items():
            pool = pools.get(cls if cls in pools else cls.replace("_fp8", ""))
            t += w * (pool[rng.integers(0, pool.size)] if pool is not None and pool.size else 1.0)
        tot[i] = t
    return [float(x) for x in np.quantile(tot, qs)]


def _down(x) -> float:
    return math.floor(float(x) * 1000) / 1000       # interval ends are rounded outward


def _up(x) -> float:
    return math.ceil(float(x) * 1000) / 1000


def intervals(raw_ops: dict, e2e: dict, shares: list[dict], cpu_loso: list | None) -> dict:
    """Time factors [low, high] per calibration status (docs/costmodel.md, "How sure"): a factor f means the true
    time may be f x the predicted time.
    measured: p5-p95 of a whole step's error when each operator class's error is drawn from its group-cross-validated
              residuals on the measured devices and weighted by its share of reference steps (combined_quantiles);
    calibrated: the range of the leave-one-submission-out end-to-end ratios (MLPerf), widened in log quadrature by
              the measured interval (one end-to-end workload cannot fix an operator's shape error);
    datasheet: the wider of the same step combination over leave-one-device-out residuals and the range of the
              leave-one-device-out end-to-end ratios."""
    q0, q1 = INTERVAL_QUANTILES
    cv = {c: 1.0 / v for c, v in raw_ops["cv"].items()}          # predicted/measured -> measured/predicted
    lodo = {c: 1.0 / v for c, v in raw_ops["lodo"].items()}
    m_lo, m_hi = combined_quantiles(shares, cv)
    out = {"measured": {"low": _down(m_lo), "high": _up(m_hi),
                        "method": "p5-p95 of a step's time when each operator class's error is drawn from its "
                                  "group-cross-validated residuals on measured devices, weighted by its time share in "
                                  "reference steps",
                        "per_class": {c: [round(float(x), 3) for x in np.quantile(v, (q0, q1))] for c, v in cv.items()},
                        "rows": int(sum(v.size for v in cv.values()))}}
    cal_r = np.asarray(e2e["loso_time_ratios"], float)
    lo = math.exp(-math.hypot(math.log(min(cal_r.min(), 1.0)), math.log(m_lo)))
    hi = math.exp(math.hypot(math.log(max(cal_r.max(), 1.0)), math.log(m_hi)))
    out["calibrated"] = {"low": _down(lo), "high": _up(hi),
                         "method": "range of leave-one-submission-out end-to-end time ratios (MLPerf v4.1, both prompt "
                                   "lengths), combined in log quadrature with the measured interval",
                         "end_to_end": [round(float(cal_r.min()), 3), round(float(cal_r.max()), 3)],
                         "rows": int(cal_r.size)}
    d_lo, d_hi = combined_quantiles(shares, lodo)
    e = np.asarray(e2e["lodo_time_ratios"], float)
    out["datasheet"] = {"low": _down(min(d_lo, e.min())), "high": _up(max(d_hi, e.max())),
                        "method": "wider of: p5-p95 of a step's time with each class's error drawn from its "
                                  "leave-one-device-out residuals (weighted as for measured), and the range of the "
                                  "leave-one-device-out end-to-end time ratios (MLPerf v4.1, both prompt lengths)",
                        "operator_steps": [round(d_lo, 3), round(d_hi, 3)],
                        "per_class": {c: [round(float(x), 3) for x in np.quantile(v, (q0, q1))] for c, v in lodo.items()},
                        "end_to_end": [round(float(e.min()), 3), round(float(e.max()), 3)]}
    if cpu_loso:
        r = np.asarray(cpu_loso, float)
        a, b = np.quantile(r, [q0, q1])
        out["cpu_measured"] = {"low": _down(a), "high": _up(b),
                               "method": "p5-p95 of leave-one-size-out measured/predicted seconds of the CPU "
                                         "calibration (cpu_calibration.json samples)", "rows": int(r.size)}
    out["reference_steps"] = shares
    return out


def cpu_loso_ratios() -> list:
    """measured/predicted of each CPU calibration sample by the line fitted without it (operators.cpu_line)."""
    from hetagent.costmodel import operators as ops
    c = cal.load_cpu_calibration()
    if not c:
        return []
    out = []
    for kind, e in c["operators"].items():
        samples = [(float(u), float(t)) for u, t in e.get("samples", [])]
        model = None
        if kind == "llm.prefill":
            model = ops._model_or_none("gemma-3-270m")
        for i, (u, t) in enumerate(samples):
            line = ops.cpu_line(kind, samples[:i] + samples[i + 1:], model)
            pred = ops.cpu_line_seconds(kind, line, 1 if kind == "llm.decode" else u, context=u)
            if pred > 0:
                out.append(t / pred)
    return out


# ------------------------------------------------------------------------------------------------ the document
@contextlib.contextmanager
def using_calibration(doc: dict):
    """Make the cost model read `doc` (a gpu_calibration.json document) and no measured-device files."""
    old = {k: os.environ.get(k) for k in (cal.CALIBRATION_ENV, cal.MEASURED_ENV)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpu_calibration.json"
        path.write_text(json.dumps(doc))
        os.environ[cal.CALIBRATION_ENV] = str(path)
        os.environ[cal.MEASURED_ENV] = str(Path(tmp) / "none")
        try:
            yield path
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def fit_gpu_calibration(data_dir) -> dict:
    """Fit every parameter on the shared data under data_dir; returns the gpu_calibration.json document."""
    from hetagent.costmodel import mlperf
    data_dir = Path(data_dir)
    od = load_operator_data(data_dir)
    fits = fit_operators(od)
    vidur = data_dir / "profiling" / "vidur"
    ar_path = next(iter(sorted(vidur.rglob("a100_dgx__all_reduce.csv*"))), None)
    ar = cal.fit_allreduce(ar_path, _device("a100").scaleup_bandwidth_gbs)
    one_shot = {k: ar[k] for k in ("latency_us_per_step", "eff_bandwidth")}
    att_path = next(iter(sorted(vidur.rglob("a100__*attention.csv*"))), None)
    legacy_att = cal.fit_attention(att_path, *(_peak(_device("a100"), "fp16"), _device("a100").memory_bandwidth_gbs * 1e9))
    validation, raw = cross_validate(od, fits)
    doc = {
        "version": 2,
        "provenance": {
            "source": ("microsoft/vidur data/profiling (MIT) and ai-dynamo/aiconfigurator systems data (Apache-2.0), "
                       "copied in shared/data/profiling (SOURCES.md); MLPerf Inference v4.1 results (Apache-2.0), "
                       "shared/data/benchmarks"),
            "commit": cal.VIDUR_COMMIT, "legacy_attention_commit": cal.VIDUR_LEGACY_COMMIT,
            "aiconfigurator_commit": AIC_COMMIT,
            "files": od["vidur_files"], "rows_total": sum(od["vidur_files"].values()),
            "aiconfigurator_rows": od["aic_rows"],
            "command": "python -m hetagent.costmodel.calibration --data ../shared/data",
            "method": ("scipy.optimize.least_squares on log(predicted/measured): GEMM t=(tc^k+tm^k)^(1/k)+t0 with tc on "
                       "M+tile_pad_rows rows (Vidur layer GEMMs and AIConfigurator GEMMs with N,K >= "
                       f"{GEMM_MIN_NK}); prefill attention t=t0+t_sh*b*h/32+(tc^k+tm^k)^(1/k), tc on n(n+64)/2 "
                       "causal pairs; decode attention t=t0+t_sh*b*h/32+KV bytes/(bw*eff*s), s=b*kv/(b*kv+n_half), on rows "
                       "whose KV is beyond L2 or tiny; NCCL all-reduce per group size min(two protocols); elementwise t=t0+bytes/(bw*eff); "
                       "per device, per family (ampere: a100+a40; ada: l40s) and generic (all measured devices)"),
            "l2_bytes": {d: {"value": v, "source": s} for d, (v, s) in L2_BYTES.items()},
            "date": _dt.date.today().isoformat(),
            "residuals": {d: validation["gemm"][d]["in_sample"] for d in MEASURED_DEVICES},
            "legacy_attention_fit": legacy_att, "allreduce_fit": ar,
        },
        "devices": fits["devices"],
        "families": fits["families"],
        "allreduce": {"a100": one_shot, "generic": one_shot},
        "validation": {"operators": validation},
    }
    with using_calibration(doc):
        e2e = mlperf.calibrate_end_to_end(data_dir / "benchmarks" / mlperf.ROWS_FILE)
        shares = class_shares()
    doc["end_to_end"] = e2e["end_to_end"]
    doc["validation"]["end_to_end"] = e2e["validation"]
    # the datasheet figures each device's fit was made with: a catalog with other figures for the id (paper-2025)
    # does not inherit its status (uncertainty.status)
    doc["provenance"]["figures"] = {d: cal.figures_of(_device(d)) for d in sorted(set(MEASURED_DEVICES)
                                                                             | set(e2e["end_to_end"]["devices"]))}
    doc["intervals"] = intervals(raw, e2e["validation"], shares, cpu_loso_ratios())
    return doc


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hetagent.costmodel.calibration",
                                 description="Refit the GPU calibration on the shared data")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"),
                    help="the shared data folder (profiling/vidur, profiling/aiconfigurator, benchmarks)")
    ap.add_argument("--vidur", help=argparse.SUPPRESS)     # old flag: DATA/profiling/vidur
    ap.add_argument("-o", "--output", default=str(cal.GPU_CALIBRATION))
    args = ap.parse_args(argv)
    data = Path(args.vidur).parents[1] if args.vidur else Path(args.data)
    doc = fit_gpu_calibration(data)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"gemm": {k: v["gemm"] for k, v in doc["devices"].items()}, "intervals":
                      {k: [v["low"], v["high"]] for k, v in doc["intervals"].items() if k != "reference_steps"},
                      "end_to_end": {k: v["efficiency"] for k, v in doc["end_to_end"]["devices"].items()}},
                     separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
