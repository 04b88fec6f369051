"""``banditloop serve --workers 2``: two rank processes and one trainer over one store.

One server is shared by the module (starting it takes seconds on a busy machine).
Traffic comes from a few threads over real HTTP; every acknowledged Rank (201) and
Reward (204) is recorded and then looked up in the SQLite file.  Exactly-once
learning is checked two ways: a learned mark covered by a saved model never changes
afterwards (polled while traffic flows), and once everything is learned the newest
model's ``events_learned`` equals the decisions learned with a trained outcome.

Processes are told apart through /proc: the trainer is the supervisor's
``multiprocessing`` child that holds no socket, each worker holds a listening socket
(its own, bound with ``SO_REUSEPORT``, or the supervisor's where that is missing).
Which worker answered a request is read from its ``x-request-id``, whose prefix is
random per process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import V1, wait_healthy
from helpers import poll

#: how long a condition may take on a busy machine before it counts as hung (the
#: processes of a cluster share two cores with the rest of the suite)
WAIT = 180

pytestmark = [
    pytest.mark.skipif(
        not Path("/proc/self/fd").is_dir(), reason="finds the server's processes through /proc"
    ),
    pytest.mark.xdist_group("multiprocess"),  # one worker: the tests share one cluster
]

LOOP_CONFIG = '{"rewardWaitTime":"PT1S","modelExportFrequency":"PT1S"}'
THREADS = 4


def rank_body(k: int) -> dict[str, Any]:
    return {
        "contextFeatures": [{"user": {"segment": "abc"[k % 3]}, "device": "mobile"}],
        "actions": [
            {"id": f"a{i}", "features": [{"topic": f"t{i}", "length": 100 + i}]} for i in range(5)
        ],
    }


# -- the server and its processes ----------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _has_socket(pid: int) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                return True
    return False


@dataclass
class Cluster:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    seen: set[int] = field(default_factory=set)  # every child pid ever seen, for clean-up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.data_dir / "banditloop.db"

    def _spawned(self) -> list[int]:
        pids = [p for p in _children(self.proc.pid) if "spawn_main" in _cmdline(p)]
        self.seen.update(pids)
        return pids

    def trainer(self) -> int | None:
        found = [p for p in self._spawned() if not _has_socket(p)]
        return found[0] if len(found) == 1 else None

    def workers(self) -> list[int]:
        return [p for p in self._spawned() if _has_socket(p)]

    def get(self, path: str, timeout: float = 30) -> httpx.Response:
        """On a new connection, so that repeated calls reach every worker."""
        return httpx.get(self.url + path, timeout=timeout)

    def worker_answers(self, path: str, want: int = 2, timeout: float = 30) -> dict[str, Any]:
        """GET ``path`` on new connections until ``want`` workers answered 200: the
        last JSON body of each, by request-id prefix."""
        bodies: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while len(bodies) < want and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                resp = self.get(path)
                if resp.status_code == 200:
                    bodies[worker_of(resp)] = resp.json()
        assert len(bodies) >= want, f"only {len(bodies)} worker(s) answered {path}"
        return bodies


def worker_of(resp: httpx.Response) -> str:
    return resp.headers["x-request-id"].rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("multiprocess") / "data"
    port_file = data_dir.parent / "port"
    env = {**os.environ, "BANDITLOOP_LOOP": LOOP_CONFIG}
    cmd = [sys.executable, "-m", "banditloop", "serve", "--workers", "2", "--port", "0"]
    cmd += ["--port-file", str(port_file), "--data-dir", str(data_dir), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    c = Cluster(proc, 0, data_dir)
    try:
        c.port = wait_healthy(proc, port_file, 90)  # importing VW in 3 processes takes a while
        c.worker_answers("/healthz", want=2, timeout=60)
        poll(c.trainer, WAIT, "the trainer process")
        yield c
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in c.seen:  # nothing of ours outlives the test
            with contextlib.suppress(ProcessLookupError):
                if "spawn_main" in _cmdline(pid):
                    os.kill(pid, signal.SIGKILL)


# -- traffic ---------------------------------------------------------------------------


@dataclass
class Traffic:
    """Ranks, each followed by a Reward for most, from ``THREADS`` threads."""

    url: str
    ranked: set[str] = field(default_factory=set)
    rewarded: Counter[tuple[str, float]] = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)
    ok_times: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # logged modelVersion is in the store
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for n in range(THREADS):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append((time.monotonic(), what))

    def _run(self, n: int) -> None:
        k = 0
        with httpx.Client(base_url=self.url + V1, timeout=30) as client:
            while not self._stop.is_set():
                k += 1
                try:
                    resp = client.post("/rank", json=rank_body(k))
                except httpx.TransportError as ex:
                    self._fail(f"rank: {ex!r}")
                    continue
                if resp.status_code != 201:
                    self._fail(f"rank {resp.status_code}: {resp.text[:200]}")
                    continue
                body = resp.json()
                event_id = body["eventId"]
                with self._lock:
                    self.ranked.add(event_id)
                    self.ok_times.append(time.monotonic())
                if k % 4 == 0:
                    continue  # some events get no reward: defaultReward
                value = 1.0 if body["rewardActionId"] == "a1" else 0.25
                try:
                    resp = client.post(f"/events/{event_id}/reward", json={"value": value})
                except httpx.TransportError as ex:
                    self._fail(f"reward: {ex!r}")
                    continue
                if resp.status_code != 204:
                    self._fail(f"reward {resp.status_code}: {resp.text[:200]}")
                    continue
                with self._lock:
                    self.rewarded[(event_id, value)] += 1


class Marks:
    """Polls the store: a learned mark covered by a saved model must never change."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.fixed: dict[int, int] = {}  # seq -> learned_in, once covered
        self.changed: list[tuple[int, int, int | None]] = []
        self.models: list[int] = []  # newest model number, per poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Marks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.poll()

    def poll(self) -> None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as con:
            con.execute("BEGIN")  # one snapshot for marks and models
            number, covers = con.execute(
                "SELECT coalesce(max(number), 0), coalesce(max(covers), 0) FROM models "
                "WHERE loop='default'"
            ).fetchone()
            rows = dict(
                con.execute(
                    "SELECT seq, learned_in FROM decisions WHERE loop='default' AND seq IN "
                    "(SELECT value FROM json_each(?)) OR (loop='default' AND learned_in<=?)",
                    (orjson.dumps(list(self.fixed)).decode(), covers),
                ).fetchall()
            )
            con.execute("COMMIT")
        self.models.append(number)
        for seq, mark in self.fixed.items():
            if rows.get(seq) != mark:
                self.changed.append((seq, mark, rows.get(seq)))
        for seq, mark in rows.items():
            if mark is not None and mark <= covers:
                self.fixed.setdefault(seq, mark)


def settled(db: Path) -> dict[str, Any] | None:
    """The store once everything logged is learned and saved (None before)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        open_, top = con.execute(
            "SELECT count(*) - count(learned_in), coalesce(max(learned_in), 0) FROM decisions "
            "WHERE loop='default'"
        ).fetchone()
        model = con.execute(
            "SELECT number, covers, events_learned FROM models WHERE loop='default' "
            "ORDER BY number DESC LIMIT 1"
        ).fetchone()
        if open_ or model is None or model[1] < top:
            return None
        trained = con.execute(
            "SELECT count(*) FROM decisions WHERE loop='default' AND learned_in IS NOT NULL "
            "AND json_extract(outcome, '$.t') IS NOT NULL"
        ).fetchone()[0]
        if model[2] != trained:  # the trainer may save again: look once more
            return None
        return {"model": model[0], "events_learned": model[2], "trained": trained}


def check_store(db: Path, traffic: Traffic, marks: Marks) -> dict[str, Any]:
    """Nothing acknowledged lost, everything learned exactly once."""
    state: dict[str, Any] = poll(lambda: settled(db), WAIT, "every decision learned and saved")
    marks.poll()  # the last events were learned after the traffic stopped
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        logged = {r[0] for r in con.execute("SELECT event_id FROM decisions")}
        stored = Counter(con.execute("SELECT event_id, value FROM rewards").fetchall())
        trained = con.execute(
            "SELECT count(*) FROM decisions WHERE loop='default' "
            "AND json_extract(outcome, '$.t') IS NOT NULL"
        ).fetchone()[0]
    lost = traffic.ranked - logged
    assert not lost, f"{len(lost)} acknowledged ranks missing, e.g. {sorted(lost)[:3]}"
    missing = {k: n for k, n in traffic.rewarded.items() if stored[k] < n}
    assert not missing, f"{len(missing)} acknowledged rewards missing"
    assert not marks.changed, f"learned marks changed after a save: {marks.changed[:5]}"
    assert state["events_learned"] == trained
    assert len(marks.fixed) >= len(traffic.ranked)  # the poller saw them learned and saved
    print(
        f"ranked {len(traffic.ranked)}, rewarded {sum(traffic.rewarded.values())}, "
        f"failed {len(traffic.failures)}, models {marks.models[0]}..{marks.models[-1]}, {state}"
    )
    return state


# -- tests ---------------------------------------------------------------------------


def test_two_workers_log_and_learn_everything_once(cluster: Cluster) -> None:
    versions: dict[str, list[int]] = {}
    with Marks(cluster.db) as marks:
        traffic = Traffic(cluster.url).start()
        try:

            def both_followed() -> bool:
                """Each worker answered with two or more models, and traffic flowed."""
                with contextlib.suppress(httpx.HTTPError):
                    resp = cluster.get("/loops")
                    loops = {lp["name"]: lp for lp in resp.json()}
                    version = int(loops["default"]["modelVersion"])
                    versions.setdefault(worker_of(resp), []).append(version)
                return (
                    len(traffic.ranked) > 50
                    and len(versions) == 2
                    and all(len(set(seen)) > 1 for seen in versions.values())
                )

            poll(both_followed, WAIT, "both workers to follow the trainer's models", 0.1)
        finally:
            traffic.stop()
    assert not traffic.failures, traffic.failures[:5]
    assert len(traffic.ranked) > 50
    check_store(cluster.db, traffic, marks)
    # both workers follow the trainer's models while traffic flows
    assert len(versions) == 2, versions
    for worker, seen in versions.items():
        assert seen[-1] > seen[0], f"worker {worker} stayed at model {seen[0]}"
        assert seen == sorted(seen), f"worker {worker} went back: {seen}"
    with contextlib.closing(sqlite3.connect(cluster.db)) as con:
        logged = [
            int(v)
            for (v,) in con.execute(
                "SELECT model_version FROM decisions WHERE event_id IN "
                "(SELECT value FROM json_each(?)) ORDER BY seq",
                (orjson.dumps(sorted(traffic.ranked)).decode(),),
            )
        ]
    assert logged[-1] > logged[0]  # ranks were made with newer and newer models


def saved_since(db: Path, when: float) -> bool:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        row = con.execute(
            "SELECT count(*) FROM models WHERE loop='default' AND created > ?", (when,)
        ).fetchone()
    return bool(row[0])


def test_trainer_killed_mid_run(cluster: Cluster) -> None:
    old = cluster.trainer()
    assert old is not None
    with Marks(cluster.db) as marks:
        traffic = Traffic(cluster.url).start()
        try:

            def unsaved_marks() -> bool:
                """Learned events that no saved model covers yet: the case to recover."""
                with contextlib.closing(sqlite3.connect(cluster.db, timeout=30)) as con:
                    top = con.execute(
                        "SELECT coalesce(max(learned_in), 0) FROM decisions WHERE loop='default'"
                    ).fetchone()[0]
                    covers = con.execute(
                        "SELECT coalesce(max(covers), 0) FROM models WHERE loop='default'"
                    ).fetchone()[0]
                return bool(top > covers)

            poll(unsaved_marks, WAIT, "events learned but not yet saved")
            os.kill(old, signal.SIGKILL)
            killed, killed_at = time.monotonic(), time.time()
            new = poll(
                lambda: (p := cluster.trainer()) is not None and p != old and p, 20, "a new trainer"
            )
            assert new != old
            at_kill = len(traffic.ranked)
            # the new trainer recovers and learns while ranks go on
            poll(lambda: len(traffic.ranked) > at_kill + 20, WAIT, "ranks after the kill")
            poll(lambda: saved_since(cluster.db, killed_at), WAIT, "a new trainer's model")
        finally:
            traffic.stop()
    assert not traffic.failures, traffic.failures[:5]  # the trainer is off the request path
    assert any(t > killed for t in traffic.ok_times)
    check_store(cluster.db, traffic, marks)


def test_worker_killed_mid_run(cluster: Cluster) -> None:
    workers = cluster.workers()
    assert len(workers) == 2
    victim, survivor = workers
    with Marks(cluster.db) as marks:
        traffic = Traffic(cluster.url).start()
        try:
            poll(lambda: len(traffic.ok_times) > 20, WAIT, "traffic to flow")
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            poll(
                lambda: [t for t in traffic.ok_times if t > killed],
                WAIT,
                "a request served after a worker died",
            )
            replacement = poll(
                lambda: [p for p in cluster.workers() if p not in (victim, survivor)],
                WAIT,
                "the supervisor to start a new worker",
            )
            assert survivor in cluster.workers()
            cluster.worker_answers("/healthz", want=2, timeout=60)
            replaced = time.monotonic()
            poll(
                lambda: len([t for t in traffic.ok_times if t > replaced]) > 10,
                WAIT,
                "requests served after the replacement",
            )
        finally:
            traffic.stop()
    # at most the requests in flight on the dead worker's connections fail
    assert len(traffic.failures) <= THREADS, traffic.failures
    assert all(abs(t - killed) < 5 for t, _ in traffic.failures), traffic.failures
    assert replacement
    check_store(cluster.db, traffic, marks)


def test_administration_reaches_every_process(cluster: Cluster) -> None:
    base = f"/loops/news/personalizer{V1[len('/personalizer') :]}"
    resp = httpx.put(cluster.url + "/loops/news", json={}, timeout=30)
    assert resp.status_code == 201, resp.text
    # every worker comes to serve the new loop (each follows the store)
    answered: set[str] = set()

    def both_serve() -> bool:
        r = httpx.post(cluster.url + base + "/rank", json=rank_body(0), timeout=30)
        if r.status_code == 201:
            answered.add(worker_of(r))
        return len(answered) == 2

    poll(both_serve, WAIT, "both workers to serve the new loop")
    # one PUT of the service configuration, seen by both workers
    config = cluster.get(base + "/configurations/service").json()
    assert config["explorationPercentage"] != 0.15
    config["explorationPercentage"] = 0.15
    resp = httpx.put(cluster.url + base + "/configurations/service", json=config, timeout=30)
    assert resp.status_code == 200, resp.text
    poll(
        lambda: all(
            c["explorationPercentage"] == 0.15
            for c in cluster.worker_answers(base + "/configurations/service").values()
        ),
        WAIT,
        "every worker to see the new exploration",
    )
    # one PUT of the policy, seen by both workers
    args = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type ips"
    policy = {"name": "ips", "arguments": args}
    resp = httpx.put(cluster.url + base + "/configurations/policy", json=policy, timeout=30)
    assert resp.status_code == 200, resp.text
    poll(
        lambda: all(
            p == policy for p in cluster.worker_answers(base + "/configurations/policy").values()
        ),
        WAIT,
        "every worker to see the new policy",
    )
    changed = time.time()
    # the trainer learns on under the new policy and exploration
    with httpx.Client(base_url=cluster.url + base, timeout=30) as client:
        for k in range(40):
            r = client.post("/rank", json=rank_body(k))
            assert r.status_code == 201, r.text
            client.post(f"/events/{r.json()['eventId']}/reward", json={"value": 1.0})

    def learned_under_new_policy() -> tuple[str, int] | None:
        with contextlib.closing(sqlite3.connect(cluster.db, timeout=30)) as con:
            row = con.execute(
                "SELECT policy, events_learned FROM models WHERE loop='news' AND created>? "
                "ORDER BY number DESC LIMIT 1",
                (changed,),
            ).fetchone()
        return row if row and row[1] >= 40 else None

    policy_used, _ = poll(learned_under_new_policy, WAIT, "a model learned after it")
    assert "--cb_type ips" in policy_used and "--epsilon 0.15" in policy_used, policy_used
