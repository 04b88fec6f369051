"""One place opens what a process serves: the data directory, the store, the loops,
and what runs beside them.

The app's lifespan, the offline CLI (``--data-dir``), the trainer process and the
supervisor of ``serve --workers`` all call :func:`open_service`; they differ only
in whether the process trains, follows the store, and owns the data directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from .clock import WALL, Clock
from .config import Settings
from .evaluation.jobs import JobRunner
from .registry import Registry
from .store import SqlStore, is_postgres, open_store
from .store.lock import DataDirLock
from .upkeep import Upkeep


def own_data_dir(settings: Settings) -> DataDirLock | None:
    """Take the data directory's lock (Unavailable if another process holds it); None
    for a PostgreSQL store, which several processes share by design."""
    return None if is_postgres(settings.store) else DataDirLock(settings.data_dir).acquire()


@dataclass
class Service:
    """What :func:`open_service` opened; :meth:`close` releases it in reverse order."""

    settings: Settings
    store: SqlStore
    registry: Registry
    runner: JobRunner  # evaluations and feature importances, in a child process
    upkeep: Upkeep | None  # retention and auto-optimization, where this process trains
    lock: DataDirLock | None  # the data directory's, where this process owns it

    def close(self) -> None:
        if self.upkeep is not None:
            self.upkeep.thread.stop()
        self.runner.close()
        self.registry.close()
        self.store.close()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Service:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, ex: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_service(
    settings: Settings,
    train: bool = True,
    watch: bool = False,
    own: bool = True,
    clock: Clock = WALL,
) -> Service:
    """Open the store and the loops.  ``train``: this process trains the loops (with
    PostgreSQL: is a candidate) and keeps them (retention, auto-optimization);
    ``watch``: it follows what other processes change in the store; ``own``: it takes
    the data directory's lock (``serve --workers``: the supervisor holds it); ``clock``:
    the time the loops go by (clock.py)."""
    lock = own_data_dir(settings) if own else None
    try:
        store = open_store(settings)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    registry = Registry(store, settings, train=train, clock=clock)
    service = Service(settings, store, registry, JobRunner(), None, lock)
    try:
        registry.open()
        if watch:
            registry.watch()
        if train:
            service.upkeep = Upkeep(registry, service.runner)
            service.upkeep.thread.start()
    except BaseException:
        service.close()
        raise
    return service
