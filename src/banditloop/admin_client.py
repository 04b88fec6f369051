"""Administration for the CLI: the same operations against a running server or a data dir.

``HttpAdmin`` calls a server's admin endpoints with the first-party client
(client.py); ``LocalAdmin`` opens the data directory itself (refusing while a
server holds it) and calls the library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from .auth import keyring
from .client import Call, Client
from .config import ServiceConfiguration, Settings
from .errors import BanditloopError
from .loop import Loop
from .modelfile import signed_archive, unpack
from .recommendations.config import ScenarioConfig
from .recommendations.service import TrackBatch, edit_scenario, track
from .registry import Registry
from .service import open_service
from .store.base import Item
from .upkeep import delete_logs

T = TypeVar("T")


class Admin(Protocol):
    def get_config(self) -> dict[str, Any]: ...
    def put_config(self, config: dict[str, Any]) -> dict[str, Any]: ...
    def get_policy(self) -> dict[str, Any]: ...
    def put_policy(self, name: str, arguments: str) -> dict[str, Any]: ...
    def reset_policy(self) -> dict[str, Any]: ...
    def export_model(self, signed: bool) -> bytes: ...
    def import_model(self, blob: bytes) -> None: ...
    def reset_model(self) -> None: ...
    def logs_info(self) -> dict[str, Any]: ...
    def delete_logs(self, event_id: str | None, feature: str | None, value: Any) -> int | None: ...
    def list_loops(self) -> list[dict[str, Any]]: ...
    def create_loop(self, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def delete_loop(self, name: str) -> None: ...
    def put_items(self, items: list[Item]) -> int: ...
    def list_scenarios(self) -> dict[str, Any]: ...
    def put_scenario(self, name: str, spec: dict[str, Any]) -> dict[str, Any]: ...
    def delete_scenario(self, name: str) -> None: ...
    def track(self, events: list[dict[str, Any]]) -> dict[str, int]: ...


class HttpAdmin:
    """Admin calls over HTTP, through the first-party client (client.py)."""

    def __init__(self, url: str, loop: str, key: str | None) -> None:
        self.client = Client(url, key=key, loop=loop, timeout=120)

    def _send(self, call: Call[T]) -> T:
        return self.client.send(call)

    def get_config(self) -> dict[str, Any]:
        return _dump(self._send(self.client.get_configuration()))

    def put_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return _dump(self._send(self.client.put_configuration(config)))

    def get_policy(self) -> dict[str, Any]:
        return _dump(self._send(self.client.get_policy()))

    def put_policy(self, name: str, arguments: str) -> dict[str, Any]:
        return _dump(self._send(self.client.put_policy(name, arguments)))

    def reset_policy(self) -> dict[str, Any]:
        return _dump(self._send(self.client.reset_policy()))

    def export_model(self, signed: bool) -> bytes:
        return self._send(self.client.export_model(signed))

    def import_model(self, blob: bytes) -> None:
        self._send(self.client.import_model(blob))

    def reset_model(self) -> None:
        self._send(self.client.reset_model())

    def logs_info(self) -> dict[str, Any]:
        return _dump(self._send(self.client.logs_properties()))

    def delete_logs(self, event_id: str | None, feature: str | None, value: Any) -> int | None:
        if event_id is not None:
            return self._send(self.client.delete_event(event_id))
        if feature:
            return self._send(self.client.forget(feature, value))
        self._send(self.client.delete_logs())
        return None

    def list_loops(self) -> list[dict[str, Any]]:
        return [_dump(x) for x in self._send(self.client.list_loops())]

    def create_loop(self, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        info, created = self._send(self.client.create_loop(name, spec))
        return _dump(info), created

    def delete_loop(self, name: str) -> None:
        self._send(self.client.delete_loop(name))

    def put_items(self, items: list[Item]) -> int:
        return self._send(self.client.put_items([it.to_json() for it in items]))

    def list_scenarios(self) -> dict[str, Any]:
        return {k: _dump(v) for k, v in self._send(self.client.list_scenarios()).items()}

    def put_scenario(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return _dump(self._send(self.client.put_scenario(name, spec)))

    def delete_scenario(self, name: str) -> None:
        self._send(self.client.delete_scenario(name))

    def track(self, events: list[dict[str, Any]]) -> dict[str, int]:
        return _dump(self._send(self.client.track(events)))


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)  # as sent


class LocalAdmin:
    """Admin calls on a data directory that no server is using."""

    def __init__(self, registry: Registry, loop: str) -> None:
        self.registry = registry
        self.loop_name = loop

    @property
    def loop(self) -> Loop:
        return self.registry.get(self.loop_name)

    def get_config(self) -> dict[str, Any]:
        return self.loop.service_configuration()

    def put_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.loop.update_configuration(ServiceConfiguration.model_validate(config))

    def get_policy(self) -> dict[str, Any]:
        return self.loop.policy_contract()

    def put_policy(self, name: str, arguments: str) -> dict[str, Any]:
        return self.loop.update_policy(name, arguments)

    def reset_policy(self) -> dict[str, Any]:
        return self.loop.update_policy(self.loop_name, self.registry.settings.default_policy)

    def export_model(self, signed: bool) -> bytes:
        blob = self.loop.export_model()
        return signed_archive(blob) if signed else blob

    def import_model(self, blob: bytes) -> None:
        self.loop.import_model(unpack(blob))

    def reset_model(self) -> None:
        self.loop.reset_model()

    def logs_info(self) -> dict[str, Any]:
        return self.loop.logs_properties()

    def delete_logs(self, event_id: str | None, feature: str | None, value: Any) -> int | None:
        if event_id is not None:
            return delete_logs(self.loop, event_id=event_id)
        if feature:
            return delete_logs(self.loop, feature=(feature.split("."), value))
        delete_logs(self.loop)
        return None

    def list_loops(self) -> list[dict[str, Any]]:
        return [loop.info() for loop in self.registry.loops.values()]

    def create_loop(self, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        keys = keyring(spec.get("clientKeys", ()), spec.get("adminKeys", ()))
        loop, created = self.registry.create(
            name, spec.get("configuration"), spec.get("policy"), keys
        )
        return loop.info(), created

    def delete_loop(self, name: str) -> None:
        self.registry.delete(name)

    def put_items(self, items: list[Item]) -> int:
        return int(self.loop.items.put(items).result())

    def list_scenarios(self) -> dict[str, Any]:
        return {k: v.model_dump(mode="json") for k, v in (self.loop.wire.scenarios or {}).items()}

    def put_scenario(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        scenario = ScenarioConfig.model_validate(spec)
        edit_scenario(self.loop, name, scenario)
        return scenario.model_dump(mode="json")

    def delete_scenario(self, name: str) -> None:
        if not edit_scenario(self.loop, name, None):
            raise BanditloopError(f"Scenario {name} does not exist.")

    def track(self, events: list[dict[str, Any]]) -> dict[str, int]:
        return asyncio.run(track(self.loop, TrackBatch.checked(events)))


@contextmanager
def open_admin(
    url: str | None,
    data_dir: Path | None,
    loop: str,
    key: str | None,
    config_file: Path | None = None,
) -> Iterator[Admin]:
    """An Admin for ``--url`` (a running server) or ``--data-dir`` (offline)."""
    if url:
        admin = HttpAdmin(url, loop, key)
        with admin.client:
            yield admin
        return
    settings = Settings.load(config_file, data_dir=data_dir)
    with open_service(settings, train=False) as service:
        yield LocalAdmin(service.registry, loop)
