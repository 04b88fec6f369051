"""Client endpoints: Rank, Reward, Activate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from ..loop import RankInput, body_hash
from .deps import ClientLoop
from .schemas import ERROR_RESPONSES, RankRequest, RankResponse, RewardRequest

router = APIRouter(responses=ERROR_RESPONSES)

EventId = Annotated[str, Path(max_length=256, description="The event ID of the Rank call.")]


@router.post("/rank", status_code=201, response_model=RankResponse, tags=["client"])
async def rank(body: RankRequest, loop: ClientLoop) -> Response:
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
async def reward(eventId: EventId, body: RewardRequest, loop: ClientLoop) -> Response:
    """Report the reward for an event; several rewards are aggregated."""
    await loop.reward(eventId, body.value)
    return Response(status_code=204)


@router.post("/events/{eventId}/activate", status_code=204, tags=["client"])
async def activate(eventId: EventId, loop: ClientLoop) -> Response:
    """Activate an event ranked with `deferActivation`, so that it is learned."""
    await loop.activate(eventId)
    return Response(status_code=204)
