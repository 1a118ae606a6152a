"""GPU efficiencies fitted on measured public data, stored in data/gpu_calibration.json, and the formulas they feed.

The program reads only the JSON (`load_gpu_calibration`, `gpu_params`, `end_to_end_efficiency`) and the device files
`hetagent calibrate --gpu` writes (data/measured/, `measured_devices`); fitting (fit.py) needs the shared data, numpy,
scipy and pyarrow and runs from the command line:

    python -m hetagent.costmodel.calibration --data ../shared/data [-o PATH]

The Vidur readers and the GEMM / elementwise fits below are shared with fit.py and benchmarks/costmodel_accuracy.py.

Models (docs/costmodel.md has the derivation and the fitted values):
- GEMM (one linear layer, M tokens x K in -> N out):  t = (tc^k + tm^k)^(1/k) + t0 with
  tc = 2(M + 32)NK / (peak * eff_compute) (32: the mean tile padding, TILE_PAD_ROWS, fixed),
  tm = (w NK + a (MK + MN)) / (bandwidth * eff_memory).
- Elementwise kernels (layer norms, rope, activation, residual add): t = t0 + bytes / (bandwidth * eff_memory).
- Attention: attention_prefill_time_s, attention_decode_time_s; NCCL all-reduce: nccl_allreduce_time_s.
Parameters are resolved per device by gpu_params: measured-device file > device fit > family fit > generic.
"""
from __future__ import annotations

import csv
import datetime as _dt
import gzip
import json
import os
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
CALIBRATION_ENV = "HETAGENT_GPU_CALIBRATION"      # path of another gpu_calibration.json (fit script, tests)
MEASURED_ENV = "HETAGENT_MEASURED_DIR"            # folder of `hetagent calibrate --gpu` device files
MEASURED_DIR = _DATA / "measured"


@lru_cache(maxsize=8)
def _load_json(path: str, mtime: float = 0.0) -> dict:
    with open(path) as f:
        return json.load(f)


def _read(path) -> dict:
    """The JSON at `path`, parsed once per modification (os.stat on the string: the cost model reads its
    calibration for every priced option, and building Path objects for it was a third of pricing)."""
    key = str(path)
    try:
        mtime = os.stat(key).st_mtime
    except OSError:
        mtime = 0.0
    return _load_json(key, mtime)


def gpu_calibration_path() -> Path:
    return Path(os.environ.get(CALIBRATION_ENV) or GPU_CALIBRATION)


def load_gpu_calibration(path=None) -> dict:
    """The committed calibration (or the file at `path`, or at $HETAGENT_GPU_CALIBRATION)."""
    return _read(path or os.environ.get(CALIBRATION_ENV) or GPU_CALIBRATION)


def load_cpu_calibration(path=None) -> dict | None:
    """CPU operator measurements written by `hetagent calibrate`, or None when the file is absent."""
    p = Path(path) if path else CPU_CALIBRATION
    if not p.is_file():
        return None
    return _read(p)


def measured_dir() -> Path:
    return Path(os.environ.get(MEASURED_ENV) or MEASURED_DIR)


@lru_cache(maxsize=8)
def _measured_files(folder: str, stamp: tuple) -> dict:
    """{device id: fitted parameters} of every `hetagent calibrate --gpu` file in the folder (measured.py fits)."""
    from hetagent.costmodel.measured import device_calibration_from_file
    out = {}
    for name, _ in stamp:
        doc = device_calibration_from_file(Path(folder) / name)
        if doc is not None:
            out[doc["device"]] = doc
    return out


_measured_seen: dict = {}      # folder -> (its mtime, its calibrations)


def measured_devices() -> dict:
    """Device calibrations written by `hetagent calibrate --gpu` ({id: {"params", "host", "date", "file", ...}}).
    Read again when the folder changes (a new or replaced file renames into it: `calibrate` writes
    atomically); otherwise one stat of the folder per call."""
    key = os.environ.get(MEASURED_ENV) or str(MEASURED_DIR)
    try:
        st = os.stat(key)
    except OSError:
        return {}
    import stat as _stat
    if not _stat.S_ISDIR(st.st_mode):
        return {}
    seen = _measured_seen.get(key)
    if seen is None or seen[0] != st.st_mtime_ns:
        folder = Path(key)
        stamp = tuple(sorted((p.name, p.stat().st_mtime) for p in folder.glob("*.json")))
        seen = _measured_seen[key] = (st.st_mtime_ns, _measured_files(key, stamp))
    return seen[1]


PARAM_CLASSES = ("gemm", "gemm_fp8", "elementwise", "attention_prefill", "attention_decode", "allreduce")


def gpu_params(device_id: str, calibration: dict | None = None, architecture: str | None = None) -> tuple[dict, str]:
    """(parameters, source) for a device. Each parameter class comes from the most specific fit that has it: a
    `hetagent calibrate --gpu` file of the device, the device's own fit on the shared data, its architecture family's
    fit, else the generic fit across every measured device. source names the level the GEMM parameters came from:
    "measured:<file>", the device id, "family:<architecture>" or "generic"."""
    cal = calibration or load_gpu_calibration()
    levels = [("generic", cal["devices"]["generic"])]
    fam = (cal.get("families") or {}).get(architecture or "")
    if fam:
        levels.append((f"family:{architecture}", fam))
    if device_id in cal["devices"] and device_id != "generic":
        levels.append((device_id, cal["devices"][device_id]))
    meas = measured_devices().get(device_id) if calibration is None else None
    if meas:
        levels.append((f"measured:{Path(meas['file']).name}", meas["params"]))
    params, source = {}, "generic"
    for name, level in levels:
        for k in PARAM_CLASSES:
            if k in level:
                params[k] = level[k]
                if k == "gemm":
                    source = name
    if "gemm_fp8" not in params:
        params["gemm_fp8"] = params["gemm"]
    return params, source


def allreduce_params(device_id: str, calibration: dict | None = None) -> dict:
    """One-shot (engine) all-reduce parameters: latency per step and efficiency of the scale-up link."""
    cal = calibration or load_gpu_calibration()
    ar = cal["allreduce"]
    return ar.get(device_id, ar["generic"])


def figures_of(dev) -> dict:
    """The datasheet figures a fit depends on: 16-bit and fp8 peaks (TFLOPS) and memory bandwidth (GB/s)."""
    pk = dev.peak_tflops or {}
    return {"fp16_tflops": pk.get("fp16", pk.get("bf16")), "fp8_tflops": pk.get("fp8"),
            "bandwidth_gbs": dev.memory_bandwidth_gbs}


def is_measured(device_id: str, calibration: dict | None = None) -> bool:
    """The device has operator-level measurements: its own fit in the calibration, or a `calibrate --gpu` file."""
    cal = calibration or load_gpu_calibration()
    return (device_id in cal["devices"] and device_id != "generic") or \
        (calibration is None and device_id in measured_devices())


def end_to_end_efficiency(device_id: str, vendor: str | None = None, calibration: dict | None = None,
                          precision: str | None = None) -> tuple[float, str]:
    """(factor, source) relating the device's end-to-end serving rate to what the operator model predicts, relative
    to the reference device (H100 SXM = 1): the device's own MLPerf factor, else its vendor stack's median, else 1.
    A device with operator measurements keeps them at every other precision: its MLPerf factor applies only at the
    weight precision the submission ran (L40S: fp8, where MLPerf's TensorRT-LLM beats the vLLM kernels measured)."""
    cal = calibration or load_gpu_calibration()
    e2e = cal.get("end_to_end") or {}
    dev = (e2e.get("devices") or {}).get(device_id)
    if dev:
        ran = (dev.get("precision") or {}).get("weights")
        if precision and ran and precision != ran and is_measured(device_id, calibration):
            return 1.0, f"operators measured (mlperf factor is for {ran})"
        return float(dev["efficiency"]), f"mlperf:{device_id}"
    if is_measured(device_id, calibration):
        return 1.0, "operators measured"
    st = (e2e.get("stacks") or {}).get(vendor or "")
    if st:
        return float(st["efficiency"]), f"stack:{vendor}"
    return 1.0, "none"


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


# Attention kernels (AIConfigurator's vLLM FlashAttention / FlashInfer tables): causal work is counted in whole tiles
# of ATTN_TILE key columns along the diagonal (n(n + 64)/2 pairs instead of n^2/2), fixed like TILE_PAD_ROWS.
ATTN_TILE = 64.0


def attention_prefill_time_s(batch, n, heads, kv_heads, head_dim, peak_flops, bandwidth, p, kv_bytes=2.0,
                             act_bytes=2.0):
    """Seconds of one causal attention layer (FlashAttention forward + KV-cache write) over `batch` prompts of `n`
    tokens each, `heads` query and `kv_heads` KV heads on this device. Returns (t, tc, tm, flops, bytes)."""
    flops = 4.0 * batch * heads * head_dim * n * (n + ATTN_TILE) / 2.0
    byts = batch * n * (2.0 * kv_heads * head_dim * kv_bytes + (2.0 * heads + 2.0 * kv_heads) * head_dim * act_bytes)
    tc = flops / (peak_flops * p["eff_compute"])
    tm = byts / (bandwidth * p["eff_memory"])
    fixed = (p["overhead_us"] + p.get("per_seq_head_us", 0.0) * batch * heads / 32.0) * 1e-6
    return smooth_max(tc, tm, p["smooth_k"]) + fixed, tc, tm, flops, byts


def attention_decode_time_s(batch, context, heads, kv_heads, head_dim, bandwidth, p, kv_bytes=2.0):
    """Seconds of one paged decode-attention layer: `batch` sequences each reading `context` cached tokens and writing
    one. A fixed launch cost, a cost per sequence and query head (normalized to 32 heads), and the KV bytes at the
    fitted bandwidth efficiency, reached only with enough (sequence, KV head) pairs to occupy the GPU: the share
    pairs / (pairs + parallel_half). Returns (t, bytes)."""
    byts = batch * (context + 1.0) * 2.0 * kv_heads * head_dim * kv_bytes
    fixed = (p["overhead_us"] + p.get("per_seq_head_us", 0.0) * batch * heads / 32.0) * 1e-6
    pairs = batch * kv_heads
    share = pairs / (pairs + p.get("parallel_half", 0.0))
    return fixed + byts / (bandwidth * p["eff_memory"] * share), byts


def nccl_allreduce_time_s(nbytes, n, link_bandwidth, p):
    """Seconds of an NCCL all-reduce of nbytes among n devices: the faster of two protocols (low-latency and bulk),
    each 2(n-1) steps of a fixed latency plus the ring's 2(n-1)/n x bytes at a fitted share of the link.
    p: {"<n>": {lat_ll_us, eff_ll, lat_bulk_us, eff_bulk}} fitted per group size; the nearest size fitted is used."""
    import numpy as np
    sizes = sorted(int(k) for k in p)
    q = p[str(min(sizes, key=lambda s: (abs(s - n), s)))]
    bus = 2.0 * (n - 1) / n * nbytes
    t1 = 2 * (n - 1) * q["lat_ll_us"] * 1e-6 + bus / (link_bandwidth * q["eff_ll"])
    t2 = 2 * (n - 1) * q["lat_bulk_us"] * 1e-6 + bus / (link_bandwidth * q["eff_bulk"])
    return np.minimum(t1, t2)


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


def main(argv=None) -> int:
    """`python -m hetagent.costmodel.calibration --data ../shared/data`: the fit lives in fit.py (needs scipy, pyarrow
    and the shared data); this module is what the program reads at run time."""
    from hetagent.costmodel.fit import main as fit_main
    return fit_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
