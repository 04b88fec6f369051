"""What is deleted, and when: logs with the tracked data they imply, retention.

Deleting a loop's logs deletes its tracked events too, and forgetting a user (a
context feature value) also deletes the tracked events, history and
recommendation decisions of the user or session with that id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .featurize import context_has
from .loop import Loop
from .recommendations.events import actor_hash


def _id_text(value: Any) -> str | None:
    """A forget request's value as the id text it was tracked with (bools are no ids)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def delete_logs(
    loop: Loop,
    before: float | None = None,
    event_id: str | None = None,
    feature: tuple[list[str], Any] | None = None,
) -> int:
    """Delete logged events (blocking) and the tracked data they imply: all of them or
    those older than ``before`` (with the tracked events), one event, or those whose
    context has a feature value (with the user's or session's tracked data); returns
    how many decisions."""
    store = loop.store
    if event_id is not None:
        return store.delete_logs(loop.name, event_ids=[event_id]).result()
    if feature is None:
        n = store.delete_logs(loop.name, before=before).result()
        return n + loop.tracked.delete(before=before).result()
    path, value = feature
    ids = store.find_events(loop.name, lambda example: context_has(example, path, value))
    n = store.delete_logs(loop.name, event_ids=ids).result()
    raw = _id_text(value)
    if raw is None:
        return n
    actor = actor_hash(loop.name, raw)
    n += store.delete_logs(loop.name, event_ids=loop.tracked.served_to(actor)).result()
    return n + loop.tracked.delete(actor=actor).result()


def apply_retention(loops: Iterable[Loop], now: float) -> int:
    """Delete what is older than each loop's ``logRetentionDays`` (-1: keep all);
    returns how many events."""
    deleted = 0
    for loop in loops:
        days = loop.wire.logRetentionDays
        if days >= 0:
            deleted += delete_logs(loop, before=now - days * 86400)
    return deleted
