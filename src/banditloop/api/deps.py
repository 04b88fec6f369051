"""Dependencies: which loop a request is for, and whether its key may call the endpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..auth import ADMIN, CLIENT, authorize
from ..loop import Loop
from ..registry import Registry


def request_key(request: Request) -> str | None:
    """The key from ``Ocp-Apim-Subscription-Key`` or ``Authorization: Bearer``."""
    key = request.headers.get("ocp-apim-subscription-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


def _loop(request: Request, role: str) -> Loop:
    reg = registry(request)
    name = request.path_params.get("loop", "default")
    loop = reg.loops.get(name)
    # Authorize before saying whether the loop exists.
    authorize(request_key(request), role, reg.keys, loop.record.key_hashes if loop else {})
    return reg.get(name)


def client_loop(request: Request) -> Loop:
    return _loop(request, CLIENT)


def admin_loop(request: Request) -> Loop:
    return _loop(request, ADMIN)


def server_admin(request: Request) -> Registry:
    """Server-wide administration (the set of loops): server admin keys only."""
    reg = registry(request)
    authorize(request_key(request), ADMIN, reg.keys)
    return reg


ClientLoop = Annotated[Loop, Depends(client_loop)]
AdminLoop = Annotated[Loop, Depends(admin_loop)]
ServerAdmin = Annotated[Registry, Depends(server_admin)]
