"""The time the service goes by. Reward windows, retention, model saves and the
dashboard's windows read it, so that tests move it instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]  # seconds since the epoch, as time.time
WALL: Clock = time.time
