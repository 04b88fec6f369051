"""A reused event ID (docs/operator-guide.md): another body is another decision, as Azure
took it; a retry (same body) gets the first answer and is logged once; a Reward or
Activate is for the newest decision of its event ID; each decision is learned and
exported with its own rewards. ``eventIdReuse: "refuse"`` keeps the strict 409.

On both engines, through ``Loop`` (the HTTP layer only translates; the SDKs' own
scenarios are in test_sdk_scenarios.py)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson
import pytest

from banditloop import Conflict, Loop, RankInput, Settings
from banditloop.config import ServiceConfiguration
from banditloop.loop import body_hash
from banditloop.policy import DEFAULT_POLICY
from banditloop.store import SqlStore
from banditloop.store.base import LoopRecord

ACTIONS = [("news", [{"topic": "news"}]), ("sport", [{"topic": "sport"}])]
LATER = 10.0  # seconds: past the reward window (PT1S)


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"})


def make_loop(store: SqlStore, settings: Settings, **config: Any) -> Loop:
    wire = ServiceConfiguration.model_validate({"rewardWaitTime": "PT1S", **config})
    record = LoopRecord("lib", wire.model_dump(mode="json"), "lib", DEFAULT_POLICY, time.time())
    store.put_loop(record).result()
    return Loop(store, settings, record)  # no trainer thread: the test drives it


def rank(loop: Loop, event_id: str, user: str, defer: bool = False) -> bytes:
    context = [{"user": user}]
    ident = {"c": context, "a": ACTIONS, "d": defer}
    req = RankInput(context, ACTIONS, None, event_id, defer, body_hash(ident))
    return asyncio.run(loop.rank(req))


def decisions(store: SqlStore) -> list[dict[str, Any]]:
    return [
        {
            "user": orjson.loads(e.decision.example)["FromUrl"][0]["user"],
            "rewards": [v for _, v, _ in e.rewards],
            "activated": bool(e.activations),
            "outcome": e.outcome,
        }
        for e in store.iter_events("lib", 0, time.time() + LATER, processed_only=False)
    ]


def test_a_reused_event_id_is_a_new_decision_with_its_own_rewards(
    store: SqlStore, settings: Settings
) -> None:
    loop = make_loop(store, settings)
    try:
        first = rank(loop, "page-1", "ann")
        asyncio.run(loop.reward("page-1", 1.0))  # for ann's decision: the only one yet
        second = rank(loop, "page-1", "bob")  # another body: 201, a decision of its own
        assert orjson.loads(second)["eventId"] == "page-1"
        assert rank(loop, "page-1", "ann") == first  # a retry: the first answer, not logged
        asyncio.run(loop.reward("page-1", 0.5))  # for the newest: bob's
        assert decisions(store) == [
            {"user": "ann", "rewards": [1.0], "activated": False, "outcome": None},
            {"user": "bob", "rewards": [0.5], "activated": False, "outcome": None},
        ]
        assert loop.trainer.drain(time.time() + LATER) == 2
        learned = [d["outcome"]["r"] for d in decisions(store)]
        assert learned == [[1.0], [0.5]]  # each learned with its own reward
        lines = [orjson.loads(line) for line in loop.export(0, time.time() + LATER)]
        exported = [
            (x["EventId"], x["c"]["FromUrl"][0]["user"], [o["v"] for o in x["o"]]) for x in lines
        ]
        assert exported == [("page-1", "ann", [1.0]), ("page-1", "bob", [0.5])]
    finally:
        loop.close()


def test_activate_is_for_the_newest_decision(store: SqlStore, settings: Settings) -> None:
    loop = make_loop(store, settings)
    try:
        rank(loop, "session-7", "ann", defer=True)
        rank(loop, "session-7", "bob", defer=True)
        asyncio.run(loop.activate("session-7"))
        asyncio.run(loop.reward("session-7", 1.0))
        assert [(d["user"], d["activated"], d["rewards"]) for d in decisions(store)] == [
            ("ann", False, []),
            ("bob", True, [1.0]),
        ]
        assert loop.trainer.drain(time.time() + LATER) == 2
        outcomes = [d["outcome"] for d in decisions(store)]
        assert outcomes[0]["t"] is None  # never activated: not learned
        assert outcomes[1]["r"] == [1.0] and outcomes[1]["t"] is not None
    finally:
        loop.close()


def test_refuse_keeps_the_strict_conflict(store: SqlStore, settings: Settings) -> None:
    loop = make_loop(store, settings, eventIdReuse="refuse")
    try:
        first = rank(loop, "e1", "ann")
        with pytest.raises(Conflict, match="already used for a different Rank request"):
            rank(loop, "e1", "bob")
        assert rank(loop, "e1", "ann") == first  # a retry is still a retry
        assert [d["user"] for d in decisions(store)] == ["ann"]
    finally:
        loop.close()


def test_the_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="eventIdReuse"):
        ServiceConfiguration.model_validate({"eventIdReuse": "sometimes"})
    assert ServiceConfiguration().eventIdReuse == "accept"


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 3 * 2047 + 5])
def test_the_body_hash_is_sha256_of_the_sorted_body_at_every_length(size: int) -> None:
    # fed to hashlib in pieces (loop.sha256_holding_gil): the stored hashes stay the same
    body = {"z": "x" * size, "a": 1}
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert body_hash(body) == hashlib.sha256(data).hexdigest()[:32]
