"""Rank, Reward and Activate answered straight from ASGI, in front of FastAPI's routing.

The routes of api/events.py stay registered: they make the OpenAPI document and
answer every request this path leaves to them.  This path does their work
without the framework's per-request machinery (routing over every mount,
dependency solving, request objects), which was half of a Rank's time
(docs/performance.md): it matches the path by hand, decodes with orjson,
validates with the same pydantic models, authorizes with the routes' own
function and calls the routes' own handlers.  A request FastAPI would refuse
before the handler runs (a content type other than JSON, a body that does not
parse or validate, an event ID over its length) is replayed to FastAPI, so every
such error answer is the routes' own.  It sits inside the observability and
limits middleware, which give every request its ID, metrics, body size limit,
rate limit and load shedding.
"""

from __future__ import annotations

import orjson
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.exceptions import HTTPException

from ..auth import CLIENT, key_from_headers
from ..errors import BanditloopError
from ..ids import MAX_EVENT_ID
from ..limits import ASGIApp, Message, Receive, Scope, Send
from .deps import find_loop
from .errors import error_response, http_error_response
from .events import activate, answer_rank, rank, reward, router
from .schemas import RankRequest, RewardRequest

#: The endpoints this path serves, by the last segment of their path.
_SUFFIXES = {
    rank: "/rank",
    reward: "/events/{eventId}/reward",
    activate: "/events/{eventId}/activate",
}
_JSON = b"application/json"
_LOOPS = "/loops/"


def client_routes() -> dict[str, APIRoute]:
    """The routes of api/events.py this path serves, by their last path segment; FastAPI
    puts the same objects in the scope, and the request metrics label endpoints by them."""
    out: dict[str, APIRoute] = {}
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint in _SUFFIXES:
            assert route.path == _SUFFIXES[route.endpoint], route.path
            out[route.path.rpartition("/")[2]] = route
    return out


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"content-type":
            return value
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # FastAPI's answer to an unreadable body
            raise HTTPException(400, "There was an error parsing the body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives the body already read once more, then the client's."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Message:
        return pending.pop() if pending else await receive()

    return again


class FastPath:
    """Serves the client endpoints of every base path; passes everything else on."""

    def __init__(self, app: ASGIApp, state: State, mounts: list[str]) -> None:
        """``mounts``: the base paths api/events.py is mounted at, ``/loops/{loop}/...``
        included; ``state``: the app's, which holds the registry and the reranker."""
        self.app = app
        self.state = state
        self.mounts = frozenset(mounts)
        self.routes = client_routes()

    def match(self, path: str) -> tuple[APIRoute, str, str, str] | None:
        """(route, endpoint, loop name, event ID) for a client endpoint's path, or None."""
        head, _, endpoint = path.rpartition("/")
        event_id = ""
        if endpoint != "rank":
            head, _, event_id = head.rpartition("/")
            head, _, events = head.rpartition("/")
            if events != "events" or not event_id:
                return None
        loop = "default"
        if head.startswith(_LOOPS):
            loop, slash, rest = head[len(_LOOPS) :].partition("/")
            if not loop or not slash:
                return None
            head = _LOOPS + "{loop}/" + rest
        route = self.routes.get(endpoint)
        if route is None or head not in self.mounts:
            return None
        return route, endpoint, loop, event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            hit = self.match(scope["path"])
        if hit is None:
            await self.app(scope, receive, send)
            return
        route, endpoint, loop, event_id = hit
        if endpoint != "activate" and _content_type(scope["headers"]) != _JSON:
            await self.app(scope, receive, send)  # FastAPI's rules for other content types
            return
        scope["route"] = route  # the endpoint's label in the request metrics
        body = b""
        try:
            if endpoint != "activate":
                body = await _read_body(receive)
            content = await self.serve(scope, endpoint, loop, event_id, body)
        except BanditloopError as err:
            await error_response(err)(scope, receive, send)
            return
        except HTTPException as exc:
            await http_error_response(exc)(scope, receive, send)
            return
        if content is None:
            await self.app(scope, _replay(body, receive), send)
        elif content:
            headers = [(b"content-length", str(len(content)).encode()), (b"content-type", _JSON)]
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": content})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def serve(
        self, scope: Scope, endpoint: str, loop: str, event_id: str, body: bytes
    ) -> bytes | None:
        """The Rank answer, b"" for 204, or None to leave the request to FastAPI."""
        try:
            data = orjson.loads(body) if body else None
            if endpoint == "rank":
                req = RankRequest.model_validate(data)
            elif endpoint == "reward":
                value = RewardRequest.model_validate(data).value
        except (orjson.JSONDecodeError, ValidationError):
            return None
        if len(event_id) > MAX_EVENT_ID:
            return None
        key = key_from_headers(scope["headers"])
        found = find_loop(self.state.registry, loop, key, CLIENT)
        if endpoint == "rank":
            return await answer_rank(req, found, self.state.reranker)
        if endpoint == "reward":
            await found.reward(event_id, value)
        else:
            await found.activate(event_id)
        return b""
