"""Several ``banditloop serve`` nodes on one PostgreSQL database, killed under load.

Two rank nodes (``--no-trainer``) and two trainer candidates run as separate
processes against one store.  Traffic comes from a few threads spread over every
node: each event is ranked on one node and rewarded on the next, and every
acknowledged Rank (201) and Reward (204) is recorded.  Meanwhile the test kills
(SIGKILL) the active trainer, checks that the other candidate takes over within
``TAKEOVER_BOUND`` seconds and trains on (a newer model, which the rank nodes
serve), then kills a rank node and checks that the other nodes keep serving.

Afterwards nothing acknowledged may be lost and nothing learned twice: every
acknowledged rank is in ``decisions`` and every acknowledged reward in ``rewards``,
every decision is learned with a trained outcome, a learned mark covered by a saved
model never changes (polled while traffic flows), and the newest model's
``events_learned`` equals the number of decisions learned with a trained outcome.

The trainer is whichever process's writer connection holds the loop's advisory lock.
Each node connects under an ``application_name`` of its own (``PGAPPNAME``, read by
libpq), so ``pg_locks`` joined with ``pg_stat_activity`` names the active trainer.
Which advisory lock is the trainer's is learned once every node is up: the only lock
the candidates then hold (so the test does not depend on how the key is derived).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from conftest import V1
from helpers import poll

T = TypeVar("T")

LOOP = "default"
LOOP_CONFIG = '{"rewardWaitTime":"PT1S","modelExportFrequency":"PT1S"}'
THREADS = 4
TAKEOVER_BOUND = 15.0  # seconds from killing the trainer to the other candidate holding the lock
TRAINING = re.compile(rb"loop default: training \(model (\d+); (\d+) marks undone\)")


def rank_body(k: int) -> dict[str, Any]:
    return {
        "contextFeatures": [{"user": {"segment": "abc"[k % 3]}, "device": "mobile"}],
        "actions": [
            {"id": f"a{i}", "features": [{"topic": f"t{i}", "length": 100 + i}]} for i in range(5)
        ],
    }


# -- the store, read directly ------------------------------------------------------------


@contextlib.contextmanager
def pg(url: str) -> Iterator[Any]:
    """A connection to the store, called like sqlite3 (``?`` placeholders)."""
    from banditloop.store.postgres import PgConnection, connect

    with connect(url) as raw:
        yield PgConnection(raw)


@contextlib.contextmanager
def snapshot(conn: Any) -> Iterator[Any]:
    """One consistent view of the store for every query inside."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


@dataclass(frozen=True)
class State:
    decisions: int
    open: int  # decisions not learned yet
    top: int  # highest mark
    model: int  # newest model's number (0: none)
    covers: int  # highest mark the newest model covers
    events_learned: int  # of the newest model
    trained: int  # decisions learned with a trained outcome


def state(url: str) -> State:
    with pg(url) as conn, snapshot(conn):
        decisions, learned, top, trained = conn.execute(
            "SELECT count(*), count(learned_in), coalesce(max(learned_in), 0), "
            "count(*) FILTER (WHERE learned_in IS NOT NULL AND (outcome::json->>'t') IS NOT NULL)"
            " FROM decisions WHERE loop=?",
            (LOOP,),
        ).fetchone()
        model = conn.execute(
            "SELECT number, covers, events_learned FROM models WHERE loop=? "
            "ORDER BY number DESC LIMIT 1",
            (LOOP,),
        ).fetchone() or (0, 0, 0)
    number, covers, events_learned = model
    return State(decisions, decisions - learned, top, number, covers, events_learned, trained)


class Marks:
    """Polls the store: a learned mark covered by a saved model must never change."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fixed: dict[int, int] = {}  # seq -> learned_in, once covered
        self.changed: list[tuple[int, int, int | None]] = []
        self.models: list[int] = []  # newest model number, per poll
        self.errors: list[str] = []  # a poll that failed: the check would have holes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Marks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            with pg(self.url) as conn:
                while not self._stop.wait(0.3):
                    self.poll(conn)
        except Exception as ex:
            self.errors.append(repr(ex))

    def poll(self, conn: Any = None) -> None:
        if conn is None:
            with pg(self.url) as own:
                return self.poll(own)
        with snapshot(conn):
            number, covers = conn.execute(
                "SELECT coalesce(max(number), 0), coalesce(max(covers), 0) FROM models "
                "WHERE loop=?",
                (LOOP,),
            ).fetchone()
            rows = dict(
                conn.execute(
                    "SELECT seq, learned_in FROM decisions WHERE loop=? "
                    "AND (seq = ANY(?) OR learned_in<=?)",
                    (LOOP, list(self.fixed), covers),
                ).fetchall()
            )
        self.models.append(number)
        for seq, mark in self.fixed.items():
            if rows.get(seq) != mark:
                self.changed.append((seq, mark, rows.get(seq)))
        for seq, mark in rows.items():
            if mark is not None and mark <= covers:
                self.fixed.setdefault(seq, mark)
        return None


# -- the nodes -------------------------------------------------------------------------


@dataclass
class Node:
    """One ``banditloop serve`` process (started again on the same port after a kill)."""

    name: str
    trainer: bool  # a trainer candidate; else a rank node (--no-trainer)
    store: str
    root: Path
    tag: str  # unique to this test run: part of the node's PostgreSQL application_name
    port: int = 0  # the kernel's choice at the first start (--port-file), then kept
    proc: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: list[float] = field(default_factory=list)  # monotonic times of each SIGKILL

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> str:
        return f"bl-{self.tag}-{self.name}"

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> None:
        env = {**os.environ, "BANDITLOOP_LOOP": LOOP_CONFIG, "PGAPPNAME": self.app}
        cmd = [sys.executable, "-m", "banditloop", "serve", "--store", self.store]
        cmd += ["--port", str(self.port), "--port-file", str(self.root / f"{self.name}.port")]
        cmd += ["--data-dir", str(self.root / self.name)]
        cmd += ["--log-level", "info"] + ([] if self.trainer else ["--no-trainer"])
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(self.proc)

    def up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
        if self.port == 0:
            try:
                self.port = int((self.root / f"{self.name}.port").read_text())
            except (OSError, ValueError):
                return False
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL: no shutdown code runs, its sessions just end.  Returns when."""
        assert self.proc is not None
        when = time.monotonic()
        self.killed.append(when)
        self.proc.kill()
        self.proc.wait()
        return when

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def takeovers(self) -> list[tuple[int, int]]:
        """(model, marks undone) of each time this node started training, from its log."""
        with contextlib.suppress(OSError):
            return [(int(m), int(u)) for m, u in TRAINING.findall(self.log.read_bytes())]
        return []

    def model_version(self) -> int:
        """The model this node serves (-1: it did not answer)."""
        with contextlib.suppress(httpx.HTTPError):
            resp = httpx.get(self.url + "/loops", timeout=10)
            return int({lp["name"]: lp for lp in resp.json()}[LOOP]["modelVersion"])
        return -1


@dataclass
class Cluster:
    store: str
    nodes: dict[str, Node]
    _lock_ids: tuple[int, int] | None = None

    @property
    def candidates(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.trainer]

    @property
    def rank_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.trainer]

    def wait_up(self, nodes: Iterable[Node], timeout: float = 120) -> None:
        waiting = list(nodes)

        def all_up() -> bool:
            waiting[:] = [n for n in waiting if not n.up()]
            return not waiting

        poll(all_up, timeout, "the nodes to answer /healthz", interval=0.2)

    def _advisory(self, apps: list[str] | None = None) -> list[tuple[int, int, str]]:
        """(classid, objid, application_name) of the advisory locks granted in this
        database, to sessions named in ``apps`` (default: every session)."""
        with pg(self.store) as conn:
            rows = conn.execute(
                "SELECT l.classid::bigint, l.objid::bigint, a.application_name FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype='advisory' AND l.granted AND l.objsubid=1 "
                "AND l.database=(SELECT oid FROM pg_database WHERE datname=current_database()) "
                "AND (? OR a.application_name = ANY(?))",
                (apps is None, apps or []),
            ).fetchall()
        return [tuple(r) for r in rows]

    def find_trainer_lock(self) -> None:
        """Learn which advisory lock is the trainer's (however the store derives its key):
        once every node has started (migrations done), it is the only lock the candidates
        hold."""

        def one() -> tuple[int, int] | None:
            held = {(c, o) for c, o, _ in self._advisory([n.app for n in self.candidates])}
            return held.pop() if len(held) == 1 else None

        self._lock_ids = poll(one, 30, "a trainer candidate to take the trainer lock")

    def holders(self) -> list[str]:
        """application_name of every session holding the loop's trainer lock."""
        assert self._lock_ids is not None
        return [app for c, o, app in self._advisory() if (c, o) == self._lock_ids]

    def leader(self) -> Node | None:
        """The trainer candidate that trains the loop now (None: nobody, or another
        deployment in this database)."""
        held = self.holders()
        found = [n for n in self.candidates if n.app in held]
        return found[0] if len(found) == 1 else None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    tag = uuid.uuid4().hex[:8]
    nodes = [
        Node(name, name.startswith("train"), pg_url, tmp_path, tag)
        for name in ("rank1", "rank2", "train1", "train2")
    ]
    c = Cluster(pg_url, {n.name: n for n in nodes})
    try:
        for node in nodes:  # in parallel: each takes seconds to import VW here
            node.start()
        c.wait_up(nodes)
        c.find_trainer_lock()
        yield c
    finally:
        c.stop()  # every process, also on failure; before pg_url drops the schema
        for node in nodes:  # shown by pytest when the test failed
            print(f"--- {node.name} ({node.app}) ---\n{node.tail()}")


# -- traffic ---------------------------------------------------------------------------


@dataclass
class Traffic:
    """From ``THREADS`` threads over every node: a Rank on one node, then (for most
    events) a Reward on the next one."""

    nodes: list[Node]
    ranked: dict[str, str] = field(default_factory=dict)  # event id -> node that ranked it
    rewarded: Counter[tuple[str, float]] = field(default_factory=Counter)
    acked: list[tuple[float, str]] = field(default_factory=list)  # (time, node) of each 2xx
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (time, node, what)
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

    def serves(self, node: Node, since: float, least: int = 10) -> bool:
        """Whether ``node`` acknowledged at least ``least`` requests since ``since``."""
        with self._lock:
            return sum(1 for t, name in self.acked if name == node.name and t > since) >= least

    def _post(
        self, clients: dict[str, httpx.Client], node: Node, path: str, body: Any, want: int
    ) -> httpx.Response | None:
        try:
            resp = clients[node.name].post(path, json=body)
        except httpx.TransportError as ex:
            what = f"{path}: {ex!r}"
        else:
            if resp.status_code == want:
                with self._lock:
                    self.acked.append((time.monotonic(), node.name))
                return resp
            what = f"{path}: {resp.status_code} {resp.text[:200]}"
        with self._lock:
            self.failures.append((time.monotonic(), node.name, what))
        self._stop.wait(0.02)  # a dead node refuses at once: do not spin on it
        return None

    def _run(self, n: int) -> None:
        clients = {
            node.name: httpx.Client(base_url=node.url + V1, timeout=30) for node in self.nodes
        }
        try:
            k = 0
            while not self._stop.is_set():
                k += 1
                node = self.nodes[(n + k) % len(self.nodes)]
                resp = self._post(clients, node, "/rank", rank_body(k), 201)
                if resp is None:
                    continue
                body = resp.json()
                event_id = body["eventId"]
                with self._lock:
                    self.ranked[event_id] = node.name
                if k % 4 == 0:
                    continue  # some events get no reward: defaultReward
                value = 1.0 if body["rewardActionId"] == "a1" else 0.25
                other = self.nodes[(n + k + 1) % len(self.nodes)]
                path = f"/events/{event_id}/reward"
                if self._post(clients, other, path, {"value": value}, 204) is not None:
                    with self._lock:
                        self.rewarded[(event_id, value)] += 1
        finally:
            for client in clients.values():
                client.close()


# -- what the test does to the cluster -------------------------------------------------


@dataclass
class Takeover:
    old: str
    new: str
    seconds: float  # from SIGKILL to the other candidate holding the lock
    trained_after: float  # from SIGKILL to the first model the new trainer saved
    unsaved_at_kill: bool  # marks no saved model covered when the trainer died
    undone: int | None  # marks the new trainer undid when it took over (from its log)


def kill_the_trainer(cluster: Cluster) -> Takeover:
    """Kill the active trainer while it has learned events that no saved model covers;
    the other live candidate must take over, train on, and the rank nodes follow."""
    old: Node = poll(cluster.leader, 30, "a trainer candidate to hold the lock")
    others = [n for n in cluster.candidates if n is not old]
    seen = len(others[0].takeovers())

    def unsaved() -> bool:
        s = state(cluster.store)
        return s.covers > 0 and s.top > s.covers

    poll(unsaved, 30, "events learned and saved, and more learned but not yet saved")
    killed = old.kill()
    pending = state(cluster.store)  # read after its death: what it left behind

    def taken() -> Node | None:
        leader = cluster.leader()
        return leader if leader is not old else None

    try:
        new: Node = poll(
            taken,
            TAKEOVER_BOUND,
            f"another candidate to take over from {old.name}",
            interval=0.05,
        )
    except AssertionError as ex:
        raise AssertionError(f"{ex}; the lock's holders: {cluster.holders()}") from None
    took = time.monotonic() - killed
    assert new in others
    # the new trainer saves a model of its own, covering what it learned
    before = state(cluster.store).model
    poll(lambda: state(cluster.store).model > before, 30, f"a model saved by {new.name}")
    trained_after = time.monotonic() - killed
    newest = state(cluster.store).model
    # rank nodes (and the other candidates) serve the new trainer's models
    for node in cluster.nodes.values():
        if node is not old and node.alive:
            poll(partial(follows, node, newest), 15, f"{node.name} to serve model {newest}")
    runs = new.takeovers()
    return Takeover(
        old.name,
        new.name,
        round(took, 2),
        round(trained_after, 2),
        pending.top > pending.covers,
        runs[-1][1] if len(runs) > seen else None,
    )


def follows(node: Node, model: int) -> bool:
    return node.model_version() >= model


def kill_a_rank_node(cluster: Cluster, traffic: Traffic, victim: Node) -> None:
    """The other nodes keep acknowledging ranks and rewards."""
    killed = victim.kill()
    for node in cluster.nodes.values():
        if node is not victim and node.alive:
            poll(
                partial(traffic.serves, node, killed),
                30,
                f"{node.name} to keep serving after {victim.name} died",
            )


def check_store(cluster: Cluster, traffic: Traffic, marks: Marks) -> State:
    """Nothing acknowledged lost, everything learned exactly once."""

    def settled() -> State | None:
        s = state(cluster.store)
        return s if s.open == 0 and s.model and s.covers >= s.top else None

    s: State = poll(settled, 60, "every decision learned and a model covering it", interval=0.2)
    marks.poll()  # the last events were learned after the traffic stopped
    with pg(cluster.store) as conn:
        logged = {
            r[0] for r in conn.execute("SELECT event_id FROM decisions WHERE loop=?", (LOOP,))
        }
        stored = Counter(
            conn.execute("SELECT event_id, value FROM rewards WHERE loop=?", (LOOP,)).fetchall()
        )
        unlearned = conn.execute(
            "SELECT count(*) FROM decisions WHERE loop=? AND (learned_in IS NULL "
            "OR outcome IS NULL)",
            (LOOP,),
        ).fetchone()[0]
    lost = set(traffic.ranked) - logged
    assert not lost, f"{len(lost)} acknowledged ranks missing, e.g. {sorted(lost)[:3]}"
    missing = {k: n for k, n in traffic.rewarded.items() if stored[k] < n}
    assert not missing, f"{len(missing)} acknowledged rewards missing, e.g. {list(missing)[:3]}"
    assert unlearned == 0
    assert s.trained == s.decisions, "every event is learnable: each has a trained outcome"
    assert not marks.errors, marks.errors
    assert not marks.changed, f"learned marks changed after a save: {marks.changed[:5]}"
    # learned once: the newest model, covering every mark, counts each event once
    assert s.events_learned == s.trained, s
    assert len(marks.fixed) >= len(traffic.ranked)  # the poller saw them learned and saved
    return s


def check_failures(cluster: Cluster, traffic: Traffic) -> None:
    """Requests failed only on a node that had been killed, after it was."""
    wrong = [
        (round(t, 2), name, what)
        for t, name, what in traffic.failures
        if not cluster.nodes[name].killed or t < cluster.nodes[name].killed[0]
    ]
    assert not wrong, f"requests failed on nodes that were up: {wrong[:5]}"


def report(traffic: Traffic, marks: Marks, s: State, takeovers: list[Takeover]) -> None:
    by_node = Counter(name for _, name in traffic.acked)
    print(
        f"ranked {len(traffic.ranked)}, rewarded {sum(traffic.rewarded.values())}, "
        f"acknowledged by node {dict(by_node)}, failed {len(traffic.failures)}, "
        f"models {marks.models[0]}..{marks.models[-1]}, {s}"
    )
    for t in takeovers:
        print(f"takeover: {t}")


# -- tests ---------------------------------------------------------------------------


def test_trainer_and_rank_node_killed_under_load(cluster: Cluster) -> None:
    """Kill the active trainer, then a rank node, while traffic flows over every node."""
    victim = cluster.nodes["rank1"]
    with Marks(cluster.store) as marks:
        traffic = Traffic(list(cluster.nodes.values())).start()
        try:
            takeover = kill_the_trainer(cluster)
            kill_a_rank_node(cluster, traffic, victim)
        finally:
            traffic.stop()
    assert takeover.seconds < TAKEOVER_BOUND
    check_failures(cluster, traffic)
    assert any(name == victim.name for _, name, _ in traffic.failures)  # it was in use
    s = check_store(cluster, traffic, marks)
    report(traffic, marks, s, [takeover])


@pytest.mark.slow
def test_nodes_killed_and_restarted_again_and_again(cluster: Cluster) -> None:
    """Longer: each killed node is started again; the trainer is killed twice, so that
    the second time a restarted candidate takes over."""
    takeovers: list[Takeover] = []
    with Marks(cluster.store) as marks:
        traffic = Traffic(list(cluster.nodes.values())).start()
        try:
            for round_ in range(2):
                takeover = kill_the_trainer(cluster)
                takeovers.append(takeover)
                dead = cluster.nodes[takeover.old]
                dead.start()  # a passive candidate again: it must not train, nor undo
                cluster.wait_up([dead])
                victim = cluster.rank_nodes[round_ % len(cluster.rank_nodes)]
                kill_a_rank_node(cluster, traffic, victim)
                victim.start()
                cluster.wait_up([victim])
                restarted = time.monotonic()
                poll(
                    partial(traffic.serves, victim, restarted),
                    30,
                    f"{victim.name} to serve again",
                )
                assert cluster.leader() is cluster.nodes[takeover.new], "no flapping"
        finally:
            traffic.stop()
    assert all(t.seconds < TAKEOVER_BOUND for t in takeovers)
    assert takeovers[1].new == takeovers[0].old  # the restarted candidate took over
    check_failures(cluster, traffic)
    s = check_store(cluster, traffic, marks)
    report(traffic, marks, s, takeovers)
