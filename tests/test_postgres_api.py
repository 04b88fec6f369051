"""The HTTP API on the PostgreSQL store: the SQLite suite's API tests that prove the store.

The tests named in ``KEEP`` (of the modules below, talking to the app through the
``client``, ``shop`` or ``app_settings`` fixtures) are collected here a second time,
with the settings naming a PostgreSQL store (a schema of its own per test, so that
they run under xdist).  Kept: what reads or writes the store differently, events,
rewards and activation, joins and learning, models, items, retention and deletion,
tracked events, metrics and the dashboard's queries. Not kept: validation and error
bodies, answered before the store is reached; and the other base paths, which reach
the same calls (the first, v1.0, stands for them). Skipped, with a message saying
how to run them, where PostgreSQL is not reachable.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import test_admin_api
import test_api_events
import test_holdout
import test_items
import test_learning_loop
import test_observability
import test_recommendations
import test_rerank
from banditloop.config import Settings
from helpers import BASE_IDS, BASES, POSTGRES
from test_recommendations import shop  # noqa: F401 - a fixture the copied tests use

MODULES = [
    test_admin_api,
    test_api_events,
    test_holdout,
    test_items,
    test_learning_loop,
    test_observability,
    test_recommendations,
    test_rerank,
]
FIXTURES = {"client", "shop", "app_settings"}  # what makes an app
KEEP = {
    "admin_api": {
        "config_is_persisted", "delete_one_event", "exported_model_ranks_like_the_server",
        "forget_a_user", "logs_properties", "model_import_round_trip_and_reset",
        "policy_change_starts_new_model", "retention_deletes_old_logs",
        "reward_wait_change_applies_to_new_and_waiting_events",
        "signed_export_is_a_zip_with_digest",
    },
    "api_events": {
        "event_id_generated", "excluded_actions_listed_with_zero_probability",
        "rank_reward_activate", "rank_with_only_actions",
        "retried_rank_is_idempotent_and_logged_once", "reward_and_activate_unknown_event",
        "same_event_id_different_body_is_a_new_decision",
        "same_event_id_different_body_conflicts_if_the_loop_refuses",
    },
    "holdout": {"holdout_events_get_the_baseline_and_are_marked", "lift_endpoint_and_export"},
    "items": {"put_get_delete", "items_belong_to_their_loop"},
    "learning_loop": {
        "deferred_event_never_activated_is_not_learned", "rewards_shift_the_pmf",
        "unrewarded_event_learned_after_window",
    },
    "observability": {
        "metrics_count_requests_events_and_rewards_by_kind",
        "dashboard_data_shows_traffic_learning_jobs_and_configuration",
        "readyz_answers_ready_when_store_and_models_are",
    },
    "recommendations": {
        "an_event_tracked_by_one_process_reaches_another",
        "cooccurrence_similarity_and_history",
        "forgetting_a_user_deletes_their_events_history_and_decisions",
        "popularity_counts_weights_and_logging_only_serves_its_order",
        "scenario_admin_api_and_azure_clients_keep_scenarios",
        "tracked_ids_are_hashed_and_an_event_for_the_chosen_item_is_its_reward",
    },
    "rerank": {
        "rerank_adds_upstream_features_and_returns_the_full_list",
        "catalogue_features_fill_in_for_actions_without_features",
    },
}  # fmt: skip


def _again(test: Callable[..., None], module: ModuleType) -> Callable[..., None]:
    """A copy of ``test`` carrying its module's marks (the original stays as it was)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        test(*args, **kwargs)

    marks = getattr(module, "pytestmark", [])
    for mark in marks if isinstance(marks, list) else [marks]:
        if mark.name == "parametrize" and mark.args[0] == "base":  # v1.0 stands for all
            mark = pytest.mark.parametrize("base", BASES[:1], ids=BASE_IDS[:1])
        run = mark(run)
    return run


for _module in MODULES:
    _keep = KEEP[_module.__name__[5:]]
    for _name, _test in list(vars(_module).items()):
        if _name[5:] in _keep and FIXTURES & set(inspect.signature(_test).parameters):
            globals()[f"test_{_module.__name__[5:]}__{_name[5:]}"] = _again(_test, _module)
            _keep = _keep - {_name[5:]}
    assert not _keep, f"KEEP names tests {_module.__name__} does not have: {_keep}"


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Iterator[Settings]:
    POSTGRES[tmp_path / "data"] = pg_url  # the tests' own reads of the store go there too
    yield Settings(data_dir=tmp_path / "data", store=pg_url, loop={"rewardWaitTime": "PT1S"})
    del POSTGRES[tmp_path / "data"]


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return test_recommendations.make_settings(settings.data_dir, store=settings.store)
