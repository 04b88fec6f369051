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
from helpers import Clock

V1 = "/personalizer/v1.0"
PG_URL = os.environ.get("BANDITLOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    """httpx against the ASGI app, lifespan included (store, loop and trainer run), on
    ``clock``, which the test may move."""
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], port_file: Path, timeout: float = 120) -> int:
    """The port of a server started with ``--port-file``, once it answers /healthz;
    raises if it exits or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            port = int(port_file.read_text())
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return port
        except (OSError, ValueError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not start within {timeout} s")


@dataclass
class Server:
    """A ``banditloop serve`` process; ``port`` 0 (the default): the port the kernel
    gave it, read from its ``--port-file`` (no free-port-then-bind race). ``args`` are
    more command-line arguments; with ``log``, its output goes to that file."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    log: Path | None = None
    log_level: str = "warning"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> Server:
        env = {**os.environ, "BANDITLOOP_LOOP": '{"rewardWaitTime": "PT1S"}'}
        env.update(dict(e.split("=", 1) for e in self.extra))
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir.parent / f"port-{uuid.uuid4().hex[:8]}"
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "banditloop", "serve", "--port", str(self.port),
                 "--port-file", str(port_file), "--data-dir", str(self.data_dir),
                 "--log-level", self.log_level, *self.args],
                env=env,
                stdout=out,
                stderr=out,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()
        try:
            self.port = wait_healthy(self.proc, port_file, timeout)
        except RuntimeError as ex:
            self.kill()  # a server that did not come up must not outlive the test
            tail = self.log.read_text()[-2000:] if self.log else ""
            raise RuntimeError(f"{ex}: {tail}") from None
        return self

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
    srv = Server(tmp_path / "data").start()
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
