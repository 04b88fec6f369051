"""Administration for the CLI: the same operations against a running server or a data dir.

``HttpAdmin`` calls a server's admin endpoints; ``LocalAdmin`` opens the data
directory itself (refusing while a server holds it) and calls the library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx

from .auth import keyring
from .config import ServiceConfiguration, Settings
from .errors import BanditloopError
from .ids import path_segment
from .loop import Loop
from .modelfile import signed_archive, unpack
from .recommendations.config import ScenarioConfig
from .recommendations.service import TrackBatch, edit_scenario, track
from .registry import Registry
from .service import open_service
from .store.base import Item
from .upkeep import delete_logs


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
    """Admin calls over HTTP; errors come back as BanditloopError with the server's message."""

    def __init__(self, url: str, loop: str, key: str | None) -> None:
        headers = {"Ocp-Apim-Subscription-Key": key} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120)
        name = path_segment(loop, "A loop name")
        self.prefix = ("" if loop == "default" else f"/loops/{name}") + "/personalizer/v1.0"

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise BanditloopError(f"{err['message']} ({err['code']})", err["code"])
            except (ValueError, KeyError, TypeError):
                raise BanditloopError(f"HTTP {r.status_code}: {r.text[:200]}") from None
        return r

    def _loop(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self._call(method, self.prefix + path, **kw)

    def get_config(self) -> dict[str, Any]:
        return dict(self._loop("GET", "/configurations/service").json())

    def put_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return dict(self._loop("PUT", "/configurations/service", json=config).json())

    def get_policy(self) -> dict[str, Any]:
        return dict(self._loop("GET", "/configurations/policy").json())

    def put_policy(self, name: str, arguments: str) -> dict[str, Any]:
        body = {"name": name, "arguments": arguments}
        return dict(self._loop("PUT", "/configurations/policy", json=body).json())

    def reset_policy(self) -> dict[str, Any]:
        return dict(self._loop("DELETE", "/configurations/policy").json())

    def export_model(self, signed: bool) -> bytes:
        return self._loop("GET", "/model", params={"signed": str(signed).lower()}).content

    def import_model(self, blob: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        self._loop("PUT", "/model", content=blob, headers=headers)

    def reset_model(self) -> None:
        self._loop("DELETE", "/model")

    def logs_info(self) -> dict[str, Any]:
        return dict(self._loop("GET", "/logs/properties").json())

    def delete_logs(self, event_id: str | None, feature: str | None, value: Any) -> int | None:
        if event_id is not None:
            path = f"/logs/events/{path_segment(event_id, 'An event ID')}"
            return int(self._loop("DELETE", path).json()["deleted"])
        if feature:
            body = {"feature": feature, "value": value}
            return int(self._loop("POST", "/logs/forget", json=body).json()["deleted"])
        self._loop("DELETE", "/logs")
        return None

    def list_loops(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/loops").json())

    def create_loop(self, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        r = self._call("PUT", f"/loops/{path_segment(name, 'A loop name')}", json=spec)
        return dict(r.json()), r.status_code == 201

    def delete_loop(self, name: str) -> None:
        self._call("DELETE", f"/loops/{path_segment(name, 'A loop name')}")

    def put_items(self, items: list[Item]) -> int:
        body = [it.to_json() for it in items]
        return int(self._loop("PUT", "/items", json=body).json()["upserted"])

    def list_scenarios(self) -> dict[str, Any]:
        return dict(self._loop("GET", "/scenarios").json())

    def put_scenario(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        path = f"/scenarios/{path_segment(name, 'A scenario name')}"
        return dict(self._loop("PUT", path, json=spec).json())

    def delete_scenario(self, name: str) -> None:
        self._loop("DELETE", f"/scenarios/{path_segment(name, 'A scenario name')}")

    def track(self, events: list[dict[str, Any]]) -> dict[str, int]:
        return dict(self._loop("POST", "/tracking/events", json={"events": events}).json())


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
        try:
            yield admin
        finally:
            admin.http.close()
        return
    settings = Settings.load(config_file, data_dir=data_dir)
    with open_service(settings, train=False) as service:
        yield LocalAdmin(service.registry, loop)
