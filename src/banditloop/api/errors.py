"""One handler turns every failure into the JSON error body (errors.py, and
docs/operator-guide.md, "Errors")."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ..errors import BadRequest, BanditloopError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "ResourceNotFound",
    405: "MethodNotAllowed",
    413: "PayloadSizeExceeded",
    415: "UnsupportedMediaType",
    422: "BadRequest",
}


def _retry_after(err: BanditloopError) -> dict[str, str]:
    return {} if err.retry_after is None else {"Retry-After": str(err.retry_after)}


def error_response(err: BanditloopError) -> Response:
    return Response(
        orjson.dumps(err.body()),
        status_code=err.status,
        media_type="application/json",
        headers={"x-ms-error-code": err.code, **_retry_after(err)},
    )


def http_error_response(exc: HTTPException) -> Response:
    """Starlette's and FastAPI's own errors (404, 405, 413 ...) in our error shape."""
    code = _HTTP_CODES.get(exc.status_code, "BadRequest")
    err = BanditloopError(str(exc.detail), code)
    err.status = exc.status_code
    response = error_response(err)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _code_for(path: str, malformed: bool) -> str:
    """Azure's code for a bad body: the endpoint's own, except unparsable admin bodies."""
    if path.endswith("/rank"):
        return "InvalidRankRequest"
    if path.endswith("/reward"):
        return "InvalidRewardRequest"
    if path.endswith("/activate"):
        return "InvalidEventIdToActivate"
    if malformed:
        return "BadRequest"
    if path.endswith("/configurations/service"):
        return "InvalidServiceConfiguration"
    if path.endswith("/configurations/policy"):
        return "InvalidPolicyConfiguration"
    return "BadRequest"


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        if e.get("type") == "json_invalid":
            return "The request body is not valid JSON."
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "Invalid request."


def install(app: FastAPI) -> None:
    @app.exception_handler(BanditloopError)
    async def _ours(request: Request, exc: BanditloopError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        code = _code_for(request.url.path, malformed)
        return error_response(BadRequest(_describe(exc), code))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return http_error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(BanditloopError("A generic error has occurred on the server."))
