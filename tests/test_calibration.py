"""Calibration per device family and stack, status and intervals, KV precision, calibrate --gpu files, robustness."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hetagent.costmodel import calibration as cal
from hetagent.costmodel import roofline as rl
from hetagent.costmodel import uncertainty as unc
from hetagent.costmodel.devices import get_device, load_catalog
from hetagent.costmodel.models import load_model
from hetagent.errors import CostModelError, HetagentError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
AIC = SHARED / "profiling" / "aiconfigurator"
FIXTURE = ROOT / "tests" / "fixtures" / "measured_gpu" / "a100_aiconfigurator.json"
needs_shared = pytest.mark.skipif(not AIC.is_dir(), reason="shared/data/profiling/aiconfigurator not present")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hetagent.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


# ------------------------------------------------------------------------------------------- the fitted file
def test_calibration_file_has_provenance_families_stacks_and_intervals():
    doc = cal.load_gpu_calibration()
    prov = doc["provenance"]
    assert prov["aiconfigurator_commit"].startswith("095f58a") and prov["commit"] == cal.VIDUR_COMMIT
    assert set(prov["aiconfigurator_rows"]) == {"a100", "l40s"} and "calibration" in prov["command"]
    for d in ("a100", "a40", "l40s"):
        assert 0.5 < doc["devices"][d]["gemm"]["eff_compute"] <= 1.0
    assert {"attention_prefill", "attention_decode", "allreduce", "gemm_fp8"} <= set(doc["devices"]["l40s"])
    assert set(doc["families"]) == {"ampere", "ada"}
    e2e = doc["end_to_end"]
    assert e2e["reference"] == "h100" and e2e["devices"]["h100"]["efficiency"] == 1.0
    assert e2e["devices"]["mi300x"]["efficiency"] < 0.7          # ROCm/vLLM v4.1 far below MI300X's peaks
    assert e2e["stacks"]["amd"]["devices"] == ["mi300x"]
    iv = doc["intervals"]
    for k in ("measured", "calibrated", "datasheet"):
        assert iv[k]["low"] < 1.0 < iv[k]["high"], k
    assert iv["datasheet"]["high"] > iv["calibrated"]["high"] > iv["measured"]["high"]
    assert iv["datasheet"]["low"] <= iv["measured"]["low"]
    # the datasheet interval covers the worst leave-one-device-out end-to-end miss (h100-pcie, mi300x)
    assert iv["datasheet"]["high"] >= max(doc["validation"]["end_to_end"]["lodo_time_ratios"]) - 1e-9


@pytest.mark.slow
@needs_shared
def test_fit_script_reproduces_the_committed_calibration(tmp_path):
    out = tmp_path / "gpu_calibration.json"
    from hetagent.costmodel.fit import main
    assert main(["--data", str(SHARED), "-o", str(out)]) == 0
    new, old = json.loads(out.read_text()), cal.load_gpu_calibration()
    for d in ("a100", "a40", "l40s", "generic"):
        for k, v in old["devices"][d]["gemm"].items():
            assert new["devices"][d]["gemm"][k] == pytest.approx(v, rel=1e-3), (d, k)
    for d, v in old["end_to_end"]["devices"].items():
        assert new["end_to_end"]["devices"][d]["efficiency"] == pytest.approx(v["efficiency"], rel=1e-3)
    for k in ("measured", "calibrated", "datasheet"):
        assert new["intervals"][k]["high"] == pytest.approx(old["intervals"][k]["high"], rel=1e-3)


# ------------------------------------------------------------------------------------------- parameters
def test_parameters_resolve_device_then_family_then_generic(cat):
    assert cal.gpu_params("a100", architecture="ampere")[1] == "a100"
    assert cal.gpu_params("a10g", architecture="ampere")[1] == "family:ampere"
    assert cal.gpu_params("l4", architecture="ada")[1] == "family:ada"
    assert cal.gpu_params("h100", architecture="hopper")[1] == "generic"
    p, _ = rl.device_params(cat["l4"])
    assert p["gemm_fp8"] == cal.load_gpu_calibration()["families"]["ada"]["gemm_fp8"]
    p, _ = rl.device_params(cat["h100"])
    assert p["gemm_fp8"] == p["gemm"]               # no fp8 measurement for Hopper: the 16-bit fit


def test_end_to_end_factors_by_device_stack_and_precision():
    assert cal.end_to_end_efficiency("mi300x", "amd")[1] == "mlperf:mi300x"
    f, src = cal.end_to_end_efficiency("mi355x", "amd")
    assert src == "stack:amd" and f == cal.load_gpu_calibration()["end_to_end"]["stacks"]["amd"]["efficiency"]
    assert cal.end_to_end_efficiency("gaudi3", "intel") == (1.0, "none")
    # l40s has operator measurements: its MLPerf factor applies only at the precision MLPerf ran (fp8)
    assert cal.end_to_end_efficiency("l40s", "nvidia", precision="fp16")[0] == 1.0
    assert cal.end_to_end_efficiency("l40s", "nvidia", precision="fp8")[1] == "mlperf:l40s"


def test_mi300x_is_priced_at_its_measured_efficiency(cat):
    m = load_model("llama-3-8b")
    t = rl.decode_step(m, cat["mi300x"], "fp16", 1, 1, 32, 1024).total_s
    bare = dataclasses.replace(cat["mi300x"], id="mi300x-bare", vendor="intel")   # no factor of any kind
    t0 = rl.decode_step(m, bare, "fp16", 1, 1, 32, 1024).total_s
    assert t / t0 == pytest.approx(1.0 / cal.end_to_end_efficiency("mi300x", "amd")[0], rel=1e-6)


# ------------------------------------------------------------------------------------------- KV precision
def test_default_kv_precision(cat):
    assert rl.default_kv_precision(cat["h100"], "fp8") == "fp8"
    assert rl.default_kv_precision(cat["h100"], "fp16") == "fp16"
    assert rl.default_kv_precision(cat["h100"], "int4") == "bf16"      # int weights keep a 16-bit KV cache
    assert rl.default_kv_precision(cat["t4"], "int8") == "fp16"        # T4 has no bf16 rate
    assert rl.default_kv_precision(cat["b200"], "fp4") == "fp4"


def test_kv_precision_is_separate_from_the_weights(cat):
    m, d = load_model("llama-3-70b"), cat["h100"]
    full = rl.memory_gb(m, d, "fp8", 2, 1, 32, 32, 4096, kv_precision="bf16")
    half = rl.memory_gb(m, d, "fp8", 2, 1, 32, 32, 4096, kv_precision="fp8")
    assert full["weights_gb"] == half["weights_gb"] and full["kv_gb"] == pytest.approx(2 * half["kv_gb"])
    s16 = rl.decode_step(m, d, "fp8", 2, 1, 64, 4096, kv_precision="bf16")
    s8 = rl.decode_step(m, d, "fp8", 2, 1, 64, 4096, kv_precision="fp8")
    assert s8.parts["attention"].bytes == pytest.approx(s16.parts["attention"].bytes / 2)
    assert s8.parts["linear"].total_s == pytest.approx(s16.parts["linear"].total_s)
    assert s8.total_s < s16.total_s


def test_estimate_kv_precision_flag_and_help():
    r = run_cli("estimate", "--model", "llama-3-70b", "--device", "h100", "--op", "decode", "--tp", "2",
                "--precision", "fp8", "--kv-precision", "bf16", "--batch", "8", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kv_precision"] == "bf16" and d["precision"] == "fp8" and r.stdout.count("\n") == 1
    r = run_cli("estimate", "--model", "llama-3-8b", "--device", "a100", "--op", "decode", "--kv-precision", "fp8")
    assert r.returncode == 1 and "fp8" in r.stderr and "a100" in r.stderr
    h = run_cli("estimate", "--help").stdout
    assert "--kv-precision" in h and "else bf16" in " ".join(h.split())


@needs_shared
def test_attention_against_the_measured_tables(cat):
    """Prefill and decode attention of one layer against AIConfigurator rows (A100, vLLM 0.14 FlashAttention)."""
    import pyarrow.parquet as pq
    a100 = cat["a100"]
    p, _ = rl.device_params(a100)
    peak, bw = a100.peak_tflops["fp16"] * 1e12, a100.memory_bandwidth_gbs * 1e9
    ctx = pq.read_table(AIC / "a100_sxm/attention/vllm/0.14.0/context_attention_perf.parquet").to_pylist()
    row = next(r for r in ctx if r["batch_size"] == 1 and r["isl"] == 8192 and r["num_heads"] == 32
               and r["num_key_value_heads"] == 8)
    t = cal.attention_prefill_time_s(1, 8192, 32, 8, 128, peak, bw, p["attention_prefill"])[0]
    assert t * 1e3 == pytest.approx(row["latency"], rel=0.15)          # 3.12 ms measured
    gen = pq.read_table(AIC / "a100_sxm/attention/vllm/0.14.0/generation_attention_perf.parquet").to_pylist()
    row = next(r for r in gen if r["batch_size"] == 64 and r["step"] == 4095 and r["num_heads"] == 32
               and r["num_key_value_heads"] == 8)
    t = cal.attention_decode_time_s(64, 4095, 32, 8, 128, bw, p["attention_decode"])[0]
    assert t * 1e3 == pytest.approx(row["latency"], rel=0.25)          # 0.68 ms measured
    # the old constant (0.6 of peak) is gone: the fitted prefill efficiency comes from the table
    assert 0.3 < p["attention_prefill"]["eff_compute"] < 0.9 and not hasattr(rl, "ATTN_PREFILL_EFF")


# ------------------------------------------------------------------------------------------- status
def test_status_per_device(cat):
    assert unc.status(cat["a100"]) == "measured" and unc.status(cat["l40s"]) == "measured"
    assert unc.status(cat["h100"]) == "calibrated" and unc.status(cat["mi300x"]) == "calibrated"
    for d in ("gaudi3", "mi325x", "mi355x", "h200-nvl", "gb200", "rtx-pro-6000", "arc-pro-b60", "t4"):
        assert unc.status(cat[d]) == "datasheet", d
    assert unc.interval("datasheet")["high"] > unc.interval("calibrated")["high"]
    xeon = unc.device_calibration(cat["xeon-sapphirerapids"])
    assert xeon["status"] == "datasheet" and xeon["interval"] == {"low": None, "high": None}
    from hetagent.costmodel.fleet import load_fleet
    host = load_fleet("local-cpu").resolve()[0]["local-cpu"]
    assert unc.status(host) == "measured"
    assert unc.interval("measured", host) == {k: cal.load_gpu_calibration()["intervals"]["cpu_measured"][k]
                                              for k in ("low", "high")}


def test_status_needs_the_figures_the_fit_was_made_with():
    """The paper's catalog prints other figures for the same ids (H100's sparse peak, A40's TF32 rate): the fits'
    evidence is about the default catalog's numbers, so those devices are datasheet there."""
    paper = load_catalog("paper-2025")
    assert unc.status(paper["h100"]) == "datasheet" and unc.status(paper["a40"]) == "datasheet"
    assert cal.load_gpu_calibration()["provenance"]["figures"]["a40"]["fp16_tflops"] == pytest.approx(149.7)


def test_devices_json_carries_calibration():
    r = run_cli("devices", "--json")
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    doc = json.loads(r.stdout)
    assert set(doc) == {"version", "devices"}
    for d in doc["devices"]:
        c = d["calibration"]
        assert set(c) == {"status", "sources", "interval"} and c["status"] in unc.STATUSES
        assert c["sources"] and set(c["interval"]) == {"low", "high"}
    mi = next(d for d in doc["devices"] if d["id"] == "mi355x")
    assert any("vendor stack factor" in s for s in mi["calibration"]["sources"])
    text = run_cli("devices").stdout
    assert "calibration" in text and "datasheet" in text and "measured" in text


def test_estimate_says_how_sure():
    from hetagent import api
    r = run_cli("estimate", "--model", "llama-3-8b", "--device", "gaudi3", "--op", "prefill", "--tokens", "1024",
                "--json")
    d = json.loads(r.stdout)
    lo, hi = d["latency_interval_ms"]
    assert d["calibration_status"] == "datasheet" and lo < d["latency_ms"] < hi
    assert hi / d["latency_ms"] == pytest.approx(unc.interval("datasheet")["high"])
    py = api.estimate("llama-3-8b", "gaudi3", "prefill", tokens=1024)
    assert set(py) == set(d) and py["latency_interval_ms"] == pytest.approx(d["latency_interval_ms"])
    assert "how sure" in run_cli("estimate", "--model", "llama-3-8b", "--device", "a100", "--op", "decode").stdout


def test_opcost_carries_status_interval_and_derating(cat):
    from hetagent.costmodel.operators import cost
    from hetagent.costmodel.types import DeviceOption
    from hetagent.ir.opgraph import Operator
    dec = Operator("d", "llm.decode", {"model": "llama-3-8b", "prompt_tokens": 512, "output_tokens": 64})
    c = cost(dec, DeviceOption("h100", batch=8, precision="fp16"), cat)
    assert c.calibration_status == "calibrated"
    assert c.latency_interval_ms[0] < c.latency_ms < c.latency_interval_ms[1]
    slow = unc.derated(cat, "h100", 0.5)
    assert slow["a100"] is cat["a100"] and cat["h100"].efficiency_factor == 1.0
    c2 = cost(dec, DeviceOption("h100", batch=8, precision="fp16"), slow)
    assert c2.latency_ms == pytest.approx(2 * c.latency_ms) and c2.throughput_rps == pytest.approx(c.throughput_rps / 2)
    enc = Operator("e", "embed.encode", {"model": "all-minilm-l6-v2", "tokens": 256})
    e1, e2 = cost(enc, DeviceOption("h100", precision="fp16"), cat), cost(enc, DeviceOption("h100", precision="fp16"), slow)
    assert e2.latency_ms == pytest.approx(2 * e1.latency_ms) and e1.calibration_status == "datasheet"
    kv = Operator("k", "llm.kv_transfer", {"model": "llama-3-8b", "prompt_tokens": 512, "tokens": 512})
    k1 = cost(kv, DeviceOption("h100", precision="fp16"), cat)
    assert cost(kv, DeviceOption("h100", precision="fp16"), slow).latency_ms == pytest.approx(k1.latency_ms)
    with pytest.raises(ValueError):
        unc.derated(cat, "h100", 0.0)


# ------------------------------------------------------------------------------------------- calibrate --gpu
def _lab_catalog(cat):
    lab = dataclasses.replace(cat["a100"], id="a100-lab", name="NVIDIA A100 SXM4 80GB (lab)")
    return {**cat, "a100-lab": lab}, lab


def test_calibrate_gpu_file_makes_a_device_measured(tmp_path, monkeypatch, cat):
    """The path `hetagent calibrate --gpu` takes after timing, fed with a recorded measurement (AIConfigurator's A100
    rows in measure_gpu's layout): the file it writes is read by the cost model, the device becomes measured, the
    host and date are recorded, and its GEMM/attention parameters come from the file."""
    from hetagent.backends.calibrate import default_gpu_path, gpu_document
    monkeypatch.setenv(cal.MEASURED_ENV, str(tmp_path))
    cat2, lab = _lab_catalog(cat)
    assert unc.status(lab) == "datasheet"
    doc = gpu_document(json.loads(FIXTURE.read_text()), device_id="a100-lab", catalog=cat2)
    assert doc["gpu"]["device_id"] == "a100-lab" and doc["gpu"]["catalog_peaks"]["tflops"]["fp16"] == 312
    assert doc["host"]["date"] and doc["host"]["hostname"]
    assert default_gpu_path(doc).name == "a100-lab.json"
    (tmp_path / "a100-lab.json").write_text(json.dumps(doc))
    info = unc.device_calibration(lab)
    assert info["status"] == "measured" and doc["host"]["date"][:10] in info["sources"][0]
    assert doc["host"]["hostname"] in info["sources"][0]
    p, src = rl.device_params(lab)
    assert src == "measured:a100-lab.json"
    fitted = cal.measured_devices()["a100-lab"]
    assert p["gemm"] == fitted["params"]["gemm"] and p["attention_prefill"] == fitted["params"]["attention_prefill"]
    assert fitted["stats"]["gemm"]["median_ape"] < 0.15          # the GEMM formula fits the recorded rows
    m = load_model("llama-3-8b")
    assert rl.prefill(m, lab, "fp16", 1, 1, 1, 2048).total_s != pytest.approx(
        rl.prefill(m, cat["a100"], "fp16", 1, 1, 1, 2048).total_s, rel=1e-4)
    assert rl.device_efficiency(lab)[1] == "operators measured"


def test_broken_calibration_file_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv(cal.MEASURED_ENV, str(tmp_path))
    (tmp_path / "h100.json").write_text("{not json")
    with pytest.raises(CostModelError, match="h100.json"):
        cal.measured_devices()


def test_gpu_names_map_to_catalog_ids(cat):
    from hetagent.costmodel.measured import catalog_id_for_gpu
    names = {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA H200": "h200", "NVIDIA A100-SXM4-80GB": "a100",
             "NVIDIA L40S": "l40s", "NVIDIA H100 PCIe": "h100-pcie", "NVIDIA B200": "b200",
             "AMD Instinct MI300X": "mi300x", "NVIDIA H200 NVL": "h200-nvl"}
    for name, want in names.items():
        assert catalog_id_for_gpu(name, cat) == want, name


# ------------------------------------------------------------------------------------------- MLPerf ratios
@needs_shared
def test_mlperf_ratios_within_20_percent_at_both_prompt_lengths():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mlperf_ratios
    res = mlperf_ratios.ratios()
    assert set(res["devices"]) == {"h100", "h200", "h100-pcie", "l40s", "mi300x", "b200"}
    for d, v in res["devices"].items():
        for p in ("300", "1024"):
            assert v["prompts"][p]["pass"], (d, p, v["prompts"][p])
    # what the issue found, still visible without the end-to-end factor: MI300X predicted ~1.7x its measurement
    assert res["devices"]["mi300x"]["prompts"]["300"]["error_uncalibrated"] > 0.5
    assert res["devices"]["b200"]["precision"]["weights"] == "fp4"


# ------------------------------------------------------------------------------------------- robustness
def _fake_planner(flip_below: float, dev: str = "gaudi3"):
    calls = []

    def plan_with(catalog):
        f = catalog[dev].efficiency_factor
        calls.append(f)
        if f < 0.3:
            return None                                   # nothing meets the SLA
        if f >= flip_below:
            return {"fleet": {dev: 2, "xeon-sapphirerapids": 1}, "tco_per_hour": 1.5}
        return {"fleet": {"h100": 3, "xeon-sapphirerapids": 1}, "tco_per_hour": 2.3 + (flip_below - f)}
    return plan_with, calls


def test_robustness_bisects_the_threshold(cat):
    from hetagent.placement.robustness import describe, robustness
    plan_with, calls = _fake_planner(0.8)
    r = robustness(plan_with, cat, tolerance=0.005)
    assert len(r) == 1 and r[0]["device"] == "gaudi3" and r[0]["status"] == "datasheet"   # the CPU has no interval
    e = r[0]
    assert not e["holds"] and set(e) == {"device", "status", "holds", "alternative", "threshold"}
    assert e["threshold"] == pytest.approx(0.8, abs=0.006) and e["alternative"]["fleet"] == {"h100": 3,
                                                                                              "xeon-sapphirerapids": 1}
    assert min(calls) == pytest.approx(1.0 / unc.interval("datasheet")["high"])
    assert "buy 3 x h100 + 1 x xeon-sapphirerapids instead" in describe(e, 1.5)
    plan_with, _ = _fake_planner(0.2)                     # holds at the pessimistic end
    assert robustness(plan_with, cat)[0] == {"device": "gaudi3", "status": "datasheet", "holds": True,
                                             "alternative": None, "threshold": None}


def test_robustness_skips_measured_devices_and_reports_no_plan(cat):
    from hetagent.placement.robustness import robustness

    def plan_with(catalog):
        if catalog["mi355x"].efficiency_factor < 0.9:
            return None
        return {"fleet": {"a100": 1, "mi355x": 1}, "tco_per_hour": 3.0}
    r = robustness(plan_with, cat)
    assert [e["device"] for e in r] == ["mi355x"]          # a100 is measured: not re-planned
    assert r[0]["holds"] is False and r[0]["alternative"] is None and 0.9 <= r[0]["threshold"] <= 0.92
    with pytest.raises(HetagentError, match="needs a plan"):
        robustness(lambda c: None, cat)


@pytest.mark.slow
def test_robustness_through_the_planner(cat):
    """One real call: the voice agent planned with hetagent.placement.place on the default catalog."""
    from hetagent import api
    from hetagent.costmodel.operators import cost_table
    from hetagent.costmodel.tco import load_tco
    from hetagent.placement import place
    from hetagent.placement.robustness import robustness
    g = api.operator_graph(str(ROOT / "configs" / "workflows" / "voice_agent.yaml"))
    tco = load_tco("default")
    priced = {k: d for k, d in cat.items() if d.price_usd is not None}

    def plan_with(c):
        return place([g], [cost_table(g, c, precisions=("fp16", "bf16"))], None, tco, c, with_baselines=False,
                     time_limit_s=30)
    base = plan_with(priced)
    r = robustness(plan_with, priced, baseline=base, tolerance=0.1)
    checked = [d for d in base.fleet if unc.status(priced[d]) in ("datasheet", "calibrated")
               and unc.interval(unc.status(priced[d]), priced[d])["high"]]
    assert [e["device"] for e in r] == checked and checked
    for e in r:
        assert e["holds"] or e["threshold"] is not None
        if e["alternative"]:
            assert e["alternative"]["tco_per_hour"] > 0 and e["alternative"]["fleet"]
