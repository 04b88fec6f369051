"""A server process with extra command-line arguments and its stderr kept in a file."""

from __future__ import annotations

from dataclasses import dataclass

from conftest import Server


@dataclass
class LoggedServer(Server):
    """``banditloop serve`` with extra arguments (e.g. ``--config``), stderr to ``log``."""

    log_level: str = "info"

    def start(self, timeout: float = 120) -> LoggedServer:
        self.log = self.log or self.data_dir.parent / "server.log"
        super().start(timeout)
        return self

    def output(self) -> str:
        assert self.log is not None
        return self.log.read_text()
