"""The trainer on a real SQLite file and a real VW policy: exactly-once learning across crashes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import pytest
import vowpalwabbit

from banditloop.clock import WALL, Clock
from banditloop.config import LoopConfig
from banditloop.join import labelled
from banditloop.live import LivePolicy
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.ranking import plan
from banditloop.store import SqlStore
from banditloop.store.base import Decision, SlotChoice
from banditloop.trainer import Trainer

LOOP = "default"
WAIT = 600.0
T0 = 1_700_000_000.0
ACTIONS = [("a", [{"t": "x"}]), ("b", [{"t": "y"}]), ("c", [{"t": "z"}])]


def config(aggregation: str = "earliest", default: float = 0.4) -> LoopConfig:
    return LoopConfig(
        reward_wait=WAIT,
        default_reward=default,
        aggregation=aggregation,
        exploration=0.2,
        export_every=3600.0,
        retention_days=90,
        learning_mode="Online",
    )


def decision(i: int, ts: float = T0, deferred: bool = False) -> Decision:
    p = plan([{"user": f"u{i % 4}"}], ACTIONS, None)
    pmf = [0.2, 0.3, 0.5]
    chosen = i % 3
    return Decision(
        loop=LOOP,
        event_id=f"evt-{i}",
        ts=ts,
        close_at=ts + WAIT,
        deferred=deferred,
        request_hash=f"h{i}",
        example=p.example,
        action_ids=p.vw_ids,
        slots=[SlotChoice(None, [0, 1, 2], pmf, chosen, chosen, 0)],
        response=b"{}",
        model_version="0",
    )


def log(store: SqlStore, decisions: list[Decision]) -> None:
    for d in decisions:
        assert store.append_decision(d).result() is None


class Given(LivePolicy):
    """The policy a test gives the trainer, which must never load another."""

    def load(self, blob: bytes | None, args: str | None = None) -> None:
        pytest.fail("the trainer starts from the model it was given")


def make_trainer(store: SqlStore, policy: Policy, cfg: LoopConfig, clock: Clock = WALL) -> Trainer:
    latest = store.latest_model(LOOP)
    return Trainer(
        LOOP,
        store,
        Given(policy),
        cfg,
        latest=latest,
        born=T0,
        batch=4,  # several steps per test: batches must not overlap
        clock=clock,
    )


def drain(trainer: Trainer, now: float) -> int:
    total = 0
    while n := trainer.step(now):
        total += n
    return total


def weights(blob: bytes) -> list[float]:
    """Every weight of a saved VW model, read by a fresh workspace of our own."""
    with tempfile.NamedTemporaryFile(suffix=".vw") as fh:
        fh.write(blob)
        fh.flush()
        ws = vowpalwabbit.Workspace(f"--quiet -i {fh.name}")
    try:
        return [ws.get_weight(i) for i in range(ws.num_weights())]
    finally:
        ws.finish()


def reference_blob(decisions: list[Decision], rewards: dict[str, float], cfg: LoopConfig) -> bytes:
    """A model that learned every decision exactly once, in the given order."""
    policy = Policy(DEFAULT_POLICY)
    try:
        lines = [
            labelled(
                d.example,
                d.slots[0].chosen,
                d.slots[0].probability,
                -rewards.get(d.event_id, cfg.default_reward),
            )
            for d in decisions
        ]
        policy.learn(lines)
        return policy.save()
    finally:
        policy.close()


def test_closed_events_are_learned_exactly_once(store: SqlStore) -> None:
    cfg = config()
    ds = [decision(i) for i in range(10)]
    log(store, ds)
    policy = Policy(DEFAULT_POLICY)
    trainer = make_trainer(store, policy, cfg)

    assert drain(trainer, T0 + WAIT - 1) == 0, "nothing closes before the window ends"
    assert store.count_learned(LOOP) == 0

    assert drain(trainer, T0 + WAIT + 1) == 10
    assert store.count_learned(LOOP) == 10
    assert trainer.events_learned == 10
    assert drain(trainer, T0 + WAIT + 100) == 0, "a second pass learns nothing"

    trainer.save()
    latest = store.latest_model(LOOP)
    assert latest is not None and latest.events_learned == 10
    assert weights(latest.blob) == weights(reference_blob(ds, {}, cfg))
    policy.close()


def test_crash_before_save_relearns_exactly_the_unsaved(
    make_store: Callable[[], SqlStore],
) -> None:
    cfg = config()
    ds = [decision(i, ts=T0 + i) for i in range(15)]
    rewards = {d.event_id: (1.0 if i % 2 else -0.5) for i, d in enumerate(ds)}

    store = make_store()
    log(store, ds)
    for d in ds:
        store.append_rewards(
            LOOP, d.event_id, [(None, rewards[d.event_id])], d.ts + 1, False
        ).result()
    policy = Policy(DEFAULT_POLICY)
    trainer = make_trainer(store, policy, cfg)
    # the first 10 events close and are saved in checkpoint 1
    assert drain(trainer, T0 + 9 + WAIT) == 10
    assert trainer.save().number == 1
    # the last 5 are learned and marked, then the process dies before the next save
    assert drain(trainer, T0 + 14 + WAIT) == 5
    assert store.count_learned(LOOP) == 15
    policy.close()
    store.close()

    # restart: a new store on the same database, the policy from the saved model
    store = make_store()
    try:
        latest = store.latest_model(LOOP)
        assert latest is not None and latest.number == 1 and latest.events_learned == 10
        policy = Policy(DEFAULT_POLICY, latest.blob)
        trainer = make_trainer(store, policy, cfg)
        assert store.lead(LOOP)  # PostgreSQL: only the elected trainer may undo marks
        assert trainer.recover() == 5
        assert store.count_learned(LOOP) == 10
        assert drain(trainer, T0 + 14 + WAIT) == 5
        assert drain(trainer, T0 + 10 * WAIT) == 0
        assert store.count_learned(LOOP) == 15
        trainer.save()
        latest = store.latest_model(LOOP)
        assert latest is not None and latest.events_learned == 15
        # the model saw each event once: same weights as learning all 15 once, in order
        assert weights(latest.blob) == weights(reference_blob(ds, rewards, cfg))
        # and a second recovery after a clean save forgets nothing
        assert make_trainer(store, policy, cfg).recover() == 0
        policy.close()
    finally:
        store.close()


def test_reference_weights_detect_a_double_learn() -> None:
    """The weight comparison used above can tell a model that learned an event twice."""
    cfg = config()
    ds = [decision(i) for i in range(6)]
    once = weights(reference_blob(ds, {}, cfg))
    twice = weights(reference_blob([*ds, ds[-1]], {}, cfg))
    assert once != twice


def test_earliest_closes_an_event_when_its_reward_arrives(store: SqlStore) -> None:
    cfg = config("earliest")
    early, other = decision(1), decision(2)
    log(store, [early, other])
    store.append_rewards(LOOP, early.event_id, [(None, 1.0)], T0 + 5, True).result()
    policy = Policy(DEFAULT_POLICY)
    trainer = make_trainer(store, policy, cfg)

    assert drain(trainer, T0 + 6) == 1, "closed early by its reward; the other still open"
    assert store.count_learned(LOOP) == 1
    assert trainer.events_learned == 1

    # a later reward for the learned event is kept but not learned again
    store.append_rewards(LOOP, early.event_id, [(None, -1.0)], T0 + 7, True).result()
    assert drain(trainer, T0 + 8) == 0
    assert drain(trainer, T0 + WAIT + 1) == 1  # only `other`, at its own window end
    assert store.count_learned(LOOP) == 2
    assert trainer.events_learned == 2

    trainer.save()
    latest = store.latest_model(LOOP)
    assert latest is not None and latest.events_learned == 2
    expected = reference_blob([early, other], {early.event_id: 1.0}, cfg)
    assert weights(latest.blob) == weights(expected)
    policy.close()


def test_sum_does_not_close_early(store: SqlStore) -> None:
    cfg = config("sum")
    d = decision(1)
    log(store, [d])
    store.append_rewards(LOOP, d.event_id, [(None, 0.5)], T0 + 5, False).result()
    store.append_rewards(LOOP, d.event_id, [(None, 0.25)], T0 + 6, False).result()
    policy = Policy(DEFAULT_POLICY)
    trainer = make_trainer(store, policy, cfg)
    assert drain(trainer, T0 + 10) == 0
    assert drain(trainer, T0 + WAIT + 1) == 1
    trainer.save()
    latest = store.latest_model(LOOP)
    assert latest is not None
    assert weights(latest.blob) == weights(reference_blob([d], {d.event_id: 0.75}, cfg))
    policy.close()


def test_deferred_event_is_not_closed_early_until_activated(store: SqlStore) -> None:
    cfg = config("earliest")
    d = decision(1, deferred=True)
    log(store, [d])
    store.append_rewards(LOOP, d.event_id, [(None, 1.0)], T0 + 5, True).result()
    policy = Policy(DEFAULT_POLICY)
    trainer = make_trainer(store, policy, cfg)
    assert drain(trainer, T0 + 6) == 0, "not activated: must not close on its reward"
    store.append_activation(LOOP, d.event_id, T0 + 7, True).result()
    assert drain(trainer, T0 + 8) == 1
    assert trainer.events_learned == 1
    policy.close()


def test_deferred_never_activated_is_handled_but_not_learned(store: SqlStore) -> None:
    cfg = config()
    d = decision(1, deferred=True)
    log(store, [d])
    policy = Policy(DEFAULT_POLICY)
    trainer = make_trainer(store, policy, cfg)
    assert drain(trainer, T0 + WAIT + 1) == 1
    assert trainer.events_learned == 0
    assert drain(trainer, T0 + 2 * WAIT) == 0
    trainer.save()
    latest = store.latest_model(LOOP)
    assert latest is not None and latest.events_learned == 0
    assert weights(latest.blob) == weights(reference_blob([], {}, cfg))
    policy.close()


def test_a_model_is_saved_once_per_export_period_when_it_learned(store: SqlStore) -> None:
    now = [T0]
    trainer = make_trainer(store, Policy(DEFAULT_POLICY), config(), lambda: now[0])
    assert trainer.save_if_due() is None  # nothing learned
    log(store, [decision(0)])
    assert trainer.drain(T0 + WAIT) == 1
    now[0] += 3599
    assert trainer.save_if_due() is None  # not due
    now[0] += 1
    saved = trainer.save_if_due()
    assert saved is not None and saved.events_learned == 1
    assert store.latest_model(LOOP) == saved
    now[0] += 7200
    assert trainer.save_if_due() is None  # due, but nothing new learned
