"""Administration endpoints over HTTP: configuration, policy, model and logs of a loop."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import vowpalwabbit
from fastapi.testclient import TestClient

from banditloop.config import Settings
from banditloop.policy import with_epsilon
from banditloop.ranking import plan
from banditloop.upkeep import apply_retention
from helpers import Clock, actions, pmf_of, poll, query, scalar

V1 = "/personalizer/v1.0"
SERVICE = V1 + "/configurations/service"
POLICY = V1 + "/configurations/policy"
MODEL = V1 + "/model"
CONTEXT = [{"user": {"segment": "sports"}}, {"device": "mobile"}]
ACTIONS = actions("a", "b", "c")
OCTET = {"Content-Type": "application/octet-stream"}


def _error(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert r.headers["x-ms-error-code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def _train(client: TestClient, data_dir: Path, prefix: str, n: int = 40) -> None:
    """Teach the loop that action "a" is the one to choose, and wait until it learned."""
    for i in range(n):
        r = client.post(
            V1 + "/rank",
            json={"contextFeatures": CONTEXT, "actions": ACTIONS, "eventId": f"{prefix}{i}"},
        )
        assert r.status_code == 201, r.text
        value = 1.0 if r.json()["rewardActionId"] == "a" else 0.0
        assert client.post(
            f"{V1}/events/{prefix}{i}/reward", json={"value": value}
        ).status_code == (204)
    poll(
        lambda: scalar(data_dir, "SELECT count(*) FROM decisions WHERE learned_in IS NULL") == 0,
        timeout=15,
    )


def _rank(client: TestClient, event_id: str | None = None, defer: bool = True) -> dict[str, Any]:
    """A Rank that does not teach the model (deferred and never activated)."""
    body: dict[str, Any] = {
        "contextFeatures": CONTEXT,
        "actions": ACTIONS,
        "deferActivation": defer,
    }
    if event_id:
        body["eventId"] = event_id
    r = client.post(V1 + "/rank", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


# -- service configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"rewardWaitTime": "PT0S"}, "InvalidRewardWaitTime", "Reward wait time"),
        ({"rewardWaitTime": "P3D"}, "InvalidRewardWaitTime", "Reward wait time"),
        ({"rewardWaitTime": "10 minutes"}, "InvalidServiceConfiguration", "rewardWaitTime"),
        ({"modelExportFrequency": "often"}, "InvalidServiceConfiguration", "modelExportFrequency"),
        (
            {"logRetentionDays": 0, "rewardWaitTime": "PT10M"},
            "InvalidLogRetentionDays",
            "Log Retention Days",
        ),
        (
            {"learningMode": "Apprentice", "defaultReward": 0.5},
            "InvalidLearningModeServiceConfiguration",
            "learning mode",
        ),
        (
            {"learningMode": "LoggingOnly", "rewardWaitTime": "PT2S"},
            "InvalidLearningModeServiceConfiguration",
            "learning mode",
        ),
        ({"modelRetrainDays": 100}, "InvalidModelRetrainDays", "retrain"),
    ],
    ids=[
        "wait-0s",
        "wait-3d",
        "wait-not-iso",
        "export-not-iso",
        "retention-0",
        "mode-and-default-reward",
        "mode-and-wait",
        "retrain-over-retention",
    ],
)
def test_config_rules(client: TestClient, change: dict[str, Any], code: str, words: str) -> None:
    before = client.get(SERVICE).json()
    message = _error(client.put(SERVICE, json={**before, **change}), 400, code)
    assert words.lower() in message.lower()
    assert client.get(SERVICE).json() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"explorationPercentage": 2}, "explorationPercentage"),
        ({"explorationPercentage": -0.1}, "explorationPercentage"),
        ({"defaultReward": 5}, "defaultReward"),
        ({"rewardAggregation": "mean"}, "rewardAggregation"),
        ({"learningMode": "Sometimes"}, "learningMode"),
        ({"logRetentionDays": -2}, "logRetentionDays"),
    ],
)
def test_config_field_out_of_range(client: TestClient, change: dict[str, Any], field: str) -> None:
    before = client.get(SERVICE).json()
    r = client.put(SERVICE, json={**before, **change})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] in {"BadRequest", "InvalidServiceConfiguration"}
    assert r.headers["x-ms-error-code"] == err["code"]
    assert field in err["message"]
    assert client.get(SERVICE).json() == before


def test_config_not_json(client: TestClient) -> None:
    r = client.put(SERVICE, content=b"{not json", headers={"Content-Type": "application/json"})
    _error(r, 400, "BadRequest")


def test_config_change_mode_alone_then_reward_settings(client: TestClient) -> None:
    before = client.get(SERVICE).json()
    r = client.put(SERVICE, json={**before, "learningMode": "Apprentice"})
    assert r.status_code == 200, r.text
    r = client.put(SERVICE, json={**r.json(), "defaultReward": 0.5})
    assert r.status_code == 200, r.text
    assert client.get(SERVICE).json()["learningMode"] == "Apprentice"
    assert client.get(SERVICE).json()["defaultReward"] == 0.5


def test_config_is_persisted(client: TestClient, settings: Settings) -> None:
    before = client.get(SERVICE).json()
    client.put(SERVICE, json={**before, "defaultReward": -0.25, "logRetentionDays": 30})
    stored = scalar(settings.data_dir, "SELECT config FROM loops WHERE name='default'")
    assert '"defaultReward":-0.25' in stored.replace(" ", "")
    assert '"logRetentionDays":30' in stored.replace(" ", "")


def test_exploration_change_takes_effect_at_once(client: TestClient, settings: Settings) -> None:
    greedy = {"name": "eps", "arguments": "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"}
    assert client.put(V1 + "/configurations/policy", json=greedy).status_code == 200
    config = {**client.get(SERVICE).json(), "explorationPercentage": 0.2}
    assert client.put(SERVICE, json=config).status_code == 200
    _train(client, settings.data_dir, "t")
    pmf = pmf_of(_rank(client))
    assert pmf["a"] == pytest.approx(0.8 + 0.2 / 3, abs=1e-5), pmf  # epsilon 0.2, greedy on a

    before = client.get(SERVICE).json()
    assert client.put(SERVICE, json={**before, "explorationPercentage": 0}).status_code == 200
    pmf = pmf_of(_rank(client))
    assert pmf == {"a": 1.0, "b": 0.0, "c": 0.0}  # greedy: what was learned is kept
    assert all(_rank(client)["rewardActionId"] == "a" for _ in range(10))

    assert client.put(SERVICE, json={**before, "explorationPercentage": 1}).status_code == 200
    pmf = pmf_of(_rank(client))
    assert list(pmf.values()) == pytest.approx([1 / 3] * 3, abs=0.01)


def test_reward_wait_change_applies_to_new_and_waiting_events(
    client: TestClient, settings: Settings
) -> None:
    before = client.get(SERVICE).json()
    r = client.put(SERVICE, json={**before, "rewardWaitTime": "PT1H"})
    assert r.status_code == 200
    assert r.json()["rewardWaitTime"] == "PT1H"
    assert client.get(SERVICE).json()["rewardWaitTime"] == "PT1H"
    _rank(client, "w1", defer=False)
    ts, close_at = query(
        settings.data_dir, "SELECT ts, close_at FROM decisions WHERE event_id='w1'"
    )[0]
    assert close_at - ts == pytest.approx(3600, abs=1e-3)

    client.put(SERVICE, json={**before, "rewardWaitTime": "PT30M"})
    ts, close_at = query(
        settings.data_dir, "SELECT ts, close_at FROM decisions WHERE event_id='w1'"
    )[0]
    assert close_at - ts == pytest.approx(1800, abs=1e-3)


# -- policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        "--cb_explore_adf --bogus",
        "--cb_explore_adf --epsilon x",
        "--epsilon 0.2 -q ::",
        "",
        "--cb_explore_adf 'unclosed",
        "--cb_explore_adf " + "-q ab " * 200,
    ],
    ids=["unknown-option", "bad-value", "no-cb-explore-adf", "empty", "bad-quoting", "too-long"],
)
def test_policy_refused(client: TestClient, args: str) -> None:
    before = client.get(POLICY).json()
    r = client.put(POLICY, json={"name": "p", "arguments": args})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in {"InvalidPolicyConfiguration", "BadRequest"}
    if len(args) <= 1024:  # longer strings are refused by the schema itself
        _error(r, 400, "InvalidPolicyConfiguration")
    assert client.get(POLICY).json() == before
    assert _rank(client)["ranking"]  # the running policy still ranks


@pytest.mark.parametrize(
    "option",
    [
        "-d {f}",
        "--data {f}",
        "--data={f}",
        "-d{f}",
        "-f {f}",
        "--final_regressor={f}",
        "-i {f}",
        "--initial_regressor {f}",
        "-c",
        "--cache",
        "--cache_file {f}",
        "--readable_model {f}",
        "--invert_hash {f}",
        "--daemon",
        "--port 26542",
        "--port=26542",
        "-p {f}",
        "--predictions {f}",
        "--pid_file {f}",
        "--save_per_pass",
    ],
)
def test_policy_forbidden_options(client: TestClient, tmp_path: Path, option: str) -> None:
    target = tmp_path / "touched"
    before = client.get(POLICY).json()
    args = "--cb_explore_adf --epsilon 0.2 " + option.format(f=target)
    message = _error(
        client.put(POLICY, json={"name": "p", "arguments": args}), 400, "InvalidPolicyConfiguration"
    )
    assert "not allowed" in message
    assert client.get(POLICY).json() == before
    assert not target.exists()


def test_policy_change_starts_new_model(client: TestClient, settings: Settings) -> None:
    _train(client, settings.data_dir, "p")
    assert pmf_of(_rank(client))["a"] > 0.8
    args = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type ips"
    r = client.put(POLICY, json={"name": "ips", "arguments": args})
    assert r.status_code == 200
    assert r.json() == {"name": "ips", "arguments": args}
    assert list(pmf_of(_rank(client)).values()) == pytest.approx([1 / 3] * 3, abs=0.01)
    r = client.delete(POLICY)
    assert r.status_code == 200
    assert r.json()["arguments"] == settings.default_policy
    assert client.get(POLICY).json()["arguments"] == settings.default_policy


# -- model --------------------------------------------------------------------------


def test_exported_model_ranks_like_the_server(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    before = client.get(SERVICE).json()
    client.put(SERVICE, json={**before, "explorationPercentage": 0.5})
    _train(client, settings.data_dir, "m")

    r = client.get(MODEL)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert "filename=model.vw" in r.headers["content-disposition"]
    path = tmp_path / "model.vw"
    path.write_bytes(r.content)
    assert client.get(MODEL + "?signed=false").content == r.content  # stable until it learns

    response = _rank(client)
    served = pmf_of(response)
    assert max(served.values()) > 0.6  # trained: not uniform

    args = with_epsilon(client.get(POLICY).json()["arguments"], 0.5)
    p = plan(CONTEXT, [(a["id"], a["features"]) for a in ACTIONS], None)
    ws = vowpalwabbit.Workspace(f"{args} --json --quiet -i {path}")
    try:
        ex = ws.parse(p.example)
        local = ws.predict(ex)
        ws.finish_example(ex)
    finally:
        ws.finish()
    assert dict(zip(p.vw_ids, local, strict=True)) == pytest.approx(served, abs=1e-6)


def test_signed_export_is_a_zip_with_digest(client: TestClient) -> None:
    blob = client.get(MODEL).content
    r = client.get(MODEL + "?signed=true")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.read("model.vw") == blob
        assert zf.read("sha512_signature.bin") == hashlib.sha512(blob).digest()
        assert zf.read("signer.der") == b""


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_model_import_refused(client: TestClient, settings: Settings) -> None:
    _train(client, settings.data_dir, "i", n=20)
    good = client.get(MODEL).content
    props = client.get(MODEL + "/properties").json()
    cases = {
        "garbage": (b"this is not a model" * 10, "InvalidModelImportFormat"),
        "empty": (b"", "InvalidModelImportFormat"),
        "truncated-header": (good[:60], "InvalidModelImportFormat"),
        "bad-digest": (
            _zip(
                {
                    "model.vw": good,
                    "sha512_signature.bin": hashlib.sha512(b"other").digest(),
                    "signer.der": b"",
                }
            ),
            "InvalidModelImportSignature",
        ),
        "zip-without-model": (_zip({"readme.txt": b"hi"}), "InvalidModelImportFormat"),
        "broken-zip": (b"PK\x03\x04" + b"\x00" * 50, "InvalidModelImportFormat"),
        "zip-with-garbage-model": (
            _zip(
                {
                    "model.vw": b"junk",
                    "sha512_signature.bin": hashlib.sha512(b"junk").digest(),
                    "signer.der": b"",
                }
            ),
            "InvalidModelImportFormat",
        ),
    }
    for name, (body, code) in cases.items():
        r = client.put(MODEL, content=body, headers=OCTET)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["code"] == code, (name, r.json())
        assert client.get(MODEL).content == good, name
    assert client.get(MODEL + "/properties").json() == props
    assert pmf_of(_rank(client))["a"] > 0.8  # the trained model still ranks


def test_model_import_truncated_in_weights(client: TestClient, settings: Settings) -> None:
    _train(client, settings.data_dir, "x", n=20)
    good = client.get(MODEL).content
    r = client.put(MODEL, content=good[: len(good) - 3], headers=OCTET)
    assert r.status_code == 400
    assert client.get(MODEL).content == good


def test_model_import_round_trip_and_reset(client: TestClient, settings: Settings) -> None:
    _train(client, settings.data_dir, "r")
    good = client.get(MODEL).content
    signed = client.get(MODEL + "?signed=true").content
    trained = pmf_of(_rank(client))
    assert trained["a"] > 0.8

    r = client.delete(MODEL)
    assert r.status_code == 204
    assert list(pmf_of(_rank(client)).values()) == pytest.approx([1 / 3] * 3, abs=0.01)
    assert client.get(MODEL).content != good
    props = client.get(MODEL + "/properties").json()
    assert props["creationTime"] is not None and props["lastModifiedTime"] is not None

    assert client.put(MODEL, content=signed, headers=OCTET).status_code == 204
    assert client.get(MODEL).content == good
    assert pmf_of(_rank(client)) == pytest.approx(trained)

    client.delete(MODEL)
    assert client.put(MODEL, content=good, headers=OCTET).status_code == 204
    assert client.get(MODEL).content == good


# -- logs ---------------------------------------------------------------------------


def test_logs_properties(client: TestClient, settings: Settings, clock: Clock) -> None:
    assert client.get(V1 + "/logs/properties").json() == {"dateRange": {"from": None, "to": None}}
    _rank(client, "l1")
    clock.advance(1.1)
    _rank(client, "l2")
    rng = client.get(V1 + "/logs/properties").json()["dateRange"]
    assert rng["from"].endswith("Z") and rng["to"].endswith("Z")
    assert rng["from"] < rng["to"]
    first, last = query(settings.data_dir, "SELECT min(ts), max(ts) FROM decisions")[0]
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    assert rng["from"] == time.strftime(fmt, time.gmtime(first))
    assert rng["to"] == time.strftime(fmt, time.gmtime(last))
    assert client.delete(V1 + "/logs").status_code == 204
    assert client.get(V1 + "/logs/properties").json() == {"dateRange": {"from": None, "to": None}}


def _counts(data_dir: Path, event_id: str) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        scalar(data_dir, f"SELECT count(*) FROM {t} WHERE event_id=?", (event_id,))
        for t in ("decisions", "rewards", "activations")
    )


def test_delete_one_event(client: TestClient, settings: Settings) -> None:
    for eid in ("d1", "d2"):
        _rank(client, eid)
        client.post(f"{V1}/events/{eid}/activate")
        client.post(f"{V1}/events/{eid}/reward", json={"value": 1})
    assert _counts(settings.data_dir, "d1") == (1, 1, 1)

    r = client.delete(V1 + "/logs/events/d1")
    assert r.status_code == 200
    assert r.json() == {"deleted": 1}
    assert _counts(settings.data_dir, "d1") == (0, 0, 0)
    assert _counts(settings.data_dir, "d2") == (1, 1, 1)
    assert client.delete(V1 + "/logs/events/d1").json() == {"deleted": 0}
    assert client.delete(V1 + "/logs/events/never").json() == {"deleted": 0}


def test_forget_a_user(client: TestClient, settings: Settings) -> None:
    contexts = {
        "n1": [{"user": {"id": "u1"}}, {"device": "mobile"}],
        "n2": [{"device": "desktop"}, {"user": {"id": "u1", "tier": "gold"}}],
        "n3": [{"user": {"id": "u2"}}],
        "n4": [{"user": {"id": "u10"}}],
        "f1": [{"userId": "u2"}],
        "f2": [{"userId": "u1"}],
        "f3": [{"userId": "u3"}],
    }
    for eid, ctx in contexts.items():
        r = client.post(
            V1 + "/rank", json={"contextFeatures": ctx, "actions": ACTIONS, "eventId": eid}
        )
        assert r.status_code == 201
        client.post(f"{V1}/events/{eid}/reward", json={"value": 0.5})

    def remaining() -> set[str]:
        return {r[0] for r in query(settings.data_dir, "SELECT event_id FROM decisions")}

    def rewarded() -> set[str]:
        return {r[0] for r in query(settings.data_dir, "SELECT event_id FROM rewards")}

    r = client.post(V1 + "/logs/forget", json={"feature": "user.id", "value": "u1"})
    assert r.status_code == 200
    assert r.json() == {"deleted": 2}
    assert remaining() == rewarded() == {"n3", "n4", "f1", "f2", "f3"}

    r = client.post(V1 + "/logs/forget", json={"feature": "userId", "value": "u2"})
    assert r.json() == {"deleted": 1}
    assert remaining() == rewarded() == {"n3", "n4", "f2", "f3"}

    r = client.post(V1 + "/logs/forget", json={"feature": ["user", "id"], "value": "u2"})
    assert r.json() == {"deleted": 1}
    assert remaining() == rewarded() == {"n4", "f2", "f3"}

    r = client.post(V1 + "/logs/forget", json={"feature": "user.id", "value": "nobody"})
    assert r.json() == {"deleted": 0}
    assert remaining() == {"n4", "f2", "f3"}

    for bad in ({"feature": "", "value": "u1"}, {"feature": "user..id", "value": "u1"}, {}):
        r = client.post(V1 + "/logs/forget", json=bad)
        _error(r, 400, "BadRequest")
    assert remaining() == {"n4", "f2", "f3"}


def test_retention_deletes_old_logs(client: TestClient, settings: Settings) -> None:
    for eid in ("old1", "old2", "new1"):
        _rank(client, eid)
        client.post(f"{V1}/events/{eid}/reward", json={"value": 1})
    hundred_days = 100 * 86400
    registry = client.app.state.registry  # type: ignore[attr-defined]

    def age(conn: Any) -> None:
        for table in ("decisions", "rewards"):
            conn.execute(
                f"UPDATE {table} SET ts = ts - ? WHERE event_id IN ('old1', 'old2')",
                (hundred_days,),
            )

    registry.store.submit(age).result()

    before = client.get(SERVICE).json()
    client.put(SERVICE, json={**before, "logRetentionDays": -1})
    assert apply_retention(registry.loops.values(), time.time()) == 0
    assert scalar(settings.data_dir, "SELECT count(*) FROM decisions") == 3

    client.put(SERVICE, json={**before, "logRetentionDays": 120})
    assert apply_retention(registry.loops.values(), time.time()) == 0

    client.put(SERVICE, json={**before, "logRetentionDays": 90})
    assert apply_retention(registry.loops.values(), time.time()) == 2
    assert {r[0] for r in query(settings.data_dir, "SELECT event_id FROM decisions")} == {"new1"}
    assert {r[0] for r in query(settings.data_dir, "SELECT event_id FROM rewards")} == {"new1"}
    assert apply_retention(registry.loops.values(), time.time()) == 0
