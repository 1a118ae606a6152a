"""An LLM engine process: llama.cpp's OpenAI-compatible server (llama-cpp-python's `server` extra).

    engine = LlamaServer(threads=2).start()       # one `python -m llama_cpp.server` process
    text, usage, s = engine.complete("The capital of France is", max_tokens=8)
    engine.alive(); engine.cpu_seconds(); engine.stop()

The runtime starts one engine per replica of a CPU LLM pool, as a GPU deployment runs one vLLM or
SGLang server per replica: the replica talks to it over HTTP (POST /v1/completions) and nothing
else. The engine serves the bundled gemma-3-270m GGUF (hetagent.backends.models.gemma_gguf) with
greedy decoding, `logits_all` off (the server's default computes logits for every prompt position,
which made a 457-token prompt take 5x longer here) and the thread count of the CPU calibration.

The process is started through this module's `__main__` (`python -m hetagent.backends.llm_server
--parent PID -- <llama_cpp.server arguments>`), which builds `llama_cpp.server`'s app as `python -m`
would and exits when its parent process is gone: a replica killed with SIGKILL takes its engine with it.

**KV hand-off.** Beside the OpenAI routes the app has two of hetagent's, so a prefill engine can hand
the prompt's KV cache to a decode engine, as vLLM's KV connectors do between servers (llama.cpp's
sequence state, `llama_state_seq_get_data` / `_set_data`: the KV cells of the sequence, nothing else):

    first, usage, s, kv = prefill_engine.prefill("The capital of France is")
    text, usage, s, restore_ms = decode_engine.decode("The capital of France is" + first, 8, kv)

`POST /hetagent/kv/prefill` {prompt} answers the first token and `kv` {tokens, data (base64),
export_ms};
`POST /hetagent/kv/decode` {prompt, max_tokens, kv} sets the KV, then completes: the engine evaluates
only the tokens the KV does not cover (at least the last one, for its logits). Both hold the server's
model lock, so no other request runs between the completion and the export or the import.

`tokenizer()` loads the model's vocabulary only (`vocab_only=True`, no weights), so a replica can cut a
prompt to its planned token count without a second copy of the model.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from hetagent.backends import models
from hetagent.backends.openai_endpoint import EndpointError, OpenAIEndpoint
from hetagent.errors import HetagentError


class EngineUnavailable(EndpointError):
    """The engine process is gone (killed, crashed) or does not answer: the call may be retried
    on another replica."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class LlamaServer:
    """One llama.cpp server process on loopback, serving the bundled GGUF."""

    def __init__(self, *, threads: int | None = None, n_ctx: int = 2048, n_batch: int = 512,
                 model_path: str | None = None, ready_timeout_s: float = 180.0):
        self.threads = threads or len(os.sched_getaffinity(0))
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.model_path = model_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.endpoint: OpenAIEndpoint | None = None
        self.start_seconds = 0.0
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self, port: int) -> list[str]:
        path = self.model_path or str(models.gemma_gguf())
        args = ["--model", path, "--model_alias", models.GEMMA_ID, "--host", "127.0.0.1",
                "--port", str(port), "--n_ctx", str(self.n_ctx), "--n_batch", str(self.n_batch),
                "--n_ubatch", str(self.n_batch), "--n_threads", str(self.threads),
                "--n_threads_batch", str(self.threads), "--logits_all", "False",
                "--interrupt_requests", "False", "--verbose", "False"]
        return [sys.executable, "-m", "hetagent.backends.llm_server", "--parent", str(os.getpid()),
                "--", *args]

    def start(self) -> "LlamaServer":
        try:                       # fail here, with the install hint, not in the child
            found = importlib.util.find_spec("llama_cpp.server") is not None
        except ImportError:
            found = False
        if not found:
            raise HetagentError("an LLM engine needs llama.cpp's server; install it with "
                                "`pip install 'llama-cpp-python[server]==0.3.36'`")
        t0 = time.perf_counter()
        last = ""
        for _ in range(3):           # a port taken between choosing and binding: choose again
            self.port = _free_port()
            self._log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(self._command(self.port), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self._log)
            ok, last = self._wait_ready()
            if ok:
                self.endpoint = OpenAIEndpoint(self.base_url, models.GEMMA_ID, None, 600.0)
                self.start_seconds = time.perf_counter() - t0
                return self
            self.stop()
        raise HetagentError(f"the llama.cpp server did not start: {last or 'no output'}")

    def _wait_ready(self) -> tuple[bool, str]:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, self._tail()
            try:
                with urllib.request.urlopen(self.base_url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return True, ""
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False, f"not ready within {self.ready_timeout_s:g} s"

    def _tail(self) -> str:
        try:
            self._log.seek(0)
            lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else ""
        except (OSError, ValueError):
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.proc.pid) if self.alive() else None

    def complete(self, prompt: str, max_tokens: int, timeout_s: float | None = None) -> tuple[str, dict, float]:
        """(text, usage, seconds) of one greedy completion; EngineUnavailable when the engine is gone."""
        if not self.alive():
            raise EngineUnavailable(f"the llama.cpp engine (pid {self.proc.pid if self.proc else '-'}) "
                                    f"is not running")
        try:
            return self.endpoint.complete(prompt, max_tokens, timeout_s=timeout_s)
        except EndpointError as e:
            if not self.alive():
                raise EngineUnavailable(f"the llama.cpp engine died during the call: {e}") from None
            raise

    def prefill(self, prompt: str, timeout_s: float | None = None) -> tuple[str, dict, float, dict]:
        """(first token, usage, seconds, kv) of the prompt: the KV to hand to a decode engine."""
        doc, s = self._kv_call("/hetagent/kv/prefill", {"prompt": prompt}, timeout_s)
        return doc["text"], doc.get("usage") or {}, s, doc["kv"]

    def decode(self, prompt: str, max_tokens: int, kv: dict,
               timeout_s: float | None = None) -> tuple[str, dict, float, float]:
        """(text, usage, seconds, restore ms) of a completion that starts from a prefill's KV."""
        doc, s = self._kv_call("/hetagent/kv/decode", {"prompt": prompt, "max_tokens": int(max_tokens),
                                                       "kv": kv}, timeout_s)
        return doc["text"], doc.get("usage") or {}, s, float(doc["restore_ms"])

    def _kv_call(self, path: str, doc: dict, timeout_s: float | None) -> tuple[dict, float]:
        if not self.alive():
            raise EngineUnavailable(f"the llama.cpp engine (pid {self.proc.pid if self.proc else '-'}) "
                                    f"is not running")
        t = time.perf_counter()
        try:
            got = self.endpoint.post(path, doc, timeout_s, limit=KV_LIMIT)
        except EndpointError as e:
            if not self.alive():
                raise EngineUnavailable(f"the llama.cpp engine died during the call: {e}") from None
            raise
        if not isinstance(got, dict) or "text" not in got:
            raise EndpointError(f"{self.base_url}{path} answered without text")
        return got, time.perf_counter() - t

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


_TOKENIZERS: dict[str, object] = {}


def tokenizer(model_path: str | None = None):
    """The GGUF's vocabulary alone (llama_cpp.Llama(vocab_only=True)): tokenize / detokenize."""
    path = model_path or str(models.gemma_gguf())
    if path not in _TOKENIZERS:
        from hetagent.backends.llm_llamacpp import _llama_cpp
        _TOKENIZERS[path] = _llama_cpp().Llama(model_path=path, vocab_only=True, verbose=False)
    return _TOKENIZERS[path]


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1.0)


KV_LIMIT = 256 << 20       # bytes of a KV answer read at most (2,048 tokens of gemma-3-270m: ~50 MB)


def export_kv(llama) -> dict:
    """The KV cells of sequence 0 and the tokens they hold (after a completion on `llama`)."""
    import base64
    import ctypes

    import llama_cpp
    size = llama_cpp.llama_state_seq_get_size(llama.ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    got = llama_cpp.llama_state_seq_get_data(llama.ctx, buf, size, 0)
    return {"tokens": [int(t) for t in llama.input_ids[:llama.n_tokens]],
            "data": base64.b64encode(ctypes.string_at(buf, got)).decode("ascii")}


def import_kv(llama, kv: dict) -> None:
    """Sets sequence 0's KV cells from `export_kv`'s answer; the next completion on `llama` reuses them
    for the prefix of its prompt that matches `kv['tokens']`."""
    import base64
    import ctypes

    import llama_cpp
    tokens, raw = kv["tokens"], base64.b64decode(kv["data"], validate=True)
    if not tokens or len(tokens) >= llama.n_ctx():
        raise ValueError(f"a KV of {len(tokens)} tokens does not fit a context of {llama.n_ctx()}")
    src = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
    if llama_cpp.llama_state_seq_set_data(llama.ctx, src, len(raw), 0) != len(raw):
        raise ValueError("llama.cpp refused the KV state (another model or version?)")
    llama.input_ids[:len(tokens)] = tokens
    llama.n_tokens = len(tokens)


def add_kv_routes(app) -> None:
    """The two KV hand-off routes on llama_cpp.server's app (the module docstring says what they do)."""
    from fastapi import Body, Depends, HTTPException
    from llama_cpp.server.app import get_llama_proxy

    def complete(llama, prompt: str, max_tokens: int) -> dict:
        r = llama.create_completion(prompt, max_tokens=max(1, int(max_tokens)), temperature=0)
        return {"text": r["choices"][0].get("text", ""), "usage": r.get("usage") or {}}

    @app.post("/hetagent/kv/prefill")
    def kv_prefill(doc: dict = Body(...), proxy=Depends(get_llama_proxy)) -> dict:
        llama = proxy(None)
        out = complete(llama, str(doc.get("prompt", "")), 1)
        t = time.perf_counter()
        kv = export_kv(llama)
        kv["export_ms"] = (time.perf_counter() - t) * 1000
        return {**out, "kv": kv}

    @app.post("/hetagent/kv/decode")
    def kv_decode(doc: dict = Body(...), proxy=Depends(get_llama_proxy)) -> dict:
        llama = proxy(None)
        t = time.perf_counter()
        try:
            import_kv(llama, doc["kv"])
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPException(400, f"bad KV: {e}") from None
        restore_ms = (time.perf_counter() - t) * 1000
        return {**complete(llama, str(doc.get("prompt", "")), int(doc.get("max_tokens", 1))),
                "restore_ms": restore_ms}


def main(argv: list[str] | None = None) -> None:
    """`python -m hetagent.backends.llm_server --parent PID -- ARGS`: llama_cpp.server with ARGS (as
    `python -m llama_cpp.server` builds it) and the KV hand-off routes, exiting when process PID is no
    longer this process's parent."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[0] != "--parent" or argv[2] != "--":
        sys.stderr.write("usage: python -m hetagent.backends.llm_server --parent PID -- ARGS\n")
        raise SystemExit(2)
    threading.Thread(target=_watch_parent, args=(int(argv[1]),), daemon=True).start()
    import argparse

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings
    parser = argparse.ArgumentParser(prog="hetagent.backends.llm_server")
    add_args_from_model(parser, Settings)
    args = parser.parse_args(argv[3:])
    server = parse_model_from_args(ServerSettings, args)
    app = create_app(server_settings=server, model_settings=[parse_model_from_args(ModelSettings, args)])
    add_kv_routes(app)
    uvicorn.run(app, host=server.host, port=server.port, log_level="warning")


if __name__ == "__main__":
    main()
