"""Request IDs, request metrics and structured logs: one ASGI middleware, cheap per request.

Every HTTP request gets an ID: the caller's ``X-Request-Id`` when it is a short
printable token, else a new one (a per-process random prefix and a counter).
It is echoed in the response and attached to every log record written while
the request runs.  The middleware also counts the request and times it per
endpoint template (``/personalizer/v1.0/rank``, not the raw path) and status,
and, when ``access_log`` is on, writes one access line per request.  Feature
values are logged only with ``log_features`` on (then the access line carries
the request body).  A W3C ``traceparent`` (and ``tracestate``) is kept for the
request's calls to the loop's recommender (``trace_context``).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .config import Settings
from .metrics import REQUEST_METRICS, observe_request
from .tracing import trace_context

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
#: W3C trace context: version-traceid-parentid-flags, ids not all zero.
_VALID_TRACEPARENT = re.compile(
    rb"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
)
MAX_LOGGED_BODY = 4096
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")
_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("banditloop.access")


def new_request_id() -> str:
    return f"{_PREFIX}-{next(_counter):x}"


_labels: dict[tuple[str, str], str] = {}


def _template(scope: Scope) -> str:
    """The route's path template with its base path (``/loops/{loop}/personalizer/v1.0``
    + ``/rank``); one label for everything no route matched."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    path: str = scope["path"]
    if path == template:
        return template
    prefix = path.rsplit("/", template.count("/"))[0]
    label = _labels.get((template, prefix))
    if label is None:
        base = prefix
        if base.startswith("/loops/"):
            rest = base[len("/loops/") :].partition("/")[2]
            base = "/loops/{loop}/" + rest if rest else "/loops/{loop}"
        label = base + template
        if len(_labels) < 10_000:
            _labels[(template, prefix)] = label
    return label


def _trace(headers: list[tuple[bytes, bytes]], parent: bytes) -> dict[str, str] | None:
    """The trace context to pass on: a valid ``traceparent`` and its ``tracestate``."""
    if not _VALID_TRACEPARENT.match(parent):
        return None
    out = {"traceparent": parent.decode()}
    for name, value in headers:
        if name == TRACESTATE and len(value) <= 512 and value.isascii():
            out["tracestate"] = value.decode()
    return out


def _flushing(send: Send) -> Send:
    async def send_and_flush(message: Message) -> None:
        if message["type"].startswith("lifespan.shutdown"):
            REQUEST_METRICS.flush()
        await send(message)

    return send_and_flush


class ObservabilityMiddleware:
    """Request ID, request metrics and the optional access log, as plain ASGI."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.access = settings.access_log
        self.log_bodies = settings.access_log and settings.log_features

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":  # keep the counts of the last second at exit
                send = _flushing(send)
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = None
        traced = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _VALID_ID.match(value):
                    rid = value.decode()
            elif name == TRACEPARENT:
                traced = _trace(scope["headers"], value)
        if rid is None:
            rid = new_request_id()
        token = request_id.set(rid)
        trace_token = None if traced is None else trace_context.set(traced)
        header = (REQUEST_ID_HEADER, rid.encode())
        status = 500
        body: list[bytes] | None = [] if self.log_bodies else None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        if body is not None:
            inner = receive

            async def receive_body() -> Message:
                message = await inner()
                if message["type"] == "http.request":
                    body.append(message.get("body", b""))
                return message

            receive = receive_body
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            observe_request(scope["method"], _template(scope), status, elapsed)
            if self.access:
                extra: dict[str, Any] = {
                    "method": scope["method"],
                    "path": scope["path"],  # never the query string: it may hold ?key=
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                }
                if body:
                    extra["body"] = b"".join(body)[:MAX_LOGGED_BODY].decode(errors="replace")
                access_log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra=extra,
                )
            request_id.reset(token)
            if trace_token is not None:
                trace_context.reset(trace_token)


# -- logging ---------------------------------------------------------------------

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives every record the ID of the request it was written in (``-`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request ID, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id.get()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


_OURS = "_banditloop_handler"


def configure_logging(settings: Settings) -> None:
    """Apply ``log_format`` to the process's console handlers (root and uvicorn's).

    Called at start-up of every worker, after uvicorn has set up its own logging.
    Only plain stream handlers are touched, so test harnesses keep theirs."""
    root = logging.getLogger()
    if not root.handlers:
        console = logging.StreamHandler()
        setattr(console, _OURS, True)
        root.addHandler(console)
    loggers = [root]
    if settings.log_format == "json":
        loggers += [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    formatter = JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler) is not logging.StreamHandler and not getattr(handler, _OURS, False):
                continue
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
            handler.setFormatter(formatter)
    if settings.access_log:
        access_log.setLevel(logging.INFO)
