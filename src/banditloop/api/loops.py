"""Server administration: the set of loops (server-wide admin keys only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..auth import keyring
from .deps import ServerAdmin
from .schemas import ERROR_RESPONSES

router = APIRouter(prefix="/loops", tags=["loops"], responses=ERROR_RESPONSES)
LoopName = Annotated[str, Path(max_length=64, description="Letters, digits, '-' and '_'.")]


class LoopSpec(BaseModel):
    """A new loop: service configuration fields, policy arguments, and its own keys."""

    configuration: dict[str, Any] = Field(default_factory=dict)
    policy: str | None = Field(None, max_length=1024)
    clientKeys: list[str] = Field(default_factory=list)
    adminKeys: list[str] = Field(default_factory=list)


class LoopInfo(BaseModel):
    name: str
    path: str
    policy: str
    learningMode: str
    modelVersion: str


@router.get("", response_model=list[LoopInfo])
async def list_loops(reg: ServerAdmin) -> list[dict[str, Any]]:
    """Every loop this server hosts."""
    return [loop.info() for loop in reg.loops.values()]


@router.put(
    "/{loop_name}",
    response_model=LoopInfo,
    status_code=201,
    responses={200: {"model": LoopInfo, "description": "The loop already existed."}},
)
async def create_loop(
    loop_name: LoopName, reg: ServerAdmin, spec: Annotated[LoopSpec | None, Body()] = None
) -> Response:
    """Create a loop (201), or return the existing one unchanged (200)."""
    spec = spec or LoopSpec.model_validate({})
    keys = keyring(spec.clientKeys, spec.adminKeys)
    loop, created = await run_in_threadpool(
        reg.create, loop_name, spec.configuration, spec.policy, keys
    )
    body = LoopInfo.model_validate(loop.info()).model_dump_json()
    return Response(body, status_code=201 if created else 200, media_type="application/json")


class LoopKeys(BaseModel):
    """A loop's complete set of keys: the ones given replace all the old ones."""

    clientKeys: list[str] = Field(default_factory=list)
    adminKeys: list[str] = Field(default_factory=list)


@router.put("/{loop_name}/keys", status_code=204)
async def rotate_keys(loop_name: LoopName, keys: LoopKeys, reg: ServerAdmin) -> Response:
    """Replace a loop's keys at run time (rotation without restart): add the new key
    next to the old one, move the clients, then PUT again without the old one."""
    loop = reg.get(loop_name)
    hashes = keyring(keys.clientKeys, keys.adminKeys)
    await run_in_threadpool(loop.set_keys, hashes)
    return Response(status_code=204)


@router.delete("/{loop_name}", status_code=204)
async def delete_loop(loop_name: LoopName, reg: ServerAdmin) -> Response:
    """Delete a loop with its configuration, model and logs."""
    await run_in_threadpool(reg.delete, loop_name)
    return Response(status_code=204)
