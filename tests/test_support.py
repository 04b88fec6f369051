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
from banditloop.config import ServiceConfiguration
from banditloop.policy import DEFAULT_POLICY, epsilon_of, floor, with_epsilon
from banditloop.ranking import SlotInput
from banditloop.sampling import sample_index, seed_for
from banditloop.store import SqliteStore, SqlStore
from banditloop.store.base import LoopRecord

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


def make_loop(store: SqlStore, tmp_path: Path, policy: str, name: str = "sup") -> Loop:
    settings = Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"})
    wire = ServiceConfiguration.model_validate({"rewardWaitTime": "PT1S"})
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
