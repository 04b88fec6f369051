"""The store's one writer: a thread that drains its queue and commits in batches.

Every write of a process goes through it.  Woken by a write, it takes the write lock
(BEGIN), then everything queued by then (up to ``MAX_BATCH``: what arrived while another
process held the lock too) and commits it in one transaction, so a thousand Ranks a
second cost a few commits, not a thousand.  A job's future completes only after that COMMIT,
so an acknowledged event is durable.  If a job fails on its own, the batch runs
again with a savepoint per job, so that only that job fails; if the store itself
fails (disk full, locked, gone), every job of the batch is refused with a 503 that
says to retry.  An engine (sqlite.py, postgres.py) opens the connection and says
which of its errors mean that the store failed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import Unavailable, overloaded
from .db import Conn, T

log = logging.getLogger(__name__)
MAX_BATCH = 1024
_STOP = object()


class _JobFailed(Exception):
    """A job of a batch failed on its own: run the batch again, isolating each job."""


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[Conn], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


class Writer:
    """The writer thread and its queue; the engine provides the connection."""

    store_errors: tuple[type[Exception], ...] = ()  # the store failed, not one job

    def __init__(self, max_queue: int = 0) -> None:
        self._max_queue = max_queue  # writes waiting before submit sheds load (0: no limit)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.memo: dict[Any, Any] = {}  # what this transaction's jobs found (Queries.memo)
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)

    # -- what an engine provides -------------------------------------------------------

    def _writer(self) -> Conn:
        """The writer thread's connection (opened again if it broke)."""
        raise NotImplementedError

    def _writer_failed(self) -> None:
        """The last batch hit a store error: drop the writer connection if it broke."""

    def _begin(self, conn: Conn) -> None:
        """Open the writer's transaction."""
        conn.execute("BEGIN")

    def _close_writer(self) -> None:
        """Close the writer's connection (called by the writer thread as it ends)."""

    # -- the writer ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, fn: Callable[[Conn], T]) -> Future[T]:
        """Run ``fn(conn)`` in the writer's next transaction; the future ends after COMMIT."""
        job = _Job(fn)
        if self._closed:
            job.future.set_exception(Unavailable("The store is closed."))
        elif self._max_queue and self._queue.qsize() >= self._max_queue:
            job.future.set_exception(overloaded("The store's write queue is full"))
        else:
            self._queue.put(job)
        return job.future

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            stop = self._run_batch([first])
        self._close_writer()

    def _take_queued(self, jobs: list[_Job]) -> bool:
        """Add the jobs queued by now to ``jobs`` (up to MAX_BATCH); whether to stop after."""
        while len(jobs) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is _STOP:
                return True
            jobs.append(nxt)
        return False

    def _run_batch(self, jobs: list[_Job]) -> bool:
        """Commit ``jobs`` and all queued once the write lock is held (group commit: the
        writes that arrive while another process holds the lock share this COMMIT);
        whether the writer is to stop after it."""
        stop = False
        try:
            conn = self._writer()
            self._begin(conn)
            stop = self._take_queued(jobs)
            try:
                results = self._transaction(conn, jobs, isolate=False)
            except _JobFailed:
                self._begin(conn)
                results = self._transaction(conn, jobs, isolate=True)
        except self.store_errors as ex:
            if not stop:  # those queued meanwhile fail the same way
                stop = self._take_queued(jobs)
            log.error("store write failed, %d writes refused: %s", len(jobs), ex)
            self._writer_failed()
            err = overloaded(f"The store could not save the write: {ex}")
            for job in jobs:
                job.future.set_exception(err)
            return stop
        for job, value, exc in results:
            if exc is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(exc)
        return stop

    def _transaction(
        self, conn: Conn, jobs: list[_Job], isolate: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run ``jobs`` in the transaction begun, then COMMIT."""
        results: list[tuple[_Job, Any, BaseException | None]] = []
        self.memo.clear()
        for job in jobs:
            if isolate:
                conn.execute("SAVEPOINT job")
            try:
                results.append((job, job.fn(conn), None))
            except self.store_errors:
                raise  # the store itself failed (disk full, locked, gone): the batch fails
            except Exception as ex:  # the job's own failure, kept for its caller
                if not isolate:
                    conn.execute("ROLLBACK")
                    raise _JobFailed from ex
                conn.execute("ROLLBACK TO job")
                self.memo.clear()  # it may hold what the rollback undid
                results.append((job, None, ex))
            if isolate:
                conn.execute("RELEASE job")
        conn.execute("COMMIT")
        return results

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
