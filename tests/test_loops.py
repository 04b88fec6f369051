"""Several loops on one server: created, used through the SDK, configured apart, deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from fastapi.testclient import TestClient

from admin_helpers import LoggedServer
from banditloop.app import create_app
from banditloop.config import Settings
from conftest import Server
from helpers import actions, poll, query, scalar

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("loops")

V1 = "/personalizer/v1.0"
NEWS = "/loops/news" + V1
RANK = {"actions": actions("a", "b", "c")}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("loops") / "data").start()
    yield s
    s.stop()


@pytest.fixture
def http(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


def _error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert r.headers["x-ms-error-code"] == code


def test_create_list_use_delete(srv: Server, http: httpx.Client) -> None:
    r = http.put("/loops/news")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "news"
    assert body["path"] == "/loops/news/personalizer"
    assert "--cb_explore_adf" in body["policy"]
    assert body["learningMode"] == "Online"
    assert http.put("/loops/news").status_code == 200
    assert (
        http.put("/loops/news", json={"policy": "--cb_explore_adf --epsilon 0.5"}).json()["policy"]
        == body["policy"]
    )  # an existing loop is returned unchanged

    names = [loop["name"] for loop in http.get("/loops").json()]
    assert sorted(names) == ["default", "news"]

    endpoint = f"{srv.url}/loops/news"
    with PersonalizerClient(endpoint=endpoint, credential=AzureKeyCredential("x")) as client:
        ranked = client.rank({"actions": actions("a", "b"), "eventId": "news-1"})
        assert ranked["eventId"] == "news-1"
        client.reward("news-1", {"value": 1.0})
        client.activate("news-1")
    rows = query(srv.data_dir, "SELECT loop FROM decisions WHERE event_id='news-1'")
    assert rows == [("news",)]
    assert query(srv.data_dir, "SELECT loop, value FROM rewards WHERE event_id='news-1'") == [
        ("news", 1.0)
    ]
    # The default loop knows nothing of it.
    with PersonalizerAdministrationClient(
        endpoint=srv.url, credential=AzureKeyCredential("x")
    ) as admin:
        assert admin.get_log_properties() == {"dateRange": {"from": None, "to": None}}
    poll(lambda: scalar(srv.data_dir, "SELECT count(*) FROM models WHERE loop='news'") > 0)

    r = http.delete("/loops/news")
    assert r.status_code == 204
    for table in ("decisions", "rewards", "activations", "models"):
        assert scalar(srv.data_dir, f"SELECT count(*) FROM {table} WHERE loop='news'") == 0
    assert scalar(srv.data_dir, "SELECT count(*) FROM loops WHERE name='news'") == 0
    assert [loop["name"] for loop in http.get("/loops").json()] == ["default"]

    _error(http.post(NEWS + "/rank", json=RANK), 404, "ResourceNotFound")
    _error(http.get(NEWS + "/configurations/service"), 404, "ResourceNotFound")
    _error(http.post(NEWS + "/events/news-1/reward", json={"value": 1}), 404, "ResourceNotFound")
    r = http.get("/loops/news/personalizer/model?api-version=2022-09-01-preview")
    _error(r, 404, "ResourceNotFound")
    _error(http.delete("/loops/news"), 404, "ResourceNotFound")
    assert http.post(V1 + "/rank", json=RANK).status_code == 201  # default unaffected


def test_each_loop_has_its_own_configuration_and_policy(http: httpx.Client) -> None:
    spec = {
        "configuration": {"explorationPercentage": 0.5, "rewardWaitTime": "PT2S"},
        "policy": "--cb_explore_adf --epsilon 0.2 -q :: --cb_type ips",
    }
    assert http.put("/loops/sports", json=spec).status_code == 201
    sports = "/loops/sports" + V1
    default_config = http.get(V1 + "/configurations/service").json()
    default_policy = http.get(V1 + "/configurations/policy").json()

    config = http.get(sports + "/configurations/service").json()
    assert config["explorationPercentage"] == 0.5
    assert config["rewardWaitTime"] == "PT2S"
    assert http.get(sports + "/configurations/policy").json()["arguments"] == spec["policy"]

    r = http.put(sports + "/configurations/service", json={**config, "defaultReward": 0.25})
    assert r.status_code == 200
    r = http.put(
        sports + "/configurations/policy",
        json={"name": "s", "arguments": "--cb_explore_adf --epsilon 0.3 --cb_type dr"},
    )
    assert r.status_code == 200
    assert http.get(V1 + "/configurations/service").json() == default_config
    assert http.get(V1 + "/configurations/policy").json() == default_policy
    assert http.get(sports + "/configurations/service").json()["defaultReward"] == 0.25

    # Their models are separate too.
    assert http.delete(sports + "/model").status_code == 204
    default_model = http.get(V1 + "/model").content
    assert http.get(sports + "/model").content != default_model
    assert http.delete("/loops/sports").status_code == 204


@pytest.mark.parametrize(
    "name", ["-news", "_news", "bad.name", "bad%20name", "n" * 65, "caf%C3%A9", "a%2Fb"]
)
def test_bad_loop_names(http: httpx.Client, name: str) -> None:
    r = http.put(f"/loops/{name}")
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["code"] in ("BadRequest", "ResourceNotFound")
    if "%2F" not in name:  # an encoded slash is a different route, not a loop name
        _error(r, 400, "BadRequest")
    assert unquote(name) not in {x["name"] for x in http.get("/loops").json()}


def test_good_loop_names(http: httpx.Client) -> None:
    for name in ("A", "9lives", "n" * 64, "a-b_C"):
        assert http.put(f"/loops/{name}").status_code == 201
        assert http.post(f"/loops/{name}{V1}/rank", json=RANK).status_code == 201
        assert http.delete(f"/loops/{name}").status_code == 204


def test_create_refuses_bad_spec(http: httpx.Client) -> None:
    r = http.put("/loops/bad", json={"configuration": {"rewardWaitTime": "P9D"}})
    _error(r, 400, "InvalidRewardWaitTime")
    r = http.put("/loops/bad", json={"policy": "--cb_explore_adf -f /tmp/x"})
    _error(r, 400, "InvalidPolicyConfiguration")
    r = http.put("/loops/bad", json={"policy": "--epsilon 0.1"})
    _error(r, 400, "InvalidPolicyConfiguration")
    r = http.put("/loops/bad", json={"clientKeys": "not-a-list"})
    assert r.status_code == 400
    assert "bad" not in [x["name"] for x in http.get("/loops").json()]
    _error(http.post("/loops/bad" + V1 + "/rank", json=RANK), 404, "ResourceNotFound")


def test_create_refuses_out_of_range_configuration(http: httpx.Client) -> None:
    for field, value in (("explorationPercentage", 3), ("rewardAggregation", "mean")):
        r = http.put("/loops/bad2", json={"configuration": {field: value}})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] in ("BadRequest", "InvalidServiceConfiguration")
        assert field in r.json()["error"]["message"]
    assert "bad2" not in [x["name"] for x in http.get("/loops").json()]


def test_default_loop_cannot_be_deleted(http: httpx.Client) -> None:
    _error(http.delete("/loops/default"), 400, "BadRequest")
    assert http.post(V1 + "/rank", json=RANK).status_code == 201


def test_loops_survive_restart_and_come_from_the_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "banditloop.toml"
    toml.write_text(
        """
admin_keys = ["srv-admin"]

[loops.news]
policy = "--cb_explore_adf --epsilon 0.1 -q :: --cb_type mtr"
client_keys = ["news-client"]

[loops.news.configuration]
rewardWaitTime = "PT1M"
explorationPercentage = 0.1

[loops.sports]
"""
    )
    srv = LoggedServer(tmp_path / "data", args=("--config", str(toml))).start()
    admin = {"Ocp-Apim-Subscription-Key": "srv-admin"}
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            loops = {x["name"]: x for x in http.get("/loops", headers=admin).json()}
            assert set(loops) == {"default", "news", "sports"}
            assert loops["news"]["policy"] == "--cb_explore_adf --epsilon 0.1 -q :: --cb_type mtr"
            config = http.get(NEWS + "/configurations/service", headers=admin).json()
            assert config["rewardWaitTime"] == "PT1M"
            assert config["explorationPercentage"] == 0.1
            r = http.post(NEWS + "/rank", json=RANK, headers={"Ocp-Apim-Subscription-Key": "x"})
            _error(r, 401, "Unauthorized")
            r = http.post(
                NEWS + "/rank", json=RANK, headers={"Ocp-Apim-Subscription-Key": "news-client"}
            )
            assert r.status_code == 201
            assert http.put("/loops/extra", headers=admin).status_code == 201
            r = http.put(
                NEWS + "/configurations/service",
                json={**config, "defaultReward": 0.5},
                headers=admin,
            )
            assert r.status_code == 200
    finally:
        srv.stop()

    # Restart with the declared key changed: the stored loops come back, the declared
    # keys are applied again, and run-time changes to declared loops are kept.
    toml.write_text(toml.read_text().replace('"news-client"', '"news-client-2"'))
    srv = LoggedServer(tmp_path / "data", args=("--config", str(toml))).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            loops = {x["name"] for x in http.get("/loops", headers=admin).json()}
            assert loops == {"default", "news", "sports", "extra"}
            config = http.get(NEWS + "/configurations/service", headers=admin).json()
            assert config["defaultReward"] == 0.5
            old = {"Ocp-Apim-Subscription-Key": "news-client"}
            _error(http.post(NEWS + "/rank", json=RANK, headers=old), 401, "Unauthorized")
            new = {"Ocp-Apim-Subscription-Key": "news-client-2"}
            assert http.post(NEWS + "/rank", json=RANK, headers=new).status_code == 201
    finally:
        srv.stop()


@pytest.mark.parametrize("policy", ["--cb_explore_adf --bogus", "--cb_explore_adf --epsilon x"])
def test_create_with_policy_vw_rejects_leaves_nothing_behind(tmp_path: Path, policy: str) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.put("/loops/bogus", json={"policy": policy})
        _error(r, 400, "InvalidPolicyConfiguration")
        assert "bogus" not in {x["name"] for x in c.get("/loops").json()}
    assert query(settings.data_dir, "SELECT name FROM loops") == [("default",)]
    # The server starts again on the same data directory.
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert [x["name"] for x in c.get("/loops").json()] == ["default"]
        assert c.put("/loops/bogus").status_code == 201
