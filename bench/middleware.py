"""Cost of the observability middleware (request ID, metrics) per request, in µs.

Runs the middleware around a trivial ASGI app and compares with the bare app.

    .venv/bin/python bench/middleware.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from banditloop.config import Settings
from banditloop.observability import ObservabilityMiddleware

HEADERS = [(b"host", b"x"), (b"content-type", b"application/json"), (b"accept", b"*/*")]


class Route:
    path = "/rank"


async def app(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = Route
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def send(message: Any) -> None:
    pass


async def receive() -> Any:
    return {"type": "http.request", "body": b""}


async def per_request(target: Any, n: int, headers: list[tuple[bytes, bytes]] = HEADERS) -> float:
    """Microseconds per Rank through ``target`` (n = 0: start-up only, for callgrind)."""
    start = time.perf_counter()
    for _ in range(n):
        scope = {"type": "http", "method": "POST", "path": "/personalizer/v1.0/rank"}
        scope["headers"] = headers
        await target(scope, receive, send)
    return (time.perf_counter() - start) / max(n, 1) * 1e6


async def main() -> None:
    wrapped = ObservabilityMiddleware(app, Settings())
    runs = [(await per_request(app, 50_000), await per_request(wrapped, 50_000)) for _ in range(5)]
    bare, with_mw = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"bare app {bare:.2f} µs, with middleware {with_mw:.2f} µs: {with_mw - bare:.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
