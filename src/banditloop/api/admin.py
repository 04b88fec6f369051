"""Administration endpoints of one loop: configuration, policy, model, logs."""

from __future__ import annotations

import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..config import ServiceConfiguration
from ..errors import BadRequest
from ..logimport import lines_of
from ..modelfile import MAX_MODEL_BYTES, signed_archive, unpack
from ..upkeep import delete_logs as forget_logs
from .deps import AdminLoop
from .schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES)


class PolicyContract(BaseModel):
    name: str = Field(max_length=256)
    arguments: str = Field(max_length=1024)


class DateRange(BaseModel):
    from_: str | None = Field(None, alias="from")
    to: str | None = None


class LogsProperties(BaseModel):
    dateRange: DateRange


class ModelProperties(BaseModel):
    creationTime: str | None = None
    lastModifiedTime: str | None = None


class ForgetRequest(BaseModel):
    """Delete every event whose context has ``feature`` equal to ``value``."""

    feature: str | list[str] = Field(
        description='Path of a context feature: "userId", "user.id" or ["user", "id"].'
    )
    value: str | float | bool = Field(description="The value to match exactly.")


class Deleted(BaseModel):
    deleted: int


class ImportResult(BaseModel):
    lines: int = Field(description="Lines read (blank ones not counted).")
    events: int = Field(description="Decisions stored.")
    duplicates: int = Field(description="Lines skipped: their EventId was logged already.")
    multiSlotLines: int = Field(description="Multi-slot (CCB) lines, not imported.")


SPOOL_BYTES = 8 << 20  # an upload is kept in memory up to this size, then on disk


@router.get("/configurations/service", response_model=ServiceConfiguration, tags=["admin"])
async def get_service_configuration(loop: AdminLoop) -> dict[str, Any]:
    """The loop's service configuration."""
    return loop.service_configuration()


@router.put("/configurations/service", response_model=ServiceConfiguration, tags=["admin"])
async def update_service_configuration(
    config: ServiceConfiguration, loop: AdminLoop
) -> dict[str, Any]:
    """Replace the service configuration; it takes effect at once."""
    return await run_in_threadpool(loop.update_configuration, config)


@router.get("/holdout/lift", tags=["admin"])
async def holdout_lift(loop: AdminLoop) -> dict[str, Any]:
    """Extension: mean reward of the loop vs its holdout group (holdoutPercentage), the
    difference with a 95% Welch interval, overall and per UTC day (docs/holdout.md)."""
    from ..holdout import lift

    return await run_in_threadpool(lambda: lift(loop.logged(0, 1e18)))


@router.get("/configurations/policy", response_model=PolicyContract, tags=["admin"])
async def get_policy(loop: AdminLoop) -> dict[str, str]:
    """The loop's learning policy (VW arguments)."""
    return loop.policy_contract()


@router.put("/configurations/policy", response_model=PolicyContract, tags=["admin"])
async def update_policy(policy: PolicyContract, loop: AdminLoop) -> dict[str, str]:
    """Set new VW arguments, checked by starting VW with them; starts a new model."""
    return await run_in_threadpool(loop.update_policy, policy.name, policy.arguments)


@router.delete("/configurations/policy", response_model=PolicyContract, tags=["admin"])
async def reset_policy(loop: AdminLoop) -> dict[str, str]:
    """Go back to the default policy (returned), with a new model."""
    args = loop.settings.default_policy
    return await run_in_threadpool(loop.update_policy, loop.name, args)


@router.get(
    "/model",
    tags=["admin"],
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "application/zip": {}},
            "description": "The model file, or with signed=true a zip.",
        }
    },
)
async def get_model(
    loop: AdminLoop, signed: Annotated[bool, Query(description="Zip with a digest.")] = False
) -> Response:
    """The model as a VW model file, or with `signed=true` a zip that PUT /model accepts."""
    blob = await run_in_threadpool(loop.export_model)
    if signed:
        return Response(
            signed_archive(blob),
            media_type="application/zip",
            headers={"Content-Disposition": "attachment; filename=model.zip"},
        )
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"Content-Disposition": "attachment; filename=model.vw"},
    )


@router.put(
    "/model",
    status_code=204,
    tags=["admin"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def import_model(request: Request, loop: AdminLoop) -> Response:
    """Replace the model with a VW model file (or a zip from GET /model?signed=true)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MODEL_BYTES:
            raise BadRequest("The model file is too large.", "PayloadSizeExceeded")
    await run_in_threadpool(loop.import_model, unpack(bytes(body)))
    return Response(status_code=204)


@router.delete("/model", status_code=204, tags=["admin"])
async def reset_model(loop: AdminLoop) -> Response:
    """Start over with an empty model, which ranks uniformly."""
    await run_in_threadpool(loop.reset_model)
    return Response(status_code=204)


@router.get("/model/properties", response_model=ModelProperties, tags=["admin"])
async def model_properties(loop: AdminLoop) -> dict[str, Any]:
    """When the model was created (reset or imported) and last saved."""
    return await run_in_threadpool(loop.model_properties)


@router.get(
    "/logs/properties", response_model=LogsProperties, tags=["admin"], response_model_by_alias=True
)
async def logs_properties(loop: AdminLoop) -> dict[str, Any]:
    """The time range of the logged events."""
    return await run_in_threadpool(loop.logs_properties)


@router.delete("/logs", status_code=204, tags=["admin"])
async def delete_logs(loop: AdminLoop) -> Response:
    """Delete every logged decision, reward, activation and tracked event of the loop."""
    await run_in_threadpool(forget_logs, loop)
    return Response(status_code=204)


@router.delete("/logs/events/{eventId}", response_model=Deleted, tags=["admin", "extension"])
async def delete_event(
    eventId: Annotated[str, Path(max_length=256)], loop: AdminLoop
) -> dict[str, int]:
    """Extension: delete what was logged for one event ID."""
    n = await run_in_threadpool(lambda: forget_logs(loop, event_id=eventId))
    return {"deleted": n}


@router.post("/logs/forget", response_model=Deleted, tags=["admin", "extension"])
async def forget(request: Annotated[ForgetRequest, Body()], loop: AdminLoop) -> dict[str, int]:
    """Extension: delete every event whose context has a feature value (e.g. a user ID),
    and the tracked events, history and recommendations of the user or session with
    that id (docs/recommendations.md)."""
    path = request.feature if isinstance(request.feature, list) else request.feature.split(".")
    if not path or not all(path):
        raise BadRequest('feature must name a context feature, e.g. "user.id".')
    n = await run_in_threadpool(lambda: forget_logs(loop, feature=(path, request.value)))
    return {"deleted": n}


@router.post(
    "/logs/import",
    response_model=ImportResult,
    tags=["admin", "extension"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def import_logs(
    request: Request,
    loop: AdminLoop,
    learn: Annotated[bool, Query(description="false: keep for evaluation only.")] = True,
) -> dict[str, int]:
    """Extension: log DSJSON decisions (one JSON object per line, gzip-compressed or
    not; e.g. Azure Personalizer's log mirror) with their rewards. The whole upload is
    checked first: a bad line stores nothing (400, its line numbers in `details`).
    Event IDs already logged are skipped (docs/migrating-from-azure.md)."""
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as body:
        async for chunk in request.stream():
            body.write(chunk)
        body.seek(0)
        lines = lines_of(body)
        summary = await run_in_threadpool(lambda: loop.import_lines(lines, learn))
    return summary.to_json()
