"""Every administration call of azure-ai-personalizer's admin client, against a real server."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError

from banditloop.policy import DEFAULT_POLICY
from conftest import Server
from helpers import SDK_CONFIG, actions, poll, scalar

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("admin_sdk")

POLICY_ARGS = (
    "--cb_explore_adf --quadratic GT --quadratic MR --ignore A --cb_type ips --epsilon 0.2"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("sdk-admin") / "data").start()
    yield s
    s.stop()


@pytest.fixture
def admin(srv: Server) -> Iterator[PersonalizerAdministrationClient]:
    client = PersonalizerAdministrationClient(endpoint=srv.url, credential=AzureKeyCredential("x"))
    with client:
        yield client


def _bytes(chunks: Iterator[bytes]) -> bytes:
    assert not isinstance(chunks, bytes | bytearray), "the SDK returns an iterator of bytes"
    return b"".join(chunks)


def _train(srv: Server, prefix: str, n: int = 30) -> None:
    """Rank and reward a few events so that the model is no longer empty."""
    with PersonalizerClient(endpoint=srv.url, credential=AzureKeyCredential("x")) as client:
        for i in range(n):
            r = client.rank(
                {
                    "contextFeatures": [{"user": {"segment": "s" + str(i % 2)}}],
                    "actions": actions("a", "b", "c"),
                    "eventId": f"{prefix}-{i}",
                }
            )
            client.reward(r["eventId"], {"value": 1.0 if r["rewardActionId"] == "a" else 0.0})


def test_service_configuration_round_trip(admin: PersonalizerAdministrationClient) -> None:
    before = admin.get_service_configuration()
    assert before["learningMode"] == "Online"
    assert before["rewardWaitTime"] == "PT1S"  # from the fixture's BANDITLOOP_LOOP
    updated = admin.update_service_configuration({**before, **SDK_CONFIG})
    assert {k: updated[k] for k in SDK_CONFIG} == SDK_CONFIG
    assert updated["lastConfigurationEditDate"] is not None
    again = admin.get_service_configuration()
    assert {k: again[k] for k in SDK_CONFIG} == SDK_CONFIG
    # Back to a short wait so that later tests' events are learned quickly.
    restored = admin.update_service_configuration({**again, "rewardWaitTime": "PT1S"})
    assert restored["rewardWaitTime"] == "PT1S"


def test_service_configuration_refused(admin: PersonalizerAdministrationClient) -> None:
    current = admin.get_service_configuration()
    with pytest.raises(HttpResponseError) as info:
        admin.update_service_configuration({**current, "explorationPercentage": 2})
    assert info.value.status_code == 400
    assert (
        admin.get_service_configuration()["explorationPercentage"]
        == (current["explorationPercentage"])
    )


def test_policy_round_trip_and_reset(admin: PersonalizerAdministrationClient) -> None:
    policy = admin.get_policy()
    assert set(policy) == {"name", "arguments"}
    assert "--cb_explore_adf" in policy["arguments"]

    updated = admin.update_policy({"name": "custom", "arguments": POLICY_ARGS})
    assert updated == {"name": "custom", "arguments": POLICY_ARGS}
    assert admin.get_policy() == updated

    with pytest.raises(HttpResponseError) as info:
        admin.update_policy({"name": "bad", "arguments": "--cb_explore_adf --bogus"})
    assert info.value.status_code == 400
    assert info.value.error is not None
    assert info.value.error.code == "InvalidPolicyConfiguration"
    assert admin.get_policy() == updated

    reset = admin.reset_policy()
    assert reset["arguments"] == DEFAULT_POLICY
    assert admin.get_policy()["arguments"] == DEFAULT_POLICY


def test_model_export_import_identical(
    srv: Server, admin: PersonalizerAdministrationClient
) -> None:
    _train(srv, "train")
    poll(
        lambda: scalar(srv.data_dir, "SELECT count(*) FROM decisions WHERE learned_in IS NULL") == 0
    )
    unsigned = _bytes(admin.export_model(signed=False))
    assert len(unsigned) > 0
    signed = _bytes(admin.export_model(signed=True))
    with zipfile.ZipFile(io.BytesIO(signed)) as zf:
        assert set(zf.namelist()) == {"model.vw", "signer.der", "sha512_signature.bin"}
        assert zf.read("model.vw") == unsigned

    admin.reset_model()
    assert _bytes(admin.export_model(signed=False)) != unsigned

    admin.import_model(signed)
    assert _bytes(admin.export_model(signed=False)) == unsigned

    admin.import_model(io.BytesIO(unsigned))  # a plain model file as a stream
    assert _bytes(admin.export_model(signed=False)) == unsigned


def test_reset_model_and_properties(srv: Server, admin: PersonalizerAdministrationClient) -> None:
    props = admin.get_model_properties()
    assert set(props) == {"creationTime", "lastModifiedTime"}
    assert props["creationTime"] is not None
    admin.reset_model()
    after = admin.get_model_properties()
    assert after["creationTime"] >= props["creationTime"]
    with PersonalizerClient(endpoint=srv.url, credential=AzureKeyCredential("x")) as client:
        r = client.rank({"actions": actions("a", "b", "c", "d")})
    assert [x["probability"] for x in r["ranking"]] == pytest.approx([0.25] * 4)


def test_logs_properties_and_delete(srv: Server, admin: PersonalizerAdministrationClient) -> None:
    with PersonalizerClient(endpoint=srv.url, credential=AzureKeyCredential("x")) as client:
        client.rank({"actions": actions("a", "b"), "eventId": "log-1"})
    props = admin.get_log_properties()
    assert props["dateRange"]["from"] is not None
    assert props["dateRange"]["to"] is not None
    assert props["dateRange"]["from"] <= props["dateRange"]["to"]

    admin.delete_logs()
    assert admin.get_log_properties() == {"dateRange": {"from": None, "to": None}}
    assert scalar(srv.data_dir, "SELECT count(*) FROM decisions WHERE loop='default'") == 0
    assert scalar(srv.data_dir, "SELECT count(*) FROM rewards WHERE loop='default'") == 0
