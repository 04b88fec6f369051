"""What a loop keeps, and what runs on it in the background of a training process.

Deleting a loop's logs deletes its tracked events too, and forgetting a user (a
context feature value) also deletes the tracked events, history and
recommendation decisions of the user or session with that id; the store is then
scrubbed (SQLite overwrites the deleted rows and truncates its WAL).  Retention deletes
what is older than each loop's ``logRetentionDays``; auto-optimization starts a
policy search when one is due (evaluation/service.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .evaluation.jobs import JobRunner
from .evaluation.service import auto_optimize
from .featurize import context_has
from .loop import Loop
from .periodic import Periodic
from .registry import Registry
from .tracked import actor_hash

log = logging.getLogger(__name__)


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
    how many decisions. The store is then scrubbed of the deleted values."""
    try:
        return _delete_logs(loop, before, event_id, feature)
    finally:
        loop.store.scrub()


def _delete_logs(
    loop: Loop,
    before: float | None,
    event_id: str | None,
    feature: tuple[list[str], Any] | None,
) -> int:
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


class Upkeep:
    """In the background of a training process: retention and auto-optimization of the
    loops it trains (one process does each loop's), every ``retention_check_seconds``."""

    def __init__(self, registry: Registry, runner: JobRunner) -> None:
        self.registry = registry
        self.runner = runner
        every = registry.settings.retention_check_seconds
        # the first run soon after start
        self.thread = Periodic(
            "retention and auto-optimization", every, self.run_once, min(60, every)
        )

    def run_once(self, now: float | None = None) -> int:
        """Retention, then auto-optimization where one is due; returns events deleted."""
        now = self.registry.clock() if now is None else now
        loops = [loop for loop in list(self.registry.loops.values()) if loop.trainer.active]
        deleted = apply_retention(loops, now)
        if deleted:
            log.info("retention deleted %d events", deleted)
        for loop in loops:
            if auto_optimize(self.runner, loop, now):
                log.info("loop %s: auto-optimization started", loop.name)
        return deleted
