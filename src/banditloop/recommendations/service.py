"""Tracking and recommending, as the API and the CLI call them (``TrackBatch`` is what
both receive).

``track`` stores a batch of user events durably and turns each event that names
the Rank which led to it (``eventId``) into a Reward for that decision, when the
event is about the item the decision chose. ``recommend`` gathers a scenario's
candidates and ranks them with ``Loop.rank`` (the same path as re-ranking), so the
answer is logged, rewarded, exported and evaluated like any other decision.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field

from ..dsjson import parse_timestamp
from ..errors import BadRequest, NotFound, RecommenderFailure
from ..featurize import check_text
from ..ids import check_event_id
from ..loop import Loop, RankInput
from ..recommender import Param, fetch
from ..rerank import Reranker, with_upstream
from ..store.base import TrackedEvent
from ..tracked import actor_hash
from .builder import Models, tracking_of
from .config import EVENT_TYPE, ScenarioConfig, check_scenario_name
from .models import Scored
from .scenario import HISTORY_EVENTS, Gatherer, Visit, taste

log = logging.getLogger(__name__)
MAX_EVENTS = 1000  # tracked events per call
Id = Annotated[str | None, Field(None, min_length=1, max_length=256)]


@dataclass(frozen=True)
class Incoming:
    """A tracked event as received: ids in clear, timestamp optional (now)."""

    type: str
    item: str
    user: str | None
    session: str | None
    ts: float | None
    value: float | None
    event_id: str | None


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

    @classmethod
    def checked(cls, events: list[dict[str, Any]]) -> list[Incoming]:
        """Tracked events as the API's JSON gives them, checked: what ``track`` takes."""
        return [e.incoming() for e in cls.model_validate({"events": events}).events]


@dataclass(frozen=True)
class Ask:
    """A recommendation request."""

    scenario: str
    user: str | None
    session: str | None
    item: str | None
    count: int | None
    context_features: list[Any] | None
    categories: list[str] | None
    event_id: str | None
    params: dict[str, Param] | None
    body_hash: str


def _actor(loop: Loop, user: str | None, session: str | None) -> str | None:
    raw = user if user is not None else session
    return actor_hash(loop.name, raw) if raw is not None else None


async def track(loop: Loop, incoming: list[Incoming]) -> dict[str, int]:
    """Store events durably, then reward the decisions they name (see the module doc)."""
    now = time.time()
    events = [
        TrackedEvent(
            type=e.type,
            item=e.item,
            user=actor_hash(loop.name, e.user) if e.user is not None else None,
            session=actor_hash(loop.name, e.session) if e.session is not None else None,
            ts=min(e.ts, now) if e.ts is not None else now,
            value=e.value,
            event_id=e.event_id,
        )
        for e in incoming
    ]
    await asyncio.wrap_future(loop.tracked.append(events, now))
    rewards = tracking_of(loop).rewards
    rewarded = 0
    for e in events:
        if e.event_id is None or e.type not in rewards:
            continue
        if await asyncio.to_thread(_chose, loop, e.event_id, e.item):
            await loop.reward(e.event_id, rewards[e.type])
            rewarded += 1
    loop.counters["tracked_events"] += len(events)
    loop.counters["tracked_rewards"] += rewarded
    return {"accepted": len(events), "rewards": rewarded}


def _chose(loop: Loop, event_id: str, item: str) -> bool:
    """Whether the single-slot decision ``event_id`` returned ``item`` as the one to
    show and reward (other items shown with it are not what the loop learns about)."""
    d = loop.store.get_decision(loop.name, event_id)
    if d is None or d.multislot:
        return False
    return bool(orjson.loads(d.response).get("rewardActionId") == item)


_scenario_edits = threading.Lock()  # read-modify-write of a loop's scenarios


def edit_scenario(loop: Loop, name: str, scenario: ScenarioConfig | None) -> bool:
    """Create, replace or (None) remove a scenario; True if it existed (blocking)."""
    try:
        check_scenario_name(name)
    except ValueError as ex:
        raise BadRequest(str(ex)) from None
    with _scenario_edits:
        scenarios = dict(loop.wire.scenarios or {})
        existed = scenarios.pop(name, None) is not None
        if scenario is not None:
            scenarios[name] = scenario
        dumped = {k: v.model_dump(mode="json") for k, v in scenarios.items()}
        loop.update_extensions(scenarios=dumped or None)
        return existed


class Recommendations:
    """One per application: the built-in models of every loop, and recommending."""

    def __init__(self, models: Models, reranker: Reranker) -> None:
        self.models = models
        self.reranker = reranker

    async def recommend(self, loop: Loop, ask: Ask) -> dict[str, Any]:
        scenario = (loop.wire.scenarios or {}).get(ask.scenario)
        if scenario is None:
            raise NotFound(f"Scenario {ask.scenario} does not exist.")
        models = await asyncio.to_thread(self.models.get, loop)
        catalogue = loop.items
        actor = _actor(loop, ask.user, ask.session)
        events = loop.tracked
        history = await asyncio.to_thread(events.recent, actor, HISTORY_EVENTS) if actor else []
        known = {"userId": ask.user, "sessionId": ask.session, "itemId": ask.item}
        params = {k: v for k, v in known.items() if v is not None} | (ask.params or {})
        visit = Visit(ask.item, history, ask.categories, params)

        async def recommender(params: dict[str, Param], want: int) -> Scored:
            return await self._ask_recommender(loop, params, want)

        gatherer = Gatherer(scenario, models, catalogue, recommender, loop.settings.max_actions)
        got = await gatherer.gather(visit)
        out: dict[str, Any] = {"scenario": ask.scenario, "eventId": None, "rewardActionId": None}
        out["source"] = "fallback" if got.fallback else "scenario"
        if not got.candidates:
            loop.counters["scenario_empty"] += 1
            return {**out, "items": []}
        context = list(ask.context_features or [])
        if scenario.historyContext and history:
            context.append({"history": await asyncio.to_thread(taste, history, catalogue)})
        loop.counters[f"scenario_{out['source']}"] += 1
        body = await loop.rank(
            RankInput(
                context_features=context,
                actions=with_upstream(got.candidates, catalogue),
                excluded=None,
                event_id=ask.event_id,
                defer_activation=False,
                body_hash=ask.body_hash,
                source="scenario-fallback" if got.fallback else "scenario",
            )
        )
        answer = orjson.loads(body)
        count = min(ask.count or scenario.count, len(answer["ranking"]))
        await asyncio.wrap_future(
            events.record_served(answer["eventId"], ask.scenario, actor, time.time())
        )
        items = [
            {"id": r["id"], "probability": r["probability"], "via": got.via.get(r["id"])}
            for r in answer["ranking"][:count]
        ]
        return {
            **out,
            "eventId": answer["eventId"],
            "rewardActionId": answer["rewardActionId"],
            "items": items,
        }

    async def _ask_recommender(self, loop: Loop, params: dict[str, Param], want: int) -> Scored:
        cfg = loop.wire.recommender
        if cfg is None:
            loop.counters["recommender_missing"] += 1
            return []
        cfg = cfg.model_copy(update={"topK": max(1, min(want, 50))})
        try:
            loop.counters["recommender_calls"] += 1
            answer = await fetch(self.reranker.http, cfg, params)
        except RecommenderFailure as ex:
            loop.counters[f"recommender_{ex.reason}"] += 1
            log.warning("loop %s: scenario recommender %s", loop.name, ex)
            return []
        n = len(answer)
        return [
            (c.id, c.score if c.score is not None else (n - k) / n) for k, c in enumerate(answer)
        ]
