"""Code generation: compile time per asset and target, and the latency of each compiled host operator
against torch eager and ONNX Runtime on the same inputs and weights.

    python benchmarks/codegen.py                  # -> benchmarks/results/codegen.json (about 5 min, 2 cores)
    python benchmarks/codegen.py --quick --json   # small shapes, fewer runs; one JSON line on stdout

Every asset is built fresh (an empty assets folder) so compile times are real, not cache hits. Latency is
the median of --runs calls after --warmup calls, in one process: IREE (llvm-cpu, local-task driver, weights
bound on the device once), torch eager (the same reference module, torch.no_grad, fp32) and ONNX Runtime
(CPU execution provider; weights fed as inputs, no copy). Threads: each runtime's default on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from hetagent.backends.codegen import BuildOptions, build_assets, load_host_asset, load_onnx_asset  # noqa: E402
from hetagent.backends.codegen import layer  # noqa: E402
from hetagent.backends.codegen.compile import tool_versions  # noqa: E402
from hetagent.backends.codegen.host import graph_for_entry  # noqa: E402

TARGETS = ["llvm-cpu:sapphirerapids", "llvm-cpu:znver4", "cuda:sm_80", "cuda:sm_89", "rocm:gfx942", "vulkan",
           "onnx"]


def cases(quick: bool):
    p = lambda op, kind, batch=1: {"operator": op, "kind": kind, "device": "a100", "batch": batch,  # noqa: E731
                                   "precision": "fp32"}
    if quick:
        return ([p("embed", "embed.encode"), p("prefill", "llm.prefill"), p("decode", "llm.decode")],
                {"embed": {"model": "all-minilm-l6-v2", "tokens": 40, "texts": 4},
                 "prefill": {"model": "phi-2", "prompt_tokens": 16},
                 "decode": {"model": "phi-2", "prompt_tokens": 24, "output_tokens": 8}})
    return ([p("embed", "embed.encode"), p("rerank", "memory.rerank"),
             p("prefill.phi-2", "llm.prefill"), p("decode.phi-2", "llm.decode"),
             p("prefill.llama-3-8b", "llm.prefill"), p("decode.llama-3-8b", "llm.decode")],
            {"embed": {"model": "all-minilm-l6-v2", "tokens": 240, "texts": 8},
             "rerank": {"model": "all-minilm-l6-v2", "top_k": 8, "tokens": 256},
             "prefill.phi-2": {"model": "phi-2", "prompt_tokens": 128},
             "decode.phi-2": {"model": "phi-2", "prompt_tokens": 400, "output_tokens": 100},
             "prefill.llama-3-8b": {"model": "llama-3-8b", "prompt_tokens": 128},
             "decode.llama-3-8b": {"model": "llama-3-8b", "prompt_tokens": 400, "output_tokens": 100}})


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small shapes, 5 runs")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of writing the file")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "codegen.json"))
    args = ap.parse_args(argv)
    runs = 5 if args.quick else args.runs
    import torch
    placements, attrs = cases(args.quick)
    out_rows, lat_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        m = build_assets(placements, tmp, targets=TARGETS, op_attrs=attrs,
                         options=BuildOptions(verify=False, max_tokens=128, max_context=512))
        build_s = time.perf_counter() - t
        for a in m["assets"]:
            out_rows.append({k: a.get(k) for k in ("operator", "kind", "model", "shapes", "target", "status",
                                                   "compile_s", "lower_s")}
                            | {"bytes": os.path.getsize(Path(tmp) / a["path"]) if a["path"] else None,
                               "note": a["note"] if a["status"] == "failed" else None})
        hosts = {a["operator"]: a for a in m["assets"] if a["target"] == "llvm-cpu"}
        onnxs = {a["operator"]: a for a in m["assets"] if a["target"] == "onnx" and a["path"]}
        for op, a in hosts.items():
            print(f"latency: {op} {a['shapes']}", file=sys.stderr)
            g = graph_for_entry(a)
            ins = g.sample_inputs(seed=5)
            w = g.load_weights()
            iree_op = load_host_asset(a, tmp, weights=w)
            ort_op = load_onnx_asset(onnxs[op], tmp, weights=w)
            tins = [torch.from_numpy(x) for x in ins]
            tw = [torch.from_numpy(x) for x in w]

            def eager():
                with torch.no_grad():
                    g.module(*tins, *tw)

            ref = layer.eager(g, ins, w)
            err_iree = max(float(np.abs(x - r).max()) for x, r in zip(iree_op(*ins), ref))
            err_ort = max(float(np.abs(x - r).max()) for x, r in zip(ort_op(*ins), ref))
            lat_rows.append({
                "operator": op, "kind": a["kind"], "model": a["model"], "shapes": a["shapes"],
                "iree_llvm_cpu_ms": median_ms(lambda: iree_op(*ins), runs, args.warmup),
                "torch_eager_ms": median_ms(eager, runs, args.warmup),
                "onnxruntime_ms": median_ms(lambda: ort_op(*ins), runs, args.warmup),
                "max_abs_err_iree": err_iree, "max_abs_err_onnxruntime": err_ort, "runs": runs})
            del iree_op, ort_op, w, tw
    doc = {"version": 1, "benchmark": "codegen",
           "command": "python benchmarks/codegen.py" + (" --quick" if args.quick else ""),
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch_threads": torch.get_num_threads()},
           "versions": tool_versions() | {"onnxruntime": __import__("onnxruntime").__version__},
           "build_seconds": round(build_s, 2), "compile": out_rows, "latency": lat_rows}
    if args.json:
        print(json.dumps(doc, separators=(",", ":")))
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
