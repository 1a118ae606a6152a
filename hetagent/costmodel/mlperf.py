"""MLPerf Inference v4.1, Llama 2 70B, Offline: the end-to-end evidence per accelerator and vendor stack.

The rows (shared/data/benchmarks/mlperf_inference_v4.1_llm_rows.csv, a subset of mlcommons/inference_results_v4.1
summary_results.json, Apache-2.0) give tokens/s per system; per accelerator = result / (accelerators per node x
nodes). `offline_throughput` is hetagent's prediction of the same scenario: the best tokens/s per accelerator over
the tensor-parallel degrees and batches that fit in memory, each batch of prompts prefilled then decoded for the
output length (the sum of the two phases; prefill activations counted for CHUNK_TOKENS tokens in flight, as the
engines' chunked prefill bounds them).

`calibrate_end_to_end` (called by fit.py) derives per device the factor between measured and predicted throughput
relative to the H100 SXM (the mean prompt length of the run is not published, so absolute throughput cannot be
compared; the ratio to H100 is nearly independent of it), and per vendor stack the median factor of its devices.
"""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

ROWS_FILE = "mlperf_inference_v4.1_llm_rows.csv"
RESULTS_COMMIT = "4a0c87411066bd697db46fa44cf6f04fd458f627"   # mlcommons/inference_results_v4.1 (SOURCES.md)
MODEL = "llama-2-70b"
REFERENCE = "h100"
OUTPUT_TOKENS = 294          # the rows' accuracy column: TOKENS_PER_SAMPLE 293.7
PROMPT_TOKENS = (300, 1024)  # the mean prompt length is not in the rows: the ratio must hold at both
CHUNK_TOKENS = 8192          # prefill tokens in flight (TensorRT-LLM's default max_num_tokens), for activations
TOLERANCE = 0.20
BATCH_GRID = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 3072, 4096)

# Accelerator column -> catalog id (None: not in the catalog, or a variant we do not price).
ACCELERATORS = (
    ("H200-SXM-141GB-CTS", None, "custom thermal solution at 1,000 W (H200 SXM is 700 W): a different operating point"),
    ("H200-SXM-141GB", "h200", None),
    ("H100-SXM-80GB", "h100", None),
    ("H100-PCIe-80GB", "h100-pcie", None),
    ("H100-NVL-94GB", None, "H100 NVL is not in the catalog"),
    ("GH200", None, "GH200 is not in the catalog"),
    ("B200-SXM-180GB", "b200", None),
    ("L40S", "l40s", None),
    ("MI300X", "mi300x", None),
)
# The engine each vendor's results are calibrated on (the stack of its reference submissions); rows of other stacks
# are reported, not fitted.
PRIMARY_STACK = {"nvidia": "tensorrt-llm", "amd": "vllm"}
ENGINE = {"tensorrt-llm": "TensorRT-LLM (TensorRT 10.x)", "vllm": "vLLM"}
# The precisions each submission actually ran (the rows' weight_data_types says fp16 for NVIDIA's fp8 runs).
NVIDIA_FP8 = ("mlcommons/inference_results_v4.1 @" + RESULTS_COMMIT[:7] + " closed/NVIDIA/configs/llama2-70b/Offline/"
              "__init__.py: use_fp8 = True for every H100, H100 NVL, H200 and GH200 system (partners submit with "
              "NVIDIA's harness); fp8 KV cache assumed with it (TensorRT-LLM's fp8 MLPerf engines quantize the KV cache)")
PRECISION = {
    ("nvidia", "tensorrt-llm"): {"weights": "fp8", "kv": "fp8", "source": NVIDIA_FP8},
    ("amd", "vllm"): {"weights": "fp8", "kv": "fp8", "source": (
        "mlcommons/inference_results_v4.1 closed/AMD/code/llama2-70b-99/README.md: Quark quant_scheme w_fp8_a_fp8_o_fp8 "
        "with the KV-cache scales of vLLM's tests/fp8_kv/llama2-70b-fp8-kv (fp8 weights, activations and KV cache)")},
}
DEVICE_PRECISION = {
    "b200": {"weights": "fp4", "kv": "fp8", "source": (
        "Tom's Hardware, 'Nvidia publishes first Blackwell B200 MLPerf results: Up to 4X faster than its H100 "
        "predecessor, when using FP4' (2024-08-28): the B200 preview ran Llama 2 70B in FP4; KV cache fp8 assumed "
        "(not published)")},
}


def device_of(accelerator: str) -> tuple[str | None, str | None]:
    for key, dev, why in ACCELERATORS:
        if key.lower() in accelerator.lower():
            return dev, why
    return None, "no catalog device matches"


def stack_of(software: str) -> str:
    s = software.lower()
    if "tensorrt" in s:
        return "tensorrt-llm"
    if "vllm" in s:
        return "vllm"
    return "unknown"


def read_rows(path) -> list[dict]:
    """Closed-division Llama 2 70B Offline rows, one per result ID (99 and 99.9 accuracy rows of one system share
    their ID and result), with the catalog device, the stack and tokens/s per accelerator."""
    out, seen = [], set()
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if not (r["Model"].startswith("llama2-70b") and r["Scenario"] == "Offline" and r["Category"] == "closed"):
                continue
            if r["ID"] in seen:
                continue
            seen.add(r["ID"])
            dev, why = device_of(r["Accelerator"])
            per_node = float(r["a#"] or 1)
            nodes = float(r["Nodes"] or 1)
            vendor = "amd" if "mi300" in r["Accelerator"].lower() else "nvidia"
            out.append({"id": r["ID"], "submitter": r["Submitter"], "system": r["System"],
                        "accelerator": r["Accelerator"], "device": dev, "excluded": why, "vendor": vendor,
                        "stack": stack_of(r["Software"]), "software": r["Software"],
                        "accelerators": per_node * nodes, "tokens_per_s": float(r["Performance_Result"]),
                        "per_accelerator": float(r["Performance_Result"]) / (per_node * nodes),
                        "weight_data_types": r["weight_data_types"], "availability": r["Availability"]})
    return out


def submission_precision(device_id: str, vendor: str, stack: str) -> dict:
    return DEVICE_PRECISION.get(device_id) or PRECISION[(vendor, stack)]


# ------------------------------------------------------------------------------------------------ prediction
def offline_throughput(model, device, precision: str, kv_precision: str | None = None,
                       prompt_tokens: int = 1024, output_tokens: int = OUTPUT_TOKENS, max_tp: int | None = None) -> dict:
    """Best predicted offline output tokens/s per accelerator over TP (within a node) and batch (BATCH_GRID, as
    long as weights + KV + activations fit): batch x output / (prefill of the batch + its decode) / tp."""
    from hetagent.costmodel import roofline as rl
    best = {"tokens_per_s_per_device": 0.0, "tp": None, "batch": None}
    per_node = int(getattr(device, "devices_per_node", 1) or 1)
    for tp in (1, 2, 4, 8):
        if tp > per_node or model.heads % tp or (max_tp and tp > max_tp):
            continue
        for b in BATCH_GRID:
            mem = rl.memory_gb(model, device, precision, tp, 1, b, min(b * prompt_tokens, CHUNK_TOKENS),
                               prompt_tokens + output_tokens, kv_precision)
            if mem["total_gb"] > mem["capacity_gb"]:
                break
            pre = rl.prefill(model, device, precision, tp, 1, b, prompt_tokens, kv_precision=kv_precision).total_s
            dec, _ = rl.decode(model, device, precision, tp, 1, b, prompt_tokens, output_tokens,
                               kv_precision=kv_precision)
            tps = b * output_tokens / (pre + dec.total_s) / tp
            if tps > best["tokens_per_s_per_device"]:
                best = {"tokens_per_s_per_device": tps, "tp": tp, "batch": b}
    return best


def _geo(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def predictions(devices: list[str], vendor_stack: dict, prompts=PROMPT_TOKENS) -> dict:
    """{device: {prompt: offline_throughput(...)}} at each device's submission precision, with the calibration the
    cost model reads now."""
    from hetagent.costmodel.devices import get_device
    from hetagent.costmodel.models import load_model
    model = load_model(MODEL)
    out = {}
    for d in devices:
        prec = submission_precision(d, *vendor_stack[d])
        dev = get_device(d)
        out[d] = {p: offline_throughput(model, dev, prec["weights"], prec["kv"], p) for p in prompts}
    return out


def primary_rows(rows: list[dict]) -> dict:
    """{device: [rows]} of the rows each device is calibrated on (catalog device, its vendor's primary stack)."""
    out = {}
    for r in rows:
        if r["device"] and r["stack"] == PRIMARY_STACK[r["vendor"]]:
            out.setdefault(r["device"], []).append(r)
    return out


def calibrate_end_to_end(rows_path, prompts=PROMPT_TOKENS) -> dict:
    """End-to-end factors per device and stack, and their validation (docs/costmodel.md, "End to end")."""
    rows = read_rows(rows_path)
    prim = primary_rows(rows)
    vendor_stack = {d: (rs[0]["vendor"], rs[0]["stack"]) for d, rs in prim.items()}
    measured = {d: statistics.median(r["per_accelerator"] for r in rs) for d, rs in prim.items()}
    pred = predictions(sorted(prim), vendor_stack, prompts)
    ref = REFERENCE

    def pred_ratio(d, p):
        return pred[d][p]["tokens_per_s_per_device"] / pred[ref][p]["tokens_per_s_per_device"]
    eff = {d: _geo([(measured[d] / measured[ref]) / pred_ratio(d, p) for p in prompts]) for d in prim}
    eff[ref] = 1.0
    stacks = {}
    for vendor in sorted({v for v, _ in vendor_stack.values()}):
        ds = sorted(d for d in prim if vendor_stack[d][0] == vendor)
        stacks[vendor] = {"efficiency": round(statistics.median(eff[d] for d in ds), 4), "devices": ds,
                          "engine": ENGINE[PRIMARY_STACK[vendor]]}
    ratios, lodo_f, loso_f = {}, [], []
    for d in sorted(prim):
        vendor = vendor_stack[d][0]
        others = [eff[x] for x in prim if vendor_stack[x][0] == vendor and x != d]
        f_lodo = statistics.median(others) if others else 1.0
        ratios[d] = {}
        for p in prompts:
            m = measured[d] / measured[ref]
            r0 = pred_ratio(d, p)
            rc = r0 * eff[d]
            rl_ = r0 * f_lodo
            ratios[d][p] = {"measured": round(m, 4), "predicted_uncalibrated": round(r0, 4),
                            "predicted": round(rc, 4), "predicted_lodo": round(rl_, 4),
                            "error": round(rc / m - 1, 4), "error_uncalibrated": round(r0 / m - 1, 4),
                            "error_lodo": round(rl_ / m - 1, 4), "within_tolerance": abs(rc / m - 1) <= TOLERANCE,
                            "within_tolerance_lodo": abs(rl_ / m - 1) <= TOLERANCE,
                            "tp": pred[d][p]["tp"], "batch": pred[d][p]["batch"],
                            "predicted_tokens_per_s_per_device": round(pred[d][p]["tokens_per_s_per_device"], 1)}
            if d != ref:
                lodo_f.append(rl_ / m)
        # leave one submission out: the device's factor from its other submissions
        rs = prim[d]
        if len(rs) >= 2:
            for i, r in enumerate(rs):
                rest = statistics.median(x["per_accelerator"] for j, x in enumerate(rs) if j != i)
                f = eff[d] * rest / measured[d]          # factor scales with the device's measured median
                for p in prompts:
                    if d == ref:                          # the reference: its other submissions' median
                        loso_f.append(rest / r["per_accelerator"])
                    else:
                        loso_f.append(pred_ratio(d, p) * f / (r["per_accelerator"] / measured[ref]))
    e2e = {"reference": ref, "model": MODEL, "output_tokens": OUTPUT_TOKENS, "prompt_tokens": list(prompts),
           "source": (f"shared/data/benchmarks/{ROWS_FILE}: MLPerf Inference v4.1 closed, llama2-70b Offline "
                      f"(mlcommons/inference_results_v4.1 @{RESULTS_COMMIT[:12]}); median tokens/s per accelerator "
                      "of each device's rows on its vendor's primary stack"),
           "method": ("efficiency = geometric mean over the prompt lengths of (measured / measured_h100) / "
                      "(predicted / predicted_h100); a stack's efficiency is the median of its devices'"),
           "devices": {d: {"efficiency": round(eff[d], 4), "vendor": vendor_stack[d][0],
                           "engine": ENGINE[vendor_stack[d][1]],
                           "measured_tokens_per_s_per_accelerator": round(measured[d], 1),
                           "submissions": [r["id"] for r in prim[d]],
                           "range_per_accelerator": [round(min(r["per_accelerator"] for r in prim[d]), 1),
                                                     round(max(r["per_accelerator"] for r in prim[d]), 1)],
                           "precision": submission_precision(d, *vendor_stack[d])} for d in sorted(prim)},
           "stacks": stacks}
    other = [{k: r[k] for k in ("id", "submitter", "accelerator", "device", "stack", "per_accelerator", "excluded")}
             for r in rows if not (r["device"] and r["stack"] == PRIMARY_STACK[r["vendor"]])]
    return {"end_to_end": e2e,
            "validation": {"ratios": {d: {str(p): v for p, v in x.items()} for d, x in ratios.items()},
                           "lodo_time_ratios": [round(x, 4) for x in lodo_f],
                           "loso_time_ratios": [round(x, 4) for x in loso_f],
                           "rows_not_fitted": other, "tolerance": TOLERANCE}}
