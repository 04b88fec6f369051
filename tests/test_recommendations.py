"""Recommendations from the loop's own data, through HTTP on a real SQLite file: event
tracking with reward attribution, scenarios (admin API, config file), the built-in
models behind them, filters, cold start, forgetting a user, restarts and workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.cli import main
from banditloop.config import Settings
from helpers import V1, poll, query, scalar
from recommender_server import recommender

ITEMS = [
    {"id": "b1", "features": [{"category": "books", "author": "austen"}]},
    {"id": "b2", "features": [{"category": "books", "author": "austen"}]},
    {"id": "b3", "features": [{"category": "books", "author": "banks"}]},
    {"id": "g1", "features": [{"category": "games", "studio": "x"}]},
    {"id": "g2", "features": [{"category": "games", "studio": "x"}]},
    {"id": "g3", "features": [{"category": "games", "studio": "y"}], "available": False},
]
POPULAR = {"sources": [{"model": "popularity", "count": 10}], "count": 3}


def make_settings(data_dir: Path, **extra: Any) -> Settings:
    loop = {"rewardWaitTime": "PT1S", "rewardAggregation": "max"}
    return Settings(data_dir=data_dir, loop=loop, tracking_poll_seconds=0.05, **extra)


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def shop(app_settings: Settings) -> Iterator[TestClient]:
    """A server with the catalogue loaded and a popularity scenario."""
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as c:
        assert c.put(V1 + "/items", json=ITEMS).status_code == 200
        assert c.put(V1 + "/scenarios/popular", json=POPULAR).status_code == 200
        yield c


def track(c: TestClient, *events: dict[str, Any], base: str = V1) -> dict[str, Any]:
    r = c.post(base + "/tracking/events", json={"events": list(events)})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def wait_applied(c: TestClient, n: int) -> None:
    poll(lambda: c.get(V1 + "/tracking/status").json()["events"] >= n)


def recommend(c: TestClient, scenario: str, **params: Any) -> dict[str, Any]:
    r = c.get(f"{V1}/recommendations/{scenario}", params=params)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def ids(answer: dict[str, Any]) -> list[str]:
    return [i["id"] for i in answer["items"]]


def test_tracked_ids_are_hashed_and_an_event_for_the_chosen_item_is_its_reward(
    shop: TestClient, app_settings: Settings
) -> None:
    data = app_settings.data_dir
    answer = recommend(shop, "popular", userId="alice")
    event_id, chosen = answer["eventId"], answer["rewardActionId"]
    other = next(i for i in ids(answer) if i != chosen)
    assert query(data, "SELECT source FROM decisions WHERE event_id=?", (event_id,)) == [
        ("scenario-fallback",)  # nothing tracked yet: the catalogue
    ]
    out = track(
        shop,
        {"type": "click", "itemId": chosen, "userId": "alice", "eventId": event_id},
        {"type": "buy", "itemId": chosen, "userId": "alice", "eventId": event_id, "value": 9.5},
        {"type": "click", "itemId": other, "userId": "alice", "eventId": event_id},
        {"type": "view", "itemId": chosen, "sessionId": "s-1", "eventId": event_id},
        {
            "type": "wishlist",
            "itemId": "b1",
            "userId": "alice",
            "timestamp": "2026-01-02T03:04:05Z",
        },
    )
    # click and buy of the chosen item are rewards; another item, or a view, are not
    assert out == {"accepted": 5, "rewards": 2}
    rewards = query(data, "SELECT value FROM rewards WHERE event_id=? ORDER BY seq", (event_id,))
    assert rewards == [(0.2,), (1.0,)]
    stored = query(data, "SELECT type, user_hash, session_hash, value, ts FROM tracked_events")
    assert len(stored) == 5
    dump = repr(query(data, "SELECT * FROM tracked_events"))
    assert "alice" not in dump and "s-1" not in dump
    assert stored[1][3] == 9.5 and stored[4][4] == 1767323045.0
    assert stored[0][1] == stored[1][1] != stored[0][2]
    # the loop learns the event with the best of its rewards (max aggregation)
    poll(lambda: scalar(data, "SELECT outcome FROM decisions WHERE event_id=?", (event_id,)))
    outcome = scalar(data, "SELECT outcome FROM decisions WHERE event_id=?", (event_id,))
    assert '"r":[1.0]' in outcome.replace(" ", "")


@pytest.mark.parametrize(
    "events",
    [
        [],
        [{"type": "click"}],
        [{"type": "bad type!", "itemId": "a"}],
        [{"type": "click", "itemId": "a", "timestamp": "yesterday"}],
        [{"type": "click", "itemId": "a", "timestamp": 1e300}],
        [{"type": "click", "itemId": "a", "value": "NaN"}],
        [{"type": "click", "itemId": "a", "eventId": ""}],
        [{"type": "click", "itemId": "a" * 257}],
    ],
)
def test_bad_event_batches_are_400(shop: TestClient, events: list[dict[str, Any]]) -> None:
    r = shop.post(V1 + "/tracking/events", json={"events": events})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BadRequest"
    assert shop.get(V1 + "/tracking/status").json()["stored"] == 0


def logging_only(c: TestClient) -> None:
    """The loop returns the candidates in the scenario's own order."""
    config = c.get(V1 + "/configurations/service").json()
    config["learningMode"] = "LoggingOnly"
    assert c.put(V1 + "/configurations/service", json=config).status_code == 200


def test_popularity_counts_weights_and_logging_only_serves_its_order(shop: TestClient) -> None:
    logging_only(shop)
    track(
        shop,
        *[{"type": "view", "itemId": "g1", "userId": f"v{k}"} for k in range(6)],  # 6 * 0.2
        *[{"type": "click", "itemId": "b3", "userId": f"c{k}"} for k in range(2)],  # 2 * 1
        {"type": "buy", "itemId": "b2", "userId": "x"},  # 4
        {"type": "buy", "itemId": "g3", "userId": "x"},  # unavailable: filtered out
    )
    wait_applied(shop, 10)
    answer = recommend(shop, "popular")
    assert ids(answer) == ["b2", "b3", "g1"]
    assert answer["source"] == "scenario" and answer["rewardActionId"] == "b2"
    assert {i["via"] for i in answer["items"]} == {"popularity"}
    # a user who bought b2 is not offered it again; a category narrows the list
    assert ids(recommend(shop, "popular", userId="x")) == ["b3", "g1"]
    assert ids(recommend(shop, "popular", category="games")) == ["g1"]
    assert ids(recommend(shop, "popular", count=1)) == ["b2"]


def test_cooccurrence_similarity_and_history(shop: TestClient) -> None:
    scenario = {
        "sources": [
            {"model": "cooccurrence", "count": 2, "types": ["buy"]},
            {"model": "similar", "count": 2},
            {"model": "history", "count": 2},
        ],
        "count": 6,
        "filters": {"excludeTypes": []},
    }
    assert shop.put(V1 + "/scenarios/mix", json=scenario).status_code == 200
    track(
        shop,
        {"type": "buy", "itemId": "b1", "sessionId": "s1"},
        {"type": "buy", "itemId": "g1", "sessionId": "s1"},
        {"type": "buy", "itemId": "b1", "sessionId": "s2"},
        {"type": "buy", "itemId": "g1", "sessionId": "s2"},
        {"type": "buy", "itemId": "g2", "sessionId": "s2"},
        {"type": "view", "itemId": "b3", "userId": "reader"},
    )
    wait_applied(shop, 6)
    # an item page: also bought with b1 (g1 twice, g2 once), then like b1 (b2 shares author)
    answer = recommend(shop, "mix", itemId="b1")
    assert set(ids(answer)) == {"g1", "g2", "b2", "b3"}
    via = {i["id"]: i["via"] for i in answer["items"]}
    assert via == {"g1": "cooccurrence", "g2": "cooccurrence", "b2": "similar", "b3": "similar"}
    # a user: seeds are their recent items; history gives those items back
    answer = recommend(shop, "mix", userId="reader")
    via = {i["id"]: i["via"] for i in answer["items"]}
    assert via["b3"] == "history" and via["b1"] == "similar"


def test_cold_start_and_the_fallback_chain(app_settings: Settings) -> None:
    scenario = {
        "sources": [{"model": "cooccurrence", "count": 5}],
        "fallback": [{"model": "static", "items": ["s1", "s2"], "count": 2}],
        "count": 2,
    }
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as c:
        assert c.put(V1 + "/scenarios/home", json=scenario).status_code == 200
        answer = recommend(c, "home", userId="new")  # nothing tracked: the static list
        assert answer["source"] == "fallback" and set(ids(answer)) == {"s1", "s2"}
        no_static = {"sources": [{"model": "popularity"}], "count": 2}
        assert c.put(V1 + "/scenarios/bare", json=no_static).status_code == 200
        empty = recommend(c, "bare")  # no events, no catalogue: nothing to recommend
        assert empty["items"] == [] and empty["eventId"] is None
        c.put(V1 + "/items", json=ITEMS)
        answer = recommend(c, "bare")  # the catalogue is the last resort
        assert answer["source"] == "fallback" and len(answer["items"]) == 2
        assert "g3" not in ids(answer)
        r = c.get(V1 + "/recommendations/missing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"


def test_forgetting_a_user_deletes_their_events_history_and_decisions(
    shop: TestClient, app_settings: Settings
) -> None:
    data = app_settings.data_dir
    logging_only(shop)
    track(
        shop,
        *[{"type": "buy", "itemId": "g2", "userId": "bob"} for _ in range(3)],
        {"type": "buy", "itemId": "b1", "userId": "carol"},
        {"type": "buy", "itemId": "b1", "userId": "dave"},
        {"type": "buy", "itemId": "g2", "userId": "dave"},
    )
    wait_applied(shop, 6)
    assert ids(recommend(shop, "popular"))[0] == "g2"
    served = recommend(shop, "popular", userId="bob")["eventId"]
    assert "g2" not in ids(recommend(shop, "popular", userId="bob"))  # bought
    r = shop.post(V1 + "/logs/forget", json={"feature": "userId", "value": "bob"})
    assert r.status_code == 200
    assert r.json()["deleted"] == 3 + 2  # three events, two recommendation decisions
    assert scalar(data, "SELECT count(*) FROM decisions WHERE event_id=?", (served,)) == 0
    assert scalar(data, "SELECT count(*) FROM tracked_events") == 3
    # every process rebuilds its models without bob: g2 is no longer the most popular,
    # and no longer left out for bob as bought
    poll(lambda: shop.get(V1 + "/tracking/status").json()["generation"] == 1)
    assert ids(recommend(shop, "popular"))[:2] == ["b1", "g2"]
    assert ids(recommend(shop, "popular", userId="bob"))[:2] == ["b1", "g2"]
    assert shop.delete(V1 + "/logs").status_code == 204
    assert scalar(data, "SELECT count(*) FROM tracked_events") == 0


def test_scenario_admin_api_and_azure_clients_keep_scenarios(shop: TestClient) -> None:
    assert set(shop.get(V1 + "/scenarios").json()) == {"popular"}
    got = shop.get(V1 + "/scenarios/popular").json()
    assert got["sources"][0]["model"] == "popularity" and got["count"] == 3
    for bad in (
        {"sources": []},
        {"sources": [{"model": "nope"}]},
        {"sources": [{"model": "popularity", "count": 51}]},
        {"sources": [{"model": "popularity"}], "extra": 1},
    ):
        r = shop.put(V1 + "/scenarios/bad", json=bad)
        assert r.status_code == 400, r.text
    assert shop.put(V1 + "/scenarios/bad%20name", json=POPULAR).status_code == 400
    # An Azure client PUTs the fields it knows: scenarios and tracking are kept.
    config = shop.get(V1 + "/configurations/service").json()
    azure = {k: v for k, v in config.items() if k not in ("scenarios", "tracking", "recommender")}
    assert shop.put(V1 + "/configurations/service", json=azure).status_code == 200
    assert set(shop.get(V1 + "/scenarios").json()) == {"popular"}
    assert shop.delete(V1 + "/scenarios/popular").status_code == 204
    assert shop.delete(V1 + "/scenarios/popular").status_code == 404
    assert shop.get(V1 + "/scenarios/popular").status_code == 404


def test_keys_client_may_track_and_recommend_only(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "data", client_keys=["c"], admin_keys=["a"])
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        admin, client = {"Ocp-Apim-Subscription-Key": "a"}, {"Ocp-Apim-Subscription-Key": "c"}
        assert c.put(V1 + "/scenarios/p", json=POPULAR, headers=client).status_code == 403
        assert c.put(V1 + "/scenarios/p", json=POPULAR, headers=admin).status_code == 200
        body = {"events": [{"type": "click", "itemId": "a"}]}
        assert c.post(V1 + "/tracking/events", json=body).status_code == 401
        assert c.post(V1 + "/tracking/events", json=body, headers=client).status_code == 200
        assert c.get(V1 + "/recommendations/p", headers=client).status_code == 200


def test_declared_scenarios_and_restarts_rebuild_the_models(tmp_path: Path) -> None:
    configuration = {"scenarios": {"top": POPULAR}, "learningMode": "LoggingOnly"}
    declared = {"shop": {"configuration": configuration}}
    s = make_settings(tmp_path / "data", loops=declared)
    shop_base = "/loops/shop" + V1
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        c.put(shop_base + "/items", json=ITEMS)
        track(c, {"type": "buy", "itemId": "b3", "userId": "u"}, base=shop_base)
        track(c, {"type": "click", "itemId": "g1", "userId": "u"}, base=shop_base)
        c.delete(shop_base + "/scenarios/top")  # the config file puts it back at start
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        status = c.get(shop_base + "/tracking/status").json()
        assert status["events"] == 2 and status["stored"] == 2
        r = c.get(shop_base + "/recommendations/top")
        assert [i["id"] for i in r.json()["items"]][:2] == ["b3", "g1"]


def test_an_event_tracked_by_one_process_reaches_another(app_settings: Settings) -> None:
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as main_app:
        main_app.put(V1 + "/scenarios/popular", json=POPULAR)
        with TestClient(
            create_app(app_settings, worker=True), raise_server_exceptions=False
        ) as worker:
            assert worker.get(V1 + "/tracking/status").json()["events"] == 0
            track(main_app, {"type": "buy", "itemId": "x", "userId": "u"})
            poll(lambda: worker.get(V1 + "/tracking/status").json()["events"] == 1, timeout=5)
            poll(lambda: "popular" in worker.get(V1 + "/scenarios").json(), timeout=5)
            assert ids(recommend(worker, "popular")) == ["x"]


def test_recommender_source_gets_the_request_ids(app_settings: Settings) -> None:
    with (
        recommender([{"id": "r1"}, {"id": "r2"}, {"id": "b1"}]) as rec,
        TestClient(create_app(app_settings), raise_server_exceptions=False) as c,
    ):
        c.put(V1 + "/items", json=ITEMS)
        config = c.get(V1 + "/configurations/service").json()
        config["recommender"] = {"url": rec.url + "/recs?user={userId}&n={topK}"}
        assert c.put(V1 + "/configurations/service", json=config).status_code == 200
        scenario = {"sources": [{"model": "recommender", "count": 3}], "count": 3}
        c.put(V1 + "/scenarios/upstream", json=scenario)
        answer = recommend(c, "upstream", userId="ann")
        assert set(ids(answer)) == {"r1", "r2", "b1"} and answer["source"] == "scenario"
        assert "user=ann" in rec.requests[-1][1]
        rec.mode = "error500"
        answer = recommend(c, "upstream", userId="ann")  # fails: the catalogue
        assert answer["source"] == "fallback"


def test_cli_puts_scenarios_and_imports_events(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "home.json").write_text('{"sources": [{"model": "popularity"}], "count": 2}')
    (tmp_path / "orders.csv").write_text(
        "type,itemId,userId,timestamp,value\nbuy,b1,u1,1767323045,9.5\nbuy,b2,u2,,\n"
    )
    runner = CliRunner()
    out = runner.invoke(
        main, ["scenarios", "put", "--data-dir", str(data), "home", str(tmp_path / "home.json")]
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["scenarios", "list", "--data-dir", str(data)])
    assert '"home"' in out.output
    out = runner.invoke(
        main, ["events", "import", "--data-dir", str(data), str(tmp_path / "orders.csv")]
    )
    assert out.exit_code == 0 and "imported 2 events" in out.output, out.output
    rows = query(data, "SELECT type, item, ts, value FROM tracked_events ORDER BY seq")
    assert rows[0] == ("buy", "b1", 1767323045.0, 9.5) and rows[1][3] is None
    out = runner.invoke(main, ["scenarios", "delete", "--data-dir", str(data), "home"])
    assert out.exit_code == 0
    out = runner.invoke(main, ["scenarios", "delete", "--data-dir", str(data), "home"])
    assert out.exit_code != 0 and "does not exist" in out.output
