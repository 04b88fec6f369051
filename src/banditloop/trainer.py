"""The trainer: join closed events with their rewards, learn, checkpoint. One per loop.

Exactly-once learning across crashes: every event learned is marked in the
store with the trainer's current *mark* before the model that contains it is
saved; each saved model records the highest mark it covers.  If the process
dies first, start-up clears the marks above the newest model's and those
events are learned again, on top of the model that did not yet contain them.

A model saved by someone else (a reset, an import, a new policy, from any
process) covers every mark made so far: the trainer adopts it and goes on.

One trainer per loop: with SQLite the process layout guarantees it; with
PostgreSQL trainers are elected (``store.lead``).  A trainer that takes over
starts from the newest saved model and forgets the marks no model covers, just
as at start-up; one that loses the lead drops what it learned since its last
save (its marks are undone by the next leader, and its writes are refused).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from .clock import WALL, Clock
from .config import LoopConfig
from .join import outcome, training_example
from .live import LivePolicy
from .metrics import EVENTS_FAILED
from .store import SqlStore
from .store.base import ClosedEvent, ModelRecord, Outcome

log = logging.getLogger(__name__)
ELECTION_RETRY = 1.0  # seconds between attempts to take over a loop another process trains


@dataclass
class TrainerStats:
    learned: int = 0  # events learned since start-up
    skipped: int = 0  # not learned: deferred and never activated, or LoggingOnly
    failed: int = 0  # not learned: VW could not take them (marked, never retried)
    last_checkpoint: float = 0.0


class Trainer:
    """Learns a loop's closed events into its live policy, off the request path.

    The loop owns the policy (``live``) and the configuration (``config``, which it
    replaces when it changes); the trainer learns into the one under the other's
    rules, and loads the newest saved model into ``live`` when it takes over."""

    def __init__(
        self,
        loop: str,
        store: SqlStore,
        live: LivePolicy,
        config: LoopConfig,
        latest: ModelRecord | None,
        born: float,
        batch: int = 32,
        poll: float = 0.05,
        clock: Clock = WALL,
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.store = store
        self.live = live
        self.config = config
        self.saved = latest.number if latest else 0  # the newest model this process knows
        self.mark = (latest.covers if latest else 0) + 1  # what this trainer marks events with
        self.events_learned = latest.events_learned if latest else 0
        self.born = latest.born if latest else born  # when the model's lineage started
        self.active = False  # True while this object trains the loop (see step)
        self._stale = False  # learned more than the store keeps, then lost the lead
        self.batch = batch
        self.poll = poll
        self.stats = TrainerStats(last_checkpoint=self.clock())
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = EVENTS_FAILED.labels(loop)  # a 0 series from the start

    def recover(self) -> int:
        """Forget marks no saved model covers; returns how many."""
        return self.store.forget_unsaved(self.loop, self.mark - 1).result()

    def step(self, now: float | None = None) -> int:
        """Learn one batch of closed events; returns how many events it handled."""
        if not self.store.lead(self.loop):
            self._step_down()
            return 0
        with self.live.lock:
            if not self.active:
                self._take_over()
            cfg = self.config
            events = self.store.closed_events(self.loop, now or self.clock(), self.batch)
            if not events:
                return 0
            outcomes = [outcome(ev, cfg) for ev in events]
            learned = self._learn(events, outcomes)
            try:
                marked = self.store.mark_learned(
                    self.loop, outcomes, self.mark, onto=self.saved
                ).result()
            except Exception:  # learned but not marked: start again from the saved model
                self.active, self._stale, self._dirty = False, True, False
                raise
            if not marked:  # another process saved a model: Loop.refresh loads it, and
                # these events are learned again into it
                log.info("loop %s: a model was saved elsewhere; waiting to load it", self.loop)
                self._dirty = False
                return 0
            self.stats.learned += learned
            self.events_learned += learned
            self._dirty = self._dirty or learned > 0  # skipped events leave the model as is
            return len(events)

    def drain(self, now: float | None = None) -> int:
        """Learn everything closed by ``now``: steps until one handles nothing; returns
        how many events were handled."""
        total = 0
        while handled := self.step(now):
            total += handled
        return total

    def _learn(self, events: list[ClosedEvent], outcomes: list[Outcome]) -> int:
        """Learn what is to be learned; an event VW cannot take is marked as failed in
        its outcome (so it is skipped, never retried), counted and logged, and the rest
        of the batch is learned: one bad event cannot stall the loop."""
        todo: list[tuple[int, str]] = []
        for i, (ev, o) in enumerate(zip(events, outcomes, strict=True)):
            if o.trained is None:
                continue
            try:
                todo.append((i, training_example(ev, o.trained)))
            except Exception as ex:  # a stored example that is not what Rank logs
                outcomes[i] = replace(o, trained=None, error=f"not a logged example: {ex!r}")
        errors = self.live.policy.learn_each([line for _, line in todo]) if todo else []
        for (i, _), error in zip(todo, errors, strict=True):
            if error is not None:
                outcomes[i] = replace(outcomes[i], trained=None, error=error)
        failed = [(events[i].event_id, o.error) for i, o in enumerate(outcomes) if o.error]
        for event_id, error in failed:
            log.warning("loop %s: event %r not learnable, skipped: %s", self.loop, event_id, error)
        if failed:
            self.stats.failed += len(failed)
            self._failed.inc(len(failed))
        learned = sum(1 for o in outcomes if o.trained is not None)
        self.stats.skipped += len(events) - learned - len(failed)
        return learned

    def _take_over(self) -> None:
        """Become the loop's trainer, from the newest saved model."""
        latest = self.store.latest_model(self.loop)
        if self._stale or (latest.number if latest else 0) != self.saved:
            self.live.load(latest.blob if latest else None)
            if latest is not None:
                self.adopt(latest)
            else:
                self.saved = self.events_learned = 0
                self._dirty = False
        forgotten = self.recover()
        self.active, self._stale = True, False
        log.info("loop %s: training (model %d; %d marks undone)", self.loop, self.saved, forgotten)

    def _step_down(self) -> None:
        with self.live.lock:
            if self.active:
                log.warning("loop %s: another process trains it now", self.loop)
                self.active, self._stale, self._dirty = False, True, False

    @property
    def dirty(self) -> bool:
        """Whether the live model has learned since the last checkpoint."""
        return self._dirty

    def save(self, blob: bytes | None = None, born: float | None = None) -> ModelRecord | None:
        """Save the model (or ``blob``, an imported file) as the loop's newest.

        ``born`` starts a new model lineage (import or reset).  Saved by the active
        trainer, it covers this trainer's marks; saved by any other process (an
        administrative change), every mark made so far."""
        with self.live.lock:
            policy = self.live.policy
            if born is not None:
                self.born = born
            record = ModelRecord(
                loop=self.loop,
                number=0,
                created=self.clock(),
                blob=blob if blob is not None else policy.save(),
                policy=policy.args,
                events_learned=self.events_learned,
                born=self.born,
            )
            if self.active:  # covers this trainer's marks, unless a newer model appeared
                saved = self.store.save_model(record, self.mark, after=self.saved).result()
            else:
                saved = self.store.save_model(record, None).result()
            if saved is None:
                log.info("loop %s: a model saved elsewhere is newer; adopting it", self.loop)
                return None
            self.adopt(saved)
            self.stats.last_checkpoint = saved.created
            return saved

    def adopt(self, model: ModelRecord) -> None:
        """Take ``model`` as the newest saved one (the caller loads it into the policy)."""
        with self.live.lock:
            self.saved = model.number
            self.mark = max(self.mark, model.covers + 1)
            self.events_learned = model.events_learned
            self.born = model.born
            self._dirty = False

    def save_if_due(self) -> ModelRecord | None:
        """Save the model once it has learned something and modelExportFrequency has
        passed since the last save."""
        due = self.clock() - self.stats.last_checkpoint >= self.config.export_every
        return self.save() if self._dirty and due else None

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.step()
                self.save_if_due()
            except Exception:  # keep training; the store or VW may recover
                log.exception("trainer step failed for loop %s", self.loop)
                handled = 0
                self._stop.wait(1.0)
            if not self.active:
                self._stop.wait(ELECTION_RETRY)
            elif handled < self.batch:
                self._stop.wait(self.poll)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"trainer-{self.loop}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and save what was learned since the last checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._dirty:
            self.save()
