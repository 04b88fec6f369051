"""Holdout groups: deterministic assignment, the baseline served and marked, the
lift report and its interval, learning and export of holdout events."""

from __future__ import annotations

import random
from pathlib import Path

import mmh3
import orjson
import vowpalwabbit
from fastapi.testclient import TestClient

from banditloop.holdout import lift
from banditloop.join import outcome, training_example
from banditloop.loop import HOLDOUT_SEED
from banditloop.store.base import ClosedEvent, Decision, LoggedEvent, SlotChoice
from helpers import V1, actions, poll, query


def held_out(event_id: str, share: float) -> bool:
    return mmh3.hash(event_id, HOLDOUT_SEED, signed=False) / 2**32 < share


def configure(client: TestClient, **changes: object) -> None:
    config = client.get(V1 + "/configurations/service").json()
    r = client.put(V1 + "/configurations/service", json={**config, **changes})
    assert r.status_code == 200, r.text


def test_assignment_is_deterministic_and_at_the_rate() -> None:
    ids = [f"event-{i}" for i in range(20000)]
    rate = sum(held_out(e, 0.1) for e in ids) / len(ids)
    assert 0.09 < rate < 0.11
    assert [held_out(e, 0.1) for e in ids[:100]] == [held_out(e, 0.1) for e in ids[:100]]
    assert not any(held_out(e, 0.0) for e in ids)


def test_holdout_events_get_the_baseline_and_are_marked(client: TestClient, tmp_path: Path) -> None:
    configure(client, holdoutPercentage=0.3, explorationPercentage=1.0)
    body = {"contextFeatures": [{"u": "x"}], "actions": actions("a", "b", "c", "d")}
    expected = {}
    for i in range(200):
        eid = f"h{i}"
        r = client.post(V1 + "/rank", json={**body, "eventId": eid})
        assert r.status_code == 201, r.text
        expected[eid] = held_out(eid, 0.3)
        if expected[eid]:
            assert r.json()["rewardActionId"] == "a"
    assert 40 < sum(expected.values()) < 80
    rows = query(tmp_path / "data", "SELECT event_id, holdout, slots FROM decisions")
    assert {e: bool(h) for e, h, _ in rows} == expected
    # the model's own draw is kept beside what was shown: it is not always the baseline
    drawn = [orjson.loads(s)[0]["c"] for e, h, s in rows if h]
    assert all(orjson.loads(s)[0]["s"] == 0 for e, h, s in rows if h)
    assert any(c != 0 for c in drawn)


def test_holdout_events_learn_the_baseline_with_probability_one() -> None:
    slot = SlotChoice(None, [0, 1], [0.3, 0.7], 1, 0, 0)
    example = '{"FromUrl":[{"u":"x"}],"_multi":[{"i":{"id":"a"}},{"i":{"id":"b"}}]}'
    ev = ClosedEvent(1, "e", 0.0, False, example, [slot], rewards=[(0.0, 1.0, None)], holdout=True)
    assert outcome(ev, _cfg()).trained == [1.0]
    labelled = orjson.loads(training_example(ev, [1.0]))
    assert labelled["_label_Action"] == 1 and labelled["_label_probability"] == 1.0


def _cfg():  # type: ignore[no-untyped-def]
    from banditloop.config import LoopConfig, ServiceConfiguration

    return LoopConfig.from_wire(ServiceConfiguration())


def _event(i: int, reward: float, holdout: bool, ts: float) -> LoggedEvent:
    d = Decision(
        "l", f"e{i}", ts, ts, False, "", "{}", ["a", "b"],
        [SlotChoice(None, [0, 1], [0.5, 0.5], 1, 0 if holdout else 1, 0)],
        b"{}", "1", holdout=holdout,
    )  # fmt: skip
    return LoggedEvent(d, {"r": [reward], "t": [reward]}, [], [])


def world(seed: int, n: int, p_loop: float, p_holdout: float, share: float) -> list[LoggedEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        h = rng.random() < share
        r = float(rng.random() < (p_holdout if h else p_loop))
        out.append(_event(i, r, h, 86400.0 * (i * 2 // n)))  # two days
    return out


def test_lift_interval_covers_the_true_lift() -> None:
    report = lift(world(7, 4000, 0.6, 0.4, 0.2))
    assert report["low"] < 0.2 < report["high"]
    assert report["holdout"]["events"] + report["loop"]["events"] == 4000
    assert 700 < report["holdout"]["events"] < 900
    assert [d["day"] for d in report["days"]] == ["1970-01-01", "1970-01-02"]
    assert sum(d["loop"]["events"] for d in report["days"]) == report["loop"]["events"]


def test_lift_endpoint_and_export(client: TestClient) -> None:
    configure(client, holdoutPercentage=0.5)
    body = {"contextFeatures": [{"u": "x"}], "actions": actions("a", "b")}
    for i in range(40):
        eid = f"x{i}"
        answer = client.post(V1 + "/rank", json={**body, "eventId": eid}).json()
        value = 1.0 if held_out(eid, 0.5) else 0.0
        client.post(V1 + f"/events/{eid}/reward", json={"value": value})
    report = poll(
        lambda: (
            (r := client.get(V1 + "/holdout/lift").json())["loop"]["events"]
            + r["holdout"]["events"]
            == 40
            and r
        ),
        timeout=20,
    )
    assert report["holdout"]["meanReward"] == 1.0 and report["loop"]["meanReward"] == 0.0
    assert report["lift"] == -1.0
    assert answer["eventId"] == "x39"
    lines = client.get(V1 + "/logs/export").content.splitlines()
    marked = [orjson.loads(x) for x in lines if b'"_holdout":true' in x]
    assert len(marked) == report["holdout"]["events"]
    assert all(m["_label_probability"] == 1.0 and m["_label_Action"] == 1 for m in marked)
    ws = vowpalwabbit.Workspace(arg_list=["--cb_explore_adf", "--dsjson", "--quiet"])
    for x in lines:
        ex = ws.parse(x.decode())
        ws.learn(ex)
        ws.finish_example(ex)
    ws.finish()
    # the dashboard shows the same report
    dash = client.get("/dashboard/data").json()["holdout"]
    assert (dash["loop"]["events"], dash["holdout"]["events"]) == (
        report["loop"]["events"],
        report["holdout"]["events"],
    )
    assert dash["lift"] == report["lift"]
