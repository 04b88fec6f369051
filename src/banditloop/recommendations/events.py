"""The tracked event log of a loop: what users did, with user and session ids hashed.

Rows are appended through the store's writer and read back by ``seq`` (never
reused), the high-water mark each process's models keep.  Deleting tracked
events bumps the loop's ``generation``, which makes every process rebuild its
models, so a forgotten user leaves nothing behind in memory either.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..store.base import Store
from ..store.sql import Conn

PAGE = 5000
#: PostgreSQL numbers rows when they are inserted, not when their transaction commits,
#: so a row may appear below a mark already read; rows younger than this are read later.
COMMIT_GRACE = 2.0
_BUMP = (
    "INSERT INTO tracking_state (loop, generation) VALUES (?, 1) "
    "ON CONFLICT (loop) DO UPDATE SET generation = tracking_state.generation + 1"
)


def actor_hash(loop: str, raw: str) -> str:
    """A user or session id as stored: not reversible, the same for the same id."""
    return hashlib.sha256(f"{loop}\x00{raw}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TrackedEvent:
    """One event as stored; ``user`` and ``session`` are already hashed."""

    type: str
    item: str
    user: str | None
    session: str | None
    ts: float
    value: float | None = None
    event_id: str | None = None
    seq: int = 0


class EventLog:
    """The tracked events of one loop."""

    def __init__(self, store: Store, loop: str) -> None:
        self.store = store
        self.loop = loop

    def _reader(self) -> Conn:
        return self.store.reader()

    def append(self, events: Sequence[TrackedEvent], received: float) -> Future[int]:
        rows = [
            (self.loop, e.type, e.item, e.user, e.session, e.ts, e.value, e.event_id, received)
            for e in events
        ]

        def job(conn: Any) -> int:
            conn.executemany(
                "INSERT INTO tracked_events (loop, type, item, user_hash, session_hash, ts, "
                "value, event_id, received) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return len(rows)

        return self.store.submit(job)

    def read_since(self, seq: int, limit: int = PAGE) -> tuple[int, list[TrackedEvent]]:
        """(generation, events after ``seq`` in seq order), read in one snapshot."""
        settled = time.time() - COMMIT_GRACE if self.store.dialect == "postgresql" else 1e18
        with self.store.snapshot() as conn:
            row = conn.execute(
                "SELECT generation FROM tracking_state WHERE loop=?", (self.loop,)
            ).fetchone()
            rows = conn.execute(
                "SELECT seq, type, item, user_hash, session_hash, ts, value, event_id "
                "FROM tracked_events WHERE loop=? AND seq>? AND received<? ORDER BY seq LIMIT ?",
                (self.loop, seq, settled, limit),
            ).fetchall()
        events = [TrackedEvent(t, i, u, s, ts, v, e, q) for q, t, i, u, s, ts, v, e in rows]
        return (int(row[0]) if row else 0), events

    def recent(self, actor: str, limit: int) -> list[TrackedEvent]:
        """The newest events of a user (or a session), newest first."""
        rows = []
        for column in ("user_hash", "session_hash"):
            rows += (
                self._reader()
                .execute(
                    "SELECT seq, type, item, user_hash, session_hash, ts, value, event_id "
                    f"FROM tracked_events WHERE loop=? AND {column}=? ORDER BY seq DESC LIMIT ?",
                    (self.loop, actor, limit),
                )
                .fetchall()
            )
        rows = sorted(set(rows), reverse=True)[:limit]
        return [TrackedEvent(t, i, u, s, ts, v, e, q) for q, t, i, u, s, ts, v, e in rows]

    def count(self) -> int:
        row = (
            self._reader()
            .execute("SELECT count(*) FROM tracked_events WHERE loop=?", (self.loop,))
            .fetchone()
        )
        return int(row[0])

    def record_served(
        self, event_id: str, scenario: str, actor: str | None, ts: float
    ) -> Future[None]:
        """Remember which scenario served a Rank event, and for whom (hashed)."""

        def job(conn: Any) -> None:
            conn.execute(
                "INSERT INTO served (loop, event_id, scenario, actor, ts) VALUES (?,?,?,?,?) "
                "ON CONFLICT (loop, event_id) DO NOTHING",
                (self.loop, event_id, scenario, actor, ts),
            )

        return self.store.submit(job)

    def served_to(self, actor: str) -> list[str]:
        """Event ids of Rank decisions made for a user: served to them, or named by their
        tracked events."""
        rows = (
            self._reader()
            .execute(
                "SELECT event_id FROM served WHERE loop=? AND actor=? UNION "
                "SELECT event_id FROM tracked_events WHERE loop=? AND event_id IS NOT NULL "
                "AND (user_hash=? OR session_hash=?)",
                (self.loop, actor, self.loop, actor, actor),
            )
            .fetchall()
        )
        return sorted(r[0] for r in rows)

    def delete(self, actor: str | None = None, before: float | None = None) -> Future[int]:
        """Delete tracked events (and served rows): a user's or session's, those older
        than ``before``, or all. Removing a user's or all events makes models rebuild."""
        where, served = "", ""
        args: tuple[Any, ...] = ()
        if actor is not None:
            where, args = " AND (user_hash=? OR session_hash=?)", (actor, actor)
            served = " AND actor=?"
        elif before is not None:
            where = served = " AND ts<?"
            args = (before,)

        def job(conn: Any) -> int:
            n = conn.execute(
                f"DELETE FROM tracked_events WHERE loop=?{where}", (self.loop, *args)
            ).rowcount
            conn.execute(f"DELETE FROM served WHERE loop=?{served}", (self.loop, *args[:1]))
            if before is None:  # windows already drop old events; others must be unlearned
                conn.execute(_BUMP, (self.loop,))
            return int(n)

        return self.store.submit(job)


def _id_text(value: Any) -> str | None:
    """A forget request's value as the id text it was tracked with (bools are no ids)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def delete_logs(
    store: Store,
    loop: str,
    before: float | None = None,
    event_id: str | None = None,
    feature: tuple[list[str], Any] | None = None,
) -> int:
    """``store.delete_logs`` and the tracked data it implies (blocking): deleting all
    logs or old ones deletes tracked events too; forgetting a user (a context feature
    value) also deletes the tracked events, history and recommendation decisions of the
    user or session with that id. The store is then scrubbed of the deleted values."""
    try:
        return _delete_logs(store, loop, before, event_id, feature)
    finally:
        store.scrub()


def _delete_logs(
    store: Store,
    loop: str,
    before: float | None,
    event_id: str | None,
    feature: tuple[list[str], Any] | None,
) -> int:
    n = int(store.delete_logs(loop, before=before, event_id=event_id, feature=feature).result())
    if event_id is not None:
        return n
    events = EventLog(store, loop)
    if feature is None:
        return n + int(events.delete(before=before).result())
    raw = _id_text(feature[1])
    if raw is None:
        return n
    actor = actor_hash(loop, raw)
    for eid in events.served_to(actor):
        n += int(store.delete_logs(loop, event_id=eid).result())
    return n + int(events.delete(actor=actor).result())
