"""Operator executors: what one replica of a placed operator runs, real, emulated or remote.

An executor takes the request's context (deadline, id) and the payloads of its predecessors (dicts)
and returns one payload dict. Payload keys: `audio`/`sample_rate` (16 kHz float32 input), `feats`,
`enc` (whisper), `question` (the transcript or the text asked), `text` (the latest text produced),
`vec`, `passages`, `tool_results`, `kv` (llama.cpp KVState), `prompt`, `phonemes`,
`audio_out`/`out_rate` (speech out).

Real executors wrap hetagent.backends (whisper-tiny, MiniLM, FAISS, gemma-3-270m via llama.cpp,
Piper, the loopback search tool, sandboxed code). An operator placed on a device that is absent here
is *emulated*: the small real model of its kind (the stand-in) computes the output, which is released
at the later of the stand-in's finish and the plan's predicted latency; both times are reported, and
a stand-in slower than the prediction is flagged. LLM operators may instead be bound to an
OpenAI-compatible endpoint.

`OperatorActor` is the Ray actor around an executor: an asyncio actor whose calls queue into a
batcher (up to the planned batch size, a short wait to fill it), run on one worker thread (a model
context is not thread-safe), and answer (meta, payload) as two objects so the router reads the small
meta and hands the payload's reference straight to the next operator.
"""
from __future__ import annotations

import asyncio
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
    latency_ms: float              # the plan's prediction for one execution
    batch: int = 1
    emulated: bool = False
    threads: int = 1
    tool_url: str | None = None
    tool_timeout_s: float = 10.0
    endpoint: dict | None = None   # {"base_url", "model", "api_key", "timeout_s"}
    standin_max_prompt: int = 192  # emulated LLMs: the stand-in reads at most this many tokens
    standin_max_output: int = 12   # ... and writes at most this many
    code: str | None = None        # compute.code source (else a stand-in burning cpu_ms)
    code_limits: dict = field(default_factory=dict)
    corpus_vectors: object = None  # memory.vector_search: (vectors, passages)
    members: list | None = None    # a fused pool: the OpSpecs of a chain of cheap operators, in order
    embed_asset: dict | None = None  # embed.encode: a built llvm-cpu manifest entry (+ "_base_dir")


def is_cheap(spec: OpSpec) -> bool:
    """Run inline (and fusable): a cheap kind, real (an emulated one holds its device time), no endpoint."""
    return spec.kind in CHEAP_KINDS and not spec.emulated and spec.endpoint is None


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
            elif key == "gemma":
                from hetagent.backends.llm_llamacpp import LlamaCppLLM
                self._m[key] = LlamaCppLLM(n_ctx=2048, threads=t)
            elif key == "piper":
                from hetagent.backends.tts import PiperTTS
                self._m[key] = PiperTTS(threads=t)
            else:
                raise HetagentError(f"no model '{key}'")
        return self._m[key]


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
            self.models.get("gemma")
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

    def _llm_prefill(self, ctx, p, info):
        llm = self.models.get("gemma")
        budget, _ = self._llm_budget()
        toks = llm.tokenize(self._prompt(p))
        if len(toks) > budget:                        # keep the BOS and the question at the end
            toks = toks[:1] + toks[len(toks) - budget + 1:]
        state = llm.prefill_tokens(toks)
        info.update(prompt_tokens=len(toks), kv_bytes=state.nbytes,
                    kv_save_ms=state.save_seconds * 1000)
        return {**p, "kv": state}

    def _llm_decode(self, ctx, p, info):
        llm = self.models.get("gemma")
        _, n = self._llm_budget()
        state = p.get("kv")
        if state is None:
            state = llm.prefill(self._prompt(p))
        res = llm.decode(state, max_tokens=n)
        info.update(output_tokens=len(res.tokens), kv_bytes=state.nbytes,
                    kv_restore_ms=res.restore_seconds * 1000)
        out = {k: v for k, v in p.items() if k != "kv"}
        out["text"] = res.text.strip() or "(no answer)"
        return out

    def _llm_remote(self, ctx, p, info):
        llm = self.models.get("gemma")
        _, n = self._llm_budget()
        res = llm.generate(self._prompt(p), max_tokens=n)
        return {**p, "text": res.text.strip() or "(no answer)"}

    def _remote_llm(self, ctx, p, info):
        """Bound to an OpenAI-compatible endpoint: prefill only carries the prompt; decode calls."""
        if self.kind == "llm.prefill":
            return {**p, "prompt": self._prompt(p)}
        _, n = self._llm_budget()
        prompt = p.get("prompt") or self._prompt(p)
        text, usage, s = self._endpoint.complete(prompt, n, timeout_s=_remaining(ctx))
        info.update(endpoint=self._endpoint.base_url, usage=usage)
        out = {k: v for k, v in p.items() if k not in ("prompt", "kv")}
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


def run_once(ex: Executor, ctx: dict, inputs: list[dict]) -> tuple[dict, dict]:
    """One call with emulation applied, synchronously: (payload, meta). Used by the actor and the
    benchmark's direct path."""
    t0 = time.perf_counter()
    out, info = ex.run(ctx, inputs)
    own = time.perf_counter() - t0
    return out, _meta(ex.spec, own, own, info)


def _meta(spec: OpSpec, own_s: float, held_s: float, info: dict) -> dict:
    m = {"service_ms": held_s * 1000, "own_ms": own_s * 1000, "emulated": spec.emulated,
         "pid": os.getpid(), **info}
    if spec.emulated:
        m["predicted_ms"] = spec.latency_ms
        m["standin_slower"] = own_s * 1000 > spec.latency_ms
    return m


class OperatorReplica:
    """The body of the Ray actor (kept importable without Ray)."""

    def __init__(self, spec: OpSpec, index: int = 0):
        self.spec = spec
        self.index = index
        # a fused pool runs a chain of cheap operators, each with its own executor, in one call
        self.members = [make_executor(m) for m in spec.members] if spec.members else None
        for m in self.members or []:
            m.warm()
        self.ex = make_executor(spec) if self.members is None else None
        if self.ex is not None:
            self.ex.warm()
        self.inline = self.members is not None or is_cheap(spec)
        self.queue: asyncio.Queue | None = None
        self.worker = None
        self.calls = 0
        from concurrent.futures import ThreadPoolExecutor
        waits = spec.kind in ("tool.lookup", "llm.remote") or spec.endpoint is not None
        self.pool = ThreadPoolExecutor(max_workers=16 if waits else 1)
        self.waits = waits

    def info(self) -> dict:
        return {"pid": os.getpid(), "name": self.spec.name, "index": self.index,
                "emulated": self.spec.emulated, "device": self.spec.device}

    async def call(self, ctx: dict, *inputs):
        """(meta, payload). Inputs arrive resolved (Ray resolves top-level references)."""
        self.calls += 1
        if self.inline:    # cheap: run on the event loop, no batcher, no worker-thread hand-off
            return self._run_inline(ctx, list(inputs))
        loop = asyncio.get_running_loop()
        if self.waits:   # I/O-bound: concurrent, no batching; the emulated hold is per call
            t0 = time.perf_counter()
            out, info = await loop.run_in_executor(self.pool, self.ex.run, ctx, list(inputs))
            own = time.perf_counter() - t0
            if self.spec.emulated and own * 1000 < self.spec.latency_ms:
                await asyncio.sleep(self.spec.latency_ms / 1000 - own)
            return _meta(self.spec, own, time.perf_counter() - t0, info), out
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.ensure_future(self._drain())
        fut = loop.create_future()
        await self.queue.put((ctx, list(inputs), fut))
        meta, out = await fut
        if isinstance(out, Exception):
            raise out
        return meta, out

    def _run_inline(self, ctx: dict, inputs: list):
        if self.members is None:
            t0 = time.perf_counter()
            out, info = self.ex.run(ctx, inputs)
            own = time.perf_counter() - t0
            return _meta(self.spec, own, own, info), out
        metas = []
        t_all = time.perf_counter()
        for ex in self.members:
            t0 = time.perf_counter()
            out, info = ex.run(ctx, inputs)
            own = time.perf_counter() - t0
            metas.append(_meta(ex.spec, own, own, info))
            inputs = [out]
        own = time.perf_counter() - t_all
        return {**_meta(self.spec, own, own, {}), "members": metas}, out

    async def _drain(self):
        loop = asyncio.get_running_loop()
        b = max(1, int(self.spec.batch))
        while True:
            first = await self.queue.get()
            items = [first]
            if b > 1:
                end = loop.time() + 0.003
                while len(items) < b:
                    try:
                        items.append(await asyncio.wait_for(self.queue.get(),
                                                            max(0.0, end - loop.time())))
                    except asyncio.TimeoutError:
                        break
            t0 = time.perf_counter()
            try:
                if len(items) == 1:
                    res = [await loop.run_in_executor(self.pool, self.ex.run, items[0][0],
                                                      items[0][1])]
                else:
                    res = await loop.run_in_executor(
                        self.pool, self.ex.run_batch, [(c, i) for c, i, _ in items])
            except Exception as e:  # noqa: BLE001 - the error goes back to each caller
                res = [(e, {})] * len(items)
            own = time.perf_counter() - t0
            if self.spec.emulated and own * 1000 < self.spec.latency_ms:
                # the emulated device is busy for its predicted time per batch
                await asyncio.sleep(self.spec.latency_ms / 1000 - own)
            held = time.perf_counter() - t0
            for (_, _, fut), (out, info) in zip(items, res):
                if not fut.done():
                    meta = _meta(self.spec, own, held, {**info, "batch": len(items)})
                    fut.set_result((meta, out))


def ray_actor_class():
    """The Ray actor class (Ray imported lazily)."""
    import ray

    @ray.remote
    class OperatorActor:
        def __init__(self, spec: OpSpec, index: int = 0):
            self.r = OperatorReplica(spec, index)

        def info(self) -> dict:
            return self.r.info()

        async def call(self, ctx: dict, *inputs):
            return await self.r.call(ctx, *inputs)

        def pid(self) -> int:
            return os.getpid()

    return OperatorActor


def tool_server_actor_class():
    import ray

    @ray.remote
    class ToolServerActor:
        def __init__(self, delay_ms: float = 0.0):
            from hetagent.backends.http_tool import SearchToolServer
            self.s = SearchToolServer(delay_ms=delay_ms).start()

        def url(self) -> str:
            return self.s.url

    return ToolServerActor


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
