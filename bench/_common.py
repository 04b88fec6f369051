"""Helpers shared by the benchmark scripts: a throw-away server and a table printer."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str  # e.g. http://127.0.0.1:43121
    data_dir: Path
    pid: int

    @property
    def api(self) -> str:
        return self.url + "/personalizer/v1.0"

    @property
    def db(self) -> Path:
        return self.data_dir / "banditloop.db"


@contextlib.contextmanager
def server(loop_config: str | None = None, log_level: str = "warning") -> Iterator[Server]:
    """``banditloop serve`` in a subprocess, on a free port, with a temporary data dir.

    ``loop_config`` (JSON, Azure field names) becomes ``BANDITLOOP_LOOP``, the default
    loop's service configuration.  The server is stopped and the directory removed on exit.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="banditloop-bench-"))
    port = free_port()
    env = dict(os.environ)
    if loop_config is not None:
        env["BANDITLOOP_LOOP"] = loop_config
    exe = Path(sys.executable).with_name("banditloop")
    cmd = [
        str(exe),
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        log_level,
    ]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
            try:
                httpx.get(url + "/healthz", timeout=1)  # any answer: startup is complete
                break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 60 s")
            time.sleep(0.1)
        yield Server(url, data_dir, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, padded so that it also reads well in a terminal."""
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()
