"""Limits and load shedding: what a request may hold, and how much load is accepted.

``LimitsMiddleware`` is plain ASGI in front of the application, cheap per
request (a header scan, a counter and, with rate limits on, one token bucket):

* a body larger than ``max_body_bytes`` is refused with 413 ``PayloadSizeExceeded``
  before anything parses it; a ``Content-Length`` is checked at once, a chunked
  body is counted as it arrives and never buffered beyond the limit;
* more than ``max_concurrent_requests`` requests in flight in this process:
  503 ``ServiceUnavailable`` with ``Retry-After`` (shed, not queued);
* more than ``rate_limit_per_second`` requests per API key (a token bucket of
  ``rate_limit_burst``): 429 ``TooManyRequests`` with ``Retry-After``.

What a Rank may carry (feature count, string length) is counted while its features
are cleaned (featurize.FeatureLimits: one walk), and the store's writer queue is
bounded by ``max_write_queue`` (store/writer.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from .auth import key_from_headers
from .errors import BanditloopError, Overloaded, PayloadTooLarge, RateLimited
from .metrics import SHED

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths never shed nor rate limited: probes and scrapes must see an overloaded server.
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
_SHED_OVERLOADED = SHED.labels("overloaded")
_SHED_RATE_LIMITED = SHED.labels("rate_limited")
IMPORT_PATH = "/logs/import"  # bodies up to max_import_bytes
MAX_BUCKETS = 10_000  # keys tracked at once; beyond, full buckets are forgotten


def error_headers(err: BanditloopError) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"x-ms-error-code", err.code.encode())]
    if err.retry_after is not None:
        headers.append((b"retry-after", str(err.retry_after).encode()))
    return headers


async def _answer(send: Send, err: BanditloopError) -> None:
    body = orjson.dumps(err.body())
    headers = [*error_headers(err), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    """Per-key token buckets: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill]

    def take(self, key: str, now: float) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            b = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return 0.0
        b[0] = tokens
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= MAX_BUCKETS:  # all busy (many keys): start over
            self._buckets.clear()


class LimitsMiddleware:
    """Body size, in-flight and per-key rate limits, as plain ASGI (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_concurrent_requests: int = 0,
        rate_limit_per_second: float = 0,
        rate_limit_burst: float = 0,
        max_import_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_import = max(max_import_bytes, max_body_bytes)
        self.max_inflight = max_concurrent_requests
        self.inflight = 0
        self.buckets = (
            TokenBuckets(rate_limit_per_second, rate_limit_burst or rate_limit_per_second)
            if rate_limit_per_second > 0
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        # a log import streams a whole file (validated before anything is stored)
        limit = self.max_import if scope["path"].endswith(IMPORT_PATH) else self.max_body
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > limit:
                    await _answer(send, self._too_large(limit))
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if self.buckets is not None:
            wait = self.buckets.take(key_from_headers(headers) or "", time.monotonic())
            if wait:
                retry = max(1, math.ceil(wait))
                _SHED_RATE_LIMITED.inc()
                await _answer(
                    send,
                    RateLimited(
                        "Rate limit of this key exceeded; retry after the time in Retry-After.",
                        retry,
                    ),
                )
                return
        if self.max_inflight and self.inflight >= self.max_inflight:
            _SHED_OVERLOADED.inc()
            await _answer(
                send, Overloaded("The server is overloaded; retry after the time in Retry-After.")
            )
            return
        if chunked:
            receive = self._counting(receive, limit)
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1

    def _too_large(self, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")

    def _counting(self, receive: Receive, limit: int) -> Receive:
        """``receive`` that refuses a chunked body once it passes the limit (the app's
        handler renders the 413 with the JSON error body)."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI passes an HTTPException through
                    raise HTTPException(413, self._too_large(limit).message)
            return message

        return counted
