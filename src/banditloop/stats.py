"""Read-only statistics of the SQLite store, for /metrics, /readyz and the dashboard.

Every function takes a reader connection (``SqliteStore._reader()`` of the
calling thread) and runs indexed queries only, so that a scrape or a dashboard
refresh stays cheap however large the log grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .store.sql import Conn

REWARD_KINDS = ("joined", "late", "orphan")
BACKLOG_CAP = 1_000_000
CHUNK = 200_000  # rows counted per scrape when catching up with a large log


@dataclass(frozen=True)
class TrainerState:
    lag: float  # seconds the oldest closed, unlearned event has waited
    backlog: int  # closed, unlearned events (up to BACKLOG_CAP)


@dataclass(frozen=True)
class ModelInfo:
    number: int
    created: float
    events_learned: int
    born: float


def ping(conn: Conn) -> None:
    """A trivial query; raises if the store cannot be read."""
    conn.execute("SELECT count(*) FROM (SELECT 1 FROM loops LIMIT 1) AS one").fetchone()


def trainer_state(conn: Conn, loop: str, now: float) -> TrainerState:
    oldest, backlog = conn.execute(
        """SELECT min(close_at), count(*) FROM (SELECT close_at FROM decisions
           WHERE loop=? AND learned_in IS NULL AND close_at<=? LIMIT ?) AS backlog""",
        (loop, now, BACKLOG_CAP),
    ).fetchone()
    return TrainerState(max(0.0, now - oldest) if oldest is not None else 0.0, int(backlog))


def latest_model(conn: Conn, loop: str) -> ModelInfo | None:
    row = conn.execute(
        "SELECT number, created, events_learned, born FROM models WHERE loop=? "
        "ORDER BY number DESC LIMIT 1",
        (loop,),
    ).fetchone()
    return ModelInfo(*row) if row else None


def models(conn: Conn, loop: str) -> list[ModelInfo]:
    """The saved model versions (without their bytes), newest first."""
    rows = conn.execute(
        "SELECT number, created, events_learned, born FROM models WHERE loop=? "
        "ORDER BY number DESC",
        (loop,),
    )
    return [ModelInfo(*r) for r in rows]


def first_seq_since(conn: Conn, table: str, since: float) -> int:
    """The first ``seq`` of an append-only table with ``ts >= since`` (binary search on
    the rowid: rows are appended in time order)."""
    assert table in ("decisions", "rewards")
    lo, hi = conn.execute(
        f"SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM {table}"
    ).fetchone()
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            f"SELECT ts FROM {table} WHERE seq>=? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is not None and row[0] < since:
            lo = mid + 1
        else:
            hi = mid
    return int(lo)


@dataclass
class RunningCounts:
    """Totals of events logged and rewards by kind, kept up to date incrementally.

    Both tables only grow at the end (``seq``), so each update reads only the rows
    added since the last one; the totals are of the whole log, so every worker
    process reports the same values."""

    events: dict[str, int] = field(default_factory=dict)
    rewards: dict[tuple[str, str], int] = field(default_factory=dict)
    decisions_seen: int = 0
    rewards_seen: int = 0

    def update(self, conn: Conn, waits: dict[str, float]) -> None:
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM decisions").fetchone()[0]
        upto = min(top, self.decisions_seen + CHUNK)
        for loop, n in conn.execute(
            "SELECT loop, count(*) FROM decisions WHERE seq>? AND seq<=? GROUP BY loop",
            (self.decisions_seen, upto),
        ):
            self.events[loop] = self.events.get(loop, 0) + n
        self.decisions_seen = upto

        top = conn.execute("SELECT coalesce(max(seq), 0) FROM rewards").fetchone()[0]
        upto = min(top, self.rewards_seen + CHUNK)
        for loop, wait in waits.items():
            total, orphan, late = conn.execute(
                """SELECT count(*), coalesce(sum(CASE WHEN d.seq IS NULL THEN 1 ELSE 0 END), 0),
                          coalesce(sum(CASE WHEN r.ts > d.ts + ? THEN 1 ELSE 0 END), 0)
                   FROM rewards r LEFT JOIN decisions d
                     ON d.loop=r.loop AND d.event_id=r.event_id
                   WHERE r.seq>? AND r.seq<=? AND r.loop=?""",
                (wait, self.rewards_seen, upto, loop),
            ).fetchone()
            for kind, n in (("joined", total - orphan - late), ("late", late), ("orphan", orphan)):
                self.rewards[(loop, kind)] = self.rewards.get((loop, kind), 0) + n
        self.rewards_seen = upto
