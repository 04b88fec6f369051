"""Operations endpoints: readiness and Prometheus metrics (``/healthz`` is in app.py)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import metrics
from ..errors import Unavailable
from ..registry import Registry
from .deps import metrics_reader
from .errors import error_response

router = APIRouter(tags=["operations"])


def _check_ready(request: Request) -> dict[str, Any]:
    reg: Registry | None = getattr(request.app.state, "registry", None)
    if reg is None:
        raise Unavailable("The server is starting or stopping.")
    reg.store.ping()  # Unavailable: closed, or cannot be read
    missing = [name for name, loop in list(reg.loops.items()) if not loop.ready]
    if missing:
        raise Unavailable(f"No model loaded for loop(s): {', '.join(sorted(missing))}.")
    return {"status": "ready", "loops": len(reg.loops)}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the store or a model is not available."}},
)
async def readyz(request: Request) -> Response:
    """Readiness: the store answers a trivial query and every loop has its model loaded."""
    try:
        body = await run_in_threadpool(_check_ready, request)
    except Unavailable as ex:
        return error_response(ex)
    return Response(orjson.dumps(body), media_type="application/json")


def _scrape(request: Request) -> bytes:
    state = request.app.state
    reg = getattr(state, "registry", None)
    if reg is None:
        raise Unavailable("The server is starting or stopping.")
    scrape = getattr(state, "metrics_scrape", None)
    if scrape is None or scrape[0] is not reg:
        scrape = state.metrics_scrape = (reg, metrics.scrape_registry(reg))
    return metrics.exposition(scrape[1])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics of this server (every worker's, in multiprocess mode); with
    ``metrics_key_required``, for server admin keys only."""
    if getattr(request.app.state, "registry", None) is not None:
        metrics_reader(request)
    metrics.REQUEST_METRICS.flush()  # on the event loop's thread, where requests add
    body = await run_in_threadpool(_scrape, request)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
