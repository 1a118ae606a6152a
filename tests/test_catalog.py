"""The catalog data (devices, models) and its loaders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hetagent.configs import config_dir
from hetagent.costmodel.devices import (
    cost_efficiency, devices_json, format_devices_table, get_device, load_catalog, load_device,
)
from hetagent.costmodel.models import load_model, load_models
from hetagent.errors import CatalogError, InputError

DEVICE_IDS = {"xeon-sapphirerapids", "epyc-genoa", "epyc-turin", "t4", "l4", "a10g", "a40", "l40s", "a100",
              "h100", "h100-pcie", "h200", "b200", "mi300x", "gaudi3",
              "mi325x", "mi355x", "h200-nvl", "gb200", "rtx-pro-6000", "arc-pro-b60"}
MODEL_IDS = {"llama-3-8b", "llama-3-70b", "llama-2-7b", "llama-2-70b", "phi-2", "mixtral-8x7b", "whisper-tiny",
             "whisper-small", "whisper-large-v3", "all-minilm-l6-v2", "gemma-3-270m", "piper-joe-medium"}
PAPER = "Asgar et al. 2025 (arXiv 2507.19635)"


def test_default_catalog_has_every_device():
    assert set(load_catalog()) == DEVICE_IDS


@pytest.mark.parametrize("catalog", ["default", "paper-2025"])
def test_every_non_null_figure_has_a_source_and_every_null_a_note(catalog):
    for dev in load_catalog(catalog).values():
        assert dev.figures, dev.id
        for key, fig in dev.figures.items():
            if fig.value is None:
                assert fig.note, f"{dev.id}.{key} is null without a note"
            else:
                assert fig.source and fig.source.strip(), f"{dev.id}.{key} has no source"
        assert dev.peak_tflops and dev.memory_gb and dev.memory_bandwidth_gbs and dev.tdp_w, dev.id


def test_dense_figures_fix_the_papers_errors():
    c = load_catalog()
    assert c["h100"].peak_tflops["fp16"] == pytest.approx(989.4)      # paper: 1979 (sparse)
    assert c["a100"].peak_tflops["fp16"] == 312                       # paper: 322
    assert c["a40"].peak_tflops["fp16"] == pytest.approx(149.7)       # paper: 75 (its TF32 rate)
    assert c["a40"].peak_tflops["tf32"] == pytest.approx(74.8)
    for d in c.values():    # dense: fp8 never more than 2x fp16 where both exist
        if "fp8" in d.peak_tflops and "fp16" in d.peak_tflops:
            assert d.peak_tflops["fp8"] <= 2.05 * d.peak_tflops["fp16"], d.id


def test_paper_catalog_values_as_printed():
    printed = {  # id: (price, memory GB, bandwidth GB/s, fp16 TFLOPS, operating cost $/h)
        "a40": (3000, 48, 696, 75, 0.15), "a100": (8000, 80, 2039, 322, 0.25),
        "gaudi3": (12500, 128, 3700, 1678, 0.49), "mi300x": (20000, 192, 5300, 1307, 0.52),
        "h100": (25000, 80, 3350, 1979, 0.60), "b200": (40000, 192, 8000, 2250, 0.83),
    }
    c = load_catalog("paper-2025")
    assert set(printed) <= set(c)
    assert any(d.is_cpu for d in c.values()), "the paper catalog needs a CPU for the non-LLM operators"
    for i, (price, mem, bw, fp16, op) in printed.items():
        d = c[i]
        assert (d.price_usd, d.memory_gb, d.memory_bandwidth_gbs, d.peak_tflops["fp16"]) == (price, mem, bw, fp16)
        assert d.operating_cost_usd_per_hour == op
        for key in ("price_usd", "memory_gb", "memory_bandwidth_gbs", "peak_tflops.fp16"):
            assert d.figures[key].source.startswith(PAPER), (i, key)
        assert d.tdp_w == load_catalog()[i].tdp_w          # filled from the default catalog
        assert "default catalog" in d.figures["tdp_w"].source
    assert "sparsity" in c["h100"].figures["peak_tflops.fp16"].note.lower()
    assert "tf32" in c["a40"].figures["peak_tflops.fp16"].note.lower()
    assert "312" in c["a100"].figures["peak_tflops.fp16"].note


def test_cpu_peaks_are_marked_estimates_and_consistent():
    for d in load_catalog().values():
        if not d.is_cpu:
            continue
        assert d.cores and d.all_core_clock_ghz and d.vector_isa
        for p in d.peak_tflops:
            assert d.figures[f"peak_tflops.{p}"].estimate, (d.id, p)
        per_cycle = d.figures["cpu.vector.fp32_flops_per_cycle_per_core"].value
        assert d.peak_tflops["fp32"] == pytest.approx(d.cores * d.all_core_clock_ghz * per_cycle / 1000, rel=1e-3)
        assert d.figures["memory_bandwidth_gbs"].estimate
    spr = get_device("xeon-sapphirerapids")
    assert spr.matrix_isa == "amx"
    assert spr.peak_tflops["bf16"] == pytest.approx(56 * 3.0 * 1024 / 1000)


def test_devices_json_shape():
    doc = devices_json()
    assert set(doc) == {"version", "devices"} and doc["version"] == 1
    json.dumps(doc)                                       # serializable
    ids = [d["id"] for d in doc["devices"]]
    assert set(ids) == DEVICE_IDS
    h100 = next(d for d in doc["devices"] if d["id"] == "h100")
    for k in ("name", "vendor", "kind", "peak_tflops", "memory_gb", "memory_bandwidth_gbs", "tdp_w", "price_usd",
              "rent_usd_per_hour", "scaleup_bandwidth_gbs", "devices_per_node", "scaleout_nic_gbps", "sources",
              "cost_efficiency"):
        assert k in h100
    assert h100["sources"]["memory_gb"]
    assert h100["cost_efficiency"]["usd_per_gbs"] == pytest.approx(25000 / 3350, rel=1e-3)
    assert devices_json("paper-2025")["devices"]


def test_format_devices_table_lists_every_device():
    text = format_devices_table()
    for i in DEVICE_IDS:
        assert i in text
    assert "~" in text      # estimates are marked


def test_cost_efficiency():
    e = cost_efficiency(get_device("a100"))
    assert e == {"usd_per_gbs": pytest.approx(8000 / 2039, rel=1e-3), "usd_per_fp16_tflop": pytest.approx(8000 / 312, rel=1e-3),
                 "usd_per_gb": 100.0}
    assert cost_efficiency(get_device("mi300x"))["usd_per_gb"] == pytest.approx(20000 / 192, rel=1e-3)


def test_unknown_device_and_catalog():
    with pytest.raises(CatalogError, match="unknown device 'h900'; choices: a100"):
        get_device("h900")
    with pytest.raises(CatalogError, match="unknown catalog 'nope'.*paper-2025"):
        load_catalog("nope")


def _copy_configs(tmp_path: Path) -> Path:
    dst = tmp_path / "configs"
    shutil.copytree(config_dir(), dst)
    return dst


def test_bad_device_file_names_file_line_and_field(tmp_path):
    cfg = _copy_configs(tmp_path)
    path = cfg / "devices" / "a100.yaml"
    text = path.read_text()
    path.write_text(text.replace('tdp_w: {value: 400, source: "https://www.nvidia.com/content/dam/en-zz/Solutions/'
                                 'Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (Max TDP '
                                 '400W); Epoch row \'NVIDIA A100 SXM4 80 GB\'"}', "tdp_w: {value: 400}"))
    line = next(i for i, l in enumerate(path.read_text().splitlines(), 1) if l.startswith("tdp_w"))
    with pytest.raises(InputError) as exc:
        load_catalog(config_dir=cfg)
    assert exc.value.file.endswith("a100.yaml") and exc.value.field == "tdp_w" and exc.value.line == line
    assert f"a100.yaml:{line}: field 'tdp_w': every figure needs a source" in str(exc.value)


@pytest.mark.parametrize("bad, field, message", [
    ("memory_gb: {value: eighty, source: x}", "memory_gb", "must be a number"),
    ("memory_gb: {value: null, source: x}", "memory_gb", "add a note"),
    ("memory_gb: 80", "memory_gb", "expected a mapping"),
    ("memory_gbs: {value: 80, source: x}", "memory_gbs", "unknown field"),
])
def test_bad_device_values(tmp_path, bad, field, message):
    path = tmp_path / "a100.yaml"
    lines = [l for l in (config_dir() / "devices" / "a100.yaml").read_text().splitlines()]
    lines = [bad if l.startswith("memory_gb:") else l for l in lines]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        load_device(path)
    assert exc.value.field == field and message in str(exc.value) and "a100.yaml" in str(exc.value)


def test_id_must_match_file_name(tmp_path):
    path = tmp_path / "a101.yaml"
    path.write_text((config_dir() / "devices" / "a100.yaml").read_text())
    with pytest.raises(InputError, match="field 'id'.*does not match"):
        load_device(path)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("id: x\nname: [oops\n")
    with pytest.raises(InputError, match=r"x\.yaml:\d+: YAML syntax error"):
        load_device(path)


# ---------------------------------------------------------------- models

def test_every_model_loads_with_sources():
    models = load_models()
    assert set(models) == MODEL_IDS
    for m in models.values():
        assert m.sources.get("card") or m.sources.get("config"), m.id
        assert m.params_active <= m.params_total and m.precisions


def test_kv_cache_sizes_match_the_paper():
    assert load_model("llama-3-8b").kv_bytes_per_token("fp16") == 128 * 1024
    assert load_model("llama-3-70b").kv_bytes_per_token("fp16") == 320 * 1024
    assert load_model("llama-3-8b").kv_bytes_per_token("fp8") == 64 * 1024


def test_model_derived_quantities():
    m = load_model("llama-3-8b")
    assert m.weight_bytes("fp16") == 2 * 8030261248
    assert m.weight_bytes("int4") == 8030261248 / 2
    assert m.flops_per_token() == 2 * 8030261248
    assert m.flops_per_token(1000) == 2 * 8030261248 + 4 * 32 * 32 * 128 * 1000
    mix = load_model("mixtral-8x7b")
    assert mix.experts == {"count": 8, "top_k": 2} and mix.params_active < mix.params_total / 3
    w = load_model("whisper-large-v3")
    assert (w.encoder_layers, w.decoder_layers, w.n_mels, w.audio_frames_per_second) == (32, 32, 128, 50)
    assert load_model("piper-joe-medium").family == "tts"


def test_unknown_model_lists_ids():
    with pytest.raises(CatalogError, match="unknown model 'gpt-9'; choices: all-minilm-l6-v2"):
        load_model("gpt-9")


def test_bad_model_file(tmp_path):
    cfg = _copy_configs(tmp_path)
    path = cfg / "models" / "phi-2.yaml"
    path.write_text(path.read_text().replace("kv_heads: 32", "kv_heads: -1"))
    with pytest.raises(InputError) as exc:
        load_model("phi-2", config_dir=cfg)
    assert exc.value.field == "kv_heads" and exc.value.line == 7 and "phi-2.yaml" in str(exc.value)
