"""A client for `hetagent serve`: Client("http://127.0.0.1:8000", api_key=None).

    c = Client("http://127.0.0.1:8000")
    c.health(); c.invoke(text="..."); c.invoke(audio=np_float32_16k); c.chat("question"); c.metrics()

Errors from the service (4xx/5xx) raise ServiceError carrying the status code and the message.
"""
from __future__ import annotations

import base64

from hetagent.errors import HetagentError


class ServiceError(HetagentError):
    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout_s: float = 120.0):
        try:
            import httpx
        except ImportError:
            raise HetagentError("the client needs httpx; install it with `pip install httpx`") \
                from None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def _check(self, r):
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            raise ServiceError(r.status_code, msg)
        return r

    def health(self) -> dict:
        return self._check(self.http.get("/health")).json()

    def metrics(self) -> str:
        return self._check(self.http.get("/metrics")).text

    def invoke(self, text: str | None = None, audio=None, *, session: str | None = None,
               deadline_ms: float | None = None) -> dict:
        body: dict = {}
        if audio is not None:
            from hetagent.runtime.service import wav_bytes
            body["audio_wav_b64"] = base64.b64encode(wav_bytes(audio, 16000)).decode()
        if text is not None:
            body["text"] = text
        if session:
            body["session"] = session
        if deadline_ms:
            body["deadline_ms"] = deadline_ms
        return self._check(self.http.post("/v1/invoke", json=body)).json()

    def chat(self, content: str, model: str | None = None) -> str:
        doc = self._check(self.http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": content}]})).json()
        return doc["choices"][0]["message"]["content"]

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
