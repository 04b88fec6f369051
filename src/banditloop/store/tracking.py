"""Tracked user events, the loop's tracking generation, and which scenario served whom.

Rows are read back by ``seq`` (never reused), the high-water mark each process's
models keep.  Deleting tracked events bumps the loop's ``generation`` (``BUMP``),
which makes every process rebuild its models.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from .base import TrackedEvent
from .db import Conn, Queries

BUMP = (
    "INSERT INTO tracking_state (loop, generation) VALUES (?, 1) "
    "ON CONFLICT (loop) DO UPDATE SET generation = tracking_state.generation + 1"
)
TRACKED_COLS = "seq, type, item, user_hash, session_hash, ts, value, event_id"


def tracked(row: Sequence[Any]) -> TrackedEvent:
    seq, type_, item, user, session, ts, value, event_id = row
    return TrackedEvent(type_, item, user, session, ts, value, event_id, seq)


class Tracking(Queries):
    """The tracked events of every loop."""

    #: Seconds a tracked event waits before it is read: PostgreSQL numbers rows when
    #: they are inserted, not when their transaction commits, so a row may appear below
    #: a mark already read.
    commit_grace = 0.0

    def append_tracked(
        self, loop: str, events: Sequence[TrackedEvent], received: float
    ) -> Future[int]:
        rows = [
            (loop, e.type, e.item, e.user, e.session, e.ts, e.value, e.event_id, received)
            for e in events
        ]

        def job(conn: Conn) -> int:
            conn.executemany(
                "INSERT INTO tracked_events (loop, type, item, user_hash, session_hash, ts, "
                "value, event_id, received) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return len(rows)

        return self.submit(job)

    def tracked_since(self, loop: str, seq: int, limit: int) -> tuple[int, list[TrackedEvent]]:
        """(generation, events after ``seq`` in seq order), read in one snapshot."""
        settled = time.time() - self.commit_grace if self.commit_grace else 1e18
        with self.snapshot() as conn:
            row = conn.execute(
                "SELECT generation FROM tracking_state WHERE loop=?", (loop,)
            ).fetchone()
            rows = conn.execute(
                f"SELECT {TRACKED_COLS} FROM tracked_events "
                "WHERE loop=? AND seq>? AND received<? ORDER BY seq LIMIT ?",
                (loop, seq, settled, limit),
            ).fetchall()
        return (int(row[0]) if row else 0), [tracked(r) for r in rows]

    def recent_tracked(self, loop: str, actor: str, limit: int) -> list[TrackedEvent]:
        """The newest events of a user (or a session), newest first."""
        rows = []
        for column in ("user_hash", "session_hash"):
            rows += (
                self.reader()
                .execute(
                    f"SELECT {TRACKED_COLS} FROM tracked_events "
                    f"WHERE loop=? AND {column}=? ORDER BY seq DESC LIMIT ?",
                    (loop, actor, limit),
                )
                .fetchall()
            )
        return [tracked(r) for r in sorted(set(map(tuple, rows)), reverse=True)[:limit]]

    def count_tracked(self, loop: str) -> int:
        row = self.reader().execute("SELECT count(*) FROM tracked_events WHERE loop=?", (loop,))
        return int(row.fetchone()[0])

    def record_served(
        self, loop: str, event_id: str, scenario: str, actor: str | None, ts: float
    ) -> Future[None]:
        """Remember which scenario served a Rank event, and for whom (hashed)."""

        def job(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO served (loop, event_id, scenario, actor, ts) VALUES (?,?,?,?,?) "
                "ON CONFLICT (loop, event_id) DO NOTHING",
                (loop, event_id, scenario, actor, ts),
            )

        return self.submit(job)

    def served_to(self, loop: str, actor: str) -> list[str]:
        """Event ids of Rank decisions made for a user: served to them, or named by their
        tracked events."""
        rows = self.reader().execute(
            "SELECT event_id FROM served WHERE loop=? AND actor=? UNION "
            "SELECT event_id FROM tracked_events WHERE loop=? AND event_id IS NOT NULL "
            "AND (user_hash=? OR session_hash=?)",
            (loop, actor, loop, actor, actor),
        )
        return sorted(r[0] for r in rows)

    def delete_tracked(
        self, loop: str, actor: str | None = None, before: float | None = None
    ) -> Future[int]:
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

        def job(conn: Conn) -> int:
            n = conn.execute(f"DELETE FROM tracked_events WHERE loop=?{where}", (loop, *args))
            conn.execute(f"DELETE FROM served WHERE loop=?{served}", (loop, *args[:1]))
            if before is None:  # windows already drop old events; others must be unlearned
                conn.execute(BUMP, (loop,))
            return int(n.rowcount)

        return self.submit(job)
