"""Extension: a loop's item catalogue, so that clients need not send item features.

Items are ``(id, features, available)``; features follow the Rank rules and are
stored cleaned (store/items.py keeps them).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from .errors import BadRequest
from .featurize import check_text, clean_features
from .store import SqlStore
from .store.base import Item

MAX_ID = 256
MAX_ITEMS_PER_CALL = 10_000


def check_item(item_id: str, features: Iterable[Any] | None, available: bool = True) -> Item:
    """An item as stored: id checked, features cleaned (400 BadRequest if invalid)."""
    check_text(item_id, "BadRequest")
    if not item_id or len(item_id) > MAX_ID:
        raise BadRequest(f"Item ids must be 1 to {MAX_ID} characters.")
    return Item(item_id, clean_features(features, "BadRequest"), available)


class Catalogue:
    """The items of one loop."""

    def __init__(self, store: SqlStore, loop: str) -> None:
        self.store = store
        self.loop = loop

    def put(self, items: Sequence[Item]) -> Future[int]:
        """Insert or replace items (the last one wins for a repeated id)."""
        if len(items) > MAX_ITEMS_PER_CALL:
            raise BadRequest(f"At most {MAX_ITEMS_PER_CALL} items per call.")
        return self.store.put_items(self.loop, items, time.time())

    def get(self, item_id: str) -> Item | None:
        return self.get_many([item_id]).get(item_id)

    def get_many(self, ids: Sequence[str]) -> dict[str, Item]:
        return self.store.get_items(self.loop, list(ids)) if ids else {}

    def first(self, limit: int) -> list[Item]:
        """Available items, most recently updated first: the last-resort fallback."""
        return self.store.first_items(self.loop, limit)

    def all(self) -> list[Item]:
        """Every item, for the built-in content model (recommendations/models.py)."""
        return self.store.all_items(self.loop)

    def version(self) -> tuple[int, float]:
        """(count, last update): changes whenever an item is added, replaced or removed."""
        return self.store.items_version(self.loop)

    def count(self) -> int:
        return self.version()[0]

    def delete(self, item_id: str) -> Future[int]:
        return self.store.delete_item(self.loop, item_id)


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
