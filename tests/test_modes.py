"""Learning modes against a real server process: Apprentice (show the baseline, learn to
imitate it, report how well it does) and LoggingOnly (show and log the baseline, learn
nothing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from banditloop.sampling import sample_index, seed_for
from conftest import Server
from helpers import TIMEOUT, V1, create_loop, pmf_of, poll, query

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("modes")

CB = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
CCB = "--ccb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
ACTIONS = [{"id": a, "features": [{"kind": a}]} for a in ("a", "b", "c")]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("modes") / "data").start()
    yield s
    s.stop()


def new_loop(srv: Server, policy: str = CB, **configuration: Any) -> str:
    """A fresh named loop; returns its v1.0 base URL."""
    return f"{srv.url}/loops/{create_loop(srv.url, 'mode', policy, **configuration)}{V1}"


def loop_name(base: str) -> str:
    return base.split("/loops/", 1)[1].split("/", 1)[0]


def set_mode(base: str, mode: str) -> dict[str, Any]:
    """PUT the configuration with only learningMode changed, as the original required."""
    config = httpx.get(base + "/configurations/service", timeout=TIMEOUT).json()
    r = httpx.put(
        base + "/configurations/service", json={**config, "learningMode": mode}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    assert r.json()["learningMode"] == mode
    return dict(r.json())


def rows(srv: Server, base: str) -> list[dict[str, Any]]:
    found = query(
        srv.data_dir,
        "SELECT event_id, action_ids, slots, mode, outcome FROM decisions WHERE loop=? "
        "ORDER BY seq",
        (loop_name(base),),
    )
    return [
        {
            "event_id": e,
            "action_ids": json.loads(a),
            "slots": json.loads(s),
            "mode": m,
            "outcome": None if o is None else json.loads(o),
        }
        for e, a, s, m, o in found
    ]


def all_learned(srv: Server, base: str, n: int) -> list[dict[str, Any]]:
    """Wait until ``n`` non-deferred events have closed and been handled by the trainer."""

    def done() -> list[dict[str, Any]]:
        handled = [r for r in rows(srv, base) if not r["event_id"].startswith("probe")]
        return handled if len(handled) == n and all(r["outcome"] for r in handled) else []

    return poll(done, timeout=20)


def rank(base: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(base + "/rank", json=body, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return dict(r.json())


def reward(base: str, event_id: str, value: float) -> None:
    assert (
        httpx.post(
            f"{base}/events/{event_id}/reward", json={"value": value}, timeout=TIMEOUT
        ).status_code
        == 204
    )


# -- Apprentice ------------------------------------------------------------------------


def test_apprentice_returns_the_baseline_and_reports_imitation(srv: Server) -> None:
    # Generous exploration, so that the model's own draws often differ from the baseline.
    base = new_loop(srv, explorationPercentage=0.6)
    assert (
        httpx.get(base + "/configurations/service", timeout=TIMEOUT).json()[
            "latestApprenticeModeMetrics"
        ]
        is None
    )
    config = set_mode(base, "Apprentice")
    metrics = config["latestApprenticeModeMetrics"]
    assert metrics["startTime"]
    assert metrics["numberOfEvents"] == 0

    n = 45
    sent: dict[str, float] = {}
    for i in range(n):
        excluded = ["a"] if i % 3 == 0 else []  # then the baseline is "b"
        event_id = f"app-{i}"
        body = {
            "contextFeatures": [{"user": f"u{i % 2}"}],
            "actions": ACTIONS,
            "excludedActions": excluded,
            "eventId": event_id,
        }
        answer = rank(base, body)
        baseline = "b" if excluded else "a"
        assert answer["rewardActionId"] == baseline
        assert answer["ranking"][0]["id"] == baseline
        if i % 5 != 4:  # a few events get no reward: the default (0) counts
            value = [0.2, 1.0, -0.4, 0.6][i % 4]
            reward(base, event_id, value)
            sent[event_id] = value

    logged = all_learned(srv, base, n)
    imitated = 0
    imitated_rewards = 0.0
    for row in logged:
        assert row["mode"] == "Apprentice"
        (slot,) = row["slots"]
        ids = [row["action_ids"][i] for i in slot["a"]]
        baseline = "b" if "a" not in row["action_ids"] else "a"
        assert ids[slot["s"]] == baseline  # shown: the baseline
        assert ids[slot["b"]] == baseline
        # The logged draw is the model's own, seeded by the event ID.
        assert slot["c"] == sample_index(slot["p"], seed_for(row["event_id"]))
        real = sent.get(row["event_id"], 0.0)
        assert row["outcome"]["r"] == pytest.approx([real])
        assert row["outcome"]["t"] == [1.0 if slot["c"] == slot["b"] else 0.0]
        if slot["c"] == slot["b"]:
            imitated += 1
            imitated_rewards += real
    assert 0 < imitated < n  # the stream has both kinds of event

    def reported() -> dict[str, Any]:
        m = httpx.get(base + "/configurations/service", timeout=TIMEOUT).json()[
            "latestApprenticeModeMetrics"
        ]
        return dict(m) if m["numberOfEvents"] == n else {}

    metrics = poll(reported, timeout=10)
    expected = {
        "numberOfEvents": n,
        "numberOfImitatedEvents": imitated,
        "sumOfRewards": pytest.approx(sum(sent.values())),
        "sumOfImitatedRewards": pytest.approx(imitated_rewards),
    }
    assert {k: metrics[k] for k in expected} == expected
    assert {k: metrics["lastBatchMetrics"][k] for k in expected} == expected
    assert metrics["startTime"] == config["latestApprenticeModeMetrics"]["startTime"]
    assert metrics["lastProcessedEventTime"] >= metrics["startTime"]

    # Switching back to Online keeps the model: the same (never learned) request gets the
    # same pmf just before and just after the switch, and it has learned the baseline.
    probe = {"contextFeatures": [{"user": "u0"}], "actions": ACTIONS, "deferActivation": True}
    before = pmf_of(rank(base, {**probe, "eventId": "probe-before"}))
    online = set_mode(base, "Online")
    after = rank(base, {**probe, "eventId": "probe-after"})
    assert pmf_of(after) == pytest.approx(before)
    assert after["ranking"][0]["id"] == after["rewardActionId"]
    assert before["a"] > 0.5  # 1 - 0.6 + 0.6 / 3 when "a" is the greedy choice
    assert online["latestApprenticeModeMetrics"]["numberOfEvents"] == n


def test_apprentice_multislot_returns_each_baseline(srv: Server) -> None:
    base = new_loop(srv, policy=CCB, explorationPercentage=0.8)
    set_mode(base, "Apprentice")
    slots = [
        {"id": "top", "baselineAction": "c"},
        {"id": "middle", "baselineAction": "a", "positionFeatures": [{"size": "small"}]},
        {"id": "bottom", "baselineAction": "b"},
    ]
    n = 12
    for i in range(n):
        body = {"actions": ACTIONS, "slots": slots, "eventId": f"ms-{i}"}
        r = httpx.post(base + "/multislot/rank", json=body, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        assert [s["rewardActionId"] for s in r.json()["slots"]] == ["c", "a", "b"]
        reward_body = {"reward": [{"slotId": "top", "value": 1.0}]}
        url = f"{base}/multislot/events/ms-{i}/reward"
        assert httpx.post(url, json=reward_body, timeout=TIMEOUT).status_code == 204

    logged = all_learned(srv, base, n)
    draws_differ = False
    for row in logged:
        for slot, baseline in zip(row["slots"], ["c", "a", "b"], strict=True):
            ids = [row["action_ids"][i] for i in slot["a"]]
            if slot["b"] is not None:
                assert ids[slot["b"]] == baseline
            draws_differ |= ids[slot["c"]] != baseline
        assert row["outcome"]["r"] == [1.0, 0.0, 0.0]
        expected = [float(s["c"] == s["b"]) for s in row["slots"]]
        assert row["outcome"]["t"] == expected
    assert draws_differ

    m = httpx.get(base + "/configurations/service", timeout=TIMEOUT).json()[
        "latestApprenticeModeMetrics"
    ]
    assert m["numberOfEvents"] == 3 * n  # counted once per slot
    assert m["sumOfRewards"] == pytest.approx(n)


def test_apprentice_multislot_logs_what_was_shown(srv: Server) -> None:
    """``slots[].s`` is documented as the action returned as rewardActionId; in Apprentice
    mode that is the slot's baseline, even when the model's draw for an earlier slot took it."""
    base = new_loop(srv, policy=CCB, explorationPercentage=1.0)
    set_mode(base, "Apprentice")
    slots = [{"id": "first", "baselineAction": "a"}, {"id": "second", "baselineAction": "b"}]
    for i in range(30):
        body = {"actions": ACTIONS, "slots": slots, "eventId": f"shown-{i}"}
        r = httpx.post(base + "/multislot/rank", json=body, timeout=TIMEOUT)
        assert r.status_code == 201
        answer = [s["rewardActionId"] for s in r.json()["slots"]]
        assert answer == ["a", "b"]
    for row in rows(srv, base):
        shown = [row["action_ids"][s["a"][s["s"]]] for s in row["slots"]]
        assert shown == ["a", "b"], (row["event_id"], row["slots"])


# -- LoggingOnly ---------------------------------------------------------------------------


def test_logging_only_shows_and_logs_the_baseline_and_learns_nothing(srv: Server) -> None:
    base = new_loop(srv)
    set_mode(base, "LoggingOnly")
    n = 40
    for i in range(n):
        excluded = ["a"] if i % 4 == 0 else []
        body = {
            "contextFeatures": [{"user": "same"}],
            "actions": ACTIONS,
            "excludedActions": excluded,
            "eventId": f"lo-{i}",
        }
        answer = rank(base, body)
        baseline = "b" if excluded else "a"
        assert answer["rewardActionId"] == baseline
        assert pmf_of(answer)[baseline] == 1.0
        reward(base, f"lo-{i}", 1.0)  # the baseline is always rewarded

    logged = all_learned(srv, base, n)
    for row in logged:
        assert row["mode"] == "LoggingOnly"
        (slot,) = row["slots"]
        assert slot["p"][slot["c"]] == 1.0
        assert slot["c"] == slot["s"] == 0  # the first non-excluded action
        assert row["outcome"] == {"r": [1.0], "t": None}  # reward kept, nothing trained

    # The logs are still there, rewards included.
    props = httpx.get(base + "/logs/properties", timeout=TIMEOUT).json()
    assert props["dateRange"]["from"] and props["dateRange"]["to"]
    (count,) = query(srv.data_dir, "SELECT count(*) FROM rewards WHERE loop=?", (loop_name(base),))[
        0
    ]
    assert count == n

    # Nothing was learned: back in Online, the model still ranks uniformly, although the
    # same action was rewarded 40 times in this very context.
    set_mode(base, "Online")
    probe = {"contextFeatures": [{"user": "same"}], "actions": ACTIONS, "deferActivation": True}
    pmf = pmf_of(rank(base, {**probe, "eventId": "probe-online"}))
    assert pmf == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_logging_only_multislot_returns_the_baselines(srv: Server) -> None:
    base = new_loop(srv, policy=CCB)
    set_mode(base, "LoggingOnly")
    slots = [{"id": "x", "baselineAction": "b"}, {"id": "y", "baselineAction": "c"}]
    r = httpx.post(
        base + "/multislot/rank", json={"actions": ACTIONS, "slots": slots}, timeout=TIMEOUT
    )
    assert r.status_code == 201
    assert [s["rewardActionId"] for s in r.json()["slots"]] == ["b", "c"]
    (row,) = rows(srv, base)
    for slot, baseline in zip(row["slots"], ["b", "c"], strict=True):
        assert row["action_ids"][slot["a"][slot["c"]]] == baseline
        assert slot["p"][slot["c"]] == 1.0
