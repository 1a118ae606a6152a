"""Price every operator kind of hetagent/ir/opgraph.py on every device option.

`options_for(op, device, model)` lists the device options worth pricing; `cost(op, option, catalog)` prices one;
`cost_table(graph, catalog, devices)` prices them all (a string where an option is infeasible, saying why).

Where each kind may run (decided by kind):
- GPUs and accelerators: llm.*, expert.*, comm.allreduce, speech.frontend/encode/decode/synthesize, embed.encode,
  memory.vector_search, memory.rerank (all are tensor work).
- CPUs: all of the above for models that fit (tp = pp = 1), plus the CPU-only kinds: speech.phonemize (text
  rules), memory.load / memory.store (a database round trip), tool.lookup, tool.compute, compute.code.
- llm.remote runs on no local device: it is priced on every device with the network latency and $ per token
  of its provider (attrs `latency_ms`, `price_per_input_token`, `price_per_output_token`, else the defaults below).
- llm.kv_transfer is priced on the sending device (its NIC); placement adds edge transfers with
  roofline.transfer_time_s between the actual pair.
Power: TDP x utilization by bound (POWER_UTILIZATION). Throughput: batch / latency per replica (x pp for LLM
kinds: pp micro-batches in flight), or parallel executions / latency for single-request CPU kinds.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np

from hetagent.costmodel import calibration as cal
from hetagent.costmodel import roofline as rl
from hetagent.costmodel.types import DeviceOption, OpCost
from hetagent.errors import CatalogError, CostModelError, HetagentError

# Average draw as a fraction of TDP by what bounds the operator. Assumption, not fitted: Splitwise (Patel et al.,
# ISCA'24) measured prompt phases near TDP and token phases well below it on A100/H100.
POWER_UTILIZATION = {"compute": 0.9, "memory": 0.65, "network": 0.45, "latency": 0.35}
BATCH_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_PP = 4
LLM_KINDS = {"llm.prefill", "llm.decode", "llm.kv_transfer"}
MOE_KINDS = {"expert.gate", "expert.tp_prefill", "expert.merge", "comm.allreduce", "expert.tp_decode"}
TENSOR_KINDS = {"speech.frontend", "speech.encode", "speech.decode", "speech.synthesize", "embed.encode",
                "memory.vector_search", "memory.rerank"}
CPU_ONLY_KINDS = {"speech.phonemize", "memory.load", "memory.store", "tool.lookup", "tool.compute", "compute.code",
                  "compute.fused",  # CPU operators merged by the `fuse` pass: their summed cpu_ms
                  "llm.remote"}  # a hosted LLM is an HTTP call from a host CPU
BATCHED_KINDS = LLM_KINDS | MOE_KINDS | {"speech.encode", "speech.decode", "speech.synthesize", "embed.encode",
                                          "memory.rerank"}
ALL_KINDS = LLM_KINDS | MOE_KINDS | TENSOR_KINDS | CPU_ONLY_KINDS
# Documented defaults (not fitted) for what no model card or calibration gives:
REMOTE_DEFAULTS = {"latency_ms": 300.0, "ms_per_output_token": 20.0,
                   "price_per_input_token": 0.15e-6, "price_per_output_token": 0.6e-6}
DB_ROUND_TRIP_MS = 1.0            # memory.load / memory.store: one local key-value / SQL round trip
TOOL_CONCURRENCY = 64             # tool.lookup waits on the network: concurrent calls per CPU device
SPEECH_DEFAULT_PARAMS = {"speech.frontend": 0.0, "speech.synthesize": 20e6, "speech.phonemize": 0.0}
WHISPER_FRAMES_PER_30S = 1500     # encoder positions per 30 s window (Whisper pads every window to 30 s)
TTS_FRAMES_PER_SECOND = 86        # 22050 Hz / hop 256 (Piper / VITS)
FIXED_MS = {"cpu": 1.0, "gpu": 0.05}   # launch / dispatch floor of a non-LLM tensor operator
# Vendors whose serving engines keep a CPU tier of KV cache that a prefill reloads from host memory: vLLM's
# native offloading (--kv-offloading-backend native, OffloadingConnector) and LMCache on NVIDIA and on ROCm
# (docs.vllm.ai "KV cache offloading"; docs.vultr.com inference-cookbook/rocm kv-cache-offloading), SGLang's
# HiCache likewise. No such tier is documented for Intel Gaudi's vLLM fork, nor for llama.cpp on CPUs.
KV_OFFLOAD_VENDORS = ("nvidia", "amd")


# --------------------------------------------------------------------------------------------------- helpers
def _catalog(catalog):
    return catalog if isinstance(catalog, dict) else _load_catalog(catalog)


@lru_cache(maxsize=8)
def _load_catalog(name):
    from hetagent.costmodel.devices import load_catalog
    return load_catalog(name)


def _device(device_id, catalog):
    cat = _catalog(catalog)
    if device_id not in cat:
        from hetagent.errors import unknown_choice
        raise unknown_choice("device", device_id, cat)
    return cat[device_id]


@lru_cache(maxsize=64)
def _model(model_id):
    if model_id is None:
        return None
    from hetagent.costmodel.models import load_model
    return load_model(model_id)


def _model_or_none(model_id):
    try:
        return _model(model_id)
    except (CatalogError, HetagentError, FileNotFoundError):
        return None


def _is_cpu(device) -> bool:
    return getattr(device, "kind", "gpu") == "cpu"


def device_precisions(device, model=None) -> list[str]:
    """Precisions the device has a rate for and the model supports (model.precisions; none: fp16/bf16/fp32)."""
    have = [p for p, v in (device.peak_tflops or {}).items() if v]
    allowed = list(getattr(model, "precisions", None) or ("fp16", "bf16", "fp32"))
    out = [p for p in allowed if p in have]
    if _is_cpu(device) and not out and "fp32" in have:
        out = ["fp32"]
    return out


def _power(device, bound: str, n_devices: int = 1) -> float:
    return float(device.tdp_w or 0.0) * POWER_UTILIZATION[bound]


# --------------------------------------------------------------------------------------------------- options
def options_for(op, device, model=None) -> list[DeviceOption]:
    """Device options worth pricing for the operator on this device (empty when the kind cannot run there)."""
    kind = op.kind
    if kind not in ALL_KINDS:
        raise CostModelError(f"operator '{op.name}': unknown kind '{kind}'; choices: {', '.join(sorted(ALL_KINDS))}")
    cpu = _is_cpu(device)
    if kind in CPU_ONLY_KINDS:
        return [DeviceOption(device.id, precision="fp32")] if cpu else []
    if model is None and op.attrs.get("model"):
        model = _model_or_none(op.attrs["model"])
    precs = device_precisions(device, model)
    if not precs:
        return []
    if kind in TENSOR_KINDS:
        batches = [1] if kind not in BATCHED_KINDS else [b for b in BATCH_GRID if b <= 32]
        return [DeviceOption(device.id, batch=b, precision=p) for p in precs for b in batches]
    # LLM and MoE kinds: TP x PP x batch x precision, pruned by memory.
    if model is None:
        return []
    per_node = 1 if cpu else int(device.devices_per_node or 1)
    tps = [t for t in (1, 2, 4, 8, 16) if t <= per_node and t <= model.heads and model.heads % t == 0]
    pps = [1] if cpu else [p for p in range(1, MAX_PP + 1) if model.layers % p == 0 and p in (1, 2, 4)]
    out = []
    for p in precs:
        for t in tps:
            for q in pps:
                for b in BATCH_GRID:
                    o = DeviceOption(device.id, t, q, b, p)
                    if kind == "llm.kv_transfer" and (t, q) != (1, 1):
                        continue
                    try:
                        _llm_memory(op, o, model, device)
                    except CostModelError:
                        break            # larger batches do not fit either
                    out.append(o)
                    if kind == "llm.kv_transfer":
                        break
    return out


# --------------------------------------------------------------------------------------------------- pricing
def cost(op, option: DeviceOption, catalog="default") -> OpCost:
    """Price one execution of the operator on a device option; raises CostModelError when it cannot run.
    The result carries its calibration status and latency interval (costmodel/uncertainty.py); a derated device
    (efficiency_factor < 1) takes 1/factor as long on every kind but network transfers and hosted calls."""
    device = _device(option.device, catalog)
    return _annotate(_cost(op, option, device), op, device)


# kinds priced by the roofline's forward step (which applies the device's efficiency itself)
_NETWORK_KINDS = {"llm.kv_transfer", "llm.remote"}


def derate_cost(c: OpCost, factor: float, kind: str) -> OpCost:
    """A copy of a priced execution on a device running at `factor` x its predicted rate (costmodel/
    uncertainty.py's derating, applied to a cost table without pricing again); network kinds unchanged."""
    if kind in _NETWORK_KINDS or factor == 1.0:
        return c
    d = dict(c.detail)
    for k in ("ttft_ms", "tbt_ms"):
        if k in d:
            d[k] /= factor
    if isinstance(d.get("parts_ms"), dict):
        d["parts_ms"] = {k: v / factor for k, v in d["parts_ms"].items()}
    if isinstance(d.get("cached"), dict):          # the same prefill with its prefix cached (reload: a link)
        d["cached"] = dict(d["cached"], latency_ms=d["cached"]["latency_ms"] / factor)
    iv = c.latency_interval_ms
    return replace(c, latency_ms=c.latency_ms / factor, throughput_rps=c.throughput_rps * factor, detail=d,
                   latency_interval_ms=[iv[0] / factor, iv[1] / factor] if iv else None)


def _annotate(c: OpCost, op, device) -> OpCost:
    from hetagent.costmodel import uncertainty as unc
    derate = float(getattr(device, "efficiency_factor", 1.0) or 1.0)
    if derate != 1.0 and "efficiency" not in c.detail and op.kind not in _NETWORK_KINDS:
        c.latency_ms /= derate
        c.throughput_rps *= derate
        for k in ("ttft_ms", "tbt_ms"):
            if k in c.detail:
                c.detail[k] /= derate
        if isinstance(c.detail.get("cached"), dict):
            c.detail["cached"] = dict(c.detail["cached"], latency_ms=c.detail["cached"]["latency_ms"] / derate)
    if op.kind in _NETWORK_KINDS or (op.kind in TENSOR_KINDS and not _is_cpu(device)):
        st = "datasheet"                         # NIC figures, provider defaults, unfitted tensor formulas
    elif _is_cpu(device):
        st = "measured" if c.detail.get("calibrated") and unc.status(device) == "measured" else "datasheet"
    else:
        st = unc.status(device)
    c.calibration_status = st
    iv = unc.latency_interval_ms(c.latency_ms, st, device)
    c.latency_interval_ms = iv if iv[0] is not None else None
    return c


def _cost(op, option: DeviceOption, device) -> OpCost:
    kind = op.kind
    if kind not in ALL_KINDS:
        raise CostModelError(f"operator '{op.name}': unknown kind '{kind}'; choices: {', '.join(sorted(ALL_KINDS))}")
    if kind in CPU_ONLY_KINDS and not _is_cpu(device):
        raise CostModelError(f"operator '{op.name}' ({kind}) runs on CPUs only; '{device.id}' is a {device.kind}")
    if kind == "llm.remote":
        return _remote(op, option, device)
    if kind in LLM_KINDS or kind in MOE_KINDS:
        return _llm(op, option, device)
    if kind in CPU_ONLY_KINDS:
        return _cpu_only(op, option, device)
    return _tensor(op, option, device)


def _kvp(o, device) -> str:
    """The option's KV-cache precision (DeviceOption.kv_precision where the option has one), else the default."""
    return getattr(o, "kv_precision", None) or rl.default_kv_precision(device, o.precision)


def _llm_memory(op, o, model, device):
    a = op.attrs
    prompt = int(a.get("prompt_tokens", a.get("tokens", 1)) or 1)
    out = int(a.get("output_tokens", 0) or 0)
    phase = a.get("phase")
    is_prefill = op.kind in ("llm.prefill", "llm.kv_transfer") or phase == "prefill"
    in_flight = o.batch * (prompt if is_prefill else 1)
    mem = rl.memory_gb(model, device, o.precision, o.tp, o.pp, o.batch, in_flight, prompt + out, _kvp(o, device))
    rl.check_fits(model, device, o.label(), mem)
    return mem


def _llm(op, o, device) -> OpCost:
    a = op.attrs
    model = _model(a.get("model"))
    if o.tp > int(device.devices_per_node or 1) and not _is_cpu(device):
        raise CostModelError(f"tp {o.tp} exceeds {device.id}'s {device.devices_per_node} devices per node")
    if o.precision not in device_precisions(device, model):
        raise CostModelError(f"{model.id} on {device.id}: precision '{o.precision}' not available; choices: "
                             f"{', '.join(device_precisions(device, model)) or 'none'}")
    mem = _llm_memory(op, o, model, device)
    prompt = int(a.get("prompt_tokens", a.get("tokens", 1)) or 1)
    out = int(a.get("output_tokens", 1) or 1)
    if _is_cpu(device) and op.kind in LLM_KINDS:
        attrs = dict(a, kv_bytes=a.get("kv_bytes") or model.kv_bytes_per_token(_kvp(o, device)) * prompt)
        secs, info = _calibrated_seconds(op.kind, attrs, device, context=prompt + out / 2)
        if secs is not None:      # llama.cpp on the CPU serves one sequence at a time: batch x the time
            lat = secs * o.batch
            bound = "memory" if op.kind != "llm.prefill" else "compute"
            d = dict(info, memory={k: round(v, 3) for k, v in mem.items()})
            if op.kind == "llm.decode":
                d["tbt_ms"] = lat * 1e3 / out
            if op.kind == "llm.prefill":
                d["ttft_ms"] = lat * 1e3
            return OpCost(lat * 1e3, o.batch / lat, mem["total_gb"], _power(device, bound), bound, detail=d)
    _, psrc = rl.device_params(device)
    detail = {"calibration": psrc, "memory": {k: round(v, 3) for k, v in mem.items()}}
    kind = op.kind
    if kind != "llm.kv_transfer":
        eff, esrc = rl.device_efficiency(device, o.precision)
        detail.update(efficiency=round(eff, 4), efficiency_source=esrc)
    if kind == "llm.kv_transfer":
        nbytes = float(a.get("kv_bytes") or model.kv_bytes_per_token(_kvp(o, device)) * int(a.get("tokens", prompt)))
        s = rl.transfer_time_s(nbytes * o.batch, device, device, same_node=False)
        same = rl.transfer_time_s(nbytes * o.batch, device, device, same_node=True)
        detail.update(bytes=nbytes * o.batch, same_node_ms=same.total_s * 1e3, link="scaleout")
        return _opcost(s, o, device, mem["total_gb"], detail, o.batch)
    phase = "prefill" if kind in ("llm.prefill", "expert.tp_prefill") else a.get("phase", "decode")
    if kind in ("llm.prefill", "llm.decode", "expert.tp_prefill", "expert.tp_decode") or phase in ("prefill", "decode"):
        if phase == "prefill":
            cached = int(a.get("cached_tokens", 0) or 0) if kind == "llm.prefill" else 0
            cached = min(max(cached, 0), prompt - 1)
            whole = _prefill(model, device, o, prompt, cached)
            if cached:
                detail["cached_tokens"] = cached
            step, steps = whole, 1
            detail["ttft_ms"] = whole.total_s * 1e3
        else:
            whole, step = rl.decode(model, device, o.precision, o.tp, o.pp, o.batch, prompt, out,
                                    kv_precision=_kvp(o, device))
            steps = out
            detail["tbt_ms"] = step.total_s * 1e3
    if kind in MOE_KINDS:
        whole = _moe_part(kind, whole)
    detail["parts_ms"] = whole.parts_ms()
    detail.update(flops=whole.flops, bytes=whole.bytes, steps=steps)
    prefix = int(a.get("prefix_tokens", 0) or 0)
    if kind == "llm.prefill" and prefix > 0 and not a.get("cached_tokens"):
        detail["cached"] = _with_prefix(op, o, device, model, min(prefix, prompt - 1))
    return _opcost(whole, o, device, mem["total_gb"], detail, o.batch * o.pp,
                   "network" if kind == "comm.allreduce" else None)


def _prefill(model, device, o, prompt: int, cached: int = 0) -> rl.StepCost:
    """A prefill of `prompt` tokens of which `cached` are already in the KV cache."""
    whole = rl.prefill(model, device, o.precision, o.tp, o.pp, o.batch, prompt - cached, kv_precision=_kvp(o, device))
    if cached:
        whole.add(_prefix_attention(model, device, o, prompt - cached, cached), name="attention")
    return whole


def _prefix_attention(model, device, o, new: int, cached: int) -> rl.StepCost:
    """What a prefill of `new` tokens adds when `cached` earlier tokens are already in the KV cache: each new
    token attends to them too (4 x new x cached x head_dim x heads FLOPs per layer and sequence on this
    device's heads) and their KV is read once per layer, at the calibrated prefill-attention efficiencies
    (the same kernel: no launch cost of its own). The linear layers and the new tokens' own causal
    attention are rl.prefill's of `new` tokens."""
    p, _ = rl.device_params(device)
    pa = p["attention_prefill"]
    hd = getattr(model, "head_dim", None) or model.hidden_size // model.heads
    heads_d, kvh_d = model.heads / o.tp, math.ceil(model.kv_heads / o.tp)
    kv_b = rl.WEIGHT_BYTES[_kvp(o, device)]
    flops = 4.0 * o.batch * heads_d * hd * new * cached * model.layers
    kv_read = o.batch * cached * 2.0 * kvh_d * hd * kv_b * model.layers
    tc = flops / (rl._attn_peak(device, o.precision) * pa["eff_compute"])
    tm = kv_read / (device.memory_bandwidth_gbs * 1e9 * pa["eff_memory"])
    body = cal.smooth_max(tc, tm, pa["smooth_k"])
    return rl.StepCost(compute_s=body * tc / (tc + tm), memory_s=body * tm / (tc + tm), flops=flops, bytes=kv_read)


def _with_prefix(op, o, device, model, prefix: int) -> dict:
    """The same prefill when the engine still holds its `prefix` (kept across the tool call): its latency,
    the KV that keeping it holds per device of the replica, and, where the engine has a CPU tier
    (KV_OFFLOAD_VENDORS), the time to reload it from host memory: each device of the TP x PP group moves
    its share over its own host link (pcie_bandwidth_gbs) at once."""
    prompt = int(op.attrs.get("prompt_tokens", 1) or 1)
    lat_ms = max(_prefill(model, device, o, prompt, prefix).total_s * 1e3, 1e-6)      # as _opcost has it
    kv_gb = prefix * rl.kv_bytes_per_token_device(model, _kvp(o, device), o.tp) / o.pp / 1e9
    link = getattr(device, "pcie_bandwidth_gbs", None)
    reload_ms = (kv_gb / float(link) * 1e3 + rl.LINK_LATENCY_US * 1e-3) if (
        link and getattr(device, "vendor", None) in KV_OFFLOAD_VENDORS) else None
    return {"latency_ms": lat_ms, "cached_tokens": prefix, "kv_gb": kv_gb, "reload_ms": reload_ms}


def _moe_part(kind, whole: rl.StepCost) -> rl.StepCost:
    """The share of a MoE forward each decomposed operator stands for; together they sum to the whole."""
    keep = {"expert.gate": {"gate"}, "expert.merge": {"merge"}, "comm.allreduce": {"allreduce"}}.get(kind)
    if keep is None:        # expert.tp_prefill / expert.tp_decode: everything else
        keep = set(whole.parts) - {"gate", "merge", "allreduce"}
    part = rl.StepCost()
    for k in keep & set(whole.parts):
        part.add(whole.parts[k], name=k)
    return part


def _opcost(s: rl.StepCost, o, device, mem_gb, detail, concurrent, bound=None) -> OpCost:
    lat_ms = max(s.total_s * 1e3, 1e-6)
    bound = bound or (s.bound if s.total_s > 0 else "latency")
    return OpCost(latency_ms=lat_ms, throughput_rps=concurrent * 1e3 / lat_ms, memory_gb=mem_gb,
                  power_w=_power(device, bound), bound=bound, detail=detail)


def _remote(op, o, device) -> OpCost:
    """A hosted API call: the provider's latency to the first token plus its decode speed; the price
    per token the workflow gives (llm.remote attributes), else the documented defaults. The calling
    host only waits on the network, so it sustains TOOL_CONCURRENCY calls at once."""
    a = op.attrs
    pin, pout = int(a.get("prompt_tokens", 0) or 0), int(a.get("output_tokens", 0) or 0)
    ms_per_token = (1e3 / float(a["tokens_per_second"]) if a.get("tokens_per_second")
                    else REMOTE_DEFAULTS["ms_per_output_token"])
    lat = float(a.get("latency_ms", REMOTE_DEFAULTS["latency_ms"])) + pout * ms_per_token
    p_in = (float(a["input_usd_per_million"]) / 1e6 if "input_usd_per_million" in a
            else REMOTE_DEFAULTS["price_per_input_token"])
    p_out = (float(a["output_usd_per_million"]) / 1e6 if "output_usd_per_million" in a
             else REMOTE_DEFAULTS["price_per_output_token"])
    used = [k for k, given in (("latency_ms", "latency_ms" in a), ("ms_per_output_token", "tokens_per_second" in a),
                               ("price_per_input_token", "input_usd_per_million" in a),
                               ("price_per_output_token", "output_usd_per_million" in a)) if not given]
    return OpCost(latency_ms=lat, throughput_rps=TOOL_CONCURRENCY * 1e3 / lat, memory_gb=0.0,
                  power_w=_power(device, "latency") * 0.05, bound="network", price_per_execution=pin * p_in + pout * p_out,
                  detail={"provider": a.get("provider"), "defaults_used": used})


# ---------------------------------------------------------------------------------------- CPU calibration
def _model_matches(entry_model, op_model) -> bool:
    """cpu_calibration names the artefact it ran ('whisper-tiny.en', 'piper-en_US-joe-medium'); our ids are shorter.
    Match when every dash-separated word of our id occurs in the entry's name (case and _/- insensitive)."""
    if not entry_model or not op_model:
        return not op_model
    e = entry_model.lower().replace("_", "-")
    return all(w in e for w in op_model.lower().replace("_", "-").split("-"))


# Model forms of the CPU calibration (docs/calibration.md): seconds = fixed + per_x x x, x a regressor of the
# operator's units chosen by what the operator does, refitted on the entry's samples (least squares, through the
# origin when the intercept comes out negative, as hetagent.backends.calibrate fits):
# - speech.frontend / speech.encode: Whisper pads every window to 30 s, so x = ceil(audio / 30) windows;
# - llm.prefill: compute-bound, x = FLOPs of the prompt: 2 x non-embedding params x n plus the causal attention
#   4 L H d n^2 / 2 (model card; without a card, x = n);
# - llm.decode: samples are [context, seconds per token]; seconds = output_tokens x (fixed + per x context);
# - memory.vector_search and speech.frontend stream data whose working set outgrows the caches over the
#   calibrated range (index floats; audio samples and mel frames), so time grows faster than linearly:
#   seconds = a x units^b, fitted in log-log space (valid over the calibrated sizes; b is stored);
# - every other kind: x = units (the line calibrate stored).
WHISPER_WINDOW_S = 30.0
POWER_LAW_KINDS = ("memory.vector_search", "speech.frontend")


def cpu_regressor(kind, model=None):
    """(x(units) -> regressor, name) for the CPU calibration line of this operator kind."""
    if kind in POWER_LAW_KINDS:
        return float, "power"
    if kind == "speech.encode":
        return (lambda n: math.ceil(max(float(n), 1e-9) / WHISPER_WINDOW_S)), "whisper_window"
    if kind == "llm.prefill" and model is not None:
        h, heads = model.hidden_size, model.heads
        hd = getattr(model, "head_dim", None) or h // heads
        dense = max(float(model.params_active or model.params_total) - model.vocab_size * h, 0.0)
        att = 2.0 * model.layers * heads * hd          # 4 L H d n^2 / 2 (QK^T and PV, causal half)
        return (lambda n: 2.0 * dense * n + att * n * n), "prefill_flops"
    return (lambda n: float(n)), "unit"


def fit_cpu_line(xs, ys) -> tuple[float, float]:
    """(fixed, per_x): least squares; a negative intercept is noise, refitted through the origin."""
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    n = len(xs)
    if n == 0:
        return 0.0, 0.0
    sxx = sum(x * x for x in xs)
    mx, my = sum(xs) / n, sum(ys) / n
    vx = sum((x - mx) ** 2 for x in xs)
    if n >= 2 and vx > 0:
        per = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / vx
        fixed = my - per * mx
        if fixed >= 0:
            return fixed, per
    if sxx > 0:
        return 0.0, sum(x * y for x, y in zip(xs, ys)) / sxx
    return my, 0.0


def cpu_line(kind, samples, model=None) -> dict:
    """The fitted line of one CPU operator on `samples` ([units, seconds] pairs; decode: [context, s/token])."""
    fx, name = cpu_regressor(kind, model)
    if name == "power":
        pts = [(float(u), float(t)) for u, t in samples if u > 0 and t > 0]
        if len(pts) >= 2 and len({u for u, _ in pts}) >= 2:
            b, log_a = np.polyfit(np.log([u for u, _ in pts]), np.log([t for _, t in pts]), 1)
            return {"fixed": 0.0, "per_x": float(np.exp(log_a)), "exponent": float(b), "regressor": "power",
                    "fx": lambda n, b=float(b): float(n) ** b}
        fx, name = float, "unit"
    fixed, per = fit_cpu_line([fx(u) for u, _ in samples], [s for _, s in samples])
    return {"fixed": fixed, "per_x": per, "regressor": name, "fx": fx}


def cpu_line_seconds(kind, line, units, context=None) -> float:
    """Seconds on the calibration host for `units` of work (decode: output tokens at `context`)."""
    if kind == "llm.decode":
        ctx = float(context or 0.0)
        return (line["fixed"] + line["per_x"] * ctx) * float(units or 0)
    return line["fixed"] + line["per_x"] * line["fx"](float(units or 0))


def _entry_line(kind, e, model):
    """The entry's line in this kind's form: refitted on its samples, else the stored figures."""
    samples = e.get("samples") or []
    if kind == "llm.decode" and "seconds_per_unit_at_zero_context" in e:
        return {"fixed": e["seconds_per_unit_at_zero_context"], "per_x": e.get("seconds_per_unit_per_context_token", 0.0),
                "regressor": "context", "fx": float}
    if samples and cpu_regressor(kind, model)[1] != "unit":
        return cpu_line(kind, samples, model)
    return {"fixed": float(e.get("fixed_seconds", 0.0) or 0.0), "per_x": float(e["seconds_per_unit"]),
            "regressor": "unit", "fx": float}


def _same_host(device, host: dict) -> bool:
    """The device is the machine the calibration ran on: same core count, clock within 2%, and the calibration's
    CPU name (e.g. 'AMD EPYC') in the device's name. Its measurements then apply unscaled: two bandwidth figures
    measured on one shared host at different times differ by far more than the operators do."""
    try:
        cores_ok = int(device.cores or 0) == int(host.get("cores") or -1)
        clk = float(device.all_core_clock_ghz or device.base_clock_ghz or 0)
        clock_ok = clk > 0 and abs(clk - float(host.get("clock_ghz") or 0)) <= 0.02 * clk
        words = str(host.get("cpu") or "").lower().split()
        name_ok = bool(words) and all(w in str(device.name).lower() for w in words)
        return cores_ok and clock_ok and name_ok
    except (TypeError, ValueError):
        return False


def _calibrated_seconds(kind, attrs, device, context=None):
    """Seconds from cpu_calibration.json for this kind and model (the entry's line in the form cpu_regressor names),
    scaled to the device: not at all on the calibration host itself (_same_host); compute-bound entries by host
    peak GFLOP/s over the device's fp32 peak, memory-bound ones by the host's measured bandwidth over the device's
    bandwidth x CPU_DEFAULTS eff_memory. None when not measured.
    Compute-bound entries scale per core: one execution keeps the host's thread count."""
    c = cal.load_cpu_calibration()
    e = ((c or {}).get("operators") or {}).get(kind)
    if not e or not _model_matches(e.get("model"), attrs.get("model")):
        return None, None
    unit = e.get("unit", "")
    n = {"audio_second": attrs.get("audio_seconds"), "token": attrs.get("tokens"), "text": attrs.get("texts"),
         "output_token": attrs.get("output_tokens"), "prompt_token": attrs.get("prompt_tokens"),
         "text_token": attrs.get("text_tokens"), "kv_byte": attrs.get("kv_bytes"), "byte": attrs.get("bytes"),
         "stored_float": float(attrs.get("index_size", 0) or 0) * float(attrs.get("dims", 0) or 0)}.get(unit, 1)
    model = _model_or_none(attrs.get("model")) if kind == "llm.prefill" else None
    line = _entry_line(kind, e, model)
    if kind == "llm.decode" and context is None:
        secs = float(e["seconds_per_unit"]) * float(n or 0)
    else:
        secs = cpu_line_seconds(kind, line, n, context)
    host = c.get("host") or {}
    scale, how = 1.0, "unscaled (host speed unknown)"
    if _is_cpu(device) and _same_host(device, host):
        how = "unscaled: the device is the calibration host"
    elif e.get("bound") == "memory" and host.get("mem_bandwidth_gbs") and device.memory_bandwidth_gbs:
        scale = host["mem_bandwidth_gbs"] / (device.memory_bandwidth_gbs * rl.CPU_DEFAULTS["gemm"]["eff_memory"])
        how = "scaled by measured host bandwidth / device bandwidth x eff_memory"
    elif host.get("peak_gflops_estimate") and (device.peak_tflops or {}).get("fp32"):
        # per core: one execution uses the host's thread count, not a whole many-core socket
        hc, dc = float(host.get("cores") or 1), float(device.cores or host.get("cores") or 1)
        threads = min(hc, dc)
        scale = (host["peak_gflops_estimate"] / hc) / (device.peak_tflops["fp32"] * 1e3 / dc) * hc / threads
        how = "scaled by host / device fp32 peak per core (same thread count)"
    return secs * scale, {"calibrated": True, "calibration_model": e.get("model"), "unit": unit, "units": n,
                          "form": line["regressor"], "scaling": how, "scale": round(scale, 4)}


def _cpu_only(op, o, device) -> OpCost:
    a = op.attrs
    kind = op.kind
    secs, info = _calibrated_seconds(kind, a, device)
    detail = info or {"calibrated": False}
    par = int(device.cores or 1)
    if kind == "tool.lookup":
        nbytes = float(a.get("request_bytes", 0) or 0) + float(a.get("response_bytes", 0) or 0)
        net = nbytes / (rl._nic_gbs(device) * 1e9)
        lat = float(a.get("latency_ms", 0) or 0) * 1e-3 + net + (secs or 0.0)
        detail.update(cv=a.get("latency_cv"), network_s=net)
        return OpCost(lat * 1e3, TOOL_CONCURRENCY / max(lat, 1e-9), 0.01, _power(device, "network") / par,
                      "network", detail=detail)
    if kind in ("tool.compute", "compute.code", "compute.fused"):
        lat = secs if secs is not None else float(a.get("cpu_ms", 0) or 0) * 1e-3
        return OpCost(max(lat * 1e3, 1e-6), par / max(lat, 1e-9), 0.1, _power(device, "compute") / par,
                      "compute", detail=detail)
    if kind in ("memory.load", "memory.store"):
        nbytes = float(a.get("bytes", 0) or 0)
        lat = secs if secs is not None else DB_ROUND_TRIP_MS * 1e-3 + nbytes / (device.memory_bandwidth_gbs * 1e9 * 0.5)
        return OpCost(lat * 1e3, par / lat, nbytes / 1e9, _power(device, "latency") / par, "latency", detail=detail)
    # speech.phonemize: rule-based text processing, ~0.05 ms per token single-threaded (espeak-ng order of size)
    lat = secs if secs is not None else 1e-3 + 5e-5 * float(a.get("text_tokens", 0) or 0)
    return OpCost(lat * 1e3, par / lat, 0.05, _power(device, "latency") / par, "latency", detail=detail)


# --------------------------------------------------------------------------------------- tensor operators
def _work(kind, a, model):
    """(FLOPs, bytes of weights, units of work) for one execution of a non-LLM tensor operator (batch 1)."""
    params = float(getattr(model, "params_total", 0) or SPEECH_DEFAULT_PARAMS.get(kind, 0.0) or 0.0)
    audio = float(a.get("audio_seconds", 0) or 0)
    if kind == "speech.frontend":     # STFT + mel filterbank: ~2e7 FLOP per audio second (100 frames x 400-pt FFT + mel)
        return 2e7 * audio, 0.0, audio
    if kind == "speech.encode":       # encoder ~ half the parameters, every 30 s window padded to 1500 positions
        frames = WHISPER_FRAMES_PER_30S * max(1, math.ceil(audio / 30.0))
        return 2.0 * params / 2 * frames, params / 2, frames
    if kind == "speech.decode":       # one decoder step per output token, weights re-read each step
        n = int(a.get("output_tokens", 1) or 1)
        return 2.0 * params / 2 * n, params / 2 * n, n
    if kind == "speech.synthesize":
        frames = TTS_FRAMES_PER_SECOND * audio
        return 2.0 * params * frames, params, frames
    if kind in ("embed.encode", "memory.rerank"):
        n = float(a.get("tokens", 0) or 0) or 32.0 * float(a.get("top_k", a.get("texts", 1)) or 1)
        return 2.0 * params * n, params, n
    if kind == "memory.vector_search":   # exact (flat) search: one dot product per indexed vector, fp32 index
        n, d = float(a.get("index_size", 0) or 0), float(a.get("dims", 0) or 0)
        return 2.0 * n * d, 4.0 * n * d, n
    raise CostModelError(f"no cost formula for kind '{kind}'")


def _tensor(op, o, device) -> OpCost:
    a = op.attrs
    kind = op.kind
    cpu = _is_cpu(device)
    model = _model_or_none(a.get("model")) if a.get("model") else None
    detail = {"model_card": bool(model)}
    if cpu:
        secs, info = _calibrated_seconds(kind, a, device)
        if secs is not None:
            detail.update(info)
            lat = max(secs, 1e-9) * o.batch          # a CPU gains little from batching: batch x the time
                                                     # (no work, e.g. no audio: a nanosecond, not 0)
            return OpCost(lat * 1e3, o.batch / lat, 0.5, _power(device, "compute"), "compute", detail=detail)
    flops, wbytes, units = _work(kind, a, model)
    p, src = rl.device_params(device)
    prec = o.precision
    peak = rl.precision_peak_flops(device, prec)
    wb = rl.WEIGHT_BYTES.get(prec, 2.0)
    bw = device.memory_bandwidth_gbs * 1e9
    if kind == "memory.vector_search":
        wb = 2.0   # bytes counted as fp32 already
    tc = o.batch * flops / (peak * p["gemm"]["eff_compute"])
    tm = wbytes * wb / 2.0 / (bw * p["gemm"]["eff_memory"])
    fixed = FIXED_MS["cpu" if cpu else "gpu"] * 1e-3
    body = rl.cal.smooth_max(tc, tm, p["gemm"]["smooth_k"]) if (tc or tm) else 0.0
    s = rl.StepCost(compute_s=body * tc / (tc + tm) if body else 0.0, memory_s=body * tm / (tc + tm) if body else 0.0,
                    latency_s=fixed, flops=o.batch * flops, bytes=wbytes)
    detail.update(calibrated=False, calibration=src, flops=s.flops, units=units)
    mem = (wbytes * wb / 2.0 if kind != "memory.vector_search" else wbytes) / 1e9 + 0.1
    if device.memory_gb and mem > device.memory_gb * rl.MEMORY_UTILIZATION:
        raise CostModelError(f"{kind} '{op.name}' does not fit on {device.id} ({o.label()}): needs {mem:.1f} GB, "
                             f"available {device.memory_gb * rl.MEMORY_UTILIZATION:.1f} GB")
    return _opcost(s, o, device, mem, detail, o.batch)


# ------------------------------------------------------------------------------------------------- table
def cost_table(graph, catalog="default", devices=None, precisions=None) -> dict:
    """{operator name: {DeviceOption: OpCost | reason it is infeasible}} over the catalog (or `devices` ids).

    `precisions` limits the options of model-bearing operators (LLM phases, experts) to those
    precisions, e.g. ("fp16", "bf16") to plan without quantizing. Operators with the same kind and
    attributes (loop copies, repeated sub-agents) are priced once and share their row."""
    cat = _catalog(catalog)
    ids = list(devices) if devices else sorted(cat)
    for d in ids:
        if d not in cat:
            from hetagent.errors import unknown_choice
            raise unknown_choice("device", d, cat)
    allowed = set(precisions) if precisions else None
    table, priced = {}, {}
    for op in graph.operators:
        signature = (op.kind, tuple(sorted((k, str(v)) for k, v in op.attrs.items())))
        if signature not in priced:
            priced[signature] = _row(op, ids, cat, allowed)
        table[op.name] = priced[signature]
    return table


def _row(op, ids, cat, allowed) -> dict:
    model = _model_or_none(op.attrs.get("model")) if op.attrs.get("model") else None
    row = {}
    for d in ids:
        dev = cat[d]
        opts = options_for(op, dev, model)
        if allowed is not None and model is not None and model.family == "llm":
            opts = [o for o in opts if o.precision in allowed]
            if not opts:
                row[DeviceOption(d)] = (f"'{d}' offers none of the allowed precisions "
                                        f"{', '.join(sorted(allowed))} for {model.id}")
                continue
        if not opts:
            row[DeviceOption(d)] = _why_not(op, dev, model)
            continue
        for o in opts:
            try:
                row[o] = cost(op, o, cat)
            except HetagentError as e:
                row[o] = str(e)
    return row


def _why_not(op, device, model) -> str:
    if op.kind in CPU_ONLY_KINDS:
        return f"{op.kind} runs on CPUs only; '{device.id}' is a {device.kind}"
    if op.attrs.get("model") and model is None:
        return f"model '{op.attrs['model']}' is not in the model catalog"
    if not device_precisions(device, model):
        return f"'{device.id}' supports none of the precisions of {getattr(model, 'id', 'the model')}"
    if model is not None:
        try:
            _llm_memory(op, DeviceOption(device.id, min(8, int(device.devices_per_node or 1)), 1, 1,
                                         device_precisions(device, model)[0]), model, device)
        except CostModelError as e:
            return str(e)
    return f"{op.kind} has no option on '{device.id}'"
