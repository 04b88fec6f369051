"""Evaluations and feature importances as background jobs in a child process.

VW holds the GIL, so a replay in the server process would stall ranking; the
job runs in a process of its own, reads the log straight from the store file,
and hands its result back to the parent, which stores it.
"""

from __future__ import annotations

import base64
import collections
import logging
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from ..store import read_events
from ..store.base import JobRecord
from .estimators import Z95, OffPolicy
from .importance import feature_importance
from .replay import ONLINE, evaluate

log = logging.getLogger(__name__)
EVALUATION, IMPORTANCE = "evaluation", "featureImportance"
BUCKET_SECONDS = 300.0

#: Arguments tried by policy optimization, on top of the loop's own policy.
SEARCH_SPACE = [
    "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr",
    "--cb_explore_adf --epsilon 0.1 -q :: --cb_type mtr",
    "--cb_explore_adf --epsilon 0.05 -q :: --cb_type mtr",
    "--cb_explore_adf --epsilon 0.1 -q :: --cb_type ips",
    "--cb_explore_adf --epsilon 0.1 -q :: --cb_type mtr -l 0.1",
    "--cb_explore_adf --epsilon 0.1 --cb_type mtr",
    "--cb_explore_adf --squarecb -q :: --cb_type mtr",
    "--cb_explore_adf --bag 5 --epsilon 0.05 -q :: --cb_type mtr",
]


def run_evaluation(
    db: str, loop: str, request: dict[str, Any], current_policy: str
) -> dict[str, Any]:
    """The work of one evaluation (runs in the child process)."""
    start, end = request["start"], request["end"]
    custom = [(p["name"], p["arguments"]) for p in request.get("policies") or []]
    optimize = bool(request.get("optimize"))
    searched = []
    if optimize:
        known = {args for _, args in custom} | {current_policy}
        searched = [(f"Optimized{i}", a) for i, a in enumerate(SEARCH_SPACE) if a not in known]
    results = evaluate(
        read_events(db, loop, start, end),
        custom + searched,
        BUCKET_SECONDS,
        keep_models=True,
    )
    online = next(r for r in results if r.name == ONLINE)
    # A candidate wins only if its SNIPS lower bound beats the online policy's upper
    # bound, with the candidate's bound widened for the number of candidates compared
    # (Bonferroni): plain 95% bounds over a dozen candidates name winners on pure noise.
    online_high = online.total.estimate_snips().high
    # a policy the logs cannot evaluate is never named optimal: the report lists it
    not_estimable = {r.name: reason for r in results if (reason := r.total.verdict()) is not None}
    candidates = [r for r in results if r.source == "Custom"]
    z = NormalDist().inv_cdf(1 - 0.05 / (2 * max(1, len(candidates))))
    best, best_low = ONLINE, None
    for r in candidates if ONLINE not in not_estimable else []:
        if r.name in not_estimable:
            continue
        est = r.total.estimate_snips()
        low = est.value - (est.value - est.low) * z / Z95
        if low > online_high and (best_low is None or low > best_low):
            best, best_low = r.name, low
    named_custom = {name for name, _ in custom}
    return {
        "events": online.total.n,
        "optimalPolicy": best,
        "notEstimable": not_estimable,
        "policies": [
            {
                "name": r.name,
                "arguments": r.arguments or (current_policy if r.name == ONLINE else ""),
                "policySource": (
                    "OfflineExperimentation"
                    if r.source == "Custom" and r.name not in named_custom
                    else r.source
                ),
                "summary": r.total.summary(),
                "buckets": {str(b): op.sums() for b, op in sorted(r.buckets.items())},
            }
            for r in results
        ],
        "models": {
            r.name: base64.b64encode(r.model).decode()
            for r in results
            if r.model is not None and r.name in (best, *named_custom)
        },
    }


def run_importance(
    db: str, loop: str, request: dict[str, Any], current_policy: str
) -> dict[str, Any]:
    events = read_events(db, loop, request["start"], request["end"])
    scores, diagnostics = feature_importance(events, current_policy)
    return {"featureScores": scores, "diagnostics": diagnostics}


JOBS: dict[str, Callable[[str, str, dict[str, Any], str], dict[str, Any]]] = {
    EVALUATION: run_evaluation,
    IMPORTANCE: run_importance,
}


def series(policy: dict[str, Any], interval_minutes: int, window: str) -> list[dict[str, Any]]:
    """The time series of one policy: per interval (Rolling) or cumulative (Expanding)."""
    width = max(1, int(interval_minutes * 60 // BUCKET_SECONDS))
    grouped: dict[int, list[float]] = {}
    for bucket, sums in policy["buckets"].items():
        key = int(bucket) // width
        grouped[key] = OffPolicy.merge_sums(grouped.get(key, []), sums)
    out = []
    running: list[float] = []
    for key in sorted(grouped):
        sums = grouped[key]
        if window == "Expanding":
            running = OffPolicy.merge_sums(running, sums)
            sums = running
        est = OffPolicy.from_sums(sums).point()
        ts = key * width * BUCKET_SECONDS
        out.append({"timeStamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), **est})
    return out


JobFn = Callable[[str, str, dict[str, Any], str], dict[str, Any]]
MEMORY_CAP = 4 << 30  # bytes a job's process may use (VW workspaces of up to 10 policies)
ORPHAN_CHECK_SECONDS = 1.0  # how soon a job's process notices the server is gone


def _confine() -> None:
    """In the job's process: a memory cap, so that a policy asking for too many weights
    fails its job instead of the machine; and an end when the server's process ends,
    even by kill -9 (the pool's own pipes would keep an orphan waiting forever)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    parent = os.getppid()

    def follow() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=follow, name="follow-parent", daemon=True).start()


@dataclass
class _Pending:
    kind: str
    args: tuple[str, str, dict[str, Any], str]
    job: JobRecord
    done: Callable[[JobRecord], None]
    future: Future[dict[str, Any]]


class JobRunner:
    """The server's jobs, one at a time, in a worker process; results are stored by the
    caller's hook.

    Jobs go to the worker one by one, so that when the worker dies (VW crashed on a
    policy, or the kernel killed it) the job it ran is known: that job fails with a
    clear message, the pool is replaced and the next job runs."""

    def __init__(self, jobs: dict[str, JobFn] | None = None) -> None:
        self.jobs = jobs or JOBS
        self._pool: ProcessPoolExecutor | None = None
        self._queue: collections.deque[_Pending] = collections.deque()
        self._running: _Pending | None = None
        self._lock = threading.RLock()  # a future already done calls back at once
        self._closed = False

    def submit(
        self,
        kind: str,
        db: str,
        loop: str,
        job: JobRecord,
        policy: str,
        done: Callable[[JobRecord], None],
    ) -> Future[dict[str, Any]]:
        pending = _Pending(kind, (db, loop, job.request, policy), job, done, Future())
        with self._lock:
            self._queue.append(pending)
            self._next()
        return pending.future

    def _next(self) -> None:
        """Start the next job if none runs (holding the lock)."""
        if self._running is not None or not self._queue or self._closed:
            return
        pending = self._running = self._queue.popleft()
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"), initializer=_confine
                )
            fut = self._pool.submit(self.jobs[pending.kind], *pending.args)
        except Exception as ex:  # e.g. the pool broke between two jobs
            self._pool = None
            fut = Future()
            fut.set_exception(ex)
        fut.add_done_callback(lambda f: self._finished(pending, f))

    def _finished(self, pending: _Pending, f: Future[dict[str, Any]]) -> None:
        job, kind = pending.job, pending.kind
        try:
            result, status = f.result(), "Succeeded"
        except BrokenProcessPool:
            log.error("%s %s: the job's process died; starting a new one", kind, job.id)
            result = {
                "error": "The job's process died (Vowpal Wabbit crashed on one of the "
                "policies, or the process ran out of memory). Other jobs are not affected."
            }
            status = "Failed"
            with self._lock:
                broken, self._pool = self._pool, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
        except Exception as ex:  # the job's failure is its result
            log.exception("%s %s failed", kind, job.id)
            result, status = {"error": str(ex) or type(ex).__name__}, "Failed"
        try:
            # Under the lock: close() waits for a result being stored, and once closed
            # (the store closes next) none is; the job stays Running in the store.
            with self._lock:
                if self._closed:
                    log.info("%s %s ended after shutdown; not stored", kind, job.id)
                else:
                    pending.done(JobRecord(job.id, job.created, status, job.request, result))
        except Exception:  # storing the result failed: the next job still runs
            log.exception("%s %s: the result could not be stored", kind, job.id)
        finally:
            if status == "Succeeded":
                pending.future.set_result(result)
            else:
                pending.future.set_exception(RuntimeError(result["error"]))
            with self._lock:
                self._running = None
                self._next()

    def close(self) -> None:
        """Stop: no job starts and no result is stored after this returns (the store
        may be closed next)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
