"""One learning loop: its configuration, policy and trainer, and the Rank/Reward/Activate calls.

This is the library API; the HTTP layer only translates to and from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from .config import LoopConfig, ServiceConfiguration, Settings
from .errors import BadRequest, Conflict
from .policy import DEFAULT_POLICY, Policy, with_epsilon
from .ranking import plan, ranking
from .sampling import sample_index, seed_for
from .store.base import Decision, LoopRecord, Store
from .trainer import Trainer

MAX_EVENT_ID = 256


@dataclass(frozen=True)
class RankInput:
    """A validated Rank request, as plain data."""

    context_features: list[Any] | None
    actions: list[tuple[str, list[Any] | None]]
    excluded: list[str] | None
    event_id: str | None
    defer_activation: bool
    body_hash: str


def check_event_id(event_id: str) -> None:
    if not event_id:
        raise BadRequest("EventId should be non-empty or null.", "InvalidRankRequest")
    if len(event_id) > MAX_EVENT_ID:
        raise BadRequest(f"EventId must be at most {MAX_EVENT_ID} characters.", "BadRequest")


def body_hash(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class Loop:
    """A named loop; create with :meth:`open`, release with :meth:`close`."""

    def __init__(self, name: str, store: Store, settings: Settings, record: LoopRecord) -> None:
        self.name = name
        self.store = store
        self.settings = settings
        self.wire = ServiceConfiguration.model_validate(record.config)
        self.config = LoopConfig.from_wire(self.wire)
        self.policy_args = record.policy
        latest = store.latest_model(name)
        self.policy = Policy(
            with_epsilon(self.policy_args, self.config.exploration),
            latest.blob if latest else None,
        )
        self.trainer = Trainer(
            name,
            store,
            policy=lambda: self.policy,
            config=lambda: self.config,
            checkpoint=latest.number if latest else 0,
            events_learned=latest.events_learned if latest else 0,
            batch=settings.trainer_batch,
            poll=settings.trainer_poll_seconds,
        )
        self.trainer.recover()

    @classmethod
    def open(cls, name: str, store: Store, settings: Settings) -> Loop:
        """Open a loop, creating it with the configured defaults if it is new."""
        record = store.get_loop(name)
        if record is None:
            config = ServiceConfiguration.model_validate(settings.loop).model_dump(mode="json")
            record = LoopRecord(name, config, DEFAULT_POLICY, time.time())
            store.put_loop(record).result()
        loop = cls(name, store, settings, record)
        loop.trainer.start()
        return loop

    def close(self) -> None:
        self.trainer.stop()
        self.policy.close()

    @property
    def model_version(self) -> str:
        return str(self.trainer.checkpoint)

    async def rank(self, req: RankInput) -> bytes:
        """Choose an action, log the decision durably, and return the response body."""
        if req.event_id is not None:
            check_event_id(req.event_id)
        p = plan(req.context_features, req.actions, req.excluded)
        event_id = req.event_id or uuid.uuid4().hex
        if self.config.learning_mode == "LoggingOnly" or len(p.vw_ids) == 1:
            pmf = [1.0] + [0.0] * (len(p.vw_ids) - 1)
        else:
            pmf = self.policy.pmf(p.example)
        chosen = sample_index(pmf, seed_for(event_id, self.settings.app_id))
        response = orjson.dumps(
            {"ranking": ranking(p, pmf, chosen), "eventId": event_id,
             "rewardActionId": p.vw_ids[chosen]}
        )
        now = time.time()
        decision = Decision(
            loop=self.name, event_id=event_id, ts=now, close_at=now + self.config.reward_wait,
            deferred=req.defer_activation, request_hash=req.body_hash, example=p.example,
            action_ids=p.vw_ids, pmf=pmf, chosen=chosen, response=response,
            model_version=self.model_version,
        )
        existing = await asyncio.wrap_future(self.store.append_decision(decision))
        if existing is None:
            return response
        if existing.request_hash != req.body_hash:
            raise Conflict(
                f"EventId {event_id} was already used for a different Rank request.",
                "EventIdConflict",
            )
        return existing.response

    async def reward(self, event_id: str, value: float) -> None:
        check_event_id(event_id)
        if not math.isfinite(value) or not -1.0 <= value <= 1.0:
            raise BadRequest("Reward value must be a number between -1 and 1.",
                             "InvalidRewardRequest")
        fut = self.store.append_reward(
            self.name, event_id, value, time.time(), self.config.aggregation == "earliest"
        )
        await asyncio.wrap_future(fut)

    async def activate(self, event_id: str) -> None:
        check_event_id(event_id)
        fut = self.store.append_activation(
            self.name, event_id, time.time(), self.config.aggregation == "earliest"
        )
        await asyncio.wrap_future(fut)
