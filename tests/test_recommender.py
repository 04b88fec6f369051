"""Server-side candidates: the loop calls a real HTTP recommender, ranks its items, and
falls back when it misbehaves; real SQLite, real VW, real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import LoopDeclaration, Settings
from banditloop.loop import Loop
from banditloop.store.events import EXAMPLE  # the example whole (schema m009)
from helpers import V1, poll, query, scalar
from recommender_server import Recommender, recommender

SERVICE = V1 + "/configurations/service"
RANK = V1 + "/rank"
ITEMS = [
    {"id": "p1", "score": 0.9, "features": [{"color": "red"}]},
    {"id": "p2", "score": 0.7},
    {"id": "p3", "score": 0.5},
    {"id": 4, "score": "high"},  # a numeric id is read as "4"; a non-number score is dropped
]
CATALOGUE = [
    {"id": "p2", "features": [{"color": "blue"}]},
    {"id": "p3", "features": [{"color": "green"}], "available": False},
    {"id": "s1", "features": [{"color": "grey"}]},
]


@pytest.fixture
def rec() -> Iterator[Recommender]:
    with recommender(ITEMS) as r:
        yield r


def connector(rec: Recommender, **changes: Any) -> dict[str, Any]:
    return {
        "url": rec.url + "/recs?user={userId}&n={topK}",
        "timeoutSeconds": 0.3,
        "topK": 3,
        "fallback": {"source": "static", "items": ["s1", "s2"]},
        **changes,
    }


def configure(client: TestClient, **recommender: Any) -> dict[str, Any]:
    config = client.get(SERVICE).json()
    r = client.put(SERVICE, json={**config, "recommender": recommender})
    assert r.status_code == 200, r.text
    return dict(r.json())


def the_loop(client: TestClient, name: str = "default") -> Loop:
    loop: Loop = client.app.state.registry.loops[name]  # type: ignore[attr-defined]
    return loop


def logged(data_dir: Path, event_id: str) -> tuple[str | None, dict[str, Any]]:
    source, example = query(
        data_dir, f"SELECT source, {EXAMPLE} FROM decisions WHERE event_id=?", (event_id,)
    )[0]
    return source, orjson.loads(example)


def rank(client: TestClient, **body: Any) -> dict[str, Any]:
    body.setdefault("recommenderParams", {"userId": "u1"})
    r = client.post(RANK, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_candidates_come_from_the_recommender(
    client: TestClient, settings: Settings, rec: Recommender
) -> None:
    configure(client, **connector(rec))
    assert client.put(V1 + "/items", json=CATALOGUE).status_code == 200
    answer = rank(
        client,
        recommenderParams={"userId": "a b&c/é"},
        contextFeatures=[{"user": "u1"}],
        eventId="e1",
    )
    # p3 is unavailable in the catalogue, so the top 3 are p1, p2 and "4".
    assert {a["id"] for a in answer["ranking"]} == {"p1", "p2", "4"}
    assert answer["rewardActionId"] == answer["ranking"][0]["id"]
    assert answer["source"] == "recommender"
    method, path, _ = rec.requests[-1]
    assert (method, path) == ("GET", "/recs?user=a%20b%26c%2F%C3%A9&n=3")
    source, example = logged(settings.data_dir, "e1")
    assert source == "recommender"
    assert example["FromUrl"] == [{"user": "u1"}]
    assert [(a["_tag"], a["j"]) for a in example["_multi"]] == [
        ("p1", [{"color": "red"}, {"upstream": {"position": 1, "score": 0.9}}]),  # its answer's
        ("p2", [{"color": "blue"}, {"upstream": {"position": 2, "score": 0.7}}]),  # catalogue's
        ("4", [{"upstream": {"position": 3}}]),  # neither: the upstream features only
    ]
    counters = client.get(V1 + "/counters").json()
    assert counters["recommender_calls"] == 1
    assert counters["rank_recommender"] == 1
    assert "fallback" not in counters


def test_post_sends_the_params_as_json(client: TestClient, rec: Recommender) -> None:
    configure(client, **connector(rec, url=rec.url + "/recs", method="POST"))
    rank(client, recommenderParams={"userId": "u9", "page": 2, "vip": True})
    method, path, body = rec.requests[-1]
    assert (method, path) == ("POST", "/recs")
    assert orjson.loads(body) == {"userId": "u9", "page": 2, "vip": True}


def test_paths_read_nested_answers(client: TestClient, rec: Recommender) -> None:
    rec.items = [{"product": {"sku": f"k{i}"}, "meta": {"s": i, "f": {"n": i}}} for i in range(5)]
    paths = {"items": "items[?meta.s > `1`]", "id": "product.sku", "score": "meta.s"}
    configure(client, **connector(rec, features="meta.f", topK=10, **paths))
    answer = rank(client, eventId="nested")
    assert {a["id"] for a in answer["ranking"]} == {"k2", "k3", "k4"}


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("slow", "timeout"),
        ("drip", "timeout"),
        ("error500", "error"),
        ("malformed", "malformed"),
        ("wrongshape", "malformed"),
        ("noids", "malformed"),
        ("empty", "empty"),
    ],
)
def test_a_misbehaving_recommender_gets_the_fallback(
    client: TestClient, settings: Settings, rec: Recommender, mode: str, reason: str
) -> None:
    configure(client, **connector(rec))
    client.put(V1 + "/items", json=CATALOGUE)
    rec.mode = mode
    t0 = time.monotonic()
    answer = rank(client, eventId=f"fb-{mode}")
    assert time.monotonic() - t0 < 1.5  # the timeout (0.3 s) holds, whatever the server does
    assert {a["id"] for a in answer["ranking"]} == {"s1", "s2"}
    assert answer["source"] == "fallback"
    source, example = logged(settings.data_dir, f"fb-{mode}")
    assert source == "fallback"
    assert [(a["_tag"], a["j"]) for a in example["_multi"]] == [
        ("s1", [{"color": "grey"}, {"upstream": {"position": 1}}]),
        ("s2", [{"upstream": {"position": 2}}]),
    ]
    counters = client.get(V1 + "/counters").json()
    assert counters[f"recommender_{reason}"] == 1
    assert counters["fallback"] == 1
    assert counters["rank_fallback"] == 1


def test_an_unreachable_recommender_gets_the_fallback(client: TestClient) -> None:
    configure(
        client,
        url="http://127.0.0.1:9/recs?u={userId}",
        fallback={"source": "static", "items": ["s1"]},
    )
    answer = rank(client)
    assert answer["rewardActionId"] == "s1"
    assert the_loop(client).counters["recommender_error"] == 1


def test_fallback_is_the_most_rewarded_items_of_the_logs(
    client: TestClient, settings: Settings, rec: Recommender
) -> None:
    configure(
        client,
        **connector(rec, topK=4, fallback={"source": "topRewarded", "cacheSeconds": 0}),
    )
    shown: dict[str, int] = {}
    for i in range(40):
        answer = rank(client, eventId=f"learn-{i}")
        item = answer["rewardActionId"]
        shown[item] = shown.get(item, 0) + 1
        reward = {"p1": 0.2, "p2": 1.0, "p3": 0.5, "4": 0.0}[item]
        assert client.post(V1 + f"/events/learn-{i}/reward", json={"value": reward}).is_success
    poll(
        lambda: (
            scalar(settings.data_dir, "SELECT count(*) FROM decisions WHERE outcome IS NULL") == 0
        )
    )
    totals = {k: n * {"p1": 0.2, "p2": 1.0, "p3": 0.5, "4": 0.0}[k] for k, n in shown.items()}
    expected = sorted(totals, key=lambda k: (-totals[k], -shown[k], k))
    rec.mode = "error500"
    rank(client, eventId="after")
    _, example = logged(settings.data_dir, "after")
    assert [a["_tag"] for a in example["_multi"]] == expected


def test_fallback_by_mean_with_a_minimum_of_events(
    client: TestClient, settings: Settings, rec: Recommender
) -> None:
    fallback = {"source": "topRewarded", "by": "mean", "minEvents": 3, "items": ["s9"]}
    configure(client, **connector(rec, fallback=fallback))
    rewards = {"p1": [1.0, 0.0, 0.0], "p2": [1.0, 1.0, 0.0], "p3": [1.0, 1.0]}  # p3: too few
    loop = the_loop(client)
    n = 0
    for item, values in rewards.items():
        for value in values:
            r = client.post(
                RANK, json={"actions": [{"id": item, "features": [{"k": 1}]}], "eventId": f"m{n}"}
            )
            assert r.status_code == 201
            client.post(V1 + f"/events/m{n}/reward", json={"value": value})
            n += 1
    poll(lambda: loop.store.count_learned(loop.name) == n)
    rec.mode = "empty"
    rank(client, eventId="mean")
    _, example = logged(settings.data_dir, "mean")
    assert [a["_tag"] for a in example["_multi"]] == ["p2", "p1", "s9"]


def test_no_fallback_items_falls_back_to_the_catalogue_then_503(
    client: TestClient, rec: Recommender
) -> None:
    configure(client, **connector(rec, fallback={"source": "topRewarded"}))
    rec.mode = "error500"
    r = client.post(RANK, json={"recommenderParams": {"userId": "u"}})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "RecommenderUnavailable"
    assert r.headers["x-ms-error-code"] == "RecommenderUnavailable"
    client.put(V1 + "/items", json=CATALOGUE)
    answer = rank(client)
    assert {a["id"] for a in answer["ranking"]} == {"s1", "p2"}  # p3 is unavailable
    counters = the_loop(client).counters
    assert counters["fallback_empty"] == 1
    assert counters["fallback"] == 2


def test_excluded_actions_are_left_out(client: TestClient, rec: Recommender) -> None:
    configure(client, **connector(rec))
    answer = rank(client, excludedActions=["p1", "nonexistent"])
    assert {a["id"] for a in answer["ranking"]} == {"p2", "p3", "4"}


def test_model_failure_answers_in_the_recommender_order(
    client: TestClient, settings: Settings, rec: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(client, **connector(rec))
    loop = the_loop(client)

    def broken(example: str) -> list[float]:
        raise RuntimeError("vw: something went wrong")

    monkeypatch.setattr(loop.policy, "pmf", broken)
    answer = rank(client, eventId="nomodel")
    assert [a["id"] for a in answer["ranking"]] == ["p1", "p2", "p3"]
    assert [a["probability"] for a in answer["ranking"]] == [1.0, 0.0, 0.0]
    assert answer["rewardActionId"] == "p1"
    assert loop.counters["model_failure"] == 1
    assert logged(settings.data_dir, "nomodel")[0] == "recommender"
    # A plain Rank is not covered: the failure is a 500 as before.
    plain = {"actions": [{"id": "a", "features": [{"k": 1}]}, {"id": "b", "features": [{"k": 2}]}]}
    assert client.post(RANK, json=plain).status_code == 500


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"recommenderParams": {"other": "x"}}, "userId"),
        ({"recommenderParams": {"userId": "x"}, "actions": [{"id": "a"}]}, "either"),
        ({"recommenderParams": {"userId": ["x"]}}, "recommenderParams"),
        ({"contextFeatures": [{"a": 1}]}, "Action count"),
    ],
)
def test_bad_requests(client: TestClient, rec: Recommender, body: Any, message: str) -> None:
    configure(client, **connector(rec))
    r = client.post(RANK, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "InvalidRankRequest"
    assert message in r.json()["error"]["message"]


def test_a_loop_without_recommender_refuses_params(client: TestClient) -> None:
    r = client.post(RANK, json={"recommenderParams": {"userId": "x"}})
    assert r.status_code == 400
    assert "no recommender" in r.json()["error"]["message"]


def test_retry_with_the_same_event_id_is_logged_once(
    client: TestClient, settings: Settings, rec: Recommender
) -> None:
    configure(client, **connector(rec))
    first = client.post(RANK, json={"recommenderParams": {"userId": "u"}, "eventId": "same"})
    rec.mode = "error500"  # even if the recommender now fails, the first answer stands
    again = client.post(RANK, json={"recommenderParams": {"userId": "u"}, "eventId": "same"})
    assert first.content == again.content
    assert scalar(settings.data_dir, "SELECT count(*) FROM decisions") == 1
    other = client.post(RANK, json={"recommenderParams": {"userId": "v"}, "eventId": "same"})
    assert other.status_code == 201  # a reused event ID: another decision
    assert scalar(settings.data_dir, "SELECT count(*) FROM decisions") == 2


def test_configuration_round_trips_and_survives_azure_puts(
    client: TestClient, rec: Recommender
) -> None:
    conn = connector(rec, headers={"X-Api-Key": "k"})
    got = configure(client, **conn)["recommender"]
    assert got == client.get(SERVICE).json()["recommender"]
    assert got["headers"] == {"X-Api-Key": "k"}
    assert got["fallback"]["items"] == ["s1", "s2"]
    # An Azure client PUTs only the fields it knows: the connector is kept.
    azure = {k: v for k, v in client.get(SERVICE).json().items() if k != "recommender"}
    r = client.put(SERVICE, json={**azure, "explorationPercentage": 0.1})
    assert r.json()["recommender"] == got
    # An explicit null removes it.
    assert client.put(SERVICE, json={**azure, "recommender": None}).json()["recommender"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "ftp://host/x"}, "http"),
        ({"url": "http://{host}/recs"}, "host"),
        ({"url": "http://h/recs?u={user.name}"}, "plain name"),
        ({"url": "http://h/recs?u={user"}, "malformed"),
        ({"items": "items[*"}, "JMESPath"),
        ({"topK": 51}, "topK"),
        ({"timeoutSeconds": 0}, "timeoutSeconds"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_connectors_are_400(
    client: TestClient, rec: Recommender, change: dict[str, Any], message: str
) -> None:
    config = client.get(SERVICE).json()
    r = client.put(SERVICE, json={**config, "recommender": {**connector(rec), **change}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "InvalidServiceConfiguration"
    assert message in r.json()["error"]["message"]


def test_connector_from_the_config_file(tmp_path: Path, rec: Recommender) -> None:
    shop = LoopDeclaration(configuration={"recommender": connector(rec)})
    settings = Settings(data_dir=tmp_path / "data", loops={"shop": shop})
    with TestClient(create_app(settings)) as c:
        conf = c.get("/loops/shop" + SERVICE).json()["recommender"]
        assert conf["url"] == rec.url + "/recs?user={userId}&n={topK}"
        r = c.post("/loops/shop" + RANK, json={"recommenderParams": {"userId": "u"}})
        assert r.status_code == 201
        assert r.json()["source"] == "recommender"


def test_recommender_events_export_and_learn(
    client: TestClient, settings: Settings, rec: Recommender
) -> None:
    configure(client, **connector(rec))
    for i in range(5):
        answer = rank(client, eventId=f"x{i}", contextFeatures=[{"u": i % 2}])
        client.post(V1 + f"/events/x{i}/reward", json={"value": 1.0})
    loop = the_loop(client)
    poll(lambda: loop.store.count_learned(loop.name) == 5)
    lines = [orjson.loads(line) for line in loop.export(0, time.time() + 1)]
    assert len(lines) == 5
    assert lines[0]["c"]["_multi"][0]["j"][-1] == {"upstream": {"position": 1, "score": 0.9}}
    assert answer["eventId"] == "x4"
