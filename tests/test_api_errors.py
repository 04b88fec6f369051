"""Every client error answers with Azure's error body and x-ms-error-code, never a 500."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import V1, actions

JSON = {"content-type": "application/json"}
RANK = f"{V1}/rank"
REWARD = f"{V1}/events/e1/reward"
ACTIONS = actions("a", "b")


@dataclass
class Case:
    id: str
    path: str
    status: int
    code: str
    message: str | None = None  # a substring the message must contain
    method: str = "POST"
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- malformed bodies
    Case(
        "rank-malformed-json",
        RANK,
        400,
        "InvalidRankRequest",
        "not valid JSON",
        content=b'{"actions": [',
        headers=JSON,
    ),
    Case(
        "reward-malformed-json",
        REWARD,
        400,
        "InvalidRewardRequest",
        "not valid JSON",
        content=b"{value: 1}",
        headers=JSON,
    ),
    Case("rank-body-not-object", RANK, 400, "InvalidRankRequest", content=b"[1, 2]", headers=JSON),
    Case("rank-empty-body", RANK, 400, "InvalidRankRequest", content=b"", headers=JSON),
    Case("reward-empty-body", REWARD, 400, "InvalidRewardRequest", content=b"", headers=JSON),
    Case(
        "rank-no-actions-field",
        RANK,
        400,
        "InvalidRankRequest",
        json={"contextFeatures": [{"a": 1}]},
    ),
    # -- wrong types
    Case(
        "actions-not-a-list",
        RANK,
        400,
        "InvalidRankRequest",
        "actions",
        json={"actions": {"id": "a", "features": [{"x": 1}]}},
    ),
    Case(
        "action-id-number",
        RANK,
        400,
        "InvalidRankRequest",
        "id",
        json={"actions": [{"id": 1, "features": [{"x": 1}]}]},
    ),
    Case(
        "context-not-a-list",
        RANK,
        400,
        "InvalidRankRequest",
        "contextFeatures",
        json={"actions": ACTIONS, "contextFeatures": "young"},
    ),
    Case(
        "context-item-not-object",
        RANK,
        400,
        "InvalidRankRequest",
        json={"actions": ACTIONS, "contextFeatures": ["young"]},
    ),
    Case(
        "excluded-not-strings",
        RANK,
        400,
        "InvalidRankRequest",
        "excludedActions",
        json={"actions": ACTIONS, "excludedActions": [{"id": "a"}]},
    ),
    Case(
        "defer-not-bool",
        RANK,
        400,
        "InvalidRankRequest",
        "deferActivation",
        json={"actions": ACTIONS, "deferActivation": "later"},
    ),
    Case(
        "event-id-number",
        RANK,
        400,
        "InvalidRankRequest",
        "eventId",
        json={"actions": ACTIONS, "eventId": 7},
    ),
    Case(
        "reward-value-string", REWARD, 400, "InvalidRewardRequest", "value", json={"value": "high"}
    ),
    Case("reward-value-missing", REWARD, 400, "InvalidRewardRequest", json={"reward": 1}),
    Case("reward-value-null", REWARD, 400, "InvalidRewardRequest", json={"value": None}),
    # -- the original's rank rules
    Case(
        "zero-actions",
        RANK,
        400,
        "InvalidRankRequest",
        "Action count should be between 1 and 50.",
        json={"actions": []},
    ),
    Case(
        "fifty-one-actions",
        RANK,
        400,
        "InvalidRankRequest",
        "Action count should be between 1 and 50.",
        json={"actions": actions(*(f"a{i}" for i in range(51)))},
    ),
    Case(
        "duplicate-action-ids",
        RANK,
        400,
        "InvalidRankRequest",
        json={"actions": [*ACTIONS, {"id": "a", "features": [{"x": 9}]}]},
    ),
    Case(
        "empty-action-id",
        RANK,
        400,
        "InvalidRankRequest",
        "Action ids must not be empty.",
        json={"actions": [{"id": "", "features": [{"x": 1}]}]},
    ),
    Case(
        "action-id-257",
        RANK,
        400,
        "InvalidRankRequest",
        json={"actions": [{"id": "a" * 257, "features": [{"x": 1}]}]},
    ),
    Case(
        "action-without-features",
        RANK,
        400,
        "InvalidRankRequest",
        "Every action should have at least one non-null action feature.",
        json={"actions": [{"id": "a", "features": [{"x": 1}]}, {"id": "b"}]},
    ),
    Case(
        "unknown-excluded-id",
        RANK,
        400,
        "InvalidRankRequest",
        "All excluded action ID's must have corresponding action ID",
        json={"actions": ACTIONS, "excludedActions": ["a", "zzz"]},
    ),
    Case(
        "all-excluded",
        RANK,
        400,
        "InvalidRankRequest",
        json={"actions": ACTIONS, "excludedActions": ["a", "b"]},
    ),
    Case(
        "empty-event-id",
        RANK,
        400,
        "InvalidRankRequest",
        "EventId should be non-empty or null.",
        json={"actions": ACTIONS, "eventId": ""},
    ),
    Case(
        "event-id-257",
        RANK,
        400,
        "InvalidRankRequest",
        json={"actions": ACTIONS, "eventId": "e" * 257},
    ),
    Case(
        "reward-event-id-257",
        f"{V1}/events/{'e' * 257}/reward",
        400,
        "InvalidRewardRequest",
        json={"value": 1.0},
    ),
    # -- features
    Case(
        "feature-array-with-strings",
        RANK,
        400,
        "InvalidRankRequest",
        "Features should not contain array with non-number items.",
        json={"actions": ACTIONS, "contextFeatures": [{"tags": [1, "two", 3]}]},
    ),
    Case(
        "action-feature-array-with-strings",
        RANK,
        400,
        "InvalidRankRequest",
        "Features should not contain array with non-number items.",
        json={"actions": [{"id": "a", "features": [{"tags": ["x"]}]}]},
    ),
    Case(
        "feature-nan",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"x": NaN}]}]}',
        headers=JSON,
    ),
    # JSON that parses in Python but that no UTF-8 / 64-bit consumer can carry
    Case(
        "feature-int-beyond-float32",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"x": 1' + b"0" * 40 + b"}]}]}",
        headers=JSON,
    ),
    Case(
        "feature-value-lone-surrogate",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"x": "\\ud800"}]}]}',
        headers=JSON,
    ),
    Case(
        "action-feature-key-lone-surrogate",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"\\ud800": 1}]}]}',
        headers=JSON,
    ),
    Case(
        "context-feature-key-lone-surrogate",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"x": 1}]}],'
        b' "contextFeatures": [{"user": {"k\\udc00": 1}}]}',
        headers=JSON,
    ),
    Case(
        "action-id-lone-surrogate",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "\\ud800", "features": [{"x": 1}]}]}',
        headers=JSON,
    ),
    Case(
        "excluded-id-lone-surrogate",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"x": 1}]}, '
        b'{"id": "b", "features": [{"x": 2}]}], "excludedActions": ["\\ud800"]}',
        headers=JSON,
    ),
    Case(
        "event-id-lone-surrogate",
        RANK,
        400,
        "InvalidRankRequest",
        content=b'{"actions": [{"id": "a", "features": [{"x": 1}]}], "eventId": "\\ud800"}',
        headers=JSON,
    ),
    # -- rewards
    Case(
        "reward-nan", REWARD, 400, "InvalidRewardRequest", content=b'{"value": NaN}', headers=JSON
    ),
    Case(
        "reward-infinity",
        REWARD,
        400,
        "InvalidRewardRequest",
        content=b'{"value": Infinity}',
        headers=JSON,
    ),
    Case(
        "reward-minus-infinity",
        REWARD,
        400,
        "InvalidRewardRequest",
        content=b'{"value": -Infinity}',
        headers=JSON,
    ),
    Case(
        "reward-overflow",
        REWARD,
        400,
        "InvalidRewardRequest",
        content=b'{"value": 1e400}',
        headers=JSON,
    ),
    Case("reward-above-1", REWARD, 400, "InvalidRewardRequest", json={"value": 1.5}),
    Case("reward-below-minus-1", REWARD, 400, "InvalidRewardRequest", json={"value": -1.01}),
    # -- routing
    Case("unknown-path", f"{V1}/nothing-here", 404, "ResourceNotFound", json={}),
    Case(
        "unknown-version",
        "/personalizer/v9.9/rank",
        404,
        "ResourceNotFound",
        json={"actions": ACTIONS},
    ),
    Case(
        "unknown-loop",
        "/loops/nope/personalizer/v1.0/rank",
        404,
        "ResourceNotFound",
        json={"actions": ACTIONS},
    ),
    Case("rank-with-get", RANK, 405, "MethodNotAllowed", method="GET"),
    Case("reward-with-put", REWARD, 405, "MethodNotAllowed", method="PUT", json={"value": 1}),
    Case(
        "activate-with-delete", f"{V1}/events/e1/activate", 405, "MethodNotAllowed", method="DELETE"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_answers(client: TestClient, case: Case) -> None:
    r = client.request(
        case.method, case.path, json=case.json, content=case.content, headers=case.headers
    )
    assert r.status_code != 500, r.text
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message"} <= set(err) <= {"code", "message", "target", "details"}, err
    assert err["code"] == case.code, err
    assert isinstance(err["message"], str) and err["message"], err
    if case.message is not None:
        assert case.message in err["message"], err
    assert r.headers["x-ms-error-code"] == case.code
