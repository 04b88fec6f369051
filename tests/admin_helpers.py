"""A server process with extra command-line arguments and its stderr kept in a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import Server


@dataclass
class LoggedServer(Server):
    """``banditloop serve`` with extra arguments (e.g. ``--config``), stderr to ``log``."""

    args: tuple[str, ...] = ()
    log: Path | None = None
    log_level: str = "info"

    def start(self, timeout: float = 30) -> LoggedServer:
        env = {**os.environ, "BANDITLOOP_LOOP": '{"rewardWaitTime": "PT1S"}'}
        env.update(dict(e.split("=", 1) for e in self.extra))
        log = self.log or self.data_dir.parent / "server.log"
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "banditloop", "serve", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), "--log-level", self.log_level, *self.args],
                env=env,
                stdout=err,
                stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def output(self) -> str:
        assert self.log is not None
        return self.log.read_text()
