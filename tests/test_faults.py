"""Fault injection: kill -9 in rounds, a full disk, corrupt models, a locked database,
a second server. Each ends by checking that nothing acknowledged was lost, that the
model loads, and that the service answered or failed with a clear message.

Figures of the last run are in docs/reliability.md (run with ``-s`` to print them).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.cli import main
from banditloop.config import Settings
from banditloop.errors import Unavailable
from banditloop.policy import Policy
from conftest import Server
from helpers import V1, actions, db_path, poll, query, scalar

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("faults")

LOOP = 'BANDITLOOP_LOOP={"rewardWaitTime": "PT1S", "modelExportFrequency": "PT1S"}'


class Traffic(threading.Thread):
    """Ranks, rewards and activations until stopped or the server is gone; records every
    acknowledgement (201/204) and every other answer."""

    def __init__(self, url: str, prefix: str, seed: int = 0) -> None:
        super().__init__(daemon=True)
        self.url, self.prefix = url, prefix
        self.rng = random.Random(seed)
        self.ranked: dict[str, bool] = {}  # event id -> deferred
        self.rewarded: Counter[tuple[str, float]] = Counter()
        self.statuses: Counter[int] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        rng = self.rng
        with httpx.Client(base_url=self.url, timeout=5) as http:
            i = 0
            while not self.stop.is_set():
                event_id = f"{self.prefix}{i:05d}"
                deferred = rng.random() < 0.15
                i += 1
                try:
                    r = http.post(
                        f"{V1}/rank",
                        json={
                            "contextFeatures": [{"user": f"u{rng.randrange(5)}"}],
                            "actions": actions("a", "b", "c", "d"),
                            "eventId": event_id,
                            "deferActivation": deferred,
                        },
                    )
                    self.statuses[r.status_code] += 1
                    if r.status_code != 201:
                        continue
                    self.ranked[event_id] = deferred
                    if deferred and rng.random() < 0.5:
                        http.post(f"{V1}/events/{event_id}/activate")
                    if rng.random() < 0.6:
                        value = 1.0 if r.json()["rewardActionId"] == "a" else rng.random() / 2
                        r = http.post(f"{V1}/events/{event_id}/reward", json={"value": value})
                        self.statuses[r.status_code] += 1
                        if r.status_code == 204:
                            self.rewarded[(event_id, value)] += 1
                except httpx.HTTPError:
                    if self.stop.wait(0.05):
                        return


def check_acknowledged(data_dir: Path, ranked: dict[str, bool], rewarded: Counter[Any]) -> None:
    """Every 201 is a stored decision, every 204 a stored reward (read with no server)."""
    stored = dict(query(data_dir, "SELECT event_id, deferred FROM decisions"))
    missing = [e for e in ranked if e not in stored]
    assert not missing, f"{len(missing)} acknowledged ranks lost, e.g. {missing[:5]}"
    assert all(bool(stored[e]) == d for e, d in ranked.items())
    lost = rewarded - Counter(query(data_dir, "SELECT event_id, value FROM rewards"))
    assert not lost, f"acknowledged rewards lost: {list(lost)[:5]}"


def check_learned_once(data_dir: Path) -> dict[str, int]:
    """After a graceful stop: every decision handled, the newest model covers every mark,
    counts exactly the events learned (none twice), and loads."""
    assert scalar(data_dir, "SELECT count(*) FROM decisions WHERE learned_in IS NULL") == 0
    number, covers, events_learned, policy, blob = query(
        data_dir,
        "SELECT number, covers, events_learned, policy, blob FROM models "
        "ORDER BY number DESC LIMIT 1",
    )[0]
    assert scalar(data_dir, "SELECT max(learned_in) FROM decisions") <= covers
    trained = scalar(
        data_dir, "SELECT count(*) FROM decisions WHERE json_extract(outcome, '$.t') IS NOT NULL"
    )
    assert events_learned == trained, f"model counts {events_learned}, log says {trained}"
    model = Policy(policy, bytes(blob))  # the model loads
    pmf = model.pmf('{"FromUrl":[{"user":"u1"}],"_multi":[{"i":{"id":"a"}},{"i":{"id":"b"}}]}')
    assert len(pmf) == 2 and abs(sum(pmf) - 1) < 1e-3
    model.close()
    return {"model": number, "learned": events_learned}


def wait_learned(data_dir: Path, timeout: float = 30) -> None:
    poll(
        lambda: scalar(data_dir, "SELECT count(*) FROM decisions WHERE learned_in IS NULL") == 0,
        timeout=timeout,
    )


# -- kill -9 at random moments, round after round ----------------------------------------


def kill_rounds(tmp_path: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    server = Server(tmp_path / "data", extra=(LOOP,))
    data_dir = server.data_dir
    ranked: dict[str, bool] = {}
    rewarded: Counter[tuple[str, float]] = Counter()
    answers: Counter[int] = Counter()
    start = time.perf_counter()
    relearned = 0
    try:
        for r in range(rounds):
            server.start()
            traffic = Traffic(server.url, f"r{r}-", seed=rng.randrange(1 << 30))
            traffic.start()
            time.sleep(rng.uniform(0.2, 2.5))  # rank, reward, learn and checkpoint meanwhile
            server.kill()
            traffic.stop.set()
            traffic.join(10)
            assert not traffic.is_alive()
            ranked.update(traffic.ranked)
            rewarded.update(traffic.rewarded)
            answers.update(traffic.statuses)
            relearned += scalar(
                data_dir,
                "SELECT count(*) FROM decisions WHERE learned_in > "
                "(SELECT coalesce(max(covers), 0) FROM models)",
            )
            check_acknowledged(data_dir, ranked, rewarded)
        server.start()
        wait_learned(data_dir)
        server.stop()
        check_acknowledged(data_dir, ranked, rewarded)
        figures = check_learned_once(data_dir)
        assert set(answers) <= {201, 204}, answers  # no request failed while it was up
        print(
            f"\nkill -9: {rounds} rounds in {time.perf_counter() - start:.1f} s, "
            f"{len(ranked)} ranks and {sum(rewarded.values())} rewards acknowledged, "
            f"all present; {relearned} learned events above the last checkpoint at the kills "
            f"(learned again); final model {figures['model']} counts {figures['learned']} "
            "events learned, each once"
        )
    finally:
        server.stop()


def test_kill_9_rounds(tmp_path: Path) -> None:
    kill_rounds(tmp_path, rounds=2, seed=10)


@pytest.mark.slow
def test_kill_9_many_rounds(tmp_path: Path) -> None:
    kill_rounds(tmp_path, rounds=30, seed=11)


# -- a full disk -----------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as ex:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {ex}")
    if proc.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs for the full-disk test (needs root or CAP_SYS_ADMIN): "
            + proc.stderr.strip()
        )


def _fill(path: Path) -> int:
    """Write a file until the disk is full; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    written += os.write(fd, b"\0" * chunk)
                except OSError as ex:
                    assert ex.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return written


def test_full_disk_answers_503_and_recovers(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    server = Server(disk / "data", extra=(LOOP,))
    try:
        server.start()
        ranked: dict[str, bool] = {}
        statuses: Counter[int] = Counter()
        with httpx.Client(base_url=server.url, timeout=10) as http:

            def rank(event_id: str) -> httpx.Response:
                r = http.post(
                    f"{V1}/rank",
                    json={
                        "contextFeatures": [{"user": "u", "pad": "p" * 400}],
                        "actions": actions("a", "b", "c"),
                        "eventId": event_id,
                    },
                )
                statuses[r.status_code] += 1
                if r.status_code == 201:
                    ranked[event_id] = False
                return r

            for i in range(20):
                assert rank(f"before-{i}").status_code == 201
            filled = _fill(disk / "filler")
            t0 = time.perf_counter()
            refused = None
            for i in range(5000):
                r = rank(f"full-{i}")
                if r.status_code == 503:
                    refused = r
                    break
            assert refused is not None, "the disk never filled up"
            first_503 = time.perf_counter() - t0
            err = refused.json()["error"]
            assert err["code"] == "ServiceUnavailable"
            assert "full" in err["message"], err
            assert refused.headers["retry-after"] == "1"
            for i in range(10):  # still refused, never acknowledged, never a 500
                assert rank(f"still-full-{i}").status_code == 503
            assert http.get("/healthz").status_code == 200
            check_acknowledged(server.data_dir, ranked, Counter())

            os.unlink(disk / "filler")  # space is back: the same server recovers
            poll(lambda: rank(f"after-{len(statuses)}").status_code == 201, timeout=10)
            for i in range(20):
                assert rank(f"recovered-{i}").status_code == 201
        assert set(statuses) <= {201, 503}, statuses
        wait_learned(server.data_dir)
        server.stop()
        check_acknowledged(server.data_dir, ranked, Counter())
        check_learned_once(server.data_dir)
        print(
            f"\nfull disk: filler {filled} bytes; {statuses[201]} ranks acknowledged, "
            f"{statuses[503]} refused with 503; first 503 after {first_503:.2f} s; "
            "recovered once space was freed"
        )
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


# -- corrupt or truncated models at start-up -----------------------------------------------
# In-process (the app's lifespan is the server's start-up): the same code, seconds faster.


def app_client(data_dir: Path, **kw: Any) -> TestClient:
    loop = {"rewardWaitTime": "PT1S", "modelExportFrequency": "PT1S"}
    settings = Settings(data_dir=data_dir, loop=loop, **kw)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with three saved models of one lineage (each graceful stop saves)."""
    data_dir = tmp_path_factory.mktemp("trained") / "data"
    for batch in range(3):
        with app_client(data_dir) as http:
            for i in range(30):
                event_id = f"b{batch}-{i}"
                r = http.post(
                    f"{V1}/rank", json={"actions": actions("a", "b"), "eventId": event_id}
                )
                assert r.status_code == 201
                value = 1.0 if r.json()["rewardActionId"] == "a" else 0.0
                http.post(f"{V1}/events/{event_id}/reward", json={"value": value})
            wait_learned(data_dir)
    return data_dir


@pytest.mark.parametrize("damage", ["truncated", "garbage", "all"])
def test_corrupt_model_at_start_falls_back(
    trained_dir: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(trained_dir, data_dir)
    models = query(data_dir, "SELECT number, length(blob) FROM models ORDER BY number DESC")
    assert len(models) >= 2
    newest = models[0][0]
    with closing(sqlite3.connect(db_path(data_dir))) as conn, conn:
        if damage == "truncated":
            conn.execute("UPDATE models SET blob=substr(blob, 1, 40) WHERE number=?", (newest,))
        elif damage == "garbage":
            conn.execute(
                "UPDATE models SET blob=randomblob(length(blob)) WHERE number=?", (newest,)
            )
        else:
            conn.execute("UPDATE models SET blob=zeroblob(100)")
    caplog.set_level(logging.WARNING, logger="banditloop")
    t0 = time.perf_counter()
    with app_client(data_dir) as http:
        started = time.perf_counter() - t0
        text = caplog.text
        assert f"model {newest} (" in text and "cannot be loaded" in text, text
        if damage == "all":
            assert "NO USABLE MODEL" in text, text
        else:
            assert f"FELL BACK to model {models[1][0]}" in text, text
        assert (data_dir / "quarantine" / f"default-model-{newest}.vw").exists()
        r = http.post(f"{V1}/rank", json={"actions": actions("a", "b")})
        assert r.status_code == 201, r.text
        assert http.get("/readyz").status_code == 200
        wait_learned(data_dir)
    figures = check_learned_once(data_dir)
    print(f"\ncorrupt model ({damage}): started in {started:.2f} s; {figures}")


# -- the database locked by another process -------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_locked_database_answers_503_after_the_busy_timeout(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with app_client(data_dir, sqlite_busy_timeout_seconds=1) as http:
        body = {"actions": actions("a", "b"), "eventId": "before"}
        assert http.post(f"{V1}/rank", json=body).status_code == 201
        holder = subprocess.Popen(  # as a sqlite3 shell inside a transaction would
            [sys.executable, "-c", HOLD_LOCK, str(db_path(data_dir))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            t0 = time.perf_counter()
            r = http.post(f"{V1}/rank", json={"actions": actions("a", "b"), "eventId": "locked"})
            waited = time.perf_counter() - t0
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "ServiceUnavailable" and "locked" in err["message"], err
            assert r.headers["retry-after"] == "1"
            assert 0.9 < waited < 10, waited
            r = http.post(f"{V1}/events/before/reward", json={"value": 1.0})
            assert r.status_code == 503
            assert http.get("/healthz").status_code == 200
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(10)
        t0 = time.perf_counter()
        r = http.post(f"{V1}/rank", json={"actions": actions("a", "b"), "eventId": "after"})
        assert r.status_code == 201, r.text
        print(
            f"\nlocked database: 503 after {waited:.2f} s (busy timeout 1 s); answered 201 "
            f"{time.perf_counter() - t0:.3f} s after the lock was released"
        )
        ids = {e for (e,) in query(data_dir, "SELECT event_id FROM decisions")}
        assert {"before", "after"} <= ids and "locked" not in ids
        wait_learned(data_dir)
    check_learned_once(data_dir)


# -- a second server on the same data directory ----------------------------------------------


def test_second_server_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with app_client(data_dir) as http:  # the first server, which owns the directory
        result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir)])
        assert result.exit_code != 0
        assert "in use by another banditloop process" in result.output, result.output
        second = app_client(data_dir)  # nor does a second app in the same process
        with pytest.raises(Unavailable, match="in use by another banditloop process"), second:
            pass
        r = http.post(f"{V1}/rank", json={"actions": actions("a", "b")})
        assert r.status_code == 201  # the first one is untouched
