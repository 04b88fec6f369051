"""The scenarios of azure-ai-personalizer's own test suite (Azure/azure-sdk-for-python,
sdk/personalizer/azure-ai-personalizer/tests), in the order pytest runs them there, with
the real SDK against one live server. The SDK's tests have two resources, single- and
multi-slot: here the default loop and a named loop of the same server. Two of the
suite's tests are skipped there (run_evaluation, run_feature_importance): 15 remain.

The server's default policy is Azure's (``default_policy``), as a user moving from
Azure would set it: test_reset_policy expects it. The installed SDK (1.0.0b1) calls
``get_model`` ``export_model``. The multi-slot ranks and the single-slot rank reuse the
event ID "123456789" with different bodies, which Azure accepted
(docs/operator-guide.md#reused-event-ids)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.cognitiveservices.personalizer import PersonalizerClient as LegacyClient
from azure.cognitiveservices.personalizer.models import RankableAction, RankRequest
from azure.core.credentials import AzureKeyCredential
from msrest.authentication import CognitiveServicesCredentials

from banditloop.policy import AZURE_DEFAULT_POLICY
from conftest import Server
from helpers import SDK_ACTIONS, SDK_CONFIG, SDK_SLOTS, query

MULTI = "multislot"  # the loop standing for the SDK's multi-slot resource
KEY = AzureKeyCredential("any key: the server has none")


@pytest.fixture
def sdk_server(tmp_path: Path) -> Any:
    policy = f"BANDITLOOP_DEFAULT_POLICY={AZURE_DEFAULT_POLICY}"
    srv = Server(tmp_path / "data", extra=(policy,)).start(timeout=120)
    r = httpx.put(f"{srv.url}/loops/{MULTI}", json={}, timeout=60)
    assert r.status_code == 201, r.text
    yield srv
    srv.stop()


def enable_multi_slot(admin: PersonalizerAdministrationClient) -> None:
    policy = admin.get_policy()
    if "--ccb_explore_adf" in policy["arguments"]:
        return
    configuration = admin.get_service_configuration()
    if configuration.get("isAutoOptimizationEnabled"):
        configuration["isAutoOptimizationEnabled"] = False
        admin.update_service_configuration(configuration)
    arguments = policy["arguments"].replace("--cb_explore_adf", "--ccb_explore_adf")
    admin.update_policy({"name": "enable multi slot", "arguments": arguments})


CONFIG_FIELDS = (
    "modelExportFrequency",
    "defaultReward",
    "modelRetrainDays",
    "rewardWaitTime",
    "explorationPercentage",
    "logRetentionDays",
)
MULTI_CONTEXT = [
    {"user": {"profileType": "anonymousUser", "latLong": "47.6,-122.1"}},
    {"environment": {"dayOfMonth": "28", "monthOfYear": "8", "weather": "Sunny"}},
    {"device": {"mobile": True, "windows": True}},
    {"recentActivity": {"itemsInCart": 3}},
]
VIDEO = {"videoType": "documentary", "videoLength": 35, "director": "CarlSagan"}


def scenarios(single: str, multi: str) -> list[tuple[str, Callable[[], None]]]:
    """(name, run) in the SDK suite's order: files alphabetically, tests as written."""
    client = PersonalizerClient(single, credential=KEY)
    admin = PersonalizerAdministrationClient(single, credential=KEY)
    multi_client = PersonalizerClient(multi, credential=KEY)
    multi_admin = PersonalizerAdministrationClient(multi, credential=KEY)

    def update_configuration() -> None:
        configuration = SDK_CONFIG
        updated = admin.update_service_configuration(configuration)
        now = admin.get_service_configuration()
        for field in CONFIG_FIELDS:
            assert updated.get(field) == configuration[field] == now.get(field), field

    def update_policy() -> None:
        policy = {
            "name": "app1",
            "arguments": "--cb_explore_adf --quadratic GT --quadratic MR --quadratic GR "
            "--quadratic ME --quadratic OT --quadratic OE --quadratic OR --quadratic MS "
            "--quadratic GX --ignore A --cb_type ips --epsilon 0.2",
        }
        assert admin.update_policy(policy).get("arguments") == policy["arguments"]
        assert admin.get_policy().get("arguments") == policy["arguments"]

    def reset_policy() -> None:
        assert admin.reset_policy().get("arguments") == AZURE_DEFAULT_POLICY

    def list_evaluations() -> None:
        admin.list_evaluations()

    def reward() -> None:
        client.reward("event_id_returned_by_rank", {"value": 1.0})

    def activate() -> None:
        client.activate("event_id_returned_by_rank")

    def list_feature_importances() -> None:
        admin.list_feature_importances()

    def delete_log() -> None:
        multi_admin.delete_logs()
        date_range = multi_admin.get_log_properties().get("dateRange")
        if date_range is not None:
            assert date_range["from"] is None and date_range["to"] is None

    def model_import_export() -> None:
        unsigned = b"".join(admin.export_model(signed=False))
        signed = b"".join(admin.export_model(signed=True))
        admin.import_model(signed)
        assert b"".join(admin.export_model(signed=False)) == unsigned

    def multi_slot_reward() -> None:
        enable_multi_slot(multi_admin)
        multi_client.reward_multi_slot(
            "123456789", {"reward": [{"slotId": "slot_id_to_be_rewarded", "value": 1.0}]}
        )

    def multi_slot_activate() -> None:
        enable_multi_slot(multi_admin)
        multi_client.activate_multi_slot("123456789")

    def multi_rank(context: bool) -> None:
        enable_multi_slot(multi_admin)
        request: dict[str, Any] = {
            "actions": SDK_ACTIONS,
            "slots": SDK_SLOTS,
            "eventId": "123456789",
        }
        if context:
            request["contextFeatures"] = MULTI_CONTEXT
        response = multi_client.rank_multi_slot(request)
        assert response.get("eventId") == "123456789"
        slots = response.get("slots")
        assert len(slots) == len(SDK_SLOTS)
        assert slots[0]["rewardActionId"] == "NewsArticle"
        assert slots[1]["rewardActionId"] == "SportsArticle"

    def rank_with_no_context_features() -> None:
        actions = [{"id": "Person", "features": [VIDEO, {"mostWatchedByAge": "30-35"}]}]
        client.rank({"actions": actions})

    def rank_with_context_features() -> None:
        actions = [
            {"id": "Video1", "features": [VIDEO, {"mostWatchedByAge": "30-35"}]},
            {"id": "Video2", "features": [VIDEO, {"mostWatchedByAge": "40-45"}]},
        ]
        context = [
            {"currentContext": {"day": "tuesday", "time": "night", "weather": "rainy"}},
            {
                "userContext": {
                    "payingUser": True,
                    "favoriteGenre": "documentary",
                    "hoursOnSite": 0.12,
                    "lastWatchedType": "movie",
                }
            },
        ]
        request = {
            "eventId": "123456789",
            "actions": actions,
            "contextFeatures": context,
            "excludedActions": ["Video1"],
        }
        client.rank(request)

    return [
        ("test_configuration::test_update_configuration", update_configuration),
        ("test_configuration::test_update_policy", update_policy),
        ("test_configuration::test_reset_policy", reset_policy),
        ("test_evaluation::test_list_evaluations", list_evaluations),
        ("test_event::test_reward", reward),
        ("test_event::test_activate", activate),
        ("test_feature_importance::test_list_feature_importances", list_feature_importances),
        ("test_log_properties::test_delete_log", delete_log),
        ("test_model::test_model_import_export", model_import_export),
        ("test_multi_slot_event::test_multi_slot_reward", multi_slot_reward),
        ("test_multi_slot_event::test_multi_slot_activate", multi_slot_activate),
        ("test_multi_slot_rank::test_rank_with_no_context_features", lambda: multi_rank(False)),
        ("test_multi_slot_rank::test_rank_with_context_features", lambda: multi_rank(True)),
        ("test_rank::test_rank_with_no_context_features", rank_with_no_context_features),
        ("test_rank::test_rank_with_context_features", rank_with_context_features),
    ]


def test_the_sdk_suite_passes_in_its_order_on_one_server(sdk_server: Server) -> None:
    runs = scenarios(sdk_server.url, f"{sdk_server.url}/loops/{MULTI}")
    assert len(runs) == 15
    failed = {}
    for name, run in runs:
        try:
            run()
        except Exception as ex:  # every scenario runs; all failures are reported
            failed[name] = f"{type(ex).__name__}: {ex}"
    assert not failed, json.dumps(failed, indent=1)
    # the reused event ID: both multi-slot ranks were logged, each a decision of its own
    rows = query(
        sdk_server.data_dir,
        "SELECT loop, multislot FROM decisions WHERE event_id='123456789' ORDER BY seq",
    )
    assert rows == [(MULTI, 1), (MULTI, 1), ("default", 0)]


def test_the_legacy_sdk_gets_a_new_decision_for_a_reused_event_id(sdk_server: Server) -> None:
    """azure-cognitiveservices-personalizer (v1.0) too; a retry is still logged once."""
    client = LegacyClient(sdk_server.url, CognitiveServicesCredentials("x"))

    def rank(user: str) -> str:
        actions = [RankableAction(id=i, features=[{"kind": i}]) for i in ("a", "b")]
        request = RankRequest(actions=actions, context_features=[{"user": user}], event_id="page")
        return str(client.rank(request).event_id)

    assert [rank("ann"), rank("bob"), rank("ann")] == ["page"] * 3
    client.events.reward("page", 1.0)  # for bob's decision, the newest
    rows = query(
        sdk_server.data_dir,
        "SELECT d.example, count(r.seq) FROM decisions d LEFT JOIN rewards r "
        "ON r.decision=d.seq WHERE d.event_id='page' GROUP BY d.seq ORDER BY d.seq",
    )
    assert [('"bob"' in example, n) for example, n in rows] == [(False, 0), (True, 1)]
