"""Catalogue items of a loop (items.py checks them; here they are only kept)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

import orjson

from .base import Item
from .db import Conn, Queries, chunks, marks


class Items(Queries):
    """The catalogue of every loop."""

    def put_items(self, loop: str, items: Sequence[Item], now: float) -> Future[int]:
        """Insert or replace items (the last one wins for a repeated id)."""
        rows = [
            (loop, it.id, orjson.dumps(it.features).decode(), int(it.available), now)
            for it in items
        ]

        def job(conn: Conn) -> int:
            conn.executemany(
                "INSERT INTO items (loop, id, features, available, updated) VALUES (?,?,?,?,?) "
                "ON CONFLICT (loop, id) DO UPDATE SET features=excluded.features, "
                "available=excluded.available, updated=excluded.updated",
                rows,
            )
            return len(rows)

        return self.submit(job)

    def get_items(self, loop: str, ids: Sequence[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for part in chunks(ids):
            for i, f, a in self.reader().execute(
                f"SELECT id, features, available FROM items WHERE loop=? AND id IN "
                f"({marks(len(part))})",
                (loop, *part),
            ):
                found[i] = Item(i, orjson.loads(f), bool(a))
        return found

    def first_items(self, loop: str, limit: int) -> list[Item]:
        """Available items, most recently updated first."""
        rows = self.reader().execute(
            "SELECT id, features FROM items WHERE loop=? AND available=1 "
            "ORDER BY updated DESC, id LIMIT ?",
            (loop, limit),
        )
        return [Item(i, orjson.loads(f)) for i, f in rows]

    def all_items(self, loop: str) -> list[Item]:
        rows = self.reader().execute(
            "SELECT id, features, available FROM items WHERE loop=? ORDER BY id", (loop,)
        )
        return [Item(i, orjson.loads(f), bool(a)) for i, f, a in rows]

    def items_version(self, loop: str) -> tuple[int, float]:
        """(count, last update): changes whenever an item is added, replaced or removed."""
        row = (
            self.reader()
            .execute("SELECT count(*), coalesce(max(updated), 0) FROM items WHERE loop=?", (loop,))
            .fetchone()
        )
        return int(row[0]), float(row[1])

    def delete_item(self, loop: str, item_id: str) -> Future[int]:
        def job(conn: Conn) -> int:
            cur = conn.execute("DELETE FROM items WHERE loop=? AND id=?", (loop, item_id))
            return int(cur.rowcount)

        return self.submit(job)
