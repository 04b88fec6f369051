"""The embedded store: one SQLite file in WAL mode (the writer and the queries are
shared with PostgreSQL, in sql.py).  Reads use one connection per thread; WAL lets
them run beside the writer."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from . import sql
from .base import LoggedEvent, LoopRecord

log = logging.getLogger(__name__)
migrations = sqlite_utils.Migrations("banditloop")
LOCK_WAIT_FIRST = 0.0001  # seconds: the writer's first wait for another process's write lock
LOCK_WAIT_MOST = 0.001  # and its longest (SQLite's own busy handler sleeps up to 0.1 s)


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE loops (
            name TEXT PRIMARY KEY, config TEXT NOT NULL, policy_name TEXT NOT NULL,
            policy TEXT NOT NULL, key_hashes TEXT NOT NULL, created REAL NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE decisions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            loop TEXT NOT NULL, event_id TEXT NOT NULL, ts REAL NOT NULL,
            close_at REAL NOT NULL, deferred INTEGER NOT NULL, request_hash TEXT NOT NULL,
            example TEXT NOT NULL, action_ids TEXT NOT NULL, slots TEXT NOT NULL,
            mode TEXT NOT NULL, multislot INTEGER NOT NULL, response BLOB NOT NULL,
            model_version TEXT NOT NULL, learned_in INTEGER, outcome TEXT,
            UNIQUE (loop, event_id))"""
    )
    db.execute("CREATE INDEX decisions_open ON decisions (loop, close_at) WHERE learned_in IS NULL")
    db.execute("CREATE INDEX decisions_ts ON decisions (loop, ts)")
    db.execute(
        """CREATE TABLE rewards (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, loop TEXT NOT NULL,
            event_id TEXT NOT NULL, slot TEXT, value REAL NOT NULL, ts REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX rewards_event ON rewards (loop, event_id)")
    db.execute(
        """CREATE TABLE activations (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, loop TEXT NOT NULL,
            event_id TEXT NOT NULL, ts REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX activations_event ON activations (loop, event_id)")
    db.execute(
        """CREATE TABLE models (
            loop TEXT NOT NULL, number INTEGER NOT NULL, created REAL NOT NULL,
            blob BLOB NOT NULL, policy TEXT NOT NULL, events_learned INTEGER NOT NULL,
            born REAL NOT NULL, covers INTEGER NOT NULL, PRIMARY KEY (loop, number))"""
    )


@migrations()
def m002_jobs(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE jobs (
            loop TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL,
            status TEXT NOT NULL, request TEXT NOT NULL, result TEXT,
            PRIMARY KEY (loop, kind, id))"""
    )


@migrations()
def m003_items_and_sources(db: sqlite_utils.Database) -> None:
    # Where a decision's candidates came from (re-ranking): client, recommender or
    # fallback; NULL for a plain Rank.
    db.execute("ALTER TABLE decisions ADD COLUMN source TEXT")
    db.execute(
        """CREATE TABLE items (
            loop TEXT NOT NULL, id TEXT NOT NULL, features TEXT NOT NULL,
            available INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (loop, id))"""
    )


@migrations()
def m004_holdout(db: sqlite_utils.Database) -> None:
    # 1 for a decision served the baseline as the holdout group (docs/holdout.md).
    db.execute("ALTER TABLE decisions ADD COLUMN holdout INTEGER NOT NULL DEFAULT 0")


@migrations()
def m005_tracking(db: sqlite_utils.Database) -> None:
    # Tracked user events (docs/recommendations.md). seq is the models' high-water mark,
    # so it must never be reused (AUTOINCREMENT); user and session ids are hashed.
    db.execute(
        """CREATE TABLE tracked_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, loop TEXT NOT NULL, type TEXT NOT NULL,
            item TEXT NOT NULL, user_hash TEXT, session_hash TEXT, ts REAL NOT NULL,
            value REAL, event_id TEXT, received REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX tracked_events_seq ON tracked_events (loop, seq)")
    db.execute("CREATE INDEX tracked_events_user ON tracked_events (loop, user_hash, seq)")
    db.execute("CREATE INDEX tracked_events_session ON tracked_events (loop, session_hash, seq)")
    db.execute("CREATE INDEX tracked_events_ts ON tracked_events (loop, ts)")
    # Bumped when tracked events are deleted (forget, DELETE /logs): models rebuild.
    db.execute("CREATE TABLE tracking_state (loop TEXT PRIMARY KEY, generation INTEGER NOT NULL)")
    # Which scenario served which Rank event, for whom (hashed): forgetting a user
    # deletes their recommendation decisions too.
    db.execute(
        """CREATE TABLE served (
            loop TEXT NOT NULL, event_id TEXT NOT NULL, scenario TEXT NOT NULL, actor TEXT,
            ts REAL NOT NULL, PRIMARY KEY (loop, event_id))"""
    )
    db.execute("CREATE INDEX served_actor ON served (loop, actor)")
    db.execute("CREATE INDEX served_ts ON served (loop, ts)")


@migrations()
def m006_learned_index(db: sqlite_utils.Database) -> None:
    # max(learned_in) for a model saved from outside the trainer (reset, import) read the
    # whole log without it: seconds on a large log, holding the write lock.
    db.execute(
        "CREATE INDEX decisions_learned ON decisions (loop, learned_in) "
        "WHERE learned_in IS NOT NULL"
    )


def _connect(path: Path, synchronous: str, busy_timeout: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten (forget)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return conn


def read_events(
    path: Path, loop: str, start: float, end: float, processed_only: bool = True
) -> Iterator[LoggedEvent]:
    """The log of ``loop`` read from the file (see sql.read_events), on a connection of
    its own: the caller may be slow, or another process."""
    conn = _connect(path, "NORMAL")
    try:
        yield from sql.read_events(conn, loop, start, end, processed_only)
    finally:
        conn.close()


def read_loop(path: Path, name: str) -> LoopRecord | None:
    """A loop's record, read without opening the store for writing."""
    conn = _connect(path, "NORMAL")
    try:
        row = conn.execute(f"SELECT {sql.LOOP_COLS} FROM loops WHERE name=?", (name,)).fetchone()
    finally:
        conn.close()
    return sql.loop_record(row) if row else None


class SqliteStore(sql.SqlStore):
    """One SQLite file in WAL mode.  Every process writes through its own writer thread
    (``serve --workers``: SQLite serialises their transactions); reads use one
    connection per thread beside the writer."""

    store_errors = (sqlite3.OperationalError,)

    def __init__(
        self,
        data_dir: Path,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        max_queue: int = 0,
    ) -> None:
        super().__init__(max_queue)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "banditloop.db"
        self.location = str(self.path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._writer_conn = _connect(self.path, synchronous, busy_timeout)
        migrations.apply(sqlite_utils.Database(self._writer_conn))
        self._writer_conn.execute("PRAGMA busy_timeout=0")  # _begin waits for the lock
        self._local = threading.local()
        self.start()

    def size_bytes(self) -> int:
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def _writer(self) -> sqlite3.Connection:
        return self._writer_conn

    def scrub(self) -> None:
        """Copy the WAL into the database, whose deleted cells secure_delete zeroed, and
        truncate it: the WAL's older pages held the deleted rows."""
        conn = _connect(self.path, self._synchronous, self._busy_timeout)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        if busy:
            log.warning(
                "the WAL could not be truncated: a reader held it for %s s", self._busy_timeout
            )

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting for another process's write lock in steps of 0.1 to
        1 ms, up to the busy timeout. SQLite's busy handler sleeps 1 to 100 ms at a time:
        with several processes writing (``serve --workers``), those sleeps made the p99."""
        pause, deadline = LOCK_WAIT_FIRST, 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as ex:
                if ex.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout
                if now >= deadline:
                    raise
            time.sleep(min(pause, deadline - now))
            pause = min(2 * pause, LOCK_WAIT_MOST)

    def _writer_failed(self) -> None:
        if self._writer_conn.in_transaction:
            self._writer_conn.execute("ROLLBACK")

    def _close_writer(self) -> None:
        self._writer_conn.close()

    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self._synchronous, self._busy_timeout)
            self._local.conn = conn
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def open_reader(self) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.path, "NORMAL")
        try:
            yield conn
        finally:
            conn.close()
