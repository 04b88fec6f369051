"""Loops: each one's persistent settings (service configuration, policy, key hashes)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from .base import LoopRecord
from .db import Conn, Queries, Reader
from .tracking import BUMP

LOOP_COLS = "name, config, policy_name, policy, created, key_hashes"
#: Every table with rows of a loop, deleted with it.
LOOP_TABLES = (
    "decisions",
    "catalogues",
    "rewards",
    "activations",
    "models",
    "jobs",
    "items",
    "tracked_events",
    "served",
)


def loop_record(row: Sequence[Any]) -> LoopRecord:
    return LoopRecord(row[0], orjson.loads(row[1]), row[2], row[3], row[4], orjson.loads(row[5]))


def read_loop(conn: Reader, name: str) -> LoopRecord | None:
    row = conn.execute(f"SELECT {LOOP_COLS} FROM loops WHERE name=?", (name,)).fetchone()
    return loop_record(row) if row else None


class Loops(Queries):
    """The loops a store holds."""

    def get_loop(self, name: str) -> LoopRecord | None:
        return read_loop(self.reader(), name)

    def list_loops(self) -> list[LoopRecord]:
        rows = self.reader().execute(f"SELECT {LOOP_COLS} FROM loops ORDER BY name")
        return [loop_record(r) for r in rows]

    def put_loop(self, rec: LoopRecord) -> Future[None]:
        row = (
            rec.name,
            orjson.dumps(rec.config).decode(),
            rec.policy_name,
            rec.policy,
            rec.created,
            orjson.dumps(rec.key_hashes).decode(),
        )

        def job(conn: Conn) -> None:
            conn.execute(
                f"INSERT INTO loops ({LOOP_COLS}) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (name) DO UPDATE SET config=excluded.config, "
                "policy_name=excluded.policy_name, policy=excluded.policy, "
                "key_hashes=excluded.key_hashes",
                row,
            )

        return self.submit(job)

    def delete_loop(self, name: str) -> Future[None]:
        """Remove a loop and everything logged, tracked or learned for it; the models of
        tracked events rebuild (tracking.BUMP), in every process."""

        def job(conn: Conn) -> None:
            for table in LOOP_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE loop=?", (name,))
            conn.execute(BUMP, (name,))
            conn.execute("DELETE FROM loops WHERE name=?", (name,))

        return self.submit(job)
