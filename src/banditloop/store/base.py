"""What a store keeps and the interface every store offers.

The store is the only state shared between rank workers and the trainer.
Writes return futures that complete only once the write is durable, so the
API can acknowledge a Rank or Reward only after it is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


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
class ModelRecord:
    """A saved model. ``covers`` is the highest trainer mark it accounts for: events
    marked with it or lower are in it (or were discarded by a reset or import).
    ``number`` is given by the store, in order of saving.  ``born`` is when this
    model's lineage started (first save, import or reset); ``created`` is when this
    checkpoint was written.
    """

    loop: str
    number: int
    created: float
    blob: bytes
    policy: str
    events_learned: int
    born: float
    covers: int = 0


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


class Store(Protocol):
    """The operations the service needs (sql.SqlStore: SQLite and PostgreSQL).

    ``submit`` and ``reader`` hand out connections for SQL written as in sql.py,
    which runs on both."""

    location: str
    dialect: str

    def reader(self) -> Any: ...

    def size_bytes(self) -> int: ...

    def snapshot(self) -> AbstractContextManager[Any]: ...

    def lead(self, loop: str) -> bool: ...

    def older_models(self, loop: str, below: int) -> list[ModelRecord]: ...

    def delete_models(self, loop: str, numbers: list[int]) -> Future[None]: ...

    def iter_events(
        self, loop: str, start: float, end: float, processed_only: bool = True
    ) -> Iterator[LoggedEvent]: ...

    def put_job(self, loop: str, kind: str, job: JobRecord) -> Future[bool]: ...

    def get_jobs(self, loop: str, kind: str, job_id: str | None = None) -> list[JobRecord]: ...

    def delete_job(self, loop: str, kind: str, job_id: str) -> Future[int]: ...

    def submit(self, job: Callable[[Any], Any]) -> Future[Any]: ...

    def append_decision(self, d: Decision) -> Future[Decision | None]: ...

    def get_decision(self, loop: str, event_id: str) -> Decision | None: ...

    def append_rewards(
        self,
        loop: str,
        event_id: str,
        rewards: list[tuple[str | None, float]],
        ts: float,
        early_close: bool,
    ) -> Future[None]: ...

    def append_activation(
        self, loop: str, event_id: str, ts: float, early_close: bool
    ) -> Future[None]: ...

    def closed_events(self, loop: str, now: float, limit: int) -> list[ClosedEvent]: ...

    def mark_learned(self, loop: str, outcomes: list[Outcome], mark: int) -> Future[None]: ...

    def apprentice_events(self, loop: str, since: float) -> list[tuple[float, dict[str, Any]]]: ...

    def save_model(
        self, model: ModelRecord, covers: int | None, keep: int = 3, after: int | None = None
    ) -> Future[ModelRecord | None]: ...

    def latest_model(self, loop: str) -> ModelRecord | None: ...

    def model_number(self, loop: str) -> int: ...

    def forget_unsaved(self, loop: str, covers: int) -> Future[int]: ...

    def get_loop(self, name: str) -> LoopRecord | None: ...

    def list_loops(self) -> list[LoopRecord]: ...

    def put_loop(self, rec: LoopRecord) -> Future[None]: ...

    def delete_loop(self, name: str) -> Future[None]: ...

    def log_range(self, loop: str) -> LogRange: ...

    def delete_logs(
        self,
        loop: str,
        before: float | None = None,
        event_id: str | None = None,
        feature: tuple[list[str], Any] | None = None,
    ) -> Future[int]: ...

    def reschedule(self, loop: str, old_wait: float, new_wait: float) -> Future[None]: ...

    def scrub(self) -> None:
        """After deleting logs: leave no copy of the deleted rows in the store's files."""

    def close(self) -> None: ...


class NotLeader(Exception):
    """A trainer's write from a process that no longer leads the loop (PostgreSQL)."""
