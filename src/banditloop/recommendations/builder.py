"""Every loop's built-in models in this process, kept current by one background thread.

Each process (every worker of ``serve --workers``) builds its own copy from the
tracked event log: at start from ``seq`` 0, then every ``tracking_poll_seconds``
the events after its high-water mark, so an event acknowledged by any process
reaches every process's models within about that time. A new ``generation``
(tracked events were deleted) or a changed ``tracking`` configuration rebuilds the
models from the log; a changed catalogue rebuilds the content model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import BanditloopError
from ..loop import Loop
from ..periodic import Periodic
from ..store.base import TrackedEvent
from ..tracked import PAGE
from .config import TrackingConfig
from .models import Content, CoOccurrence, Popularity, Scored

log = logging.getLogger(__name__)


def tracking_of(loop: Loop) -> TrackingConfig:
    return loop.wire.tracking or TrackingConfig.model_validate({})


class ModelSet:
    """One loop's models; every use holds ``lock`` (the models are plain dicts)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.seq = 0  # the newest tracked event applied
        self.generation = 0
        self.events = 0
        self.popularity = Popularity(config.popularity.windowDays, config.popularity.halfLifeDays)
        self.cooccurrence = CoOccurrence(config.cooccurrence.history)
        self.content = Content([])
        self.catalogue: tuple[int, float] = (0, 0.0)

    def apply(self, events: Sequence[TrackedEvent], now: float) -> None:
        by_user = self.config.cooccurrence.by == "user"
        with self.lock:
            for e in events:
                w = self.config.weight(e.type)
                self.popularity.add(e.type, e.item, e.ts, w, now)
                group = (e.user or e.session) if by_user else (e.session or e.user)
                if group is not None:
                    self.cooccurrence.add(e.type, e.item, group, w)
                self.seq = e.seq
            self.events += len(events)
            self.popularity.expire(now)

    def popular(self, types: Sequence[str] | None, k: int, skip: Sequence[str]) -> Scored:
        with self.lock:
            return self.popularity.top(types, k, skip)

    def related(
        self, seeds: Sequence[str], types: Sequence[str] | None, k: int, skip: Sequence[str]
    ) -> Scored:
        with self.lock:
            return self.cooccurrence.related(seeds, types, k, skip)

    def similar(self, seeds: Sequence[str], k: int, skip: Sequence[str]) -> Scored:
        with self.lock:
            return self.content.similar(seeds, k, skip)

    def status(self) -> dict[str, float | int]:
        with self.lock:
            return {
                "seq": self.seq,
                "generation": self.generation,
                "events": self.events,
                "items": len(self.content.vectors),
            }


def catch_up(models: ModelSet, loop: Loop, pages: int = 1_000_000) -> ModelSet:
    """Apply the tracked events after the models' mark and reload a changed catalogue;
    returns the models to use from now on (new ones when they had to be rebuilt)."""
    config = tracking_of(loop)
    events = loop.tracked
    generation, batch = events.read_since(models.seq, PAGE)
    if generation != models.generation or config != models.config:
        fresh = ModelSet(config)
        fresh.generation = generation
        fresh.catalogue, fresh.content = models.catalogue, models.content
        models = fresh
        generation, batch = events.read_since(0, PAGE)
    for _ in range(pages):
        if not batch:
            break
        models.apply(batch, time.time())
        if len(batch) < PAGE:
            break
        _, batch = events.read_since(models.seq, PAGE)
    catalogue = loop.items
    version = catalogue.version()
    if version != models.catalogue:
        content = Content(catalogue.all())
        with models.lock:
            models.content, models.catalogue = content, version
    return models


class Models:
    """The ModelSet of every loop, refreshed by a background thread."""

    def __init__(self, loops: Callable[[], dict[str, Loop]], poll_seconds: float) -> None:
        self._loops = loops
        self.sets: dict[str, ModelSet] = {}
        self._build = threading.Lock()  # one catch-up at a time per process
        self.thread = Periodic("refreshing the recommendation models", poll_seconds, self._run)

    def get(self, loop: Loop) -> ModelSet:
        """The loop's models; built now if this process has none yet."""
        models = self.sets.get(loop.name)
        if models is None:
            models = self.refresh(loop)
        return models

    def refresh(self, loop: Loop) -> ModelSet:
        with self._build:
            models = catch_up(self.sets.get(loop.name) or ModelSet(tracking_of(loop)), loop)
            self.sets[loop.name] = models
            return models

    def _run(self) -> None:
        loops = self._loops()
        for name in [n for n in self.sets if n not in loops]:
            del self.sets[name]
        for loop in list(loops.values()):
            try:
                self.refresh(loop)
            except BanditloopError as ex:  # e.g. a store without tracking
                log.warning("loop %s: models not refreshed: %s", loop.name, ex.message)
            except Exception:
                log.exception("loop %s: refreshing the recommendation models failed", loop.name)
