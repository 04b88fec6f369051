"""Stores: the only state shared by rank workers and trainers (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ClosedEvent, Decision, LoggedEvent, LoopRecord, ModelRecord
from .sql import SqlStore
from .sqlite import SqliteStore

if TYPE_CHECKING:
    from ..config import Settings


def is_postgres(location: str | None) -> bool:
    return bool(location) and str(location).startswith(("postgresql://", "postgres://"))


def open_store(settings: Settings) -> SqlStore:
    """The store the settings name: ``store`` (a PostgreSQL URL) or the data directory."""
    if is_postgres(settings.store):
        from .postgres import PostgresStore  # psycopg only when it is used

        assert settings.store is not None
        return PostgresStore(settings.store, settings.max_write_queue, settings.store_pool_size)
    return SqliteStore(
        settings.data_dir,
        settings.sqlite_synchronous,
        settings.sqlite_busy_timeout_seconds,
        settings.max_write_queue,
    )


def read_events(
    location: str, loop: str, start: float, end: float, processed_only: bool = True
) -> Iterator[LoggedEvent]:
    """A loop's log read from a store's ``location`` (for jobs in another process)."""
    if is_postgres(location):
        from . import postgres

        return postgres.read_events(location, loop, start, end, processed_only)
    from . import sqlite

    return sqlite.read_events(Path(location), loop, start, end, processed_only)


__all__ = [
    "ClosedEvent",
    "Decision",
    "LoopRecord",
    "ModelRecord",
    "SqlStore",
    "SqliteStore",
    "is_postgres",
    "open_store",
    "read_events",
]
