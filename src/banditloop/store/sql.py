"""What every SQL store shares: the writer thread with group commit, and the queries.

All writes go through one writer thread per process, which drains its queue and
commits everything it took in one transaction.  A job's future completes only
after that COMMIT, so an acknowledged event is durable.  If a job fails on its
own, the batch runs again with a savepoint per job, so that only that job fails.

The SQL here runs unchanged on SQLite and PostgreSQL: ``?`` placeholders (the
PostgreSQL connection translates them), ``ON CONFLICT`` upserts, ``RETURNING``,
explicit ``IN (?, …)`` lists, ``CASE`` instead of two-argument ``min``.  A
subclass opens connections, creates the schema and says which errors mean that
the store itself failed (as opposed to one job).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import orjson

from ..errors import Unavailable
from ..featurize import context_has
from ..limits import overloaded
from .base import (
    ClosedEvent,
    Decision,
    JobRecord,
    LoggedEvent,
    LogRange,
    LoopRecord,
    ModelRecord,
    NotLeader,
    Outcome,
    SlotChoice,
)

log = logging.getLogger(__name__)
MAX_BATCH = 1024
MAX_IN = 500  # values per IN (...) list: well inside every engine's parameter limit
_STOP = object()
Conn = Any  # sqlite3.Connection, or the PostgreSQL adapter with the same methods

DECISION_COLS = (
    "loop, event_id, ts, close_at, deferred, request_hash, example, action_ids, slots, mode, "
    "multislot, response, model_version"
)
LOOP_COLS = "name, config, policy_name, policy, created, key_hashes"
MODEL_COLS = "loop, number, created, blob, policy, events_learned, born, covers"


def marks(n: int) -> str:
    """``?,?,…`` for an IN list of ``n`` values."""
    return ",".join("?" * n)


def chunks(values: Sequence[Any], size: int = MAX_IN) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def decision(row: Sequence[Any]) -> Decision:
    """A Decision from ``seq, DECISION_COLS``."""
    seq, loop, event_id, ts, close_at, deferred, rhash, example, ids, slots = row[:10]
    mode, multislot, response, version = row[10:14]
    return Decision(
        loop=loop,
        event_id=event_id,
        ts=ts,
        close_at=close_at,
        deferred=bool(deferred),
        request_hash=rhash,
        example=example,
        action_ids=orjson.loads(ids),
        slots=[SlotChoice.from_json(d) for d in orjson.loads(slots)],
        response=bytes(response),
        model_version=version,
        mode=mode,
        multislot=bool(multislot),
        seq=seq,
    )


def _outcome_json(o: Outcome) -> str:
    """An outcome as stored; ``e`` only for an event the trainer could not learn."""
    out: dict[str, Any] = {"r": o.rewards, "t": o.trained}
    if o.error:
        out["e"] = o.error
    return orjson.dumps(out).decode()


def loop_record(row: Sequence[Any]) -> LoopRecord:
    return LoopRecord(row[0], orjson.loads(row[1]), row[2], row[3], row[4], orjson.loads(row[5]))


def model_record(row: Sequence[Any]) -> ModelRecord:
    return ModelRecord(row[0], row[1], row[2], bytes(row[3]), *row[4:])


def joined(
    conn: Conn, loop: str, event_ids: Sequence[str]
) -> tuple[dict[str, list[tuple[float, float, str | None]]], dict[str, list[float]]]:
    """Rewards (ts, value, slot) and activation times of these events, by event id."""
    rewards: dict[str, list[tuple[float, float, str | None]]] = {}
    activations: dict[str, list[float]] = {}
    for ids in chunks(event_ids):
        for eid, ts, value, slot in conn.execute(
            f"""SELECT event_id, ts, value, slot FROM rewards WHERE loop=?
                AND event_id IN ({marks(len(ids))}) ORDER BY ts, seq""",
            (loop, *ids),
        ):
            rewards.setdefault(eid, []).append((ts, value, slot))
        for eid, ts in conn.execute(
            f"""SELECT event_id, ts FROM activations WHERE loop=?
                AND event_id IN ({marks(len(ids))}) ORDER BY ts""",
            (loop, *ids),
        ):
            activations.setdefault(eid, []).append(ts)
    return rewards, activations


def read_events(
    conn: Conn, loop: str, start: float, end: float, processed_only: bool = True, page: int = 1000
) -> Iterator[LoggedEvent]:
    """Decisions ranked in [start, end), in rank order, with rewards and activations;
    read page by page so that memory stays flat."""
    after = (start, -1)
    while True:
        rows = conn.execute(
            f"""SELECT seq, {DECISION_COLS}, outcome, holdout FROM decisions
               WHERE loop=? AND (ts>? OR (ts=? AND seq>?)) AND ts<?
               {"AND outcome IS NOT NULL" if processed_only else ""}
               ORDER BY ts, seq LIMIT ?""",
            (loop, after[0], after[0], after[1], end, page),
        ).fetchall()
        if not rows:
            return
        rewards, activations = joined(conn, loop, [r[2] for r in rows])
        for row in rows:
            d = decision(row)
            if row[15]:
                d = replace(d, holdout=True)
            yield LoggedEvent(
                decision=d,
                outcome=orjson.loads(row[14]) if row[14] else None,
                rewards=rewards.get(d.event_id, []),
                activations=activations.get(d.event_id, []),
            )
        after = (rows[-1][3], rows[-1][0])


class _JobFailed(Exception):
    """A job of a batch failed on its own: run the batch again, isolating each job."""


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[Conn], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


class SqlStore:
    """The store's behaviour, on any connection that speaks the SQL above."""

    location: str  # what a job in another process opens (a file path or a URL)
    dialect = "sqlite"  # for the few queries that read inside the logged JSON
    store_errors: tuple[type[Exception], ...] = ()  # the store failed, not one job

    def __init__(self, max_queue: int = 0) -> None:
        self._max_queue = max_queue  # writes waiting before submit sheds load (0: no limit)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)

    # -- what a subclass provides ------------------------------------------------------

    def _writer(self) -> Conn:
        """The writer thread's connection (opened again if it broke)."""
        raise NotImplementedError

    def _writer_failed(self) -> None:
        """The last batch hit a store error: drop the writer connection if it broke."""

    def _begin(self, conn: Conn) -> None:
        """Open the writer's transaction."""
        conn.execute("BEGIN")

    def reader(self) -> Conn:
        """A connection for reads on the calling thread."""
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def snapshot(self) -> AbstractContextManager[Conn]:
        """A connection whose reads all see one state of the store."""
        raise NotImplementedError

    def open_reader(self) -> AbstractContextManager[Conn]:
        """A connection of its own, for a long read (export, evaluation)."""
        raise NotImplementedError

    def lead(self, loop: str) -> bool:
        """Whether this process may train ``loop`` now (see PostgresStore)."""
        return True

    def _check_lead(self, conn: Conn, loop: str) -> None:
        """In a trainer's write: fail unless this process still leads ``loop``."""

    # -- the writer ----------------------------------------------------------------------

    def submit(self, fn: Callable[[Conn], Any]) -> Future[Any]:
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
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs = [first]
            stop = False
            while len(jobs) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
            self._run_batch(jobs)
            if stop:
                break
        self._close_writer()

    def _close_writer(self) -> None:
        """Close the writer's connection (called by the writer thread as it ends)."""

    def _run_batch(self, jobs: list[_Job]) -> None:
        try:
            conn = self._writer()
            try:
                results = self._transaction(conn, jobs, isolate=False)
            except _JobFailed:
                results = self._transaction(conn, jobs, isolate=True)
        except self.store_errors as ex:
            log.error("store write failed, %d writes refused: %s", len(jobs), ex)
            self._writer_failed()
            err = overloaded(f"The store could not save the write: {ex}")
            for job in jobs:
                job.future.set_exception(err)
            return
        for job, value, exc in results:
            if exc is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(exc)

    def _transaction(
        self, conn: Conn, jobs: list[_Job], isolate: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        self._begin(conn)
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

    # -- events ---------------------------------------------------------------------

    def append_decision(self, d: Decision) -> Future[Decision | None]:
        """Log a decision; if its event ID is taken, the future holds the stored one."""
        row = (
            d.loop,
            d.event_id,
            d.ts,
            d.close_at,
            int(d.deferred),
            d.request_hash,
            d.example,
            orjson.dumps(d.action_ids).decode(),
            orjson.dumps([s.to_json() for s in d.slots]).decode(),
            d.mode,
            int(d.multislot),
            d.response,
            d.model_version,
            d.source,
            int(d.holdout),
        )

        def job(conn: Conn) -> Decision | None:
            added = conn.execute(
                f"INSERT INTO decisions ({DECISION_COLS}, source, holdout) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (loop, event_id) DO NOTHING "
                "RETURNING seq",
                row,
            ).fetchone()
            if added is not None:
                return None
            found = conn.execute(
                f"SELECT seq, {DECISION_COLS} FROM decisions WHERE loop=? AND event_id=?",
                (d.loop, d.event_id),
            ).fetchone()
            return decision(found)

        return self.submit(job)

    def append_rewards(
        self,
        loop: str,
        event_id: str,
        rewards: list[tuple[str | None, float]],
        ts: float,
        early_close: bool,
    ) -> Future[None]:
        """Log rewards (slot, value); with ``early_close`` (earliest aggregation, single
        slot) the event closes now: its first reward is final."""

        def job(conn: Conn) -> None:
            conn.executemany(
                "INSERT INTO rewards (loop, event_id, slot, value, ts) VALUES (?,?,?,?,?)",
                [(loop, event_id, slot, value, ts) for slot, value in rewards],
            )
            if early_close:
                conn.execute(
                    """UPDATE decisions SET close_at=? WHERE seq=(SELECT seq FROM decisions
                       WHERE loop=? AND event_id=?) AND learned_in IS NULL AND close_at>?
                       AND multislot=0 AND (deferred=0
                       OR EXISTS (SELECT 1 FROM activations a WHERE a.loop=? AND a.event_id=?))""",
                    (ts, loop, event_id, ts, loop, event_id),
                )

        return self.submit(job)

    def append_activation(
        self, loop: str, event_id: str, ts: float, early_close: bool
    ) -> Future[None]:
        """Log an activation; with ``early_close`` a rewarded event closes now."""

        def job(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO activations (loop, event_id, ts) VALUES (?,?,?)",
                (loop, event_id, ts),
            )
            if early_close:
                conn.execute(
                    """UPDATE decisions SET close_at=? WHERE seq=(SELECT seq FROM decisions
                       WHERE loop=? AND event_id=?) AND learned_in IS NULL AND close_at>?
                       AND EXISTS (SELECT 1 FROM rewards r WHERE r.loop=? AND r.event_id=?)""",
                    (ts, loop, event_id, ts, loop, event_id),
                )

        return self.submit(job)

    def get_decision(self, loop: str, event_id: str) -> Decision | None:
        row = (
            self.reader()
            .execute(
                f"SELECT seq, {DECISION_COLS} FROM decisions WHERE loop=? AND event_id=?",
                (loop, event_id),
            )
            .fetchone()
        )
        return decision(row) if row else None

    def closed_events(self, loop: str, now: float, limit: int) -> list[ClosedEvent]:
        """Unlearned decisions whose window has closed, oldest close first, with rewards."""
        with self.snapshot() as conn:
            rows = conn.execute(
                """SELECT seq, event_id, ts, deferred, example, slots, mode, multislot, holdout
                   FROM decisions WHERE loop=? AND learned_in IS NULL AND close_at<=?
                   ORDER BY close_at, seq LIMIT ?""",
                (loop, now, limit),
            ).fetchall()
            if not rows:
                return []
            rewards, activations = joined(conn, loop, [r[1] for r in rows])
        return [
            ClosedEvent(
                seq=seq,
                event_id=eid,
                ts=ts,
                deferred=bool(deferred),
                example=example,
                slots=[SlotChoice.from_json(s) for s in orjson.loads(slots)],
                mode=mode,
                multislot=bool(multislot),
                rewards=rewards.get(eid, []),
                activations=activations.get(eid, []),
                holdout=bool(holdout),
            )
            for seq, eid, ts, deferred, example, slots, mode, multislot, holdout in rows
        ]

    def mark_learned(self, loop: str, outcomes: list[Outcome], mark: int) -> Future[None]:
        """Mark events as handled under the trainer's mark, with what they were learned as."""
        rows = [(mark, _outcome_json(o), o.seq) for o in outcomes]

        def job(conn: Conn) -> None:
            self._check_lead(conn, loop)
            conn.executemany(
                # by primary key alone: with ``loop=?`` PostgreSQL may scan decisions_open
                "UPDATE decisions SET learned_in=?, outcome=? WHERE seq=? AND learned_in IS NULL",
                rows,
            )

        return self.submit(job)

    def apprentice_events(self, loop: str, since: float) -> list[tuple[float, dict[str, Any]]]:
        """(time, outcome) of learned Apprentice-mode events since ``since``, oldest first,
        each outcome with the slots as logged."""
        rows = self.reader().execute(
            """SELECT ts, slots, outcome FROM decisions WHERE loop=? AND mode='Apprentice'
               AND outcome IS NOT NULL AND ts>=? ORDER BY ts""",
            (loop, since),
        )
        return [(ts, {**orjson.loads(o), "slots": orjson.loads(sl)}) for ts, sl, o in rows]

    def forget_unsaved(self, loop: str, covers: int) -> Future[int]:
        """Undo marks that no saved model covers (the trainer died before saving)."""

        def job(conn: Conn) -> int:
            self._check_lead(conn, loop)  # else it would undo the marks of the real trainer
            cur = conn.execute(
                "UPDATE decisions SET learned_in=NULL, outcome=NULL WHERE loop=? AND learned_in>?",
                (loop, covers),
            )
            return int(cur.rowcount)

        return self.submit(job)

    def count_learned(self, loop: str) -> int:
        row = (
            self.reader()
            .execute(
                "SELECT count(*) FROM decisions WHERE loop=? AND learned_in IS NOT NULL", (loop,)
            )
            .fetchone()
        )
        return int(row[0])

    # -- models and loops -----------------------------------------------------------

    def save_model(
        self, model: ModelRecord, covers: int | None, keep: int = 3, after: int | None = None
    ) -> Future[ModelRecord | None]:
        """Save a model as the loop's newest; the store numbers it.  ``covers`` None (a
        model from outside the trainer: reset, import) covers every mark made so far.
        With ``after``, save only if model ``after`` is still the newest (else None): the
        trainer must not bury a model another process saved meanwhile."""

        def job(conn: Conn) -> ModelRecord | None:
            if covers is not None:
                self._check_lead(conn, model.loop)
            if after is not None and self._newest(conn, model.loop) != after:
                return None
            top = covers
            if top is None:  # every mark made so far (index decisions_learned)
                top = conn.execute(
                    "SELECT coalesce(max(learned_in), 0) FROM decisions "
                    "WHERE loop=? AND learned_in IS NOT NULL",
                    (model.loop,),
                ).fetchone()[0]
            number = self._newest(conn, model.loop) + 1
            saved = replace(model, number=number, covers=top)
            conn.execute(
                f"INSERT INTO models ({MODEL_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                (
                    saved.loop,
                    saved.number,
                    saved.created,
                    saved.blob,
                    saved.policy,
                    saved.events_learned,
                    saved.born,
                    saved.covers,
                ),
            )
            conn.execute(
                "DELETE FROM models WHERE loop=? AND number<=?", (saved.loop, number - keep)
            )
            return saved

        return self.submit(job)

    def model_number(self, loop: str) -> int:
        """Number of the loop's newest model (0: none); cheap, for watchers."""
        return self._newest(self.reader(), loop)

    @staticmethod
    def _newest(conn: Conn, loop: str) -> int:
        row = conn.execute(
            "SELECT coalesce(max(number), 0) FROM models WHERE loop=?", (loop,)
        ).fetchone()
        return int(row[0])

    def latest_model(self, loop: str) -> ModelRecord | None:
        row = (
            self.reader()
            .execute(
                f"SELECT {MODEL_COLS} FROM models WHERE loop=? ORDER BY number DESC LIMIT 1",
                (loop,),
            )
            .fetchone()
        )
        return model_record(row) if row else None

    def older_models(self, loop: str, below: int) -> list[ModelRecord]:
        """The loop's saved models numbered below ``below``, newest first."""
        rows = (
            self.reader()
            .execute(
                f"SELECT {MODEL_COLS} FROM models WHERE loop=? AND number<? ORDER BY number DESC",
                (loop, below),
            )
            .fetchall()
        )
        return [model_record(r) for r in rows]

    def delete_models(self, loop: str, numbers: list[int]) -> Future[None]:
        def job(conn: Conn) -> None:
            conn.executemany(
                "DELETE FROM models WHERE loop=? AND number=?", [(loop, n) for n in numbers]
            )

        return self.submit(job)

    def get_loop(self, name: str) -> LoopRecord | None:
        row = (
            self.reader().execute(f"SELECT {LOOP_COLS} FROM loops WHERE name=?", (name,)).fetchone()
        )
        return loop_record(row) if row else None

    def list_loops(self) -> list[LoopRecord]:
        rows = self.reader().execute(f"SELECT {LOOP_COLS} FROM loops ORDER BY name")
        return [loop_record(r) for r in rows]

    def put_loop(self, rec: LoopRecord) -> Future[None]:
        row = (
            rec.name,
            orjson.dumps(rec.config).decode(),
            rec.policy_name,
            rec.policy,
            rec.created,
            orjson.dumps(rec.key_hashes).decode(),
        )

        def job(conn: Conn) -> None:
            conn.execute(
                f"INSERT INTO loops ({LOOP_COLS}) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (name) DO UPDATE SET config=excluded.config, "
                "policy_name=excluded.policy_name, policy=excluded.policy, "
                "key_hashes=excluded.key_hashes",
                row,
            )

        return self.submit(job)

    def delete_loop(self, name: str) -> Future[None]:
        """Remove a loop and everything logged or learned for it."""

        def job(conn: Conn) -> None:
            for table in ("decisions", "rewards", "activations", "models", "jobs", "items"):
                conn.execute(f"DELETE FROM {table} WHERE loop=?", (name,))
            conn.execute("DELETE FROM loops WHERE name=?", (name,))

        return self.submit(job)

    # -- reading the log back ---------------------------------------------------------

    def iter_events(
        self, loop: str, start: float, end: float, processed_only: bool = True
    ) -> Iterator[LoggedEvent]:
        with self.open_reader() as conn:
            yield from read_events(conn, loop, start, end, processed_only)

    # -- background jobs (evaluations, feature importances) ----------------------------

    def put_job(self, loop: str, kind: str, job: JobRecord) -> Future[bool]:
        """Store a job; False if one with that id exists and ``job`` is new."""

        def run(conn: Conn) -> bool:
            cur = conn.execute(
                "INSERT INTO jobs (loop, kind, id, created, status, request, result) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (loop, kind, id) DO UPDATE SET "
                "status=excluded.status, result=excluded.result WHERE ?",
                (
                    loop,
                    kind,
                    job.id,
                    job.created,
                    job.status,
                    orjson.dumps(job.request).decode(),
                    orjson.dumps(job.result).decode() if job.result is not None else None,
                    job.status != "Running",
                ),
            )
            return bool(cur.rowcount)

        return self.submit(run)

    def get_jobs(self, loop: str, kind: str, job_id: str | None = None) -> list[JobRecord]:
        sql = "SELECT id, created, status, request, result FROM jobs WHERE loop=? AND kind=?"
        args: list[Any] = [loop, kind]
        if job_id is not None:
            sql += " AND id=?"
            args.append(job_id)
        return [
            JobRecord(i, c, st, orjson.loads(rq), orjson.loads(rs) if rs else None)
            for i, c, st, rq, rs in self.reader().execute(sql + " ORDER BY created", args)
        ]

    def delete_job(self, loop: str, kind: str, job_id: str) -> Future[int]:
        def run(conn: Conn) -> int:
            return int(
                conn.execute(
                    "DELETE FROM jobs WHERE loop=? AND kind=? AND id=?", (loop, kind, job_id)
                ).rowcount
            )

        return self.submit(run)

    # -- log administration -----------------------------------------------------------

    def log_range(self, loop: str) -> LogRange:
        first, last = (
            self.reader()
            .execute("SELECT min(ts), max(ts) FROM decisions WHERE loop=?", (loop,))
            .fetchone()
        )
        return LogRange(first, last)

    def delete_logs(
        self,
        loop: str,
        before: float | None = None,
        event_id: str | None = None,
        feature: tuple[list[str], Any] | None = None,
    ) -> Future[int]:
        """Delete decisions (with their rewards and activations): all of them, those
        older than ``before``, one event, or those whose context has a feature value."""
        if feature is not None:
            path, value = feature
            ids = [
                eid
                for eid, example in self.reader().execute(
                    "SELECT event_id, example FROM decisions WHERE loop=?", (loop,)
                )
                if context_has(orjson.loads(example), path, value)
            ]
            wheres = [(f"event_id IN ({marks(len(c))})", list(c)) for c in chunks(ids)]
        elif event_id is not None:
            wheres = [("event_id=?", [event_id])]
        elif before is not None:
            wheres = [("ts<?", [before])]  # rewards older than the cutoff, orphans included
        else:
            wheres = [("1=1", [])]

        def job(conn: Conn) -> int:
            n = 0
            for where, args in wheres:
                cur = conn.execute(f"DELETE FROM decisions WHERE loop=? AND {where}", (loop, *args))
                n += cur.rowcount
                for table in ("rewards", "activations"):
                    conn.execute(f"DELETE FROM {table} WHERE loop=? AND {where}", (loop, *args))
            return n

        return self.submit(job)

    def scrub(self) -> None:
        """After deleting logs: no copy of the deleted rows left in the store's files
        (SQLite: sqlite.py; PostgreSQL leaves them to VACUUM, docs/security.md)."""

    def reschedule(self, loop: str, old_wait: float, new_wait: float) -> Future[None]:
        """Move the close time of open events to a new reward wait time."""

        def job(conn: Conn) -> None:
            conn.execute(
                """UPDATE decisions SET close_at = CASE
                     WHEN close_at >= ts + ? - 1e-6 THEN ts + ?
                     WHEN close_at < ts + ? THEN close_at ELSE ts + ? END
                   WHERE loop=? AND learned_in IS NULL""",
                (old_wait, new_wait, new_wait, new_wait, loop),
            )

        return self.submit(job)


__all__ = ["NotLeader", "SqlStore"]
