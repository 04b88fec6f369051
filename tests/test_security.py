"""Denied paths of docs/security.md not covered elsewhere (keys: test_auth.py; model
import: test_admin_api.py; logs: test_observability.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from helpers import V1, actions, query

POLICY = f"{V1}/configurations/policy"
#: The former deny-list: each of these still gets a 400, now from the allow-list.
FORMERLY_FORBIDDEN = [
    "-d",
    "--data",
    "-f",
    "--final_regressor",
    "-i",
    "--initial_regressor",
    "-c",
    "--cache",
    "--cache_file",
    "--readable_model",
    "--invert_hash",
    "--daemon",
    "--port",
    "-p",
    "--predictions",
    "-r",
    "--raw_predictions",
    "--pid_file",
    "--port_file",
    "--feature_mask",
    "--save_per_pass",
    "--output_feature_regularizer_binary",
    "--output_feature_regularizer_text",
    "--input_feature_regularizer",
    "--dictionary",
    "--dictionary_path",
    "--audit_regressor",
    "--extra_metrics",
    "--json",
    "--dsjson",
    "--passes",
    "--help",
    "-h",
    "--onethread",
    "--num_children",
    "--span_server",
    "--unique_id",
    "--total",
    "--node",
    "--sendto",
    "--progress",
    "-P",
    "--flatbuffer",
    "--compressed",
    "--db",
    "--id",
    "--preserve_performance_counters",
    "--kill_cache",
    "-k",
    "--no_stdin",
    "--version",
    "--predict_only_model",
    "--log_output",
    "--limit_output",
]


def test_cors_is_off(client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    pre = client.options(f"{V1}/rank", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code in (404, 405)
    r = client.post(f"{V1}/rank", json={"actions": actions("a", "b")}, headers=origin)
    assert r.status_code == 201
    for resp in (pre, r):
        assert not any(h.lower().startswith("access-control-") for h in resp.headers)


def test_every_forbidden_policy_option_is_refused(client: TestClient) -> None:
    before = client.get(POLICY).json()
    for option in FORMERLY_FORBIDDEN:
        for args in (f"{option} x", f"{option}=x"):
            r = client.put(POLICY, json={"name": "p", "arguments": f"--cb_explore_adf {args}"})
            assert r.status_code == 400, (option, r.text)
            assert r.json()["error"]["code"] == "InvalidPolicyConfiguration"
    assert client.get(POLICY).json() == before


def test_non_ascii_namespace_is_escaped(client: TestClient, settings: object) -> None:
    ctx = [{"ümlaut": {"x": 1}, "日本": [1.0, 2.0], "ok": "ü"}]
    r = client.post(
        f"{V1}/rank", json={"contextFeatures": ctx, "actions": actions("a"), "eventId": "na"}
    )
    assert r.status_code == 201, r.text
    data_dir = settings.data_dir  # type: ignore[attr-defined]
    (example,) = query(data_dir, "SELECT example FROM decisions WHERE event_id='na'")[0]
    assert '"~ümlaut"' in example and '"~日本"' in example and '"ok":"ü"' in example
