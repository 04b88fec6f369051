"""Microsoft's own Python SDKs, unchanged, against a real banditloop server."""

from __future__ import annotations

import re

import pytest
from azure.ai.personalizer import PersonalizerClient
from azure.cognitiveservices.personalizer import PersonalizerClient as LegacyClient
from azure.cognitiveservices.personalizer.models import (
    ErrorResponseException,
    RankableAction,
    RankRequest,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from msrest.authentication import CognitiveServicesCredentials

from conftest import Server
from helpers import actions, query

CONTEXT = [{"user": {"segment": "sports"}}, {"device": "mobile"}]


def _pmf(ranking: list) -> dict[str, float]:
    return {r["id"]: r["probability"] for r in ranking}


def test_azure_ai_personalizer(server: Server) -> None:
    client = PersonalizerClient(endpoint=server.url, credential=AzureKeyCredential("x"))
    with client:
        full = client.rank(
            {"contextFeatures": CONTEXT, "actions": actions("a", "b", "c"), "eventId": "sdk-1"}
        )
        assert set(full) == {"ranking", "eventId", "rewardActionId"}
        assert full["eventId"] == "sdk-1"
        assert full["rewardActionId"] in {"a", "b", "c"}
        assert abs(sum(_pmf(full["ranking"]).values()) - 1.0) <= 1e-12  # normalized, as Azure
        client.reward("sdk-1", {"value": 1.0})
        client.activate("sdk-1")

        only_actions = client.rank({"actions": actions("x", "y")})
        assert re.fullmatch(r"[0-9a-f]{32}", only_actions["eventId"])
        assert set(_pmf(only_actions["ranking"])) == {"x", "y"}
        client.reward(only_actions["eventId"], {"value": 0.0})

        excluded = client.rank(
            {
                "contextFeatures": CONTEXT,
                "actions": actions("a", "b", "c"),
                "excludedActions": ["b"],
                "eventId": "sdk-2",
                "deferActivation": True,
            }
        )
        assert excluded["rewardActionId"] in {"a", "c"}
        assert _pmf(excluded["ranking"])["b"] == 0.0
        client.activate("sdk-2")

        client.reward("sdk-never-ranked", {"value": 0.5})
        client.activate("sdk-never-ranked")

        with pytest.raises(HttpResponseError) as info:
            client.rank({"actions": []})
        assert info.value.status_code == 400
        assert info.value.error is not None
        assert info.value.error.code == "InvalidRankRequest"

    rows = query(server.data_dir, "SELECT event_id, deferred FROM decisions ORDER BY seq")
    assert [r[0] for r in rows] == ["sdk-1", only_actions["eventId"], "sdk-2"]
    assert [r[1] for r in rows] == [0, 0, 1]
    rewards = query(server.data_dir, "SELECT event_id, value FROM rewards ORDER BY seq")
    assert rewards == [
        ("sdk-1", 1.0),
        (only_actions["eventId"], 0.0),
        ("sdk-never-ranked", 0.5),
    ]
    activations = query(server.data_dir, "SELECT event_id FROM activations ORDER BY seq")
    assert [a[0] for a in activations] == ["sdk-1", "sdk-2", "sdk-never-ranked"]


def test_azure_cognitiveservices_personalizer(server: Server) -> None:
    client = LegacyClient(server.url, CognitiveServicesCredentials("x"))
    acts = [RankableAction(id=a["id"], features=a["features"]) for a in actions("a", "b", "c")]

    response = client.rank(RankRequest(actions=acts, context_features=CONTEXT, event_id="v1-1"))
    assert response.event_id == "v1-1"
    assert response.reward_action_id in {"a", "b", "c"}
    assert {r.id for r in response.ranking} == {"a", "b", "c"}
    assert sum(r.probability for r in response.ranking) == pytest.approx(1.0)
    client.events.reward("v1-1", 1.0)
    client.events.activate("v1-1")

    only_actions = client.rank(RankRequest(actions=acts))
    assert re.fullmatch(r"[0-9a-f]{32}", only_actions.event_id)

    excluded = client.rank(
        RankRequest(
            actions=acts,
            context_features=CONTEXT,
            excluded_actions=["a", "c"],
            event_id="v1-2",
            defer_activation=True,
        )
    )
    assert excluded.reward_action_id == "b"
    assert {r.id: r.probability for r in excluded.ranking} == {"b": 1.0, "a": 0.0, "c": 0.0}
    client.events.activate("v1-2")
    client.events.reward("v1-never-ranked", -0.5)

    with pytest.raises(ErrorResponseException) as info:
        client.rank(RankRequest(actions=acts, excluded_actions=["nope"]))
    assert info.value.response.status_code == 400
    assert info.value.error.error.code == "InvalidRankRequest"

    rows = query(server.data_dir, "SELECT event_id FROM decisions ORDER BY seq")
    assert [r[0] for r in rows] == ["v1-1", only_actions.event_id, "v1-2"]
    rewards = query(server.data_dir, "SELECT event_id, value FROM rewards ORDER BY seq")
    assert rewards == [("v1-1", 1.0), ("v1-never-ranked", -0.5)]
