"""The learning loop end to end: rewards, default rewards, deferred events, restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import Settings
from conftest import Server
from helpers import V1, actions, pmf_of, poll, query, scalar

RANK = f"{V1}/rank"
CONTEXT = [{"user": {"name": "alice", "segment": "sports"}}]


def _rank(http: TestClient | httpx.Client, event_id: str, **extra: Any) -> dict[str, Any]:
    body = {"contextFeatures": CONTEXT, "actions": actions("a", "b", "c"), "eventId": event_id}
    r = http.post(RANK, json={**body, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _reward(http: TestClient | httpx.Client, event_id: str, value: float) -> None:
    r = http.post(f"{V1}/events/{event_id}/reward", json={"value": value})
    assert r.status_code == 204, r.text


def _learned_in(data_dir: Path, event_id: str) -> int | None:
    return scalar(data_dir, "SELECT learned_in FROM decisions WHERE event_id=?", (event_id,))


def _trainer_stats(client: TestClient) -> Any:
    return client.app.state.registry.loops["default"].trainer.stats  # type: ignore[attr-defined]


def test_rewards_shift_the_pmf(client: TestClient) -> None:
    loop = client.app.state.registry.loops["default"]  # type: ignore[attr-defined]
    loop.trainer.stop()  # learned in-process after each reward: the same run every time
    first = pmf_of(_rank(client, "warmup"))
    assert first == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=0.01)
    for i in range(200):
        body = _rank(client, f"learn-{i}")
        pmf = pmf_of(body)
        if pmf["b"] > 0.8:
            break
        # earliest aggregation: the reward closes the event at once
        _reward(client, body["eventId"], 1.0 if body["rewardActionId"] == "b" else 0.0)
        assert loop.trainer.drain(time.time() + 3600) == 1 + (i == 0)  # (and the warm-up)
    else:
        raise AssertionError(f"pmf did not move toward b after 200 events: {pmf}")
    assert max(pmf, key=pmf.__getitem__) == "b"
    assert pmf["a"] < 0.2 and pmf["c"] < 0.2
    assert _trainer_stats(client).learned == i + 1


def test_unrewarded_event_learned_after_window(client: TestClient, settings: Settings) -> None:
    body = _rank(client, "quiet")
    ts, close_at, learned = query(
        settings.data_dir, "SELECT ts, close_at, learned_in FROM decisions WHERE event_id='quiet'"
    )[0]
    assert learned is None
    assert close_at == pytest.approx(ts + 1.0)
    assert body["eventId"] == "quiet"

    learned = poll(lambda: _learned_in(settings.data_dir, "quiet"), timeout=10, interval=0.02)
    assert time.time() >= ts + 1.0, "learned before its reward window closed"
    assert learned >= 1
    # the trainer counts the event once its batch is committed: wait for the count
    stats = poll(lambda: (s := _trainer_stats(client)).learned and s, timeout=10, interval=0.02)
    assert (stats.learned, stats.skipped) == (1, 0)


@pytest.fixture(params=[1.0, -1.0], ids=["default+1", "default-1"])
def default_reward_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        loop={"rewardWaitTime": "PT1S", "defaultReward": request.param},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.default_reward = request.param  # type: ignore[attr-defined]
        yield c


def test_default_reward_is_what_is_learned(default_reward_client: TestClient) -> None:
    """Only `a` can be chosen; with no reward the default one decides if `a` gains or loses."""
    client = default_reward_client
    for i in range(3):
        body = _rank(client, f"only-a-{i}", excludedActions=["b", "c"])
        assert body["rewardActionId"] == "a"
    poll(lambda: _trainer_stats(client).learned == 3, timeout=10)
    pmf = pmf_of(_rank(client, "after", deferActivation=True))
    if client.default_reward > 0:  # type: ignore[attr-defined]
        assert pmf["a"] > 0.8, pmf
    else:
        assert pmf["a"] < pmf["b"] and pmf["a"] < pmf["c"], pmf


def test_deferred_event_never_activated_is_not_learned(
    client: TestClient, settings: Settings
) -> None:
    # were it learned, the reward of 1 for `a` (the only choice) would make `a` the favourite
    body = _rank(client, "deferred-1", excludedActions=["b", "c"], deferActivation=True)
    assert body["rewardActionId"] == "a"
    _reward(client, "deferred-1", 1.0)
    assert _learned_in(settings.data_dir, "deferred-1") is None  # no early close without Activate

    poll(lambda: _learned_in(settings.data_dir, "deferred-1"), timeout=10)  # handled ...
    stats = _trainer_stats(client)
    assert (stats.learned, stats.skipped) == (0, 1)  # ... but not learned
    pmf = pmf_of(_rank(client, "probe-1", deferActivation=True))
    assert pmf == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=0.01)

    # the same, activated: learned at once, and the model moves
    _rank(client, "deferred-2", excludedActions=["b", "c"], deferActivation=True)
    assert client.post(f"{V1}/events/deferred-2/activate").status_code == 204
    _reward(client, "deferred-2", 1.0)
    poll(lambda: _learned_in(settings.data_dir, "deferred-2"), timeout=5)
    assert (stats.learned, stats.skipped) == (1, 1)
    pmf = pmf_of(_rank(client, "probe-2", deferActivation=True))
    assert pmf["a"] > 0.8, pmf


def test_restart_keeps_the_model(server: Server) -> None:
    data_dir = server.data_dir
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for i in range(30):
            body = _rank(http, f"train-{i}")
            _reward(http, body["eventId"], 1.0 if body["rewardActionId"] == "c" else 0.0)
        poll(
            lambda: (
                scalar(data_dir, "SELECT count(*) FROM decisions WHERE learned_in IS NULL") == 0
            ),
            timeout=10,
        )
        # deferred and never activated: the probes themselves are never learned
        before = pmf_of(_rank(http, "probe-before", deferActivation=True))
    assert before["c"] > 0.8, before

    server.stop()
    saved = query(data_dir, "SELECT number, events_learned FROM models ORDER BY number DESC")
    assert saved and saved[0][1] == 30
    server.start()

    with httpx.Client(base_url=server.url, timeout=10) as http:
        after = pmf_of(_rank(http, "probe-after", deferActivation=True))
    assert after == before
