"""The trainer: join closed events with their rewards, learn, checkpoint. One per loop.

Exactly-once learning across crashes: every event learned is marked in the
store with the number of the *next* checkpoint before that checkpoint (the
model, saved to the store) exists.  If the process dies first, start-up
clears the marks above the last saved checkpoint and those events are learned
again, on top of the model that did not yet contain them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import LoopConfig
from .join import outcome, training_example
from .policy import Policy
from .store.base import ModelRecord, Store

log = logging.getLogger(__name__)


@dataclass
class TrainerStats:
    learned: int = 0  # events learned since start-up
    skipped: int = 0  # not learned: deferred and never activated, or LoggingOnly
    last_checkpoint: float = 0.0


class Trainer:
    """Learns a loop's closed events into its policy, off the request path."""

    def __init__(
        self,
        loop: str,
        store: Store,
        policy: Callable[[], Policy],
        config: Callable[[], LoopConfig],
        checkpoint: int,
        events_learned: int,
        born: float,
        batch: int = 256,
        poll: float = 0.05,
    ) -> None:
        self.loop = loop
        self.store = store
        self._policy = policy
        self._config = config
        self.checkpoint = checkpoint  # number of the last saved model
        self.events_learned = events_learned
        self.born = born  # when the current model's lineage started
        self.batch = batch
        self.poll = poll
        self.stats = TrainerStats(last_checkpoint=time.time())
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lock = threading.RLock()  # one step, checkpoint or model swap at a time

    def recover(self) -> int:
        """Forget marks of a checkpoint that never got saved; returns how many."""
        return self.store.forget_unsaved(self.loop, self.checkpoint).result()

    def step(self, now: float | None = None) -> int:
        """Learn one batch of closed events; returns how many events it handled."""
        with self.lock:
            cfg = self._config()
            events = self.store.closed_events(self.loop, now or time.time(), self.batch)
            if not events:
                return 0
            outcomes = [outcome(ev, cfg) for ev in events]
            lines = [
                training_example(ev, o.trained)
                for ev, o in zip(events, outcomes, strict=True)
                if o.trained is not None
            ]
            self.stats.skipped += len(events) - len(lines)
            if lines:
                self._policy().learn(lines)
            self.store.mark_learned(self.loop, outcomes, self.checkpoint + 1).result()
            self.stats.learned += len(lines)
            self.events_learned += len(lines)
            self._dirty = True
            return len(events)

    @property
    def dirty(self) -> bool:
        """Whether the live model has learned since the last checkpoint."""
        return self._dirty

    def save(self, blob: bytes | None = None, born: float | None = None) -> int:
        """Save the model (or ``blob``, an imported file) as the next checkpoint.

        ``born`` starts a new model lineage (import or reset)."""
        with self.lock:
            policy = self._policy()
            if born is not None:
                self.born = born
            record = ModelRecord(
                loop=self.loop,
                number=self.checkpoint + 1,
                created=time.time(),
                blob=blob if blob is not None else policy.save(),
                policy=policy.args,
                events_learned=self.events_learned,
                born=self.born,
            )
            self.store.save_model(record).result()
            self.checkpoint = record.number
            self.stats.last_checkpoint = record.created
            self._dirty = False
            return record.number

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.step()
                due = time.time() - self.stats.last_checkpoint >= self._config().export_every
                if self._dirty and due:
                    self.save()
            except Exception:  # keep training; the store or VW may recover
                log.exception("trainer step failed for loop %s", self.loop)
                handled = 0
                self._stop.wait(1.0)
            if handled < self.batch:
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
