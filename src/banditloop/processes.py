"""``serve --workers N``: N rank processes and exactly one trainer process.

The supervisor owns the data directory (its lock), prepares the loops once,
starts the trainer process (and starts it again if it dies), and hands the
listening socket to uvicorn's worker processes, which uvicorn also restarts.
The store is the only state they share: workers log decisions and rewards and
load each model the trainer saves; the trainer joins, learns and saves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess

from .app import WORKER_SETTINGS_ENV, settle_heap
from .config import Settings
from .metrics import prepare_multiprocess
from .registry import Registry
from .store import is_postgres, open_store
from .store.lock import DataDirLock

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0
SUPERVISOR_CHECK = 1.0  # seconds between a trainer's checks that its supervisor lives


def run_trainer(settings_json: str, log_level: str) -> None:
    """The trainer process: every loop's trainer, the retention job, following the store."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s trainer %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.model_validate_json(settings_json)
    if settings.trainer_batch is None:  # no rank requests here to keep waiting: learn in bulk
        settings = settings.model_copy(update={"trainer_batch": 1024})
    supervisor = multiprocessing.parent_process()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    store = open_store(settings)
    registry = Registry(store, settings, train=True)
    try:
        registry.open()
        registry.watch()
        settle_heap()
        while not stop.wait(SUPERVISOR_CHECK):
            # The supervisor may die without stopping us (SIGKILL; uvicorn re-raises SIGTERM
            # with --workers 1): no trainer may outlive the lock on its data directory.
            if supervisor is not None and not supervisor.is_alive():
                log.warning("the supervisor is gone: stopping")
                break
    finally:
        registry.close()
        store.close()


class TrainerProcess:
    """Keeps one trainer process running until stopped."""

    def __init__(self, settings: Settings, log_level: str) -> None:
        self.args = (settings.model_dump_json(), log_level)
        self.proc: BaseProcess | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="trainer-monitor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(target=run_trainer, args=self.args, name="banditloop-trainer")
        self.proc.start()
        log.info("trainer process %s started", self.proc.pid)

    def _keep(self) -> None:
        while not self._stop.wait(RESTART_DELAY):
            if self.proc is not None and not self.proc.is_alive() and not self._stop.is_set():
                log.error("trainer process exited with %s; starting it again", self.proc.exitcode)
                self._spawn()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()


def serve_workers(settings: Settings, workers: int, log_level: str) -> None:
    """Run the supervisor until it is told to stop."""
    import uvicorn

    lock = None if is_postgres(settings.store) else DataDirLock(settings.data_dir).acquire()
    try:
        store = open_store(settings)
        prepared = Registry(store, settings, train=False)
        prepared.open()  # create declared loops and apply keys once, before anyone serves
        prepared.close()
        store.close()
        prepare_multiprocess()  # the workers share request metrics through its files
        os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
        trainer = TrainerProcess(settings, log_level) if settings.trainer else None
        if trainer is not None:
            trainer.start()
        try:
            uvicorn.run(
                "banditloop.app:worker_app",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=workers,
                log_level=log_level,
                access_log=False,
                timeout_worker_healthcheck=60,  # importing VW on a busy machine takes seconds
            )
        finally:
            if trainer is not None:
                trainer.stop()
    finally:
        if lock is not None:
            lock.release()
