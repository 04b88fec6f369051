"""The embedded store: one SQLite file in WAL mode (the writer, the schema and the
queries are shared with PostgreSQL).  Reads use one connection per thread; WAL lets
them run beside the writer."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from .base import LoggedEvent, LoopRecord
from .db import Conn
from .events import read_events as read_log
from .loops import read_loop as read_record
from .schema import MIGRATIONS
from .sql import SqlStore

log = logging.getLogger(__name__)
LOCK_WAIT_FIRST = 0.0001  # seconds: the writer's first wait for another process's write lock
LOCK_WAIT_MOST = 0.001  # and its longest (SQLite's own busy handler sleeps up to 0.1 s)


def _applies(statements: list[str]) -> Callable[[sqlite_utils.Database], None]:
    def apply(db: sqlite_utils.Database) -> None:
        for statement in statements:
            db.execute(statement)

    return apply


migrations = sqlite_utils.Migrations("banditloop")  # schema.py's, for sqlite-utils
for _m in MIGRATIONS:
    migrations(name=_m.name)(_applies(_m.sql("sqlite")))
#: The shown item and its reward, read from the logged JSON (Events.shown_and_reward).
SHOWN_AND_REWARD = (
    "json_extract(action_ids, '$[' || json_extract(slots, '$[0].s') || ']') AS item, "
    "json_extract(outcome, '$.r[0]') AS r"
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
    """The log of ``loop`` read from the file (see events.read_events), on a connection
    of its own: the caller may be slow, or another process."""
    conn = _connect(path, "NORMAL")
    try:
        yield from read_log(conn, loop, start, end, processed_only)
    finally:
        conn.close()


def read_loop(path: Path, name: str) -> LoopRecord | None:
    """A loop's record, read without opening the store for writing."""
    conn = _connect(path, "NORMAL")
    try:
        return read_record(conn, name)
    finally:
        conn.close()


class SqliteStore(SqlStore):
    """One SQLite file in WAL mode.  Every process writes through its own writer thread
    (``serve --workers``: SQLite serialises their transactions); reads use one
    connection per thread beside the writer."""

    store_errors = (sqlite3.OperationalError,)
    shown_and_reward = SHOWN_AND_REWARD

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

    def _begin(self, conn: Conn) -> None:
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
