"""The loops a server hosts: opened at start, created and deleted at run time, and
followed in the store when other processes change them.  Also holds the
server-wide keyring, which decides who may call them.
"""

from __future__ import annotations

import re
import threading

from pydantic import ValidationError

from . import vwcheck
from .auth import ADMIN, CLIENT, keyring
from .clock import WALL, Clock
from .config import ServiceConfiguration, Settings, describe
from .errors import BadRequest, NotFound
from .loop import Loop
from .periodic import Periodic
from .policy import check_arguments
from .store import SqlStore
from .store.base import LoopRecord

DEFAULT_LOOP = "default"
#: Extension fields of a declared loop's configuration applied again at every start.
DECLARED = ("scenarios", "tracking")
LOOP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(name: str) -> None:
    if not LOOP_NAME.match(name):
        raise BadRequest(
            "Loop names are 1 to 64 letters, digits, '-' or '_', starting with a letter or digit."
        )


class Registry:
    """Owns every open Loop; all changes to the set of loops go through here."""

    def __init__(
        self, store: SqlStore, settings: Settings, train: bool = True, clock: Clock = WALL
    ) -> None:
        self.store = store
        self.clock = clock
        self.train = train  # False for offline tools working on a data directory
        self.settings = settings
        self.keys = keyring(settings.client_keys, settings.admin_keys)
        self.loops: dict[str, Loop] = {}
        self._lock = threading.Lock()
        self._watch: Periodic | None = None

    def open(self) -> None:
        """Open stored loops, then create or re-key the declared ones and the default."""
        for rec in self.store.list_loops():
            self.loops[rec.name] = self._open(rec)
        for name in {DEFAULT_LOOP, *self.settings.loops}:
            decl = self.settings.loops.get(name)
            check_name(name)
            keys = keyring(decl.client_keys, decl.admin_keys) if decl else {}
            if name not in self.loops:
                self.create(
                    name, decl.configuration if decl else None, decl.policy if decl else None, keys
                )
            elif decl and keys != self.loops[name].record.key_hashes:
                self.loops[name].set_keys(keys)
            if decl and self.train:  # declared scenarios and tracking win at every start
                declared = {f: decl.configuration[f] for f in DECLARED if f in decl.configuration}
                self.loops[name].update_extensions(**declared)

    def _open(self, rec: LoopRecord) -> Loop:
        return Loop.open(self.store, self.settings, rec, self.train, self.clock)

    def watch(self, every: float = 0.5) -> None:
        """In a multi-process server: follow what other processes change in the store."""
        self._watch = Periodic("following the store", every, self.sync)
        self._watch.start()

    def sync(self) -> None:
        """Open loops created elsewhere, close deleted ones, refresh the rest."""
        with self._lock:  # read under the lock: a loop created here meanwhile is not closed
            stored = {rec.name: rec for rec in self.store.list_loops()}
            for name in [n for n in self.loops if n not in stored]:
                self.loops.pop(name).close()
            for name, rec in stored.items():
                if name not in self.loops:
                    self.loops[name] = self._open(rec)
        for loop in list(self.loops.values()):
            loop.refresh()

    def get(self, name: str) -> Loop:
        loop = self.loops.get(name)
        if loop is None:
            raise NotFound(f"Loop {name} does not exist.")
        return loop

    def create(
        self,
        name: str,
        configuration: dict[str, object] | None = None,
        policy: str | None = None,
        key_hashes: dict[str, list[str]] | None = None,
    ) -> tuple[Loop, bool]:
        """Create a loop (or return the existing one); True when it was created."""
        check_name(name)
        with self._lock:
            if name in self.loops:
                return self.loops[name], False
            try:
                wire = ServiceConfiguration.model_validate(
                    {**self.settings.loop, **(configuration or {})}
                )
            except ValidationError as ex:
                raise BadRequest(describe(ex), "InvalidServiceConfiguration") from None
            wire.check()
            args = policy or self.settings.default_policy
            check_arguments(args)
            vwcheck.check(args)
            rec = LoopRecord(
                name=name,
                config=wire.model_dump(mode="json"),
                policy_name=name,
                policy=args,
                created=self.clock(),
                key_hashes=key_hashes or {CLIENT: [], ADMIN: []},
            )
            # fails before anything is stored
            loop = Loop(self.store, self.settings, rec, self.clock)
            self.store.put_loop(rec).result()
            if self.train:
                loop.trainer.start()
            self.loops[name] = loop
            return loop, True

    def delete(self, name: str) -> None:
        """Stop a loop and delete its configuration, model and logs."""
        if name == DEFAULT_LOOP:
            raise BadRequest("The default loop cannot be deleted; DELETE its logs instead.")
        with self._lock:
            loop = self.get(name)
            loop.close()
            del self.loops[name]
            self.store.delete_loop(name).result()  # with its tracked events

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        for loop in self.loops.values():
            loop.close()
