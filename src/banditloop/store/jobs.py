"""Background jobs of a loop (evaluations, feature importances) and their results."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from .base import JobRecord
from .db import Conn, Queries

JOB_COLS = "id, created, status, request, result"


def job_record(row: Sequence[Any]) -> JobRecord:
    job_id, created, status, request, result = row
    return JobRecord(
        job_id, created, status, orjson.loads(request), orjson.loads(result) if result else None
    )


class Jobs(Queries):
    """The jobs of every loop, by kind."""

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
        """The loop's jobs of a kind (or the one with ``job_id``), oldest first."""
        sql = f"SELECT {JOB_COLS} FROM jobs WHERE loop=? AND kind=?"
        args: list[Any] = [loop, kind]
        if job_id is not None:
            sql += " AND id=?"
            args.append(job_id)
        return [job_record(r) for r in self.reader().execute(sql + " ORDER BY created", args)]

    def recent_jobs(self, loop: str, kind: str, limit: int) -> list[JobRecord]:
        """The loop's newest jobs of a kind, newest first."""
        rows = self.reader().execute(
            f"SELECT {JOB_COLS} FROM jobs WHERE loop=? AND kind=? ORDER BY created DESC LIMIT ?",
            (loop, kind, limit),
        )
        return [job_record(r) for r in rows]

    def delete_job(self, loop: str, kind: str, job_id: str) -> Future[int]:
        def run(conn: Conn) -> int:
            cur = conn.execute(
                "DELETE FROM jobs WHERE loop=? AND kind=? AND id=?", (loop, kind, job_id)
            )
            return int(cur.rowcount)

        return self.submit(run)
