"""Engine settings of an LLM pool on an accelerator, in the engine's own argument names.

vLLM settings are written in Ray Serve LLM's configuration form (`ray.serve.llm.LLMConfig`:
`model_loading_config`, `engine_kwargs`, `deployment_config`); a disaggregated prefill pool and decode
pool of one model carry vLLM's `kv_transfer_config` (NixlConnector, `kv_role: kv_both` on both sides),
which is what `build_pd_openai_app({prefill_config, decode_config})` takes. SGLang settings are its
ServerArgs (`model_path`, `tp_size`, ...; `disaggregation_mode`, `disaggregation_transfer_backend`).
Sources: docs/deploy.md.

Every figure comes from the plan: `tp`, `pp`, `max_batch`, `precision`, `kv_precision` of the pool;
the context is the longest prompt + output of the model's operators in the plan's workflows (at the
largest quantile of a distribution); the memory share from the pool's `memory_gb` against the device.

What a target cannot run is a *gap* (`Gap(pool, why)`): deploy refuses it, or writes it with the gap
in a comment when asked to (`--allow-gaps`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ENGINES = ("vllm", "sglang")


@dataclass(frozen=True)
class Gap:
    pool: str
    why: str

    def line(self) -> str:
        return f"pool '{self.pool}': {self.why}"


@dataclass(frozen=True)
class Accel:
    """How a device kind is requested: its family, Kubernetes resource name, Ray resources."""
    family: str            # nvidia | amd | gaudi | intel-gpu | cpu | unknown
    k8s: str | None        # the device plugin's resource name
    ray_gpu: bool          # Ray counts it as GPU (num_gpus); Gaudi is Ray's HPU resource


def accel_of(device) -> Accel:
    """device: a catalog Device (or None when the plan's device is not in the catalog)."""
    if device is None:
        return Accel("unknown", None, False)
    if device.kind == "cpu":
        return Accel("cpu", None, False)
    arch = (device.architecture or "").lower()
    if device.vendor == "nvidia":
        return Accel("nvidia", "nvidia.com/gpu", True)
    if device.vendor == "amd":
        return Accel("amd", "amd.com/gpu", True)
    if device.vendor == "intel" and arch.startswith("gaudi"):
        return Accel("gaudi", "habana.ai/gaudi", False)
    if device.vendor == "intel":
        # Arc Pro B-series (Battlemage) runs the xe kernel driver: the Intel GPU plugin's xe resource
        return Accel("intel-gpu", "gpu.intel.com/xe", True)
    return Accel("unknown", None, False)


# family -> why an engine does not run there (None: it does)
UNSUPPORTED = {
    "vllm": {"intel-gpu": "vLLM's Intel GPU (XPU) backend is not in Ray Serve LLM's supported hardware; "
                          "run the pool on an OpenAI-compatible server and bind it with --endpoint",
             "unknown": "the device is not in the catalog: no engine build is known for it"},
    "sglang": {"gaudi": "SGLang has no Intel Gaudi backend",
               "intel-gpu": "SGLang has no supported Intel Arc backend",
               "unknown": "the device is not in the catalog: no engine build is known for it"},
}
NOTES = {("vllm", "gaudi"): "vLLM on Gaudi needs the vLLM Hardware Plugin for Intel Gaudi (vllm-gaudi) "
                            "in the image"}


def hf_id(card) -> str:
    """The model's Hugging Face id from its card's `sources.card` (huggingface.co/<org>/<name>)."""
    url = (card.sources or {}).get("card") or ""
    m = re.search(r"huggingface\.co/([^/\s]+/[^/\s?#]+)", url)
    return m.group(1) if m else card.id


def _top(dist) -> float | None:
    """The largest value of a flat quantile array [u0, q0, u1, q1, ...]."""
    if isinstance(dist, (list, tuple)) and len(dist) >= 2:
        return float(max(dist[1::2]))
    return None


def longest_context(graphs, model: str) -> int:
    """Prompt + output tokens of the model's longest call in the plan's workflows: every operator of
    the model that carries its call's tokens (llm.prefill/decode; a MoE card's expert.* stages), each
    at its largest quantile."""
    best = 0
    for g in graphs:
        for op in g.operators.values():
            a = op.attrs
            if a.get("model") != model or op.kind == "llm.kv_transfer":
                continue
            prompt = _top(a.get("prompt_dist")) or float(a.get("prompt_tokens") or 0)
            out = _top(a.get("output_dist")) or float(a.get("output_tokens") or 0)
            best = max(best, int(round(prompt + out)))
    return best


def _dtype(precision: str | None, engine: str) -> dict:
    if precision in ("bf16", "fp16", "fp32"):
        return {"dtype": {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]}
    if precision == "fp8":
        return {"quantization": "fp8"}
    return {}


def _kv_dtype(kv: str | None, engine: str) -> str | None:
    """The engine's kv_cache_dtype for the plan's KV precision; None when it has none."""
    if kv in (None, "bf16", "fp16", "fp32"):
        return "auto"
    if kv == "fp8":
        return "fp8" if engine == "vllm" else "fp8_e4m3"
    return None


def settings(pool: dict, *, engine: str, card, context: int, mem_fraction: float, accel: Accel,
             peer: dict | None, peer_accel: Accel | None, replicas: int) -> tuple[dict, list[Gap], list[str]]:
    """(user_config entry, gaps, notes) of one LLM pool on an accelerator. peer: the other side of a
    disaggregated prefill/decode pair (None otherwise)."""
    pid = pool["id"]
    gaps: list[Gap] = []
    notes: list[str] = []
    why = UNSUPPORTED[engine].get(accel.family)
    if why:
        gaps.append(Gap(pid, f"{engine} on {pool['device']}: {why}"))
    if (engine, accel.family) in NOTES:
        notes.append(f"pool '{pid}': {NOTES[(engine, accel.family)]}")
    length = context
    if card.max_context and context > card.max_context:
        notes.append(f"pool '{pid}': the workflow's longest context {context} exceeds {card.id}'s "
                     f"{card.max_context} tokens; max_model_len is the model's (longer prompts are cut)")
        length = card.max_context
    kv = _kv_dtype(pool.get("kv_precision"), engine)
    if kv is None:
        gaps.append(Gap(pid, f"{engine} has no {pool.get('kv_precision')} KV cache"))
        kv = "auto"
    if pool.get("precision") in ("int8", "int4", "fp4"):
        notes.append(f"pool '{pid}': {pool['precision']} weights need a pre-quantized checkpoint; "
                     f"set the model to it")
    pd = pool.get("engine") in ("prefill", "decode") and peer is not None
    if pd and peer_accel is not None and peer_accel.family != accel.family:
        gaps.append(Gap(pid, f"prefill and decode on different vendors ({pool['device']} and "
                             f"{peer['device']}): no engine transfers KV across vendors"))
    mem = round(min(0.95, max(0.05, mem_fraction)), 3)
    if engine == "vllm":
        kw = {"tensor_parallel_size": int(pool["tp"]), "pipeline_parallel_size": int(pool["pp"]),
              "max_num_seqs": int(pool["max_batch"]), "max_model_len": int(length),
              "gpu_memory_utilization": mem, "kv_cache_dtype": kv,
              **_dtype(pool.get("precision"), engine)}
        if pd:
            kw["kv_transfer_config"] = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
        cfg = {"model_loading_config": {"model_id": card.id, "model_source": hf_id(card)},
               "engine_kwargs": kw,
               "deployment_config": {"num_replicas": int(replicas),
                                     "max_ongoing_requests": int(pool["max_batch"])}}
        out = {"engine": "vllm", "engine_id": pool.get("engine_id"), "llm_config": cfg}
        if pd:
            out["pd"] = {"role": pool["engine"], "peer": peer["id"],
                         "builder": "ray.serve.llm:build_pd_openai_app"}
        return out, gaps, notes
    args = {"model_path": hf_id(card), "tp_size": int(pool["tp"]), "pp_size": int(pool["pp"]),
            "max_running_requests": int(pool["max_batch"]), "context_length": int(length),
            "mem_fraction_static": mem, "kv_cache_dtype": kv, **_dtype(pool.get("precision"), engine)}
    if pd:
        args["disaggregation_mode"] = pool["engine"]
        args["disaggregation_transfer_backend"] = "nixl"
    out = {"engine": "sglang", "engine_id": pool.get("engine_id"), "server_args": args}
    if pd:
        out["pd"] = {"role": pool["engine"], "peer": peer["id"]}
    return out, gaps, notes
