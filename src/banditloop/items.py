"""Extension: a loop's item catalogue, so that clients need not send item features.

Items are ``(id, features, available)``; features follow the Rank rules and are
stored cleaned.  Writes go through the store's writer; reads use the store's
per-thread reader connection.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import BadRequest
from .featurize import check_text, clean_features
from .store.base import Store
from .store.sql import Conn, chunks, marks

MAX_ID = 256
MAX_ITEMS_PER_CALL = 10_000


@dataclass(frozen=True)
class Item:
    id: str
    features: list[dict[str, Any]] = field(default_factory=list)
    available: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "features": self.features, "available": self.available}


def check_item(item_id: str, features: Iterable[Any] | None, available: bool = True) -> Item:
    """An item as stored: id checked, features cleaned (400 BadRequest if invalid)."""
    check_text(item_id, "BadRequest")
    if not item_id or len(item_id) > MAX_ID:
        raise BadRequest(f"Item ids must be 1 to {MAX_ID} characters.")
    return Item(item_id, clean_features(features, "BadRequest"), available)


class Catalogue:
    """The items of one loop."""

    def __init__(self, store: Store, loop: str) -> None:
        self.store = store
        self.loop = loop

    def reader(self) -> Conn:
        return self.store.reader()

    def put(self, items: Sequence[Item]) -> Future[int]:
        """Insert or replace items (the last one wins for a repeated id)."""
        if len(items) > MAX_ITEMS_PER_CALL:
            raise BadRequest(f"At most {MAX_ITEMS_PER_CALL} items per call.")
        now = time.time()
        rows = [
            (self.loop, it.id, orjson.dumps(it.features).decode(), int(it.available), now)
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

        return self.store.submit(job)

    def get(self, item_id: str) -> Item | None:
        return self.get_many([item_id]).get(item_id)

    def get_many(self, ids: Sequence[str]) -> dict[str, Item]:
        if not ids:
            return {}
        found: dict[str, Item] = {}
        for part in chunks(list(ids)):
            for i, f, a in self.reader().execute(
                f"SELECT id, features, available FROM items WHERE loop=? AND id IN "
                f"({marks(len(part))})",
                (self.loop, *part),
            ):
                found[i] = Item(i, orjson.loads(f), bool(a))
        return found

    def first(self, limit: int) -> list[Item]:
        """Available items, most recently updated first: the last-resort fallback."""
        rows = self.reader().execute(
            "SELECT id, features FROM items WHERE loop=? AND available=1 "
            "ORDER BY updated DESC, id LIMIT ?",
            (self.loop, limit),
        )
        return [Item(i, orjson.loads(f)) for i, f in rows]

    def all(self) -> list[Item]:
        """Every item, for the built-in content model (recommendations/models.py)."""
        rows = (
            self.reader()
            .execute(
                "SELECT id, features, available FROM items WHERE loop=? ORDER BY id", (self.loop,)
            )
            .fetchall()
        )
        return [Item(i, orjson.loads(f), bool(a)) for i, f, a in rows]

    def version(self) -> tuple[int, float]:
        """(count, last update): changes whenever an item is added, replaced or removed."""
        row = (
            self.reader()
            .execute(
                "SELECT count(*), coalesce(max(updated), 0) FROM items WHERE loop=?", (self.loop,)
            )
            .fetchone()
        )
        return int(row[0]), float(row[1])

    def count(self) -> int:
        row = self.reader().execute("SELECT count(*) FROM items WHERE loop=?", (self.loop,))
        return int(row.fetchone()[0])

    def delete(self, item_id: str) -> Future[int]:
        def job(conn: Conn) -> int:
            cur = conn.execute("DELETE FROM items WHERE loop=? AND id=?", (self.loop, item_id))
            return int(cur.rowcount)

        return self.store.submit(job)


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _cell(value: str) -> str | float:
    """A CSV cell as a feature value: a number if it reads as a finite one, else text."""
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _flag(value: str, line: int) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(f"line {line}: available must be true or false, not {value!r}.")


def read_items(lines: Iterable[str], fmt: str) -> Iterator[Item]:
    """Items from CSV (column ``id``, optional ``available`` and ``features`` (a JSON
    array); every other non-empty cell is a feature) or JSON lines
    (``{"id", "features", "available"?}`` per line)."""
    if fmt == "csv":
        reader = csv.DictReader(lines)
        if "id" not in (reader.fieldnames or ()):
            raise BadRequest("The CSV file needs an id column.")
        for n, row in enumerate(reader, 2):
            try:
                features = orjson.loads(row.pop("features", None) or "[]")
            except orjson.JSONDecodeError:
                features = None
            if not isinstance(features, list):
                raise BadRequest(f"line {n}: features must be a JSON array of objects.")
            cells = {
                k: _cell(v)
                for k, v in row.items()
                if isinstance(k, str) and isinstance(v, str) and v and k not in ("id", "available")
            }
            if cells:
                features.append(cells)
            available = _flag(row.get("available") or "true", n)
            yield check_item(row["id"] or "", features, available)
        return
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadRequest(f"line {n}: not a JSON object.") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise BadRequest(f'line {n}: expected {{"id": "...", "features": [...]}}.')
        available = obj.get("available", True)
        if not isinstance(available, bool):
            raise BadRequest(f"line {n}: available must be true or false.")
        yield check_item(obj["id"], obj.get("features"), available)
