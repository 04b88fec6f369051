"""Extension: the tracked events of a loop, what users did, with user and session ids
hashed (docs/recommendations.md).

Events are kept by the store (store/tracking.py) and read back in ``seq`` order by
every process's recommendation models (recommendations/); deleting them makes every
process rebuild its models, so a forgotten user leaves nothing behind in memory either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Future

from .store import SqlStore
from .store.base import TrackedEvent

PAGE = 5000


def actor_hash(loop: str, raw: str) -> str:
    """A user or session id as stored: not reversible, the same for the same id."""
    return hashlib.sha256(f"{loop}\x00{raw}".encode()).hexdigest()[:32]


class EventLog:
    """The tracked events of one loop."""

    def __init__(self, store: SqlStore, loop: str) -> None:
        self.store = store
        self.loop = loop

    def append(self, events: Sequence[TrackedEvent], received: float) -> Future[int]:
        return self.store.append_tracked(self.loop, events, received)

    def read_since(self, seq: int, limit: int = PAGE) -> tuple[int, list[TrackedEvent]]:
        """(generation, events after ``seq`` in seq order), read in one snapshot."""
        return self.store.tracked_since(self.loop, seq, limit)

    def recent(self, actor: str, limit: int) -> list[TrackedEvent]:
        """The newest events of a user (or a session), newest first."""
        return self.store.recent_tracked(self.loop, actor, limit)

    def count(self) -> int:
        return self.store.count_tracked(self.loop)

    def record_served(
        self, event_id: str, scenario: str, actor: str | None, ts: float
    ) -> Future[None]:
        """Remember which scenario served a Rank event, and for whom (hashed)."""
        return self.store.record_served(self.loop, event_id, scenario, actor, ts)

    def served_to(self, actor: str) -> list[str]:
        """Event ids of Rank decisions made for a user (or session)."""
        return self.store.served_to(self.loop, actor)

    def delete(self, actor: str | None = None, before: float | None = None) -> Future[int]:
        """Delete tracked events: a user's or session's, those older than ``before``, or
        all. Removing a user's or all events makes models rebuild."""
        return self.store.delete_tracked(self.loop, actor, before)
