"""Shared fixtures: an app on a real SQLite file, a real server process, and a
PostgreSQL store in a schema of its own (skipped when PostgreSQL is not reachable)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import Settings
from banditloop.store import SqliteStore, SqlStore

V1 = "/personalizer/v1.0"
PG_URL = os.environ.get("BANDITLOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """httpx against the ASGI app, lifespan included (store, loop and trainer run)."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``banditloop serve`` process on a free port."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        env = {**os.environ, "BANDITLOOP_LOOP": '{"rewardWaitTime": "PT1S"}'}
        env.update(dict(e.split("=", 1) for e in self.extra))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "banditloop",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def _pg_unreachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as ex:
        return str(ex).strip().splitlines()[0]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL whose tables live in a new schema, dropped afterwards."""
    reason = _pg_unreachable()
    if reason is not None:
        pytest.skip(
            f"PostgreSQL is not reachable at {PG_URL} ({reason}). Start it, or point "
            "BANDITLOOP_TEST_POSTGRES at one (postgresql://user@host/db), to run this test."
        )
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], SqlStore]]:
    """Opens stores of one kind on one database (each call: another process's view)."""
    opened: list[SqlStore] = []
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None

    def make() -> SqlStore:
        if url is None:
            opened.append(SqliteStore(tmp_path / "data"))
        else:
            from banditloop.store.postgres import PostgresStore

            opened.append(PostgresStore(url))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: Callable[[], SqlStore]) -> SqlStore:
    return make_store()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", free_port()).start()
    yield srv
    srv.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow`` tests run only with BANDITLOOP_LONG_TESTS=1 (``make test-long``)."""
    if os.environ.get("BANDITLOOP_LONG_TESTS"):
        return
    skip = pytest.mark.skip(reason="long variant: run with `make test-long`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
