"""``serve --workers N``: N rank processes and exactly one trainer process.

The supervisor owns the data directory (its lock), prepares the loops once, and
keeps N worker processes and one trainer process running (each is started again if
it dies). Each worker listens on a socket of its own, bound with ``SO_REUSEPORT``
to the same address, so that the kernel spreads new connections over the workers
(on one shared socket, the first worker to wake took most of them); the supervisor
holds the address bound, without listening on it, so that a port in use fails at
start and no other server can join the workers' group. Where ``SO_REUSEPORT`` is
missing, the workers share the supervisor's socket. The store is the only state
they share: workers log decisions and rewards and load each model the trainer
saves; the trainer joins, learns and saves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from .app import WORKER_SETTINGS_ENV, settle_heap
from .config import Settings
from .errors import Unavailable
from .metrics import prepare_multiprocess
from .service import open_service, own_data_dir

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0  # seconds between the supervisor's checks that its children live
#: How each worker's uvicorn runs, said rather than left to "auto": the C HTTP parser and
#: event loop (uvicorn[standard] installs both; "auto" falls back to pure Python when they
#: are missing), uvicorn's backlog and keep-alive (clients keep their connections).
UVICORN_SPEED: dict[str, Any] = {
    "http": "httptools",
    "loop": "uvloop",
    "backlog": 2048,
    "timeout_keep_alive": 5,
}


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (uvicorn listens on it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def write_port_file(path: Path, port: int) -> None:
    """Tell whoever started us (tests, scripts) which port ``--port 0`` got: written
    whole, then renamed, so that a reader never sees half a number."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def reuse_port_works() -> bool:
    """Whether this system lets several sockets listen on one address."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError:
            return False
    return True


def when_orphaned(then: Callable[[], None]) -> None:
    """Call ``then`` once the supervisor is gone (it may die without stopping its
    children: SIGKILL): no child may outlive the lock on its data directory, and a
    worker left behind would share the port of the next server."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None:
        return

    def watch() -> None:
        supervisor.join()
        log.warning("the supervisor is gone: stopping")
        then()

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def run_worker(log_level: str, shared: socket.socket | None) -> None:
    """A worker process: ``app.worker_app`` on its own socket, or on ``shared``."""
    import uvicorn

    settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS_ENV])
    sock = shared or bind(settings.host, settings.port, reuse_port=True)
    config = uvicorn.Config(
        "banditloop.app:worker_app",
        factory=True,
        log_level=log_level,
        access_log=False,
        **UVICORN_SPEED,
    )
    server = uvicorn.Server(config)
    when_orphaned(lambda: setattr(server, "should_exit", True))
    server.run(sockets=[sock])


def run_trainer(settings_json: str, log_level: str) -> None:
    """The trainer process: every loop's trainer, the retention job, following the store."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s trainer %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.model_validate_json(settings_json)
    if settings.trainer_batch is None:  # no rank requests here to keep waiting: learn in bulk
        settings = settings.model_copy(update={"trainer_batch": 1024})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    when_orphaned(stop.set)
    with open_service(settings, train=True, watch=True, own=False):
        settle_heap()
        stop.wait()


class Child:
    """One child process, started again by :class:`Supervision` if it dies."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self.name = name
        self.target = target
        self.args = args
        self.proc: BaseProcess | None = None

    def spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(target=self.target, args=self.args, name=self.name)
        self.proc.start()
        log.info("%s process %s started", self.name, self.proc.pid)

    def revive(self) -> None:
        if self.proc is not None and not self.proc.is_alive():
            log.error("%s process exited with %s; starting it again", self.name, self.proc.exitcode)
            self.spawn()


class Supervision:
    """Keeps its children running until stopped."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="supervision", daemon=True)

    def start(self) -> None:
        for child in self.children:
            child.spawn()
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(RESTART_DELAY):
            for child in self.children:
                child.revive()

    def stop(self) -> None:
        """SIGTERM to every child at once, then wait for each (SIGKILL after 30 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        procs = [c.proc for c in self.children if c.proc is not None and c.proc.is_alive()]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def hold_address(settings: Settings) -> tuple[socket.socket, bool]:
    """The supervisor's socket on the service's address, and whether the workers
    bind their own (``SO_REUSEPORT``) rather than share it."""
    own = reuse_port_works()
    try:
        return bind(settings.host, settings.port, reuse_port=own), own
    except OSError as ex:
        raise Unavailable(f"Cannot listen on {settings.host}:{settings.port}: {ex}.") from None


def serve_workers(
    settings: Settings, workers: int, log_level: str, port_file: Path | None = None
) -> None:
    """Run the supervisor until SIGTERM or SIGINT (``port_file``: see ``serve --port-file``)."""
    lock = own_data_dir(settings)
    try:
        held, own = hold_address(settings)
        with held:
            # port 0: every worker binds the port the supervisor was given
            settings = settings.model_copy(update={"port": held.getsockname()[1]})
            if port_file is not None:
                write_port_file(port_file, settings.port)
            # create declared loops and apply keys once, before anyone serves
            open_service(settings, train=False, own=False).close()
            prepare_multiprocess()  # the workers share request metrics through its files
            os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
            children = [
                Child(f"banditloop-worker-{n}", run_worker, log_level, None if own else held)
                for n in range(workers)
            ]
            if settings.trainer:
                json = os.environ[WORKER_SETTINGS_ENV]
                children.append(Child("banditloop-trainer", run_trainer, json, log_level))
            _supervise(Supervision(children), settings, workers, own)
    finally:
        if lock is not None:
            lock.release()


def _supervise(supervision: Supervision, settings: Settings, workers: int, own: bool) -> None:
    stop = threading.Event()
    handlers = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        supervision.start()
        log.info(
            "serving on http://%s:%d with %d workers (%s)",
            settings.host,
            settings.port,
            workers,
            "a socket each, SO_REUSEPORT" if own else "one shared socket",
        )
        stop.wait()
    finally:
        supervision.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
