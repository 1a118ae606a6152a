"""LLM prefill and decode by roofline, with efficiencies fitted on measurements (calibration.py).

One forward step over M new tokens (M = batch x prompt for prefill, M = batch for a decode step) costs, per layer
and per device of a TP group: the four linear GEMMs (smooth roofline, fitted), the elementwise kernels, the
attention kernel (prefill: causal FLOPs, the quadratic term; decode: paged KV read), the MoE experts (weights of
the distinct experts the batch touches), and two ring all-reduces over the scale-up link when tp > 1. Layers are
split over pp stages with one activation hand-off per stage boundary; the LM head runs once per sequence.
docs/costmodel.md has every formula and where each parameter comes from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hetagent.costmodel import calibration as cal
from hetagent.errors import CostModelError

# Fraction of device memory a serving engine may use (vLLM's default gpu_memory_utilization).
MEMORY_UTILIZATION = 0.90
# Defaults for devices with no measurement of their own (CPUs): not fitted, marked uncalibrated in detail.
CPU_DEFAULTS = {"gemm": {"eff_compute": 0.45, "eff_memory": 0.6, "smooth_k": 2.0, "overhead_us": 20.0},
                "elementwise": {"eff_memory": 0.5, "overhead_us": 5.0},
                "attention_prefill": {"eff_compute": 0.3, "eff_memory": 0.5, "smooth_k": 2.0, "overhead_us": 10.0},
                "attention_decode": {"eff_memory": 0.5, "overhead_us": 10.0}}
CPU_DEFAULTS["gemm_fp8"] = CPU_DEFAULTS["gemm"]
# Prefill and decode attention are fitted on AIConfigurator's vLLM attention tables (calibration.json
# attention_prefill / attention_decode; docs/costmodel.md). Attention math runs at the 16-bit tensor rate whatever
# the KV precision (an fp8 KV cache halves the bytes, not the FLOP time).
# KV-cache formats an engine can store (an int8/int4 weight format keeps a 16-bit KV cache by default).
KV_FORMATS = ("fp32", "fp16", "bf16", "fp8", "fp4")
LINK_LATENCY_US = 10.0          # one RDMA/NVLink message (KV transfer, PP hand-off) beyond bandwidth
DEFAULT_NIC_GBPS = 100.0        # devices whose figure is unknown (PCIe cards): 100 Gb/s Ethernet assumed
ACT_BYTES = {"fp32": 4.0, "tf32": 4.0}   # activation bytes per element; 2 for every other precision
# Serving-engine behaviour (vLLM / TensorRT-LLM), assumed, not fitted: a one-shot custom all-reduce over NVLink for
# messages up to 8 MiB (vLLM custom_all_reduce max_size), and a per-step CPU cost (scheduling, sampling) that
# CUDA graphs do not hide; vLLM's v0.6 profiling of Llama 3 8B on H100 found CPU work a large share of a step.
ONE_SHOT_ALLREDUCE_MAX_BYTES = 8 * 2 ** 20
ENGINE_STEP_OVERHEAD_MS = 0.5
WEIGHT_BYTES = {"fp32": 4.0, "tf32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5}


@dataclass
class StepCost:
    """One piece of work: seconds by resource, and what it moved and computed."""
    compute_s: float = 0.0     # time of parts bound by compute
    memory_s: float = 0.0      # time of parts bound by memory bandwidth
    network_s: float = 0.0     # all-reduce, PP hand-offs, transfers
    latency_s: float = 0.0     # fixed per-kernel and per-message overheads
    flops: float = 0.0
    bytes: float = 0.0
    parts: dict = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.compute_s + self.memory_s + self.network_s + self.latency_s

    @property
    def bound(self) -> str:
        d = {"compute": self.compute_s, "memory": self.memory_s, "network": self.network_s, "latency": self.latency_s}
        return max(d, key=d.get)

    _FIELDS = ("compute_s", "memory_s", "network_s", "latency_s", "flops", "bytes")

    def add(self, other: "StepCost", times: float = 1.0, name: str | None = None) -> "StepCost":
        """Add `times` x other; its time is booked under part `name`, or under other's own parts."""
        for k in self._FIELDS:
            setattr(self, k, getattr(self, k) + times * getattr(other, k))
        if name:
            bare = StepCost(**{k: getattr(other, k) for k in self._FIELDS})
            self.parts[name] = self.parts.get(name, StepCost()).add(bare, times)
        else:
            for k, v in other.parts.items():
                self.parts[k] = self.parts.get(k, StepCost()).add(v, times)
        return self

    def scaled(self, times: float) -> "StepCost":
        return StepCost().add(self, times)

    def parts_ms(self) -> dict:
        return {k: round(v.total_s * 1e3, 4) for k, v in self.parts.items()}


# ------------------------------------------------------------------------------------------------- device
def precision_peak_flops(device, precision: str) -> float:
    """FLOP/s of the device at a precision (fp32 falls back to tf32 tensor rate only if fp32 absent)."""
    peaks = device.peak_tflops or {}
    v = peaks.get(precision)
    if not v:
        raise CostModelError(f"device '{device.id}' has no {precision} rate; precisions: "
                             f"{', '.join(k for k, x in peaks.items() if x) or 'none'}")
    return float(v) * 1e12


def device_params(device) -> tuple[dict, str]:
    """Calibrated parameters for the device: its own fit, its family's, the generic GPU fit, or the CPU defaults."""
    if getattr(device, "kind", "gpu") == "cpu":
        return CPU_DEFAULTS, "cpu-default (uncalibrated)"
    return cal.gpu_params(device.id, architecture=getattr(device, "architecture", None))


def device_efficiency(device, precision: str | None = None) -> tuple[float, str]:
    """(factor, source) by which the device's LLM steps run relative to the operator model: the end-to-end (MLPerf)
    efficiency of the device or its vendor's stack (1 for CPUs; calibration.end_to_end_efficiency), times the
    device's efficiency_factor (1 unless a derated copy: costmodel.uncertainty.derated)."""
    derate = float(getattr(device, "efficiency_factor", 1.0) or 1.0)
    if getattr(device, "kind", "gpu") == "cpu":
        return derate, "none"
    f, src = cal.end_to_end_efficiency(device.id, getattr(device, "vendor", None), precision=precision)
    return f * derate, src


def default_kv_precision(device, precision: str) -> str:
    """The KV-cache precision when none is given: the weights' precision if the device has a rate for it and it is a
    KV format (fp32, fp16, bf16, fp8, fp4), else bf16 (fp16 where the device has no bf16 rate)."""
    peaks = getattr(device, "peak_tflops", None) or {}
    if precision in KV_FORMATS and peaks.get(precision):
        return precision
    if peaks.get("bf16"):
        return "bf16"
    if peaks.get("fp16"):
        return "fp16"
    return precision if precision in KV_FORMATS else "bf16"


def kv_precisions(device) -> list[str]:
    """KV-cache formats the device has a rate for (the ones an engine can compute attention from)."""
    peaks = getattr(device, "peak_tflops", None) or {}
    return [p for p in KV_FORMATS if peaks.get(p)]


def _kv(device, precision, kv_precision):
    kvp = kv_precision or default_kv_precision(device, precision)
    if kvp not in WEIGHT_BYTES:
        raise CostModelError(f"unknown KV-cache precision '{kvp}'; choices: {', '.join(KV_FORMATS)}")
    return kvp


def _attn_peak(device, precision) -> float:
    """FLOP/s attention math runs at: the 16-bit tensor rate (fp16, else bf16), else the weights' precision."""
    peaks = getattr(device, "peak_tflops", None) or {}
    for p in ("fp16", "bf16"):
        if peaks.get(p):
            return float(peaks[p]) * 1e12
    return precision_peak_flops(device, precision)


def _gemm(m, k_in, n_out, peak, bw, p, act_b, w_b) -> StepCost:
    g = p["gemm_fp8"] if w_b == 1.0 and "gemm_fp8" in p else p["gemm"]
    t, tc, tm = cal.gemm_time_s(m, k_in, n_out, peak, bw, g, act_b, w_b)
    flops = 2.0 * m * k_in * n_out
    byts = w_b * k_in * n_out + act_b * m * (k_in + n_out)
    ov = g["overhead_us"] * 1e-6
    body = t - ov
    share_c = tc / (tc + tm)   # split the smooth time between the two resources in proportion
    return StepCost(compute_s=body * share_c, memory_s=body * (1 - share_c), latency_s=ov, flops=flops, bytes=byts)


def _stream(byts, bw, pe, op=None) -> StepCost:
    ov = pe["overhead_us"]
    ov = (ov.get(op, max(ov.values())) if isinstance(ov, dict) else ov) * 1e-6
    return StepCost(memory_s=byts / (bw * pe["eff_memory"]), latency_s=ov, bytes=byts)


# ----------------------------------------------------------------------------------------------- network
def allreduce_time_s(nbytes: float, n: int, device, engine: bool = True) -> StepCost:
    """All-reduce of nbytes among n devices over the scale-up link (the PCIe link beyond a fast_link_group).
    engine=True: messages up to ONE_SHOT_ALLREDUCE_MAX_BYTES use the engines' one-shot all-reduce (each device reads
    its n-1 peers: 2 latency steps, (n-1) x bytes; parameters fitted on Vidur's A100 table). Larger messages, and all
    with engine=False, take NCCL's time (two protocols, fitted per group size on AIConfigurator's nccl-tests tables)."""
    if n <= 1:
        return StepCost()
    group = getattr(device, "fast_link_group", None)
    bw = (_scaleup_gbs(device) if not group or n <= group else _pcie_gbs(device)) * 1e9
    if device.kind == "cpu":
        pa = {"latency_us_per_step": 20.0, "eff_bandwidth": 0.5}
        return StepCost(network_s=2 * (n - 1) / n * nbytes / (bw * pa["eff_bandwidth"]),
                        latency_s=2 * (n - 1) * pa["latency_us_per_step"] * 1e-6, bytes=nbytes)
    if engine and nbytes <= ONE_SHOT_ALLREDUCE_MAX_BYTES:
        pa = cal.allreduce_params(device.id)
        return StepCost(network_s=(n - 1) * nbytes / (bw * pa["eff_bandwidth"]),
                        latency_s=2 * pa["latency_us_per_step"] * 1e-6, bytes=nbytes)
    p, _ = device_params(device)
    t = float(cal.nccl_allreduce_time_s(nbytes, n, bw, p["allreduce"]))
    fixed = min(t, 2 * (n - 1) * min(q["lat_ll_us"] for q in p["allreduce"].values()) * 1e-6)
    return StepCost(network_s=t - fixed, latency_s=fixed, bytes=nbytes)


def _scaleup_gbs(device) -> float:
    v = getattr(device, "scaleup_bandwidth_gbs", None)
    return float(v) if v else _pcie_gbs(device)


def _pcie_gbs(device) -> float:
    return float(getattr(device, "pcie_bandwidth_gbs", None) or 32.0)


def _nic_gbs(device) -> float:
    v = getattr(device, "scaleout_nic_gbps", None)
    return float(v or DEFAULT_NIC_GBPS) / 8.0


def link_bandwidth_gbs(src, dst, same_node: bool | None = None) -> tuple[float, str]:
    """GB/s between two devices: scale-up link inside a node, else the slower of the two scale-out NICs.
    same_node defaults to: same device kind with a node of more than one device."""
    if same_node is None:
        same_node = src.id == dst.id and (getattr(src, "devices_per_node", 1) or 1) > 1
    if same_node:
        return _scaleup_gbs(src), "scaleup"
    return min(_nic_gbs(src), _nic_gbs(dst)), "scaleout"


def transfer_time_s(nbytes: float, src, dst, same_node: bool | None = None) -> StepCost:
    """Point-to-point transfer (KV cache hand-off, activations) between two devices."""
    gbs, _ = link_bandwidth_gbs(src, dst, same_node)
    return StepCost(network_s=nbytes / (gbs * 1e9), latency_s=LINK_LATENCY_US * 1e-6, bytes=nbytes)


# ------------------------------------------------------------------------------------------------- model
def distinct_experts(tokens: float, count: int, top_k: int) -> float:
    """Expected number of distinct experts hit when `tokens` tokens each pick top_k of `count` uniformly."""
    if tokens <= 0:
        return 0.0
    return count * (1.0 - (1.0 - top_k / count) ** tokens)


def _shape(model):
    hd = getattr(model, "head_dim", None) or model.hidden_size // model.heads
    return model.hidden_size, model.heads, model.kv_heads, hd, model.intermediate_size


def kv_bytes_per_token_device(model, kv_precision: str, tp: int) -> float:
    """KV bytes per token held by one device of a TP group (KV heads split, replicated when tp > kv_heads), at the
    KV-cache precision."""
    kv = model.kv_bytes_per_token(kv_precision)
    return kv * math.ceil(model.kv_heads / tp) / model.kv_heads


def layer_step(model, device, precision, tp, m_tokens, batch, attn_ctx, phase, engine=True,
               kv_precision=None) -> StepCost:
    """One layer on one device of the TP group. m_tokens new tokens in all; attn_ctx: for prefill the prompt length
    of each sequence (causal), for decode the context each sequence attends to. kv_precision: the KV cache's
    (default_kv_precision when None)."""
    p, _ = device_params(device)
    peak = precision_peak_flops(device, precision)
    bw = device.memory_bandwidth_gbs * 1e9
    act_b, w_b = ACT_BYTES.get(precision, 2.0), WEIGHT_BYTES.get(precision, 2.0)
    kv_b = WEIGHT_BYTES[_kv(device, precision, kv_precision)]
    h, heads, kvh, hd, inter = _shape(model)
    gated = bool(getattr(model, "gated_mlp", True))
    shapes = cal.layer_linear_shapes(h, heads, kvh, hd, inter, gated, tp)
    s = StepCost()
    for op in ("attn_pre_proj", "attn_post_proj"):
        s.add(_gemm(m_tokens, *shapes[op], peak, bw, p, act_b, w_b), name="linear")
    experts = getattr(model, "experts", None)
    if experts:
        e, k = int(experts["count"]), int(experts["top_k"])
        hit = distinct_experts(m_tokens, e, k)
        per = m_tokens * k / hit                       # tokens per expert hit
        up = _gemm(per, h, (2 if gated else 1) * inter / tp, peak, bw, p, act_b, w_b)
        down = _gemm(per, inter / tp, h, peak, bw, p, act_b, w_b)
        s.add(up, hit, name="experts").add(down, hit, name="experts")
        s.add(_gemm(m_tokens, h, e, peak, bw, p, act_b, w_b), name="gate")
        s.add(_stream(m_tokens * k * h * act_b * 2, bw, p["elementwise"], "add"), name="merge")
    else:
        for op in ("mlp_up_proj", "mlp_down_proj"):
            s.add(_gemm(m_tokens, *shapes[op], peak, bw, p, act_b, w_b), name="linear")
    for op, byts in cal.layer_elementwise_bytes(m_tokens, h, heads, kvh, hd, inter, gated, tp, act_b).items():
        s.add(_stream(byts, bw, p["elementwise"], op), name="elementwise")
    heads_d = heads / tp
    kvh_d = math.ceil(kvh / tp)                    # KV heads on this device (replicated when tp > kv_heads)
    if phase == "prefill":
        n = m_tokens / max(batch, 1)
        pa = p["attention_prefill"]
        t, tc, tm, flops, kv_io = cal.attention_prefill_time_s(batch, n, heads_d, kvh_d, hd, _attn_peak(device, precision),
                                                               bw, pa, kv_b, act_b)
        fixed = t - cal.smooth_max(tc, tm, pa["smooth_k"])
        body = t - fixed
        att = StepCost(compute_s=body * tc / (tc + tm), memory_s=body * tm / (tc + tm), latency_s=fixed,
                       flops=flops, bytes=kv_io)
    else:
        pa = p["attention_decode"]
        t, kv_io = cal.attention_decode_time_s(batch, attn_ctx, heads_d, kvh_d, hd, bw, pa, kv_b)
        fixed = (pa["overhead_us"] + pa.get("per_seq_head_us", 0.0) * batch * heads_d / 32.0) * 1e-6
        mem = t - fixed
        att = StepCost(memory_s=mem, latency_s=fixed, bytes=kv_io, flops=4.0 * batch * attn_ctx * hd * heads_d)
    s.add(att, name="attention")
    if tp > 1:
        s.add(allreduce_time_s(m_tokens * h * act_b, tp, device, engine), 2, name="allreduce")   # after attention, MLP
    return s


def slowed(s: StepCost, factor: float) -> StepCost:
    """The same work taking `factor` times as long (times scaled, FLOPs and bytes kept), parts included."""
    out = StepCost(**{k: getattr(s, k) * (factor if k.endswith("_s") else 1.0) for k in StepCost._FIELDS})
    out.parts = {k: slowed(v, factor) for k, v in s.parts.items()}
    return out


def forward(model, device, precision="fp16", tp=1, pp=1, batch=1, new_tokens=1, context=0, phase="decode",
            engine=True, kv_precision=None) -> StepCost:
    """One forward step of the whole model on a TP x PP replica: prefill of `new_tokens` prompt tokens for each of
    `batch` sequences, or one decode step (new_tokens=1) with `context` tokens already cached per sequence.
    The step's time is divided by device_efficiency (the device's or its vendor's end-to-end factor, and any
    derating); parts keep their shares."""
    m = batch * new_tokens
    per_layer = layer_step(model, device, precision, tp, m, batch, context, phase, engine, kv_precision)
    s = per_layer.scaled(model.layers)
    p, _ = device_params(device)
    peak = precision_peak_flops(device, precision)
    bw = device.memory_bandwidth_gbs * 1e9
    act_b, w_b = ACT_BYTES.get(precision, 2.0), WEIGHT_BYTES.get(precision, 2.0)
    s.add(_gemm(batch, model.hidden_size, model.vocab_size / tp, peak, bw, p, act_b, w_b), name="lm_head")
    if pp > 1:
        hop = transfer_time_s(m * model.hidden_size * act_b, device, device, same_node=True)
        s.add(hop, pp - 1, name="pp_handoff")
    if engine and device.kind != "cpu":
        s.add(StepCost(latency_s=ENGINE_STEP_OVERHEAD_MS * 1e-3), name="engine")
    eff, _ = device_efficiency(device, precision)
    return s if eff == 1.0 else slowed(s, 1.0 / eff)


# ------------------------------------------------------------------------------------------------ memory
def memory_gb(model, device, precision="fp16", tp=1, pp=1, batch=1, tokens_in_flight=1, context=0,
              kv_precision=None) -> dict:
    """Per-device footprint (1e9 bytes): weights/(tp*pp), KV of batch x context at the KV precision (pp micro-batches
    in flight, each stage holding its layers), activations of the largest step, and the logits."""
    act_b = ACT_BYTES.get(precision, 2.0)
    h, heads, kvh, hd, inter = _shape(model)
    weights = model.weight_bytes(precision) / (tp * pp)
    kv = batch * context * kv_bytes_per_token_device(model, _kv(device, precision, kv_precision), tp)
    width = max(h, (heads + 2 * kvh) * hd / tp, (2 if getattr(model, "gated_mlp", True) else 1) * inter / tp)
    acts = 4 * tokens_in_flight * width * act_b + batch * model.vocab_size * 4
    total = weights + kv + acts
    return {"weights_gb": weights / 1e9, "kv_gb": kv / 1e9, "activations_gb": acts / 1e9, "total_gb": total / 1e9,
            "capacity_gb": device.memory_gb * MEMORY_UTILIZATION}


def check_fits(model, device, option_label, mem: dict) -> None:
    if mem["total_gb"] > mem["capacity_gb"]:
        raise CostModelError(
            f"{model.id} does not fit on {device.id} ({option_label}): needs {mem['total_gb']:.1f} GB per device "
            f"(weights {mem['weights_gb']:.1f}, KV {mem['kv_gb']:.1f}, activations {mem['activations_gb']:.1f}), "
            f"available {mem['capacity_gb']:.1f} GB ({MEMORY_UTILIZATION:.0%} of {device.memory_gb:g})")


# ---------------------------------------------------------------------------------------- prefill, decode
def prefill(model, device, precision="fp16", tp=1, pp=1, batch=1, prompt_tokens=1, engine=True,
            kv_precision=None) -> StepCost:
    return forward(model, device, precision, tp, pp, batch, prompt_tokens, 0, "prefill", engine, kv_precision)


def decode_step(model, device, precision="fp16", tp=1, pp=1, batch=1, context=1, engine=True,
                kv_precision=None) -> StepCost:
    return forward(model, device, precision, tp, pp, batch, 1, context, "decode", engine, kv_precision)


def decode(model, device, precision="fp16", tp=1, pp=1, batch=1, prompt_tokens=1, output_tokens=1,
           engine=True, kv_precision=None) -> tuple[StepCost, StepCost]:
    """(whole decode, one step at the mean context). Attention is linear in context, so the step at the mean
    context times the number of steps is the sum over steps."""
    step = decode_step(model, device, precision, tp, pp, batch, prompt_tokens + output_tokens / 2.0, engine,
                       kv_precision)
    return step.scaled(output_tokens), step
