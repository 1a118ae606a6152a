"""Model cards: configs/models/<id>.yaml (shape, parameter counts, precisions, sources)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hetagent.configs import config_dir as _config_dir
from hetagent.configs import Where, read_yaml
from hetagent.errors import InputError, unknown_choice

FAMILIES = ("llm", "stt", "tts", "embedding")
MODEL_PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
BYTES_PER_ELEMENT = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
                     "int4": 0.5, "fp4": 0.5}

_INTS = ("layers", "hidden_size", "heads", "kv_heads", "head_dim", "intermediate_size", "vocab_size",
         "params_total", "params_active", "max_context")
_OPTIONAL_INTS = ("encoder_layers", "decoder_layers", "n_mels", "audio_frames_per_second",
                  "max_source_positions", "sample_rate_hz", "embedding_dim")
_KEYS = {"id", "name", "family", "experts", "gated_mlp", "precisions", "sources", "estimates", "notes",
         *_INTS, *_OPTIONAL_INTS}


def bytes_per_element(precision: str) -> float:
    if precision not in BYTES_PER_ELEMENT:
        raise unknown_choice("precision", precision, BYTES_PER_ELEMENT)
    return BYTES_PER_ELEMENT[precision]


@dataclass(frozen=True)
class ModelCard:
    id: str
    name: str
    family: str
    layers: int | None              # decoder layers for whisper (they hold the KV cache)
    hidden_size: int | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    intermediate_size: int | None
    vocab_size: int | None
    params_total: int
    params_active: int
    experts: dict | None            # {count, top_k} or None
    gated_mlp: bool
    max_context: int | None
    precisions: tuple[str, ...]
    sources: dict[str, str]
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    n_mels: int | None = None
    audio_frames_per_second: int | None = None
    max_source_positions: int | None = None
    sample_rate_hz: int | None = None
    embedding_dim: int | None = None
    estimates: dict[str, str] = field(default_factory=dict)
    path: str | None = field(default=None, compare=False)

    def kv_bytes_per_token(self, precision: str = "fp16") -> float:
        """K and V for one token over all layers: 2 * layers * kv_heads * head_dim * bytes."""
        if not (self.layers and self.kv_heads and self.head_dim):
            return 0.0
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_element(precision)

    def weight_bytes(self, precision: str = "fp16") -> float:
        return self.params_total * bytes_per_element(precision)

    def attention_flops_per_token(self, context: int) -> float:
        """Score (QK^T) and mix (AV) matmuls of one new token against `context` cached tokens."""
        if not (self.layers and self.heads and self.head_dim):
            return 0.0
        return 4.0 * self.layers * self.heads * self.head_dim * context

    def flops_per_token(self, context: int = 0) -> float:
        """2 * active parameters (one multiply-add each) plus attention over `context` tokens."""
        return 2.0 * self.params_active + self.attention_flops_per_token(context)


def _err(where: Where, fld: str, msg: str) -> InputError:
    return where.error(fld, msg)


def model_from_mapping(data, where: Where, expect_id: str | None = None) -> ModelCard:
    if not isinstance(data, dict):
        raise _err(where, "", "a model card must be a mapping")
    for k in data:
        if k not in _KEYS:
            raise _err(where, str(k), f"unknown field; allowed: {', '.join(sorted(_KEYS))}")
    for k in ("id", "name", "family", "params_total", "params_active", "gated_mlp", "precisions", "sources",
              *_INTS, "experts"):
        if k not in data:
            raise _err(where, "", f"missing required field '{k}'")
    if expect_id is not None and data["id"] != expect_id:
        raise _err(where, "id", f"id '{data['id']}' does not match the file name '{expect_id}'")
    if data["family"] not in FAMILIES:
        raise _err(where, "family", f"must be one of {', '.join(FAMILIES)}, got {data['family']!r}")
    for k in (*_INTS, *_OPTIONAL_INTS):
        v = data.get(k)
        if v is None:
            if k in ("params_total", "params_active") or (k in _INTS and data["family"] in ("llm", "stt")):
                raise _err(where, k, "required (a positive whole number)")
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise _err(where, k, f"must be a positive whole number, got {v!r}")
    if data["params_active"] > data["params_total"]:
        raise _err(where, "params_active", "cannot exceed params_total")
    if data["family"] == "stt":
        for k in ("encoder_layers", "decoder_layers", "n_mels", "audio_frames_per_second"):
            if data.get(k) is None:
                raise _err(where, "", f"a speech-to-text card needs '{k}'")
    experts = data["experts"]
    if experts is not None:
        if (not isinstance(experts, dict) or set(experts) != {"count", "top_k"}
                or not all(isinstance(experts[k], int) and experts[k] > 0 for k in experts)
                or experts["top_k"] > experts["count"]):
            raise _err(where, "experts", "expected null or {count, top_k} with 0 < top_k <= count")
    if not isinstance(data["gated_mlp"], bool):
        raise _err(where, "gated_mlp", "must be true or false")
    precs = data["precisions"]
    if not isinstance(precs, list) or not precs or any(p not in MODEL_PRECISIONS for p in precs):
        raise _err(where, "precisions", f"expected a non-empty list among {', '.join(MODEL_PRECISIONS)}")
    sources = data["sources"]
    if not isinstance(sources, dict) or not sources or not all(isinstance(v, str) and v for v in sources.values()):
        raise _err(where, "sources", "expected a mapping of field (or 'card') to a source URL or note")
    if not ({"card", "config"} & set(sources)):
        raise _err(where, "sources", "needs a 'card' or 'config' source")
    estimates = data.get("estimates") or {}
    if not isinstance(estimates, dict):
        raise _err(where, "estimates", "expected a mapping of field to method")
    return ModelCard(
        id=data["id"], name=data["name"], family=data["family"],
        **{k: data.get(k) for k in _INTS}, **{k: data.get(k) for k in _OPTIONAL_INTS},
        experts=experts, gated_mlp=data["gated_mlp"], precisions=tuple(precs), sources=dict(sources),
        estimates=dict(estimates), path=where.file,
    )


def load_model_file(path: str | Path) -> ModelCard:
    path = Path(path)
    data, lines = read_yaml(path)
    return model_from_mapping(data, Where(path, lines), expect_id=path.stem)


def load_models(config_dir=None) -> dict[str, ModelCard]:
    folder = _config_dir(config_dir) / "models"
    return {p.stem: load_model_file(p) for p in sorted(folder.glob("*.yaml"))}


def load_model(model_id: str, config_dir=None) -> ModelCard:
    path = _config_dir(config_dir) / "models" / f"{model_id}.yaml"
    if not path.is_file():
        folder = path.parent
        raise unknown_choice("model", model_id, sorted(p.stem for p in folder.glob("*.yaml")))
    return load_model_file(path)
