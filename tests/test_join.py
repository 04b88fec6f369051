"""The join: reward window, aggregation, default reward, deferred activation, labels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import vowpalwabbit
from vowpalwabbit import pyvw

from banditloop.config import LoopConfig
from banditloop.join import labelled, training_reward
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.ranking import plan
from banditloop.store.base import ClosedEvent, SlotChoice

EPSILON_GREEDY = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
TS = 1_000_000.0
WAIT = 600.0


def cfg(aggregation: str = "earliest", default: float = 0.0) -> LoopConfig:
    return LoopConfig(
        reward_wait=WAIT,
        default_reward=default,
        aggregation=aggregation,
        exploration=0.2,
        export_every=5.0,
        retention_days=90,
        learning_mode="Online",
    )


def event(
    rewards: Sequence[tuple[float, float]] = (),
    deferred: bool = False,
    activations: Sequence[float] = (),
) -> ClosedEvent:
    return ClosedEvent(
        seq=1,
        event_id="e",
        ts=TS,
        deferred=deferred,
        example="{}",
        slots=[SlotChoice(None, [0, 1], [0.5, 0.5], 0, 0, 0)],
        rewards=[(TS + dt, v, None) for dt, v in rewards],
        activations=[TS + dt for dt in activations],
    )


# arrival offsets (seconds after Rank) and values, in arrival order
REWARDS = [(1.0, 0.5), (2.0, -0.2), (3.0, 1.0), (4.0, 0.1)]


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("earliest", 0.5),
        ("sum", 1.4),
        ("average", 0.35),
        ("median", 0.3),
        ("min", -0.2),
        ("max", 1.0),
    ],
)
def test_aggregations(aggregation: str, expected: float) -> None:
    assert training_reward(event(REWARDS), cfg(aggregation)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("earliest", 0.5), ("sum", 0.3), ("average", 0.15), ("median", 0.15), ("min", -0.2)],
)
def test_rewards_after_the_window_are_ignored(aggregation: str, expected: float) -> None:
    late = [(WAIT + 1.0, 1.0), (WAIT * 3, -1.0)]
    ev = event([(1.0, 0.5), (2.0, -0.2), *late])
    assert training_reward(ev, cfg(aggregation)) == pytest.approx(expected)


def test_odd_median() -> None:
    ev = event([(1.0, 0.9), (2.0, -0.5), (3.0, 0.2)])
    assert training_reward(ev, cfg("median")) == pytest.approx(0.2)


def test_earliest_is_the_first_to_arrive() -> None:
    ev = event([(5.0, -0.3), (6.0, 0.9)])
    assert training_reward(ev, cfg("earliest")) == pytest.approx(-0.3)


@pytest.mark.parametrize("aggregation", ["earliest", "sum", "average", "median", "min", "max"])
def test_default_reward_when_none_arrived(aggregation: str) -> None:
    assert training_reward(event(), cfg(aggregation, default=0.25)) == 0.25


def test_default_reward_when_only_late_rewards() -> None:
    ev = event([(WAIT + 5.0, 1.0)])
    assert training_reward(ev, cfg("sum", default=-0.5)) == -0.5


def test_deferred_never_activated_is_not_learned() -> None:
    assert training_reward(event([(1.0, 1.0)], deferred=True), cfg()) is None


def test_deferred_activated_after_the_window_is_not_learned() -> None:
    ev = event([(1.0, 1.0)], deferred=True, activations=[WAIT + 10.0])
    assert training_reward(ev, cfg()) is None


def test_deferred_activated_in_window_is_learned() -> None:
    ev = event([(2.0, 0.7)], deferred=True, activations=[1.0])
    assert training_reward(ev, cfg()) == pytest.approx(0.7)


def test_deferred_activated_without_reward_gets_default() -> None:
    ev = event(deferred=True, activations=[1.0])
    assert training_reward(ev, cfg(default=0.1)) == pytest.approx(0.1)


# -- labelled(): what VW reads ----------------------------------------------------------------

ACTIONS = [("a", [{"t": "x"}]), ("b", [{"t": "y"}]), ("c", [{"t": "z"}])]


@pytest.fixture
def ws() -> Iterator[vowpalwabbit.Workspace]:
    w = vowpalwabbit.Workspace("--cb_explore_adf --json --quiet")
    yield w
    w.finish()


@pytest.mark.parametrize(
    ("chosen", "probability", "cost"), [(0, 0.5, -1.0), (1, 0.25, 0.3), (2, 0.8, -0.75)]
)
def test_labelled_carries_action_cost_and_probability(
    ws: vowpalwabbit.Workspace, chosen: int, probability: float, cost: float
) -> None:
    p = plan([{"u": "x|y z:1"}], ACTIONS, None)
    exs = ws.parse(labelled(p.example, chosen, probability, cost))
    try:
        assert len(exs) == 1 + len(ACTIONS)
        labels = [
            [(c.action, c.cost, c.probability) for c in ex.get_label(pyvw.CBLabel).costs]
            for ex in exs[1:]
        ]
        for i, costs in enumerate(labels):
            if i == chosen:
                assert len(costs) == 1
                action, got_cost, got_p = costs[0]
                assert action == chosen + 1
                assert got_cost == pytest.approx(cost)
                assert got_p == pytest.approx(probability)
            else:
                assert costs == []
    finally:
        ws.finish_example(exs)


def test_learning_from_labelled_moves_the_policy() -> None:
    context = [{"user": "u1"}]
    p = plan(context, ACTIONS, None)
    policy = Policy(EPSILON_GREEDY)
    try:
        assert policy.pmf(p.example) == pytest.approx([1 / 3] * 3, abs=0.01)
        # reward 1 (cost -1) for c, 0 for the others, on the probability they were shown with
        lines = []
        for _ in range(30):
            lines.append(labelled(p.example, 2, 1 / 3, -1.0))
            lines.append(labelled(p.example, 0, 1 / 3, 0.0))
            lines.append(labelled(p.example, 1, 1 / 3, 0.0))
        assert policy.learn(lines) == 90
        pmf = policy.pmf(p.example)
        assert pmf[2] == pytest.approx(0.8 + 0.2 / 3, abs=1e-6)
        assert max(range(3), key=lambda i: pmf[i]) == 2
    finally:
        policy.close()


def test_learning_follows_the_cost_sign() -> None:
    """Same data with the costs negated must favour the other action: the sign is kept."""
    p = plan([{"user": "u1"}], ACTIONS[:2], None)
    policy = Policy(DEFAULT_POLICY)
    try:
        lines = []
        for _ in range(30):
            lines.append(labelled(p.example, 0, 0.5, 1.0))  # reward -1 for a
            lines.append(labelled(p.example, 1, 0.5, 0.0))
        policy.learn(lines)
        pmf = policy.pmf(p.example)
        assert pmf[1] > pmf[0]
    finally:
        policy.close()
