"""`hetagent calibrate`: measure the real operators on this machine and fit per-unit costs.

CPU (`calibrate_cpu`): runs each bundled model (whisper tiny.en, Piper, MiniLM, FAISS, gemma-3-270m
through llama.cpp) over a few sizes, keeps the fastest of `repeats` runs per size after a warm-up
run of that very size (the minimum, not the median: other processes on a shared machine only ever
add time, so the fastest run is the best estimate of the operator's own cost),
and fits `seconds = fixed_seconds + seconds_per_unit * units` by least squares (intercept clipped at
zero). Two microbenchmarks describe the host: numpy float32 matmul GFLOP/s (compute) and a large
array copy in GB/s (memory bandwidth, read + write bytes counted). The result is JSON:

  {"version": 1, "note": ..., "host": {cpu, cores, flags, matmul_gflops, mem_bandwidth_gbs, date,
   hetagent_version, ...}, "operators": {"<kind>": {"model", "unit", "seconds_per_unit",
   "fixed_seconds", "samples": [[units, seconds], ...], "bound": "compute"|"memory", "fit", ...}}}

written by default to hetagent/costmodel/data/cpu_calibration.json, which the cost model reads.

Scaling to another CPU. The figures hold for this host. For a target CPU the cost model divides
each operator's seconds (per unit and fixed) by a speed-up ratio chosen by the operator's `bound`:

  compute-bound (speech.frontend/encode, speech.synthesize, embed.encode, llm.prefill):
      ratio = target effective GFLOP/s / host matmul_gflops
      target effective GFLOP/s = cores x clock GHz x fp32 flops/cycle x efficiency, where
      efficiency = host matmul_gflops / host peak_gflops_estimate unless measured on the target
  memory-bound (llm.decode, llm.kv_transfer, memory.vector_search, speech.decode,
  speech.phonemize):
      ratio = target memory bandwidth GB/s (STREAM-like, or x the same efficiency) /
              host mem_bandwidth_gbs

`scale_ratio` computes it. Best of all is to run `hetagent calibrate` on the target itself.

GPU (`calibrate_gpu`): a GEMM sweep at transformer shapes (fp16, bf16, fp8 where available), causal
prefill and single-token decode attention, square matmul TFLOP/s and device-memory copy bandwidth with
torch.cuda, written with the host, the date and the catalog peaks to
costmodel/data/measured/<device id>.json. The cost model reads that folder: it fits the device's
GEMM and attention parameters on the rows (costmodel/measured.py) and the device's calibration status
becomes `measured`. Measuring needs only the standard library and torch (a GPU host may lack
hetagent's other dependencies: run `python -m hetagent.backends.calibrate --gpu --device-id h200`
from a checkout); it fails with a HetagentError when no CUDA device exists.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from hetagent.errors import HetagentError

SCHEMA_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent.parent / "costmodel" / "data"
DEFAULT_CPU_PATH = DATA_DIR / "cpu_calibration.json"
DEFAULT_GPU_PATH = DATA_DIR / "gpu_microbench.json"   # a GPU the catalog does not know (the cost model ignores it)
DEFAULT_MEASURED_DIR = DATA_DIR / "measured"          # <device id>.json: read by the cost model (costmodel/measured.py)

# Sizes per operator. TINY_SIZES is for tests (seconds, not minutes).
SIZES = {
    "audio_seconds": [10, 30, 60, 90, 120],     # frontend and encode (whole 30 s windows)
    "speech_decode_sentences": [1, 2, 3, 6],    # whole sentences of speech in one window
    "tts_tokens": [10, 20, 40, 80, 160],
    "embed_texts": [1, 4, 8, 16, 32],           # texts of ~32 tokens each
    "index_sizes": [10_000, 25_000, 50_000, 100_000, 200_000],
    "index_dims": [384],
    "extra_dims": [128, 768],                   # at the middle index size
    "top_k": [5],
    "prompt_tokens": [32, 64, 128, 256, 512, 1024],
    "decode_contexts": [32, 128, 256, 512, 1024],
    "decode_steps": 16,
    "matmul_n": 2048,
    "copy_mb": 256,
}
TINY_SIZES = {
    "audio_seconds": [5, 30],
    "speech_decode_sentences": [1, 2],
    "tts_tokens": [5, 15],
    "embed_texts": [1, 4],
    "index_sizes": [1_000, 4_000],
    "index_dims": [64],
    "extra_dims": [],
    "top_k": [3],
    "prompt_tokens": [8, 32],
    "decode_contexts": [8, 32],
    "decode_steps": 4,
    "matmul_n": 256,
    "copy_mb": 16,
}

_SENTENCES = [
    "The agent listens to the question and writes down what it heard.",
    "Operators run on the device that meets the deadline at the lowest cost.",
    "A small model answers quickly while a large one reasons more carefully.",
    "Memory search finds the passages that are closest to the query.",
    "Each request carries a deadline and the router respects it.",
    "Prices per hour include power, cooling and the financing of the servers.",
]

_COMPUTE, _MEMORY = "compute", "memory"


# ---------------------------------------------------------------------------------------------
# helpers
def _runs(fn, repeats: int) -> list:
    """Results of `repeats` calls of fn after one discarded warm-up call."""
    fn()
    return [fn() for _ in range(max(1, repeats))]


def _best_time(fn, repeats: int, warmup: bool = True) -> float:
    """Fastest of `repeats` timed calls (after one untimed warm-up call)."""
    if warmup:
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fit_linear(samples) -> tuple[float, float]:
    """Least squares seconds = fixed + slope * units -> (slope, fixed); both clipped at >= 0."""
    pts = [(float(x), float(y)) for x, y in samples]
    if not pts:
        return 0.0, 0.0
    if len(pts) == 1 or len({x for x, _ in pts}) == 1:
        x, y = pts[0]
        return (y / x if x else 0.0), (0.0 if x else y)
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    fixed = my - slope * mx
    if fixed < 0:       # a negative overhead is noise: refit through the origin
        slope = sum(x * y for x, y in pts) / sum(x * x for x, _ in pts)
        fixed = 0.0
    if slope < 0:       # no growth with size: all fixed cost
        slope, fixed = 0.0, my
    return slope, fixed


def _entry(model: str, unit: str, samples, bound: str, repeats: int, **extra) -> dict:
    slope, fixed = fit_linear(samples)
    e = {"model": model, "unit": unit, "seconds_per_unit": slope, "fixed_seconds": fixed,
         "samples": [[round(float(x), 6), float(y)] for x, y in samples], "bound": bound,
         "fit": f"seconds = fixed_seconds + seconds_per_unit * {unit}s", "repeats": repeats}
    e.update(extra)
    return e


def hetagent_version() -> str:
    try:
        from importlib.metadata import version
        return version("hetagent")
    except Exception:
        pass
    try:
        import tomllib
        py = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return tomllib.loads(py.read_text())["project"]["version"] + "+src"
    except Exception:
        return "unknown"


_FLAG_GROUPS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
                "amx_int8", "sve", "sve2", "asimd", "neon")


def cpu_info() -> dict:
    """CPU model name, usable cores, clock, and the SIMD/matrix flags that matter for speed."""
    name, flags, mhz = platform.processor() or platform.machine(), set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and name in ("", platform.machine(),
                                                           platform.processor()):
                name = val.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(val.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(val)
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    present = [f for f in _FLAG_GROUPS if f in flags]
    if "avx512f" in flags:
        fpc = 64     # 2 FMA pipes x 16 fp32 lanes x 2 (halve for double-pumped AVX-512 cores)
    elif "avx2" in flags and "fma" in flags:
        fpc = 32
    elif "asimd" in flags or "neon" in flags:
        fpc = 16
    else:
        fpc = 8
    ghz = (mhz or 0.0) / 1000.0
    return {"cpu": name, "machine": platform.machine(), "cores": cores,
            "clock_ghz": round(ghz, 3) if ghz else None, "flags": present,
            "avx512": "avx512f" in flags, "amx": any(f.startswith("amx") for f in flags),
            "fp32_flops_per_cycle_assumed": fpc,
            "peak_gflops_estimate": round(cores * ghz * fpc, 1) if ghz else None}


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """numpy (BLAS) float32 n x n matmul, all usable cores: 2 n^3 flops per product."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b   # warm-up (thread pool, page faults)
    best = _best_time(lambda: a @ b, max(3, repeats))
    return 2.0 * n ** 3 / best / 1e9


def mem_bandwidth_gbs(mb: int = 256, repeats: int = 3) -> float:
    """Copy of an `mb` MB float64 array (far beyond the caches): (read + write bytes) / seconds."""
    import numpy as np
    src = np.ones(mb * 1024 * 1024 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = _best_time(lambda: np.copyto(dst, src), max(3, repeats))
    return 2.0 * src.nbytes / best / 1e9


def scale_ratio(entry: dict, host: dict, target_gflops: float | None = None,
                target_bandwidth_gbs: float | None = None) -> float:
    """Speed-up of a target CPU over the calibration host for one operator (divide seconds by it).

    target_gflops: the target's effective fp32 GFLOP/s (measured matmul, or peak x efficiency);
    target_bandwidth_gbs: its effective memory bandwidth. The operator's `bound` picks which.
    """
    if entry.get("bound") == _MEMORY:
        if not target_bandwidth_gbs:
            raise HetagentError("a memory-bound operator needs the target's memory bandwidth")
        return target_bandwidth_gbs / host["mem_bandwidth_gbs"]
    if not target_gflops:
        raise HetagentError("a compute-bound operator needs the target's GFLOP/s")
    return target_gflops / host["matmul_gflops"]


def _speech_audio(tts, seconds: float):
    """`seconds` of real speech at 16 kHz (Piper sentences, repeated), for whisper."""
    import numpy as np
    from hetagent.backends.tts import resample
    res = tts.synthesize(" ".join(_SENTENCES))
    clip = resample(res.audio, res.sample_rate)
    n = int(seconds * 16000)
    return np.tile(clip, n // len(clip) + 1)[:n]


def _text_of_tokens(n: int) -> str:
    from hetagent.backends.tts import count_text_tokens
    words, i = [], 0
    while count_text_tokens(" ".join(words)) < n:
        words.extend(_SENTENCES[i % len(_SENTENCES)].split())
        i += 1
    while words and count_text_tokens(" ".join(words)) > n:
        words.pop()
    return " ".join(words) or "Hello."


# ---------------------------------------------------------------------------------------------
# per-model calibrations
def _calibrate_speech(sizes: dict, repeats: int, log) -> dict:
    from hetagent.backends.stt import WhisperSTT
    from hetagent.backends.tts import PiperTTS, count_text_tokens
    tts, stt = PiperTTS(), WhisperSTT()
    ops = {}

    # Piper: phonemize and synthesize, per text token
    ph, syn, audio_per_tok = [], [], []
    tts.synthesize("Warm up.")
    for n in sizes["tts_tokens"]:
        text = _text_of_tokens(n)
        k = count_text_tokens(text)
        runs = _runs(lambda: tts.synthesize(text), repeats)
        ph.append((k, min(r.phonemize_seconds for r in runs)))
        syn.append((k, min(r.synthesize_seconds for r in runs)))
        audio_per_tok.append(runs[0].audio_seconds / k)
        log(f"  piper {k} tokens: phonemize {ph[-1][1]:.4f}s synthesize {syn[-1][1]:.4f}s")
    ops["speech.phonemize"] = _entry(tts.model_id, "text_token", ph, _MEMORY, repeats,
                                     note="espeak-ng, single-threaded, branchy: scale by memory "
                                          "latency/bandwidth rather than FLOP/s")
    ops["speech.synthesize"] = _entry(tts.model_id, "text_token", syn, _COMPUTE, repeats,
                                      audio_seconds_per_text_token=statistics.mean(audio_per_tok))

    # whisper frontend and encode, per audio second (encode works in whole 30 s windows)
    audio = _speech_audio(tts, max(sizes["audio_seconds"]))
    stt.transcribe(audio[: 16000 * 2])   # warm-up
    fe, enc = [], []
    for secs in sizes["audio_seconds"]:
        clip = audio[: int(secs * 16000)]
        fe.append((secs, _best_time(lambda: stt.frontend(clip), repeats)))
        wins = stt.windows(stt.frontend(clip)[0])

        def run_encode():
            for w in wins:
                stt.encode(w)
        enc.append((secs, _best_time(run_encode, repeats)))
        log(f"  whisper {secs}s: frontend {fe[-1][1]:.4f}s encode {enc[-1][1]:.4f}s "
            f"({len(wins)} windows)")
    ops["speech.frontend"] = _entry(stt.model_id, "audio_second", fe, _COMPUTE, repeats)
    one_window = [s for a, s in enc if a <= 30]
    ops["speech.encode"] = _entry(
        stt.model_id, "audio_second", enc, _COMPUTE, repeats, window_seconds=30,
        seconds_per_window=(min(one_window) if one_window else enc[0][1]),
        note="whisper encodes whole 30 s windows: cost = seconds_per_window x ceil(audio/30); "
             "the linear fit is the same cost spread per second")

    # whisper decode: per output token, 1..6 whole sentences of speech inside one window
    from hetagent.backends.tts import resample
    dec = []
    for k in sizes["speech_decode_sentences"]:
        res = tts.synthesize(" ".join(_SENTENCES[:k]))
        feats, _ = stt.frontend(resample(res.audio, res.sample_rate))
        out, _ = stt.encode(stt.windows(feats)[0])
        runs = _runs(lambda: stt.decode(out), repeats)
        dec.append((len(runs[0][0]), min(s for _, s in runs)))
        log(f"  whisper decode {k} sentences ({res.audio_seconds:.1f}s): {dec[-1][0]} tokens "
            f"{dec[-1][1]:.4f}s")
    ops["speech.decode"] = _entry(stt.model_id, "output_token", dec, _MEMORY, repeats,
                                  note="greedy; fixed_seconds covers the start-of-transcript "
                                       "prompt and the end token")
    return ops


def _calibrate_embed_search(sizes: dict, repeats: int, log) -> dict:
    import numpy as np
    from hetagent.backends.embed import Embedder
    from hetagent.backends.vector_search import random_index
    emb = Embedder()
    text = " ".join(_SENTENCES[:3])           # about 40 word-piece tokens
    emb.encode([text])
    samples, per_text = [], []
    for n in sizes["embed_texts"]:
        texts = [text] * n
        tokens = emb.count_tokens(texts)
        s = _best_time(lambda: emb.encode(texts), repeats)
        samples.append((tokens, s))
        per_text.append((n, tokens))
        log(f"  minilm {n} texts / {tokens} tokens: {s:.4f}s")
    ops = {"embed.encode": _entry(emb.model_id, "token", samples, _COMPUTE, repeats,
                                  dims=emb.dims, texts_and_tokens=per_text)}

    vs, detail = [], []
    combos = [(n, d) for n in sizes["index_sizes"] for d in sizes["index_dims"]]
    mid = sizes["index_sizes"][len(sizes["index_sizes"]) // 2]
    combos += [(mid, d) for d in sizes["extra_dims"]]
    for n, d in combos:
        idx = random_index(n, d)
        q = np.random.default_rng(1).standard_normal((1, d), dtype=np.float32)
        for k in sizes["top_k"]:
            s = min(r[2] for r in _runs(lambda: idx.search(q, k), max(5, repeats)))
            vs.append((n * d, s))
            detail.append({"index_size": n, "dims": d, "top_k": k, "seconds": s})
            log(f"  faiss flat {n} x {d} top {k}: {s * 1e3:.3f} ms")
        del idx
    ops["memory.vector_search"] = _entry(
        "faiss-IndexFlatIP", "stored_float", vs, _MEMORY, repeats, runs=detail,
        note="exact search, one query: units = index_size x dims floats scanned")
    return ops


def _calibrate_llm(sizes: dict, repeats: int, log) -> dict:
    from hetagent.backends.llm_llamacpp import LlamaCppLLM
    n_ctx = max(sizes["prompt_tokens"] + sizes["decode_contexts"]) + sizes["decode_steps"] + 8
    n_ctx = 1 << max(7, math.ceil(math.log2(n_ctx)))
    a, b = LlamaCppLLM(n_ctx=n_ctx), LlamaCppLLM(n_ctx=n_ctx)
    base = a.tokenize(" ".join(_SENTENCES * 200), add_bos=False)

    def prompt(n):
        return a.tokenize("", add_bos=True)[:1] + base[: n - 1]

    a.prefill_tokens(prompt(8))   # warm-up
    pre, kv, kvb = [], [], []
    for n in sizes["prompt_tokens"]:
        toks = prompt(n)
        states = _runs(lambda: a.prefill_tokens(toks), repeats)
        pre.append((n, min(s.prefill_seconds for s in states)))
        st = states[0]
        restore = min(_runs(lambda: b.restore(st), repeats))
        save = min(s.save_seconds for s in states)
        kv.append((st.nbytes, save + restore))
        kvb.append((n, st.nbytes))
        log(f"  gemma prefill {n} tokens: {pre[-1][1]:.4f}s; KV {st.nbytes} bytes, "
            f"save+restore {save + restore:.5f}s")
    window = int(a.llm.metadata.get("gemma3.attention.sliding_window", 0)) or None
    inside = [(n, by) for n, by in kvb if window is None or n <= window]
    beyond = [(n, by) for n, by in kvb if window is not None and n > window]
    kv_per_token, kv_fixed = fit_linear(inside)
    kv_extra = {"kv_bytes_per_token": kv_per_token, "kv_bytes_fixed": kv_fixed,
                "kv_bytes_samples": kvb}
    if window:
        kv_extra["sliding_window_tokens"] = window
        if beyond:
            top = max(inside) if inside else (window, kv_fixed + kv_per_token * window)
            kv_extra["kv_bytes_per_token_beyond_window"] = statistics.mean(
                (by - top[1]) / (n - top[0]) for n, by in beyond)
    ops = {"llm.prefill": _entry(a.model_id, "prompt_token", pre, _COMPUTE, repeats,
                                 threads=len(os.sched_getaffinity(0))),
           "llm.kv_transfer": _entry(
               a.model_id, "kv_byte", kv, _MEMORY, repeats,
               **kv_extra,
               note="same-host hand-off: llama_state_seq_get_data on the prefill context + "
                    "llama_state_seq_set_data on another; a network link adds bytes / bandwidth. "
                    "gemma-3 keeps only the last sliding_window_tokens in its local layers, so "
                    "past the window the KV grows by kv_bytes_per_token_beyond_window")}

    steps = sizes["decode_steps"]
    dec = []
    for ctx in sizes["decode_contexts"]:
        st = a.prefill_tokens(prompt(ctx))
        per_tok = []
        for r in _runs(lambda: b.decode(st, max_tokens=steps + 1), repeats):
            per_tok.append(statistics.median(r.per_token_seconds) if r.per_token_seconds
                           else r.seconds)
        dec.append((ctx, min(per_tok)))
        log(f"  gemma decode at context {ctx}: {dec[-1][1] * 1e3:.2f} ms/token")
    slope, intercept = fit_linear(dec)
    mean_ctx = statistics.mean(c for c, _ in dec)
    ops["llm.decode"] = {
        "model": a.model_id, "unit": "output_token",
        "seconds_per_unit": intercept + slope * mean_ctx, "fixed_seconds": 0.0,
        "seconds_per_unit_at_zero_context": intercept,
        "seconds_per_unit_per_context_token": slope, "reference_context_tokens": mean_ctx,
        "samples": [[c, s] for c, s in dec], "bound": _MEMORY, "repeats": repeats,
        "fit": "seconds per output token = seconds_per_unit_at_zero_context + "
               "seconds_per_unit_per_context_token * context_tokens; samples are "
               "[context_tokens, seconds per token]; seconds_per_unit is at "
               "reference_context_tokens",
    }
    return ops


# ---------------------------------------------------------------------------------------------
def _write(result: dict, out_path) -> None:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


def calibrate_cpu(out_path=None, repeats: int = 3, sizes: dict | None = None,
                  verbose: bool = False) -> dict:
    """Measures every bundled CPU operator on this machine; writes and returns the JSON dict.

    out_path: default hetagent/costmodel/data/cpu_calibration.json. sizes: SIZES (default) or
    TINY_SIZES or a dict overriding some keys of SIZES.
    """
    sz = dict(SIZES)
    sz.update(sizes or {})
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else (lambda m: None)
    t0 = time.perf_counter()
    host = cpu_info()
    host["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    host["matmul_gflops"] = round(matmul_gflops(sz["matmul_n"], repeats), 2)
    host["mem_bandwidth_gbs"] = round(mem_bandwidth_gbs(sz["copy_mb"], repeats), 2)
    if host.get("peak_gflops_estimate"):
        host["matmul_efficiency"] = round(host["matmul_gflops"] / host["peak_gflops_estimate"], 3)
    host.update({"python": platform.python_version(), "platform": platform.platform(),
                 "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "hetagent_version": hetagent_version()})
    log(f"host: {host['cpu']}, {host['cores']} cores, {host['matmul_gflops']} GFLOP/s, "
        f"{host['mem_bandwidth_gbs']} GB/s")
    ops = {}
    ops.update(_calibrate_speech(sz, repeats, log))
    ops.update(_calibrate_embed_search(sz, repeats, log))
    ops.update(_calibrate_llm(sz, repeats, log))
    result = {
        "version": SCHEMA_VERSION,
        "note": (f"Measured by `hetagent calibrate` on the host below ({host['cpu']}, "
                 f"{host['cores']} usable cores) with the bundled models; fastest of "
                 f"{repeats} runs per size after a warm-up. Scale to another CPU by the ratio of "
                 "effective GFLOP/s (compute-bound ops) or memory bandwidth (memory-bound ops): "
                 "see docs/calibration.md."),
        "host": host,
        "operators": dict(sorted(ops.items())),
        "elapsed_seconds": round(time.perf_counter() - t0, 1),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    _write(result, out_path or DEFAULT_CPU_PATH)
    return result


# ---------------------------------------------------------------------------------------------
# GEMM shapes (K in, N out) of the Llama 3 8B and 70B layers (Megatron TP 1 and 8 for 70B) and token counts: the
# sweep the cost model's GEMM formula is fitted on (costmodel/measured.py), like AIConfigurator's collector.
GPU_GEMM_SHAPES = ((4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (8192, 10240), (8192, 8192),
                   (8192, 57344), (28672, 8192), (8192, 1280), (1024, 8192), (8192, 7168), (3584, 8192))
GPU_GEMM_TOKENS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
GPU_PREFILL = tuple((b, n, h) for b in (1, 8) for n in (256, 512, 1024, 2048, 4096, 8192) for h in (8, 32))
GPU_DECODE = tuple((b, c, h) for b in (1, 8, 32, 128) for c in (512, 2048, 8192) for h in (8,))
GPU_QUICK = {"shapes": GPU_GEMM_SHAPES[:2], "tokens": (1, 64, 1024), "prefill": GPU_PREFILL[:4],
             "decode": GPU_DECODE[:3]}
L2_DEFEAT_BYTES = 512 * 2 ** 20     # cycle through copies of the operands until they exceed any L2 cache
SCHEMA_VERSION_GPU = 2


def measure_gpu(torch, dev, repeats: int = 5, quick: bool = False, sizes=(1024, 2048, 4096, 8192),
                copy_mb: int = 1024, log=lambda m: None) -> dict:
    """Time the GPU: square matmuls per dtype, a device copy, a GEMM sweep at transformer shapes (fp16, bf16, and fp8
    through torch._scaled_mm where the GPU and torch have it), causal prefill attention and single-token decode
    attention (scaled_dot_product_attention, MHA, head dim 128). CUDA-event timing, the best of `repeats`, operands
    cycled through copies larger than L2 so no repeat reads from cache."""
    def timed(fn, iters):
        fn(0)
        torch.cuda.synchronize(dev)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(iters):
            fn(i)
        end.record()
        torch.cuda.synchronize(dev)
        return start.elapsed_time(end) / 1e3 / iters

    def best(fn, iters=10):
        return min(timed(fn, iters) for _ in range(max(1, repeats)))

    def copies(nbytes):
        return max(1, min(16, -(-L2_DEFEAT_BYTES // max(int(nbytes), 1))))

    props = torch.cuda.get_device_properties(dev)
    dtypes = {"fp16": (torch.float16, False), "bf16": (torch.bfloat16, False),
              "fp32": (torch.float32, False), "tf32": (torch.float32, True)}
    tflops: dict = {}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, (dt, tf32) in dtypes.items():
            torch.backends.cuda.matmul.allow_tf32 = tf32
            tflops[name] = {}
            for n in (sizes[:2] if quick else sizes):
                a = torch.randn(n, n, device=dev, dtype=dt)
                b = torch.randn(n, n, device=dev, dtype=dt)
                t = best(lambda i: torch.matmul(a, b), max(3, min(100, int(5e12 / (2 * n ** 3)))))
                tflops[name][str(n)] = round(2 * n ** 3 / t / 1e12, 2)
                log(f"  matmul {name} {n}: {tflops[name][str(n)]} TFLOP/s")
                del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    nbytes = (64 if quick else copy_mb) * 1024 * 1024
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    bw = 2 * nbytes / best(lambda i: dst.copy_(src)) / 1e9
    del src, dst
    shapes = GPU_QUICK["shapes"] if quick else GPU_GEMM_SHAPES
    tokens = GPU_QUICK["tokens"] if quick else GPU_GEMM_TOKENS
    gemm = []
    for dname in ("fp16", "bf16", "fp8"):
        for k, n in shapes:
            try:
                if dname == "fp8":
                    fp8 = getattr(torch, "float8_e4m3fn")
                    ws = [torch.randn(n, k, device=dev).to(fp8) for _ in range(copies(n * k))]
                    one = torch.ones((), device=dev)
                else:
                    dt = dtypes[dname][0]
                    ws = [torch.randn(k, n, device=dev, dtype=dt) for _ in range(copies(2 * n * k))]
                for m in tokens:
                    if dname == "fp8":
                        x = torch.randn(m, k, device=dev).to(fp8)
                        t = best(lambda i: torch._scaled_mm(x, ws[i % len(ws)].t(), scale_a=one, scale_b=one,
                                                            out_dtype=torch.bfloat16))
                    else:
                        x = torch.randn(m, k, device=dev, dtype=dt)
                        t = best(lambda i: torch.matmul(x, ws[i % len(ws)]))
                    gemm.append([dname, m, n, k, t])
                del ws
            except (RuntimeError, AttributeError, TypeError) as e:      # no fp8 GEMM on this GPU / torch
                log(f"  gemm {dname} {k}x{n}: skipped ({str(e).splitlines()[0][:80]})")
                break
        log(f"  gemm {dname}: {sum(1 for r in gemm if r[0] == dname)} shapes")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    prefill, decode = [], []
    for b, n, h in (GPU_QUICK["prefill"] if quick else GPU_PREFILL):
        try:
            qkv = [torch.randn(b, h, n, 128, device=dev, dtype=torch.bfloat16) for _ in range(3)]
            prefill.append([b, n, h, h, 128, best(lambda i: sdpa(*qkv, is_causal=True))])
            del qkv
        except RuntimeError as e:                                    # out of memory at the largest sizes
            log(f"  prefill attention b{b} n{n} h{h}: skipped ({str(e).splitlines()[0][:80]})")
    for b, c, h in (GPU_QUICK["decode"] if quick else GPU_DECODE):
        try:
            kv_bytes = 2 * b * h * c * 128 * 2
            q = torch.randn(b, h, 1, 128, device=dev, dtype=torch.bfloat16)
            kvs = [(torch.randn(b, h, c, 128, device=dev, dtype=torch.bfloat16),
                    torch.randn(b, h, c, 128, device=dev, dtype=torch.bfloat16)) for _ in range(copies(kv_bytes))]
            decode.append([b, c, h, h, 128, 2.0, best(lambda i: sdpa(q, *kvs[i % len(kvs)]))])
            del q, kvs
        except RuntimeError as e:
            log(f"  decode attention b{b} c{c}: skipped ({str(e).splitlines()[0][:80]})")
    torch.cuda.empty_cache()
    log(f"  attention: {len(prefill)} prefill, {len(decode)} decode shapes")
    return {"name": props.name, "memory_gb": round(props.total_memory / 1e9, 1),
            "capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "matmul_tflops": tflops, "peak_matmul_tflops": {k: max(v.values()) for k, v in tflops.items()},
            "mem_bandwidth_gbs": round(bw, 1),
            "gemm": gemm, "attention_prefill": prefill, "attention_decode": decode,
            "method": "CUDA-event timed, best of the repeats, after a warm-up call; GEMM rows [dtype, m, n, k, s] "
                      "(y[m,n] = x[m,k] W[k,n], weights cycled through copies beyond L2); prefill rows "
                      "[batch, tokens, heads, kv_heads, head_dim, s] (causal SDPA); decode rows [batch, context, heads, "
                      "kv_heads, head_dim, kv bytes/element, s] (one query token); bandwidth = 2 x bytes / time of "
                      "a device-to-device copy"}


def gpu_document(measured: dict, device_id: str | None = None, catalog: dict | None = None) -> dict:
    """The calibration file of one GPU: the measurements, the host and date, the catalog id (given, else matched from
    the CUDA name) and the catalog peaks the cost model will compare them with (so the file stands alone)."""
    gpu = dict(measured)
    try:
        from hetagent.costmodel.measured import catalog_id_for_gpu
        if catalog is None:
            from hetagent.costmodel.devices import load_catalog
            catalog = load_catalog()
        device_id = device_id or catalog_id_for_gpu(gpu["name"], catalog)
        if device_id in catalog:
            d = catalog[device_id]
            gpu["catalog_peaks"] = {"tflops": dict(d.peak_tflops), "bandwidth_gbs": d.memory_bandwidth_gbs,
                                    "device": d.name}
    except Exception as e:         # a bare GPU host without hetagent's dependencies: measurements only
        gpu["catalog_note"] = f"catalog not read ({type(e).__name__}); set gpu.device_id to use this file"
    gpu["device_id"] = device_id
    host = cpu_info()
    host.update({"hostname": platform.node(), "python": platform.python_version(),
                 "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "hetagent_version": hetagent_version()})
    return {"version": SCHEMA_VERSION_GPU,
            "note": f"Measured by `hetagent calibrate --gpu` on {gpu['name']} ({host['hostname']}). The cost model "
                    "fits this device's GEMM and attention parameters on these rows (costmodel/measured.py).",
            "host": host, "gpu": gpu}


def default_gpu_path(doc: dict) -> Path:
    """hetagent/costmodel/data/measured/<device id>.json, where the cost model looks (a GPU the catalog does not know:
    gpu_microbench.json, which it does not read)."""
    dev = (doc.get("gpu") or {}).get("device_id")
    return DEFAULT_MEASURED_DIR / f"{dev}.json" if dev else DEFAULT_GPU_PATH


def calibrate_gpu(out_path=None, repeats: int = 5, sizes=(1024, 2048, 4096, 8192),
                  copy_mb: int = 1024, device: int = 0, verbose: bool = False, device_id: str | None = None,
                  quick: bool = False) -> dict:
    """Measure the CUDA device (measure_gpu) and write its calibration (gpu_document) to out_path, default
    hetagent/costmodel/data/measured/<device id>.json, which the cost model reads: the device's status becomes
    `measured`. Needs torch with CUDA; raises HetagentError when no CUDA device is present."""
    try:
        import torch
    except ImportError as e:
        raise HetagentError("`hetagent calibrate --gpu` needs torch with CUDA; install torch") from e
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        raise HetagentError("`hetagent calibrate --gpu` found no CUDA device on this machine "
                            "(torch.cuda.is_available() is False); run it on a GPU host")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if verbose else (lambda m: None)
    dev = torch.device("cuda", device)
    doc = gpu_document(measure_gpu(torch, dev, repeats, quick, sizes, copy_mb, log), device_id)
    path = Path(out_path) if out_path else default_gpu_path(doc)
    _write(doc, path)
    doc["written_to"] = str(path)
    return doc


# ---------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `hetagent calibrate` (for the CLI to reuse)."""
    p.add_argument("--gpu", action="store_true", help="calibrate the CUDA device instead of the CPU")
    p.add_argument("--device-id", help="--gpu: the catalog id of the GPU (default: matched from its CUDA name)")
    p.add_argument("--out", "-o", default=None, help="where to write the JSON "
                   "(default: hetagent/costmodel/data/cpu_calibration.json; with --gpu "
                   "hetagent/costmodel/data/measured/<device id>.json, which the cost model reads)")
    p.add_argument("--repeats", type=int, default=3, help="runs per size (the fastest is kept)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a calibration)")
    p.add_argument("--quiet", action="store_true")


def run(args) -> dict:
    if args.gpu:
        return calibrate_gpu(args.out, repeats=max(args.repeats, 1), verbose=not args.quiet,
                             device_id=getattr(args, "device_id", None), quick=args.quick)
    return calibrate_cpu(args.out, repeats=args.repeats, verbose=not args.quiet,
                         sizes=TINY_SIZES if args.quick else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hetagent calibrate", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        result = run(args)
    except HetagentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = result.get("written_to") or args.out or DEFAULT_CPU_PATH
    print(f"wrote {out}")
    if "operators" in result:
        for kind, e in result["operators"].items():
            print(f"  {kind:22s} {e['seconds_per_unit']:.3e} s/{e['unit']} + {e['fixed_seconds']:.3e} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
