"""Multi-slot ranking (``--ccb_explore_adf``) through Microsoft's SDK and plain HTTP,
against a real server process, checked in its SQLite file."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import vowpalwabbit
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditloop.config import Settings
from banditloop.join import training_example
from banditloop.loop import Loop
from banditloop.sampling import sample_index, seed_for
from banditloop.store.base import ClosedEvent, SlotChoice
from banditloop.store.events import EXAMPLE  # the example whole (schema m009)
from conftest import Server
from helpers import SDK_ACTIONS, SDK_SLOTS, TIMEOUT, Clock, create_loop, poll, query

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("multislot")

CCB = "--ccb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
CB = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"

SDK_CONTEXT = [
    {"User": {"ProfileType": "AnonymousUser", "LatLong": "47.6,-122.1"}},
    {"Environment": {"DayOfMonth": "28", "MonthOfYear": "8", "Weather": "Sunny"}},
    {"Device": {"Mobile": True, "Windows": True}},
    {"RecentActivity": {"ItemsInCart": 3}},
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("multislot") / "data").start()
    yield s
    s.stop()


def new_loop(srv: Server, policy: str = CCB, **configuration: Any) -> str:
    """A fresh named loop; returns its base URL (what the SDK calls the endpoint)."""
    return f"{srv.url}/loops/{create_loop(srv.url, 'ms', policy, **configuration)}"


def api(endpoint: str) -> str:
    return endpoint + "/personalizer/v1.0"


def loop_name(endpoint: str) -> str:
    return endpoint.rsplit("/", 1)[1]


def decisions(srv: Server, endpoint: str) -> list[dict[str, Any]]:
    return decisions_in(srv.data_dir, loop_name(endpoint))


def decisions_in(data_dir: Path, loop: str) -> list[dict[str, Any]]:
    rows = query(
        data_dir,
        f"SELECT event_id, {EXAMPLE}, action_ids, slots, multislot, outcome FROM decisions "
        "WHERE loop=? ORDER BY seq",
        (loop,),
    )
    return [
        {
            "event_id": e,
            "example": json.loads(x),
            "action_ids": json.loads(a),
            "slots": json.loads(s),
            "multislot": bool(m),
            "outcome": None if o is None else json.loads(o),
        }
        for e, x, a, s, m, o in rows
    ]


def enable_multi_slot(admin: PersonalizerAdministrationClient) -> None:
    """What the SDK's test helper (personalizer_helpers.enable_multi_slot) does."""
    policy = admin.get_policy()
    if "--ccb_explore_adf" in policy["arguments"]:
        return
    configuration = admin.get_service_configuration()
    if configuration["isAutoOptimizationEnabled"]:
        configuration["isAutoOptimizationEnabled"] = False
        admin.update_service_configuration(configuration)
    admin.update_policy(
        {
            "name": "enable multi slot",
            "arguments": policy["arguments"].replace("--cb_explore_adf", "--ccb_explore_adf"),
        }
    )


def status(pipeline_response: Any, *_: Any) -> int:
    return int(pipeline_response.http_response.status_code)


@pytest.fixture(scope="module")
def quiet_loop(srv: Server) -> str:
    """A --ccb_explore_adf loop shared by tests that learn nothing from it (long window)."""
    return new_loop(srv, rewardWaitTime="PT1H")


# -- the SDK -----------------------------------------------------------------------


def test_sdk_multislot_rank_reward_activate(srv: Server) -> None:
    endpoint = new_loop(srv, policy=CB)
    credential = AzureKeyCredential("any")
    with PersonalizerAdministrationClient(endpoint, credential) as admin:
        enable_multi_slot(admin)
        assert "--ccb_explore_adf" in admin.get_policy()["arguments"]
        assert "--cb_explore_adf" not in admin.get_policy()["arguments"]
    with PersonalizerClient(endpoint, credential) as client:
        response = client.rank_multi_slot(
            {
                "contextFeatures": SDK_CONTEXT,
                "actions": SDK_ACTIONS,
                "slots": SDK_SLOTS,
                "eventId": "123456789",
            }
        )
        assert response["eventId"] == "123456789"
        assert [s["id"] for s in response["slots"]] == ["Main Article", "Side Bar"]
        assert response["slots"][0]["rewardActionId"] == "NewsArticle"
        assert response["slots"][1]["rewardActionId"] == "SportsArticle"

        # Without contextFeatures or eventId (the SDK test's other case).
        bare = client.rank_multi_slot({"actions": SDK_ACTIONS, "slots": SDK_SLOTS})
        assert [s["rewardActionId"] for s in bare["slots"]] == ["NewsArticle", "SportsArticle"]
        assert bare["eventId"]

        body = {"reward": [{"slotId": "Main Article", "value": 1.0}]}
        assert client.reward_multi_slot("123456789", body, cls=status) == 204
        assert client.activate_multi_slot("123456789", cls=status) == 204

    name = loop_name(endpoint)
    rewards = query(
        srv.data_dir, "SELECT event_id, slot, value FROM rewards WHERE loop=? ORDER BY seq", (name,)
    )
    assert rewards == [("123456789", "Main Article", 1.0)]
    activations = query(srv.data_dir, "SELECT event_id FROM activations WHERE loop=?", (name,))
    assert activations == [("123456789",)]
    logged = decisions(srv, endpoint)
    assert [d["event_id"] for d in logged] == ["123456789", bare["eventId"]]
    assert all(d["multislot"] for d in logged)


def test_multislot_on_a_cb_loop_is_refused(srv: Server) -> None:
    endpoint = new_loop(srv, policy=CB)
    client = PersonalizerClient(endpoint, AzureKeyCredential("any"))
    with client, pytest.raises(HttpResponseError) as info:
        client.rank_multi_slot({"actions": SDK_ACTIONS, "slots": SDK_SLOTS})
    assert info.value.status_code == 400
    assert info.value.error is not None
    assert info.value.error.code == "InvalidMultiSlotApiAccess"

    r = httpx.post(
        api(endpoint) + "/multislot/rank",
        json={"actions": SDK_ACTIONS, "slots": SDK_SLOTS},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400
    assert r.headers["x-ms-error-code"] == "InvalidMultiSlotApiAccess"
    assert r.json()["error"]["code"] == "InvalidMultiSlotApiAccess"
    assert "--ccb_explore_adf" in r.json()["error"]["message"]
    assert decisions(srv, endpoint) == []


# -- validation --------------------------------------------------------------------

ACTIONS3 = [{"id": a, "features": [{"kind": a}]} for a in ("a", "b", "c")]
BASELINE_RULE = (
    "Each slot must have a unique BaselineAction which corresponds to an action from the "
    "event's Actions list."
)


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        pytest.param(
            [{"id": "s1", "baselineAction": "a"}, {"id": "s2"}],
            "BaselineAction must be defined for every slot.",
            id="baseline-missing",
        ),
        pytest.param(
            [{"id": "s1", "baselineAction": "a", "excludedActions": ["a"]}],
            "BaselineAction should never be part of ExcludedActions.",
            id="baseline-excluded",
        ),
        pytest.param(
            [{"id": "s1", "baselineAction": "a"}, {"id": "s2", "baselineAction": "a"}],
            BASELINE_RULE,
            id="duplicate-baselines",
        ),
        pytest.param(
            [{"id": "s1", "baselineAction": "zzz"}], BASELINE_RULE, id="baseline-not-an-action"
        ),
        pytest.param(
            [{"id": f"s{k}", "baselineAction": a} for k, a in enumerate("abcd")],
            "Slot count should be between 1 and the number of actions (3).",
            id="more-slots-than-actions",
        ),
        pytest.param(
            [{"id": "s1", "baselineAction": "a"}, {"id": "s1", "baselineAction": "b"}],
            "Slot ids must be non-empty and unique.",
            id="duplicate-slot-ids",
        ),
        pytest.param(
            [{"id": "s1", "baselineAction": "a", "excludedActions": ["nope"]}],
            "All excluded action ID's must have corresponding action ID",
            id="unknown-exclusion",
        ),
    ],
)
def test_validation_errors(quiet_loop: str, slots: list[dict[str, Any]], message: str) -> None:
    r = httpx.post(
        api(quiet_loop) + "/multislot/rank",
        json={"actions": ACTIONS3, "slots": slots},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-ms-error-code"] == "InvalidRankRequest"
    assert r.json() == {"error": {"code": "InvalidRankRequest", "message": message}}


# -- every slot distinct, exclusions honoured, deterministic per event ID --------------


@st.composite
def multislot_requests(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    ids = [f"act{i}" for i in range(n)]
    k = draw(st.integers(1, n))
    baselines = draw(st.permutations(ids))[:k]
    slots = []
    for j, baseline in enumerate(baselines):
        others = [a for a in ids if a != baseline]
        excluded = draw(st.lists(st.sampled_from(others), unique=True)) if others else []
        slot: dict[str, Any] = {"id": f"slot{j}", "baselineAction": baseline}
        if excluded:
            slot["excludedActions"] = excluded
        if draw(st.booleans()):
            slot["positionFeatures"] = [{"position": j, "size": draw(st.sampled_from("SML"))}]
        slots.append(slot)
    context = [{"user": draw(st.sampled_from(["u1", "u2", "u3"]))}]
    return {
        "contextFeatures": context,
        "actions": [{"id": a, "features": [{"kind": a}]} for a in ids],
        "slots": slots,
    }


_events = itertools.count()


@pytest.fixture(scope="module")
def twin_loops(srv: Server) -> tuple[str, str]:
    """Two fresh --ccb_explore_adf loops that learn nothing during the test (long window)."""
    return new_loop(srv, rewardWaitTime="PT1H"), new_loop(srv, rewardWaitTime="PT1H")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=multislot_requests())
def test_slots_distinct_allowed_and_deterministic(
    srv: Server, twin_loops: tuple[str, str], request: dict[str, Any]
) -> None:
    event_id = f"prop-{next(_events)}-{time.monotonic_ns()}"
    first, second = twin_loops
    answers = []
    for endpoint in (first, second):
        r = httpx.post(
            api(endpoint) + "/multislot/rank", json={**request, "eventId": event_id}, timeout=30
        )
        assert r.status_code == 201, r.text
        answers.append(r.json())
    a, b = answers
    # The same event ID on another loop with the same (empty) model gives the same choices.
    assert a == b
    assert a["eventId"] == event_id
    assert [s["id"] for s in a["slots"]] == [s["id"] for s in request["slots"]]

    shown: list[str] = []
    all_ids = [x["id"] for x in request["actions"]]
    for slot, got in zip(request["slots"], a["slots"], strict=True):
        allowed = [x for x in all_ids if x not in slot.get("excludedActions", [])]
        choice = got["rewardActionId"]
        if choice is None:  # only when earlier slots took every action this one allows
            assert set(allowed) <= set(shown)
            continue
        assert choice in allowed
        assert choice not in shown
        shown.append(choice)

    # The logged draw of slot k is seeded by the event ID plus k.
    (row,) = query(
        srv.data_dir,
        "SELECT slots, action_ids FROM decisions WHERE loop=? AND event_id=?",
        (loop_name(first), event_id),
    )
    logged = [SlotChoice.from_json(s) for s in json.loads(row[0])]
    action_ids = json.loads(row[1])
    seed = seed_for(event_id)
    for k, (choice, got) in enumerate(zip(logged, a["slots"], strict=True)):
        if not choice.actions:
            assert got["rewardActionId"] is None
            continue
        assert choice.chosen == sample_index(choice.pmf, seed + k)
        assert action_ids[choice.actions[choice.chosen]] == got["rewardActionId"]
        assert sum(choice.pmf) == pytest.approx(1.0, abs=1e-5)


def test_same_event_id_is_an_idempotent_retry(srv: Server, quiet_loop: str) -> None:
    endpoint = quiet_loop
    body = {"actions": ACTIONS3, "slots": [{"id": "s", "baselineAction": "a"}], "eventId": "again"}
    first = httpx.post(api(endpoint) + "/multislot/rank", json=body, timeout=TIMEOUT)
    retry = httpx.post(api(endpoint) + "/multislot/rank", json=body, timeout=TIMEOUT)
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json()
    rows = query(
        srv.data_dir,
        "SELECT count(*) FROM decisions WHERE loop=? AND event_id='again'",
        (loop_name(endpoint),),
    )
    assert rows == [(1,)]
    other = {**body, "slots": [{"id": "s", "baselineAction": "b"}]}  # a reuse: a new decision
    assert (
        httpx.post(api(endpoint) + "/multislot/rank", json=other, timeout=TIMEOUT).status_code
        == 201
    )
    rows = query(
        srv.data_dir,
        "SELECT count(*) FROM decisions WHERE loop=? AND event_id='again'",
        (loop_name(endpoint),),
    )
    assert rows == [(2,)]


# -- one model for single-slot and multi-slot requests --------------------------------


def test_single_slot_rank_on_a_ccb_loop_shares_the_model(srv: Server) -> None:
    endpoint = new_loop(srv)
    context = [{"user": {"segment": "runner"}}]
    probe = {"contextFeatures": context, "actions": ACTIONS3, "deferActivation": True}
    before = httpx.post(
        api(endpoint) + "/rank", json={**probe, "eventId": "probe-before"}, timeout=TIMEOUT
    )
    assert before.status_code == 201, before.text
    pmf_before = {r["id"]: r["probability"] for r in before.json()["ranking"]}
    assert pmf_before == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})

    # Teach the model through multi-slot events only: "c" is what runners click.
    n = 60
    for i in range(n):
        body = {
            "contextFeatures": context,
            "actions": ACTIONS3,
            "slots": [{"id": "only", "baselineAction": "a"}],
            "eventId": f"teach-{i}",
        }
        r = httpx.post(api(endpoint) + "/multislot/rank", json=body, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        if r.json()["slots"][0]["rewardActionId"] == "c":
            reward = {"reward": [{"slotId": "only", "value": 1.0}]}
            rr = httpx.post(
                api(endpoint) + "/multislot/events/teach-" + str(i) + "/reward",
                json=reward,
                timeout=TIMEOUT,
            )
            assert rr.status_code == 204

    def learned() -> bool:
        done = [d for d in decisions(srv, endpoint) if d["event_id"].startswith("teach-")]
        return len(done) == n and all(d["outcome"] is not None for d in done)

    poll(learned, timeout=20)
    after = httpx.post(
        api(endpoint) + "/rank", json={**probe, "eventId": "probe-after"}, timeout=TIMEOUT
    )
    assert after.status_code == 201
    pmf_after = {r["id"]: r["probability"] for r in after.json()["ranking"]}
    assert pmf_after["c"] > 0.8
    assert sum(pmf_after.values()) == pytest.approx(1.0, abs=1e-5)
    # The single-slot Rank was logged as a one-slot CCB example.
    (probe_row,) = [d for d in decisions(srv, endpoint) if d["event_id"] == "probe-after"]
    assert probe_row["multislot"]
    assert probe_row["example"]["_slots"] == [{"_id": "0"}]


# -- rewards per slot ------------------------------------------------------------------


def test_rewards_aggregate_per_slot(srv: Server) -> None:
    endpoint = new_loop(srv, rewardAggregation="sum", rewardWaitTime="PT2S", defaultReward=-0.5)
    body = {
        "contextFeatures": [{"page": "home"}],
        "actions": ACTIONS3,
        "slots": [
            {"id": "top", "baselineAction": "a"},
            {"id": "middle", "baselineAction": "b"},
            {"id": "bottom", "baselineAction": "c"},
        ],
        "eventId": "agg",
    }
    assert (
        httpx.post(api(endpoint) + "/multislot/rank", json=body, timeout=TIMEOUT).status_code == 201
    )
    url = api(endpoint) + "/multislot/events/agg/reward"
    r1 = httpx.post(url, json={"reward": [{"slotId": "top", "value": 0.25}]}, timeout=TIMEOUT)
    r2 = httpx.post(
        url,
        json={"reward": [{"slotId": "top", "value": 0.5}, {"slotId": "middle", "value": 0.1}]},
        timeout=TIMEOUT,
    )
    assert r1.status_code == r2.status_code == 204

    (row,) = poll(lambda: [d for d in decisions(srv, endpoint) if d["outcome"]], timeout=15)
    # top: 0.25 + 0.5; middle: one reward; bottom: none, so the default reward.
    assert row["outcome"]["r"] == pytest.approx([0.75, 0.1, -0.5])
    assert row["outcome"]["t"] == pytest.approx([0.75, 0.1, -0.5])


def test_multislot_events_wait_for_the_full_window(
    client: TestClient, settings: Settings, clock: Clock
) -> None:
    """With "earliest", a single-slot event closes at its first reward; a multi-slot one
    waits for its whole window, since more slots may still be rewarded."""
    r = client.put("/loops/w", json={"policy": CCB, "configuration": {"rewardWaitTime": "PT4S"}})
    assert r.status_code == 201, r.text
    loop: Loop = client.app.state.registry.loops["w"]  # type: ignore[attr-defined]
    loop.trainer.stop()  # the test learns in-process, on its clock
    base = "/loops/w/personalizer/v1.0/multislot"
    body = {"actions": ACTIONS3, "slots": [{"id": "s1", "baselineAction": "a"}], "eventId": "w"}
    assert client.post(f"{base}/rank", json=body).status_code == 201
    reward = {"reward": [{"slotId": "s1", "value": 1.0}]}
    assert client.post(f"{base}/events/w/reward", json=reward).status_code == 204

    def outcome() -> Any:
        return decisions_in(settings.data_dir, "w")[0]["outcome"]

    clock.advance(3.9)
    assert loop.trainer.drain(clock()) == 0
    assert outcome() is None
    clock.advance(0.2)
    assert loop.trainer.drain(clock()) == 1
    assert outcome()["r"] == [1.0]


# -- what is logged ----------------------------------------------------------------------


def test_logged_decisions_carry_slot_ids(srv: Server) -> None:
    endpoint = new_loop(srv)
    body = {
        "contextFeatures": SDK_CONTEXT,
        "actions": SDK_ACTIONS,
        "slots": SDK_SLOTS,
        "eventId": "logged",
    }
    assert (
        httpx.post(api(endpoint) + "/multislot/rank", json=body, timeout=TIMEOUT).status_code == 201
    )
    reward = {"reward": [{"slotId": "Side Bar", "value": 1.0}]}
    assert (
        httpx.post(
            api(endpoint) + "/multislot/events/logged/reward", json=reward, timeout=TIMEOUT
        ).status_code
        == 204
    )
    (row,) = poll(lambda: [d for d in decisions(srv, endpoint) if d["outcome"]], timeout=15)

    assert row["action_ids"] == ["NewsArticle", "SportsArticle", "EntertainmentArticle"]
    assert [s["id"] for s in row["slots"]] == ["Main Article", "Side Bar"]
    example_slots = row["example"]["_slots"]
    assert [s["_id"] for s in example_slots] == ["Main Article", "Side Bar"]
    assert example_slots[0]["sj"] == [{"Size": "Large", "Position": "Top Middle"}]
    assert example_slots[0]["_inc"] == [0]  # Sports and Entertainment excluded
    assert 2 not in example_slots[1]["_inc"]
    assert row["outcome"] == {"r": [0.0, 1.0], "t": [0.0, 1.0]}

    # The logged row, labelled as the trainer labels it, is a CCB example VW accepts.
    slots = [SlotChoice.from_json(s) for s in row["slots"]]
    event = ClosedEvent(0, "logged", 0.0, False, json.dumps(row["example"]), slots, multislot=True)
    line = training_example(event, row["outcome"]["t"])
    labelled = json.loads(line)
    assert [s["_id"] for s in labelled["_slots"]] == ["Main Article", "Side Bar"]
    assert labelled["_slots"][1]["_label_cost"] == -1.0
    assert labelled["_slots"][1]["_a"][0] == 1  # SportsArticle, shown in the side bar
    ws = vowpalwabbit.Workspace("--ccb_explore_adf --json --quiet")
    try:
        ex = ws.parse(line)
        ws.learn(ex)
        ws.finish_example(ex)
    finally:
        ws.finish()
