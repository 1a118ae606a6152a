"""GPU efficiencies fitted on the Vidur profiles (shared/data/profiling/vidur), stored in data/gpu_calibration.json.

The program reads only the JSON (`load_gpu_calibration`, `gpu_params`); fitting needs the shared data, numpy and
scipy and runs from the command line:

    python -m hetagent.costmodel.calibration --vidur ../shared/data/profiling/vidur [-o PATH]

Models fitted (docs/costmodel.md has the derivation):
- GEMM (one linear layer, M tokens x K in -> N out, fp16):  t = (tc^k + tm^k)^(1/k) + t0 with
  tc = 2(M + 32)NK / (peak_fp16 * eff_compute) (32: the mean tile padding, TILE_PAD_ROWS, fixed),
  tm = 2(NK + MK + MN) / (bandwidth * eff_memory).
  Fitted per device (a100, a40) and across both ("generic", used for every device never measured), by least
  squares on log(predicted / measured) over the four linear ops of every row of the `*__mlp.csv.gz` tables.
- Elementwise kernels (layer norms, rope, activation, residual add): t = t0 + bytes / (bandwidth * eff_memory).
- Decode attention (paged, A100 legacy table): t = t0 + KV bytes / (bandwidth * eff_memory); prefill attention
  efficiency is fitted too but only reported (see docs: the legacy kernel is far slower than FlashAttention-2).
- All-reduce within a node (A100 DGX table): t = 2(n-1) * latency_step + 2(n-1)/n * bytes / (scaleup * eff).
"""
from __future__ import annotations

import csv
import datetime as _dt
import gzip
import json
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent / "data"
GPU_CALIBRATION = _DATA / "gpu_calibration.json"
CPU_CALIBRATION = _DATA / "cpu_calibration.json"
VIDUR_COMMIT = "7d47513"          # microsoft/vidur commit of the mlp and network tables (SOURCES.md)
VIDUR_LEGACY_COMMIT = "acb95f6"   # the legacy attention table
LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
MEASURED = ("a100", "a40")


# ----------------------------------------------------------------------------------------------- loading
@lru_cache(maxsize=4)
def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def load_gpu_calibration(path=None) -> dict:
    """The committed calibration (or the file at `path`)."""
    return _load_json(str(path or GPU_CALIBRATION))


def load_cpu_calibration(path=None) -> dict | None:
    """CPU operator measurements written by `hetagent calibrate`, or None when the file is absent."""
    p = Path(path) if path else CPU_CALIBRATION
    if not p.is_file():
        return None
    return _load_json(str(p))


def gpu_params(device_id: str, calibration: dict | None = None) -> tuple[dict, str]:
    """(parameters, source) for a device: its own fit where measured, else the generic fit."""
    cal = calibration or load_gpu_calibration()
    if device_id in cal["devices"]:
        return cal["devices"][device_id], device_id
    return cal["devices"]["generic"], "generic"


def allreduce_params(device_id: str, calibration: dict | None = None) -> dict:
    cal = calibration or load_gpu_calibration()
    ar = cal["allreduce"]
    return ar.get(device_id, ar["generic"])


# ------------------------------------------------------------------------------------------ the formulas
def smooth_max(a, b, k):
    """(a^k + b^k)^(1/k): tends to max(a, b) as k grows; smooth near the ridge point. Works on numpy arrays."""
    return (a ** k + b ** k) ** (1.0 / k)


# Tile quantization: a tensor-core GEMM kernel computes whole tiles of rows (64 rows is the smallest common tile
# height: one Hopper wgmma instruction, CUTLASS's smallest sm80 tensor-core threadblock tiles), so it does the work
# of ceil(M/64) x 64 rows. Averaged over M that is M + 32 rows: the compute term counts TILE_PAD_ROWS more rows.
# Fixed a priori, not fitted: it is what lets one device's fit carry over to another (docs/costmodel.md).
TILE_PAD_ROWS = 32.0


def gemm_time_s(m, k_in, n_out, peak_flops, bandwidth, p, bytes_per_el=2.0, weight_bytes_per_el=None):
    """Seconds of one GEMM (m x k_in) @ (k_in x n_out); peak_flops in FLOP/s, bandwidth in B/s.
    Returns (t, tc, tm); tc counts the tile padding p["tile_pad_rows"] (0 where absent: CPUs, old files)."""
    wb = bytes_per_el if weight_bytes_per_el is None else weight_bytes_per_el
    tc = 2.0 * (m + p.get("tile_pad_rows", 0.0)) * n_out * k_in / (peak_flops * p["eff_compute"])
    tm = (wb * n_out * k_in + bytes_per_el * (m * k_in + m * n_out)) / (bandwidth * p["eff_memory"])
    return smooth_max(tc, tm, p["smooth_k"]) + p["overhead_us"] * 1e-6, tc, tm


def layer_linear_shapes(hidden, heads, kv_heads, head_dim, intermediate, gated, tp):
    """(K, N) of the four linear ops of one transformer layer on one of `tp` devices (Megatron split)."""
    return {
        "attn_pre_proj": (hidden, (heads + 2 * kv_heads) * head_dim / tp),
        "attn_post_proj": (heads * head_dim / tp, hidden),
        "mlp_up_proj": (hidden, (2 if gated else 1) * intermediate / tp),
        "mlp_down_proj": (intermediate / tp, hidden),
    }


def layer_elementwise_bytes(m, hidden, heads, kv_heads, head_dim, intermediate, gated, tp, bpe=2.0):
    """Bytes read + written by each elementwise kernel of one layer for m tokens."""
    return {
        "input_layernorm": m * 2 * hidden * bpe,
        "attn_rope": m * 2 * (heads + kv_heads) * head_dim / tp * bpe,
        "post_attention_layernorm": m * 2 * hidden * bpe,
        "mlp_act": m * ((3 if gated else 2) * intermediate / tp) * bpe,
        "add": m * 3 * hidden * bpe,
    }


# ------------------------------------------------------------------------------------------- reading data
def _open(path: Path):
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def device_of_table(path: Path) -> str:
    return Path(path).name.split("__")[0]


def find_mlp_tables(vidur_dir) -> list[Path]:
    """Every `<device>__<org>_<model>__mlp.csv[.gz]` under vidur_dir (flat or nested)."""
    root = Path(vidur_dir)
    return sorted(p for p in root.rglob("*__mlp.csv*") if p.name.endswith((".csv", ".csv.gz")))


def read_mlp_rows(path: Path) -> list[dict]:
    """Rows of one Vidur mlp table as dicts of shape and median times (ms)."""
    out = []
    with _open(path) as f:
        for r in csv.DictReader(f):
            row = {
                "hidden": int(r["n_embd"]), "heads": int(r["n_head"]), "kv_heads": int(r["n_kv_head"]),
                "intermediate": int(r["n_expanded_embd"]), "gated": r["use_gated_mlp"].strip() == "True",
                "vocab": int(r["vocab_size"]), "tokens": int(r["num_tokens"]),
                "tp": int(r["num_tensor_parallel_workers"]),
            }
            for op in LINEAR_OPS + ELEMENTWISE_OPS:
                v = r.get(f"time_stats.{op}.median", "")
                row[op] = float(v) if v not in ("", None) else None
            out.append(row)
    return out


def gemm_samples(rows):
    """(M, K, N, measured seconds, op) for the linear ops of the rows."""
    out = []
    for r in rows:
        hd = r["hidden"] // r["heads"]
        shapes = layer_linear_shapes(r["hidden"], r["heads"], r["kv_heads"], hd, r["intermediate"], r["gated"], r["tp"])
        for op in LINEAR_OPS:
            if r[op]:
                k_in, n_out = shapes[op]
                out.append((r["tokens"], k_in, n_out, r[op] * 1e-3, op))
    return out


# ------------------------------------------------------------------------------------------------ fitting
def _peaks(device_id: str):
    from hetagent.costmodel.devices import get_device
    d = get_device(device_id)
    return d.peak_tflops["fp16"] * 1e12, d.memory_bandwidth_gbs * 1e9, d


def _stats(rel_err):
    import numpy as np
    e = np.abs(np.asarray(rel_err))
    if e.size == 0:
        return {"rows": 0}
    return {"rows": int(e.size), "median_ape": round(float(np.median(e)), 4), "p90_ape": round(float(np.percentile(e, 90)), 4)}


def fit_gemm(samples_by_device: dict, peaks: dict) -> dict:
    """Least squares on log(pred/meas) over all samples of the given devices; one parameter set."""
    import numpy as np
    from scipy.optimize import least_squares
    arrays = []
    for dev, samples in samples_by_device.items():
        a = np.array([s[:4] for s in samples], float)
        arrays.append((a, peaks[dev]))

    def resid(x):
        p = dict(eff_compute=x[0], eff_memory=x[1], smooth_k=x[2], overhead_us=x[3], tile_pad_rows=TILE_PAD_ROWS)
        return np.concatenate([np.log(gemm_time_s(a[:, 0], a[:, 1], a[:, 2], pk, bw, p)[0] / a[:, 3])
                               for a, (pk, bw) in arrays])
    r = least_squares(resid, [0.7, 0.8, 2.0, 4.0], bounds=([0.05, 0.05, 1.0, 0.0], [1.0, 1.0, 20.0, 100.0]))
    return {"eff_compute": round(float(r.x[0]), 4), "eff_memory": round(float(r.x[1]), 4),
            "smooth_k": round(float(r.x[2]), 4), "overhead_us": round(float(r.x[3]), 3), "tile_pad_rows": TILE_PAD_ROWS}


def gemm_errors(samples, peak, bw, p):
    import numpy as np
    a = np.array([s[:4] for s in samples], float)
    t, tc, tm = gemm_time_s(a[:, 0], a[:, 1], a[:, 2], peak, bw, p)
    return t / a[:, 3] - 1.0, tm >= tc


def fit_elementwise(rows_by_device: dict, peaks: dict) -> dict:
    """One bandwidth efficiency and one fixed time per kernel kind (rope and activation are slower kernels)."""
    import numpy as np
    from scipy.optimize import least_squares
    data = []
    for dev, rows in rows_by_device.items():
        for r in rows:
            hd = r["hidden"] // r["heads"]
            b = layer_elementwise_bytes(r["tokens"], r["hidden"], r["heads"], r["kv_heads"], hd, r["intermediate"],
                                        r["gated"], r["tp"])
            for i, op in enumerate(ELEMENTWISE_OPS):
                if r[op]:
                    data.append((b[op], peaks[dev][1], r[op] * 1e-3, i))
    a = np.array(data, float)
    idx = a[:, 3].astype(int)

    def pred(x):
        return np.asarray(x[1:])[idx] * 1e-6 + a[:, 0] / (a[:, 1] * x[0])
    n = len(ELEMENTWISE_OPS)
    r = least_squares(lambda x: np.log(pred(x) / a[:, 2]), [0.7] + [5.0] * n, bounds=([0.05] + [0.0] * n, [1.0] + [100.0] * n))
    return {"eff_memory": round(float(r.x[0]), 4),
            "overhead_us": {op: round(float(v), 3) for op, v in zip(ELEMENTWISE_OPS, r.x[1:])},
            "fit": _stats(pred(r.x) / a[:, 2] - 1)}


def fit_attention(path: Path, peak: float, bw: float) -> dict:
    """Decode: t = t0 + KV bytes/(bw*eff); prefill: t = t0 + causal FLOPs/(peak*eff) (reported only)."""
    import numpy as np
    from scipy.optimize import least_squares
    dec, pre = [], []
    with _open(path) as f:
        for r in csv.DictReader(f):
            tp, hq, hkv = int(r["num_tensor_parallel_workers"]), int(r["n_q_head"]), int(r["n_kv_head"])
            hd = int(r["n_embd"]) // hq
            b, kv = int(r["batch_size"]), int(r["kv_cache_size"])
            if r["is_prefill"] == "True":
                c = int(r["prefill_chunk_size"])
                flops = 4.0 * b * c * (kv + c / 2.0) * hd * hq / tp
                pre.append((flops, float(r["time_stats.attn_prefill.median"]) * 1e-3))
            else:
                byts = b * kv * 2 * hd * max(hkv // tp, 1) * 2.0
                dec.append((byts, float(r["time_stats.attn_decode.median"]) * 1e-3))
    out = {}
    for name, data, scale in (("decode", dec, bw), ("prefill", pre, peak)):
        a = np.array(data, float)
        r = least_squares(lambda x: np.log((x[1] * 1e-6 + a[:, 0] / (scale * x[0])) / a[:, 1]), [0.5, 5.0],
                          bounds=([0.01, 0.0], [1.0, 200.0]))
        pred = r.x[1] * 1e-6 + a[:, 0] / (scale * r.x[0])
        key = "eff_memory" if name == "decode" else "eff_compute"
        out[name] = {key: round(float(r.x[0]), 4), "overhead_us": round(float(r.x[1]), 3), "fit": _stats(pred / a[:, 1] - 1)}
    out["rows"] = len(dec) + len(pre)
    return out


def fit_allreduce(path: Path, scaleup_gbs: float) -> dict:
    """Intra-node rows (devices_per_node == num_workers). `size` counts fp16 elements: bytes = 2 * size."""
    import numpy as np
    from scipy.optimize import least_squares
    data = []
    with _open(path) as f:
        for r in csv.DictReader(f):
            n, dpn = int(r["num_workers"]), int(r["devices_per_node"])
            if n == dpn and n > 1:
                data.append((n, 2.0 * int(r["size"]), float(r["time_stats.all_reduce.median"]) * 1e-3))
    a = np.array(data, float)
    n, byts, t = a[:, 0], a[:, 1], a[:, 2]

    def model(x):
        return 2 * (n - 1) * x[0] * 1e-6 + 2 * (n - 1) / n * byts / (scaleup_gbs * 1e9 * x[1])
    r = least_squares(lambda x: np.log(model(x) / t), [5.0, 0.8], bounds=([0.0, 0.01], [100.0, 5.0]))
    busbw = 2 * (n - 1) / n * byts / t / 1e9
    return {"latency_us_per_step": round(float(r.x[0]), 3), "eff_bandwidth": round(float(r.x[1]), 4),
            "rows": int(len(t)), "max_bus_bandwidth_gbs": round(float(busbw.max()), 1),
            "fit": _stats(model(r.x) / t - 1)}


def fit_gpu_calibration(vidur_dir) -> dict:
    """Fit every parameter on the Vidur tables under vidur_dir; returns the JSON document."""
    root = Path(vidur_dir)
    tables = [p for p in find_mlp_tables(root) if device_of_table(p) in MEASURED]
    rows = {d: [] for d in MEASURED}
    counts = {}
    for p in tables:
        rs = read_mlp_rows(p)
        rows[device_of_table(p)].extend(rs)
        counts[str(p.relative_to(root))] = len(rs)
    peaks = {d: _peaks(d)[:2] for d in MEASURED}
    samples = {d: gemm_samples(rows[d]) for d in MEASURED}
    devices, residuals = {}, {}
    for d in MEASURED:
        g = fit_gemm({d: samples[d]}, peaks)
        devices[d] = {"gemm": g, "elementwise": fit_elementwise({d: rows[d]}, peaks)}
        err, _ = gemm_errors(samples[d], *peaks[d], g)
        residuals[d] = _stats(err)
    gen = fit_gemm(samples, peaks)
    devices["generic"] = {"gemm": gen, "elementwise": fit_elementwise(rows, peaks)}
    residuals["generic"] = {d: _stats(gemm_errors(samples[d], *peaks[d], gen)[0]) for d in MEASURED}
    lodo = {}
    for train, test in (("a40", "a100"), ("a100", "a40")):
        g = fit_gemm({train: samples[train]}, peaks)
        lodo[f"{train}->{test}"] = {"gemm": g, "test": _stats(gemm_errors(samples[test], *peaks[test], g)[0])}
    # attention and all-reduce: A100 tables only; the generic set takes the A100 values (documented).
    att_path = next(iter(sorted(root.rglob("a100__*attention.csv*"))), None)
    if att_path:
        att = fit_attention(att_path, *peaks["a100"])
        for d in devices:
            devices[d]["attention_decode"] = {k: att["decode"][k] for k in ("eff_memory", "overhead_us")}
    ar_path = next(iter(sorted(root.rglob("a100_dgx__all_reduce.csv*"))), None)
    allreduce = {}
    if ar_path:
        ar = fit_allreduce(ar_path, _peaks("a100")[2].scaleup_bandwidth_gbs)
        allreduce = {"a100": {k: ar[k] for k in ("latency_us_per_step", "eff_bandwidth")},
                     "generic": {k: ar[k] for k in ("latency_us_per_step", "eff_bandwidth")}}
    return {
        "version": 1,
        "provenance": {
            "source": "microsoft/vidur data/profiling (MIT), copied in shared/data/profiling/vidur (SOURCES.md)",
            "commit": VIDUR_COMMIT, "legacy_attention_commit": VIDUR_LEGACY_COMMIT,
            "files": counts,
            "attention_file": str(att_path.relative_to(root)) if att_path else None,
            "allreduce_file": str(ar_path.relative_to(root)) if ar_path else None,
            "rows_total": sum(counts.values()),
            "peaks": {d: {"fp16_tflops": peaks[d][0] / 1e12, "bandwidth_gbs": peaks[d][1] / 1e9} for d in MEASURED},
            "method": ("scipy.optimize.least_squares on log(predicted/measured) of the median columns; "
                       "GEMM: t=(tc^k+tm^k)^(1/k)+t0, tc on M+tile_pad_rows rows, over attn_pre_proj, attn_post_proj, mlp_up_proj, "
                       "mlp_down_proj; generic = one fit across a100 and a40 rows"),
            "size_column": ("Vidur network `size` counts fp16 elements (GraphedCollective allocates "
                            "torch.empty(size, dtype=float16)); bytes = 2*size. Checked: this gives bus bandwidths "
                            "up to max_bus_bandwidth_gbs, above NVLink3's 300 GB/s per direction, so rank-0 "
                            "kernel timings undercount; eff_bandwidth > 1 is kept as fitted"),
            "date": _dt.date.today().isoformat(),
            "residuals": residuals,
            "attention_fit": att if att_path else None,
            "allreduce_fit": ar if ar_path else None,
        },
        "devices": devices,
        "allreduce": allreduce,
        "leave_one_device_out": lodo,
    }


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Refit the GPU calibration on the Vidur tables")
    ap.add_argument("--vidur", default=str(Path(__file__).resolve().parents[3] / "shared/data/profiling/vidur"))
    ap.add_argument("-o", "--output", default=str(GPU_CALIBRATION))
    args = ap.parse_args(argv)
    doc = fit_gpu_calibration(args.vidur)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc["devices"][k]["gemm"] for k in doc["devices"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
