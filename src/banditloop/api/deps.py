"""Dependencies: which loop a request is for, and whether its key may call the endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from ..auth import ADMIN, CLIENT, authorize, key_from_headers
from ..loop import Loop
from ..registry import Registry
from ..service import Service


def request_key(request: Request) -> str | None:
    """The key from ``Ocp-Apim-Subscription-Key`` or ``Authorization: Bearer``."""
    return key_from_headers(request.headers.raw)


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


def service(request: Request) -> Service:
    opened: Service = request.app.state.service
    return opened


def find_loop(reg: Registry, name: str, key: str | None, role: str) -> Loop:
    """The loop a request names, if its key may call the endpoint (the fast path's too).

    A loop with no keys of its own on a server with none is open, but not for
    administration once any other loop has keys: then only keys of its own (or server
    admin keys) may administer it."""
    loop = reg.loops.get(name)
    rings = [reg.keys, loop.record.key_hashes if loop else {}]
    open_loop = not any(r.get(CLIENT) or r.get(ADMIN) for r in rings)
    if role == ADMIN and open_loop and _any_loop_keys(reg):
        rings.append(_CLOSED)
    # Authorize before saying whether the loop exists.
    authorize(key, role, *rings)
    return reg.get(name)


def _any_loop_keys(reg: Registry) -> bool:
    return any(any(loop.record.key_hashes.values()) for loop in list(reg.loops.values()))


async def named_loop(
    loop: Annotated[str, Path(description="The loop's name: letters, digits, '-' and '_'.")],
) -> None:
    """Declares the ``{loop}`` of a ``/loops/{loop}/...`` mount, so that the OpenAPI
    document defines it; the loop dependencies below read it from the path."""


def _loop(request: Request, role: str) -> Loop:
    name = request.path_params.get("loop", "default")
    return find_loop(registry(request), name, request_key(request), role)


# The dependencies are ``async`` although nothing in them awaits: FastAPI runs a plain
# ``def`` dependency in its thread pool, a hand-off that cost a third of a Rank's time.


async def client_loop(request: Request) -> Loop:
    return _loop(request, CLIENT)


async def admin_loop(request: Request) -> Loop:
    return _loop(request, ADMIN)


#: A keyring no key matches: once any loop has keys, /loops is closed to all but
#: server admin keys, even if the server itself has none.
_CLOSED = {ADMIN: ["no key hashes to this"]}


async def server_admin(request: Request) -> Registry:
    """Server-wide administration (the set of loops): server admin keys only."""
    reg = registry(request)
    closed = [_CLOSED] if _any_loop_keys(reg) else []
    authorize(request_key(request), ADMIN, reg.keys, *closed)
    return reg


def metrics_reader(request: Request) -> None:
    """/metrics: open unless ``metrics_key_required``; then a server admin key only."""
    reg = registry(request)
    if reg.settings.metrics_key_required:
        authorize(request_key(request), ADMIN, reg.keys, _CLOSED)


ClientLoop = Annotated[Loop, Depends(client_loop)]
AdminLoop = Annotated[Loop, Depends(admin_loop)]
ServerAdmin = Annotated[Registry, Depends(server_admin)]
