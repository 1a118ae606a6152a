"""Operator executors: what a replica of a serving pool runs for one operator, real, emulated or remote.

An executor takes the request's context (deadline, id) and the payloads of its predecessors (dicts)
and returns one payload dict. Payload keys: `audio`/`sample_rate` (16 kHz float32 input), `feats`,
`enc` (whisper), `question` (the transcript or the text asked), `text` (the latest text produced),
`vec`, `passages`, `tool_results`, `prompt`/`first` (an LLM prompt and the first token its prefill
chose), `phonemes`, `audio_out`/`out_rate` (speech out).

Real executors wrap hetagent.backends: whisper-tiny, MiniLM, FAISS, Piper, the loopback search tool,
sandboxed code, and for every LLM operator an engine process per replica, llama.cpp's
OpenAI-compatible server (hetagent.backends.llm_server), as a GPU deployment runs a vLLM server per
replica. Prefill asks the engine for the first token (its time is the time to first token) and the
prompt's KV cache; decode continues on the decode pool's own engine from that KV (llama.cpp's sequence
state, imported by the engine: the hand-off, timed as the `llm.kv_transfer` stage, export plus import)
and generates. Where no KV came along (an emulated or remote prefill) or the engine refuses it, decode
rebuilds the KV by recomputing the prompt, timed the same way with mode `recompute`. LLM operators may
instead be bound to an existing OpenAI-compatible endpoint.

An operator placed on a device that is absent here is *emulated* by hetagent.runtime.pools: the small
real model of its kind (the stand-in) computes the output here, and the pool holds the call for the
plan's predicted device time.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from hetagent.errors import HetagentError

LLM_KINDS = ("llm.prefill", "llm.decode", "llm.remote")
STRUCTURAL = ("expert.gate", "expert.tp_prefill", "expert.merge", "comm.allreduce", "expert.tp_decode")
# in-process operators with no model, no I/O and (near) no compute: a replica runs them inline on its
# event loop (no batcher, no worker thread), and a chain of them on one device is fused into one call
CHEAP_KINDS = ("memory.load", "memory.store", "memory.rerank", "tool.compute") + STRUCTURAL


@dataclass
class OpSpec:
    """Everything a replica needs, picklable: built by deploy from the plan."""
    name: str                      # pool name (operator, or node when loop copies share a pool)
    kind: str
    attrs: dict
    device: str
    service_ms: float              # the plan's time for one execution in its slot (queueing excluded)
    batch: int = 1
    emulated: bool = False
    threads: int = 1
    tool_url: str | None = None
    tool_timeout_s: float = 10.0
    endpoint: dict | None = None   # {"base_url", "model", "api_key", "timeout_s"}
    standin_max_prompt: int = 192  # emulated LLMs: the stand-in reads at most this many tokens
    standin_max_output: int = 12   # ... and writes at most this many
    bound: str = ""                # the placement's bound resource (compute, memory, network, ...)
    code: str | None = None        # compute.code source (else a stand-in burning cpu_ms)
    code_limits: dict = field(default_factory=dict)
    corpus_vectors: object = None  # memory.vector_search: (vectors, passages)
    embed_asset: dict | None = None  # embed.encode: a built llvm-cpu manifest entry (+ "_base_dir")


def is_cheap(spec: OpSpec) -> bool:
    """Run on the replica's event loop (and fusable): a cheap kind, real (an emulated one holds its
    device time), no endpoint."""
    return spec.kind in CHEAP_KINDS and not spec.emulated and spec.endpoint is None


def waits_on_io(spec: OpSpec) -> bool:
    """An I/O-bound operator (a tool, a remote API, a bound endpoint): many calls at once per replica."""
    return spec.kind in ("tool.lookup", "llm.remote") or spec.bound == "network" \
        or spec.endpoint is not None


class ModelCache:
    """Models loaded once per process (a replica, or the benchmark's direct calls)."""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._m: dict[str, object] = {}

    def get(self, key: str):
        if key not in self._m:
            t = self.threads
            if key == "whisper":
                from hetagent.backends.stt import WhisperSTT
                self._m[key] = WhisperSTT(threads=t)
            elif key == "minilm":
                try:
                    import torch
                    torch.set_num_threads(t)
                except ImportError:
                    pass
                from hetagent.backends.embed import Embedder
                self._m[key] = Embedder()
            elif key == "engine":     # one llama.cpp server process per replica
                from hetagent.backends.llm_server import LlamaServer
                self._m[key] = LlamaServer(threads=t).start()
            elif key == "piper":
                from hetagent.backends.tts import PiperTTS
                self._m[key] = PiperTTS(threads=t)
            else:
                raise HetagentError(f"no model '{key}'")
        return self._m[key]

    def loaded(self, key: str):
        return self._m.get(key)

    def close(self) -> None:
        """Stops the engine processes this cache started."""
        eng = self._m.pop("engine", None)
        if eng is not None:
            eng.stop()


def merge(inputs: list[dict]) -> dict:
    """Payloads of several predecessors as one: later wins, lists concatenate."""
    out: dict = {}
    for d in inputs:
        if not isinstance(d, dict):
            continue
        for k, v in d.items():
            if k in ("passages", "tool_results") and k in out:
                out[k] = list(out[k]) + [x for x in v if x not in out[k]]
            else:
                out[k] = v
    return out


def _kv_bytes(kv: dict) -> int:
    """Bytes of a KV hand-off's state (base64 in the payload)."""
    data = kv.get("data") or ""
    return len(data) * 3 // 4 - data[-2:].count("=")


def _remaining(ctx: dict) -> float:
    """Seconds until the router gives the request up (not its SLA deadline: late beats failed)."""
    dl = ctx.get("cutoff", ctx.get("deadline"))
    return float("inf") if dl is None else dl - time.time()


class Executor:
    """Runs one operator kind on one payload. `run` returns (payload, info)."""

    def __init__(self, spec: OpSpec, models: ModelCache | None = None):
        self.spec = spec
        self.models = models or ModelCache(spec.threads)
        self.kind = spec.kind
        self.a = spec.attrs
        self._index = None
        self._store: dict[str, str] = {}
        self._endpoint = None
        self._compiled = None
        if spec.endpoint and spec.kind in LLM_KINDS:
            from hetagent.backends.openai_endpoint import OpenAIEndpoint
            e = spec.endpoint
            self._endpoint = OpenAIEndpoint(e["base_url"], e.get("model", "default"),
                                            e.get("api_key"), float(e.get("timeout_s", 30)))

    # -- loading -------------------------------------------------------------------------------
    def warm(self) -> None:
        """Loads what this operator needs (before the first request)."""
        k = self.kind
        if self._endpoint is not None:
            return
        if k.startswith("speech.") and k in ("speech.frontend", "speech.encode", "speech.decode"):
            self.models.get("whisper")
        elif k in ("speech.phonemize", "speech.synthesize"):
            self.models.get("piper")
        elif k == "embed.encode":
            self.embedder()
        elif k in LLM_KINDS:
            self.models.get("engine")
            self.tokens("warm up")
        elif k == "memory.vector_search":
            self._build_index()

    def embedder(self):
        """embed.encode's model: the compiled llvm-cpu asset when the deployment was given one
        (hetagent.backends.codegen.CompiledEmbedder, the same interface), else eager MiniLM."""
        if self.spec.embed_asset is not None:
            if self._compiled is None:
                from hetagent.backends.codegen import CompiledEmbedder
                e = self.spec.embed_asset
                self._compiled = CompiledEmbedder(e, e.get("_base_dir"))
            return self._compiled
        return self.models.get("minilm")

    def _build_index(self):
        if self._index is None:
            from hetagent.backends.vector_search import VectorIndex
            vecs, passages = self.spec.corpus_vectors
            self._index = (VectorIndex.from_vectors(np.asarray(vecs, np.float32)), passages)
        return self._index

    # -- one call ------------------------------------------------------------------------------
    def run(self, ctx: dict, inputs: list[dict]) -> tuple[dict, dict]:
        p = merge(inputs)
        fn = getattr(self, "_" + self.kind.replace(".", "_"), None)
        if self._endpoint is not None and self.kind in LLM_KINDS:
            fn = self._remote_llm
        elif fn is None:
            fn = self._passthrough
        info: dict = {}
        out = fn(ctx, p, info)
        return out, info

    def run_batch(self, items: list[tuple[dict, list[dict]]]) -> list[tuple[dict, dict]]:
        if self.kind == "embed.encode" and self._endpoint is None and len(items) > 1:
            texts = [_query(merge(inp)) for _, inp in items]
            vecs, s = self.embedder().encode(texts)
            info = {"batched": len(items)}
            if self.spec.embed_asset is not None:
                info["compiled"] = "llvm-cpu"
            return [({**merge(inp), "vec": vecs[i]}, dict(info))
                    for i, (_, inp) in enumerate(items)]
        out = []
        for ctx, inp in items:
            try:
                out.append(self.run(ctx, inp))
            except Exception as e:  # noqa: BLE001 - one bad item must not sink its batch
                out.append((e, {}))
        return out

    # -- kinds ---------------------------------------------------------------------------------
    def _passthrough(self, ctx, p, info):
        return p

    def _speech_frontend(self, ctx, p, info):
        if "audio" not in p:
            return p                                  # text came in: nothing to hear
        stt = self.models.get("whisper")
        feats, s = stt.frontend(np.array(p["audio"], copy=True))
        wins = stt.windows(feats)
        out = {k: v for k, v in p.items() if k != "audio"}
        out["feats"] = np.stack(wins)
        return out

    def _speech_encode(self, ctx, p, info):
        if "feats" not in p:
            return p
        stt = self.models.get("whisper")
        encs = [np.array(stt.encode(np.array(w, copy=True))[0]) for w in p["feats"]]
        out = {k: v for k, v in p.items() if k != "feats"}
        out["enc"] = encs
        return out

    def _speech_decode(self, ctx, p, info):
        if "enc" not in p:
            return p
        import ctranslate2
        stt = self.models.get("whisper")
        texts = []
        for e in p["enc"]:
            ids, _ = stt.decode(ctranslate2.StorageView.from_array(np.array(e, copy=True)))
            texts.append(stt.tokenizer.decode(ids).strip())
        text = " ".join(t for t in texts if t)
        out = {k: v for k, v in p.items() if k != "enc"}
        out["question"] = out["text"] = text
        return out

    def _embed_encode(self, ctx, p, info):
        vecs, _ = self.embedder().encode([_query(p)])
        if self.spec.embed_asset is not None:
            info["compiled"] = "llvm-cpu"
        return {**p, "vec": vecs[0]}

    def _memory_vector_search(self, ctx, p, info):
        index, passages = self._build_index()
        if "vec" not in p:
            return p
        k = int(self.a.get("top_k", 3))
        _, ids, _ = index.search(p["vec"], k)
        found = [passages[i] for i in ids[0] if i >= 0]
        out = {k2: v for k2, v in p.items() if k2 != "vec"}
        out["passages"] = list(out.get("passages", [])) + found
        return out

    def _memory_rerank(self, ctx, p, info):
        return p

    def _memory_store(self, ctx, p, info):
        self._store[str(ctx.get("session", ctx.get("request_id")))] = str(p.get("text", ""))[:65536]
        return p

    def _memory_load(self, ctx, p, info):
        hist = self._store.get(str(ctx.get("session", "")), "")
        return {**p, "history": hist} if hist else p

    def _prompt(self, p) -> str:
        ctx_lines = [f"- {x[:600]}" for x in p.get("passages", [])]
        ctx_lines += [f"- (search) {x[:600]}" for x in p.get("tool_results", [])]
        q = p.get("question") or p.get("text") or ""
        return ("Notes:\n" + "\n".join(ctx_lines) + f"\n\nQuestion: {q}\nAnswer:") if ctx_lines \
            else f"Question: {q}\nAnswer:"

    def _llm_budget(self) -> tuple[int, int]:
        prompt = int(self.a.get("prompt_tokens", 256) or 256)
        out = int(self.a.get("output_tokens", 32) or 32)
        if self.spec.emulated:
            prompt, out = min(prompt, self.spec.standin_max_prompt), min(out, self.spec.standin_max_output)
        return max(prompt, 8), max(out, 1)

    def tokens(self, text: str) -> list[int]:
        from hetagent.backends.llm_server import tokenizer
        return tokenizer().tokenize(text.encode("utf-8"), add_bos=False)

    def _cut_prompt(self, text: str) -> tuple[str, int]:
        """The prompt cut to the operator's prompt tokens (the question kept at its end)."""
        from hetagent.backends.llm_server import tokenizer
        budget, _ = self._llm_budget()
        toks = self.tokens(text)
        if len(toks) <= budget:
            return text, len(toks)
        toks = toks[len(toks) - budget:]
        return tokenizer().detokenize(toks).decode("utf-8", errors="replace"), len(toks)

    def _llm_prefill(self, ctx, p, info):
        """The engine reads the prompt and picks the first token (the time to first token); a real
        prefill also exports the prompt's KV for the decode pool (a stand-in's decode recomputes: an
        emulated hand-off is held at the ingress, and its outputs may be shared)."""
        prompt, n = self._cut_prompt(self._prompt(p))
        eng = self.models.get("engine")
        out = {**p, "prompt": prompt}
        if self.spec.emulated:
            first, usage, _ = eng.complete(prompt, 1, timeout_s=_remaining(ctx))
        else:
            first, usage, _, kv = eng.prefill(prompt, timeout_s=_remaining(ctx))
            out["kv"] = kv
            info.update(kv_export_ms=float(kv.get("export_ms", 0.0)), kv_bytes=_kv_bytes(kv))
        info.update(prompt_tokens=usage.get("prompt_tokens", n))
        out["first"] = first
        return out

    def _llm_decode(self, ctx, p, info):
        """Continues from prefill's first token on this pool's engine, from the KV prefill handed over
        (the engine imports it: kv_restore_ms) or, without one, after rebuilding it by recomputing
        the prompt (kv_restore_ms is that recompute; the engine reuses the cache for the second call)."""
        from hetagent.backends.openai_endpoint import EndpointError
        from hetagent.backends.llm_server import EngineUnavailable
        eng = self.models.get("engine")
        _, n = self._llm_budget()
        prompt = p.get("prompt") or self._cut_prompt(self._prompt(p))[0]
        first = p.get("first", "")
        context = prompt + first
        kv = p.get("kv")
        text, usage, mode = "", {}, "recompute"
        if kv is not None and n > 1:
            try:
                text, usage, _, restore_ms = eng.decode(context, n - 1, kv, timeout_s=_remaining(ctx))
                mode = "transfer"
                info.update(kv_restore_ms=restore_ms, kv_bytes=_kv_bytes(kv), kv_mode=mode)
            except EngineUnavailable:
                raise
            except EndpointError as e:         # the engine refused this KV: rebuild it instead
                info["kv_refused"] = str(e)
        if mode == "recompute":
            _, _, rebuild_s = eng.complete(context, 1, timeout_s=_remaining(ctx))
            if n > 1:
                text, usage, _ = eng.complete(context, n - 1, timeout_s=_remaining(ctx))
            info.update(kv_restore_ms=rebuild_s * 1000, kv_bytes=len(context.encode("utf-8")),
                        kv_mode=mode)
        info.update(output_tokens=1 + int(usage.get("completion_tokens", 0)))
        out = {k: v for k, v in p.items() if k not in ("prompt", "first", "kv")}
        out["text"] = (first + text).strip() or "(no answer)"
        return out

    def _llm_remote(self, ctx, p, info):
        _, n = self._llm_budget()
        prompt, _ = self._cut_prompt(self._prompt(p))
        text, _, _ = self.models.get("engine").complete(prompt, n, timeout_s=_remaining(ctx))
        return {**p, "text": text.strip() or "(no answer)"}

    def _remote_llm(self, ctx, p, info):
        """Bound to an OpenAI-compatible endpoint: prefill only carries the prompt; decode calls."""
        if self.kind == "llm.prefill":
            return {**p, "prompt": self._prompt(p)}
        _, n = self._llm_budget()
        prompt = p.get("prompt") or self._prompt(p)
        text, usage, s = self._endpoint.complete(prompt, n, timeout_s=_remaining(ctx))
        info.update(endpoint=self._endpoint.base_url, usage=usage)
        out = {k: v for k, v in p.items() if k not in ("prompt", "first")}
        out["text"] = text.strip() or "(no answer)"
        return out

    def _tool_lookup(self, ctx, p, info):
        from hetagent.backends import http_tool
        if not self.spec.tool_url:
            raise HetagentError(f"tool '{self.a.get('tool', '?')}' has no server")
        timeout = min(self.spec.tool_timeout_s, _remaining(ctx))
        query = p.get("text") or p.get("question") or ""
        doc, nbytes = http_tool.search(self.spec.tool_url, query, 3, timeout)
        info["response_bytes"] = nbytes
        return {**p, "tool_response": doc}

    def _tool_compute(self, ctx, p, info):
        doc = p.get("tool_response") or {}
        results = [r.get("text", "")[:800] for r in doc.get("results", [])]
        out = {k: v for k, v in p.items() if k != "tool_response"}
        out["tool_results"] = list(out.get("tool_results", [])) + results
        return out

    def _compute_code(self, ctx, p, info):
        from hetagent.backends import sandbox
        lim = sandbox.Limits(**self.spec.code_limits) if self.spec.code_limits else sandbox.Limits()
        lim.wall_seconds = max(0.05, min(lim.wall_seconds, _remaining(ctx)))
        src = self.spec.code or sandbox.standin_source(float(self.a.get("cpu_ms", 1.0)),
                                                       min(int(self.a.get("output_bytes", 64)), 4096))
        inputs = {"text": str(p.get("text", ""))[:4096], "question": _query(p)}
        res = sandbox.run_code(src, inputs, lim)
        info["sandbox_ms"] = res.seconds * 1000
        info["child_cpu_ms"] = res.cpu_seconds * 1000    # not in this process's CPU time
        out = {**p, "code_result": res.result}
        if self.spec.code:   # real code: its `text` (or Dify's `result`) is the text handed on
            text = res.result.get("text", res.result.get("result"))
            if isinstance(text, str):
                out["text"] = text
        return out

    def _compute_fused(self, ctx, p, info):
        if "tool_response" in p:
            p = self._tool_compute(ctx, p, info)
        return self._compute_code(ctx, p, info)

    def _speech_phonemize(self, ctx, p, info):
        tts = self.models.get("piper")
        text = str(p.get("text", ""))[:2000] or "No answer."
        ph, _ = tts.phonemize(text)
        return {**p, "phonemes": ph}

    def _speech_synthesize(self, ctx, p, info):
        tts = self.models.get("piper")
        ph = p.get("phonemes")
        if ph is None:
            ph, _ = tts.phonemize(str(p.get("text", "")) or "No answer.")
        audio, _ = tts.synthesize_phonemes(ph)
        out = {k: v for k, v in p.items() if k != "phonemes"}
        out["audio_out"], out["out_rate"] = audio, tts.sample_rate
        return out


def _query(p: dict) -> str:
    return str(p.get("question") or p.get("text") or "")[:2000]


def make_executor(spec: OpSpec, models: ModelCache | None = None) -> Executor:
    return Executor(spec, models)


def corpus_vectors(models: ModelCache | None = None):
    """(MiniLM vectors, passage texts) of the bundled corpus, cached on disk by content hash."""
    import hashlib
    import pickle

    from hetagent.backends import corpus
    from hetagent.backends.models import cache_dir
    passages = [p.embed_text() for p in corpus.load_passages()]
    h = hashlib.sha256("\n\x00".join(passages).encode()).hexdigest()[:16]
    f = cache_dir() / f"corpus-minilm-{h}.pkl"
    if f.exists():
        try:
            return pickle.loads(f.read_bytes())
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            pass
    models = models or ModelCache(1)
    vecs, _ = models.get("minilm").encode(passages)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((vecs, passages)))
    os.replace(tmp, f)
    return vecs, passages
