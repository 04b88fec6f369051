"""A call repeated every few seconds in a thread of its own, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``fn`` every ``every`` seconds (the first time after ``first``, if given);
    a failure is logged as ``what`` failed and the next call comes as planned."""

    def __init__(
        self, what: str, every: float, fn: Callable[[], object], first: float | None = None
    ) -> None:
        self.what = what
        self.every = every
        self.fn = fn
        self.first = every if first is None else first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=what, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        delay = self.first
        while not self._stop.wait(delay):
            delay = self.every
            try:
                self.fn()
            except Exception:
                log.exception("%s failed", self.what)
