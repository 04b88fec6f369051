"""The operator dashboard: a static page, its assets, and the JSON it polls.

``/dashboard?loop=NAME`` or ``/loops/NAME/dashboard`` (the default loop when
none is named).  The page and its data need an admin key when keys are set,
by the same rules as the admin API; a browser may pass it as ``?key=``, which
the page then keeps in the tab's session storage and removes from the address.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from ..auth import ADMIN, authorize
from ..dashboard import Dashboards
from ..errors import NotFound
from ..loop import Loop
from .deps import named_loop, registry, request_key
from .schemas import ERROR_RESPONSES

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES)
STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}


def dashboard_loop(request: Request) -> Loop:
    """The loop named in the path or ``?loop=``; admin key from a header or ``?key=``."""
    reg = registry(request)
    name = request.path_params.get("loop") or request.query_params.get("loop") or "default"
    loop = reg.loops.get(name)
    key = request_key(request) or request.query_params.get("key")
    authorize(key, ADMIN, reg.keys, loop.record.key_hashes if loop else {})
    return reg.get(name)


DashboardLoop = Annotated[Loop, Depends(dashboard_loop)]
Minutes = Annotated[int, Query(ge=5, le=1440, description="Width of the window.")]


def _dashboards(request: Request) -> Dashboards:
    boards: Dashboards = request.app.state.dashboards
    return boards


def _page(loop: Loop, data_url: str) -> Response:
    text = (STATIC / "dashboard.html").read_text()
    text = text.replace("{{loop}}", html.escape(loop.name)).replace(
        "{{data_url}}", html.escape(data_url)
    )
    return Response(
        text, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


@router.get("/dashboard", response_class=Response, include_in_schema=True)
async def dashboard(loop: DashboardLoop) -> Response:
    """The dashboard page of a loop (``?loop=NAME``, default ``default``)."""
    return _page(loop, f"/dashboard/data?loop={loop.name}")


@router.get("/loops/{loop}/dashboard", response_class=Response, dependencies=[Depends(named_loop)])
async def loop_dashboard(loop: DashboardLoop) -> Response:
    """The dashboard page of a named loop."""
    return _page(loop, f"/loops/{loop.name}/dashboard/data")


async def _data(request: Request, loop: Loop, minutes: int) -> Response:
    data = await run_in_threadpool(_dashboards(request).data, loop, minutes)
    return Response(
        orjson.dumps(data), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@router.get("/dashboard/data")
async def dashboard_data(request: Request, loop: DashboardLoop, minutes: Minutes = 60) -> Response:
    """What the dashboard shows, as JSON (``?loop=NAME``)."""
    return await _data(request, loop, minutes)


@router.get("/loops/{loop}/dashboard/data", dependencies=[Depends(named_loop)])
async def loop_dashboard_data(
    request: Request, loop: DashboardLoop, minutes: Minutes = 60
) -> Response:
    """What the dashboard of a named loop shows, as JSON."""
    return await _data(request, loop, minutes)


@router.get("/dashboard/static/{name}", response_class=FileResponse)
async def dashboard_asset(name: str) -> FileResponse:
    """The page's script, styles and the vendored uPlot (no key needed: no data)."""
    if name not in ASSETS:
        raise NotFound(f"No asset {name}.")
    return FileResponse(
        STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"}
    )
