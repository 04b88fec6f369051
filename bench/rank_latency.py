"""Rank latency of a real server, with the trainer idle and with the trainer busy.

Starts ``banditloop serve`` in a subprocess (free port, temporary data dir, default loop
with ``rewardWaitTime`` PT1S), warms it up, then times sequential Rank calls from one
persistent ``httpx.Client`` (10 actions of 4 features each, a context of 5 features):

(a) idle: nothing else is going on; the trainer only learns the phase's own events
    (no rewards are sent, so each closes 1 s after its Rank with the default reward);
(b) busy: a backlog of ``--backlog`` closed, unlearned events is created, and the timed
    Ranks run while the trainer learns it.  That the trainer was busy is checked in the
    store: decisions with ``learned_in IS NOT NULL`` are counted in
    ``data_dir/banditloop.db`` before and after the phase.

How the backlog is made (``--backlog-via``):

* ``store`` (default): the decisions logged so far are copied, under new event IDs, into
  the store's ``decisions`` table in one transaction, all closing 1 s later, as if many
  Rank workers (or a restart) had left that much work for the one trainer.
* ``http``: a separate process posts the Ranks (no rewards) from ``--concurrency``
  connections, and each closes 1 s after its Rank.  On 2 cores such a Python flood
  reaches only a few hundred Ranks per second, and the trainer learns them as fast as
  they close, so little backlog is ever left: this mostly measures the latency right
  after a burst of concurrent traffic, which is why it is not the default.

This measures the latency of *sequential* requests only, client included (one Python
client on the same machine).  It is not a throughput benchmark: Python load generators
top out far below the server; use ``wrk`` for throughput.

    .venv/bin/python bench/rank_latency.py                       # about a minute
    .venv/bin/python bench/rank_latency.py --requests 20000 --backlog 500000
    .venv/bin/python bench/rank_latency.py --backlog-via http
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, print_table, server

TOPICS = ("politics", "sports", "music", "food", "finance", "health", "camping", "travel")
SOURCES = ("wire", "staff", "guest", "partner")


def rank_body(rng: random.Random, n_actions: int = 10) -> dict[str, Any]:
    """A Rank request: 5 context features, ``n_actions`` actions of 4 features each."""
    context = {
        "user": {"id": f"u{rng.randrange(10_000)}", "segment": rng.choice("abcde")},
        "timeOfDay": rng.choice(("morning", "afternoon", "evening", "night")),
        "device": rng.choice(("mobile", "desktop", "tablet")),
        "country": rng.choice(("US", "DE", "FR", "JP", "BR")),
    }
    actions = [
        {
            "id": f"article-{k}",
            "features": [
                {
                    "topic": TOPICS[k % len(TOPICS)],
                    "source": rng.choice(SOURCES),
                    "words": rng.randrange(200, 3000),
                    "ageHours": round(rng.random() * 72, 2),
                }
            ],
        }
        for k in range(n_actions)
    ]
    return {"contextFeatures": [context], "actions": actions}


@dataclass
class Phase:
    name: str
    latencies_ms: list[float]
    learned_before: int
    learned_after: int
    seconds: float


def learned(db: Path) -> int:
    """Decisions the trainer has learned (or skipped), read straight from the store."""
    with sqlite3.connect(db, timeout=30) as con:
        row = con.execute("SELECT count(*) FROM decisions WHERE learned_in IS NOT NULL")
        return int(row.fetchone()[0])


def decisions(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as con:
        return int(con.execute("SELECT count(*) FROM decisions").fetchone()[0])


def timed_ranks(client: httpx.Client, n: int, rng: random.Random) -> list[float]:
    """Latency in ms of ``n`` sequential Rank calls."""
    out: list[float] = []
    bodies = [rank_body(rng) for _ in range(n)]
    for body in bodies:
        t0 = time.perf_counter()
        resp = client.post("/rank", json=body)
        t1 = time.perf_counter()
        if resp.status_code != 201:
            raise RuntimeError(f"rank answered {resp.status_code}: {resp.text[:300]}")
        out.append((t1 - t0) * 1000)
    return out


def flood(api: str, n: int, concurrency: int, seed: int, result: Any) -> None:
    """Post ``n`` Ranks from ``concurrency`` connections (run in a separate process)."""

    async def go() -> None:
        rng = random.Random(seed)
        left = n
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=api, limits=limits, timeout=60) as client:

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    resp = await client.post("/rank", json=rank_body(rng))
                    resp.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    t0 = time.perf_counter()
    asyncio.run(go())
    result.put(time.perf_counter() - t0)


def flood_http(srv: Server, opts: argparse.Namespace) -> int:
    """Post the backlog from a separate process; returns the number of decisions after."""
    start = decisions(srv.db)
    print(f"posting {opts.backlog} ranks from {opts.concurrency} connections ...", flush=True)
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(
        target=flood, args=(srv.api, opts.backlog, opts.concurrency, opts.seed + 1, result)
    )
    proc.start()
    seconds = float(result.get())
    proc.join()
    total = decisions(srv.db)
    print(
        f"  posted {total - start} in {seconds:.1f} s ({(total - start) / seconds:.0f}/s)",
        flush=True,
    )
    return total


def flood_store(db: Path, n: int, close_in: float) -> int:
    """Copy logged decisions under new event IDs, unlearned, all closing ``close_in`` s later.

    Returns the number of decisions after.  Every column is copied as it is except
    ``seq`` (new), ``event_id`` (suffixed), ``ts`` / ``close_at`` and ``learned_in``
    (NULL), so the copies are the trainer's ordinary work.  They are written closing in
    an hour, then all set to close ``close_in`` s from then in one short UPDATE, so that
    the trainer does not start on them while they are still being written; this
    function returns when they are closed.
    """
    print(f"copying {n} decisions into the store as a backlog ...", flush=True)
    tag = f"-backlog-{time.time_ns()}-"
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        cur = con.execute("SELECT * FROM decisions ORDER BY seq")
        cols = [d[0] for d in cur.description]
        source = cur.fetchall()
        if not source:
            raise RuntimeError("no decisions to copy")
        keep = [c for c in cols if c != "seq"]
        at = {c: k for k, c in enumerate(cols)}
        later = time.time() + 3600
        marks = ",".join("?" * len(keep))
        insert = f"INSERT INTO decisions ({','.join(keep)}) VALUES ({marks})"
        for start in range(0, n, 10_000):
            rows = []
            for k in range(start, min(n, start + 10_000)):
                row = list(source[k % len(source)])
                row[at["event_id"]] = f"{row[at['event_id']]}{tag}{k}"
                row[at["ts"]] = row[at["close_at"]] = later
                row[at["learned_in"]] = None
                rows.append([row[at[c]] for c in keep])
            with con:
                con.executemany(insert, rows)
        close_at = time.time() + close_in
        with con:
            con.execute(
                "UPDATE decisions SET ts=?, close_at=? WHERE close_at=? AND learned_in IS NULL",
                (close_at - close_in, close_at, later),
            )
    time.sleep(max(0.0, close_at - time.time()))
    return decisions(db)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def run(opts: argparse.Namespace) -> list[Phase]:
    rng = random.Random(opts.seed)
    phases: list[Phase] = []
    with server('{"rewardWaitTime":"PT1S"}') as srv:
        print(
            f"server {srv.url}, data dir {srv.data_dir}, {os.cpu_count()} CPUs, load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            flush=True,
        )
        with httpx.Client(base_url=srv.api, timeout=60) as client:
            timed_ranks(client, opts.warmup, rng)
            time.sleep(2.5)  # let the warm-up events close and be learned

            before = learned(srv.db)
            t0 = time.perf_counter()
            lat = timed_ranks(client, opts.requests, rng)
            phases.append(Phase("idle", lat, before, learned(srv.db), time.perf_counter() - t0))
            time.sleep(2.5)

            if opts.backlog_via == "http":
                total = flood_http(srv, opts)
            else:
                total = flood_store(srv.db, opts.backlog, close_in=1.0)
            before = learned(srv.db)
            print(f"  learned so far {before} of {total} decisions", flush=True)

            t0 = time.perf_counter()
            lat = []
            while len(lat) < opts.requests:
                lat += timed_ranks(client, min(opts.check_every, opts.requests - len(lat)), rng)
                if opts.while_busy and learned(srv.db) >= total:
                    break
            phases.append(Phase("busy", lat, before, learned(srv.db), time.perf_counter() - t0))
            print(
                f"  backlog left after the busy phase: {decisions(srv.db) - learned(srv.db)}"
                " (including the phase's own events)",
                flush=True,
            )
    return phases


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="timed ranks per phase")
    ap.add_argument("--warmup", type=int, default=500, help="untimed ranks first")
    ap.add_argument(
        "--backlog", type=int, default=100_000, help="size of the backlog made before (b)"
    )
    ap.add_argument(
        "--backlog-via",
        choices=("store", "http"),
        default="store",
        help="how to make the backlog for (b) (default: store; see above)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="connections posting the backlog with --backlog-via http",
    )
    ap.add_argument(
        "--check-every",
        type=int,
        default=50,
        help="in (b), count learned events every this many ranks (default 50)",
    )
    ap.add_argument(
        "--while-busy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop phase (b) once the backlog is learned (default: yes)",
    )
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args(argv)

    phases = run(opts)
    idle_stats: dict[str, float] = {}
    headers = [
        "phase",
        "ranks",
        "median ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "ranks/s",
        "learned during phase",
        "learned/s",
    ]
    rows: list[list[str]] = []
    for ph in phases:
        s = sorted(ph.latencies_ms)
        stats = {
            "median": statistics.median(s),
            "p90": percentile(s, 0.90),
            "p99": percentile(s, 0.99),
            "max": s[-1],
        }
        if ph.name == "idle":
            idle_stats = stats
        rows.append(
            [
                ph.name,
                str(len(s)),
                *(f"{v:.2f}" for v in stats.values()),
                f"{len(s) / ph.seconds:.0f}",
                str(ph.learned_after - ph.learned_before),
                f"{(ph.learned_after - ph.learned_before) / ph.seconds:.0f}",
            ]
        )
        if ph.name == "busy" and idle_stats:
            rows.append(
                [
                    "busy / idle",
                    "",
                    *(f"{stats[k] / idle_stats[k]:.2f}x" for k in stats),
                    "",
                    "",
                    "",
                ]
            )
    print_table(headers, rows)


if __name__ == "__main__":
    main()
