"""Accuracy of the operator cost model.

1. Vidur mlp tables: for every row, predict the four linear ops of one transformer layer (attn pre/post proj, mlp
   up/down proj, median columns) from the row's own shape columns and compare. Views: per device x regime
   (memory-bound / compute-bound by the roofline), in-sample (per-device fit), generic fit, leave-one-device-out
   (fit on A40 predict A100 and back; needs scipy and the shared data), and held-out models of the summary table.
2. Serving engines: predicted decode time against published vLLM / NIM (TensorRT-LLM) measurements.
3. Every operator class of the committed calibration on the AIConfigurator and Vidur tables (GEMM bf16 and fp8,
   prefill and decode attention, NCCL all-reduce, elementwise): in-sample, group cross-validated and leave one
   device out, per device (`operators`; misses are listed in `operator_failed_views`, they do not set the exit code).
   End to end per device against MLPerf: benchmarks/mlperf_ratios.py.

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
    """(relative errors, memory-bound mask) where the mask has two columns: by the fitted model (tm >= tc) and by
    the datasheet ridge (arithmetic intensity 2MNK / bytes < peak / bandwidth), which no fit can move."""
    pk, bw = _peaks(device_id)
    err, membound = cal.gemm_errors(samples, pk, bw, params)
    a = np.array([s[:3] for s in samples], float).reshape(-1, 3)
    m, k, n = a[:, 0], a[:, 1], a[:, 2]
    ridge = 2 * m * n * k / (2.0 * (n * k + m * k + m * n)) < pk / bw
    return err, np.stack([membound, ridge], axis=1)


def summarize(err, membound) -> dict:
    mb = membound[:, 0] if membound.ndim == 2 else membound
    out = {"all": cal._stats(err)}
    out["memory_bound"] = cal._stats(err[mb])
    out["compute_bound"] = cal._stats(err[~mb])
    if membound.ndim == 2:
        out["memory_bound_datasheet_ridge"] = cal._stats(err[membound[:, 1]])
        out["compute_bound_datasheet_ridge"] = cal._stats(err[~membound[:, 1]])
    return out


def catalog_ids():
    from hetagent.configs import list_ids
    return set(list_ids("models")), set(list_ids("devices"))


def catalog_model(name: str, models: set) -> str | None:
    """Catalog id of a Vidur table's `<org>_<model>` (MODEL_IDS, else the model name lower-cased without 'meta-'
    and '-hf')."""
    if name in MODEL_IDS:
        return MODEL_IDS[name]
    m = name.split("_", 1)[-1].lower()
    for c in (m, m.removesuffix("-hf"), m.removeprefix("meta-").removesuffix("-hf")):
        if c in models:
            return c
    return None


def catalog_device(name: str, devices: set) -> str | None:
    """Catalog id of a table's device: exact, else lower-case with '_' as '-', else without trailing '-<suffix>'
    words (h100_pcie -> h100-pcie, a100_80gb -> a100). Devices absent from the calibration JSON take its generic
    fit with their own datasheet peaks."""
    c = name.lower().replace("_", "-")
    for cand in (name, c):
        if cand in devices:
            return cand
    while "-" in c:
        c = c.rsplit("-", 1)[0]
        if c in devices:
            return c
    return None


def predict_dir(vidur_dir, calibration=None) -> dict:
    """Predict every mlp table under vidur_dir with the committed calibration (no refit). rows: predicted rows of
    the tables whose model is in the catalog; rows_total: all rows of those tables; errors over those rows."""
    models, devices = catalog_ids()
    calib = calibration or cal.load_gpu_calibration()
    rows_total = rows_pred = rows_other = 0
    errs, mb, per_dev, dev_ids, skipped = [], [], {}, {}, {}
    for path in cal.find_mlp_tables(vidur_dir):
        mid = catalog_model(table_model(path), models)
        rows = cal.read_mlp_rows(path)
        if mid:
            rows_total += len(rows)
        dev = catalog_device(cal.device_of_table(path), devices)
        if dev is None:
            skipped[path.name] = f"device '{cal.device_of_table(path)}' not in the catalog"
            continue
        dev_ids[cal.device_of_table(path)] = {"device": dev, "calibration": cal.gpu_params(dev, calib)[1]}
        if not mid:
            rows_other += len(rows)
            continue
        params = cal.gpu_params(dev, calib)[0]["gemm"]
        samples = cal.gemm_samples(rows)
        e, m = predict_samples(samples, dev, params)
        rows_pred += len(rows)
        errs.append(e), mb.append(m)
        per_dev.setdefault(dev, ([], []))
        per_dev[dev][0].append(e), per_dev[dev][1].append(m)
    e = np.concatenate(errs) if errs else np.array([])
    m = np.concatenate(mb) if mb else np.zeros((0, 2), bool)
    s = cal._stats(e)
    return {"median_ape": s.get("median_ape"), "p90_ape": s.get("p90_ape"), "samples": s.get("rows", 0),
            "rows": rows_pred, "rows_total": rows_total,
            "coverage": rows_pred / rows_total if rows_total else 0.0,
            "rows_of_models_not_in_catalog": rows_other, "devices": dev_ids, "skipped_tables": skipped,
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


# ------------------------------------------------------------------------------------------------------ CPU
# Operator attributes that reproduce one calibration sample of each kind (units -> the op's attrs).
CPU_OP_ATTRS = {
    "speech.frontend": lambda u, e: {"model": "whisper-tiny", "audio_seconds": u},
    "speech.encode": lambda u, e: {"model": "whisper-tiny", "audio_seconds": u},
    "speech.decode": lambda u, e: {"model": "whisper-tiny", "output_tokens": int(u)},
    "speech.phonemize": lambda u, e: {"model": "piper-joe-medium", "text_tokens": int(u)},
    "speech.synthesize": lambda u, e: {"model": "piper-joe-medium", "text_tokens": int(u)},
    "embed.encode": lambda u, e: {"model": "all-minilm-l6-v2", "tokens": int(u)},
    "llm.prefill": lambda u, e: {"model": "gemma-3-270m", "prompt_tokens": int(u), "output_tokens": 1},
    "llm.decode": lambda u, e: {"model": "gemma-3-270m", "prompt_tokens": int(u), "output_tokens": 1},
    "llm.kv_transfer": lambda u, e: {"model": "gemma-3-270m", "kv_bytes": u,
                                     "prompt_tokens": max(1, int(u // (e.get("kv_bytes_per_token") or 1)))},
}


def _vector_attrs(e):
    return [{"index_size": r["index_size"], "dims": r["dims"], "top_k": r.get("top_k", 5)} for r in e.get("runs", [])]


def cpu_section(calibration_path=None, device_id="local-cpu", fleet="local-cpu") -> dict:
    """Predicted vs measured CPU operators (cpu_calibration.json samples).
    loso: each sample predicted by the operator's line (operators.cpu_line, its model form) refitted without it;
    device: hetagent.costmodel.operators.cost on `device_id` (the host, declared in configs/fleets/local-cpu.yaml)."""
    from hetagent.costmodel import operators as ops
    from hetagent.costmodel.fleet import load_fleet
    from hetagent.costmodel.types import DeviceOption
    from hetagent.ir.opgraph import Operator
    c = cal.load_cpu_calibration(calibration_path)
    if not c:
        return {"skipped": "no cpu_calibration.json"}
    if calibration_path:       # operators.cost reads the default file: point it at this one
        cal.CPU_CALIBRATION = Path(calibration_path)
    devices = load_fleet(fleet).resolve()[0]
    out, all_loso, all_dev = {}, [], []
    for kind, e in sorted(c["operators"].items()):
        samples = [(float(u), float(t)) for u, t in e.get("samples", [])]
        model = ops._model_or_none(CPU_OP_ATTRS[kind](1, e).get("model")) if kind in CPU_OP_ATTRS else None
        loso = []
        for i, (u, t) in enumerate(samples):
            rest = samples[:i] + samples[i + 1:]
            line = ops.cpu_line(kind, rest, model)
            pred = ops.cpu_line_seconds(kind, line, 1 if kind == "llm.decode" else u, context=u)
            loso.append({"units": u, "measured_s": t, "predicted_s": pred, "error": pred / t - 1})
        attrs = _vector_attrs(e) if kind == "memory.vector_search" else [
            CPU_OP_ATTRS[kind](u, e) if kind in CPU_OP_ATTRS else {} for u, _ in samples]
        dev = []
        for (u, t), a in zip(samples, attrs):
            op = Operator(f"cal.{kind}", kind, a)
            opts = ops.options_for(op, devices[device_id])
            o = next((x for x in opts if x.batch == 1 and x.precision == "fp32"), None) or \
                (opts[0] if opts else DeviceOption(device_id, precision="fp32"))
            r = ops.cost(op, o, devices)
            pred = r.latency_ms / 1e3
            dev.append({"units": u, "measured_s": t, "predicted_s": pred, "error": pred / t - 1,
                        "form": (r.detail or {}).get("form"), "scaling": (r.detail or {}).get("scaling")})
        out[kind] = {"model": e.get("model"), "unit": e.get("unit"), "bound": e.get("bound"),
                     "form": ops.cpu_line(kind, samples, model)["regressor"] if kind != "llm.decode" else "context",
                     "loso": cal._stats([x["error"] for x in loso]), "device": cal._stats([x["error"] for x in dev]),
                     "loso_points": loso, "device_points": dev}
        all_loso += [x["error"] for x in loso]
        all_dev += [x["error"] for x in dev]
    return {"host": {k: c.get("host", {}).get(k) for k in ("cpu", "cores", "clock_ghz", "date", "load_average_before")},
            "load_average_after": c.get("load_average_after"), "device": device_id,
            "loso": cal._stats(all_loso), "device_all": cal._stats(all_dev), "operators": out}


# ---------------------------------------------------------------------------------------------- operators
def operator_section(data_dir=SHARED_VIDUR.parents[1], calib=None) -> dict:
    """In-sample (committed parameters), group-cross-validated and leave-one-device-out errors of every operator
    class on the measured devices (hetagent.costmodel.fit.cross_validate; needs pyarrow and scipy)."""
    from hetagent.costmodel import fit
    calib = calib or cal.load_gpu_calibration()
    od = fit.load_operator_data(Path(data_dir))
    views, _ = fit.cross_validate(od, {"devices": calib["devices"]})
    return views


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
    ap.add_argument("--cpu-calibration", help="CPU calibration JSON to check (default: the committed one)")
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
           "cpu": cpu_section(args.cpu_calibration), "operators": operator_section(),
           "targets": {"median_ape": TARGET_MEDIAN, "p90_ape": TARGET_P90, "coverage": MIN_COVERAGE,
                       "serving_median_ape": 0.25}}
    views = {**{f"in_sample.{k}.{r}": v[r] for k, v in res["in_sample"].items() for r in v},
             **{f"lodo.{k}.{r}": v[r] for k, v in res["lodo"].items() for r in v if r != "params"},
             **{f"held_out.{k}.{r}": v[r] for k, v in res["held_out_models"].items() if k != "models" for r in v},
             **{f"cpu.{w}.{k}": v[w] for k, v in res["cpu"].get("operators", {}).items() for w in ("loso", "device")},
             **({"cpu.loso.all": res["cpu"]["loso"], "cpu.device.all": res["cpu"]["device_all"]} if "loso" in res["cpu"]
                else {})}
    res["failed_views"] = [k for k, v in views.items() if not meets(v)]
    res["operator_failed_views"] = [f"{c}.{d}.{w}" for c, per in res["operators"].items() for d, v in per.items()
                                    for w in ("in_sample", "cv", "lodo") if isinstance(v.get(w), dict)
                                    and "median_ape" in v[w] and not meets(v[w])]
    res["ok"] = not res["failed_views"] and res["committed_calibration"]["coverage"] >= MIN_COVERAGE
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        c = res["committed_calibration"]
        print(json.dumps({"median_ape": c["median_ape"], "p90_ape": c["p90_ape"], "rows": c["rows"],
                          "rows_total": c["rows_total"], "serving_median_ape": res["serving"]["median_ape"],
                          "cpu_loso": res["cpu"].get("loso"), "cpu_device": res["cpu"].get("device_all"),
                          "failed_views": res["failed_views"], "operator_failed_views": res["operator_failed_views"],
                          "ok": res["ok"]}, separators=(",", ":")))
    else:
        for k, v in views.items():
            print(f"{k:55s} n={v.get('rows', 0):6d} median {v.get('median_ape', 0):.3f} p90 {v.get('p90_ape', 0):.3f}",
                  file=sys.stderr)
        for c, per in res["operators"].items():
            for d, v in per.items():
                print(f"operators.{c}.{d}: " + "; ".join(
                    f"{w} median {v[w]['median_ape']:.3f} p90 {v[w]['p90_ape']:.3f}" for w in ("in_sample", "cv", "lodo")
                    if isinstance(v.get(w), dict) and "median_ape" in v[w]), file=sys.stderr)
        for p in res["serving"]["points"]:
            print(f"serving {p['engine']:20s} {p['model']:13s} {p['device']} tp{p['tp']} {p['precision']} b{p['batch']} "
                  f"{p['metric']} measured {p['measured']} predicted {p['predicted']} ({p['error']:+.1%})", file=sys.stderr)
        print(f"serving median APE {res['serving']['median_ape']:.3f} (without engine overheads "
              f"{res['serving_without_engine_overheads']['median_ape']:.3f}); wrote {args.output}", file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
