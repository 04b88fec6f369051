"""Rank requests: the original's validation rules, and the shape of the ranking."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditloop.errors import BadRequest
from banditloop.ranking import SlotInput, plan, plan_multislot, ranking

FEAT = [{"f": 1}]


def acts(n: int) -> list[tuple[str, Any]]:
    return [(f"a{i}", FEAT) for i in range(n)]


def refused(context: Any, actions: Any, excluded: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        plan(context, actions, excluded)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("n", [0, 51, 200])
def test_action_count_out_of_range(n: int) -> None:
    err = refused(None, acts(n), None)
    assert err.message == "Action count should be between 1 and 50."
    assert err.code == "InvalidRankRequest"


@pytest.mark.parametrize("n", [1, 50])
def test_action_count_limits_are_inclusive(n: int) -> None:
    p = plan(None, acts(n), None)
    assert len(p.vw_ids) == n


def test_empty_action_id() -> None:
    err = refused(None, [("a", FEAT), ("", FEAT)], None)
    assert err.message == "Action ids must not be empty."


def test_duplicate_action_ids() -> None:
    refused(None, [("a", FEAT), ("b", FEAT), ("a", [{"g": 2}])], None)


def test_unknown_excluded_id() -> None:
    err = refused(None, acts(3), ["a1", "zzz"])
    assert err.message == "All excluded action ID's must have corresponding action ID"


def test_all_excluded() -> None:
    refused(None, acts(3), ["a0", "a1", "a2"])


@pytest.mark.parametrize("features", [None, [], [None], [{"x": None}], [{"_x": 1}]])
def test_action_without_non_null_features(features: Any) -> None:
    err = refused(None, [("a", FEAT), ("b", features)], None)
    assert err.message == "Every action should have at least one non-null action feature."


def test_excluded_action_without_features_is_still_refused() -> None:
    refused(None, [("a", FEAT), ("b", None)], ["b"])


def test_excluded_actions_are_left_out_of_the_example() -> None:
    p = plan([{"u": 1}], acts(4), ["a1", "a3"])
    assert p.vw_ids == ["a0", "a2"]
    assert p.all_ids == ["a0", "a1", "a2", "a3"]
    assert '"a1"' not in p.example and '"a3"' not in p.example


def test_context_is_optional() -> None:
    p = plan(None, acts(2), None)
    assert p.vw_ids == ["a0", "a1"]


# -- ranking() ---------------------------------------------------------------------------------


@st.composite
def rank_case(draw: st.DrawFn) -> tuple[Any, list[float], int, set[str]]:
    n = draw(st.integers(1, 12))
    ids = [f"id-{i}" for i in range(n)]
    excluded = set(draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True)))
    p = plan(None, [(a, FEAT) for a in ids], sorted(excluded))
    weights = draw(
        st.lists(st.floats(0.0, 1.0), min_size=len(p.vw_ids), max_size=len(p.vw_ids)).filter(
            lambda w: sum(w) > 0
        )
    )
    pmf = [w / sum(weights) for w in weights]
    chosen = draw(st.sampled_from([i for i, q in enumerate(pmf) if q > 0]))
    return p, pmf, chosen, excluded


@settings(max_examples=150, deadline=None)
@given(case=rank_case())
def test_ranking_shape(case: tuple[Any, list[float], int, set[str]]) -> None:
    p, pmf, chosen, excluded = case
    out = ranking(p, pmf, chosen)
    ids = [r["id"] for r in out]
    assert sorted(ids) == sorted(p.all_ids), "every action listed exactly once"
    assert out[0]["id"] == p.vw_ids[chosen]
    assert out[0]["probability"] == pytest.approx(pmf[chosen])
    n_kept = len(p.all_ids) - len(excluded)
    assert {r["id"] for r in out[n_kept:]} == excluded
    assert all(r["probability"] == 0.0 for r in out[n_kept:])
    by_id = dict(zip(p.vw_ids, pmf, strict=True))
    for r in out[:n_kept]:
        assert r["probability"] == pytest.approx(by_id[r["id"]])
    assert sum(r["probability"] for r in out) == pytest.approx(1.0)


def test_ranking_example() -> None:
    p = plan(None, [("a", FEAT), ("b", FEAT), ("c", FEAT), ("d", FEAT)], ["b"])
    out = ranking(p, [0.1, 0.3, 0.6], 1)
    assert out == [
        {"id": "c", "probability": pytest.approx(0.3)},
        {"id": "d", "probability": pytest.approx(0.6)},
        {"id": "a", "probability": pytest.approx(0.1)},
        {"id": "b", "probability": 0.0},
    ]


def test_slots_are_part_of_the_example_object() -> None:
    """A CCB example gets its slots as a key of the same object, so the JSON is what the
    example without slots would be with ``_slots`` added last (logged examples keep
    their bytes)."""
    context = [{"user": {"id": "u1"}}]
    plain = plan(context, acts(3), None).example
    one = plan(context, acts(3), None, slots=[{"_id": "0"}]).example
    assert one == plain[:-1] + ',"_slots":[{"_id":"0"}]}'
    slots = [SlotInput("s1", [{"pos": 1}], ["a2"], "a0"), SlotInput("s2", None, None, "a1")]
    multi = plan_multislot(context, acts(3), slots)
    body = multi.with_slots([s.vw_object() for s in multi.slots])
    assert orjson.loads(body) == {
        **orjson.loads(plain),
        "_slots": [
            {"_id": "s1", "_inc": [0, 1], "sj": [{"pos": 1}]},
            {"_id": "s2", "_inc": [0, 1, 2]},
        ],
    }
    assert body.startswith(plain[:-1] + ',"_slots":[')
