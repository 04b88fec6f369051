"""Support: the default policy never stops exploring (issue 18).

Small seeded cases, driven in-process (``Trainer.drain``): every eligible action of
every logged decision keeps probability >= explorationPercentage / K, per slot for
multi-slot; excluded actions stay at 0; the logged pmf is the one sampled from.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from banditloop import Loop, RankInput, Settings
from banditloop.api.evaluations import evaluation_body
from banditloop.config import ServiceConfiguration
from banditloop.evaluation.jobs import run_evaluation
from banditloop.policy import DEFAULT_POLICY, epsilon_of, floor, with_epsilon
from banditloop.ranking import SlotInput
from banditloop.sampling import sample_index, seed_for
from banditloop.store import SqliteStore, SqlStore
from banditloop.store.base import JobRecord, LoopRecord
from banditloop.worlds import ShuffledNewsWorld

EPS = ServiceConfiguration().explorationPercentage
ARTICLES = ["politics", "sports", "music", "food", "finance", "health", "camping"]
LATER = 10.0  # seconds: past the PT1S reward window


def test_the_default_explores_a_share_of_traffic() -> None:
    assert pytest.approx(0.05) == EPS
    assert epsilon_of(with_epsilon(DEFAULT_POLICY, EPS)) == pytest.approx(EPS)
    assert epsilon_of(DEFAULT_POLICY) == 0.0


@pytest.mark.parametrize("k", [1, 2, 7, 50])
def test_floor_keeps_every_action_at_p_min_and_sums_to_one(k: int) -> None:
    rng = random.Random(k)
    for eps in (0.01, 0.05, 0.2, 0.9):
        p_min = eps / k
        cases = [
            [1.0] + [0.0] * (k - 1),
            [0.9999993] + [0.0] * (k - 1),  # what --synthcover with epsilon 0 logged
            [rng.random() ** 8 for _ in range(k)],
            [1.0 / k] * k,
        ]
        for pmf in cases:
            out = floor(pmf, eps)
            assert len(out) == k
            assert min(out) >= p_min * (1 - 1e-12), (pmf, eps, out)
            assert math.fsum(out) == pytest.approx(1.0, abs=1e-12)
            # the order of the algorithm's preferences is kept
            order = sorted(range(k), key=lambda i: -pmf[i])
            assert all(out[a] >= out[b] - 1e-12 for a, b in itertools.pairwise(order))


def test_floor_leaves_a_floored_pmf_alone_and_eps_zero_alone() -> None:
    greedy = [0.95 + 0.05 / 4, 0.05 / 4, 0.05 / 4, 0.05 / 4]  # epsilon-greedy at 0.05
    assert floor(greedy, 0.05) == pytest.approx(greedy, abs=1e-15)
    raw = [0.9999993, 0.0, 0.0]
    assert floor(raw, 0.0) == raw
    assert floor([0.0, 0.0], 0.05) == [0.5, 0.5]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqliteStore(tmp_path / "data")
    yield opened
    opened.close()


def make_loop(store: SqlStore, tmp_path: Path, policy: str, **config: Any) -> Loop:
    name = "sup"
    settings = Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"})
    wire = ServiceConfiguration.model_validate({"rewardWaitTime": "PT1S", **config})
    record = LoopRecord(name, wire.model_dump(mode="json"), name, policy, time.time())
    store.put_loop(record).result()
    return Loop(store, settings, record)  # no trainer thread: the test drives it


def rank(loop: Loop, event_id: str, user: str, excluded: list[str] | None = None) -> Any:
    actions = [(a, [{"article": a}]) for a in ARTICLES]
    req = RankInput([{"user": user}], actions, excluded, event_id, False, "")  # type: ignore[arg-type]
    return orjson.loads(asyncio.run(loop.rank(req)))


def test_a_learned_default_keeps_the_floor_on_every_logged_decision(
    store: SqlStore, tmp_path: Path
) -> None:
    """Taught one article per user until it is sure, the default still gives every
    eligible article >= 0.05/K; excluded ones stay 0; the draw is from the logged pmf."""
    loop = make_loop(store, tmp_path, DEFAULT_POLICY)
    best = {"ann": "politics", "bob": "music"}
    try:
        for i in range(400):
            user = ("ann", "bob")[i % 2]
            shown = rank(loop, f"e{i}", user)["rewardActionId"]
            asyncio.run(loop.reward(f"e{i}", 1.0 if shown == best[user] else 0.0))
        assert loop.trainer.drain(time.time() + LATER) == 400
        for j, excluded in enumerate([None, ["camping", "food"]]):
            for user, article in best.items():
                event = f"after-{j}-{user}"
                answer = rank(loop, event, user, excluded)
                probs = {r["id"]: r["probability"] for r in answer["ranking"]}
                eligible = [a for a in ARTICLES if a not in (excluded or [])]
                assert max(probs, key=probs.__getitem__) == article, probs
                assert probs[article] > 0.9, probs  # it learned: the floor matters
                assert min(probs[a] for a in eligible) >= EPS / len(eligible) * (1 - 1e-9)
                assert all(probs[a] == 0.0 for a in excluded or [])
                assert math.fsum(probs.values()) == pytest.approx(1.0, abs=1e-12)
                logged = store.get_decision("sup", event)
                assert logged is not None
                slot = logged.slots[0]
                assert [logged.action_ids[i] for i in slot.actions] == eligible
                assert slot.pmf == [probs[a] for a in eligible]
                assert slot.chosen == sample_index(slot.pmf, seed_for(event))
                assert answer["rewardActionId"] == eligible[slot.chosen]
    finally:
        loop.close()


def test_multislot_keeps_the_floor_per_slot(store: SqlStore, tmp_path: Path) -> None:
    loop = make_loop(store, tmp_path, "--ccb_explore_adf -q ::")
    actions = [(a, [{"article": a}]) for a in ARTICLES]
    slots = [
        SlotInput("top", [{"pos": 1}], ["camping"], "politics"),
        SlotInput("side", [{"pos": 2}], None, "sports"),
        SlotInput("foot", [{"pos": 3}], ["food", "health"], "music"),
    ]
    try:
        for i in range(60):
            req = RankInput([{"user": "ann"}], actions, None, f"m{i}", False, "")  # type: ignore[arg-type]
            asyncio.run(loop.rank_multislot(req, slots))
        loop.trainer.drain(time.time() + LATER)
        for i in range(5):
            req = RankInput([{"user": "ann"}], actions, None, f"n{i}", False, "")  # type: ignore[arg-type]
            answer = orjson.loads(asyncio.run(loop.rank_multislot(req, slots)))
            logged = store.get_decision("sup", f"n{i}")
            assert logged is not None
            taken: set[int] = set()
            for slot, choice, out in zip(slots, logged.slots, answer["slots"], strict=True):
                excluded = {ARTICLES.index(a) for a in slot.excluded or []}
                eligible = [k for k in range(len(ARTICLES)) if k not in excluded | taken]
                assert choice.actions == eligible  # excluded and earlier slots' actions: absent
                assert min(choice.pmf) >= EPS / len(eligible) * (1 - 1e-9), choice.pmf
                assert math.fsum(choice.pmf) == pytest.approx(1.0, abs=1e-12)
                assert out["rewardActionId"] == ARTICLES[eligible[choice.shown]]
                taken.add(eligible[choice.shown])
    finally:
        loop.close()


# -- estimates that say when they cannot be trusted --------------------------------------


def play(loop: Loop, events: int, seed: int) -> float:
    """The shuffled news world through the loop, learned every 100 events as a live
    trainer would; returns baseline1's true value on these contexts (1/7 on average)."""
    world = ShuffledNewsWorld(seed)
    truth = 0.0
    for i in range(events):
        it = world.next()
        actions = [(a.id, [a.features]) for a in it.actions]
        req = RankInput([it.context], actions, None, f"s{seed}-{i}", False, "")  # type: ignore[arg-type]
        shown = orjson.loads(asyncio.run(loop.rank(req)))["rewardActionId"]
        asyncio.run(loop.reward(f"s{seed}-{i}", world.reward(it, shown)))
        truth += world.expected(it, it.actions[0].id)
        if i % 100 == 99:
            loop.trainer.drain(time.time() + LATER)
    loop.trainer.drain(time.time() + LATER)
    return truth / events


def evaluated(store: SqlStore, tmp_path: Path, loop: Loop) -> JobRecord:
    request = {"name": "e", "start": 0.0, "end": time.time() + 60, "policies": []}
    db = str(tmp_path / "data" / "banditloop.db")
    result = run_evaluation(db, loop.name, request, loop.record.policy)
    return JobRecord("e", time.time(), "Succeeded", request, result)


def by_name(job: JobRecord) -> dict[str, dict[str, Any]]:
    assert job.result is not None
    return {p["name"]: p["summary"] for p in job.result["policies"]}


def test_default_logs_give_baseline_and_random_intervals_that_cover_the_truth(
    store: SqlStore, tmp_path: Path
) -> None:
    loop = make_loop(store, tmp_path, DEFAULT_POLICY)
    try:
        truth = play(loop, 1500, seed=3)
        job = evaluated(store, tmp_path, loop)
    finally:
        loop.close()
    summaries = by_name(job)
    for name, value in (("baseline1", truth), ("baselineRand", 1 / 7)):
        s = summaries[name]
        d = s["diagnostics"]
        assert d["estimable"] is True and d["reason"] is None, d
        assert d["missingSupportEvents"] == 0
        assert d["events"] == 1500
        assert 10 <= d["effectiveSampleSize"] < 1500
        assert d["maxImportanceWeight"] <= len(ARTICLES) / EPS + 1e-6  # w <= 1 / p_min
        low, high = s["confidenceInterval"]
        assert low <= value <= high, (name, value, s)
    assert abs(truth - 1 / 7) < 0.03


def test_logs_without_support_are_not_estimable_on_both_wire_shapes(
    store: SqlStore, tmp_path: Path
) -> None:
    """The old default (synthcover, explorationPercentage 0) stops showing the other
    articles: baseline1 cannot be estimated from its logs, and the answer says so."""
    old = "--cb_explore_adf --synthcover -q ::"
    loop = make_loop(store, tmp_path, old, explorationPercentage=0)
    try:
        play(loop, 400, seed=1)
        job = evaluated(store, tmp_path, loop)
    finally:
        loop.close()
    summaries = by_name(job)
    base = summaries["baseline1"]
    assert base["diagnostics"]["estimable"] is False
    assert "never showed these actions" in base["diagnostics"]["reason"]
    assert base["diagnostics"]["missingSupportShare"] > 0.5
    assert base["expectedReward"] is None and base["confidenceInterval"] == [None, None]
    assert summaries["online"]["diagnostics"]["estimable"] is True  # its own logs
    assert job.result is not None and "baseline1" in job.result["notEstimable"]

    v2 = evaluation_body(job, v1=False)
    (p2,) = [p for p in v2["content"]["value"] if p["name"] == "baseline1"]
    assert p2["summary"]["diagnostics"]["estimable"] is False
    assert all("diagnostics" in point for point in p2["timeseries"]["data"])
    assert "baseline1" in v2["notEstimablePolicies"]
    v1 = evaluation_body(job, v1=True)
    (p1,) = [p for p in v1["policyResults"] if p["name"] == "baseline1"]
    assert p1["totalSummary"]["averageReward"] is None
    assert p1["totalSummary"]["diagnostics"]["estimable"] is False
    assert p1["totalSummary"]["diagnostics"]["reason"] == base["diagnostics"]["reason"]
