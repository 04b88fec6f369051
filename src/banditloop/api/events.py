"""Client endpoints: Rank, Reward, Activate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from ..errors import NotFound
from ..loop import Loop, RankInput, body_hash
from .schemas import ERROR_RESPONSES, RankRequest, RankResponse, RewardRequest

router = APIRouter(responses=ERROR_RESPONSES)

EventId = Annotated[str, Path(max_length=256, description="The event ID of the Rank call.")]


def current_loop(request: Request) -> Loop:
    """The loop named in the path (``/loops/{loop}/...``), else the default loop."""
    name = request.path_params.get("loop", "default")
    loop: Loop | None = request.app.state.loops.get(name)
    if loop is None:
        raise NotFound(f"Loop {name} does not exist.")
    return loop


CurrentLoop = Annotated[Loop, Depends(current_loop)]


@router.post("/rank", status_code=201, response_model=RankResponse, tags=["client"])
async def rank(body: RankRequest, loop: CurrentLoop) -> Response:
    """Rank the actions for the context; the chosen action is `rewardActionId`."""
    req = RankInput(
        context_features=body.contextFeatures,
        actions=[(a.id, a.features) for a in body.actions],
        excluded=body.excludedActions,
        event_id=body.eventId,
        defer_activation=bool(body.deferActivation),
        body_hash=body_hash(body.model_dump(mode="json")),
    )
    content = await loop.rank(req)
    return Response(content, status_code=201, media_type="application/json")


@router.post("/events/{eventId}/reward", status_code=204, tags=["client"])
async def reward(eventId: EventId, body: RewardRequest, loop: CurrentLoop) -> Response:
    """Report the reward for an event; several rewards are aggregated."""
    await loop.reward(eventId, body.value)
    return Response(status_code=204)


@router.post("/events/{eventId}/activate", status_code=204, tags=["client"])
async def activate(eventId: EventId, loop: CurrentLoop) -> Response:
    """Activate an event ranked with `deferActivation`, so that it is learned."""
    await loop.activate(eventId)
    return Response(status_code=204)
