"""The shared store for several machines: PostgreSQL, through psycopg 3.

Same schema, queries and behaviour as SQLite; what differs is here: a connection
pool for reads, a writer connection per process that reconnects when PostgreSQL
goes away, the one expression that reads inside the logged JSON, and trainer
election.

Election: a process may train a loop only while its *writer* connection holds
the loop's advisory lock.  The trainer's writes (marks and model saves) run
on that same connection and check the lock first, so a trainer that lost its
connection (and with it the lock, which another process may now hold) can no
longer write anything: no event is learned twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from ..errors import NotLeader
from .base import LoggedEvent
from .db import Conn
from .events import read_events as read_log
from .schema import MIGRATIONS, postgres_done
from .sql import SqlStore

log = logging.getLogger(__name__)
# Advisory lock keys are per schema, so that installs may share a database by schema.
LOCK_KEY = "hashtextextended(current_schema() || ?, 0)"

#: The shown item and its reward, read from the logged JSON (Events.shown_and_reward).
SHOWN_AND_REWARD = (
    "action_ids::json ->> ((slots::json -> 0 ->> 's')::int) AS item, "
    "(outcome::json -> 'r' ->> 0)::float8 AS r"
)


@lru_cache(maxsize=1024)
def _pg(query: str) -> str:
    """sqlite3's ``?`` placeholders as psycopg's ``%s``."""
    return query.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection called like sqlite3's: ``?`` placeholders."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(_pg(query), params)

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        cur.executemany(_pg(query), rows)
        return cur


class _Rows:
    """The rows of one pooled query, read before the connection went back."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class _PooledReader:
    """Each query borrows a connection from the pool for as long as it runs."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def execute(self, query: str, params: Sequence[Any] = ()) -> _Rows:
        with self.pool.connection() as raw:
            cur = raw.execute(_pg(query), params)
            return _Rows(cur.fetchall() if cur.description else [], cur.rowcount)


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def migrate(url: str) -> None:
    """Create or update the schema; safe when several nodes start at once."""
    with connect(url) as conn, conn.transaction():
        PgConnection(conn).execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})", (":migrate",))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS banditloop_migrations "
            "(name TEXT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
        )
        recorded = {r[0] for r in conn.execute("SELECT name FROM banditloop_migrations")}
        done = postgres_done(recorded)
        for name in sorted(done - recorded):  # as schema.py names them now
            conn.execute("INSERT INTO banditloop_migrations VALUES (%s, %s)", (name, time.time()))
        for m in MIGRATIONS:
            if m.name in done:
                continue
            for statement in m.sql("postgresql"):
                conn.execute(statement)
            conn.execute("INSERT INTO banditloop_migrations VALUES (%s, %s)", (m.name, time.time()))
            log.info("postgresql store: applied migration %s", m.name)


def read_events(
    url: str, loop: str, start: float, end: float, processed_only: bool = True
) -> Iterator[LoggedEvent]:
    """The log of ``loop`` on a connection of its own (see events.read_events)."""
    with connect(url) as raw:
        yield from read_log(PgConnection(raw), loop, start, end, processed_only)


class PostgresStore(SqlStore):
    """PostgreSQL store shared by any number of processes on any number of machines."""

    store_errors = (psycopg.OperationalError, psycopg.InterfaceError)
    shown_and_reward = SHOWN_AND_REWARD
    key_share = " FOR KEY SHARE"
    commit_grace = 2.0  # rows are numbered at insert, visible at commit (Tracking)

    def __init__(self, url: str, max_queue: int = 0, pool_size: int = 8) -> None:
        super().__init__(max_queue)
        self.location = url
        migrate(url)
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=True
        )
        self._reader = _PooledReader(self._pool)
        self._conn: PgConnection | None = None
        self._led: set[str] = set()  # loops whose lock the writer's session holds
        self.start()

    def _writer(self) -> PgConnection:
        if self._conn is None:
            self._conn = PgConnection(connect(self.location))
        return self._conn

    def _writer_failed(self) -> None:
        conn, self._conn = self._conn, None
        if self._led:
            log.error("postgresql store: writer connection lost; no longer trains %s", self._led)
        self._led = set()  # the session, and every lock it held, are gone
        if conn is not None:
            conn.raw.close()

    def _close_writer(self) -> None:
        if self._conn is not None:
            self._conn.raw.close()  # releases this process's trainer locks
        self._pool.close()

    def size_bytes(self) -> int:
        row = self._reader.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0])

    def reader(self) -> _PooledReader:
        return self._reader

    @contextmanager
    def snapshot(self) -> Iterator[PgConnection]:
        with self._pool.connection() as raw, raw.transaction():
            yield PgConnection(raw)

    @contextmanager
    def open_reader(self) -> Iterator[PgConnection]:
        with connect(self.location) as raw:
            yield PgConnection(raw)

    # -- trainer election ----------------------------------------------------------------

    def lead(self, loop: str) -> bool:
        """Whether this process trains ``loop``: it holds the loop's lock, or takes it
        now if nobody does."""
        if loop in self._led:
            return True

        def job(conn: Conn) -> bool:
            got = conn.execute(
                f"SELECT pg_try_advisory_lock({LOCK_KEY})", (f":trainer:{loop}",)
            ).fetchall()[0][0]
            if got:
                self._led.add(loop)
            return bool(got)

        try:
            return bool(self.submit(job).result())
        except Exception as ex:  # PostgreSQL unreachable: nobody here trains
            log.warning("postgresql store: cannot try to lead loop %s: %s", loop, ex)
            return False

    def _check_lead(self, conn: Conn, loop: str) -> None:
        if loop not in self._led:
            raise NotLeader(f"this process no longer trains loop {loop}")
