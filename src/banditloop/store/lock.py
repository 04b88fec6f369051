"""An exclusive lock on a data directory, so one server (or one offline tool) owns it.

Two servers on one SQLite store would run two trainers for each loop and
learn every event twice; the lock makes the second one refuse to start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import Unavailable


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "banditloop.lock"
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Unavailable(
                f"{self.path.parent} is in use by another banditloop process (a running "
                "server?). Stop it, or talk to it with --url."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
