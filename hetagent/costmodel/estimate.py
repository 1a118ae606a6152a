"""One-shot estimate of an LLM phase on a device option: what `hetagent estimate` prints.

prefill: process `tokens` prompt tokens for each of `batch` sequences; latency = the prefill (= TTFT).
decode: `tokens` decode steps (default 1) for `batch` sequences whose context is `context`; latency_ms = one step
(= TBT); total_ms = all the steps.
kv_precision: the KV cache's (default: the weights' precision if the device has a rate for it and it is a KV format,
else bf16; roofline.default_kv_precision). Every estimate says how sure it is: calibration_status (measured,
calibrated, datasheet) and latency_interval_ms [low, high] from that status's cross-validated residuals.
"""
from __future__ import annotations

from hetagent.costmodel import roofline as rl
from hetagent.costmodel import uncertainty as unc
from hetagent.costmodel.operators import POWER_UTILIZATION, device_precisions
from hetagent.costmodel.types import DeviceOption
from hetagent.errors import CatalogError, CostModelError

OPS = ("prefill", "decode")


def estimate(model, device, op, tokens=None, batch=1, context=None, tp=1, pp=1, precision="fp16",
             catalog="default", kv_precision=None) -> dict:
    from hetagent.costmodel.devices import get_device
    from hetagent.costmodel.models import load_model
    if op not in OPS:
        raise CatalogError(f"unknown operation '{op}'; choices: {', '.join(OPS)}")
    dev = get_device(device, catalog) if isinstance(device, str) else device
    card = load_model(model) if isinstance(model, str) else model
    precs = device_precisions(dev, card)
    if precision not in precs:
        raise CostModelError(f"precision '{precision}' is not available for {card.id} on {dev.id}; choices: "
                             f"{', '.join(precs) or 'none'}")
    per_node = int(dev.devices_per_node or 1)
    for name, v in (("tp", tp), ("pp", pp), ("batch", batch)):
        if int(v) < 1:
            raise CostModelError(f"{name} must be at least 1, got {v}")
    if tp > per_node:
        raise CostModelError(f"tp {tp} exceeds the {per_node} devices per node of {dev.id}; choices: "
                             f"{', '.join(str(t) for t in (1, 2, 4, 8, 16) if t <= per_node)}")
    if card.heads % tp:
        raise CostModelError(f"tp {tp} does not divide the {card.heads} attention heads of {card.id}")
    kvp = kv_precision or rl.default_kv_precision(dev, precision)
    if kvp not in rl.kv_precisions(dev):
        raise CostModelError(f"KV-cache precision '{kvp}' is not available on {dev.id}; choices: "
                             f"{', '.join(rl.kv_precisions(dev)) or 'none'}")
    option = DeviceOption(dev.id, tp, pp, batch, precision)
    out = {"model": card.id, "device": dev.id, "op": op, "batch": batch, "tp": tp, "pp": pp,
           "precision": precision, "kv_precision": kvp}
    if op == "prefill":
        n = int(tokens or 512)
        ctx = int(context or 0) + n
        mem = rl.memory_gb(card, dev, precision, tp, pp, batch, batch * n, ctx, kvp)
        s = rl.prefill(card, dev, precision, tp, pp, batch, n, kv_precision=kvp)
        lat = s.total_s * 1e3
        out.update(tokens=n, context=ctx, latency_ms=lat, ttft_ms=lat,
                   throughput_tokens_per_s=batch * n * 1e3 / lat * pp)
    else:
        n = int(tokens or 1)
        ctx = int(context if context is not None else 512)
        mem = rl.memory_gb(card, dev, precision, tp, pp, batch, batch, ctx + n, kvp)
        s = rl.decode_step(card, dev, precision, tp, pp, batch, ctx + (n - 1) / 2.0, kv_precision=kvp)
        lat = s.total_s * 1e3
        out.update(tokens=n, context=ctx, latency_ms=lat, tbt_ms=lat, total_ms=lat * n,
                   throughput_tokens_per_s=batch * 1e3 / lat * pp)
    st = unc.status(dev)
    lo, hi = unc.latency_interval_ms(out["latency_ms"], st, dev)
    eff, esrc = rl.device_efficiency(dev, precision)
    out.update(memory_gb=mem["total_gb"], memory=mem, fits=mem["total_gb"] <= mem["capacity_gb"], bound=s.bound,
               power_w=float(dev.tdp_w or 0) * POWER_UTILIZATION[s.bound], parts_ms=s.parts_ms(),
               calibration=rl.device_params(dev)[1], efficiency=round(eff, 4), efficiency_source=esrc,
               calibration_status=st, latency_interval_ms=[lo, hi], option=option.label())
    if not out["fits"]:
        rl.check_fits(card, dev, option.label(), mem)
    return out


def format_estimate(d: dict) -> str:
    lines = [f"{d['model']} {d['op']} on {d['device']} ({d['option']}): {d['tokens']} tokens, batch {d['batch']}, "
             f"context {d['context']}",
             f"  latency      {d['latency_ms']:.3f} ms" + ("  (TTFT)" if d["op"] == "prefill" else
                                                           f"  per step (TBT); {d['total_ms']:.1f} ms for all steps"),
             (f"  how sure     {d['calibration_status']}: {d['latency_interval_ms'][0]:.3f} to "
              f"{d['latency_interval_ms'][1]:.3f} ms (the {d['calibration_status']} class's cross-validated range)"
              if d["latency_interval_ms"][0] is not None else f"  how sure     {d['calibration_status']}"),
             f"  throughput   {d['throughput_tokens_per_s']:.0f} tokens/s per replica",
             f"  bound by     {d['bound']}",
             f"  memory       {d['memory_gb']:.2f} GB per device of {d['memory']['capacity_gb']:.1f} usable "
             f"(weights {d['memory']['weights_gb']:.2f}, KV {d['memory']['kv_gb']:.2f}, "
             f"activations {d['memory']['activations_gb']:.2f})",
             f"  power        {d['power_w']:.0f} W per device",
             f"  calibration  operator fit {d['calibration']}; end-to-end efficiency {d['efficiency']} "
             f"({d['efficiency_source']}); KV cache {d['kv_precision']}",
             "  breakdown    " + ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(d["parts_ms"].items(), key=lambda x: -x[1]))]
    return "\n".join(lines)
