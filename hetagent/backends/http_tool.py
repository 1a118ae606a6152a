"""The loopback search tool: an HTTP server over the bundled corpus, and its client with timeouts.

`SearchToolServer().start()` serves GET /search?q=...&k=3 on 127.0.0.1 (an ephemeral port by
default) with a keyword score (term overlap, idf-weighted) over hetagent's documentation passages
(hetagent.backends.corpus): a real HTTP round trip and real CPU work, no model. GET /health answers
"ok". `search(url, query, timeout_s)` is the client: urllib with a timeout; a slow or dead server
raises ToolTimeout / ToolError.
"""
from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hetagent.errors import HetagentError

_WORD = re.compile(r"[a-z0-9]+")


class ToolError(HetagentError):
    """A tool call that failed (HTTP error, bad response)."""


class ToolTimeout(ToolError):
    """A tool call that did not answer within its timeout."""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class KeywordIndex:
    def __init__(self, passages: list[str]):
        self.passages = passages
        self.docs = [Counter(_words(p)) for p in passages]
        df = Counter(w for d in self.docs for w in d)
        n = max(len(passages), 1)
        self.idf = {w: math.log(1 + n / c) for w, c in df.items()}

    def search(self, query: str, k: int = 3) -> list[dict]:
        q = set(_words(query))
        scored = []
        for i, d in enumerate(self.docs):
            s = sum(self.idf.get(w, 0.0) * (1 + math.log(d[w])) for w in q if w in d)
            if s > 0:
                scored.append((s, i))
        scored.sort(reverse=True)
        return [{"score": round(s, 4), "text": self.passages[i]} for s, i in scored[:k]]


class SearchToolServer:
    """A threaded HTTP server on loopback. delay_ms adds a fixed wait (to test timeouts)."""

    def __init__(self, passages: list[str] | None = None, host: str = "127.0.0.1", port: int = 0,
                 delay_ms: float = 0.0):
        if passages is None:
            from hetagent.backends.corpus import load_passages
            passages = [p.embed_text() for p in load_passages()]
        self.index = KeywordIndex(passages)
        self.delay_ms = delay_ms
        index, server = self.index, self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):   # quiet
                pass

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                if u.path == "/health":
                    return self._send(200, {"status": "ok"})
                if u.path != "/search":
                    return self._send(404, {"error": "unknown path"})
                qs = urllib.parse.parse_qs(u.query)
                q = (qs.get("q") or [""])[0][:2000]
                try:
                    k = max(1, min(int((qs.get("k") or ["3"])[0]), 20))
                except ValueError:
                    return self._send(400, {"error": "k must be an integer"})
                if server.delay_ms:
                    time.sleep(server.delay_ms / 1000.0)
                self._send(200, {"query": q, "results": index.search(q, k)})

            def _send(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):   # a client that hung up: fine
                pass

        self.httpd = Server((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "SearchToolServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="hetagent-search-tool")
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def search(url: str, query: str, k: int = 3, timeout_s: float = 5.0) -> tuple[dict, int]:
    """(response document, response bytes). Raises ToolTimeout past timeout_s, ToolError else."""
    if timeout_s <= 0:
        raise ToolTimeout("no time left before the request's deadline for the tool call")
    full = f"{url.rstrip('/')}/search?" + urllib.parse.urlencode({"q": query[:2000], "k": k})
    try:
        with urllib.request.urlopen(full, timeout=timeout_s) as r:
            body = r.read(4 << 20)
    except (socket.timeout, TimeoutError):
        raise ToolTimeout(f"tool at {url} did not answer within {timeout_s:.3g} s") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise ToolTimeout(f"tool at {url} did not answer within {timeout_s:.3g} s") from None
        raise ToolError(f"tool at {url} failed: {e.reason}") from None
    except OSError as e:
        raise ToolError(f"tool at {url} failed: {e}") from None
    try:
        return json.loads(body), len(body)
    except ValueError:
        raise ToolError(f"tool at {url} answered with something that is not JSON") from None
