"""Every opgraph kind is priced; options, cost tables and estimate errors."""
import pytest

from hetagent.costmodel import operators as ops
from hetagent.costmodel.devices import get_device
from hetagent.costmodel.estimate import estimate, format_estimate
from hetagent.costmodel.types import BOUNDS, DeviceOption, OpCost
from hetagent.errors import CatalogError, CostModelError
from hetagent.ir.opgraph import Operator, OpGraph

MOE = dict(model="mixtral-8x7b", prompt_tokens=512, output_tokens=64, experts=8, top_k=2)
ATTRS = {
    "llm.prefill": dict(model="llama-3-8b", prompt_tokens=1024),
    "llm.decode": dict(model="llama-3-8b", prompt_tokens=1024, output_tokens=128),
    "llm.kv_transfer": dict(model="llama-3-8b", tokens=1024, kv_bytes=1024 * 131072),
    "llm.remote": dict(model="gpt-4o-mini", provider="openai", prompt_tokens=500, output_tokens=100),
    "expert.gate": dict(MOE, phase="prefill"), "expert.tp_prefill": dict(MOE, phase="prefill"),
    "expert.merge": dict(MOE, phase="decode"), "comm.allreduce": dict(MOE, phase="decode"),
    "expert.tp_decode": dict(MOE, phase="decode"),
    "speech.frontend": dict(model="whisper-small", audio_seconds=10),
    "speech.encode": dict(model="whisper-small", audio_seconds=10),
    "speech.decode": dict(model="whisper-small", audio_seconds=10, output_tokens=40),
    "speech.phonemize": dict(model="piper-joe-medium", text_tokens=60),
    "speech.synthesize": dict(model="piper-joe-medium", text_tokens=60, audio_seconds=5),
    "embed.encode": dict(model="all-minilm-l6-v2", tokens=64, texts=1),
    "memory.vector_search": dict(index_size=100000, dims=384, top_k=5),
    "memory.rerank": dict(model="all-minilm-l6-v2", top_k=5, tokens=640),
    "memory.load": dict(bytes=4096), "memory.store": dict(bytes=4096),
    "tool.lookup": dict(tool="search", latency_ms=300, latency_cv=0.5, request_bytes=500, response_bytes=20000),
    "tool.compute": dict(tool="calculator", cpu_ms=2),
    "compute.code": dict(cpu_ms=15),
    "compute.fused": dict(cpu_ms=25, parts=["a", "b"]),
}


def _op(kind):
    return Operator(name=kind.replace(".", "_"), kind=kind, attrs={**ATTRS[kind], "bytes_out": 100})


def test_vocabulary_covered():
    assert set(ATTRS) == ops.ALL_KINDS


@pytest.mark.parametrize("kind", sorted(ATTRS))
def test_every_kind_priced(kind):
    op = _op(kind)
    priced = 0
    for dev_id in ("h100", "a40", "xeon-sapphirerapids"):
        dev = get_device(dev_id)
        for o in ops.options_for(op, dev)[:6]:
            c = ops.cost(op, o)
            assert isinstance(c, OpCost) and c.latency_ms > 0 and c.throughput_rps > 0
            assert c.bound in BOUNDS and c.memory_gb >= 0 and c.power_w >= 0
            priced += 1
    assert priced > 0


def test_cpu_only_kinds_not_on_gpu():
    op = _op("tool.lookup")
    assert ops.options_for(op, get_device("h100")) == []
    with pytest.raises(CostModelError, match="CPUs only"):
        ops.cost(op, DeviceOption("h100"))


def test_decode_detail_and_whole_latency():
    op = _op("llm.decode")
    c = ops.cost(op, DeviceOption("h100"))
    assert c.detail["tbt_ms"] * 128 == pytest.approx(c.latency_ms, rel=1e-6)
    p = ops.cost(_op("llm.prefill"), DeviceOption("h100"))
    assert p.detail["ttft_ms"] == pytest.approx(p.latency_ms)


def test_moe_parts_sum_to_whole():
    dev_opt = DeviceOption("h100", tp=2)
    parts = sum(ops.cost(Operator(k, k, dict(MOE, phase="decode")), dev_opt).latency_ms
                for k in ("expert.gate", "expert.merge", "comm.allreduce", "expert.tp_decode"))
    whole = ops.cost(Operator("d", "llm.decode", dict(MOE)), dev_opt).latency_ms
    assert parts == pytest.approx(whole, rel=1e-6)
    assert ops.cost(_op("comm.allreduce"), dev_opt).bound in ("network", "latency")


def test_remote_has_price_and_runs_on_a_host_cpu():
    c = ops.cost(_op("llm.remote"), DeviceOption("xeon-sapphirerapids", precision="fp32"))
    assert c.price_per_execution > 0 and c.bound == "network"
    priced = Operator("r", "llm.remote", dict(model="gpt-4o", provider="openai", prompt_tokens=1000,
                                              output_tokens=100, input_usd_per_million=2.5,
                                              output_usd_per_million=10.0, latency_ms=400,
                                              tokens_per_second=50))
    c = ops.cost(priced, DeviceOption("xeon-sapphirerapids", precision="fp32"))
    assert c.price_per_execution == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)
    assert c.latency_ms == pytest.approx(400 + 100 * 20) and c.detail["defaults_used"] == []
    assert ops.options_for(priced, get_device("h100")) == []


def test_options_respect_tp_and_memory():
    op = Operator("p", "llm.prefill", dict(model="llama-3-70b", prompt_tokens=2048))
    a40 = ops.options_for(op, get_device("a40"))
    assert a40 and all(o.tp * o.pp >= 2 for o in a40)
    h = ops.options_for(op, get_device("h100"))
    assert max(o.tp for o in h) <= get_device("h100").devices_per_node
    assert all(o.precision in get_device("h100").peak_tflops for o in h)


def test_cost_table_reports_infeasible():
    g = OpGraph("w", [_op("llm.prefill"), _op("tool.lookup")], [("llm_prefill", "tool_lookup")])
    t = ops.cost_table(g, devices=["h100", "xeon-sapphirerapids"])
    assert any(isinstance(v, OpCost) for v in t["llm_prefill"].values())
    assert any(isinstance(v, str) and "CPUs only" in v for v in t["tool_lookup"].values())
    with pytest.raises(CatalogError, match="unknown device 'h900'"):
        ops.cost_table(g, devices=["h900"])


def test_estimate_keys_and_format():
    d = estimate("llama-3-8b", "h100", "decode", batch=4, context=1000)
    for k in ("latency_ms", "throughput_tokens_per_s", "memory_gb", "bound", "power_w", "tbt_ms", "fits"):
        assert k in d
    assert d["fits"] and d["bound"] == "memory"
    assert "TBT" in format_estimate(d)
    p = estimate("llama-3-8b", "h100", "prefill", tokens=2048)
    assert p["ttft_ms"] == p["latency_ms"] and p["bound"] == "compute"


@pytest.mark.parametrize("kwargs, exc, text", [
    (dict(model="llama-3-8b", device="h900", op="decode"), CatalogError, "h900"),
    (dict(model="llama-9", device="h100", op="decode"), CatalogError, "llama-9"),
    (dict(model="llama-3-8b", device="a100", op="decode", precision="fp8"), CostModelError, "choices"),
    (dict(model="llama-3-8b", device="h100", op="decode", tp=16), CostModelError, "devices per node"),
    (dict(model="llama-3-8b", device="h100", op="sing"), CatalogError, "prefill, decode"),
])
def test_estimate_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text) as e:
        estimate(**kwargs)
    assert "\n" not in str(e.value)


def test_cpu_line_forms():
    from hetagent.costmodel import operators as ops
    assert ops.fit_cpu_line([1, 2, 3], [2, 3, 4]) == (1.0, 1.0)
    assert ops.fit_cpu_line([1, 2], [1, 3])[0] == 0.0           # negative intercept: through the origin
    fx, name = ops.cpu_regressor("speech.encode")
    assert name == "whisper_window" and fx(10) == 1 and fx(31) == 2
    line = ops.cpu_line("llm.decode", [(0, 1.0), (100, 2.0)])
    assert abs(ops.cpu_line_seconds("llm.decode", line, 3, context=50) - 4.5) < 1e-9


def test_local_cpu_is_the_calibration_host_unscaled():
    from hetagent.costmodel import calibration as cal
    from hetagent.costmodel import operators as ops
    from hetagent.costmodel.fleet import load_fleet
    c = cal.load_cpu_calibration()
    if not c:
        return
    dev = load_fleet("local-cpu").resolve()[0]["local-cpu"]
    assert ops._same_host(dev, c["host"])
    secs, info = ops._calibrated_seconds("speech.decode", {"model": "whisper-tiny", "output_tokens": 13}, dev)
    assert info["scale"] == 1.0 and secs > 0
