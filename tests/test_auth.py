"""Keys: client keys rank, reward and activate; admin keys administer; loop keys stay local."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from admin_helpers import LoggedServer
from banditloop.app import create_app
from banditloop.config import Settings
from helpers import actions

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("auth")

V1 = "/personalizer/v1.0"
NEWS = "/loops/news" + V1
Q22 = "?api-version=2022-09-01-preview"
ADMIN_KEY = "adm-Secret-7f3a9"
CLIENT_KEY = "cli-Secret-2b8c1"
NEWS_CLIENT = "news-Client-55e0"
NEWS_ADMIN = "news-Admin-91d4"
RANK = {"actions": actions("a", "b")}

CLIENT_CALLS = [
    ("POST", V1 + "/rank", RANK),
    ("POST", V1 + "/events/e1/reward", {"value": 1}),
    ("POST", V1 + "/events/e1/activate", None),
    ("POST", "/personalizer/rank" + Q22, RANK),
]
ADMIN_CALLS = [
    ("GET", V1 + "/configurations/service", None),
    ("GET", V1 + "/configurations/policy", None),
    ("GET", V1 + "/model", None),
    ("GET", V1 + "/model/properties", None),
    ("GET", V1 + "/logs/properties", None),
    ("POST", V1 + "/logs/forget", {"feature": "user.id", "value": "nobody"}),
    ("DELETE", V1 + "/logs/events/nothing", None),
    ("GET", "/personalizer/configurations/service" + Q22, None),
    ("GET", "/loops/default" + V1 + "/configurations/policy", None),
]


def _call(c: Any, method: str, path: str, body: Any, **headers: str) -> Any:
    return c.request(method, path, json=body, headers=headers)


def _key(key: str) -> dict[str, str]:
    return {"Ocp-Apim-Subscription-Key": key}


def _assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert r.headers["x-ms-error-code"] == code


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("auth") / "data",
        admin_keys=[ADMIN_KEY],
        client_keys=[CLIENT_KEY],
        loop={"rewardWaitTime": "PT1S"},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.put(
            "/loops/news",
            json={"clientKeys": [NEWS_CLIENT], "adminKeys": [NEWS_ADMIN]},
            headers=_key(ADMIN_KEY),
        )
        assert r.status_code in (200, 201), r.text
        yield c


@pytest.mark.parametrize(("method", "path", "body"), CLIENT_CALLS + ADMIN_CALLS)
def test_no_key_or_wrong_key_is_401(keyed: TestClient, method: str, path: str, body: Any) -> None:
    _assert_error(_call(keyed, method, path, body), 401, "Unauthorized")
    _assert_error(_call(keyed, method, path, body, **_key("wrong")), 401, "Unauthorized")
    _assert_error(_call(keyed, method, path, body, **_key("")), 401, "Unauthorized")
    r = _call(keyed, method, path, body, Authorization="Bearer wrong")
    _assert_error(r, 401, "Unauthorized")
    r = _call(keyed, method, path, body, Authorization=f"Basic {ADMIN_KEY}")
    _assert_error(r, 401, "Unauthorized")
    r = _call(keyed, method, path, body, **_key(ADMIN_KEY.upper()))
    _assert_error(r, 401, "Unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), CLIENT_CALLS)
def test_client_key_on_client_calls(keyed: TestClient, method: str, path: str, body: Any) -> None:
    r = _call(keyed, method, path, body, **_key(CLIENT_KEY))
    assert r.status_code in (201, 204), r.text
    r = _call(keyed, method, path, body, Authorization=f"Bearer {CLIENT_KEY}")
    assert r.status_code in (201, 204), r.text


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_client_key_on_admin_calls_is_403(
    keyed: TestClient, method: str, path: str, body: Any
) -> None:
    _assert_error(_call(keyed, method, path, body, **_key(CLIENT_KEY)), 403, "Forbidden")
    r = _call(keyed, method, path, body, Authorization=f"Bearer {CLIENT_KEY}")
    _assert_error(r, 403, "Forbidden")


def test_client_key_cannot_change_anything(keyed: TestClient) -> None:
    h = _key(CLIENT_KEY)
    before = keyed.get(V1 + "/configurations/service", headers=_key(ADMIN_KEY)).json()
    r = keyed.put(
        V1 + "/configurations/service", json={**before, "explorationPercentage": 1}, headers=h
    )
    _assert_error(r, 403, "Forbidden")
    _assert_error(keyed.delete(V1 + "/model", headers=h), 403, "Forbidden")
    _assert_error(keyed.delete(V1 + "/logs", headers=h), 403, "Forbidden")
    _assert_error(keyed.delete(V1 + "/configurations/policy", headers=h), 403, "Forbidden")
    _assert_error(keyed.put(V1 + "/model", content=b"x", headers=h), 403, "Forbidden")
    _assert_error(keyed.get("/loops", headers=h), 403, "Forbidden")
    _assert_error(keyed.put("/loops/evil", headers=h), 403, "Forbidden")
    _assert_error(keyed.delete("/loops/news", headers=h), 403, "Forbidden")
    after = keyed.get(V1 + "/configurations/service", headers=_key(ADMIN_KEY)).json()
    assert after == before


@pytest.mark.parametrize(("method", "path", "body"), CLIENT_CALLS + ADMIN_CALLS)
def test_admin_key_everywhere(keyed: TestClient, method: str, path: str, body: Any) -> None:
    r = _call(keyed, method, path, body, **_key(ADMIN_KEY))
    assert r.status_code < 300, r.text
    r = _call(keyed, method, path, body, Authorization=f"Bearer {ADMIN_KEY}")
    assert r.status_code < 300, r.text
    r = _call(keyed, method, path, body, Authorization=f"bearer  {ADMIN_KEY} ")
    assert r.status_code < 300, r.text


def test_admin_key_on_loops(keyed: TestClient) -> None:
    h = _key(ADMIN_KEY)
    assert keyed.get("/loops", headers=h).status_code == 200
    assert keyed.put("/loops/tmp1", headers=h).status_code == 201
    assert keyed.delete("/loops/tmp1", headers=h).status_code == 204
    r = keyed.get("/loops", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200


def test_loop_keys_work_on_their_loop_only(keyed: TestClient) -> None:
    nc, na = _key(NEWS_CLIENT), _key(NEWS_ADMIN)
    assert keyed.post(NEWS + "/rank", json=RANK, headers=nc).status_code == 201
    r = keyed.post("/loops/news/personalizer/rank" + Q22, json=RANK, headers=nc)
    assert r.status_code == 201
    assert keyed.post(NEWS + "/events/x/reward", json={"value": 1}, headers=nc).status_code == 204
    _assert_error(keyed.get(NEWS + "/configurations/service", headers=nc), 403, "Forbidden")
    assert keyed.get(NEWS + "/configurations/service", headers=na).status_code == 200
    assert keyed.post(NEWS + "/rank", json=RANK, headers=na).status_code == 201

    # Not on the default loop, under either of its paths.
    for path in (V1 + "/rank", "/loops/default" + V1 + "/rank"):
        _assert_error(keyed.post(path, json=RANK, headers=nc), 401, "Unauthorized")
        _assert_error(keyed.post(path, json=RANK, headers=na), 401, "Unauthorized")
    _assert_error(keyed.get(V1 + "/configurations/service", headers=na), 401, "Unauthorized")

    # /loops needs a server-wide admin key; a loop admin key is not one.
    _assert_error(keyed.get("/loops", headers=na), 401, "Unauthorized")
    _assert_error(keyed.delete("/loops/news", headers=na), 401, "Unauthorized")

    # Server-wide keys work on the news loop too.
    assert keyed.post(NEWS + "/rank", json=RANK, headers=_key(CLIENT_KEY)).status_code == 201
    r = keyed.get(NEWS + "/configurations/policy", headers=_key(ADMIN_KEY))
    assert r.status_code == 200


def test_unknown_loop_needs_a_key_before_404(keyed: TestClient) -> None:
    path = "/loops/nosuch" + V1 + "/rank"
    _assert_error(keyed.post(path, json=RANK), 401, "Unauthorized")
    _assert_error(keyed.post(path, json=RANK, headers=_key(ADMIN_KEY)), 404, "ResourceNotFound")


def test_no_keys_everything_open(client: TestClient) -> None:
    for method, path, body in CLIENT_CALLS + ADMIN_CALLS:
        r = _call(client, method, path, body)
        assert r.status_code < 300, (path, r.text)
        r = _call(client, method, path, body, **_key("anything"))
        assert r.status_code < 300, (path, r.text)
    assert client.get("/loops").status_code == 200
    assert client.put("/loops/open").status_code == 201
    assert client.post("/loops/open" + V1 + "/rank", json=RANK).status_code == 201


def test_loop_with_keys_on_a_server_without_keys(client: TestClient) -> None:
    r = client.put("/loops/locked", json={"clientKeys": [NEWS_CLIENT]})
    assert r.status_code == 201
    locked = "/loops/locked" + V1 + "/rank"
    _assert_error(client.post(locked, json=RANK), 401, "Unauthorized")
    assert client.post(locked, json=RANK, headers=_key(NEWS_CLIENT)).status_code == 201
    r = client.get("/loops/locked" + V1 + "/configurations/service", headers=_key(NEWS_CLIENT))
    _assert_error(r, 403, "Forbidden")
    assert client.post(V1 + "/rank", json=RANK).status_code == 201  # default stays open


def test_keys_are_never_logged(tmp_path: Path) -> None:
    srv = LoggedServer(
        tmp_path / "data",
        extra=(
            f'BANDITLOOP_ADMIN_KEYS=["{ADMIN_KEY}"]',
            f'BANDITLOOP_CLIENT_KEYS=["{CLIENT_KEY}"]',
        ),
        log_level="debug",
    ).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            a = _key(ADMIN_KEY)
            r = http.put("/loops/news", json={"clientKeys": [NEWS_CLIENT]}, headers=a)
            assert r.status_code == 201
            assert NEWS_CLIENT not in r.text
            http.post(NEWS + "/rank", json=RANK, headers=_key(NEWS_CLIENT))
            for key in (ADMIN_KEY, CLIENT_KEY, NEWS_CLIENT, "guessed-Wrong-Key-0001"):
                for method, path, body in CLIENT_CALLS + ADMIN_CALLS:
                    r = http.request(method, path, json=body, headers=_key(key))
                    assert key not in r.text
                    r = http.request(
                        method, path, json=body, headers={"Authorization": f"Bearer {key}"}
                    )
                    assert key not in r.text
            # A failing admin call (bad policy) logs nothing about the key either.
            r = http.put(
                V1 + "/configurations/policy",
                json={"name": "x", "arguments": "--cb_explore_adf --bogus"},
                headers=a,
            )
            assert r.status_code == 400
    finally:
        srv.stop()
    log = srv.output()
    assert "uvicorn" in log.lower() or "banditloop" in log.lower()  # the log was captured
    for key in (ADMIN_KEY, CLIENT_KEY, NEWS_CLIENT, "guessed-Wrong-Key-0001"):
        assert key not in log
        assert key.lower() not in log.lower()
    db = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("banditloop.db*"))
    assert db
    for key in (ADMIN_KEY, CLIENT_KEY, NEWS_CLIENT):
        assert key.encode() not in db  # only hashes are stored
