"""Metrics, health checks, request IDs, structured logs, and the dashboard's data."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from banditloop.app import create_app
from banditloop.config import Settings
from banditloop.evaluation.jobs import EVALUATION, IMPORTANCE
from banditloop.live import LivePolicy
from banditloop.loop import Loop
from banditloop.observability import JsonFormatter, RequestIdFilter
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.store.base import JobRecord
from helpers import V1, Clock, actions, pmf_of

RANK = {
    "contextFeatures": [{"user": {"secret": "s3cr3t-value"}}],
    "actions": actions("a", "b", "c"),
}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample == name and got == want:
            return float(value)
    return 0.0


def quiet(client: TestClient) -> Loop:
    """The default loop, its trainer thread stopped: the test learns in-process
    (``Trainer.drain``), so what was learned when does not depend on the machine."""
    loop: Loop = client.app.state.registry.loops["default"]  # type: ignore[attr-defined]
    loop.trainer.stop()
    return loop


def learn_all(loop: Loop) -> int:
    """Learn every event logged so far, their reward windows as good as closed."""
    return loop.trainer.drain(time.time() + 3600)


def traffic(
    client: TestClient,
    n: int,
    reward_every: int = 2,
    chosen: dict[str, float] | None = None,
    prefix: str | None = None,
) -> list[str]:
    """``n`` Ranks, every ``reward_every``-th rewarded 1; ``chosen`` collects the
    probability of each event's rewardActionId. With ``prefix`` the event IDs are
    ``prefix0``, ``prefix1``...: the draws, seeded by the event ID, are the same each run."""
    ids = []
    for i in range(n):
        body = RANK if prefix is None else {**RANK, "eventId": f"{prefix}{i}"}
        r = client.post(f"{V1}/rank", json=body)
        assert r.status_code == 201
        body = r.json()
        ids.append(body["eventId"])
        if chosen is not None:
            chosen[ids[-1]] = pmf_of(body)[body["rewardActionId"]]
        if i % reward_every == 0:
            assert (
                client.post(f"{V1}/events/{ids[-1]}/reward", json={"value": 1.0}).status_code == 204
            )
    return ids


# -- /metrics ------------------------------------------------------------------------


def test_metrics_count_requests_events_and_rewards_by_kind(
    client: TestClient, clock: Clock
) -> None:
    before = client.get("/metrics").text  # request metrics are the process's, across apps
    loop = quiet(client)
    ids = traffic(client, 10)
    late = ids[1]  # not rewarded yet; its reward window (1 s) will have passed
    clock.advance(1.2)
    assert client.post(f"{V1}/events/{late}/reward", json={"value": 1.0}).status_code == 204
    assert client.post(f"{V1}/events/nosuchevent/reward", json={"value": 1.0}).status_code == 204
    client.post("/loops/default/personalizer/v1.0/rank", json=RANK)

    assert learn_all(loop) == 11
    saved = loop.trainer.save()
    assert saved is not None
    text = client.get("/metrics").text
    assert metric(text, "banditloop_events_learned_total", loop="default") == 11

    def counted(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    rank = {"method": "POST", "endpoint": "/personalizer/v1.0/rank", "status": "201"}
    assert counted("banditloop_http_requests_total", **rank) == 10
    assert counted("banditloop_http_request_duration_seconds_count", **rank) == 10
    loops_rank = {"method": "POST", "endpoint": "/loops/{loop}/personalizer/v1.0/rank"}
    assert counted("banditloop_http_requests_total", **loops_rank, status="201") == 1
    reward = {"method": "POST", "endpoint": "/personalizer/v1.0/events/{eventId}/reward"}
    assert counted("banditloop_http_requests_total", **reward, status="204") == 7
    assert metric(text, "banditloop_events_logged_total", loop="default") == 11
    assert metric(text, "banditloop_rewards_total", loop="default", kind="joined") == 5
    assert metric(text, "banditloop_rewards_total", loop="default", kind="late") == 1
    assert metric(text, "banditloop_rewards_total", loop="default", kind="orphan") == 1
    assert metric(text, "banditloop_model_version", loop="default") == saved.number >= 1
    assert metric(text, "banditloop_store_size_bytes") > 0
    assert "banditloop_trainer_lag_seconds" in text
    assert "banditloop_trainer_backlog_events" in text


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    labels = {"method": "GET", "endpoint": "unmatched", "status": "404"}
    before = metric(client.get("/metrics").text, "banditloop_http_requests_total", **labels)
    for i in range(3):
        assert client.get(f"/no/such/path/{i}").status_code == 404
    text = client.get("/metrics").text
    assert metric(text, "banditloop_http_requests_total", **labels) == before + 3
    assert "/no/such/path" not in text


MULTIPROCESS_SCRIPT = """
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from banditloop.app import create_app
from banditloop.config import Settings

ACTIONS = [{"id": a, "features": [{"x": a}]} for a in "ab"]
with TestClient(create_app(Settings(data_dir=Path(sys.argv[1])))) as c:
    for _ in range(int(sys.argv[2])):
        assert c.post("/personalizer/v1.0/rank", json={"actions": ACTIONS}).status_code == 201
    if sys.argv[3] == "scrape":
        print(c.get("/metrics").text)
"""


def test_multiprocess_mode_adds_up_every_workers_requests(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    script = textwrap.dedent(MULTIPROCESS_SCRIPT)

    def run(data: str, n: int, scrape: bool) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                str(tmp_path / data),
                str(n),
                "scrape" if scrape else "",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    run("one", 3, False)  # a worker that has exited: its counts stay in the directory
    text = run("two", 4, True)
    rank = {"method": "POST", "endpoint": "/personalizer/v1.0/rank", "status": "201"}
    assert metric(text, "banditloop_http_requests_total", **rank) == 7
    assert metric(text, "banditloop_http_request_duration_seconds_count", **rank) == 7
    assert metric(text, "banditloop_events_logged_total", loop="default") == 4


# -- health -------------------------------------------------------------------------


def test_readyz_answers_ready_when_store_and_models_are(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_readyz_is_503_with_an_error_body_when_a_model_is_missing(client: TestClient) -> None:
    loop = client.app.state.registry.loops["default"]  # type: ignore[attr-defined]
    live, loop.live = loop.live, LivePolicy(Policy(DEFAULT_POLICY))
    loop.live.close()  # no workspace loaded
    try:
        r = client.get("/readyz")
    finally:
        loop.live = live
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "ServiceUnavailable"
    assert "default" in r.json()["error"]["message"]


def test_readyz_is_503_before_start_up(settings: Settings) -> None:
    bare = TestClient(create_app(settings), raise_server_exceptions=False)  # no lifespan
    r = bare.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "ServiceUnavailable"


# -- request IDs and logs ---------------------------------------------------------------


def test_request_ids_are_echoed_or_generated(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
    bad = client.get("/healthz", headers={"X-Request-Id": "no spaces\tor tabs"})
    assert bad.headers["x-request-id"] != "no spaces\tor tabs"
    error = client.post(f"{V1}/rank", json={}, headers={"X-Request-Id": "err-1"})
    assert error.status_code == 400
    assert error.headers["x-request-id"] == "err-1"


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """A plain console handler on the root logger, as ``banditloop serve`` has."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("banditloop.access").setLevel(logging.NOTSET)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{")]


def test_json_access_log_has_request_ids_and_no_feature_values(
    tmp_path: Path, console: io.StringIO
) -> None:
    s = Settings(data_dir=tmp_path / "d", log_format="json", access_log=True)
    with TestClient(create_app(s)) as c:
        c.post(f"{V1}/rank", json=RANK, headers={"X-Request-Id": "req-42"})
    access = [x for x in lines(console) if x["logger"] == "banditloop.access"]
    assert access, console.getvalue()
    ranked = next(x for x in access if x["request_id"] == "req-42")
    assert ranked["path"] == f"{V1}/rank"
    assert ranked["status"] == 201
    assert ranked["duration_ms"] > 0
    assert "s3cr3t-value" not in console.getvalue()


def test_feature_values_are_logged_only_when_asked(tmp_path: Path, console: io.StringIO) -> None:
    s = Settings(data_dir=tmp_path / "d", log_format="json", access_log=True, log_features=True)
    with TestClient(create_app(s)) as c:
        c.post(f"{V1}/rank", json=RANK, headers={"X-Request-Id": "req-43"})
    ranked = next(x for x in lines(console) if x.get("request_id") == "req-43")
    assert "s3cr3t-value" in ranked["body"]


def test_access_log_is_off_by_default(tmp_path: Path, console: io.StringIO) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "d"))) as c:
        c.post(f"{V1}/rank", json=RANK)
    assert "banditloop.access" not in console.getvalue()  # (httpx logs its own call)


def test_json_formatter_writes_one_object_per_line_with_extras() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.loop = "default"
    RequestIdFilter().filter(record)
    out = orjson.loads(JsonFormatter().format(record))
    assert out["message"] == "hello you"
    assert out["level"] == "WARNING"
    assert out["loop"] == "default"
    assert out["request_id"] == "-"


# -- dashboard ------------------------------------------------------------------------


def test_dashboard_needs_an_admin_key_when_keys_are_set(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d", admin_keys=["adm"], client_keys=["cli"])
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        assert c.get("/dashboard").status_code == 401
        assert c.get("/dashboard/data").status_code == 401
        assert c.get("/dashboard?key=cli").status_code == 403
        assert c.get("/dashboard", headers={"Ocp-Apim-Subscription-Key": "cli"}).status_code == 403
        page = c.get("/dashboard?key=adm")
        assert page.status_code == 200
        assert "/dashboard/data?loop=default" in page.text
        assert c.get("/loops/default/dashboard?key=adm").status_code == 200
        data = c.get("/dashboard/data", headers={"Ocp-Apim-Subscription-Key": "adm"})
        assert data.status_code == 200
        assert c.get("/dashboard/data?loop=nope&key=adm").status_code == 404
        assert c.get("/dashboard/static/dashboard.js").status_code == 200  # no data in it
        assert c.get("/dashboard/static/..%2Fconfig.py").status_code == 404


def test_dashboard_data_shows_traffic_learning_jobs_and_configuration(
    client: TestClient, clock: Clock
) -> None:
    loop = quiet(client)
    chosen: dict[str, float] = {}
    ids = traffic(client, 40, chosen=chosen)
    client.post(f"{V1}/events/nosuchevent/reward", json={"value": 1.0})
    assert learn_all(loop) == len(ids)
    # SNIPS of the uniformly random policy: weights (1/3) / p(logged); rewarded: ids[::2]
    random_value = sum((1 / 3) / chosen[e] for e in ids[::2]) / sum(
        (1 / 3) / chosen[e] for e in ids
    )
    store = loop.store
    result = {
        "optimalPolicy": "online",
        "models": {"online": "AAAA"},
        "policies": [
            {
                "name": "online",
                "arguments": "--cb_explore_adf",
                "policySource": "Online",
                "summary": {"expectedReward": 0.5, "confidenceInterval": [0.4, 0.6], "events": 40},
                "buckets": {},
            }
        ],
    }
    req = {"name": "weekly", "start": 0.0, "end": time.time()}
    store.put_job("default", EVALUATION, JobRecord("e1", time.time(), "Succeeded", req, result))
    scores = [{"namespace": "FromUrl", "featureName": "user", "score": 1.0}]
    store.put_job(
        "default",
        IMPORTANCE,
        JobRecord("f1", time.time(), "Succeeded", req, {"featureScores": scores}),
    ).result()

    clock.advance(2)  # every reward window (1 s) has closed
    d = client.get("/dashboard/data?minutes=15").json()
    assert d["loop"] == "default"
    assert d["window"]["minutes"] == 15
    n = len(d["series"]["t"])
    assert n >= 60
    assert sum(d["series"]["events"]) * d["window"]["bucketSeconds"] / 60 == pytest.approx(40)
    assert d["totals"]["events"] == 40
    assert d["totals"]["rewards"] == 21
    assert d["totals"]["orphan"] == 1
    assert d["totals"]["rewardedShare"] == pytest.approx(0.5)
    rr = d["totals"]["rewardRate"]
    assert rr["online"]["events"] == 40
    assert rr["online"]["value"] == pytest.approx(0.5)
    assert rr["online"]["low"] < 0.5 < rr["online"]["high"]
    assert rr["random"]["value"] == pytest.approx(random_value)
    assert len(d["series"]["rewardRate"]["baseline"]["value"]) == n
    assert d["totals"]["entropy"] > 0
    assert d["totals"]["imitation"] is None
    assert d["trainer"]["eventsLearned"] == 40
    assert d["history"]["t"]
    assert d["evaluations"][0]["policies"][0]["expectedReward"] == 0.5
    assert "models" not in str(d["evaluations"])
    assert d["featureImportances"][0]["featureScores"] == scores
    assert d["configuration"]["rewardWaitTime"] == "PT1S"
    assert d["policy"]["arguments"]
    assert "s3cr3t-value" not in orjson.dumps(d).decode()


def test_dashboard_shows_imitation_in_apprentice_mode(client: TestClient) -> None:
    cfg = client.get(f"{V1}/configurations/service").json()
    cfg["learningMode"] = "Apprentice"
    assert client.put(f"{V1}/configurations/service", json=cfg).status_code == 200
    quiet(client)  # the model learns nothing meanwhile
    traffic(client, 20, prefix="ap")
    d = client.get("/loops/default/dashboard/data").json()
    assert d["learningMode"] == "Apprentice"
    # the untrained model's draws (seeded by the event IDs) that picked the baseline
    assert d["totals"]["imitation"] == 0.35
    assert d["series"]["imitation"] is not None
