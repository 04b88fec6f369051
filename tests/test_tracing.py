"""Trace context: a caller's W3C traceparent reaches the loop's recommender, unchanged
with tracing off, as the parent of banditloop's spans with an OpenTelemetry exporter on;
real HTTP to a real recommender."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from banditloop.app import create_app
from banditloop.config import Settings
from helpers import V1
from recommender_server import Recommender, recommender

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
ITEMS = [{"id": "a", "features": [{"x": 1}]}, {"id": "b", "features": [{"x": 2}]}]


@pytest.fixture
def rec() -> Iterator[Recommender]:
    with recommender(ITEMS) as r:
        yield r


def serve(tmp_path: Path, rec: Recommender, **settings: Any) -> TestClient:
    app = create_app(Settings(data_dir=tmp_path / "data", **settings))
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    config = client.get(V1 + "/configurations/service").json()
    connector = {"url": rec.url + "/recs?user={userId}", "timeoutSeconds": 5}
    r = client.put(V1 + "/configurations/service", json={**config, "recommender": connector})
    assert r.status_code == 200, r.text
    return client


def rank(client: TestClient, headers: dict[str, str]) -> None:
    body = {"recommenderParams": {"userId": "u"}}
    r = client.post(V1 + "/rank", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["rewardActionId"] in {"a", "b"}


def test_off_the_callers_trace_context_is_passed_on_unchanged(
    tmp_path: Path, rec: Recommender
) -> None:
    client = serve(tmp_path, rec)
    try:
        rank(client, {"traceparent": PARENT, "tracestate": "vendor=1"})
        assert rec.headers[-1]["traceparent"] == PARENT
        assert rec.headers[-1]["tracestate"] == "vendor=1"
        rank(client, {})
        assert "traceparent" not in rec.headers[-1]
        rank(client, {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"})  # invalid
        assert "traceparent" not in rec.headers[-1]
    finally:
        client.__exit__(None, None, None)


def test_on_banditloop_spans_join_the_callers_trace(tmp_path: Path, rec: Recommender) -> None:
    client = serve(tmp_path, rec, otel_exporter="console")
    try:
        rank(client, {"traceparent": PARENT})
        sent = rec.headers[-1]["traceparent"].split("-")
        assert sent[1] == TRACE_ID  # the same trace
        assert sent[2] != PARENT.split("-")[2]  # a child: banditloop's own span
    finally:
        client.__exit__(None, None, None)


def test_the_exporter_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="otel_exporter"):
        Settings(data_dir=tmp_path, otel_exporter="jaeger")  # type: ignore[arg-type]
