"""`hetagent serve`: the workflow as a long-running HTTP service (FastAPI + uvicorn).

Endpoints
  POST /v1/invoke             {"text": str} or {"audio_wav_b64": str}, optional "session",
                              "deadline_ms" -> {"id", "status", "latency_ms", "text",
                              "audio_wav_b64"?, "stages"}; 429 when refused at admission, 502 when
                              the workflow failed.
  POST /v1/chat/completions   OpenAI-compatible, for workflows whose input and output are text.
  GET  /health                liveness and the deployment at a glance (no key needed).
  GET  /metrics               Prometheus text format.

Safety: binds to 127.0.0.1 by default; binding elsewhere requires an API key (--api-key or
HETAGENT_API_KEY), checked with hmac.compare_digest on `Authorization: Bearer KEY` or `X-API-Key`.
Request bodies above `max_body_bytes` get 413 before they are read in full; bodies are validated
(pydantic, unknown fields refused) and every error is a 4xx/5xx JSON {"error": message}: never a
stack trace.
"""

import asyncio
import base64
import hmac
import io
import ipaddress
import sys
import threading
import time
import wave

import numpy as np

from hetagent.errors import HetagentError

MAX_BODY_BYTES = 8 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    """16-bit PCM WAV (mono or stereo, any rate) -> float32 mono 16 kHz."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError("only 16-bit PCM WAV is accepted")
            rate, ch = w.getframerate(), w.getnchannels()
            frames = w.readframes(min(w.getnframes(), rate * 120))
    except (wave.Error, EOFError) as e:
        raise ValueError(f"not a WAV file: {e}") from None
    a = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    if ch > 1:
        a = a.reshape(-1, ch).mean(axis=1)
    from hetagent.backends.tts import resample
    return resample(a, rate, 16000)


def create_app(rt, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               replanner=None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    g = rt.d.graph
    first = {g.operators[n].kind for n in g.order if not g.preds[n]}
    last = {g.operators[n].kind for n in g.sinks}
    audio_in = "speech.frontend" in first
    audio_out = "speech.synthesize" in last

    reg = CollectorRegistry()
    m_req = Counter("hetagent_requests", "Requests by final status", ["status"], registry=reg)
    m_lat = Histogram("hetagent_latency_seconds", "End-to-end latency of completed requests",
                      buckets=(.05, .1, .25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120), registry=reg)
    m_stage = Histogram("hetagent_stage_latency_seconds", "Per-operator latency", ["operator"],
                        buckets=(.001, .005, .01, .05, .1, .25, .5, 1, 2, 5, 10), registry=reg)
    m_infl = Gauge("hetagent_inflight", "Requests in flight", registry=reg)
    m_sla = Gauge("hetagent_sla_attainment", "Fraction of completed requests within the SLA "
                  "(last 60 s)", registry=reg)
    m_cap = Gauge("hetagent_admission_limit", "Requests admitted in flight at most", registry=reg)
    m_cap.set(rt.max_inflight)
    m_infl.set_function(lambda: rt.inflight)
    m_sla.set_function(lambda: rt.metrics.recent(60).get("sla_attainment") or 0.0)

    def observe(res):
        m_req.labels(res.status).inc()
        if res.status == "completed" and res.latency_ms is not None:
            m_lat.observe(res.latency_ms / 1000)
            for op, ms in res.stages.items():
                m_stage.labels(op).observe(ms / 1000)
    rt.listeners.append(observe)

    app = FastAPI(title=f"hetagent: {g.workflow}", docs_url=None, redoc_url=None, openapi_url=None)

    def err(code: int, msg: str):
        return JSONResponse({"error": msg}, status_code=code)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key and request.url.path != "/health":
            got = request.headers.get("x-api-key") or ""
            auth = request.headers.get("authorization") or ""
            if auth.lower().startswith("bearer "):
                got = auth[7:].strip()
            if not hmac.compare_digest(got.encode(), api_key.encode()):
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

    async def invoke_payload(payload: dict, deadline_ms):
        fut = rt.submit(payload, deadline_s=(deadline_ms / 1000) if deadline_ms else None)
        return await asyncio.wrap_future(fut)

    @app.get("/health")
    async def health():
        return {"status": "ok", "workflow": g.workflow, "pools": len(rt.d.pools),
                "inflight": rt.inflight, "admission_limit": rt.max_inflight,
                "emulated": rt.d.emulated_ops(), "input": "audio" if audio_in else "text",
                "output": "audio" if audio_out else "text"}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(reg).decode(),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/v1/invoke")
    async def invoke(body: InvokeIn):
        if body.audio_wav_b64:
            try:
                audio = read_wav(base64.b64decode(body.audio_wav_b64, validate=True))
            except (ValueError, TypeError) as e:
                return err(400, f"audio_wav_b64: {e}")
            payload = {"audio": audio, "sample_rate": 16000}
        elif body.text is not None and body.text.strip():
            if audio_in:
                return err(400, "this workflow starts with speech recognition: send audio_wav_b64")
            payload = {"text": body.text, "question": body.text}
        else:
            return err(400, "give `text` or `audio_wav_b64`")
        if body.session:
            payload["session"] = body.session
        res = await invoke_payload(payload, body.deadline_ms)
        if res.status == "refused":
            return err(429, res.error or "over capacity")
        if res.status != "completed":
            return err(502, res.error or "the workflow failed")
        out = {"id": res.id, "status": res.status, "latency_ms": round(res.latency_ms, 3),
               "text": res.output.get("text"), "stages": {k: round(v, 3) for k, v in res.stages.items()}}
        if "audio" in res.output:
            out["audio_wav_b64"] = base64.b64encode(
                wav_bytes(res.output["audio"], res.output["sample_rate"])).decode()
        return out

    @app.post("/v1/chat/completions")
    async def chat(body: ChatIn):
        if audio_in or audio_out:
            return err(400, f"workflow '{g.workflow}' takes or returns audio; the chat endpoint "
                            f"serves text-in, text-out workflows (use /v1/invoke)")
        if body.stream:
            return err(400, "stream=true is not supported")
        user = [m for m in body.messages if m.role == "user"]
        if not user or not isinstance(user[-1].content, str) or not user[-1].content.strip():
            return err(400, "messages: the last user message must have text content")
        text = user[-1].content
        res = await invoke_payload({"text": text, "question": text}, None)
        if res.status == "refused":
            return err(429, res.error or "over capacity")
        if res.status != "completed":
            return err(502, res.error or "the workflow failed")
        answer = res.output.get("text") or ""
        return {"id": f"chatcmpl-{res.id}", "object": "chat.completion", "created": int(time.time()),
                "model": body.model or g.workflow,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(answer.split()),
                          "total_tokens": len(text.split()) + len(answer.split())}}

    return app


class LiveView:
    """A one-line live view on stderr: rate, latency and SLA attainment over the last 10 s."""

    def __init__(self, rt, every_s: float = 1.0, out=None):
        self.rt, self.every_s, self.out = rt, every_s, out or sys.stderr
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="hetagent-view")

    def line(self) -> str:
        r = self.rt.metrics.recent(10)
        lat = r["latency_ms"]
        att = r["sla_attainment"]

        def f(v):
            return "-" if v is None else f"{v:.0f}"
        return (f"rate {r['rate']:.2f}/s  in flight {self.rt.inflight}/{self.rt.max_inflight}  "
                f"p50 {f(lat['p50'])} ms  p95 {f(lat['p95'])} ms  SLA "
                f"{'-' if att is None else f'{att:.0%}'}  refused {r['refused']}  failed {r['failed']}")

    def _loop(self):
        tty = hasattr(self.out, "isatty") and self.out.isatty()
        while not self._stop.wait(self.every_s):
            self.out.write(("\r\x1b[K" if tty else "") + self.line() + ("" if tty else "\n"))
            self.out.flush()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()


def serve(plan, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          address=None, endpoints=None, replan: str = "advisory", view: bool = True,
          real_devices=None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    if not is_loopback(host) and not api_key:
        raise HetagentError(f"binding to {host} exposes the service beyond this machine: give an "
                            f"API key with --api-key or HETAGENT_API_KEY")
    try:
        import uvicorn
    except ImportError:
        raise HetagentError("the service needs fastapi and uvicorn; install them with "
                            "`pip install 'hetagent[runtime]'`") from None
    from hetagent.runtime.commands import deploy
    rt = deploy(plan, address=address, endpoints=endpoints, real_devices=real_devices)
    rp = lv = None
    try:
        if replan != "off":
            from hetagent.runtime.replan import Replanner
            rp = Replanner(rt, advisory=(replan == "advisory")).start()
        if view:
            lv = LiveView(rt).start()
        app = create_app(rt, api_key=api_key, max_body_bytes=max_body_bytes, replanner=rp)
        print(f"hetagent serve: {rt.d.graph.workflow} on http://{host}:{port} "
              f"(POST /v1/invoke, /v1/chat/completions; GET /health, /metrics)", file=sys.stderr)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if lv:
            lv.stop()
        if rp:
            rp.stop()
        rt.close()
        rt.d.shutdown()
