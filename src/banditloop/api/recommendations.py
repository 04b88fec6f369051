"""Extension endpoints: event tracking, scenarios, and recommendations for a scenario
(docs/recommendations.md)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..dsjson import parse_timestamp
from ..errors import BadRequest, NotFound
from ..featurize import check_text
from ..ids import check_event_id
from ..loop import Loop, body_hash
from ..recommendations.config import EVENT_TYPE, ScenarioConfig
from ..recommendations.events import EventLog
from ..recommendations.service import Ask, Incoming, Recommendations, edit_scenario
from ..recommendations.service import track as track_events
from ..recommender import Param
from .deps import AdminLoop, ClientLoop
from .schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES, tags=["extension"])
MAX_EVENTS = 1000
Id = Annotated[str | None, Field(None, min_length=1, max_length=256)]
ScenarioName = Annotated[str, Path(max_length=64, description="The scenario's name.")]


class TrackIn(BaseModel):
    type: str = Field(
        pattern=EVENT_TYPE.pattern,
        description="click, buy, consume, rate, basket, view, or a custom type.",
    )
    itemId: str = Field(min_length=1, max_length=256)
    userId: Id = Field(None, description="Hashed before it is stored.")
    sessionId: Id = Field(None, description="Hashed before it is stored.")
    timestamp: float | str | None = Field(
        None, description="Seconds since the epoch, or ISO-8601; default now (never later)."
    )
    value: float | None = Field(
        None, allow_inf_nan=False, description="Rating, price, share consumed."
    )
    eventId: Id = Field(None, description="The Rank (or recommendation) that led to it.")

    def incoming(self) -> Incoming:
        for text in (self.itemId, self.userId, self.sessionId, self.eventId):
            if text is not None:
                check_text(text, "BadRequest")
        if self.eventId is not None:
            check_event_id(self.eventId)
        ts = self.timestamp
        if isinstance(ts, str):
            try:
                ts = parse_timestamp(ts)
            except ValueError:
                raise BadRequest(f"timestamp {ts!r} is not an ISO-8601 time.") from None
        if ts is not None and not (math.isfinite(ts) and 0 <= ts < 1e11):
            raise BadRequest("timestamp must be seconds since 1970 or an ISO-8601 time.")
        return Incoming(
            self.type, self.itemId, self.userId, self.sessionId, ts, self.value, self.eventId
        )


class TrackBatch(BaseModel):
    events: list[TrackIn] = Field(min_length=1, max_length=MAX_EVENTS)


class Tracked(BaseModel):
    accepted: int = Field(description="Events stored.")
    rewards: int = Field(description="Events that became a Reward of the Rank they name.")


class RecommendIn(BaseModel):
    userId: Id = None
    sessionId: Id = None
    itemId: Id = Field(None, description="The item the page is about, if any.")
    count: int | None = Field(
        None, ge=1, le=50, description="Items wanted (default: the scenario's)."
    )
    contextFeatures: list[Any] | None = Field(None, description="Context features, as in Rank.")
    categories: list[str] | None = Field(None, description="Only items in these categories.")
    eventId: Id = Field(None, description="Generated when absent; a retry gets the same answer.")
    recommenderParams: dict[str, Param] | None = Field(
        None, description="Values for the loop's recommender, when the scenario asks it."
    )

    @field_validator("categories")
    @classmethod
    def _few(cls, categories: list[str] | None) -> list[str] | None:
        if categories is not None and len(categories) > 100:
            raise ValueError("at most 100 categories")
        return categories


class RecommendedItem(BaseModel):
    id: str
    probability: float
    via: str | None = Field(None, description="The source that proposed it.")


class Recommendation(BaseModel):
    scenario: str
    eventId: str | None = Field(description="The logged Rank event; null when no items.")
    rewardActionId: str | None = Field(description="The item the loop learns about.")
    source: str = Field(description="scenario, or fallback when the fallback chain was used.")
    items: list[RecommendedItem]


def _recommendations(request: Request) -> Recommendations:
    recs: Recommendations = request.app.state.recommendations
    return recs


@router.post("/tracking/events", response_model=Tracked)
async def track(batch: TrackBatch, loop: ClientLoop, request: Request) -> dict[str, int]:
    """Extension: store a batch of user events; an event with an `eventId` whose item is
    the Rank's `rewardActionId` is also a Reward (the loop's `tracking.rewards`)."""
    incoming = [e.incoming() for e in batch.events]
    return await track_events(loop, incoming)


@router.get("/tracking/status", tags=["admin"])
async def tracking_status(loop: AdminLoop, request: Request) -> dict[str, Any]:
    """Extension: this process's built-in models (high-water mark `seq`, events applied,
    catalogue items) and the tracked events stored."""
    models = await run_in_threadpool(_recommendations(request).models.get, loop)
    stored = await run_in_threadpool(EventLog(loop.store, loop.name).count)
    return {**models.status(), "stored": stored}


@router.get("/scenarios", response_model=dict[str, ScenarioConfig], tags=["admin"])
async def list_scenarios(loop: AdminLoop) -> dict[str, Any]:
    """Extension: every scenario of the loop, by name."""
    return dict(loop.wire.scenarios or {})


@router.get("/scenarios/{name}", response_model=ScenarioConfig, tags=["admin"])
async def get_scenario(name: ScenarioName, loop: AdminLoop) -> ScenarioConfig:
    """Extension: one scenario."""
    scenario = (loop.wire.scenarios or {}).get(name)
    if scenario is None:
        raise NotFound(f"Scenario {name} does not exist.")
    return scenario


@router.put("/scenarios/{name}", response_model=ScenarioConfig, tags=["admin"])
async def put_scenario(
    name: ScenarioName, scenario: Annotated[ScenarioConfig, Body()], loop: AdminLoop
) -> ScenarioConfig:
    """Extension: create or replace a scenario; it is used at once."""
    await run_in_threadpool(edit_scenario, loop, name, scenario)
    return scenario


@router.delete("/scenarios/{name}", status_code=204, tags=["admin"])
async def delete_scenario(name: ScenarioName, loop: AdminLoop) -> Response:
    """Extension: remove a scenario."""
    if not await run_in_threadpool(edit_scenario, loop, name, None):
        raise NotFound(f"Scenario {name} does not exist.")
    return Response(status_code=204)


async def _recommend(request: Request, loop: Loop, name: str, body: RecommendIn) -> dict[str, Any]:
    ask = Ask(
        scenario=name,
        user=body.userId,
        session=body.sessionId,
        item=body.itemId,
        count=body.count,
        context_features=body.contextFeatures,
        categories=body.categories,
        event_id=body.eventId,
        params=body.recommenderParams,
        body_hash=body_hash({"scenario": name, **body.model_dump()}),
    )
    for text in (body.userId, body.sessionId, body.itemId, body.eventId, *(body.categories or ())):
        if text is not None:
            check_text(text, "BadRequest")
    return await _recommendations(request).recommend(loop, ask)


@router.get("/recommendations/{name}", response_model=Recommendation, tags=["client"])
async def recommend_get(
    name: ScenarioName,
    loop: ClientLoop,
    request: Request,
    userId: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    sessionId: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    itemId: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    count: Annotated[int | None, Query(ge=1, le=50)] = None,
    category: Annotated[list[str] | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Extension: K items for a user (or session), an item, or nobody in particular, from
    the scenario's candidates ranked by the loop; logged as a Rank event (`eventId`)."""
    query = {"userId": userId, "sessionId": sessionId, "itemId": itemId, "count": count}
    body = RecommendIn.model_validate({**query, "categories": category})
    return await _recommend(request, loop, name, body)


@router.post("/recommendations/{name}", response_model=Recommendation, tags=["client"])
async def recommend_post(
    name: ScenarioName, body: RecommendIn, loop: ClientLoop, request: Request
) -> dict[str, Any]:
    """Extension: as GET, with context features, an `eventId` and recommenderParams."""
    return await _recommend(request, loop, name, body)
