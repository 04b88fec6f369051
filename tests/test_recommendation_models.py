"""The built-in models on their own: popularity's decay and window, co-occurrence
within groups, content similarity, and the candidate filters of a scenario."""

from __future__ import annotations

import pytest

from banditloop.recommendations.models import DAY, Content, CoOccurrence, Popularity, tokens
from banditloop.store.base import Item

NOW = 1_800_000_000.0


def test_popularity_decays_with_the_half_life_and_drops_the_window() -> None:
    pop = Popularity(window_days=10, half_life_days=1)
    pop.add("buy", "old", NOW - 3 * DAY, 4.0, NOW)  # 4 halved three times: 0.5
    pop.add("buy", "new", NOW, 1.0, NOW)
    pop.add("buy", "gone", NOW - 11 * DAY, 100.0, NOW)  # outside the window
    ranked = dict(pop.top(None, 10))
    assert list(ranked) == ["new", "old"]
    assert ranked["old"] / ranked["new"] == pytest.approx(0.5)
    pop.expire(NOW + 8 * DAY)  # the day of "old" leaves the window
    assert [i for i, _ in pop.top(None, 10)] == ["new"]


def test_popularity_filters_by_type_and_skips() -> None:
    pop = Popularity(30, 7)
    pop.add("click", "a", NOW, 5.0, NOW)
    pop.add("buy", "b", NOW, 1.0, NOW)
    assert [i for i, _ in pop.top(["buy"], 5)] == ["b"]
    assert [i for i, _ in pop.top(None, 5)] == ["a", "b"]
    assert [i for i, _ in pop.top(None, 5, skip=["a"])] == ["b"]


def test_popularity_survives_a_rebase_far_in_the_future() -> None:
    pop = Popularity(window_days=10_000, half_life_days=0.01)
    pop.add("buy", "a", NOW, 1.0, NOW)
    later = NOW + 6 * DAY  # 600 half-lives: beyond the rebase threshold
    pop.add("buy", "b", later, 1.0, later)
    assert [i for i, _ in pop.top(None, 2)] == ["b", "a"]


def test_cooccurrence_pairs_items_within_a_group_and_type() -> None:
    co = CoOccurrence(history=10)
    for group, basket in [("s1", ["a", "b"]), ("s2", ["a", "b", "c"]), ("s3", ["a", "d"])]:
        for item in basket:
            co.add("buy", item, group, 1.0)
    co.add("click", "z", "s1", 1.0)  # another type: never paired with buys
    related = dict(co.related(["a"], ["buy"], 5))
    assert set(related) == {"b", "c", "d"}
    assert related["b"] > related["d"]  # together twice
    assert co.related(["a"], ["click"], 5) == []
    assert "a" not in dict(co.related(["a", "b"], None, 5))  # never the seeds themselves


def test_cooccurrence_forgets_the_least_recent_groups() -> None:
    co = CoOccurrence(history=5, max_groups=2)
    co.add("buy", "a", "g1", 1.0)
    co.add("buy", "b", "g2", 1.0)
    co.add("buy", "c", "g3", 1.0)  # g1 is forgotten
    co.add("buy", "x", "g1", 1.0)
    assert "a" not in dict(co.related(["x"], None, 5))


def test_content_similarity_prefers_shared_rare_tokens() -> None:
    items = [
        Item("a", [{"category": "books", "author": {"name": "Le Guin"}}]),
        Item("b", [{"category": "books", "author": {"name": "Le Guin"}}]),
        Item("c", [{"category": "books", "author": {"name": "Banks"}}]),
        Item("d", [{"category": "games", "price": 10}]),
    ]
    similar = Content(items).similar(["a"], 3)
    assert [i for i, _ in similar] == ["b", "c"]
    assert similar[0][1] == pytest.approx(1.0)
    assert list(tokens(items[0].features)) == ["category=books", "author.name=Le Guin"]
