"""The PostgreSQL store under ``wrk``, against SQLite with the same worker count, same run.

Needs ``wrk`` and a PostgreSQL server (``--pg``, default ``$BANDITLOOP_TEST_POSTGRES`` or
``postgresql://postgres@127.0.0.1:5432/test``). Every server gets a schema of its own
(``?options=-csearch_path%3D<schema>`` in its store URL), dropped at the end.

1. **Throughput**, for each ``--workers`` count (1, 2, 4): ``banditloop serve --workers N
   --store URL`` (N rank processes + 1 trainer process) and ``serve --workers N
   --data-dir DIR`` (SQLite, ``synchronous=FULL``), each fresh: 64 connections of Rank
   ("ranks only"), then Rank with a second wrk posting Rewards for the ranked events at
   the ranks-only rate ("ranks + rewards"); bench/throughput.py's scripts and helpers.
   The ratio column divides PostgreSQL by SQLite at the same worker count and load.
   CPU per request: the server's processes (bench/throughput.py's ``load`` measures it,
   where it does) and, for PostgreSQL, its backends (found by ``application_name``,
   which the server's libpq takes from ``PGAPPNAME``; read from /proc, so only when
   PostgreSQL runs on this machine).
2. **Backlog, trainer and writes per event**, on both stores, in a loop whose
   ``rewardWaitTime`` is PT2H (so that rewards arrive inside the window and close their
   events at once, as ``earliest`` aggregation does): ``serve --workers 2 --no-trainer``
   ranks twice ``--backlog`` events (wrk runs of 5 s until there are enough), then every
   second event is rewarded (a wrk script posting one Reward per event ID, no concurrent
   ranks); the server stops; ``serve`` (one process, trainer on, ``trainer_batch`` 1024
   as on a trainer-only node) starts, and is timed from its first learned event until
   no closed event is left unlearned (the unrewarded half stays open).  On PostgreSQL,
   each phase also counts rows inserted/updated/deleted (``pg_stat_user_tables`` of the
   run's schema, read after the server stopped, so that its backends had flushed their
   counters), write transactions (distinct ``xmin`` of the rows the phase wrote: exact,
   and blind to other users of the server), WAL bytes (``pg_current_wal_lsn``:
   server-wide, so other users' writes are included), the CPU time of the server's
   PostgreSQL backends and the size on disk per event.
   The tables are ANALYZEd between phases, as autovacuum soon does on a live system;
   ``--cold`` skips that, to see a fresh install (docs/deployment.md: until the first
   ANALYZE, the planner picks a slow plan for the trainer's and the rewards' UPDATEs).

    .venv/bin/python bench/postgres.py --quick          # 5 s runs, 10,000-event backlog
    .venv/bin/python bench/postgres.py                  # 10 s runs, 30,000-event backlog
    .venv/bin/python bench/postgres.py --skip throughput --cold
    .venv/bin/python bench/postgres.py --workers 2 --skip backlog

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import free_port, print_table  # noqa: E402
from throughput import (  # noqa: E402
    BIN,
    LOOP_CONFIG,
    V1,
    Target,
    Wrk,
    WrkResult,
    _wait_up,
    fmt,
    load,
    warm,
)

PG_URL = os.environ.get("BANDITLOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
LOOP = "default"
BACKLOG_LOOP = '{"rewardWaitTime":"PT2H","modelExportFrequency":"PT1S"}'

# One Reward per line of a file of paths; each wrk thread takes every n-th line, then
# sends /healthz until it is stopped (wrk runs for its -d whatever the script does).
REWARD_FILE_LUA = """
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  local threads = tonumber(args[2]); paths = {}; i = 0
  local k = 0
  for line in io.lines(args[1]) do
    if k % threads == tid - 1 then paths[#paths + 1] = line end
    k = k + 1
  end
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  i = i + 1
  if i > #paths then return wrk.format("GET", "/healthz") end
  return wrk.format("POST", paths[i], nil, '{"value":1.0}')
end
"""


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- PostgreSQL ----------------------------------------------------------------------


class Postgres:
    """Schemas of this run, and the statistics read from the server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.run = uuid.uuid4().hex[:8]
        self.schemas: list[str] = []
        self.conn = psycopg.connect(url, autocommit=True)

    def new_schema(self, label: str) -> tuple[str, str]:
        """(schema, store URL) of a new empty schema."""
        schema = f"bench_{self.run}_{label}"
        self.conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        sep = "&" if "?" in self.url else "?"
        return schema, f"{self.url}{sep}options=-csearch_path%3D{schema}"

    def drop_all(self) -> None:
        for schema in self.schemas:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.conn.close()

    def one(self, query: str, *args: Any) -> Any:
        row = self.conn.execute(query, args).fetchone()
        assert row is not None
        return row[0]

    def settings(self) -> str:
        names = ["server_version", "shared_buffers", "synchronous_commit", "fsync"]
        rows = self.conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", (names,)
        ).fetchall()
        return ", ".join(f"{n}={v}" for n, v in rows)

    def wal(self) -> int:
        return int(self.one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))

    def tables(self, schema: str) -> dict[str, tuple[int, int, int, int]]:
        """Rows inserted, updated (of which HOT), deleted, per table of ``schema``."""
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = self.conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname=%s",
            (schema,),
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}

    def xacts(self, schema: str, table: str, where: str = "TRUE") -> int:
        """Distinct transactions that wrote the rows now in ``table``."""
        query = f"SELECT count(DISTINCT xmin::text) FROM {schema}.{table} WHERE {where}"
        return int(self.one(query))

    def analyze(self, schema: str) -> None:
        """What autovacuum does within a minute or so of a table's first rows."""
        for table in ("decisions", "rewards", "activations", "models"):
            self.conn.execute(f"ANALYZE {schema}.{table}")

    def backend_cpu(self, app: str) -> dict[int, float]:
        """CPU seconds used so far by each backend of sessions named ``app`` (read from
        /proc: PostgreSQL must run on this machine, else nothing is counted)."""
        pids = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
        out = {}
        for (pid,) in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def size(self, schema: str, table: str) -> int:
        return int(self.one("SELECT pg_total_relation_size(%s)", f"{schema}.{table}"))


# -- servers -------------------------------------------------------------------------


@contextlib.contextmanager
def serve(
    name: str,
    store: str,
    workers: int,
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_workers: int | None = None,
) -> Iterator[Target]:
    """``banditloop serve`` on a free port: ``store`` is a PostgreSQL URL or a data dir."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {**os.environ, "BANDITLOOP_LOOP": LOOP_CONFIG, **(env or {})}
    cmd = [str(BIN / "banditloop"), "serve", "--port", str(port), "--log-level", "warning"]
    if workers:
        cmd += ["--workers", str(workers)]
    sqlite = not store.startswith("postgresql://")
    cmd += ["--data-dir", store] if sqlite else ["--store", store, "--data-dir", str(cwd)]
    # a session of its own: what the server leaves behind can be stopped as a group
    proc = subprocess.Popen([*cmd, *args], env=environ, cwd=cwd, start_new_session=True)
    try:
        _wait_up(proc, url, ready_workers or max(workers, 1))
        yield Target(name, proc, url, Path(store) if sqlite else None)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_group(proc.pid)


def stop_group(pgid: int) -> None:
    """Stop what is left of a server's process group: whatever outlived the supervisor
    (with ``serve --workers 1`` uvicorn re-raises SIGTERM in the supervisor, which dies
    before it stops its trainer process)."""
    deadline = time.monotonic() + 3  # multiprocessing's resource tracker exits by itself
    while time.monotonic() < deadline and [p for p in group_members(pgid) if not zombie(p)]:
        time.sleep(0.2)
    left = [p for p in group_members(pgid) if not zombie(p)]
    if not left:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        say(f"  ({len(left)} processes of the server outlived its supervisor: SIGTERM sent)")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not [p for p in group_members(pgid) if not zombie(p)]:
                return
            time.sleep(0.2)
        os.killpg(pgid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
    return pids


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def sqlite_count(db: Path, query: str) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        return int(con.execute(query).fetchone()[0])


class Count:
    """``SELECT count(*)`` on either store, from this process."""

    def __init__(self, pg: Postgres | None, schema: str | None, db: Path | None) -> None:
        self.pg, self.schema, self.db = pg, schema, db

    def __call__(self, what: str, where: str = "TRUE") -> int:
        if self.db is not None:
            return sqlite_count(self.db, f"SELECT count(*) FROM {what} WHERE {where}")
        assert self.pg is not None
        return int(self.pg.one(f"SELECT count(*) FROM {self.schema}.{what} WHERE {where}"))

    def event_ids(self, table: str = "decisions") -> list[str]:
        query = f"SELECT event_id FROM {{}}{table} WHERE loop='default' ORDER BY seq"
        if self.db is not None:
            with contextlib.closing(sqlite3.connect(self.db, timeout=60)) as con:
                return [r[0] for r in con.execute(query.format(""))]
        assert self.pg is not None
        rows = self.pg.conn.execute(query.format(f"{self.schema}.")).fetchall()
        return [r[0] for r in rows]


# -- 1. throughput -------------------------------------------------------------------


@dataclass
class Row:
    workers: int
    store: str
    setup: str
    rank: WrkResult
    rewards: WrkResult | None = None
    db_cpu_us: float = 0.0  # PostgreSQL backends' CPU per request served


def measured(
    pg: Postgres,
    app: str | None,
    tgt: Target,
    wrk: Wrk,
    opts: argparse.Namespace,
    rate: float = 0.0,
    latency: float = 0.0,
) -> tuple[WrkResult, WrkResult | None, float]:
    """bench/throughput.py's ``load``, and the CPU time of the server's PostgreSQL
    backends (``app``: their application_name) per request served."""
    before = pg.backend_cpu(app) if app else {}
    rank, rew = load(tgt, wrk, opts, rate=rate, latency=latency)
    if not app:
        return rank, rew, 0.0
    after = pg.backend_cpu(app)
    spent = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return rank, rew, spent * 1e6 / max(1, rank.requests + (rew.requests if rew else 0))


def throughput(
    pg: Postgres, wrk: Wrk, opts: argparse.Namespace, tmp: Path, loads: list[float]
) -> list[Row]:
    rows: list[Row] = []
    for k, n in enumerate(opts.worker_counts):
        stores = ["sqlite", "postgresql"]
        if k % 2:  # alternate the order, so that a drifting machine favours neither
            stores.reverse()
        for kind in stores:
            app, env = None, {}
            if kind == "sqlite":
                store = str(tmp / f"sqlite-w{n}")
            else:
                app, store = pg.new_schema(f"w{n}")
                env = {"PGAPPNAME": app}  # libpq names the server's sessions after the schema
            say(f"[throughput] {kind}, --workers {n}: starting (load average {loadavg()})")
            with serve(kind, store, n, tmp, env=env) as tgt:
                warm(tgt, wrk)
                alone, _, db = measured(pg, app, tgt, wrk, opts)
                rows.append(Row(n, kind, "ranks only", alone, db_cpu_us=db))
                say(f"  ranks only: {alone.rps:.0f}/s, p50 {alone.p50:.1f}, p99 {alone.p99:.0f} ms")
                rank, rew, db = measured(pg, app, tgt, wrk, opts, alone.rps, alone.p50)
                rows.append(Row(n, kind, "ranks + rewards", rank, rew, db))
                say(f"  ranks + rewards: {rank.rps:.0f}/s, rewards {rew.rps if rew else 0:.0f}/s")
            loads.append(os.getloadavg()[0])
    return rows


def throughput_table(rows: list[Row]) -> None:
    base = {(r.workers, r.setup): r for r in rows if r.store == "sqlite"}
    table = []
    for r in rows:
        b = base.get((r.workers, r.setup))
        vs_rank = vs_rew = ""
        if r.store == "postgresql" and b is not None:
            vs_rank = f"{r.rank.rps / b.rank.rps:.2f}x"
            if r.rewards and b.rewards and b.rewards.rps:
                vs_rew = f"{r.rewards.rps / b.rewards.rps:.2f}x"
        rew = r.rewards
        errors = r.rank.errors + (rew.errors if rew else 0)
        cpu = getattr(r.rank, "cpu_us", 0.0)  # bench/throughput.py's load() measures it
        table.append(
            [str(r.workers), r.store, r.setup, f"{r.rank.rps:.0f}", fmt(r.rank.p50),
             fmt(r.rank.p99), f"{rew.rps:.0f}" if rew else "", fmt(rew.p50) if rew else "",
             fmt(rew.p99) if rew else "", str(errors), f"{cpu:.0f}" if cpu else "",
             f"{r.db_cpu_us:.0f}" if r.db_cpu_us else "", vs_rank, vs_rew]
        )  # fmt: skip
    print_table(
        ["workers", "store", "load", "ranks/s", "p50 ms", "p99 ms", "rewards/s", "rew p50",
         "rew p99", "errors", "server CPU µs/req", "PostgreSQL CPU µs/req", "ranks vs sqlite",
         "rewards vs sqlite"],
        table,
    )  # fmt: skip
    if any(getattr(r.rank, "cpu_us", 0.0) for r in rows):
        print(
            "* server CPU µs/req: CPU time of the server's processes (workers and trainer) "
            "per request answered (SQLite's work is in it; PostgreSQL's is not)"
        )
    if any(r.db_cpu_us for r in rows):
        print(
            "* PostgreSQL CPU µs/req: CPU time of the server's PostgreSQL backends (its "
            "writer and read connections, by application_name) per request answered"
        )


# -- 2. backlog, trainer, writes per event ---------------------------------------------


@dataclass
class Phase:
    events: int = 0
    seconds: float = 0.0  # what the phase's rate is computed over
    wall: float = 0.0  # from the counters before to the counters after (server start and stop)
    db_cpu_us: float = 0.0  # CPU of the server's PostgreSQL backends per event of the phase
    rows: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    xacts: int = 0
    wal: int = 0


@dataclass
class Backlog:
    store: str
    ranks: Phase
    rewards: Phase
    train: Phase
    rank_result: WrkResult | None = None
    rank_requests: int = 0
    saves: int = 0
    sizes: dict[str, int] = field(default_factory=dict)


def _delta(
    after: dict[str, tuple[int, int, int, int]], before: dict[str, tuple[int, int, int, int]]
) -> dict[str, tuple[int, int, int, int]]:
    zero = (0, 0, 0, 0)
    out = {}
    for table, (i, u, h, d) in after.items():
        i0, u0, h0, d0 = before.get(table, zero)
        if (i - i0, u - u0, h - h0, d - d0) != zero:
            out[table] = (i - i0, u - u0, h - h0, d - d0)
    return out


def reward_all(wrk: Wrk, url: str, ids: list[str], paths: Path, count: Count) -> float:
    """Post one Reward per event of ``ids`` (``paths`` lists their paths); seconds until
    the last of those wrk sent was stored.  wrk may drop a request it generated for a
    connection that failed (one in a few thousand here): those are posted again at the end."""
    script = paths.with_suffix(".lua")
    script.write_text(REWARD_FILE_LUA)
    threads = wrk.opts.threads
    cmd = ["wrk", "-t", str(threads), "-c", str(wrk.opts.connections), "-d", "3600s",
           "--timeout", "10s", "-s", str(script), url, "--", str(paths), str(threads)]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    seen, since = -1, t0  # since: when the number of stored rewards last grew
    try:
        while proc.poll() is None:
            stored = count("rewards")
            if stored != seen:
                seen, since = stored, time.monotonic()
            if stored >= len(ids) or time.monotonic() - since > 3:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait()
    missing = set(ids) - set(count.event_ids("rewards"))
    if missing:
        say(f"  {len(missing)} rewards wrk did not send: posting them again")
        with httpx.Client(base_url=url, timeout=30) as client:
            for eid in missing:
                r = client.post(f"{V1}/events/{eid}/reward", json={"value": 1.0})
                assert r.status_code == 204, r.text
    return since - t0


def backlog(
    kind: str, pg: Postgres, wrk: Wrk, opts: argparse.Namespace, tmp: Path, loads: list[float]
) -> Backlog:
    schema = None
    if kind == "sqlite":
        store = str(tmp / "sqlite-backlog")
        count = Count(None, None, Path(store) / "banditloop.db")
    else:
        schema, store = pg.new_schema("backlog")
        count = Count(pg, schema, None)
    res = Backlog(kind, Phase(), Phase(), Phase())
    # rewards arrive inside the window, so that they close their events early (earliest)
    env = {"BANDITLOOP_LOOP": BACKLOG_LOOP}
    if schema:
        env["PGAPPNAME"] = schema  # the backends whose CPU is counted

    def db_cpu() -> dict[int, float]:
        return pg.backend_cpu(schema) if schema else {}

    def db_us(before: dict[int, float], n: int) -> float:
        after = db_cpu()
        return sum(t - before.get(p, 0.0) for p, t in after.items()) * 1e6 / max(n, 1)

    def snap() -> tuple[dict[str, tuple[int, int, int, int]], int]:
        return (pg.tables(schema), pg.wal()) if schema else ({}, 0)

    # ranks, no trainer anywhere; counters from before start-up to after shut-down
    say(f"[backlog] {kind}: ranking {2 * opts.backlog} events, --workers 2 --no-trainer")
    stats0, wal0 = snap()
    w0 = time.monotonic()
    with serve(kind, store, 2, tmp, "--no-trainer", env=env) as tgt:
        warm(tgt, wrk)  # warm-up events are part of the backlog
        t0, cpu0 = time.monotonic(), db_cpu()
        results = [wrk.ranks(tgt.url, uuid.uuid4().hex[:10], 5)[0]]
        while count("decisions") < 2 * opts.backlog:
            results.append(wrk.ranks(tgt.url, uuid.uuid4().hex[:10], 5)[0])
        res.ranks.seconds = time.monotonic() - t0
        res.rank_result = max(results, key=lambda r: r.rps)  # the 5 s run least disturbed
        res.rank_requests = sum(r.requests for r in results)
        res.ranks.db_cpu_us = db_us(cpu0, res.rank_requests)
        loads.append(os.getloadavg()[0])
    res.ranks.events = count("decisions")  # warm-up included: it is in the counters too
    res.ranks.wall = time.monotonic() - w0
    say(f"  {res.ranks.events} events ranked ({res.rank_requests / res.ranks.seconds:.0f}/s)")
    if schema:
        stats1, wal1 = snap()
        res.ranks.rows, res.ranks.wal = _delta(stats1, stats0), wal1 - wal0
        res.ranks.xacts = pg.xacts(schema, "decisions")  # only inserts so far: one xmin per commit
        if not opts.cold:
            pg.analyze(schema)
    ids = count.event_ids()[::2]
    paths = tmp / f"rewards-{kind}.txt"
    paths.write_text("".join(f"{V1}/events/{eid}/reward\n" for eid in ids))

    # rewards for every second event, no concurrent ranks
    say(f"[backlog] {kind}: rewarding {len(ids)} events")
    stats1, wal1 = snap()
    w0 = time.monotonic()
    with serve(kind, store, 2, tmp, "--no-trainer", env=env) as tgt:
        cpu0 = db_cpu()
        res.rewards.seconds = reward_all(wrk, tgt.url, ids, paths, count)
        res.rewards.db_cpu_us = db_us(cpu0, len(ids))
    res.rewards.events = count("rewards")
    res.rewards.wall = time.monotonic() - w0
    say(f"  {res.rewards.events} rewards in {res.rewards.seconds:.1f} s")
    if schema:
        stats2, wal2 = snap()
        res.rewards.rows, res.rewards.wal = _delta(stats2, stats1), wal2 - wal1
        res.rewards.xacts = pg.xacts(schema, "rewards")  # each reward commit wrote rewards rows
        if not opts.cold:
            pg.analyze(schema)

    # the trainer learns the backlog: the rewarded events (the others close in 2 hours)
    closed = f"learned_in IS NULL AND close_at < {time.time()}"
    open_ = count("decisions", closed)
    say(f"[backlog] {kind}: training on {open_} events (serve, trainer_batch 1024)")
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the SQLite file may not be readable yet
                samples.append((time.monotonic(), count("decisions", closed)))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    stats2, wal2 = snap()
    w0 = time.monotonic()
    watcher.start()
    try:
        with serve(kind, store, 0, tmp, env={**env, "BANDITLOOP_TRAINER_BATCH": "1024"}):
            deadline = time.monotonic() + opts.train_timeout
            while (not samples or samples[-1][1] > 0) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.5)  # the model save that follows the last step (PT1S)
            res.train.db_cpu_us = db_us({}, open_)  # the backends began with the server
            loads.append(os.getloadavg()[0])
    finally:
        stop.set()
        watcher.join()
    res.train.wall = time.monotonic() - w0
    begun = max((t for t, left in samples if left == open_), default=samples[0][0])
    done = min((t for t, left in samples if left == 0), default=samples[-1][0])
    learned = open_ - min(left for _, left in samples)
    res.train.events, res.train.seconds = learned, max(done - begun, 1e-3)
    say(f"  {learned} events learned in {res.train.seconds:.2f} s")
    if schema:
        stats3, wal3 = snap()
        res.train.rows, res.train.wal = _delta(stats3, stats2), wal3 - wal2
        res.train.xacts = pg.xacts(schema, "decisions", "learned_in IS NOT NULL")  # their marks
        res.saves = int(pg.one(f"SELECT coalesce(max(number), 0) FROM {schema}.models"))
        for table in ("decisions", "rewards", "models"):
            res.sizes[table] = pg.size(schema, table)
    return res


def per(x: float, n: int) -> str:
    return f"{x / n:.2f}" if n else ""


def backlog_tables(results: list[Backlog], wal_idle: float) -> None:
    by = {r.store: r for r in results}
    sq = by.get("sqlite")
    rows = []
    for r in results:
        rank_rate = r.rank_requests / r.ranks.seconds
        train_rate = r.train.events / r.train.seconds
        ratio = ""
        if r.store == "postgresql" and sq is not None:
            ratio = f"{train_rate / (sq.train.events / sq.train.seconds):.2f}x"
        best = r.rank_result
        rows.append(
            [r.store, f"{r.ranks.events}", f"{rank_rate:.0f}",
             f"{best.rps:.0f} / {fmt(best.p50)} / {fmt(best.p99)}" if best else "",
             f"{r.rewards.events / r.rewards.seconds:.0f}", f"{r.train.events}",
             f"{r.train.seconds:.2f}", f"{train_rate:.0f}", ratio]
        )  # fmt: skip
    print_table(
        ["store", "backlog", "ranks/s (all runs)", "best 5 s run: ranks/s / p50 / p99 ms",
         "rewards/s", "learned", "train s", "trainer events/s", "trainer vs sqlite"],
        rows,
    )  # fmt: skip
    pgr = by.get("postgresql")
    if pgr is None:
        return
    print()
    table = []
    for what, ph in (("Rank", pgr.ranks), ("Reward", pgr.rewards), ("learned event", pgr.train)):
        parts = []
        for name, (ins, upd, hot, dele) in sorted(ph.rows.items()):
            bits = [("+", ins), ("~", upd), ("HOT ", hot), ("-", dele)]
            parts.append(f"{name} " + " ".join(f"{m}{per(v, ph.events)}" for m, v in bits if v))
        inserted = sum(v[0] for v in ph.rows.values())
        updated = sum(v[1] for v in ph.rows.values())
        wal_net = max(0.0, ph.wal - wal_idle * ph.wall)
        table.append(
            [what, str(ph.events), per(inserted, ph.events), per(updated, ph.events),
             f"{ph.xacts}", f"{ph.events / ph.xacts:.1f}" if ph.xacts else "",
             f"{ph.wal / ph.events:.0f}" if ph.events else "",
             f"{wal_net / ph.events:.0f}" if ph.events else "",
             f"{ph.db_cpu_us:.0f}" if ph.db_cpu_us else "", "; ".join(parts)]
        )  # fmt: skip
    print_table(
        ["per", "events", "rows ins", "rows upd", "write xacts", "events/xact", "WAL B",
         "WAL B - idle", "PostgreSQL CPU µs", "by table (+ins ~upd -del)"],
        table,
    )  # fmt: skip
    n = pgr.ranks.events
    sizes = ", ".join(f"{t} {b / 1e6:.1f} MB" for t, b in pgr.sizes.items())
    print(
        f"* PostgreSQL on disk after the run (tables + indexes + TOAST): {sizes}; "
        f"{(pgr.sizes['decisions'] + pgr.sizes['rewards']) / n:.0f} bytes per event "
        f"({n} decisions, {pgr.rewards.events} rewards)"
    )
    print(
        f"* trainer: {pgr.train.xacts} mark transactions for {pgr.train.events} events "
        f"({pgr.train.events / max(pgr.train.xacts, 1):.0f} per transaction), "
        f"{pgr.saves} model saves"
    )
    print(f"* WAL written by the whole server while idle before the run: {wal_idle:.0f} B/s")


# -- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--pg", default=PG_URL, help="PostgreSQL URL (a schema per server is made)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    ap.add_argument("--quick", action="store_true", help="5 s runs, a 10,000-event backlog")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--workers", default="1,2,4", help="rank process counts to compare")
    ap.add_argument(
        "--backlog", type=int, default=30_000, help="rewarded events the trainer learns"
    )
    ap.add_argument("--train-timeout", type=float, default=300, help="seconds")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="no ANALYZE between the backlog's phases: tables as new as a fresh install's",
    )
    ap.add_argument("--skip", default="", help="comma list of: throughput, backlog")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.duration = 5
        opts.backlog = min(opts.backlog, 10_000)
    opts.worker_counts = [int(w) for w in opts.workers.split(",") if w]
    skip = set(filter(None, opts.skip.split(",")))
    if shutil.which("wrk") is None:
        say("wrk is not installed: apt-get install -y wrk  (or: make bench, as root)")
        return 2
    try:
        pg = Postgres(opts.pg)
    except psycopg.OperationalError as ex:
        say(f"PostgreSQL is not reachable at {opts.pg}: {ex}")
        return 2
    print(f"{os.cpu_count()} CPUs, load average {loadavg()}; PostgreSQL: {pg.settings()}")
    tmp = Path(tempfile.mkdtemp(prefix="banditloop-pgbench-"))
    loads = [os.getloadavg()[0]]
    rows: list[Row] = []
    results: list[Backlog] = []
    try:
        w0 = pg.wal()
        time.sleep(3)
        wal_idle = (pg.wal() - w0) / 3
        wrk = Wrk(tmp, opts)
        if "throughput" not in skip:
            rows = throughput(pg, wrk, opts, tmp, loads)
        if "backlog" not in skip:
            for kind in ("sqlite", "postgresql"):
                results.append(backlog(kind, pg, wrk, opts, tmp, loads))
    finally:
        pg.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{opts.connections} connections, {opts.duration:g} s per run, wrk {opts.threads} "
        f"threads; load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}"
    )
    if rows:
        throughput_table(rows)
    if results:
        print()
        backlog_tables(results, wal_idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
