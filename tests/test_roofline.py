"""Physical sanity of the roofline LLM model and its calibration."""
import json

import pytest

from hetagent.costmodel import calibration as cal
from hetagent.costmodel import roofline as rl
from hetagent.costmodel.devices import get_device
from hetagent.costmodel.estimate import estimate
from hetagent.costmodel.models import load_model
from hetagent.errors import CostModelError


@pytest.fixture(scope="module")
def l8():
    return load_model("llama-3-8b")


@pytest.fixture(scope="module")
def h100():
    return get_device("h100")


def test_kv_bytes_llama3_8b(l8):
    assert l8.kv_bytes_per_token("fp16") == 128 * 1024
    assert rl.kv_bytes_per_token_device(l8, "fp16", 2) == 64 * 1024
    assert rl.kv_bytes_per_token_device(l8, "fp16", 16) == 16 * 1024     # 8 KV heads: replicated beyond tp 8


def test_decode_batch1_memory_bound(l8, h100):
    s = rl.decode_step(l8, h100, "fp16", 1, 1, 1, 512)
    assert s.bound == "memory"
    weights_s = l8.weight_bytes("fp16") / (h100.memory_bandwidth_gbs * 1e9)
    assert weights_s < s.total_s < 2.0 * weights_s


def test_prefill_large_compute_bound(l8, h100):
    s = rl.prefill(l8, h100, "fp16", 1, 1, 1, 4096)
    assert s.bound == "compute"
    ideal = 2 * l8.params_active * 4096 / (h100.peak_tflops["fp16"] * 1e12)
    assert ideal < s.total_s < 3 * ideal


def test_smooth_transition_no_kink(l8, h100):
    t = [rl.prefill(l8, h100, "fp16", 1, 1, 1, n).total_s for n in range(16, 1024, 16)]
    assert all(b >= a * 0.999 for a, b in zip(t, t[1:]))        # monotone
    d = [b - a for a, b in zip(t, t[1:])]
    assert all(y >= x * 0.9 for x, y in zip(d, d[1:]))           # slope does not drop: convex, no kink down


def test_tp_helps_then_allreduce_dominates():
    m, d = load_model("llama-3-70b"), get_device("h100")
    t = {tp: rl.decode_step(m, d, "fp16", tp, 1, 1, 1024) for tp in (2, 4, 8)}
    assert t[4].total_s < t[2].total_s
    share = {tp: t[tp].parts["allreduce"].total_s / t[tp].total_s for tp in t}
    assert share[2] < share[4] < share[8]
    small = load_model("llama-3-8b")
    t1, t8 = (rl.decode_step(small, d, "fp16", tp, 1, 1, 128) for tp in (1, 8))
    assert t8.total_s / t1.total_s > 1 / 8 * 2        # far from linear scaling: communication eats the gain


def test_moe_active_params():
    m, d = load_model("mixtral-8x7b"), get_device("h100")
    assert rl.distinct_experts(1, 8, 2) == pytest.approx(2.0)
    assert rl.distinct_experts(1000, 8, 2) == pytest.approx(8.0)
    b1 = rl.decode_step(m, d, "fp16", 2, 1, 1, 128)
    b64 = rl.decode_step(m, d, "fp16", 2, 1, 64, 128)
    # batch 1 touches 2 of 8 experts: about active params worth of bytes, far less than all weights
    assert b1.bytes < 0.5 * m.weight_bytes("fp16") / 2
    assert b64.bytes > 2 * b1.bytes
    # prefill FLOPs follow active, not total, parameters
    p = rl.prefill(m, d, "fp16", 1, 1, 1, 2048)
    assert p.flops < 2 * m.params_total * 2048 * 0.5


def test_does_not_fit():
    with pytest.raises(CostModelError, match=r"llama-3-70b.*a40.*needs .* GB.*available"):
        estimate("llama-3-70b", "a40", "decode", tp=1)


def test_transfer_links():
    a, b = get_device("h100"), get_device("a100")
    same = rl.transfer_time_s(1e9, a, a, same_node=True)
    cross = rl.transfer_time_s(1e9, a, b)
    assert same.total_s < cross.total_s
    assert rl.link_bandwidth_gbs(a, b)[1] == "scaleout"
    assert rl.link_bandwidth_gbs(a, b)[0] == min(a.scaleout_nic_gbps, b.scaleout_nic_gbps) / 8


def test_pp_handoff_and_memory(l8, h100):
    s1, s2 = rl.prefill(l8, h100, "fp16", 1, 1, 1, 512), rl.prefill(l8, h100, "fp16", 1, 2, 1, 512)
    assert "pp_handoff" in s2.parts and s2.total_s > s1.total_s
    m1, m2 = rl.memory_gb(l8, h100, "fp16", 1, 1), rl.memory_gb(l8, h100, "fp16", 1, 2)
    assert m2["weights_gb"] == pytest.approx(m1["weights_gb"] / 2)


def test_calibration_has_provenance():
    doc = json.loads(cal.GPU_CALIBRATION.read_text())
    prov = doc["provenance"]
    assert prov["commit"] == cal.VIDUR_COMMIT and prov["rows_total"] > 6000
    assert any("a100__" in f for f in prov["files"]) and any("a40__" in f for f in prov["files"])
    assert prov["method"] and prov["date"] and prov["residuals"]["a100"]["median_ape"] < 0.1
    for d in ("a100", "a40", "generic"):
        g = doc["devices"][d]["gemm"]
        assert 0.5 < g["eff_compute"] <= 1 and 0.5 < g["eff_memory"] <= 1 and g["smooth_k"] >= 1
    assert doc["allreduce"]["generic"]["latency_us_per_step"] > 0


def test_cpu_calibration_absent_returns_none(tmp_path):
    assert cal.load_cpu_calibration(tmp_path / "missing.json") is None


def test_gemm_tile_padding_in_compute_term():
    from hetagent.costmodel import calibration as cal
    p = {"eff_compute": 1.0, "eff_memory": 1.0, "smooth_k": 50.0, "overhead_us": 0.0}
    _, tc0, _ = cal.gemm_time_s(1.0, 4096, 4096, 1e15, 1e12, p)
    _, tc1, _ = cal.gemm_time_s(1.0, 4096, 4096, 1e15, 1e12, dict(p, tile_pad_rows=32.0))
    assert abs(tc1 / tc0 - 33.0) < 1e-9          # one row costs the work of 1 + 32 rows
    g = cal.load_gpu_calibration()["devices"]["generic"]["gemm"]
    assert g["tile_pad_rows"] == cal.TILE_PAD_ROWS


def test_unmeasured_gpu_takes_generic_calibration():
    from hetagent.costmodel import calibration as cal
    for dev in ("h100", "h200", "b200"):
        assert cal.gpu_params(dev)[1] == "generic"
