"""Inference explanations: off by default, Azure's shape, and the driving
interaction on top for the preferred action of a trained model."""

from __future__ import annotations

import random

from fastapi.testclient import TestClient

from banditloop.join import labelled
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.ranking import plan
from banditloop.worlds import NewsWorld
from helpers import V1, actions


def news_plan(it):  # type: ignore[no-untyped-def]
    return plan([it.context], [(a.id, [a.features]) for a in it.actions], None, 50)


def test_driving_interaction_is_on_top_for_the_preferred_action() -> None:
    world = NewsWorld(0)
    policy = Policy(DEFAULT_POLICY)
    rng = random.Random(0)
    for _ in range(3000):
        it = world.next()
        p = news_plan(it)
        k = rng.randrange(len(p.vw_ids))
        reward = world.reward(it, p.vw_ids[k])
        policy.learn([labelled(p.example, k, 1 / len(p.vw_ids), -reward)])
    checked = 0
    while checked < 4:
        it = world.next()
        if world.best(it) == "politics":
            continue  # preferred in two opposite contexts: not a pairwise interaction
        checked += 1
        p = news_plan(it)
        explained = dict(zip(p.vw_ids, policy.explain(p.example), strict=True))
        best = explained[world.best(it)]
        assert len(best) <= 10
        scores = [abs(f["score"]) for f in best]
        assert scores == sorted(scores, reverse=True)
        top = best[0]["name"]  # the user or the time of day with the article
        assert "^" in top and ("user" in top or "time_of_day" in top), best
        assert best[0]["score"] > 0
    policy.close()


def test_rank_carries_explanations_only_when_enabled(client: TestClient) -> None:
    body = {"contextFeatures": [{"user": {"profileType": "x"}}], "actions": actions("a", "b")}
    assert "inferenceExplanation" not in client.post(V1 + "/rank", json=body).json()
    config = client.get(V1 + "/configurations/service").json()
    config["isInferenceExplainabilityEnabled"] = True
    assert client.put(V1 + "/configurations/service", json=config).status_code == 200
    answer = client.post(V1 + "/rank", json=body).json()
    assert [e["id"] for e in answer["inferenceExplanation"]] == ["a", "b"]
    for e in answer["inferenceExplanation"]:
        assert all(set(f) == {"name", "score"} for f in e["features"])
