"""The first-party client (banditloop.Client, AsyncClient) against a live server:
every endpoint, typed answers, errors with their codes, and retries that keep the
event ID (a lost answer does not log the Rank twice)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from banditloop import AsyncClient, BadRequest, Client, NotFound, Unauthorized
from banditloop.api.schemas import RankResponse
from conftest import Server, free_port
from helpers import actions, poll

ITEMS = [{"id": "a", "features": [{"kind": "x"}]}, {"id": "b", "features": [{"kind": "y"}]}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("client") / "data", free_port()).start(timeout=120)
    yield srv
    srv.stop()


@pytest.fixture
def bl(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=60) as c:  # a loaded machine: no retry of a slow PUT
        yield c


class LosesFirstAnswer(httpx.HTTPTransport):
    """The network: the first request reaches the server, its answer is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        response = super().handle_request(request)
        if self.sent == 1:
            response.read()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_rank_reward_activate_typed(bl: Client, server: Server) -> None:
    answer = bl.send(bl.rank({"actions": actions("a", "b"), "deferActivation": True}))
    assert isinstance(answer, RankResponse)
    assert {a.id for a in answer.ranking} == {"a", "b"} and answer.eventId
    assert bl.send(bl.activate(answer.eventId)) is None
    assert bl.send(bl.reward(answer.eventId, 1.0)) is None
    bl.send(bl.create_loop("slots", {"policy": "--ccb_explore_adf --epsilon 0.2"}))
    with Client(server.url, loop="slots") as ccb:
        slots = [{"id": "s1", "baselineAction": "a"}, {"id": "s2", "baselineAction": "b"}]
        multi = ccb.send(ccb.rank_multislot({"actions": actions("a", "b"), "slots": slots}))
        assert [s.id for s in multi.slots] == ["s1", "s2"]
        ccb.send(ccb.reward_multislot(multi.eventId, {"s1": 1.0}))
        ccb.send(ccb.activate_multislot(multi.eventId))


def test_a_rank_whose_answer_was_lost_is_retried_with_its_event_id(server: Server) -> None:
    transport = LosesFirstAnswer()
    with Client(server.url, transport=transport) as c:
        call = c.rank({"actions": actions("a", "b")})
        answer = c.send(call)
        assert transport.sent == 2
        assert answer.eventId == call.json["eventId"]
        again = c.send(c.rank({"actions": actions("a", "b"), "eventId": answer.eventId}))
        assert again == answer  # the server answered the retry from its log
    lossy = LosesFirstAnswer()
    with Client(server.url, retries=0, transport=lossy) as c, pytest.raises(httpx.ReadTimeout):
        c.send(c.rank({"actions": actions("a", "b")}))


def test_a_reward_is_not_repeated_after_a_lost_answer(server: Server) -> None:
    transport = LosesFirstAnswer()
    with Client(server.url, transport=transport) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.send(c.reward("never-ranked", 1.0))
        assert transport.sent == 1


def test_errors_carry_the_code(bl: Client) -> None:
    with pytest.raises(BadRequest) as bad:
        bl.send(bl.rank({"actions": []}))
    assert bad.value.code == "InvalidRankRequest" and bad.value.status == 400
    with Client(str(bl.http.base_url), loop="nosuch") as other, pytest.raises(NotFound) as missing:
        other.send(other.get_policy())
    assert missing.value.code == "ResourceNotFound" and missing.value.status == 404


def test_configuration_policy_model_and_logs(bl: Client) -> None:
    config = bl.send(bl.get_configuration())
    changed = bl.send(
        bl.put_configuration({**config.model_dump(mode="json"), "rewardWaitTime": "PT2S"})
    )
    assert changed.rewardWaitTime != config.rewardWaitTime
    policy = bl.send(bl.put_policy("mine", "--cb_explore_adf --epsilon 0.3"))
    assert "--epsilon 0.3" in policy.arguments
    assert bl.send(bl.get_policy()) == policy
    assert bl.send(bl.reset_policy()).arguments != policy.arguments

    blob = bl.send(bl.export_model())
    assert blob
    bl.send(bl.import_model(blob))
    assert bl.send(bl.model_properties()).lastModifiedTime
    assert bl.send(bl.export_model(signed=True))[:2] == b"PK"
    bl.send(bl.reset_model())

    first = bl.send(bl.rank({"contextFeatures": [{"user": "u1"}], "actions": actions("a", "b")}))
    bl.send(bl.reward(first.eventId, 1.0))
    assert bl.send(bl.logs_properties()).dateRange.to is not None
    bl.send(bl.export_logs(start=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    assert bl.send(bl.delete_event(first.eventId)) == 1
    assert bl.send(bl.forget("user", "nobody")) == 0
    bl.send(bl.delete_logs())
    assert bl.send(bl.logs_properties()).dateRange.to is None
    assert bl.send(bl.holdout_lift())["loop"]["events"] == 0  # no holdout configured


def test_evaluations(bl: Client) -> None:
    bl.send(
        bl.create_evaluation(
            "ev1", "first", [{"name": "e2", "arguments": "--cb_explore_adf --epsilon 0.2"}]
        )
    )
    done = poll(
        lambda: (
            (ev := bl.send(bl.get_evaluation("ev1")))["status"] in ("completed", "failed") and ev
        ),
        timeout=60,
        what="evaluation finished",
    )
    assert done["name"] == "first"
    assert [e["id"] for e in bl.send(bl.list_evaluations())] == ["ev1"]
    bl.send(bl.delete_evaluation("ev1"))
    with pytest.raises(NotFound):
        bl.send(bl.get_evaluation("ev1"))
    bl.send(bl.create_feature_importance("fi1", "importance"))
    assert bl.send(bl.get_feature_importance("fi1"))["name"] == "importance"


def test_items_scenarios_tracking_and_recommendations(bl: Client) -> None:
    assert bl.send(bl.put_items(ITEMS)) == 2
    assert bl.send(bl.get_item("a")).features == [{"kind": "x"}]
    spec = {"sources": [{"model": "popularity", "count": 10}], "count": 2}
    bl.send(bl.put_scenario("popular", spec))
    assert set(bl.send(bl.list_scenarios())) == {"popular"}
    assert bl.send(bl.get_scenario("popular")).count == 2
    tracked = bl.send(bl.track([{"type": "view", "userId": "u", "itemId": "a"}]))
    assert tracked.accepted == 1
    poll(lambda: bl.send(bl.tracking_status())["events"] >= 1, what="tracking applied")
    answer = bl.send(bl.recommend("popular", {"userId": "u"}))
    assert {i.id for i in answer.items} <= {"a", "b"} and answer.eventId
    assert bl.send(bl.recommend("popular", {"userId": "u", "eventId": answer.eventId})) == answer
    bl.send(bl.delete_scenario("popular"))
    bl.send(bl.delete_item("b"))
    with pytest.raises(NotFound):
        bl.send(bl.get_item("b"))


def test_named_loops(bl: Client, server: Server) -> None:
    info, created = bl.send(bl.create_loop("news", {"policy": "--cb_explore_adf --epsilon 0.1"}))
    assert info.name == "news"
    assert created, info
    assert bl.send(bl.create_loop("news", {"policy": "--cb_explore_adf --epsilon 0.1"}))[1] is False
    assert "news" in {x.name for x in bl.send(bl.list_loops())}
    with Client(server.url, loop="news") as news:
        assert news.send(news.rank({"actions": actions("a", "b")})).eventId
    bl.send(bl.delete_loop("news"))
    assert "news" not in {x.name for x in bl.send(bl.list_loops())}
    # keys last: once a loop has keys, server administration needs a server key
    bl.send(bl.create_loop("locked"))
    bl.send(bl.put_loop_keys("locked", ["client-key"], ["admin-key"]))
    with Client(server.url, loop="locked") as locked, pytest.raises(Unauthorized):
        locked.send(locked.rank({"actions": actions("a", "b")}))
    with Client(server.url, loop="locked", key="client-key") as locked:
        assert locked.send(locked.rank({"actions": actions("a", "b")})).eventId
    assert bl.send(bl.ready())["status"] == "ready"


def test_async_client(server: Server, tmp_path: Path) -> None:
    async def run() -> RankResponse:
        async with AsyncClient(server.url) as c:
            answer = await c.send(c.rank({"actions": actions("a", "b")}))
            await c.send(c.reward(answer.eventId, 0.5))
            with pytest.raises(BadRequest):
                await c.send(c.rank({"actions": []}))
            return answer

    assert asyncio.run(run()).rewardActionId in {"a", "b"}
