"""Rank throughput and latency under ``wrk``, against two baselines measured in the same run.

Needs ``wrk`` (``apt-get install -y wrk``); installs nothing itself (``make bench`` does).
Every target is served by uvicorn with the same worker count (1, then 2):

* **fastapi**: a bare FastAPI endpoint validating the same body with banditloop's
  ``RankRequest`` and returning a canned answer (bench/_baselines.py);
* **asgi+vw**: a bare ASGI endpoint: orjson, ``banditloop.ranking.plan``, VW predict;
* **banditloop**: ``banditloop serve --workers N`` (durable logging: SQLite,
  ``synchronous=FULL``), first with ranks only, then with rewards flowing at the
  rate the ranks-only run reached (a second wrk posting rewards for the events the
  first one ranks: the rank script sets ``eventId``, the reward script follows it).

wrk posts one Rank body (10 actions of 20 features, a context of 10) from
``--connections`` connections for ``--duration`` seconds per run, after a short
warm-up.  Then, on ``--workers 2``:

* rank load while the trainer learns a backlog at full speed (``--backlog`` closed
  decisions copied into the store, as bench/rank_latency.py does), with the trainer's
  rate from the store (events joined and learned per second), under load and alone;
* reward-to-model lag: a new loop (``modelExportFrequency`` PT1S); for a fixed
  context, Rank until the action the model puts first is chosen, reward it -1, and
  time until Ranks from every worker (new connections; the worker is known by its
  request-id prefix) no longer put it first;
* store growth: rank load on a nearly empty log, then with ``--events`` learned
  decisions (half of them rewarded) written into SQLite with ``executemany``
  while the server is stopped.

    .venv/bin/python bench/throughput.py                  # about 8 minutes
    .venv/bin/python bench/throughput.py --quick          # 5 s runs, 200k events
    .venv/bin/python bench/throughput.py --events 10000000   # the 10M store run
    .venv/bin/python bench/throughput.py --profile /tmp/worker.txt  # + py-spy
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import free_port, print_table  # noqa: E402
from rank_latency import flood_store  # noqa: E402

BIN = Path(sys.executable).parent
V1 = "/personalizer/v1.0"
LOOP_CONFIG = '{"rewardWaitTime":"PT1S","modelExportFrequency":"PT1S"}'

#: A Rank per request, with a unique eventId. With a period (args[4], ms per request of
#: this thread; 0: as fast as possible) the thread paces itself: request k starts k periods
#: after the first, whatever the answers took (wrk's delay(), with LuaJIT's clock), so
#: the offered rate does not fall when the server slows down: open loop, while there are
#: connections free. done() prints the percentiles wrk's --latency does not (p99.9).
RANK_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bl_timespec;
int clock_gettime(int clk, bl_timespec *ts);
]]
local ts = ffi.new("bl_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  tag = args[1]; path = args[3]; counter = 0; period = tonumber(args[4] or "0")
  start = nil; slot = 0
  local f = io.open(args[2], "rb"); rest = f:read("*a"); f:close()
  wrk.headers["Content-Type"] = "application/json"
end
function delay()
  if period <= 0 then return 0 end
  local t = now_ms()
  if start == nil then start = t end
  slot = slot + 1  -- each request its own start time, though connections ask at once
  local due = start + slot * period
  if due <= t then return 0 end
  return math.floor(due - t)
end
function request()
  counter = counter + 1
  local body = '{"eventId":"' .. tag .. "-" .. tid .. "-" .. counter .. '",' .. rest
  return wrk.format("POST", path, nil, body)
end
function done(summary, latency, requests)
  for _, p in ipairs({50, 99, 99.9}) do
    io.write(string.format("PCT %g %d\\n", p, latency:percentile(p)))
  end
end
"""

REWARD_LUA = """
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  tag = args[1]; prefix = args[2]; pause = tonumber(args[3]); counter = 0
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local path = prefix .. tag .. "-" .. tid .. "-" .. counter .. "/reward"
  return wrk.format("POST", path, nil, '{"value":1.0}')
end
function delay() return pause end
"""


def rank_body(seed: int = 0) -> dict[str, Any]:
    """10 actions of 20 features each, a context of 10 features."""
    rng = random.Random(seed)
    context = {
        "user": {f"f{k}": f"v{rng.randrange(50)}" for k in range(6)},
        "device": "mobile",
        "timeOfDay": "evening",
        "country": "DE",
        "visits": 12,
    }
    actions = []
    for a in range(10):
        feats: dict[str, Any] = {f"tag{k}": f"t{rng.randrange(100)}" for k in range(12)}
        feats.update({f"num{k}": round(rng.random() * 10, 3) for k in range(8)})
        actions.append({"id": f"article-{a}", "features": [feats]})
    return {"contextFeatures": [context], "actions": actions}


# -- wrk ------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50: float  # ms
    p99: float
    requests: int
    errors: int  # socket errors and non-2xx answers
    cpu_us: float = 0.0  # CPU time of the target's processes per request served (ranks+rewards)
    p999: float = 0.0  # ms (the rank script's done() prints it)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    exact = {p: int(us) / 1000 for p, us in re.findall(r"^PCT (\S+) (\d+)$", out, re.M)}
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50=_ms(pct["50"]),
        p99=_ms(pct["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        errors=errors + (int(non2xx.group(1)) if non2xx else 0),
        p999=exact.get("99.9", 0.0),
    )


class Wrk:
    def __init__(self, tmp: Path, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.rank_lua = tmp / "rank.lua"
        self.rank_lua.write_text(RANK_LUA)
        self.reward_lua = tmp / "reward.lua"
        self.reward_lua.write_text(REWARD_LUA)
        self.rest = tmp / "body.json"
        self.rest.write_bytes(orjson.dumps(rank_body())[1:])  # after '{': eventId goes first

    def _cmd(
        self, url: str, script: Path, conns: int, seconds: float, args: list[str]
    ) -> list[str]:
        threads = min(self.opts.threads, conns)
        return [
            "wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds:g}s", "--timeout",
            "10s", "--latency", "-s", str(script), url, "--", *args,
        ]  # fmt: skip

    def ranks(
        self,
        url: str,
        tag: str,
        seconds: float,
        reward_rate: float = 0.0,
        latency: float = 0.0,
        paced: float = 0.0,
    ) -> tuple[WrkResult, WrkResult | None]:
        """Rank load, as fast as the connections go or, with ``paced``, offered at that
        rate (requests/s); with ``reward_rate``, a second wrk rewards the ranked events."""
        conns = self.opts.connections
        period = 0.0
        if paced > 0:
            # connections for 100 ms of requests: enough to keep the offered rate while
            # answers take long, and never fewer than the threads
            conns = max(self.opts.threads, math.ceil(paced * 0.1))
            period = min(self.opts.threads, conns) * 1000 / paced  # ms per request, per thread
        args = [tag, str(self.rest), V1 + "/rank", f"{period:.4f}"]
        cmd = self._cmd(url, self.rank_lua, conns, seconds, args)
        rewards = None
        if reward_rate > 0:
            # enough connections to reach the rate although each reward waits ``latency``
            # (ms, the ranks-only p50) for its answer, then ~10 ms between requests
            conns = max(self.opts.threads, math.ceil(reward_rate * (latency + 10) / 1000))
            pause = max(0, round(conns * 1000 / reward_rate - latency))
            rcmd = self._cmd(
                url, self.reward_lua, conns, seconds, [tag, V1 + "/events/", str(pause)]
            )
            rewards = subprocess.Popen(rcmd, stdout=subprocess.PIPE, text=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rank = parse_wrk(out)
        if rewards is None:
            return rank, None
        rout, _ = rewards.communicate()
        return rank, parse_wrk(rout)


# -- targets --------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path | None = None

    @property
    def db(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "banditloop.db"

    def workers(self) -> list[int]:
        """Worker pids of a banditloop server (children holding the listening socket)."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(c) for c in (task / "children").read_text().split()]
        return [pid for pid in pids if has_socket(pid)] or [self.proc.pid]  # 1: it serves


def has_socket(pid: int) -> bool:
    """Whether a process holds a socket (a worker; read fd by fd: under load files come
    and go while the list is read, and a process read whole would be missed: the paced
    table then keyed asgi+vw's rows by 1 worker and gave banditloop's no ratios)."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith("socket:"):
                    return True
    return False


def _wait_up(proc: subprocess.Popen[bytes], url: str, workers: int) -> None:
    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            resp = httpx.get(url + "/healthz", timeout=2)
            if resp.status_code == 200:
                rid = resp.headers.get("x-request-id")
                if rid is None:  # a baseline: give the other workers a moment
                    time.sleep(2)
                    return
                seen.add(rid.rsplit("-", 1)[0])
                if len(seen) >= workers:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args!r} did not start")


@contextlib.contextmanager
def target(name: str, workers: int, data_dir: Path | None = None) -> Iterator[Target]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if name == "banditloop":
        assert data_dir is not None
        env["BANDITLOOP_LOOP"] = LOOP_CONFIG
        cmd = [str(BIN / "banditloop"), "serve", "--workers", str(workers), "--port", str(port)]
        cmd += ["--data-dir", str(data_dir), "--log-level", "warning"]
    else:
        app = {"fastapi": "_baselines:fastapi_app", "asgi+vw": "_baselines:asgi_app"}[name]
        cmd = [str(BIN / "uvicorn"), "--app-dir", str(HERE), app, "--port", str(port)]
        cmd += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_up(proc, url, workers)
        yield Target(name, proc, url, data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the store ------------------------------------------------------------------------


def count(db: Path, where: str = "1") -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        return int(con.execute(f"SELECT count(*) FROM decisions WHERE {where}").fetchone()[0])


def fill_log(db: Path, n: int) -> float:
    """Write ``n`` learned decisions (half rewarded) spread over the last 7 days; seconds."""
    t0 = time.perf_counter()
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        covers = con.execute("SELECT coalesce(max(covers), 0) FROM models").fetchone()[0]
        if covers < 1:
            raise RuntimeError("no saved model covers mark 1 yet: the filler would be re-learned")
        con.execute("PRAGMA synchronous=OFF")
        cur = con.execute("SELECT * FROM decisions WHERE learned_in IS NOT NULL LIMIT 1")
        cols = [d[0] for d in cur.description]
        template = list(cur.fetchone())
        keep = [c for c in cols if c != "seq"]
        at = {c: k for k, c in enumerate(cols)}
        insert = f"INSERT INTO decisions ({','.join(keep)}) VALUES ({','.join('?' * len(keep))})"
        now = time.time()
        start = now - 7 * 86400
        tag = uuid.uuid4().hex[:8]
        batch = 20_000
        for first in range(0, n, batch):
            rows, rewards = [], []
            for k in range(first, min(n, first + batch)):
                row = list(template)
                eid = f"fill-{tag}-{k}"
                ts = start + (now - 3600 - start) * k / n
                row[at["event_id"]], row[at["ts"]], row[at["close_at"]] = eid, ts, ts + 1
                row[at["learned_in"]] = 1
                rows.append([row[at[c]] for c in keep])
                if k % 2 == 0:
                    rewards.append(("default", eid, None, 1.0, ts + 0.5))
            with con:
                con.executemany(insert, rows)
                con.executemany(
                    "INSERT INTO rewards (loop, event_id, slot, value, ts) VALUES (?,?,?,?,?)",
                    rewards,
                )
            if first and first % 1_000_000 == 0:
                print(f"  {first} events written", flush=True)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - t0


# -- the measurements -----------------------------------------------------------------


@dataclass
class Row:
    target: str
    workers: int
    setup: str
    rank: WrkResult
    rewards: WrkResult | None = None
    note: str = ""


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants: on a
    shared machine, the cost per request is steadier than the rate."""
    total = 0.0
    todo = [pid]
    while todo:
        proc = Path(f"/proc/{todo.pop()}")
        with contextlib.suppress(OSError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in (proc / "task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def load(
    tgt: Target,
    wrk: Wrk,
    opts: argparse.Namespace,
    rate: float = 0.0,
    latency: float = 0.0,
    paced: float = 0.0,
) -> tuple[Any, Any]:
    tag = uuid.uuid4().hex[:10]
    before = tree_cpu(tgt.proc.pid)
    rank, rewards = wrk.ranks(tgt.url, tag, opts.duration, rate, latency, paced)
    served = rank.requests + (rewards.requests if rewards else 0)
    rank.cpu_us = (tree_cpu(tgt.proc.pid) - before) * 1e6 / max(1, served)
    return rank, rewards


def warm(tgt: Target, wrk: Wrk) -> None:
    wrk.ranks(tgt.url, "warm" + uuid.uuid4().hex[:8], 3)


def profile(tgt: Target, wrk: Wrk, opts: argparse.Namespace, rate: float, lat: float) -> None:
    """py-spy on one worker under the ranks+rewards load; prints the top frames."""
    raw = Path(opts.profile)  # py-spy's collapsed stacks
    pid = tgt.workers()[0]
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "-p", str(pid), "-d", str(int(opts.duration)), "-r",
         "200", "-f", "raw", "-o", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    load(tgt, wrk, opts, rate, lat)
    spy.wait(60)
    print_profile(raw)


def print_profile(raw: Path, top: int = 25) -> None:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        k = int(n)
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    print(f"\npy-spy, {samples} samples of one worker's busy threads")
    print_table(
        ["self %", "function (file)"],
        [[f"{100 * v / samples:.1f}", f] for f, v in own.most_common(top)],
    )
    print_table(
        ["total %", "function (file)"],
        [[f"{100 * v / samples:.1f}", f] for f, v in total.most_common(top)],
    )


@dataclass
class PacedRow:
    target: str
    workers: int
    share: float  # of the asgi+vw baseline's maximum rate
    offered: float  # requests/s
    trainer: str
    rank: WrkResult


def paced(
    tgt: Target, wrk: Wrk, opts: argparse.Namespace, rates: dict[float, float], trainer: str = ""
) -> list[PacedRow]:
    """Latency at fixed offered rates (open loop): what a client app feels at its traffic."""
    out = []
    for share, rate in rates.items():
        rank, _ = load(tgt, wrk, opts, paced=rate)
        out.append(PacedRow(tgt.name, len(tgt.workers()), share, rate, trainer, rank))
    return out


def idle_trainer(tgt: Target) -> None:
    """Give the default loop an hour's reward wait and model export period: the trainer
    has nothing to learn or save while the next run lasts."""
    url = tgt.url + V1 + "/configurations/service"
    config = httpx.get(url, timeout=30).json()
    config.update(rewardWaitTime="PT1H", modelExportFrequency="PT1H")
    httpx.put(url, json=config, timeout=30).raise_for_status()
    time.sleep(2)  # what is closing now is learned (and a model saved) before the run


def trainer_under_load(tgt: Target, wrk: Wrk, opts: argparse.Namespace) -> tuple[Row, list[str]]:
    """Rank load while the trainer works through a backlog; the trainer's rates."""
    flood_store(tgt.db, opts.backlog, close_in=1.0)
    learned0, t0 = count(tgt.db, "learned_in IS NOT NULL"), time.monotonic()
    rank, _ = load(tgt, wrk, opts)
    learned1, t1 = count(tgt.db, "learned_in IS NOT NULL"), time.monotonic()
    time.sleep(5)
    learned2, t2 = count(tgt.db, "learned_in IS NOT NULL"), time.monotonic()
    left = count(tgt.db, "learned_in IS NULL")
    rates = [
        f"trainer while ranks run at full load: {(learned1 - learned0) / (t1 - t0):.0f} events/s",
        f"trainer alone (5 s after): {(learned2 - learned1) / (t2 - t1):.0f} events/s"
        f" ({left} still unlearned)",
    ]
    note = f"{learned1 - learned0} backlog events learned during the run"
    return Row("banditloop", 2, "ranks, trainer on a backlog", rank, note=note), rates


def reward_lag(tgt: Target, opts: argparse.Namespace) -> list[float]:
    """Seconds from a reward of -1 for the action the model puts first (for a fixed
    context) to every worker no longer putting it first."""
    cfg = {"rewardWaitTime": "PT10M", "modelExportFrequency": "PT1S"}
    r = httpx.put(tgt.url + "/loops/lag", json={"configuration": cfg}, timeout=30)
    assert r.status_code in (200, 201), r.text
    base = tgt.url + "/loops/lag/personalizer/v1.0"
    served: set[str] = set()
    deadline = time.monotonic() + 30
    while len(served) < 2 and time.monotonic() < deadline:
        resp = httpx.post(base + "/rank", json=rank_body(), timeout=30)
        if resp.status_code == 201:
            served.add(resp.headers["x-request-id"].rsplit("-", 1)[0])
    lags: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for rep in range(opts.lag_reps):
            body = rank_body()
            body["contextFeatures"] = [{"user": {"id": f"lag-{rep}"}, "device": "tv"}]
            first = client.post("/rank", json=body).json()["ranking"]
            aim = max(first, key=lambda a: a["probability"])["id"]  # what the model prefers
            for _ in range(3000):  # until the seeded draw picks it
                resp = client.post("/rank", json=body).json()
                if resp["rewardActionId"] == aim:
                    break
            else:
                raise RuntimeError(f"{aim} was never drawn from {first}")
            t0 = time.monotonic()
            ok = client.post(f"/events/{resp['eventId']}/reward", json={"value": -1.0})
            assert ok.status_code == 204, ok.text
            seen: dict[str, float] = {}
            while len(seen) < 2 and time.monotonic() - t0 < 30:
                r = httpx.post(base + "/rank", json=body, timeout=30)
                ranking = r.json()["ranking"]
                if max(ranking, key=lambda a: a["probability"])["id"] != aim:
                    seen.setdefault(r.headers["x-request-id"].rsplit("-", 1)[0], time.monotonic())
                time.sleep(0.02)
            lags.append(max(seen.values()) - t0 if len(seen) == 2 else math.inf)
    return lags


def store_growth(wrk: Wrk, opts: argparse.Namespace, tmp: Path) -> list[Row]:
    data = tmp / "growth"
    rows = []
    with target("banditloop", 2, data) as tgt:
        warm(tgt, wrk)
        time.sleep(3)  # the warm-up is learned and saved
        rank, _ = load(tgt, wrk, opts)
        rows.append(Row("banditloop", 2, "ranks, log nearly empty", rank, note=""))
        time.sleep(3)
    size = count(data / "banditloop.db")
    print(f"writing {opts.events} events into the log ...", flush=True)
    seconds = fill_log(data / "banditloop.db", opts.events)
    mb = (data / "banditloop.db").stat().st_size / 1e6
    print(f"  {opts.events} events written in {seconds:.0f} s; file {mb:.0f} MB", flush=True)
    with target("banditloop", 2, data) as tgt:
        warm(tgt, wrk)
        rank, _ = load(tgt, wrk, opts)
        n = count(tgt.db)
        rows.append(Row("banditloop", 2, f"ranks, {n:,} events in the log", rank))
    rows[0].note = f"{size:,} events in the log"
    return rows


@contextlib.contextmanager
def report_failure(extra: list[str], what: str) -> Iterator[None]:
    """A failed extra measurement is reported; the table is printed anyway."""
    try:
        yield
    except Exception as ex:
        extra.append(f"{what} FAILED: {ex!r}")
        print(f"{what} failed: {ex!r}", flush=True)


def print_paced(prows: list[PacedRow]) -> None:
    """The latency table at fixed offered rates, with ratios to asgi+vw's at that rate."""
    if not prows:
        return
    base = {(r.workers, r.share): r.rank for r in prows if r.target == "asgi+vw"}
    table = []
    for r in prows:
        b = base.get((r.workers, r.share))
        ratios = ["", ""]
        if b is not None and r.target != "asgi+vw" and b.p50 > 0 and b.p99 > 0:
            ratios = [f"{r.rank.p50 / b.p50:.2f}x", f"{r.rank.p99 / b.p99:.2f}x"]
        table.append(
            [r.target, str(r.workers), f"{100 * r.share:.0f}%", f"{r.offered:.0f}",
             f"{r.rank.rps:.0f}", fmt(r.rank.p50), fmt(r.rank.p99), fmt(r.rank.p999),
             str(r.rank.errors), f"{r.rank.cpu_us:.0f}", *ratios, r.trainer]
        )  # fmt: skip
    print("\nPaced (open-loop) Rank load, at shares of the asgi+vw baseline's maximum rate:")
    print_table(
        ["target", "workers", "share", "offered/s", "ranks/s", "p50 ms", "p99 ms", "p99.9 ms",
         "errors", "CPU µs/req", "p50 vs asgi+vw", "p99 vs asgi+vw", "trainer"],
        table,
    )  # fmt: skip


def fmt(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    ap.add_argument("--quick", action="store_true", help="5 s runs, 200k events in the log")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare")
    ap.add_argument("--backlog", type=int, default=100_000, help="events for the trainer run")
    ap.add_argument("--events", type=int, default=1_000_000, help="events for the store run")
    ap.add_argument("--lag-reps", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma list of: trainer, lag, growth")
    ap.add_argument(
        "--paced",
        default="0.25,0.5",
        help="paced runs at these shares of the asgi+vw baseline's max rate ('' for none)",
    )
    ap.add_argument(
        "--profile",
        default=None,
        help="file: py-spy a worker under load, write its raw stacks here",
    )
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.duration = 5
        opts.events = min(opts.events, 200_000)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk  (or: make bench, as root)")
        return 2
    if opts.profile and not (BIN / "py-spy").exists():
        print(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
        return 2
    skip = set(filter(None, opts.skip.split(",")))
    counts = [int(w) for w in opts.workers.split(",")]
    print(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="banditloop-throughput-"))
    rows: list[Row] = []
    prows: list[PacedRow] = []
    extra: list[str] = []
    loads = [os.getloadavg()[0]]
    shares = [float(x) for x in opts.paced.split(",") if x]
    try:
        wrk = Wrk(tmp, opts)
        for n in counts:
            rates: dict[float, float] = {}
            for name in ("asgi+vw", "fastapi"):  # asgi+vw first: its rate sets the paced ones
                with target(name, n) as tgt:
                    warm(tgt, wrk)
                    rows.append(Row(name, n, "ranks", load(tgt, wrk, opts)[0]))
                    if name == "asgi+vw":
                        rates = {x: x * rows[-1].rank.rps for x in shares}
                    prows += paced(tgt, wrk, opts, rates)
            loads.append(os.getloadavg()[0])
            with target("banditloop", n, tmp / f"w{n}") as tgt:
                warm(tgt, wrk)
                alone = load(tgt, wrk, opts)[0]
                rows.append(Row("banditloop", n, "ranks only", alone))
                rank, rew = load(tgt, wrk, opts, rate=alone.rps, latency=alone.p50)
                rows.append(Row("banditloop", n, "ranks + rewards", rank, rew))
                loads.append(os.getloadavg()[0])
                # the trainer learns each event a second after its Rank, saves every second
                prows += paced(tgt, wrk, opts, rates, "learning, saving each second")
                if n == 2 and "trainer" not in skip:
                    with report_failure(extra, "trainer"):
                        flood_store(tgt.db, opts.backlog, close_in=1.0)
                        time.sleep(1)
                        lowest = {min(rates): rates[min(rates)]} if rates else {}
                        prows += paced(tgt, wrk, opts, lowest, "on a backlog")
                        row, rates_seen = trainer_under_load(tgt, wrk, opts)
                        rows.append(row)
                        extra += rates_seen
                if n == 2 and "lag" not in skip:
                    with report_failure(extra, "lag"):
                        lags = reward_lag(tgt, opts)
                        extra.append(
                            "reward-to-model lag, s (both workers): "
                            + ", ".join(f"{x:.2f}" for x in lags)
                            + f"; median {sorted(lags)[len(lags) // 2]:.2f}"
                        )
                if n == 2 and opts.profile:
                    with report_failure(extra, "profile"):
                        profile(tgt, wrk, opts, alone.rps, alone.p50)
                policy = httpx.get(tgt.url + "/loops", timeout=30).json()[0]["policy"]
                extra.append(f"policy of the default loop: {policy}")
                with report_failure(extra, "idle trainer"):
                    idle_trainer(tgt)
                    prows += paced(tgt, wrk, opts, rates, "idle")
        if "growth" not in skip and 2 in counts:
            with report_failure(extra, "growth"):
                rows += store_growth(wrk, opts, tmp)
                loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = {(r.target, r.workers): r.rank for r in rows if r.target != "banditloop"}
    table = []
    for r in rows:
        ratios = ["", ""]
        if r.target == "banditloop":
            ratios = [
                f"{r.rank.rps / base[(b, r.workers)].rps:.2f}x" if (b, r.workers) in base else ""
                for b in ("fastapi", "asgi+vw")
            ]
        rewards = f"{r.rewards.rps:.0f}" if r.rewards else ""
        errors = r.rank.errors + (r.rewards.errors if r.rewards else 0)
        table.append(
            [r.target, str(r.workers), r.setup, f"{r.rank.rps:.0f}", fmt(r.rank.p50),
             fmt(r.rank.p99), fmt(r.rank.p999), rewards, str(errors), f"{r.rank.cpu_us:.0f}",
             *ratios, r.note]
        )  # fmt: skip
    print(
        f"\n{opts.connections} connections, {opts.duration:g} s per run; load average "
        f"(1 min) during the run: {min(loads):.1f} to {max(loads):.1f}"
    )
    print_table(
        ["target", "workers", "load", "ranks/s", "p50 ms", "p99 ms", "p99.9 ms", "rewards/s",
         "errors", "CPU µs/req", "vs fastapi", "vs asgi+vw", "note"],
        table,
    )  # fmt: skip
    print_paced(prows)
    for line in extra:
        print("* " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
