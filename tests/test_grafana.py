"""The Grafana dashboard (configs/grafana/banditloop.json) and the alert rules
(configs/prometheus-rules.yml) query only series that ``/metrics`` exports: every
metric name in their PromQL is read from a live server after some traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import V1, Server
from helpers import TIMEOUT, actions

CONFIGS = Path(__file__).parent.parent / "configs"
DASHBOARD = CONFIGS / "grafana" / "banditloop.json"
RULES = CONFIGS / "prometheus-rules.yml"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are neither functions,
    keywords, label names (inside ``{}`` or after by/on/...) nor ranges."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # matchers and ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = re.findall(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(?!\s*\()", expr)
    return {n for n in names if n.lower() not in KEYWORDS}


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":  # label_values(metric, label)
            exprs.append(re.sub(r"label_values\((\w+),.*\)", r"\1", var["query"]["query"]))
    return exprs


def alert_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def exported(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_extractor_finds_metric_names_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(a_bucket{endpoint=~".*/rank",'
        ' status="201"}[$__rate_interval]))) / on (loop) b_total - time() > bool 0.5'
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}


def test_every_series_the_dashboard_queries_is_exported(server: Server) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    wanted = set().union(*(metric_names(e) for e in queries(dashboard)))
    # what the issue asks the dashboard to show
    assert {
        "banditloop_http_requests_total",
        "banditloop_http_request_duration_seconds_bucket",
        "banditloop_rewards_total",
        "banditloop_events_logged_total",
        "banditloop_trainer_lag_seconds",
        "banditloop_trainer_backlog_events",
        "banditloop_model_version",
        "banditloop_requests_shed_total",
        "banditloop_events_failed_total",
    } <= wanted
    wanted |= set().union(*(metric_names(e) for e in alert_queries())) - {"up"}

    with httpx.Client(base_url=server.url + V1, timeout=TIMEOUT) as http:
        for i in range(3):
            r = http.post("/rank", json={"eventId": f"e{i}", "actions": actions("a", "b")})
            assert r.status_code == 201, r.text
        assert http.post("/events/e0/reward", json={"value": 1}).status_code == 204
        assert http.post("/rank", json={"actions": []}).status_code == 400  # an error
        model = http.get("/model").content
        octets = {"content-type": "application/octet-stream"}
        put = http.put("/model", content=model, headers=octets)
        assert put.status_code == 204, put.text  # a saved model: its timestamp is a series
    text = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text

    missing = wanted - exported(text)
    assert not missing, f"queried by the dashboard, not in /metrics: {sorted(missing)}"
