"""LLM operators bound to an OpenAI-compatible endpoint (a vLLM or SGLang server per device pool).

`OpenAIEndpoint(base_url, model, api_key=None, timeout_s=30)`.complete(prompt, max_tokens) calls
POST {base_url}/v1/completions (falling back to /v1/chat/completions when the server has no
completions route) and returns (text, usage, seconds). Timeouts raise EndpointTimeout. httpx is used
when installed, urllib otherwise.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

from hetagent.errors import HetagentError


class EndpointError(HetagentError):
    """An OpenAI-compatible endpoint answered with an error or garbage."""


class EndpointTimeout(EndpointError):
    """An OpenAI-compatible endpoint did not answer within its timeout."""


class OpenAIEndpoint:
    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None,
                 timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s

    def post(self, path: str, doc: dict, timeout_s: float | None = None, limit: int = 16 << 20) -> dict:
        """POST `doc` as JSON to `path`; the answer's JSON (at most `limit` bytes read)."""
        timeout_s = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        return self._post(path, doc, timeout_s, limit)

    def _post(self, path: str, doc: dict, timeout_s: float, limit: int = 16 << 20) -> dict:
        if timeout_s <= 0:
            raise EndpointTimeout("no time left before the request's deadline for the LLM call")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + path, json.dumps(doc).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                return json.loads(r.read(limit))
        except (socket.timeout, TimeoutError):
            raise EndpointTimeout(f"{self.base_url} did not answer within {timeout_s:.3g} s") \
                from None
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise FileNotFoundError(path) from None
            raise EndpointError(f"{self.base_url}{path} answered HTTP {e.code}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise EndpointTimeout(f"{self.base_url} did not answer within {timeout_s:.3g} s") \
                    from None
            raise EndpointError(f"{self.base_url} failed: {e.reason}") from None
        except ValueError:
            raise EndpointError(f"{self.base_url}{path} answered with something that is not JSON") \
                from None

    def complete(self, prompt: str, max_tokens: int = 64,
                 timeout_s: float | None = None) -> tuple[str, dict, float]:
        timeout_s = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        t = time.perf_counter()
        try:
            doc = self._post("/v1/completions", {"model": self.model, "prompt": prompt,
                                                 "max_tokens": int(max_tokens),
                                                 "temperature": 0}, timeout_s)
            text = doc["choices"][0].get("text", "")
        except FileNotFoundError:
            doc = self._post("/v1/chat/completions",
                             {"model": self.model, "max_tokens": int(max_tokens), "temperature": 0,
                              "messages": [{"role": "user", "content": prompt}]}, timeout_s)
            try:
                text = doc["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise EndpointError(f"{self.base_url} answered without choices") from None
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.base_url} answered without choices") from None
        return text, doc.get("usage", {}) or {}, time.perf_counter() - t
