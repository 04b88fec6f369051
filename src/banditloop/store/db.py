"""What the store's query families share: the connection types, ``IN`` lists, and what
each family needs of the store it is part of (:class:`sql.SqlStore`).

The SQL of every family runs unchanged on SQLite and PostgreSQL: ``?`` placeholders
(the PostgreSQL connection translates them), ``ON CONFLICT`` upserts, ``RETURNING``,
explicit ``IN (?, …)`` lists, ``CASE`` instead of two-argument ``min``.  The one
expression that differs (reading inside the logged JSON) is each engine's own
(``Events.shown_and_reward``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
MAX_IN = 500  # values per IN (...) list: well inside every engine's parameter limit
TOP = 1 << 62  # above every seq: "no upper bound" in a seq range (an integer, for the index)


class Rows(Protocol):
    """What a query returns: sqlite3's cursor, psycopg's, or rows read already."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Reader(Protocol):
    """A connection for reads."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Rows: ...


class Conn(Reader, Protocol):
    """The writer's connection (sqlite3's, or postgres.PgConnection)."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Rows: ...


def marks(n: int) -> str:
    """``?,?,…`` for an IN list of ``n`` values."""
    return ",".join("?" * n)


def chunks(values: Sequence[T], size: int = MAX_IN) -> Iterator[Sequence[T]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class Queries:
    """What a query family needs of its store; :class:`sql.SqlStore` provides it."""

    #: What the jobs of the writer's current transaction found, for the later ones
    #: (writer.Writer empties it at every BEGIN and rollback).
    memo: dict[Any, Any]

    def submit(self, fn: Callable[[Conn], T]) -> Future[T]:
        """Run ``fn(conn)`` in the writer's next transaction (writer.Writer)."""
        raise NotImplementedError

    def reader(self) -> Reader:
        """A connection for reads on the calling thread."""
        raise NotImplementedError

    def snapshot(self) -> AbstractContextManager[Reader]:
        """A connection whose reads all see one state of the store."""
        raise NotImplementedError

    def open_reader(self) -> AbstractContextManager[Reader]:
        """A connection of its own, for a long read (export, evaluation)."""
        raise NotImplementedError

    def _check_lead(self, conn: Conn, loop: str) -> None:
        """In a trainer's write: fail unless this process still leads ``loop``."""
