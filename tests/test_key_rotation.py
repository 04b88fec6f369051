"""Rotating a loop's keys at run time, without a restart."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import Settings

ADMIN = {"Ocp-Apim-Subscription-Key": "server-admin"}
RANK = "/loops/news/personalizer/v1.0/rank"
BODY = {"actions": [{"id": "a", "features": [{"x": 1}]}, {"id": "b", "features": [{"x": 2}]}]}


def _rank(client: TestClient, key: str) -> int:
    return client.post(RANK, json=BODY, headers={"Ocp-Apim-Subscription-Key": key}).status_code


def test_loop_keys_rotate_without_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_keys=["server-admin"])
    with TestClient(create_app(settings)) as client:
        spec = {"clientKeys": ["old"]}
        assert client.put("/loops/news", json=spec, headers=ADMIN).status_code == 201
        assert _rank(client, "old") == 201

        both = {"clientKeys": ["old", "new"]}
        assert client.put("/loops/news/keys", json=both, headers=ADMIN).status_code == 204
        assert (_rank(client, "old"), _rank(client, "new")) == (201, 201)

        only_new = {"clientKeys": ["new"]}
        assert client.put("/loops/news/keys", json=only_new, headers=ADMIN).status_code == 204
        assert (_rank(client, "old"), _rank(client, "new")) == (401, 201)

        # only a server admin key may rotate, and the loop's own keys are not one
        r = client.put("/loops/news/keys", json=both, headers={"Ocp-Apim-Subscription-Key": "new"})
        assert r.status_code == 401
        assert client.put("/loops/nope/keys", json=both, headers=ADMIN).status_code == 404

    # the rotation is stored: it survives a restart
    with TestClient(create_app(settings)) as client:
        assert (_rank(client, "old"), _rank(client, "new")) == (401, 201)
