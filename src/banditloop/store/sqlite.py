"""The embedded store: one SQLite file in WAL mode, one writer thread, group commit.

All writes go through the single writer thread, which drains its queue and
commits everything it took in one transaction (each job in a savepoint, so one
failing job does not fail its neighbours).  A job's future completes only after
that COMMIT, so an acknowledged event is on disk.  Reads use one connection per
thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

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
    Outcome,
    SlotChoice,
)

log = logging.getLogger(__name__)
migrations = sqlite_utils.Migrations("banditloop")
MAX_BATCH = 1024
_STOP = object()


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE loops (
            name TEXT PRIMARY KEY, config TEXT NOT NULL, policy_name TEXT NOT NULL,
            policy TEXT NOT NULL, key_hashes TEXT NOT NULL, created REAL NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE decisions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            loop TEXT NOT NULL, event_id TEXT NOT NULL, ts REAL NOT NULL,
            close_at REAL NOT NULL, deferred INTEGER NOT NULL, request_hash TEXT NOT NULL,
            example TEXT NOT NULL, action_ids TEXT NOT NULL, slots TEXT NOT NULL,
            mode TEXT NOT NULL, multislot INTEGER NOT NULL, response BLOB NOT NULL,
            model_version TEXT NOT NULL, learned_in INTEGER, outcome TEXT,
            UNIQUE (loop, event_id))"""
    )
    db.execute("CREATE INDEX decisions_open ON decisions (loop, close_at) WHERE learned_in IS NULL")
    db.execute("CREATE INDEX decisions_ts ON decisions (loop, ts)")
    db.execute(
        """CREATE TABLE rewards (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, loop TEXT NOT NULL,
            event_id TEXT NOT NULL, slot TEXT, value REAL NOT NULL, ts REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX rewards_event ON rewards (loop, event_id)")
    db.execute(
        """CREATE TABLE activations (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, loop TEXT NOT NULL,
            event_id TEXT NOT NULL, ts REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX activations_event ON activations (loop, event_id)")
    db.execute(
        """CREATE TABLE models (
            loop TEXT NOT NULL, number INTEGER NOT NULL, created REAL NOT NULL,
            blob BLOB NOT NULL, policy TEXT NOT NULL, events_learned INTEGER NOT NULL,
            born REAL NOT NULL, covers INTEGER NOT NULL, PRIMARY KEY (loop, number))"""
    )


@migrations()
def m002_jobs(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE jobs (
            loop TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL,
            status TEXT NOT NULL, request TEXT NOT NULL, result TEXT,
            PRIMARY KEY (loop, kind, id))"""
    )


@migrations()
def m003_items_and_sources(db: sqlite_utils.Database) -> None:
    # Where a decision's candidates came from (re-ranking): client, recommender or
    # fallback; NULL for a plain Rank.
    db.execute("ALTER TABLE decisions ADD COLUMN source TEXT")
    db.execute(
        """CREATE TABLE items (
            loop TEXT NOT NULL, id TEXT NOT NULL, features TEXT NOT NULL,
            available INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (loop, id))"""
    )


@migrations()
def m004_holdout(db: sqlite_utils.Database) -> None:
    # 1 for a decision served the baseline as the holdout group (docs/holdout.md).
    db.execute("ALTER TABLE decisions ADD COLUMN holdout INTEGER NOT NULL DEFAULT 0")


@migrations()
def m005_tracking(db: sqlite_utils.Database) -> None:
    # Tracked user events (docs/recommendations.md). seq is the models' high-water mark,
    # so it must never be reused (AUTOINCREMENT); user and session ids are hashed.
    db.execute(
        """CREATE TABLE tracked_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, loop TEXT NOT NULL, type TEXT NOT NULL,
            item TEXT NOT NULL, user_hash TEXT, session_hash TEXT, ts REAL NOT NULL,
            value REAL, event_id TEXT, received REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX tracked_events_seq ON tracked_events (loop, seq)")
    db.execute("CREATE INDEX tracked_events_user ON tracked_events (loop, user_hash, seq)")
    db.execute("CREATE INDEX tracked_events_session ON tracked_events (loop, session_hash, seq)")
    db.execute("CREATE INDEX tracked_events_ts ON tracked_events (loop, ts)")
    # Bumped when tracked events are deleted (forget, DELETE /logs): models rebuild.
    db.execute("CREATE TABLE tracking_state (loop TEXT PRIMARY KEY, generation INTEGER NOT NULL)")
    # Which scenario served which Rank event, for whom (hashed): forgetting a user
    # deletes their recommendation decisions too.
    db.execute(
        """CREATE TABLE served (
            loop TEXT NOT NULL, event_id TEXT NOT NULL, scenario TEXT NOT NULL, actor TEXT,
            ts REAL NOT NULL, PRIMARY KEY (loop, event_id))"""
    )
    db.execute("CREATE INDEX served_actor ON served (loop, actor)")
    db.execute("CREATE INDEX served_ts ON served (loop, ts)")


class _JobFailed(Exception):
    """A job of a batch failed on its own: run the batch again, isolating each job."""


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


def _connect(path: Path, synchronous: str, busy_timeout: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return conn


_DECISION_COLS = (
    "loop, event_id, ts, close_at, deferred, request_hash, example, action_ids, slots, mode, "
    "multislot, response, model_version"
)


def _slots(text: str) -> list[SlotChoice]:
    return [SlotChoice.from_json(d) for d in orjson.loads(text)]


def _decision(row: tuple[Any, ...]) -> Decision:
    (
        seq,
        loop,
        event_id,
        ts,
        close_at,
        deferred,
        rhash,
        example,
        ids,
        slots,
        mode,
        multislot,
        response,
        version,
    ) = row
    return Decision(
        loop=loop,
        event_id=event_id,
        ts=ts,
        close_at=close_at,
        deferred=bool(deferred),
        request_hash=rhash,
        example=example,
        action_ids=orjson.loads(ids),
        slots=_slots(slots),
        response=bytes(response),
        model_version=version,
        mode=mode,
        multislot=bool(multislot),
        seq=seq,
    )


def read_events(
    path: Path, loop: str, start: float, end: float, processed_only: bool = True, page: int = 1000
) -> Iterator[LoggedEvent]:
    """Decisions ranked in [start, end), in rank order, with rewards and activations;
    read page by page so that memory stays flat."""
    conn = _connect(path, "NORMAL")  # its own: the caller may be slow, or another process
    try:
        after = (start, -1)
        while True:
            rows = conn.execute(
                f"""SELECT seq, {_DECISION_COLS}, learned_in, outcome, holdout FROM decisions
                   WHERE loop=? AND (ts>? OR (ts=? AND seq>?)) AND ts<?
                   {"AND outcome IS NOT NULL" if processed_only else ""}
                   ORDER BY ts, seq LIMIT ?""",
                (loop, after[0], after[0], after[1], end, page),
            ).fetchall()
            if not rows:
                return
            ids = orjson.dumps([r[2] for r in rows]).decode()
            rewards: dict[str, list[tuple[float, float, str | None]]] = {}
            for eid, ts, value, slot in conn.execute(
                """SELECT event_id, ts, value, slot FROM rewards WHERE loop=? AND event_id
                   IN (SELECT value FROM json_each(?)) ORDER BY ts, seq""",
                (loop, ids),
            ):
                rewards.setdefault(eid, []).append((ts, value, slot))
            activations: dict[str, list[float]] = {}
            for eid, ts in conn.execute(
                """SELECT event_id, ts FROM activations WHERE loop=? AND event_id
                   IN (SELECT value FROM json_each(?)) ORDER BY ts""",
                (loop, ids),
            ):
                activations.setdefault(eid, []).append(ts)
            for row in rows:
                d = _decision(row[:14])
                if row[16]:
                    d = replace(d, holdout=True)
                yield LoggedEvent(
                    decision=d,
                    outcome=orjson.loads(row[15]) if row[15] else None,
                    rewards=rewards.get(d.event_id, []),
                    activations=activations.get(d.event_id, []),
                )
            after = (rows[-1][3], rows[-1][0])
    finally:
        conn.close()


def read_loop(path: Path, name: str) -> LoopRecord | None:
    """A loop's record, read without opening the store for writing."""
    conn = _connect(path, "NORMAL")
    try:
        row = conn.execute(
            f"SELECT {SqliteStore._LOOP_COLS} FROM loops WHERE name=?", (name,)
        ).fetchone()
    finally:
        conn.close()
    return SqliteStore._loop(row) if row else None


class SqliteStore:
    """SQLite store; see the module docstring for how writes are made durable."""

    def __init__(
        self,
        data_dir: Path,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        max_queue: int = 0,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "banditloop.db"
        self.location = str(self.path)  # what a job in another process opens
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._max_queue = max_queue  # writes waiting before submit sheds load (0: no limit)
        self._writer_conn = _connect(self.path, synchronous, busy_timeout)
        migrations.apply(sqlite_utils.Database(self._writer_conn))
        self._local = threading.local()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._thread.start()

    # -- the writer -----------------------------------------------------------------

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
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
        conn = self._writer_conn
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
            self._run_batch(conn, jobs)
            if stop:
                break
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        """One transaction for the batch. If a job fails on its own, the batch is run
        again with a savepoint per job, so that only that job fails."""
        try:
            try:
                results = self._transaction(conn, jobs, isolate=False)
            except _JobFailed:
                results = self._transaction(conn, jobs, isolate=True)
        except sqlite3.Error as ex:
            log.error("store write failed, %d writes refused: %s", len(jobs), ex)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = overloaded(f"The store could not save the write: {ex}")
            for job in jobs:
                job.future.set_exception(err)
            return
        for job, value, exc in results:
            if exc is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(exc)

    @staticmethod
    def _transaction(
        conn: sqlite3.Connection, jobs: list[_Job], isolate: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for job in jobs:
            if isolate:
                conn.execute("SAVEPOINT job")
            try:
                results.append((job, job.fn(conn), None))
            except sqlite3.OperationalError:
                raise  # the store itself failed (disk full, locked): the batch fails
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

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    # -- reads ----------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self._synchronous, self._busy_timeout)
            self._local.conn = conn
        return conn

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
        )

        def job(conn: sqlite3.Connection) -> Decision | None:
            cur = conn.execute(
                f"INSERT INTO decisions ({_DECISION_COLS}) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (loop, event_id) DO NOTHING",
                row,
            )
            if cur.rowcount:
                if d.source is not None:
                    conn.execute(
                        "UPDATE decisions SET source=? WHERE seq=?", (d.source, cur.lastrowid)
                    )
                if d.holdout:
                    conn.execute("UPDATE decisions SET holdout=1 WHERE seq=?", (cur.lastrowid,))
                return None
            found = conn.execute(
                f"SELECT seq, {_DECISION_COLS} FROM decisions WHERE loop=? AND event_id=?",
                (d.loop, d.event_id),
            ).fetchone()
            return _decision(found)

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

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO rewards (loop, event_id, slot, value, ts) VALUES (?,?,?,?,?)",
                [(loop, event_id, slot, value, ts) for slot, value in rewards],
            )
            if early_close:
                conn.execute(
                    """UPDATE decisions SET close_at=? WHERE loop=? AND event_id=?
                       AND learned_in IS NULL AND close_at>? AND multislot=0 AND (deferred=0
                       OR EXISTS (SELECT 1 FROM activations a WHERE a.loop=? AND a.event_id=?))""",
                    (ts, loop, event_id, ts, loop, event_id),
                )

        return self.submit(job)

    def append_activation(
        self, loop: str, event_id: str, ts: float, early_close: bool
    ) -> Future[None]:
        """Log an activation; with ``early_close`` a rewarded event closes now."""

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO activations (loop, event_id, ts) VALUES (?,?,?)",
                (loop, event_id, ts),
            )
            if early_close:
                conn.execute(
                    """UPDATE decisions SET close_at=? WHERE loop=? AND event_id=?
                       AND learned_in IS NULL AND close_at>? AND EXISTS
                       (SELECT 1 FROM rewards r WHERE r.loop=? AND r.event_id=?)""",
                    (ts, loop, event_id, ts, loop, event_id),
                )

        return self.submit(job)

    def get_decision(self, loop: str, event_id: str) -> Decision | None:
        row = (
            self._reader()
            .execute(
                f"SELECT seq, {_DECISION_COLS} FROM decisions WHERE loop=? AND event_id=?",
                (loop, event_id),
            )
            .fetchone()
        )
        return _decision(row) if row else None

    def closed_events(self, loop: str, now: float, limit: int) -> list[ClosedEvent]:
        """Unlearned decisions whose window has closed, oldest close first, with rewards."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            rows = conn.execute(
                """SELECT seq, event_id, ts, deferred, example, slots, mode, multislot, holdout
                   FROM decisions WHERE loop=? AND learned_in IS NULL AND close_at<=?
                   ORDER BY close_at, seq LIMIT ?""",
                (loop, now, limit),
            ).fetchall()
            if not rows:
                return []
            ids = orjson.dumps([r[1] for r in rows]).decode()
            rewards: dict[str, list[tuple[float, float, str | None]]] = {}
            for event_id, ts, value, slot in conn.execute(
                """SELECT event_id, ts, value, slot FROM rewards WHERE loop=? AND event_id IN
                   (SELECT value FROM json_each(?)) ORDER BY ts, seq""",
                (loop, ids),
            ):
                rewards.setdefault(event_id, []).append((ts, value, slot))
            activations: dict[str, list[float]] = {}
            for event_id, ts in conn.execute(
                """SELECT event_id, ts FROM activations WHERE loop=? AND event_id IN
                   (SELECT value FROM json_each(?)) ORDER BY ts""",
                (loop, ids),
            ):
                activations.setdefault(event_id, []).append(ts)
        finally:
            conn.execute("COMMIT")
        return [
            ClosedEvent(
                seq=seq,
                event_id=eid,
                ts=ts,
                deferred=bool(deferred),
                example=example,
                slots=_slots(slots),
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
        rows = [
            (mark, orjson.dumps({"r": o.rewards, "t": o.trained}).decode(), loop, o.seq)
            for o in outcomes
        ]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE decisions SET learned_in=?, outcome=? WHERE loop=? AND seq=? "
                "AND learned_in IS NULL",
                rows,
            )

        return self.submit(job)

    def apprentice_events(self, loop: str, since: float) -> list[tuple[float, dict[str, Any]]]:
        """(time, outcome) of learned Apprentice-mode events since ``since``, oldest first,
        each outcome with the slots as logged."""
        rows = self._reader().execute(
            """SELECT ts, slots, outcome FROM decisions WHERE loop=? AND mode='Apprentice'
               AND outcome IS NOT NULL AND ts>=? ORDER BY ts""",
            (loop, since),
        )
        return [(ts, {**orjson.loads(o), "slots": orjson.loads(sl)}) for ts, sl, o in rows]

    def forget_unsaved(self, loop: str, covers: int) -> Future[int]:
        """Undo marks that no saved model covers (the trainer died before saving)."""

        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE decisions SET learned_in=NULL, outcome=NULL WHERE loop=? AND learned_in>?",
                (loop, covers),
            )
            return cur.rowcount

        return self.submit(job)

    def count_learned(self, loop: str) -> int:
        row = (
            self._reader()
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

        def job(conn: sqlite3.Connection) -> ModelRecord | None:
            if after is not None and self._newest(conn, model.loop) != after:
                return None
            number, top = conn.execute(
                "SELECT coalesce((SELECT max(number) FROM models WHERE loop=?), 0) + 1, "
                "coalesce((SELECT max(learned_in) FROM decisions WHERE loop=?), 0)",
                (model.loop, model.loop),
            ).fetchone()
            saved = replace(model, number=number, covers=top if covers is None else covers)
            conn.execute(
                "INSERT INTO models (loop, number, created, blob, policy, events_learned, born, "
                "covers) VALUES (?,?,?,?,?,?,?,?)",
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
        return self._newest(self._reader(), loop)

    @staticmethod
    def _newest(conn: sqlite3.Connection, loop: str) -> int:
        row = conn.execute(
            "SELECT coalesce(max(number), 0) FROM models WHERE loop=?", (loop,)
        ).fetchone()
        return int(row[0])

    def latest_model(self, loop: str) -> ModelRecord | None:
        row = (
            self._reader()
            .execute(
                "SELECT loop, number, created, blob, policy, events_learned, born, covers "
                "FROM models "
                "WHERE loop=? ORDER BY number DESC LIMIT 1",
                (loop,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return ModelRecord(row[0], row[1], row[2], bytes(row[3]), row[4], row[5], row[6], row[7])

    _LOOP_COLS = "name, config, policy_name, policy, created, key_hashes"

    @staticmethod
    def _loop(row: tuple[Any, ...]) -> LoopRecord:
        return LoopRecord(
            row[0], orjson.loads(row[1]), row[2], row[3], row[4], orjson.loads(row[5])
        )

    def get_loop(self, name: str) -> LoopRecord | None:
        row = (
            self._reader()
            .execute(f"SELECT {self._LOOP_COLS} FROM loops WHERE name=?", (name,))
            .fetchone()
        )
        return self._loop(row) if row else None

    def list_loops(self) -> list[LoopRecord]:
        rows = self._reader().execute(f"SELECT {self._LOOP_COLS} FROM loops ORDER BY name")
        return [self._loop(r) for r in rows]

    def put_loop(self, rec: LoopRecord) -> Future[None]:
        row = (
            rec.name,
            orjson.dumps(rec.config).decode(),
            rec.policy_name,
            rec.policy,
            rec.created,
            orjson.dumps(rec.key_hashes).decode(),
        )

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO loops ({self._LOOP_COLS}) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (name) DO UPDATE SET config=excluded.config, "
                "policy_name=excluded.policy_name, policy=excluded.policy, "
                "key_hashes=excluded.key_hashes",
                row,
            )

        return self.submit(job)

    def delete_loop(self, name: str) -> Future[None]:
        """Remove a loop and everything logged or learned for it."""

        def job(conn: sqlite3.Connection) -> None:
            for table in ("decisions", "rewards", "activations", "models", "jobs", "items"):
                conn.execute(f"DELETE FROM {table} WHERE loop=?", (name,))
            conn.execute("DELETE FROM loops WHERE name=?", (name,))

        return self.submit(job)

    # -- reading the log back ---------------------------------------------------------

    def iter_events(
        self, loop: str, start: float, end: float, processed_only: bool = True
    ) -> Iterator[LoggedEvent]:
        return read_events(self.path, loop, start, end, processed_only)

    # -- background jobs (evaluations, feature importances) ----------------------------

    def put_job(self, loop: str, kind: str, job: JobRecord) -> Future[bool]:
        """Store a job; False if one with that id exists and ``job`` is new."""

        def run(conn: sqlite3.Connection) -> bool:
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
            for i, c, st, rq, rs in self._reader().execute(sql + " ORDER BY created", args)
        ]

    def delete_job(self, loop: str, kind: str, job_id: str) -> Future[int]:
        def run(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(
                    "DELETE FROM jobs WHERE loop=? AND kind=? AND id=?", (loop, kind, job_id)
                ).rowcount
            )

        return self.submit(run)

    # -- log administration -----------------------------------------------------------

    def log_range(self, loop: str) -> LogRange:
        first, last = (
            self._reader()
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
                for eid, example in self._reader().execute(
                    "SELECT event_id, example FROM decisions WHERE loop=?", (loop,)
                )
                if context_has(orjson.loads(example), path, value)
            ]
            where = "event_id IN (SELECT value FROM json_each(?))"
            args: list[Any] = [orjson.dumps(ids).decode()]
        elif event_id is not None:
            where, args = "event_id=?", [event_id]
        elif before is not None:
            where, args = "ts<?", [before]  # rewards older than the cutoff, orphans included
        else:
            where, args = "1", []

        def job(conn: sqlite3.Connection) -> int:
            n = conn.execute(f"DELETE FROM decisions WHERE loop=? AND {where}", (loop, *args))
            for table in ("rewards", "activations"):
                conn.execute(f"DELETE FROM {table} WHERE loop=? AND {where}", (loop, *args))
            return int(n.rowcount)

        return self.submit(job)

    def reschedule(self, loop: str, old_wait: float, new_wait: float) -> Future[None]:
        """Move the close time of open events to a new reward wait time."""

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                """UPDATE decisions SET close_at = CASE
                     WHEN close_at >= ts + ? - 1e-6 THEN ts + ? ELSE min(close_at, ts + ?) END
                   WHERE loop=? AND learned_in IS NULL""",
                (old_wait, new_wait, new_wait, loop),
            )

        return self.submit(job)
