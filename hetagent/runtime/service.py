"""`hetagent serve`: the workflow as a long-running HTTP service behind Ray Serve's HTTP proxy.

The ingress deployment (hetagent.runtime.ingress) serves this FastAPI app at "/"; Serve's proxy adds its
own `/-/routes` and `/-/healthz`.

Endpoints
  POST /invoke, /v1/invoke     {"text": str} or {"audio_wav_b64": str}, optional "session",
                               "deadline_ms" -> {"id", "status", "latency_ms", "text",
                               "audio_wav_b64"?, "stages"}; 429 at once when admission refuses it,
                               504 when its deadline passed, 502 when the workflow failed.
  POST /v1/chat/completions    OpenAI-compatible, for workflows whose input and output are text.
  GET  /health                 liveness and the deployment at a glance (no key needed).
  GET  /metrics                Prometheus text format (hetagent.runtime.ingress.Prom).

Safety: binds to 127.0.0.1 by default; binding elsewhere requires an API key (--api-key or
HETAGENT_API_KEY), checked with hmac.compare_digest on `Authorization: Bearer KEY` or `X-API-Key`
(the deployment holds the key's SHA-256, never the key). Request bodies above `max_body_bytes` get 413
before they are read in full; bodies are validated (pydantic, unknown fields refused), audio too (a WAV
that is empty, ragged, not 16-bit PCM, or at a rate outside 8-192 kHz gets 400 with the reason), and
every error is JSON {"error": message}: never a stack trace.
"""

import base64
import hashlib
import hmac
import io
import ipaddress
import signal
import socket
import sys
import threading
import time
import wave

import numpy as np

from hetagent.errors import HetagentError

MAX_BODY_BYTES = 8 << 20
MAX_AUDIO_S = 120
RATES = (8000, 192000)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    pcm = (np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> np.ndarray:
    """16-bit PCM WAV (mono or stereo, 8-192 kHz, at most 120 s) -> float32 mono 16 kHz; ValueError
    saying what is wrong otherwise."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, rate, ch, n = w.getsampwidth(), w.getframerate(), w.getnchannels(), w.getnframes()
            if width != 2:
                raise ValueError(f"{8 * width}-bit samples: only 16-bit PCM WAV is accepted")
            if not RATES[0] <= rate <= RATES[1]:
                raise ValueError(f"sample rate {rate} Hz is outside {RATES[0]}-{RATES[1]} Hz")
            if not 1 <= ch <= 2:
                raise ValueError(f"{ch} channels: mono or stereo only")
            if n == 0:
                raise ValueError("the WAV holds no audio (0 frames)")
            if n > rate * MAX_AUDIO_S:
                raise ValueError(f"{n / rate:.1f} s of audio: at most {MAX_AUDIO_S} s")
            frames = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"not a WAV file: {e}") from None
    block = width * ch
    if len(frames) != n * block:
        raise ValueError(f"the data chunk holds {len(frames)} bytes, not the {n * block} its header's "
                         f"{n} frames of {ch} x {width} bytes need (truncated or ragged)")
    a = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    if ch > 1:
        a = a.reshape(-1, ch).mean(axis=1)
    from hetagent.backends.tts import resample
    return resample(a, rate, 16000)


def create_app(core, *, api_key_digest: str | None = None, max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI app over an IngressCore (`handle`, `health`, `metrics_text`, `graph`)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title=f"hetagent: {core.graph.workflow}", docs_url=None, redoc_url=None,
                  openapi_url=None)

    def err(code: int, msg: str):
        return JSONResponse({"error": msg}, status_code=code)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key_digest and request.url.path != "/health":
            got = request.headers.get("x-api-key") or ""
            auth = request.headers.get("authorization") or ""
            if auth.lower().startswith("bearer "):
                got = auth[7:].strip()
            if not hmac.compare_digest(key_digest(got), api_key_digest):
                return err(401, "missing or wrong API key (Authorization: Bearer KEY or X-API-Key)")
        if request.method in ("POST", "PUT", "PATCH"):
            cl = request.headers.get("content-length")
            try:
                if cl is not None and int(cl) > max_body_bytes:
                    return err(413, f"request body over {max_body_bytes} bytes")
            except ValueError:
                return err(400, "bad Content-Length")
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    return err(413, f"request body over {max_body_bytes} bytes")
            request._body = body
        try:
            return await call_next(request)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            return err(500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):
        e = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        return err(422, f"invalid request: {where + ': ' if where else ''}{e.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return err(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def any_error(request, exc):
        return err(500, "internal error")

    class InvokeIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(None, max_length=20000)
        audio_wav_b64: str | None = Field(None, max_length=max_body_bytes)
        session: str | None = Field(None, max_length=200)
        deadline_ms: float | None = Field(None, gt=0, le=3_600_000)

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: str = Field(max_length=32)
        content: str | list | None = None

    class ChatIn(BaseModel):
        model_config = ConfigDict(extra="allow")
        model: str | None = Field(None, max_length=200)
        messages: list[Message] = Field(min_length=1, max_length=256)
        stream: bool = False

    def answer_error(res: dict):
        if res["status"] == "refused":
            return err(429, res.get("error") or "over capacity")
        if "deadline" in (res.get("error") or ""):
            return err(504, res["error"])
        return err(502, res.get("error") or "the workflow failed")

    @app.get("/health")
    async def health():
        return core.health()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(core.metrics_text(), media_type="text/plain; version=0.0.4")

    async def invoke(body: InvokeIn):
        if body.audio_wav_b64:
            if not core.audio_in:
                return err(400, "this workflow takes text: send `text`")
            try:
                audio = read_wav(base64.b64decode(body.audio_wav_b64, validate=True))
            except (ValueError, TypeError) as e:
                return err(400, f"audio_wav_b64: {e}")
            payload = {"audio": audio, "sample_rate": 16000}
        elif body.text is not None and body.text.strip():
            if core.audio_in:
                return err(400, "this workflow starts with speech recognition: send audio_wav_b64")
            payload = {"text": body.text, "question": body.text}
        else:
            return err(400, "give `text` or `audio_wav_b64`")
        if body.session:
            payload["session"] = body.session
        res = await core.handle(payload, deadline_ms=body.deadline_ms)
        if res["status"] != "completed":
            return answer_error(res)
        out = {"id": res["id"], "status": res["status"], "latency_ms": res["latency_ms"],
               "text": res["output"].get("text"),
               "stages": {k: round(v, 3) for k, v in res["stages"].items()}}
        if "audio" in res["output"]:
            out["audio_wav_b64"] = base64.b64encode(
                wav_bytes(res["output"]["audio"], res["output"]["sample_rate"])).decode()
        return out

    app.post("/invoke")(invoke)
    app.post("/v1/invoke")(invoke)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatIn):
        if core.audio_in or core.audio_out:
            return err(400, f"workflow '{core.graph.workflow}' takes or returns audio; the chat "
                            f"endpoint serves text-in, text-out workflows (use /invoke)")
        if body.stream:
            return err(400, "stream=true is not supported")
        user = [m for m in body.messages if m.role == "user"]
        if not user or not isinstance(user[-1].content, str) or not user[-1].content.strip():
            return err(400, "messages: the last user message must have text content")
        text = user[-1].content
        res = await core.handle({"text": text, "question": text})
        if res["status"] != "completed":
            return answer_error(res)
        answer = res["output"].get("text") or ""
        return {"id": f"chatcmpl-{res['id']}", "object": "chat.completion", "created": int(time.time()),
                "model": body.model or core.graph.workflow,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(answer.split()),
                          "total_tokens": len(text.split()) + len(answer.split())}}

    return app


class LiveView:
    """A one-line live view on stderr: rate, latency and SLA attainment over the last 10 s (read from
    the ingress through its handle)."""

    def __init__(self, stats, every_s: float = 1.0, out=None):
        self.stats, self.every_s, self.out = stats, every_s, out or sys.stderr
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="hetagent-view")

    @staticmethod
    def line(r: dict) -> str:
        lat = r["latency_ms"]
        att = r["sla_attainment"]

        def f(v):
            return "-" if v is None else f"{v:.0f}"
        return (f"rate {r['rate']:.2f}/s  in flight {r['inflight']}  wait {f(r['wait_ms'])} ms  "
                f"p50 {f(lat['p50'])} ms  p95 {f(lat['p95'])} ms  SLA "
                f"{'-' if att is None else f'{att:.0%}'}  refused {r['refused']}  failed {r['failed']}")

    def _loop(self):
        tty = hasattr(self.out, "isatty") and self.out.isatty()
        while not self._stop.wait(self.every_s):
            try:
                text = self.line(self.stats())
            except Exception:  # noqa: BLE001 - the view never takes the service down
                continue
            self.out.write(("\r\x1b[K" if tty else "") + text + ("" if tty else "\n"))
            self.out.flush()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5)


def port_free(host: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(plan, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          address=None, endpoints=None, replan: str = "advisory", view: bool = True,
          real_devices=None, max_body_bytes: int = MAX_BODY_BYTES, stop=None, ready=None,
          route_prefix: str = "/") -> None:
    """Deploys the plan on Ray Serve behind its HTTP proxy at host:port and serves until interrupted
    (or until the `stop` event is set). `ready`, when given, is set once the service answers."""
    if not is_loopback(host) and not api_key:
        raise HetagentError(f"binding to {host} exposes the service beyond this machine: give an "
                            f"API key with --api-key or HETAGENT_API_KEY")
    try:
        import ray
        ours = not ray.is_initialized()
    except ImportError:
        ours = True
    if ours and address is None and not port_free(host, port):
        raise HetagentError(f"{host}:{port} is in use: choose another --port")
    from hetagent.runtime.commands import Runner
    runner = Runner(plan, address=address, endpoints=endpoints, real_devices=real_devices,
                    http={"host": host, "port": port}, route_prefix=route_prefix,
                    api_key_digest=key_digest(api_key) if api_key else None,
                    max_body_bytes=max_body_bytes)
    rp = lv = None
    try:
        runner.start()
        if threading.current_thread() is threading.main_thread():
            # SIGTERM ends the service as Ctrl-C does (installed after Ray, which sets its own)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        if replan != "off":
            from hetagent.runtime.replan import Replanner
            rp = Replanner(runner, advisory=(replan == "advisory")).start()
        if view:
            lv = LiveView(runner.stats).start()
        print(f"hetagent serve: {runner.d.graph.workflow} on http://{host}:{port} through Ray Serve "
              f"(POST /invoke, /v1/chat/completions; GET /health, /metrics, /-/routes, /-/healthz)",
              file=sys.stderr, flush=True)
        if ready is not None:
            ready.set()
        wait = stop if stop is not None else threading.Event()
        while not wait.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if lv:
            lv.stop()
        if rp:
            rp.stop()
        runner.close()
