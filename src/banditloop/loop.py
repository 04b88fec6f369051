"""One learning loop: its configuration, policy and trainer, and every call on it.

This is the library API; the HTTP layer and the CLI only translate to and from it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import mmh3
import orjson
from pydantic import ValidationError

from . import dsjson, logimport, vwcheck
from .clock import WALL, Clock
from .config import LoopConfig, ServiceConfiguration, Settings, describe
from .errors import BadRequest, Conflict
from .featurize import FeatureLimits
from .ids import check_event_id
from .items import Catalogue
from .live import LivePolicy
from .logimport import ImportSummary
from .policy import Policy, check_arguments, with_epsilon
from .ranking import SlotInput, plan, plan_multislot, ranking
from .recovery import load_policy
from .sampling import normalized, sample_index, seed_for
from .store import SqlStore
from .store.base import Decision, LoggedEvent, LoopRecord, SlotChoice
from .store.events import catalogue_of
from .tracked import EventLog
from .trainer import Trainer

log = logging.getLogger(__name__)
HOLDOUT_SEED = 7  # not sampling's seed (0), so that holdout and draws are independent
#: Catalogues a loop remembers (the latest met): one met again among them is stored once
#: (schema m009); one of a kind stays in its decision's row.
RECENT_CATALOGUES = 256
APPRENTICE_BATCH = 1000  # events in latestApprenticeModeMetrics.lastBatchMetrics
#: Configuration fields Azure's clients do not know: a PUT without them keeps them.
EXTENSION_FIELDS = ("recommender", "tracking", "scenarios")


#: The slots of a CCB example ranked as a single slot.
ONE_SLOT = ({"_id": "0"},)


@dataclass(frozen=True)
class RankInput:
    """A validated Rank request, as plain data."""

    context_features: list[Any] | None
    actions: list[tuple[str, list[Any] | None]]
    excluded: list[str] | None
    event_id: str | None
    defer_activation: bool
    body_hash: str
    #: Re-ranking (see rerank.py): where the actions came from, "client", "recommender"
    #: or "fallback"; None for a plain Rank. If the model fails, the upstream order wins.
    source: str | None = None


@dataclass(slots=True)  # made for every Rank: not frozen, which costs microseconds
class PendingDecision:
    """A decision made, to be logged: what ``Loop._log`` needs besides the request."""

    event_id: str
    example: str  # the VW JSON object the model saw, over action_ids
    action_ids: list[str]
    slots: list[SlotChoice]
    body: dict[str, Any]  # the answer
    multislot: bool
    holdout: bool


def body_hash(body: Any) -> str:
    """Identity of a Rank body, to tell a retry from a reuse of its event ID."""
    try:
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as ex:  # lone surrogates, integers beyond 64 bits
        raise BadRequest(
            f"The request cannot be represented: {ex}.", "InvalidRankRequest"
        ) from None
    return sha256_holding_gil(data)[:32]


#: hashlib lets other threads run while it hashes this many bytes or more at once
#: (CPython's HASHLIB_GIL_MINSIZE): for a 3 KB body the event loop then waits to take the
#: GIL back from the store writer, two context switches per Rank for 2 µs of hashing.
_GIL_FREE_FROM = 2048


def sha256_holding_gil(data: bytes) -> str:
    """``hashlib.sha256(data).hexdigest()``, fed in pieces too small to release the GIL."""
    h = hashlib.sha256()
    view = memoryview(data)
    for at in range(0, len(view), _GIL_FREE_FROM - 1):
        h.update(view[at : at + _GIL_FREE_FROM - 1])
    return h.hexdigest()


def iso(ts: float | None) -> str | None:
    """A UTC timestamp as Azure wrote them: ``2022-10-25T23:14:43Z``."""
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


class Loop:
    """A named loop; create with :meth:`open`, release with :meth:`close`."""

    def __init__(
        self, store: SqlStore, settings: Settings, record: LoopRecord, clock: Clock = WALL
    ) -> None:
        self.name = record.name
        self.clock = clock
        self.store = store
        self.items = Catalogue(store, self.name)  # the catalogue (items.py)
        self.tracked = EventLog(store, self.name)  # tracked user events (recommendations)
        self.settings = settings
        self.record = record
        self.wire = ServiceConfiguration.model_validate(record.config)
        self.config = LoopConfig.from_wire(self.wire)
        # a corrupt newest model falls back to an older one, or to an empty one (recovery.py)
        policy, latest = load_policy(store, settings, self.name, self.effective_args())
        self.live = LivePolicy(policy)  # the model served; this loop owns it
        self.trainer = Trainer(
            self.name,
            store,
            self.live,
            self.config,
            latest=latest,
            born=record.created,
            batch=settings.trainer_batch or 32,
            poll=settings.trainer_poll_seconds,
            clock=clock,
        )
        self._admin = threading.Lock()  # one administrative change at a time
        self._recent: dict[str, None] = {}  # the last RECENT_CATALOGUES (see _catalogue)
        self.counters: Counter[str] = Counter()  # re-ranking events (rerank.py), since start

    @classmethod
    def open(
        cls,
        store: SqlStore,
        settings: Settings,
        record: LoopRecord,
        train: bool = True,
        clock: Clock = WALL,
    ) -> Loop:
        """Open a loop; with ``train`` this process trains it (or, with PostgreSQL, is a
        candidate), first forgetting the marks of a trainer that died before saving them."""
        loop = cls(store, settings, record, clock)
        if train:
            loop.trainer.start()
        return loop

    def refresh(self) -> None:
        """Catch up with what other processes changed through the store: configuration,
        policy, and newer models (a worker loads each checkpoint the trainer saves)."""
        rec = self.store.get_loop(self.name)
        if rec is None:
            return
        with self.live.lock:
            before = (self.record, self.wire, self.config)
            if rec != self.record:
                self.record = rec
                self._configure(ServiceConfiguration.model_validate(rec.config))
            try:
                if self.store.model_number(self.name) != self.trainer.saved:
                    latest = self.store.latest_model(self.name)
                    if latest is not None:
                        self.live.load(latest.blob, self.effective_args())
                        self.trainer.adopt(latest)
                elif self.effective_args() != self.live.args:  # exploration: keep the model
                    self.live.restart(self.effective_args())
            except BadRequest as ex:  # e.g. a new policy whose model is not saved yet
                log.info("loop %s: not following the store yet: %s", self.name, ex.message)
                self.record = before[0]  # and try again next time
                self._configure(*before[1:])

    def _configure(self, wire: ServiceConfiguration, config: LoopConfig | None = None) -> None:
        """Take a service configuration (and its rules, if checked already)."""
        self.wire = wire
        self.config = self.trainer.config = config or LoopConfig.from_wire(wire)

    @property
    def policy(self) -> Policy:
        """The policy served now (a rank takes it once: see live.py)."""
        return self.live.policy

    @property
    def ready(self) -> bool:
        """Whether the loop has its model loaded."""
        return self.live.ready

    def close(self) -> None:
        self.trainer.stop()
        self.live.close()

    def effective_args(self) -> str:
        """The policy arguments with ``--epsilon`` set from explorationPercentage."""
        return with_epsilon(self.record.policy, self.config.exploration)

    @property
    def model_version(self) -> str:
        return str(self.trainer.saved)

    def info(self) -> dict[str, Any]:
        """What a list of loops shows of this one (GET /loops)."""
        return {
            "name": self.name,
            "path": f"/loops/{self.name}/personalizer",
            "policy": self.record.policy,
            "learningMode": self.config.learning_mode,
            "modelVersion": self.model_version,
        }

    # -- client calls -------------------------------------------------------------

    async def rank(self, req: RankInput) -> bytes:
        """Choose an action, log the decision durably, and return the response body."""
        if req.event_id is not None:
            check_event_id(req.event_id, "InvalidRankRequest")
        policy = self.live.policy  # this one throughout, even if a new one comes meanwhile
        multislot = policy.multislot
        p = plan(
            req.context_features,
            req.actions,
            req.excluded,
            self.settings.max_actions,
            self._limits(),
            ONE_SLOT if multislot else None,  # both kinds of rank share a CCB model
        )
        event_id = req.event_id or uuid.uuid4().hex
        mode = self.config.learning_mode
        n = len(p.vw_ids)
        try:
            if mode == "LoggingOnly" or n == 1:
                pmf = [1.0] + [0.0] * (n - 1)
            elif multislot:
                pmf = [0.0] * n
                for i, prob in policy.slot_pmf(p.example):
                    pmf[i] = prob
                pmf = policy.floor(pmf)
            else:
                pmf = policy.pmf(p.example)
        except Exception:
            if req.source is None:
                raise
            self.counters["model_failure"] += 1
            log.exception("loop %s: the model failed; answering in the upstream order", self.name)
            pmf = [1.0] + [0.0] * (n - 1)
        pmf = normalized(pmf)
        chosen = sample_index(pmf, seed_for(event_id, self.settings.app_id))
        holdout = mode == "Online" and self._holdout(event_id)
        # the baseline (first non-excluded action) unless Online and not held out
        shown = chosen if mode == "Online" and not holdout else 0
        slot = SlotChoice(None, list(range(n)), pmf, chosen, shown, 0)
        body: dict[str, Any] = {
            "ranking": ranking(p, pmf, shown),
            "eventId": event_id,
            "rewardActionId": p.vw_ids[shown],
        }
        if req.source in ("recommender", "fallback"):
            body["source"] = req.source
        if self.wire.isInferenceExplainabilityEnabled and not multislot and n > 1:
            explained = policy.explain(p.example)
            body["inferenceExplanation"] = [
                {"id": a, "features": f} for a, f in zip(p.vw_ids, explained, strict=True)
            ]
        made = PendingDecision(event_id, p.example, p.vw_ids, [slot], body, multislot, holdout)
        return await self._log(req, made)

    def _holdout(self, event_id: str) -> bool:
        """Whether an event is in the holdout: a hash of its ID, independent of sampling's."""
        share = self.wire.holdoutPercentage
        return share > 0 and mmh3.hash(event_id, HOLDOUT_SEED, signed=False) / 2**32 < share

    async def rank_multislot(self, req: RankInput, slots: list[SlotInput]) -> bytes:
        """Fill each slot in order with a distinct action; log the decision durably."""
        policy = self.live.policy  # this one throughout, even if a new one comes meanwhile
        if not policy.multislot:
            raise BadRequest(
                "Multi-slot feature is currently disabled. Replace --cb_explore_adf with "
                "--ccb_explore_adf in the policy to enable it.",
                "InvalidMultiSlotApiAccess",
            )
        if req.event_id is not None:
            check_event_id(req.event_id, "InvalidRankRequest")
        max_actions = self.settings.max_actions
        p = plan_multislot(req.context_features, req.actions, slots, max_actions, self._limits())
        event_id = req.event_id or uuid.uuid4().hex
        mode = self.config.learning_mode
        seed = seed_for(event_id, self.settings.app_id)
        holdout = mode == "Online" and self._holdout(event_id)
        taken: set[int] = set()
        choices: list[SlotChoice] = []
        answer: list[dict[str, Any]] = []
        for k, slot in enumerate(p.slots):
            allowed = [i for i in slot.allowed if i not in taken]
            if mode == "LoggingOnly":
                pmf = [float(i == slot.baseline) for i in allowed]
            elif len(allowed) > 1:
                scores = dict(policy.slot_pmf(p.with_slots([slot.vw_object(allowed)])))
                pmf = policy.floor([scores.get(i, 0.0) for i in allowed])
            else:
                pmf = [1.0] * len(allowed)
            pmf = normalized(pmf)
            baseline = allowed.index(slot.baseline) if slot.baseline in allowed else None
            if not allowed:
                choices.append(SlotChoice(slot.id, [], [], -1, -1, None))
                answer.append({"id": slot.id, "rewardActionId": None})
                continue
            chosen = sample_index(pmf, seed + k)
            online = mode == "Online" and not holdout
            shown = chosen if online or baseline is None else baseline
            taken.add(allowed[shown])  # later slots never reuse what was shown
            choices.append(SlotChoice(slot.id, allowed, pmf, chosen, shown, baseline))
            action = allowed[shown]
            answer.append({"id": slot.id, "rewardActionId": p.action_ids[action]})
        example = p.with_slots([s.vw_object() for s in p.slots])
        body = {"slots": answer, "eventId": event_id}
        made = PendingDecision(event_id, example, p.action_ids, choices, body, True, holdout)
        return await self._log(req, made)

    def _limits(self) -> FeatureLimits:
        """What one request's features may hold (counted while plan cleans them)."""
        s = self.settings
        return FeatureLimits("InvalidRankRequest", s.max_features, s.max_string_length)

    async def _log(self, req: RankInput, made: PendingDecision) -> bytes:
        """Log a decision durably; a retry with the same body gets the first answer."""
        response = orjson.dumps(made.body)
        now = self.clock()
        decision = Decision(
            loop=self.name,
            event_id=made.event_id,
            ts=now,
            close_at=now + self.config.reward_wait,
            deferred=req.defer_activation,
            request_hash=req.body_hash,
            example=made.example,
            catalogue=self._catalogue(made.example),
            action_ids=made.action_ids,
            slots=made.slots,
            response=response,
            model_version=self.model_version,
            mode=self.config.learning_mode,
            multislot=made.multislot,
            source=req.source,
            holdout=made.holdout,
        )
        refuse = self.config.event_id_reuse == "refuse"
        existing = await asyncio.wrap_future(self.store.append_decision(decision, refuse))
        if existing is None:
            return response
        if existing.request_hash != req.body_hash:
            raise Conflict(
                f"EventId {made.event_id} was already used for a different Rank request.",
                "EventIdConflict",
            )
        return existing.response

    def _catalogue(self, example: str) -> str | None:
        """The example's catalogue if it was met lately: to be stored once. A client that
        ranks the same actions again and again stores them once, not in every row; one
        whose actions differ each time stores each in its row, not in a row of its own."""
        text = catalogue_of(example)
        if text is None:
            return None
        met = self._recent.pop(text, False) is None  # and now the latest again
        self._recent[text] = None
        if len(self._recent) > RECENT_CATALOGUES:
            del self._recent[next(iter(self._recent))]
        return text if met else None

    async def reward(self, event_id: str, value: float) -> None:
        await self.reward_slots(event_id, [(None, value)])

    async def reward_slots(self, event_id: str, rewards: list[tuple[str | None, float]]) -> None:
        """Log rewards for an event (slot None for a single-slot Rank)."""
        check_event_id(event_id, "InvalidRewardRequest")
        for slot, value in rewards:
            if slot is not None and not slot:
                raise BadRequest("slotId must not be empty.", "InvalidRewardRequest")
            if not math.isfinite(value) or not -1.0 <= value <= 1.0:
                raise BadRequest(
                    "Reward value must be a number between -1 and 1.", "InvalidRewardRequest"
                )
        fut = self.store.append_rewards(
            self.name, event_id, rewards, self.clock(), self.config.aggregation == "earliest"
        )
        await asyncio.wrap_future(fut)

    async def activate(self, event_id: str) -> None:
        check_event_id(event_id, "InvalidEventIdToActivate")
        fut = self.store.append_activation(
            self.name, event_id, self.clock(), self.config.aggregation == "earliest"
        )
        await asyncio.wrap_future(fut)

    # -- administration (blocking: call from a worker thread) ------------------------

    def service_configuration(self) -> dict[str, Any]:
        out = self.wire.model_dump(mode="json")
        if self.wire.latestApprenticeModeMetrics:
            out["latestApprenticeModeMetrics"] = self.apprentice_metrics()
        return out

    def apprentice_metrics(self) -> dict[str, Any]:
        """Imitation of the baseline since Apprentice mode was last turned on, per slot."""
        start = (self.wire.latestApprenticeModeMetrics or {}).get("startTime")
        since = dt.datetime.fromisoformat(start).timestamp() if start else 0.0
        rows: list[tuple[float, float, bool]] = []  # (time, real reward, imitated)
        for ts, out in self.store.apprentice_events(self.name, since):
            for slot, real in zip(out["slots"], out["r"] or (), strict=False):
                rows.append((ts, real, slot["c"] == slot["b"]))

        def summary(part: list[tuple[float, float, bool]]) -> dict[str, Any]:
            return {
                "numberOfEvents": len(part),
                "sumOfRewards": sum(r for _, r, _ in part),
                "numberOfImitatedEvents": sum(1 for *_, imitated in part if imitated),
                "sumOfImitatedRewards": sum(r for _, r, imitated in part if imitated),
            }

        return {
            "startTime": start,
            "lastProcessedEventTime": iso(rows[-1][0]) if rows else None,
            **summary(rows),
            "lastBatchMetrics": summary(rows[-APPRENTICE_BATCH:]),
        }

    def update_configuration(self, new: ServiceConfiguration) -> dict[str, Any]:
        """Validate and apply a configuration; takes effect at once, model kept."""
        with self._admin:
            config = new.check(self.wire)
            now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            metrics = self.wire.latestApprenticeModeMetrics
            if config.learning_mode == "Apprentice" and self.config.learning_mode != "Apprentice":
                metrics = {"startTime": iso(now.timestamp())}
            # Azure's clients PUT every field they know: an absent extension field is kept.
            kept = {
                f: getattr(self.wire, f) for f in EXTENSION_FIELDS if f not in new.model_fields_set
            }
            new = new.model_copy(
                update={
                    "lastConfigurationEditDate": now,
                    "latestApprenticeModeMetrics": metrics,
                    **kept,
                }
            )
            self._persist(config=new.model_dump(mode="json"))
            old = self.config
            self._configure(new, config)
            if config.reward_wait != old.reward_wait:
                self.store.reschedule(self.name, old.reward_wait, config.reward_wait).result()
            if config.exploration != old.exploration:
                self.live.restart(self.effective_args())
            return self.service_configuration()

    def update_extensions(self, **changes: Any) -> dict[str, Any]:
        """Change extension fields (``scenarios``, ``tracking``, ...) and keep the rest;
        nothing is written when they are already so."""
        try:
            new = ServiceConfiguration.model_validate(
                {**self.wire.model_dump(mode="json"), **changes}
            )
        except ValidationError as ex:
            raise BadRequest(describe(ex), "InvalidServiceConfiguration") from None
        if all(getattr(new, field) == getattr(self.wire, field) for field in changes):
            return self.service_configuration()
        return self.update_configuration(new)

    def policy_contract(self) -> dict[str, str]:
        return {"name": self.record.policy_name, "arguments": self.record.policy}

    def update_policy(self, name: str, arguments: str) -> dict[str, str]:
        """Switch to new policy arguments; a new policy starts a new (empty) model."""
        check_arguments(arguments)
        vwcheck.check(arguments)  # as given; explorationPercentage then sets --epsilon
        effective = with_epsilon(arguments, self.config.exploration)
        with self._admin:
            self._persist(policy_name=name, policy=arguments)
            self._new_model(None, effective)
            return self.policy_contract()

    def export_model(self) -> bytes:
        """The current model file; the same bytes until the model learns again."""
        with self._admin:
            latest = self.store.latest_model(self.name)
            if self.trainer.active and (latest is None or self.trainer.dirty):
                latest = self.trainer.save()
            return latest.blob if latest is not None else self.live.policy.save()

    def import_model(self, blob: bytes) -> None:
        """Replace the model; the file is tried in a child process first."""
        effective = self.effective_args()
        vwcheck.check(effective, blob)
        with self._admin:
            self._new_model(blob, effective)

    def reset_model(self) -> None:
        with self._admin:
            self._new_model(None, self.effective_args())

    def model_properties(self) -> dict[str, Any]:
        latest = self.store.latest_model(self.name)
        born = latest.born if latest else self.record.created
        modified = latest.created if latest else self.record.created
        return {"creationTime": iso(born), "lastModifiedTime": iso(modified)}

    def logs_properties(self) -> dict[str, Any]:
        rng = self.store.log_range(self.name)
        return {"dateRange": {"from": iso(rng.first), "to": iso(rng.last)}}

    def logged(self, start: float, end: float) -> Iterator[LoggedEvent]:
        """The decisions ranked in [start, end) that have been joined, with what arrived
        for them, in rank order."""
        return self.store.iter_events(self.name, start, end)

    def export(self, start: float, end: float) -> Iterator[bytes]:
        """DSJSON lines of the decisions ranked in [start, end) that have been joined."""
        for ev in self.logged(start, end):
            yield dsjson.dumps(dsjson.line(ev))

    def import_lines(
        self,
        lines: Iterable[bytes],
        learn: bool = True,
        progress: Callable[[ImportSummary], None] | None = None,
    ) -> ImportSummary:
        """Log DSJSON decisions (e.g. from Azure) with their rewards; the trainer learns
        them unless ``learn`` is False (they are then kept for evaluation only). Every
        line is checked before any is stored: a bad line stores nothing (logimport.py)."""
        s = self.settings
        return logimport.import_lines(
            self.store, self.name, lines, learn, s.max_features, s.max_string_length, progress
        )

    def set_keys(self, key_hashes: dict[str, list[str]]) -> None:
        """Replace the loop's own keys (hashes by role); effective at once."""
        with self._admin:
            self._persist(key_hashes=key_hashes)

    def _persist(self, **changes: Any) -> None:
        """Write a change to the loop's record; kept in memory only once it is stored."""
        record = replace(self.record, **changes)
        self.store.put_loop(record).result()
        self.record = record

    def _new_model(self, blob: bytes | None, args: str) -> None:
        """Serve a new model (a file, or None: an empty one) between two trainer steps,
        saved at once as the start of a new lineage; ranks in flight finish on the old."""
        with self.live.lock:
            self.live.load(blob, args)
            self.trainer.save(blob=blob, born=self.clock())
