"""Accuracy of the operator cost model.

1. Vidur mlp tables: for every row, predict the four linear ops of one transformer layer (attn pre/post proj, mlp
   up/down proj, median columns) from the row's own shape columns and compare. Views: per device x regime
   (memory-bound / compute-bound by the roofline), in-sample (per-device fit), generic fit, leave-one-device-out
   (fit on A40 predict A100 and back; needs scipy and the shared data), and held-out models of the summary table.
2. Serving engines: predicted decode time against published vLLM / NIM (TensorRT-LLM) measurements.

    python benchmarks/costmodel_accuracy.py                  # all views, writes benchmarks/results/costmodel_accuracy.json
    python benchmarks/costmodel_accuracy.py --vidur DIR --json   # committed calibration on DIR's tables, no refit

Exit 1 when a Vidur view misses median APE <= 10% or p90 <= 25%, or coverage is under 90%.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetagent.costmodel import calibration as cal  # noqa: E402
from hetagent.costmodel import roofline as rl  # noqa: E402

SHARED_VIDUR = ROOT.parent / "shared" / "data" / "profiling" / "vidur"
RESULTS = ROOT / "benchmarks" / "results" / "costmodel_accuracy.json"
MODEL_IDS = {"meta-llama_Meta-Llama-3-8B": "llama-3-8b", "meta-llama_Llama-2-7b-hf": "llama-2-7b",
             "meta-llama_Llama-2-70b-hf": "llama-2-70b", "microsoft_phi-2": "phi-2",
             "meta-llama_Meta-Llama-3-70B": "llama-3-70b"}
TARGET_MEDIAN, TARGET_P90, MIN_COVERAGE = 0.10, 0.25, 0.90

# Published serving measurements (decode). e2e: end-to-end latency of a request incl. its prefill.
SERVING = [
    {"source": "vLLM CI performance benchmark, buildkite.com/vllm/performance-benchmark/builds/9515 "
               "(latency tests: input 32, output 128, batch 8, median end-to-end)",
     "engine": "vLLM", "model": "llama-3-8b", "device": "h200", "tp": 1, "precision": "bf16", "batch": 8,
     "prompt": 32, "output": 128, "e2e_ms": 833.53},
    {"source": "same", "engine": "vLLM", "model": "llama-3-70b", "device": "h200", "tp": 4, "precision": "bf16",
     "batch": 8, "prompt": 32, "output": 128, "e2e_ms": 2077.56},
    {"source": "same", "engine": "vLLM", "model": "mixtral-8x7b", "device": "h200", "tp": 2, "precision": "bf16",
     "batch": 8, "prompt": 32, "output": 128, "e2e_ms": 1916.58},
    {"source": "NVIDIA NIM LLM benchmarking, docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance "
               "(Llama-3.3-70B-Instruct, NIM 1.8.0, 2 x H100 80G, fp8 TP2, concurrency 1, 5000 in / 500 out)",
     "engine": "NIM (TensorRT-LLM)", "model": "llama-3-70b", "device": "h100", "tp": 2, "precision": "fp8",
     "batch": 1, "prompt": 5000, "output": 500, "itl_ms": 18.58},
    {"source": "same, 500 in / 2000 out", "engine": "NIM (TensorRT-LLM)", "model": "llama-3-70b", "device": "h100",
     "tp": 2, "precision": "fp8", "batch": 1, "prompt": 500, "output": 2000, "itl_ms": 18.91},
]


# ------------------------------------------------------------------------------------------------ Vidur
def table_model(path: Path) -> str:
    parts = path.name.split("__")
    return parts[1] if len(parts) >= 3 else ""


def _peaks(device_id):
    from hetagent.costmodel.devices import get_device
    d = get_device(device_id)
    return d.peak_tflops["fp16"] * 1e12, d.memory_bandwidth_gbs * 1e9


def predict_samples(samples, device_id, params):
    pk, bw = _peaks(device_id)
    err, membound = cal.gemm_errors(samples, pk, bw, params)
    return err, membound


def summarize(err, membound) -> dict:
    out = {"all": cal._stats(err)}
    out["memory_bound"] = cal._stats(err[membound])
    out["compute_bound"] = cal._stats(err[~membound])
    return out


def catalog_ids():
    from hetagent.configs import list_ids
    return set(list_ids("models")), set(list_ids("devices"))


def predict_dir(vidur_dir, calibration=None) -> dict:
    """Predict every mlp table under vidur_dir with the committed calibration (no refit)."""
    models, devices = catalog_ids()
    calib = calibration or cal.load_gpu_calibration()
    rows_total = rows_pred = 0
    errs, mb, per_dev = [], [], {}
    for path in cal.find_mlp_tables(vidur_dir):
        dev = cal.device_of_table(path)
        mid = MODEL_IDS.get(table_model(path))
        rows = cal.read_mlp_rows(path)
        if mid in models:
            rows_total += len(rows)
        if dev not in devices:
            continue
        params = cal.gpu_params(dev, calib)[0]["gemm"]
        samples = cal.gemm_samples(rows)
        e, m = predict_samples(samples, dev, params)
        rows_pred += len(rows)
        errs.append(e), mb.append(m)
        per_dev.setdefault(dev, ([], []))
        per_dev[dev][0].append(e), per_dev[dev][1].append(m)
    e = np.concatenate(errs) if errs else np.array([])
    m = np.concatenate(mb) if mb else np.array([], bool)
    s = cal._stats(e)
    return {"median_ape": s.get("median_ape"), "p90_ape": s.get("p90_ape"), "samples": s.get("rows", 0),
            "rows": rows_pred, "rows_total": rows_total,
            "coverage": rows_pred / rows_total if rows_total else 0.0,
            "by_device": {d: summarize(np.concatenate(a), np.concatenate(b)) for d, (a, b) in per_dev.items()},
            "by_regime": summarize(e, m) if e.size else {}}


def held_out_models(summary_csv: Path, calib) -> dict:
    """Rows of the summary table whose model is in no mlp table (Qwen-72B, CodeLlama-34B, InternLM-20B, Llama-3-70B)."""
    seen = {"meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf", "microsoft/phi-2"}
    out = {}
    with open(summary_csv) as f:
        rows = [r for r in csv.DictReader(f) if r["model"] not in seen]
    for dev in sorted({r["device"] for r in rows}):
        samples = []
        for r in rows:
            if r["device"] != dev:
                continue
            row = {"hidden": int(r["n_embd"]), "heads": int(r["n_head"]), "kv_heads": int(r["n_kv_head"]),
                   "intermediate": int(r["n_expanded_embd"]), "gated": r["use_gated_mlp"] == "True",
                   "tokens": int(r["num_tokens"]), "tp": int(r["tp"])}
            row.update({op: float(r[f"{op}_median_ms"]) for op in cal.LINEAR_OPS})
            samples += cal.gemm_samples([row])
        e, m = predict_samples(samples, dev, cal.gpu_params(dev, calib)[0]["gemm"])
        out[dev] = summarize(e, m)
    out["models"] = sorted({r["model"] for r in rows})
    return out


def lodo(vidur_dir) -> dict:
    """Fit on one device, predict the other (refits: needs scipy)."""
    rows = {d: [] for d in cal.MEASURED}
    for p in cal.find_mlp_tables(vidur_dir):
        if cal.device_of_table(p) in rows:
            rows[cal.device_of_table(p)] += cal.read_mlp_rows(p)
    samples = {d: cal.gemm_samples(r) for d, r in rows.items()}
    peaks = {d: _peaks(d) for d in cal.MEASURED}
    out = {}
    for train, test in (("a40", "a100"), ("a100", "a40")):
        params = cal.fit_gemm({train: samples[train]}, peaks)
        e, m = predict_samples(samples[test], test, params)
        out[f"fit_{train}_predict_{test}"] = {"params": params, **summarize(e, m)}
    return out


def in_sample(vidur_dir, calib) -> dict:
    out = {}
    for which in ("device", "generic"):
        for d in cal.MEASURED:
            rows = []
            for p in cal.find_mlp_tables(vidur_dir):
                if cal.device_of_table(p) == d:
                    rows += cal.read_mlp_rows(p)
            params = calib["devices"][d if which == "device" else "generic"]["gemm"]
            e, m = predict_samples(cal.gemm_samples(rows), d, params)
            out[f"{which}_fit_{d}"] = summarize(e, m)
    return out


# ---------------------------------------------------------------------------------------------- serving
def serving(engine=True) -> dict:
    from hetagent.costmodel.devices import get_device
    from hetagent.costmodel.models import load_model
    rows = []
    for s in SERVING:
        m, d = load_model(s["model"]), get_device(s["device"])
        if "e2e_ms" in s:
            pre = rl.prefill(m, d, s["precision"], s["tp"], 1, s["batch"], s["prompt"], engine).total_s
            whole, step = rl.decode(m, d, s["precision"], s["tp"], 1, s["batch"], s["prompt"], s["output"] - 1, engine)
            pred, meas, what = (pre + whole.total_s) * 1e3, s["e2e_ms"], "e2e_ms"
        else:
            step = rl.decode_step(m, d, s["precision"], s["tp"], 1, s["batch"], s["prompt"] + s["output"] / 2, engine)
            pred, meas, what = step.total_s * 1e3, s["itl_ms"], "itl_ms"
        rows.append({**{k: s[k] for k in ("engine", "model", "device", "tp", "precision", "batch", "prompt", "output")},
                     "metric": what, "measured": meas, "predicted": round(pred, 2),
                     "tbt_predicted_ms": round(step.total_s * 1e3, 3), "error": round(pred / meas - 1, 4),
                     "source": s["source"]})
    e = np.abs([r["error"] for r in rows])
    return {"median_ape": round(float(np.median(e)), 4), "max_ape": round(float(e.max()), 4), "points": rows}


def meets(view: dict) -> bool:
    st = view.get("all", view)
    return st.get("rows", 0) == 0 or (st["median_ape"] <= TARGET_MEDIAN and st["p90_ape"] <= TARGET_P90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vidur", help="predict the mlp tables in DIR with the committed calibration (no refit)")
    ap.add_argument("--json", action="store_true", help="print one line of JSON")
    ap.add_argument("-o", "--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    calib = cal.load_gpu_calibration()
    if args.vidur:
        res = predict_dir(args.vidur, calib)
        ok = res["coverage"] >= MIN_COVERAGE and meets(res)
        res["ok"] = ok
        print(json.dumps(res, separators=(",", ":")) if args.json else json.dumps(res, indent=1))
        return 0 if ok else 1
    d = SHARED_VIDUR
    res = {"committed_calibration": predict_dir(d, calib), "in_sample": in_sample(d, calib), "lodo": lodo(d),
           "held_out_models": held_out_models(d / "vidur_mlp_layer_summary_a100_a40.csv", calib),
           "serving": serving(True), "serving_without_engine_overheads": serving(False),
           "targets": {"median_ape": TARGET_MEDIAN, "p90_ape": TARGET_P90, "coverage": MIN_COVERAGE,
                       "serving_median_ape": 0.25}}
    views = {**{f"in_sample.{k}.{r}": v[r] for k, v in res["in_sample"].items() for r in v},
             **{f"lodo.{k}.{r}": v[r] for k, v in res["lodo"].items() for r in ("all", "memory_bound", "compute_bound")},
             **{f"held_out.{k}.{r}": v[r] for k, v in res["held_out_models"].items() if k != "models" for r in v}}
    res["failed_views"] = [k for k, v in views.items() if not meets(v)]
    res["ok"] = not res["failed_views"] and res["committed_calibration"]["coverage"] >= MIN_COVERAGE
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        c = res["committed_calibration"]
        print(json.dumps({"median_ape": c["median_ape"], "p90_ape": c["p90_ape"], "rows": c["rows"],
                          "rows_total": c["rows_total"], "serving_median_ape": res["serving"]["median_ape"],
                          "failed_views": res["failed_views"], "ok": res["ok"]}, separators=(",", ":")))
    else:
        for k, v in views.items():
            print(f"{k:55s} n={v.get('rows', 0):6d} median {v.get('median_ape', 0):.3f} p90 {v.get('p90_ape', 0):.3f}",
                  file=sys.stderr)
        for p in res["serving"]["points"]:
            print(f"serving {p['engine']:20s} {p['model']:13s} {p['device']} tp{p['tp']} {p['precision']} b{p['batch']} "
                  f"{p['metric']} measured {p['measured']} predicted {p['predicted']} ({p['error']:+.1%})", file=sys.stderr)
        print(f"serving median APE {res['serving']['median_ape']:.3f} (without engine overheads "
              f"{res['serving_without_engine_overheads']['median_ape']:.3f}); wrote {args.output}", file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
