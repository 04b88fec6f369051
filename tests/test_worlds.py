"""The simulated worlds themselves: optimum, reproducibility, delays (no learning here)."""

from __future__ import annotations

import pytest

from banditloop.simulate import NewsWorld as SimulateNewsWorld
from banditloop.worlds import (
    WORLDS,
    ColdStartWorld,
    DelayedWorld,
    ManyActionsWorld,
    NewsWorld,
    NonStationaryWorld,
    ShuffledNewsWorld,
    make_world,
    rank_body,
)

pytest.importorskip("sklearn")


@pytest.mark.parametrize("name", list(WORLDS))
def test_best_has_the_highest_expected_reward(name: str) -> None:
    world = make_world(name, 3)
    for _ in range(300):
        it = world.next()
        best = world.expected(it, world.best(it))
        assert all(world.expected(it, a) <= best for a in it.action_ids)
        assert 0.0 <= best <= 1.0


@pytest.mark.parametrize("name", list(WORLDS))
def test_same_seed_same_stream(name: str) -> None:
    def stream(seed: int) -> list[tuple[object, ...]]:
        world = make_world(name, seed)
        out = []
        for _ in range(200):
            it = world.next()
            action = it.action_ids[it.index % len(it.actions)]
            out.append(
                (it.context, it.action_ids, it.delay, world.best(it), world.reward(it, action))
            )
        return out

    assert stream(1) == stream(1)
    assert stream(1) != stream(2)


@pytest.mark.parametrize("name", list(WORLDS))
def test_interactions_make_valid_rank_bodies(name: str) -> None:
    it = make_world(name, 0).next()
    body = rank_body(it)
    assert len(body["actions"]) == len(it.actions) <= 50
    assert all(a["features"] and a["features"][0] for a in body["actions"])
    assert it.index == 1


def test_news_world_is_the_vw_tutorial() -> None:
    assert SimulateNewsWorld is NewsWorld  # simulate keeps exporting it
    world = NewsWorld(0)
    for _ in range(50):
        it = world.next()
        key = (it.context["user"], it.context["time_of_day"])
        assert world.best(it) == NewsWorld.preferred[key]
        assert [world.reward(it, a) for a in it.action_ids].count(1.0) == 1


def test_nonstationary_world_shifts_every_preference_at_the_given_event() -> None:
    world = NonStationaryWorld(0, shift_at=100)
    before = after = 0
    for _ in range(200):
        it = world.next()
        key = (it.context["user"], it.context["time_of_day"])
        if it.index <= 100:
            assert world.best(it) == NewsWorld.preferred[key]
            before += 1
        else:
            assert world.best(it) == NonStationaryWorld.shifted[key] != NewsWorld.preferred[key]
            after += 1
    assert before == after == 100


def test_delayed_world_has_the_configured_delays_and_losses() -> None:
    world = DelayedWorld(0, min_delay=5, max_delay=20, missing=0.25)
    delays = [world.next().delay for _ in range(4000)]
    known = [d for d in delays if d is not None]
    assert all(5 <= d <= 20 for d in known)
    assert {min(known), max(known)} == {5, 20}
    assert delays.count(None) / len(delays) == pytest.approx(0.25, abs=0.03)
    assert all(d == 0 for d in (NewsWorld(0).next().delay, make_world("digits").next().delay))
    with pytest.raises(ValueError):
        DelayedWorld(0, min_delay=3, max_delay=2)


def test_cold_start_world_adds_a_new_best_action() -> None:
    world = ColdStartWorld(0, appear_at=10)
    its = [world.next() for _ in range(60)]
    assert all(ColdStartWorld.new_article not in it.action_ids for it in its[:10])
    later = its[10:]
    assert all(ColdStartWorld.new_article in it.action_ids for it in later)
    tom_morning = [it for it in later if it.hidden == ("Tom", "morning")]
    assert tom_morning and all(world.best(it) == "weather" for it in tom_morning)


def test_many_actions_world_is_a_stochastic_bilinear_model() -> None:
    world = ManyActionsWorld(0)
    it = world.next()
    assert len(it.actions) == 50 and len(it.actions[0].features) == 5
    means = [world.expected(it, a) for a in it.action_ids]
    assert len(set(means)) == 50 and 0 < min(means) < max(means) < 1
    a = sorted(it.action_ids, key=lambda b: world.expected(it, b))[25]  # a middling one
    draws = [world.reward(it, a) for _ in range(4000)]
    assert set(draws) == {0.0, 1.0}
    assert sum(draws) / len(draws) == pytest.approx(world.expected(it, a), abs=0.03)


@pytest.mark.parametrize(("name", "classes"), [("digits", 10), ("wine", 3), ("breast_cancer", 2)])
def test_supervised_worlds_reward_the_true_class(name: str, classes: int) -> None:
    world = make_world(name, 0)
    it = world.next()
    assert len(it.actions) == classes
    assert [world.reward(it, a) for a in it.action_ids].count(1.0) == 1


def test_unknown_world() -> None:
    with pytest.raises(ValueError, match="unknown world"):
        make_world("nope")


def test_shuffled_news_puts_the_articles_in_a_random_order() -> None:
    """baseline1 (the first action) is the clicked article one time in seven."""
    world = ShuffledNewsWorld(5)
    events = [world.next() for _ in range(7000)]
    first = sum(world.expected(it, it.actions[0].id) for it in events) / len(events)
    assert abs(first - 1 / 7) < 0.015
    assert all(sorted(it.action_ids) == sorted(NewsWorld.articles) for it in events)
    assert len({tuple(it.action_ids) for it in events[:50]}) > 40
