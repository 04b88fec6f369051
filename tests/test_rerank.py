"""Client-side re-ranking (`rerank: true`, `upstreamScore`), the plain Rank left as it
was, and the measured value of re-ranking through a real server."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import Settings
from banditloop.loop import Loop, body_hash
from banditloop.ranking import plan
from banditloop.store.events import EXAMPLE  # the example whole (schema m009)
from helpers import V1, query

RANK = V1 + "/rank"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UPSTREAM = [
    {"id": "a", "features": [{"kind": "a"}], "upstreamScore": 0.9},
    {"id": "b", "features": [{"kind": "b"}], "upstreamScore": 0.6},
    {"id": "c", "features": [{"kind": "c"}]},
    {"id": "d", "features": [{"kind": "d"}], "upstreamScore": -2},
]


def logged(data_dir: Path, event_id: str) -> tuple[str | None, dict[str, Any], str]:
    source, example, rhash = query(
        data_dir,
        f"SELECT source, {EXAMPLE}, request_hash FROM decisions WHERE event_id=?",
        (event_id,),
    )[0]
    return source, orjson.loads(example), rhash


def the_loop(client: TestClient) -> Loop:
    loop: Loop = client.app.state.registry.loops["default"]  # type: ignore[attr-defined]
    return loop


def test_rerank_adds_upstream_features_and_returns_the_full_list(
    client: TestClient, settings: Settings
) -> None:
    body = {"contextFeatures": [{"u": 1}], "actions": UPSTREAM, "rerank": True, "eventId": "r1"}
    r = client.post(RANK, json=body)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert set(answer) == {"ranking", "eventId", "rewardActionId"}  # Azure's shape
    ids = [a["id"] for a in answer["ranking"]]
    assert sorted(ids) == ["a", "b", "c", "d"]
    assert ids[0] == answer["rewardActionId"]
    probs = {a["id"]: a["probability"] for a in answer["ranking"]}
    assert sum(probs.values()) == pytest.approx(1.0)
    # The rest by the model's preference; equal probabilities keep the upstream order.
    assert ids[1:] == sorted(ids[1:], key=lambda i: (-probs[i], "abcd".index(i)))
    source, example, _ = logged(settings.data_dir, "r1")
    assert source == "client"
    assert [a["j"][-1] for a in example["_multi"]] == [
        {"upstream": {"position": 1, "score": 0.9}},
        {"upstream": {"position": 2, "score": 0.6}},
        {"upstream": {"position": 3}},
        {"upstream": {"position": 4, "score": -2}},
    ]
    assert example["_multi"][0]["j"][0] == {"kind": "a"}
    assert the_loop(client).counters["rank_client"] == 1


def test_excluded_actions_keep_their_upstream_position(
    client: TestClient, settings: Settings
) -> None:
    body = {"actions": UPSTREAM, "rerank": True, "excludedActions": ["b"], "eventId": "x"}
    answer = client.post(RANK, json=body).json()
    assert answer["ranking"][-1] == {"id": "b", "probability": 0.0}
    _, example, _ = logged(settings.data_dir, "x")
    positions = {a["_tag"]: a["j"][-1]["upstream"]["position"] for a in example["_multi"]}
    assert positions == {"a": 1, "c": 3, "d": 4}


def test_a_plain_rank_is_unchanged(client: TestClient, settings: Settings) -> None:
    actions = [{"id": a["id"], "features": a["features"]} for a in UPSTREAM]
    body = {"contextFeatures": [{"u": 1}], "actions": actions, "eventId": "p1"}
    answer = client.post(RANK, json=body).json()
    assert set(answer) == {"ranking", "eventId", "rewardActionId"}
    source, example, rhash = logged(settings.data_dir, "p1")
    assert source is None
    expected = plan([{"u": 1}], [(a["id"], a["features"]) for a in actions], None).example
    assert orjson.dumps(example) == expected.encode()
    # The identity of the request is what it was before the extension fields existed.
    old_shape = {
        "contextFeatures": [{"u": 1}],
        "actions": actions,
        "excludedActions": None,
        "eventId": "p1",
        "deferActivation": False,
    }
    assert rhash == body_hash(old_shape)


def test_upstream_score_without_rerank_is_ignored(client: TestClient, settings: Settings) -> None:
    client.post(RANK, json={"actions": UPSTREAM, "eventId": "s", "rerank": False})
    source, example, _ = logged(settings.data_dir, "s")
    assert source is None
    assert all("upstream" not in str(a["j"]) for a in example["_multi"])


def test_catalogue_features_fill_in_for_actions_without_features(
    client: TestClient, settings: Settings
) -> None:
    items = [{"id": "a", "features": [{"brand": "acme"}]}, {"id": "b", "features": [{"x": 1}]}]
    assert client.put(V1 + "/items", json=items).status_code == 200
    actions = [{"id": "a"}, {"id": "b", "features": [{"own": True}]}, {"id": "new"}]
    r = client.post(RANK, json={"actions": actions, "rerank": True, "eventId": "cat"})
    assert r.status_code == 201, r.text
    _, example, _ = logged(settings.data_dir, "cat")
    assert [a["j"] for a in example["_multi"]] == [
        [{"brand": "acme"}, {"upstream": {"position": 1}}],
        [{"own": True}, {"upstream": {"position": 2}}],  # sent features win
        [{"upstream": {"position": 3}}],
    ]


def test_apprentice_mode_serves_the_upstream_first(client: TestClient) -> None:
    config = client.get(V1 + "/configurations/service").json()
    client.put(V1 + "/configurations/service", json={**config, "learningMode": "Apprentice"})
    for i in range(10):
        body = {"actions": UPSTREAM, "rerank": True, "eventId": f"ap{i}"}
        assert client.post(RANK, json=body).json()["rewardActionId"] == "a"


def test_model_failure_keeps_the_upstream_order(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = the_loop(client)

    def broken(example: str) -> list[float]:
        raise RuntimeError("vw failed")

    monkeypatch.setattr(loop.policy, "pmf", broken)
    answer = client.post(RANK, json={"actions": UPSTREAM, "rerank": True}).json()
    assert [a["id"] for a in answer["ranking"]] == ["a", "b", "c", "d"]
    assert answer["rewardActionId"] == "a"
    assert loop.counters["model_failure"] == 1


def test_invalid_upstream_scores_are_400(client: TestClient) -> None:
    bad = [{"id": "a", "features": [{"k": 1}], "upstreamScore": "high"}]
    r = client.post(RANK, json={"actions": bad, "rerank": True})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "InvalidRankRequest"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "rerank_recommender", EXAMPLES / "rerank_recommender.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["rerank_recommender"] = module
    spec.loader.exec_module(module)
    return module


def test_reranking_earns_more_than_the_upstream_order(tmp_path: Path) -> None:
    """The worked example of docs/reranking.md, shortened (and rewarded with the click
    probability rather than a noisy click): through HTTP, the re-ranked choice earns
    more than the recommender's own first item. No trainer thread: the test learns
    everything closed after every 50 visits (rewards wait an hour, so none is late on
    a slow machine), so the figures are the same on every machine."""
    example = _example()
    settings = Settings(data_dir=tmp_path / "data", trainer=False, loop={"rewardWaitTime": "PT1H"})
    with TestClient(create_app(settings)) as client:
        loop = the_loop(client)
        result = example.play(
            client, events=600, seed=3, clicks=False,
            learn=lambda: loop.trainer.drain(time.time() + 7200),
        )  # fmt: skip
    ours, theirs = result.last(300)
    assert theirs == pytest.approx(0.164, abs=0.02)  # the bestseller, for everyone
    assert ours > theirs + 0.08, (ours, theirs)
    assert result.dcg > result.upstream_dcg
