"""MLPerf Inference v4.1, Llama 2 70B Offline: measured per-accelerator throughput relative to H100 SXM against
hetagent's prediction, at 300 and 1,024 input tokens (the run's mean prompt length is not in the rows), output 294.

For every catalog device with closed-division rows on its vendor's primary stack (TensorRT-LLM on NVIDIA, vLLM on
AMD), hetagent's best offline tokens/s per accelerator (the best TP and batch that fit, at the submission's weight
and KV precisions; costmodel/mlperf.py) is divided by H100 SXM's and compared with the measured ratio:

- calibrated: the committed calibration, read through the cost model as plans read it (each device's end-to-end
  factor applied by the roofline). The device's own rows set its factor, so this checks that one factor holds at
  both prompt lengths and that the runtime applies it; the check to meet is within 20% at both.
- uncalibrated: the operator model alone (no end-to-end factor): what the issue's table showed before.
- leave one device out: the device's factor replaced by the median of its vendor's other devices (1 when none):
  how a device without results of its own is predicted. This is the honest test; its misses set the datasheet
  interval.

    python benchmarks/mlperf_ratios.py            # table on stderr, JSON in benchmarks/results/mlperf_ratios.json
    python benchmarks/mlperf_ratios.py --json     # one line of JSON on stdout

Exit 1 when a calibrated ratio misses 20% at either prompt length.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetagent.costmodel import calibration as cal  # noqa: E402
from hetagent.costmodel import mlperf  # noqa: E402

ROWS = ROOT.parent / "shared" / "data" / "benchmarks" / mlperf.ROWS_FILE
RESULTS = ROOT / "benchmarks" / "results" / "mlperf_ratios.json"


def ratios(rows_path=ROWS) -> dict:
    from hetagent.costmodel.fit import using_calibration
    rows = mlperf.read_rows(rows_path)
    prim = mlperf.primary_rows(rows)
    vs = {d: (rs[0]["vendor"], rs[0]["stack"]) for d, rs in prim.items()}
    measured = {d: statistics.median(r["per_accelerator"] for r in rs) for d, rs in prim.items()}
    doc = cal.load_gpu_calibration()
    e2e = doc["end_to_end"]
    calibrated = mlperf.predictions(sorted(prim), vs)
    bare = copy.deepcopy(doc)
    bare.pop("end_to_end", None)
    with using_calibration(bare):
        uncal = mlperf.predictions(sorted(prim), vs)
    ref = mlperf.REFERENCE
    out, fails = {}, []
    for d in sorted(prim):
        vendor = vs[d][0]
        others = [v["efficiency"] for k, v in e2e["devices"].items() if k != d and v["vendor"] == vendor]
        f_lodo = (statistics.median(others) if others else 1.0) if d != ref else 1.0   # the reference is 1 by definition
        m = measured[d] / measured[ref]
        out[d] = {"measured_ratio": round(m, 4), "vendor": vendor, "engine": mlperf.ENGINE[vs[d][1]],
                  "submissions": [r["id"] for r in prim[d]],
                  "measured_tokens_per_s_per_accelerator": round(measured[d], 1),
                  "precision": mlperf.submission_precision(d, *vs[d]),
                  "efficiency": e2e["devices"][d]["efficiency"], "lodo_efficiency": round(f_lodo, 4), "prompts": {}}
        for p in mlperf.PROMPT_TOKENS:
            c = calibrated[d][p]["tokens_per_s_per_device"] / calibrated[ref][p]["tokens_per_s_per_device"]
            u = uncal[d][p]["tokens_per_s_per_device"] / uncal[ref][p]["tokens_per_s_per_device"]
            lo = u * f_lodo
            entry = {"calibrated": round(c, 4), "uncalibrated": round(u, 4), "lodo": round(lo, 4),
                     "error": round(c / m - 1, 4), "error_uncalibrated": round(u / m - 1, 4),
                     "error_lodo": round(lo / m - 1, 4), "pass": abs(c / m - 1) <= mlperf.TOLERANCE,
                     "pass_uncalibrated": abs(u / m - 1) <= mlperf.TOLERANCE,
                     "pass_lodo": abs(lo / m - 1) <= mlperf.TOLERANCE,
                     "tp": calibrated[d][p]["tp"], "batch": calibrated[d][p]["batch"],
                     "predicted_tokens_per_s_per_accelerator": round(calibrated[d][p]["tokens_per_s_per_device"], 1)}
            out[d]["prompts"][str(p)] = entry
            if not entry["pass"]:
                fails.append(f"{d}@{p}")
    other = [{k: r[k] for k in ("id", "submitter", "accelerator", "device", "stack", "per_accelerator", "excluded")}
             for r in rows if not (r["device"] and r["stack"] == mlperf.PRIMARY_STACK[r["vendor"]])]
    n = len(out) - 1
    return {"reference": ref, "output_tokens": mlperf.OUTPUT_TOKENS, "prompt_tokens": list(mlperf.PROMPT_TOKENS),
            "tolerance": mlperf.TOLERANCE, "devices": out, "rows_not_used": other,
            "summary": {"devices": n,
                        "calibrated_pass": sum(all(e["pass"] for e in v["prompts"].values())
                                               for k, v in out.items() if k != ref),
                        "uncalibrated_pass": sum(all(e["pass_uncalibrated"] for e in v["prompts"].values())
                                                 for k, v in out.items() if k != ref),
                        "lodo_pass": sum(all(e["pass_lodo"] for e in v["prompts"].values())
                                         for k, v in out.items() if k != ref)},
            "failed": fails, "ok": not fails,
            "calibration_date": doc.get("provenance", {}).get("date")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=str(ROWS), help="the MLPerf rows CSV")
    ap.add_argument("--json", action="store_true", help="print one line of JSON")
    ap.add_argument("-o", "--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    res = ratios(args.rows)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        print(json.dumps(res, separators=(",", ":")))
    else:
        print(f"{'device':10s} {'prompt':>6s} {'measured':>8s} {'calibrated':>10s} {'uncal.':>7s} {'lodo':>6s}  "
              f"pass(cal/uncal/lodo)", file=sys.stderr)
        for d, v in res["devices"].items():
            for p, e in v["prompts"].items():
                print(f"{d:10s} {p:>6s} {v['measured_ratio']:8.3f} {e['calibrated']:10.3f} {e['uncalibrated']:7.3f} "
                      f"{e['lodo']:6.3f}  {e['pass']}/{e['pass_uncalibrated']}/{e['pass_lodo']}", file=sys.stderr)
        print(f"summary {res['summary']}; wrote {args.output}", file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
