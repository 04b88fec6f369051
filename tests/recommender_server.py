"""A real HTTP recommender for the tests, on a free local port, that misbehaves on demand."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: What the recommender does: ok, slow (no answer for 2 s), drip (headers at once,
#: then the body a byte every 0.1 s), error500, malformed (not JSON), empty
#: ({"items": []}), wrongshape ({"items": {...}}), noids (items without ids).
MODES = ("ok", "slow", "drip", "error500", "malformed", "empty", "wrongshape", "noids")


@dataclass
class Recommender:
    url: str
    items: list[dict[str, Any]]
    mode: str = "ok"
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)  # method, path, body
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request


def _handler(rec: Recommender) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        wbufsize = 1 << 16

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            rec.requests.append((method, self.path, self.rfile.read(n) if n else b""))
            rec.headers.append({k.lower(): v for k, v in self.headers.items()})
            mode = rec.mode
            good = json.dumps({"items": rec.items}).encode()
            if mode == "slow":
                time.sleep(2)
                self._answer(200, good)
            elif mode == "drip":
                self.send_response(200)
                self.send_header("Content-Length", str(len(good)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(good)):
                    self.wfile.write(good[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            elif mode == "error500":
                self._answer(500, b'{"error": "boom"}')
            elif mode == "malformed":
                self._answer(200, b'{"items": [{"id": "a"')
            elif mode == "empty":
                self._answer(200, b'{"items": []}')
            elif mode == "wrongshape":
                self._answer(200, b'{"items": {"id": "a"}}')
            elif mode == "noids":
                self._answer(200, b'{"items": [{"name": "a"}, {"id": [1]}, {"id": true}]}')
            else:
                self._answer(200, good)

        def do_GET(self) -> None:
            # banditloop may give up waiting, as it should, and close the connection
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def recommender(items: list[dict[str, Any]]) -> Iterator[Recommender]:
    rec = Recommender("", items)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
