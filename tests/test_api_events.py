"""Rank, Reward and Activate over HTTP on every base path, against a real SQLite store."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from banditloop.config import Settings
from helpers import BASE_IDS, BASES, V1, actions, pmf_of, query, url

pytestmark = pytest.mark.parametrize("base", BASES, ids=BASE_IDS)

CONTEXT = [{"user": {"age": 33, "country": "NL"}}, {"weather": "sunny"}]


def _check_rank_response(body: dict, ids: list[str], event_id: str | None = None) -> None:
    assert set(body) == {"ranking", "eventId", "rewardActionId"}
    assert sorted(r["id"] for r in body["ranking"]) == sorted(ids)
    for r in body["ranking"]:
        assert set(r) == {"id", "probability"}
        assert 0.0 <= r["probability"] <= 1.0
    assert math.isclose(sum(r["probability"] for r in body["ranking"]), 1.0, abs_tol=1e-6)
    assert body["rewardActionId"] in ids
    assert body["ranking"][0]["id"] == body["rewardActionId"]
    if event_id is not None:
        assert body["eventId"] == event_id


def test_rank_reward_activate(client: TestClient, base: tuple[str, str]) -> None:
    event_id = uuid.uuid4().hex
    r = client.post(
        url(base, "/rank"),
        json={"contextFeatures": CONTEXT, "actions": actions("a", "b", "c"), "eventId": event_id},
    )
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    _check_rank_response(r.json(), ["a", "b", "c"], event_id)

    r = client.post(url(base, f"/events/{event_id}/reward"), json={"value": 0.5})
    assert r.status_code == 204, r.text
    assert r.content == b""
    r = client.post(url(base, f"/events/{event_id}/activate"))
    assert r.status_code == 204, r.text
    assert r.content == b""


def test_reward_and_activate_unknown_event(client: TestClient, base: tuple[str, str]) -> None:
    never_seen = f"never-seen-{uuid.uuid4().hex}"
    assert (
        client.post(url(base, f"/events/{never_seen}/reward"), json={"value": 1}).status_code == 204
    )
    assert client.post(url(base, f"/events/{never_seen}/activate")).status_code == 204


def test_excluded_actions_listed_with_zero_probability(
    client: TestClient, base: tuple[str, str]
) -> None:
    for i in range(10):  # several event ids: the sampler must never pick an excluded action
        r = client.post(
            url(base, "/rank"),
            json={
                "contextFeatures": CONTEXT,
                "actions": actions("a", "b", "c", "d"),
                "excludedActions": ["a", "c"],
                "eventId": f"excl-{i}",
            },
        )
        assert r.status_code == 201, r.text
        body = r.json()
        _check_rank_response(body, ["a", "b", "c", "d"], f"excl-{i}")
        pmf = pmf_of(body)
        assert pmf["a"] == 0.0
        assert pmf["c"] == 0.0
        assert pmf["b"] > 0 and pmf["d"] > 0
        assert body["rewardActionId"] in {"b", "d"}
        assert [x["id"] for x in body["ranking"][-2:]] == ["a", "c"]


def test_event_id_generated(client: TestClient, base: tuple[str, str]) -> None:
    seen = set()
    for _ in range(3):
        r = client.post(url(base, "/rank"), json={"actions": actions("a", "b")})
        assert r.status_code == 201, r.text
        event_id = r.json()["eventId"]
        assert re.fullmatch(r"[0-9a-f]{32}", event_id), event_id
        seen.add(event_id)
    assert len(seen) == 3


def test_rank_with_only_actions(client: TestClient, base: tuple[str, str]) -> None:
    r = client.post(url(base, "/rank"), json={"actions": actions("x", "y", "z")})
    assert r.status_code == 201, r.text
    _check_rank_response(r.json(), ["x", "y", "z"])
    r = client.post(url(base, "/rank"), json={"actions": actions("solo")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rewardActionId"] == "solo"
    assert body["ranking"] == [{"id": "solo", "probability": 1.0}]


def test_retried_rank_is_idempotent_and_logged_once(
    client: TestClient, settings: Settings, base: tuple[str, str]
) -> None:
    event_id = f"retry-{uuid.uuid4().hex}"
    request = {"contextFeatures": CONTEXT, "actions": actions("a", "b", "c"), "eventId": event_id}
    first = client.post(url(base, "/rank"), json=request)
    assert first.status_code == 201, first.text
    # the same request with its keys in another order is the same request
    again = client.post(url(base, "/rank"), json=dict(reversed(list(request.items()))))
    assert again.status_code == 201, again.text
    assert again.content == first.content
    # through another base path too: the event id belongs to the loop, not the path
    other = client.post(f"{V1}/rank", json=request)
    assert other.status_code == 201, other.text
    assert other.content == first.content

    rows = query(
        settings.data_dir,
        "SELECT response FROM decisions WHERE loop='default' AND event_id=?",
        (event_id,),
    )
    assert len(rows) == 1
    assert bytes(rows[0][0]) == first.content
    assert query(settings.data_dir, "SELECT count(*) FROM decisions")[0][0] == 1


def _changed(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**request, "actions": actions("a", "b")},
        {**request, "contextFeatures": [{"weather": "rainy"}]},
        {**request, "actions": actions("c", "b", "a")},
    ]


def test_same_event_id_different_body_is_a_new_decision(
    client: TestClient, settings: Settings, base: tuple[str, str]
) -> None:
    """As Azure answered (docs/operator-guide.md); tests/test_event_reuse.py has the rest."""
    event_id = f"reuse-{uuid.uuid4().hex}"
    request = {"contextFeatures": CONTEXT, "actions": actions("a", "b", "c"), "eventId": event_id}
    first = client.post(url(base, "/rank"), json=request)
    assert first.status_code == 201, first.text
    answers = [client.post(url(base, "/rank"), json=body) for body in _changed(request)]
    assert [r.status_code for r in answers] == [201, 201, 201]
    assert {r.json()["eventId"] for r in answers} == {event_id}
    again = [client.post(url(base, "/rank"), json=b) for b in [request, *_changed(request)]]
    assert [r.content for r in again] == [first.content] + [r.content for r in answers]
    rows = query(settings.data_dir, "SELECT response FROM decisions WHERE event_id=?", (event_id,))
    assert [bytes(row[0]) for row in rows] == [first.content] + [r.content for r in answers]


def test_same_event_id_different_body_conflicts_if_the_loop_refuses(
    client: TestClient, settings: Settings, base: tuple[str, str]
) -> None:
    config = client.get(url(base, "/configurations/service")).json()
    refusing = {**config, "eventIdReuse": "refuse"}
    put = client.put(url(base, "/configurations/service"), json=refusing)
    assert put.status_code == 200, put.text
    assert put.json()["eventIdReuse"] == "refuse"
    event_id = f"conflict-{uuid.uuid4().hex}"
    request = {"contextFeatures": CONTEXT, "actions": actions("a", "b", "c"), "eventId": event_id}
    first = client.post(url(base, "/rank"), json=request)
    assert first.status_code == 201, first.text

    for body in _changed(request):
        r = client.post(url(base, "/rank"), json=body)
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert set(err) >= {"code", "message"}
        assert err["code"] and err["message"]
        assert r.headers["x-ms-error-code"] == err["code"]

    rows = query(settings.data_dir, "SELECT response FROM decisions WHERE event_id=?", (event_id,))
    assert [bytes(row[0]) for row in rows] == [first.content]
    # the original request still gets its original answer
    assert client.post(url(base, "/rank"), json=request).content == first.content
