"""The policy a loop serves now: held in one place, replaced whole.

A rank takes one reference (``live.policy``) and uses it throughout, so a swap in
the middle of a request cannot mix two models: the request finishes on the old
one, which is freed when it is dropped.  Whatever changes the policy (the trainer
learning into it or loading a saved model, an administrative change, a watcher
following the store) holds ``lock``, one at a time.
"""

from __future__ import annotations

import threading

from .policy import Policy


class LivePolicy:
    """A loop's current Policy and the arguments it was started with."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.lock = threading.RLock()  # one learning step, checkpoint or swap at a time
        self._closed = False

    @property
    def args(self) -> str:
        """The policy arguments the model runs with (``--epsilon`` included)."""
        return self.policy.args

    @property
    def ready(self) -> bool:
        """Whether a model is loaded (until :meth:`close`)."""
        return not self._closed

    def load(self, blob: bytes | None, args: str | None = None) -> None:
        """Serve a model file (None: an empty model), started with ``args`` (default:
        the current ones); if VW refuses it, the current policy stays."""
        with self.lock:
            self.policy = Policy(self.args if args is None else args, blob)

    def restart(self, args: str) -> None:
        """Keep what the model learned, with other arguments (a new exploration)."""
        with self.lock:
            self.load(self.policy.save(), args)

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self.policy.close()
