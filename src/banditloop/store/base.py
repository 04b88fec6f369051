"""What a store keeps: the records its queries take and return.

The store is the only state shared between rank workers and the trainer.
Writes return futures that complete only once the write is durable, so the
API can acknowledge a Rank or Reward only after it is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SlotChoice:
    """What was decided for one slot (a single-slot Rank has one, with ``id`` None).

    Positions ``chosen``, ``shown`` and ``baseline`` index ``actions``, which
    index the decision's ``action_ids`` (the example's ``_multi``), in pmf order.
    ``chosen`` is the model's draw; ``shown`` is what was returned as
    rewardActionId: the same when Online, the baseline in Apprentice mode.
    """

    id: str | None
    actions: list[int]
    pmf: list[float]
    chosen: int
    shown: int
    baseline: int | None = None

    @property
    def probability(self) -> float:
        return self.pmf[self.chosen]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "a": self.actions,
            "p": self.pmf,
            "c": self.chosen,
            "s": self.shown,
            "b": self.baseline,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SlotChoice:
        return cls(d["id"], d["a"], d["p"], d["c"], d["s"], d["b"])


@dataclass(frozen=True)
class Decision:
    """One Rank call as logged: enough to answer a retry, learn, export and evaluate."""

    loop: str
    event_id: str
    ts: float
    close_at: float
    deferred: bool
    request_hash: str
    example: str  # VW JSON object over the actions VW saw (excluded ones left out)
    action_ids: list[str]  # ids of the example's actions, in its order
    slots: list[SlotChoice]
    response: bytes  # the JSON body returned, replayed on an idempotent retry
    model_version: str
    mode: str = "Online"  # learning mode when ranked
    multislot: bool = False  # ranked by a --ccb_explore_adf policy
    seq: int = 0
    source: str | None = None  # re-ranking: "client", "recommender" or "fallback"
    holdout: bool = False  # served the baseline as the holdout group (docs/holdout.md)
    #: The example's ``_multi`` as JSON, where it is shared with other decisions (of an
    #: import, or Ranks of the same actions): stored once (schema m009). None when read.
    catalogue: str | None = None


@dataclass(frozen=True)
class ClosedEvent:
    """A decision whose reward window has closed, joined with what arrived for it."""

    seq: int
    event_id: str
    ts: float
    deferred: bool
    example: str
    slots: list[SlotChoice]
    mode: str = "Online"
    multislot: bool = False
    rewards: list[tuple[float, float, str | None]] = field(default_factory=list)  # ts, value, slot
    activations: list[float] = field(default_factory=list)  # activation times
    holdout: bool = False


@dataclass(frozen=True)
class Outcome:
    """What the trainer made of a closed event, saved with it: per slot, the real
    reward (aggregated, or the default) and the reward it trained on (None: skipped)."""

    seq: int
    rewards: list[float] | None
    trained: list[float] | None
    error: str | None = None  # why the trainer could not learn it (then skipped)


@dataclass(frozen=True)
class LoggedEvent:
    """A decision read back from the log with everything that arrived for it."""

    decision: Decision
    outcome: dict[str, Any] | None  # {"r": real rewards per slot, "t": trained} once learned
    rewards: list[tuple[float, float, str | None]]
    activations: list[float]


@dataclass(frozen=True)
class JobRecord:
    """A background job (an evaluation or a feature importance) and its result."""

    id: str
    created: float
    status: str  # Running, Succeeded, Failed
    request: dict[str, Any]
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A saved model, without its bytes. ``covers`` is the highest trainer mark it
    accounts for: events marked with it or lower are in it (or were discarded by a
    reset or import). ``number`` is given by the store, in order of saving.  ``born``
    is when this model's lineage started (first save, import or reset); ``created`` is
    when this checkpoint was written.
    """

    loop: str
    number: int
    created: float
    policy: str
    events_learned: int
    born: float
    covers: int = 0


@dataclass(frozen=True)
class ModelRecord(ModelInfo):
    """A saved model with its bytes (a VW model file)."""

    blob: bytes = field(kw_only=True)


@dataclass(frozen=True)
class LoopRecord:
    """A loop's persistent settings: Azure service configuration, policy, key hashes."""

    name: str
    config: dict[str, Any]
    policy_name: str
    policy: str
    created: float
    key_hashes: dict[str, list[str]] = field(default_factory=dict)  # role -> sha256 hex


@dataclass(frozen=True)
class LogRange:
    first: float | None
    last: float | None


@dataclass(frozen=True)
class Item:
    """A catalogue item: features as Rank takes them (cleaned), and whether it may be ranked."""

    id: str
    features: list[dict[str, Any]] = field(default_factory=list)
    available: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "features": self.features, "available": self.available}


@dataclass(frozen=True)
class TrackedEvent:
    """One tracked user event as stored; ``user`` and ``session`` are already hashed."""

    type: str
    item: str
    user: str | None
    session: str | None
    ts: float
    value: float | None = None
    event_id: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class TrainerState:
    lag: float  # seconds the oldest closed, unlearned event has waited
    backlog: int  # closed, unlearned events (up to stats.BACKLOG_CAP)


@dataclass(frozen=True)
class RewardCounts:
    """Rewards received: ``total``, of which ``orphan`` (no such event) and ``late``
    (after the event's reward wait); ``bucket`` numbers a time window."""

    bucket: int
    total: int
    orphan: int
    late: int


@dataclass(frozen=True)
class SampledDecision:
    """A recent decision as the dashboard samples it."""

    ts: float
    slots: list[SlotChoice]
    mode: str
    multislot: bool
    outcome: dict[str, Any] | None
    rewarded: bool  # a reward came within the reward wait
    holdout: bool = False  # served the baseline as the holdout group
