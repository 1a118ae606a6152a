"""llm.prefill / llm.decode / llm.kv_transfer on the CPU: gemma-3-270m (GGUF, Q4_K_M) via llama.cpp.

Prefill and decode are separate calls that may run in different processes (different Ray actors):

    a, b = LlamaCppLLM(), LlamaCppLLM()        # two independent llama.cpp contexts
    state = a.prefill("The capital of France is")   # KVState: KV bytes + tokens + first token
    out = b.decode(state, max_tokens=16)            # restores the KV into b, then greedy decoding

The hand-off is llama.cpp's per-sequence state API (llama_state_seq_get_data / _set_data): the
bytes are the KV cache of sequence 0 for the prompt's tokens (plus a small header), nothing else,
so `len(state.kv_bytes)` is what an llm.kv_transfer moves. KVState pickles, so it crosses Ray.
Prefill also picks the first output token (the argmax of the prompt's last logits): time to first
token is the prefill's time. Decoding is greedy (temperature 0) and stops at an end-of-generation
token or after max_tokens, so it is deterministic for a given prompt.

The model is a *base* model (plain completion, not chat): prompts are text to continue.
"""
from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field

import numpy as np

from hetagent.backends import models
from hetagent.errors import HetagentError


@dataclass
class KVState:
    """What prefill hands to decode: enough to continue on another llama.cpp context."""
    model: str
    tokens: list[int]            # the prompt's tokens (BOS included), all in the KV cache
    next_token: int              # the first output token, chosen by prefill
    kv_bytes: bytes              # llama_state_seq_get_data of sequence 0
    prefill_seconds: float = 0.0
    save_seconds: float = 0.0    # time to copy the KV out of the context

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        return len(self.kv_bytes)


@dataclass
class DecodeResult:
    text: str
    tokens: list[int]            # output tokens (the first one chosen by prefill)
    seconds: float               # decoding loop only
    restore_seconds: float = 0.0  # KV bytes into this context (the receiving side of kv_transfer)
    per_token_seconds: list[float] = field(default_factory=list)


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise HetagentError("llm.prefill/decode on the CPU needs the package 'llama-cpp-python'; "
                            "install it with `pip install llama-cpp-python==0.3.36`") from e
    return llama_cpp


class LlamaCppLLM:
    """One llama.cpp context over gemma-3-270m. Loads once; prefill/decode/generate per request."""

    model_id = models.GEMMA_ID

    def __init__(self, n_ctx: int = 2048, threads: int | None = None, n_batch: int = 512):
        llama_cpp = _llama_cpp()
        self._lc = llama_cpp
        path = models.gemma_gguf()
        threads = threads or len(os.sched_getaffinity(0))
        t = time.perf_counter()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch,
                                   n_ubatch=n_batch, n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False)
        self.load_seconds = time.perf_counter() - t
        self.n_ctx = n_ctx
        self.n_vocab = self.llm.n_vocab()
        self._vocab = self.llm._model.vocab

    # -- helpers ---------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def _last_argmax(self) -> int:
        ptr = self._lc.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))))

    def _is_eog(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_is_eog(self._vocab, token))

    def _check_len(self, n: int):
        if n > self.n_ctx:
            raise HetagentError(f"{n} tokens do not fit the context of {self.n_ctx}; "
                                f"create LlamaCppLLM(n_ctx=...) larger")

    # -- operators -------------------------------------------------------------------------------
    def prefill_tokens(self, tokens: list[int]) -> KVState:
        self._check_len(len(tokens) + 1)
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        t = time.perf_counter()
        self.llm.eval(tokens)
        first = self._last_argmax()
        prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        kv = self.save_kv()
        save_s = time.perf_counter() - t
        return KVState(self.model_id, list(tokens), first, kv, prefill_s, save_s)

    def prefill(self, prompt: str) -> KVState:
        """Runs the prompt through the model; returns its KV cache as bytes and the first token."""
        return self.prefill_tokens(self.tokenize(prompt))

    def save_kv(self, seq_id: int = 0) -> bytes:
        ctx = self.llm.ctx
        size = self._lc.llama_state_seq_get_size(ctx, seq_id)
        buf = (ctypes.c_uint8 * size)()
        n = self._lc.llama_state_seq_get_data(ctx, buf, size, seq_id)
        if n == 0 or n > size:
            raise HetagentError("llama.cpp could not copy the KV cache out of the context")
        return ctypes.string_at(buf, n)

    def restore(self, state: KVState) -> float:
        """Loads state's KV into this context (replacing whatever it held); returns seconds."""
        if state.model != self.model_id:
            raise HetagentError(f"KV state of model '{state.model}' cannot continue on "
                                f"'{self.model_id}'")
        self._check_len(state.n_tokens + 1)
        t = time.perf_counter()
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(state.kv_bytes)).from_buffer_copy(state.kv_bytes)
        n = self._lc.llama_state_seq_set_data(self.llm.ctx, buf, len(state.kv_bytes), 0)
        if n == 0:
            raise HetagentError("llama.cpp rejected the KV state (different model or context?)")
        self.llm.input_ids[: state.n_tokens] = state.tokens
        self.llm.n_tokens = state.n_tokens
        return time.perf_counter() - t

    def decode(self, state: KVState, max_tokens: int = 32, restore: bool = True) -> DecodeResult:
        """Greedy decoding from a prefill's state (restored into this context unless restore=False,
        for a state this very context just produced)."""
        restore_s = self.restore(state) if restore else 0.0
        out = [state.next_token]
        steps: list[float] = []
        t0 = time.perf_counter()
        while len(out) < max_tokens and not self._is_eog(out[-1]):
            if self.llm.n_tokens + 1 > self.n_ctx:
                break
            t = time.perf_counter()
            self.llm.eval([out[-1]])
            out.append(self._last_argmax())
            steps.append(time.perf_counter() - t)
        seconds = time.perf_counter() - t0
        text_tokens = [tok for tok in out if not self._is_eog(tok)]
        return DecodeResult(self.detokenize(text_tokens), out, seconds, restore_s, steps)

    def generate(self, prompt: str, max_tokens: int = 32) -> DecodeResult:
        """Prefill and decode in this one context, no hand-off (the reference for a split run)."""
        state = self.prefill(prompt)
        return self.decode(state, max_tokens, restore=False)
