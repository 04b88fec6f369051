"""Client endpoints: Rank (with its extensions: re-ranking, the recommender), Reward,
Activate, and their multi-slot forms."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from ..ids import MAX_EVENT_ID
from ..loop import Loop, RankInput, body_hash
from ..ranking import SlotInput
from ..rerank import Reranker, RerankRequest
from .deps import ClientLoop
from .routing import OrjsonRoute
from .schemas import (
    ERROR_RESPONSES,
    MultiSlotRankRequest,
    MultiSlotRankResponse,
    MultiSlotRewardRequest,
    RankRequest,
    RankResponse,
    RewardRequest,
)

router = APIRouter(responses=ERROR_RESPONSES, route_class=OrjsonRoute)

EventId = Annotated[
    str, Path(max_length=MAX_EVENT_ID, description="The event ID of the Rank call.")
]


@router.post("/rank", status_code=201, response_model=RankResponse, tags=["client"])
async def rank(body: RankRequest, loop: ClientLoop, request: Request) -> Response:
    """Rank the actions for the context; the chosen action is `rewardActionId`.

    Extensions (docs/reranking.md): `rerank: true` re-ranks an upstream list given
    as the actions; `recommenderParams` instead of actions asks the loop's recommender.
    """
    content = await answer_rank(body, loop, request.app.state.reranker)
    return Response(content, status_code=201, media_type="application/json")


def rank_hash(body: RankRequest | MultiSlotRankRequest) -> str:
    """Identity of a Rank body, to tell a retry from a reuse of its event ID. Only a
    client's own event ID can be retried, so only then is it needed; a Rank with an
    extension is hashed always, which refuses a body that JSON cannot carry."""
    if body.eventId is None and not body.extended:
        return ""
    return body_hash(body.identity())


async def answer_rank(body: RankRequest, loop: Loop, reranker: Reranker) -> bytes:
    """The body of a Rank's answer: the route's and the fast path's (api/fastpath.py)."""
    if body.extended:
        req = RerankRequest(
            context_features=body.contextFeatures,
            actions=None
            if body.actions is None
            else [(a.id, a.features, a.upstreamScore) for a in body.actions],
            excluded=body.excludedActions,
            event_id=body.eventId,
            defer_activation=bool(body.deferActivation),
            body_hash=rank_hash(body),
            params=body.recommenderParams,
        )
        return await reranker.rank(loop, req)
    assert body.actions is not None  # not extended
    plain = RankInput(
        context_features=body.contextFeatures,
        actions=[(a.id, a.features) for a in body.actions],
        excluded=body.excludedActions,
        event_id=body.eventId,
        defer_activation=bool(body.deferActivation),
        body_hash=rank_hash(body),
    )
    return await loop.rank(plain)


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


@router.post(
    "/multislot/rank", status_code=201, response_model=MultiSlotRankResponse, tags=["client"]
)
async def rank_multislot(body: MultiSlotRankRequest, loop: ClientLoop) -> Response:
    """Fill several slots at once, each with a different action (needs --ccb_explore_adf)."""
    req = RankInput(
        context_features=body.contextFeatures,
        actions=[(a.id, a.features) for a in body.actions],
        excluded=None,
        event_id=body.eventId,
        defer_activation=bool(body.deferActivation),
        body_hash=rank_hash(body),
    )
    slots = [
        SlotInput(s.id, s.positionFeatures or s.features, s.excludedActions, s.baselineAction)
        for s in body.slots
    ]
    content = await loop.rank_multislot(req, slots)
    return Response(content, status_code=201, media_type="application/json")


@router.post("/multislot/events/{eventId}/reward", status_code=204, tags=["client"])
async def reward_multislot(
    eventId: EventId, body: MultiSlotRewardRequest, loop: ClientLoop
) -> Response:
    """Report rewards per slot; several calls are aggregated per slot."""
    await loop.reward_slots(eventId, [(r.slotId, r.value) for r in body.reward])
    return Response(status_code=204)


@router.post("/multislot/events/{eventId}/activate", status_code=204, tags=["client"])
async def activate_multislot(eventId: EventId, loop: ClientLoop) -> Response:
    """Activate a multi-slot event ranked with `deferActivation`."""
    await loop.activate(eventId)
    return Response(status_code=204)
