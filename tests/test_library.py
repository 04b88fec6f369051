"""banditloop as a library: Loop, Registry and open_service used directly, no HTTP.

The trainer is driven in-process (``Trainer.drain``) at a chosen time, so nothing
here waits for a thread: every outcome follows from the seeded event IDs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import banditloop
from banditloop import Loop, RankInput, Registry, Settings, Unavailable, open_service
from banditloop.config import ServiceConfiguration
from banditloop.evaluation.jobs import JobRunner
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.ranking import plan
from banditloop.store import SqliteStore, SqlStore
from banditloop.store.base import Item, LoopRecord, TrackedEvent
from banditloop.upkeep import Upkeep

ACTIONS = [("news", [{"topic": "news"}]), ("sport", [{"topic": "sport"}])]
LATER = 10.0  # seconds: past every reward window of these tests (PT1S)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", loop={"rewardWaitTime": "PT1S"})


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlStore]:
    opened = SqliteStore(settings.data_dir)
    yield opened
    opened.close()


def make_loop(store: SqlStore, settings: Settings, name: str = "lib", **config: Any) -> Loop:
    wire = ServiceConfiguration.model_validate({"rewardWaitTime": "PT1S", **config})
    record = LoopRecord(name, wire.model_dump(mode="json"), name, DEFAULT_POLICY, time.time())
    store.put_loop(record).result()
    return Loop(store, settings, record)  # no trainer thread: the test drives it


def rank(loop: Loop, event_id: str, user: str) -> dict[str, Any]:
    req = RankInput([{"user": user}], ACTIONS, None, event_id, False, "")
    return dict(orjson.loads(asyncio.run(loop.rank(req))))


def test_a_loop_ranks_learns_and_serves_what_it_learned(
    store: SqlStore, settings: Settings
) -> None:
    """Each user is rewarded for one topic; after one drain the loop prefers it."""
    loop = make_loop(store, settings)
    try:
        best = {"ann": "news", "bob": "sport"}
        for i in range(120):
            user = ("ann", "bob")[i % 2]
            answer = rank(loop, f"e{i}", user)
            shown = answer["rewardActionId"]
            asyncio.run(loop.reward(f"e{i}", 1.0 if shown == best[user] else 0.0))
        assert loop.trainer.drain(time.time() - LATER) == 0, "nothing has closed yet"
        assert loop.trainer.drain(time.time() + LATER) == 120
        assert store.count_learned("lib") == 120
        assert loop.trainer.save() is not None and loop.model_version == "1"
        for user, topic in best.items():
            ranking = rank(loop, f"after-{user}", user)["ranking"]
            top = max(ranking, key=lambda a: a["probability"])
            assert top["id"] == topic, ranking
    finally:
        loop.close()


def test_a_rank_keeps_the_policy_it_started_with(store: SqlStore, settings: Settings) -> None:
    """A new model that arrives in the middle of a Rank does not serve the rest of it."""
    loop = make_loop(store, settings, isInferenceExplainabilityEnabled=True)
    explained_by: list[Policy] = []

    class SwappedMidway(Policy):
        def pmf(self, example: str) -> list[float]:
            out = super().pmf(example)
            loop.live.load(None)  # another model is made live now
            return out

        def explain(self, example: str) -> list[list[dict[str, object]]]:
            explained_by.append(self)
            return super().explain(example)

    first = SwappedMidway(loop.live.args)
    old, loop.live.policy = loop.live.policy, first
    old.close()
    try:
        answer = rank(loop, "e1", "ann")
        assert "inferenceExplanation" in answer
        assert explained_by == [first], "explained by the policy that ranked"
        assert loop.policy is not first, "the new model serves the next Rank"
        rank(loop, "e2", "ann")
        assert explained_by == [first]  # the new one is a plain Policy
    finally:
        first.close()
        loop.close()


def test_a_second_loop_on_the_store_follows_the_models_the_first_saves(
    store: SqlStore, settings: Settings
) -> None:
    """As a rank worker follows the trainer process: refresh loads each saved model."""
    trainer = make_loop(store, settings)
    record = store.get_loop("lib")
    assert record is not None
    worker = Loop(store, settings, record)
    try:
        for i in range(40):
            shown = rank(worker, f"e{i}", "ann")["rewardActionId"]
            asyncio.run(worker.reward(f"e{i}", 1.0 if shown == "news" else 0.0))
        assert trainer.trainer.drain(time.time() + LATER) == 40
        saved = trainer.trainer.save()
        assert saved is not None and worker.model_version == "0"
        worker.refresh()
        assert worker.model_version == str(saved.number)
        example = plan([{"user": "ann"}], ACTIONS, None).example
        assert worker.policy.pmf(example) == trainer.policy.pmf(example)
        news, sport = worker.policy.pmf(example)
        assert news > sport, "it learned"
    finally:
        worker.close()
        trainer.close()


def test_events_learned_into_a_model_replaced_elsewhere_are_learned_again(
    store: SqlStore, settings: Settings
) -> None:
    """A worker process resets the model while the trainer process learns: what the
    trainer learned into the replaced model before it noticed is not marked, and goes
    into the new model once the trainer has loaded it."""
    trainer = make_loop(store, settings)
    record = store.get_loop("lib")
    assert record is not None
    worker = Loop(store, settings, record)
    later = time.time() + LATER

    def traffic(ids: range) -> None:
        for i in ids:
            rank(worker, f"e{i}", "ann")
            asyncio.run(worker.reward(f"e{i}", 1.0))

    try:
        traffic(range(4))
        assert trainer.trainer.drain(later) == 4
        worker.reset_model()  # a new model, saved by the worker
        traffic(range(4, 8))
        assert trainer.trainer.step(later) == 0  # learned into the replaced model: refused
        assert store.count_learned("lib") == 4
        trainer.refresh()  # what the trainer process does every 0.5 s
        assert trainer.trainer.drain(later) == 4
        assert store.count_learned("lib") == 8
        saved = trainer.trainer.save()
        assert saved is not None and saved.events_learned == 4  # the four after the reset
    finally:
        worker.close()
        trainer.close()


def test_a_registry_keeps_the_set_of_loops_of_every_process(
    store: SqlStore, settings: Settings
) -> None:
    here, there = Registry(store, settings, train=False), Registry(store, settings, train=False)
    here.open()
    there.open()
    try:
        assert set(here.loops) == {"default"}
        loop, created = here.create("shop")
        assert created and here.create("shop") == (loop, False)
        loop.items.put([Item("i1", [{"k": 1}])]).result()
        loop.tracked.append([TrackedEvent("buy", "i1", "u", None, time.time())], 0.0).result()
        there.sync()  # another process follows the store
        assert set(there.loops) == {"default", "shop"}
        here.delete("shop")
        there.sync()
        assert set(there.loops) == {"default"}
        assert store.get_loop("shop") is None
        assert store.count_tracked("shop") == 0 and store.items_version("shop") == (0, 0.0)
        assert store.tracked_since("shop", 0, 10) == (1, []), "models built on it rebuild"
        with pytest.raises(banditloop.NotFound):
            here.get("shop")
    finally:
        here.close()
        there.close()


def test_open_service_owns_the_data_directory(settings: Settings) -> None:
    service = open_service(settings, train=False)
    try:
        assert set(service.registry.loops) == {"default"} and service.upkeep is None
        with pytest.raises(Unavailable, match="in use by another banditloop process"):
            open_service(settings, train=False)
        service.store.ping()
    finally:
        service.close()
    with pytest.raises(Unavailable, match="closed"):
        service.store.ping()
    with open_service(settings, train=True) as again:  # the lock was released
        assert again.upkeep is not None
        assert again.registry.loops["default"].trainer.drain(time.time() + LATER) == 0


def test_the_package_names_its_library_and_loads_it_when_used() -> None:
    assert {"Loop", "Registry", "Settings", "open_service", "BanditloopError"} <= set(
        banditloop.__all__
    )
    assert all(getattr(banditloop, name) for name in banditloop.__all__)
    with pytest.raises(AttributeError):
        banditloop.nothing_of_that_name  # noqa: B018
    script = "import sys, banditloop.errors; print('banditloop.loop' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "False", "a child process importing errors.py stays cheap"


def test_upkeep_keeps_the_loops_this_process_trains(store: SqlStore, settings: Settings) -> None:
    registry = Registry(store, settings, train=False)
    registry.open()
    runner = JobRunner()
    try:
        loop = registry.loops["default"]
        loop.update_configuration(loop.wire.model_copy(update={"logRetentionDays": 2}))
        for i in range(3):
            rank(loop, f"e{i}", "ann")
        upkeep = Upkeep(registry, runner)
        later = time.time() + 3 * 86400
        assert upkeep.run_once(later) == 0, "trained elsewhere: that process keeps it"
        assert loop.trainer.drain(time.time() + LATER) == 3  # this process trains it now
        assert upkeep.run_once(later) == 3
        assert store.log_range("default").first is None
    finally:
        runner.close()
        registry.close()
