"""The administration commands of the CLI, offline on a data directory and against a server."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from banditloop.cli import main
from conftest import Server
from helpers import TIMEOUT, actions, poll, query, scalar

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("cli_admin")

V1 = "/personalizer/v1.0"
ADMIN_KEY = "cli-Admin-k3y"
RANK = {"actions": actions("a", "b", "c")}


def run(*args: str, ok: bool = True, **kw: Any) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=True, **kw)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    else:
        assert result.exit_code != 0, result.output
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
    return result


def out_json(result: Result) -> Any:
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        tmp_path_factory.mktemp("cli") / "data",
        extra=(f'BANDITLOOP_ADMIN_KEYS=["{ADMIN_KEY}"]',),
    ).start()
    yield s
    s.stop()


def _rank(srv: Server, ctx: list[dict[str, Any]], event_id: str, loop: str = "") -> None:
    prefix = f"/loops/{loop}" if loop else ""
    r = httpx.post(
        f"{srv.url}{prefix}{V1}/rank",
        json={**RANK, "contextFeatures": ctx, "eventId": event_id},
        headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, r.text


# -- offline, on a data directory ----------------------------------------------------------


def test_offline_config(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    shown = out_json(run("config", "show", "--data-dir", d))
    assert set(shown) == {"service", "policy"}
    assert shown["service"]["learningMode"] == "Online"

    result = run(
        "config", "set", "--data-dir", d, "explorationPercentage=0.3", "rewardWaitTime=PT1M",
        "isAutoOptimizationEnabled=true",
    )  # fmt: skip
    changed = out_json(result)
    assert changed["explorationPercentage"] == 0.3
    assert changed["rewardWaitTime"] == "PT1M"
    assert changed["isAutoOptimizationEnabled"] is True
    shown = out_json(run("config", "show", "--data-dir", d))
    assert shown["service"]["explorationPercentage"] == 0.3
    assert shown["service"]["rewardWaitTime"] == "PT1M"

    args = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type ips"
    run("config", "set", "--data-dir", d, "--policy", args)
    assert out_json(run("config", "show", "--data-dir", d))["policy"]["arguments"] == args


@pytest.mark.parametrize(
    ("assignment", "words"),
    [
        ("explorationPercentage=3", "explorationPercentage"),
        ("rewardWaitTime=10 minutes", "rewardWaitTime"),
        ("rewardAggregation=mean", "rewardAggregation"),
        ("logRetentionDays=0", "Log Retention Days"),
    ],
)
def test_offline_invalid_config(tmp_path: Path, assignment: str, words: str) -> None:
    d = str(tmp_path / "data")
    before = out_json(run("config", "show", "--data-dir", d))["service"]
    result = run("config", "set", "--data-dir", d, assignment, ok=False)
    assert "Error" in result.output
    assert words in result.output
    assert out_json(run("config", "show", "--data-dir", d))["service"] == before


def test_offline_bad_policy_and_usage(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    result = run("config", "set", "--data-dir", d, "--policy", "--cb_explore_adf -f x", ok=False)
    assert "not allowed" in result.output
    result = run("config", "set", "--data-dir", d, "--policy", "--cb_explore_adf --bogus", ok=False)
    assert "Error" in result.output
    result = run("config", "set", "--data-dir", d, "novalue", ok=False)
    assert result.exit_code == 2
    result = run("config", "show", ok=False)  # neither --url nor --data-dir
    assert "--url" in result.output and "--data-dir" in result.output
    result = run("config", "show", "--data-dir", d, "--loop", "nosuch", ok=False)
    assert "nosuch" in result.output


def test_offline_model(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    model = tmp_path / "model.vw"
    signed = tmp_path / "model.zip"
    run("model", "export", "--data-dir", d, "-o", str(model))
    run("model", "export", "--data-dir", d, "-o", str(signed), "--signed")
    blob = model.read_bytes()
    assert blob
    with zipfile.ZipFile(io.BytesIO(signed.read_bytes())) as zf:
        assert zf.read("model.vw") == blob
        assert zf.read("sha512_signature.bin") == hashlib.sha512(blob).digest()
    run("model", "import", "--data-dir", d, str(signed))
    run("model", "import", "--data-dir", d, str(model))
    again = tmp_path / "again.vw"
    run("model", "export", "--data-dir", d, "-o", str(again))
    assert again.read_bytes() == blob
    assert "model reset" in run("model", "reset", "--data-dir", d).output

    garbage = tmp_path / "garbage.vw"
    garbage.write_bytes(b"not a model at all")
    result = run("model", "import", "--data-dir", d, str(garbage), ok=False)
    assert "InvalidModelImportFormat" in result.output or "model" in result.output.lower()
    run("model", "export", "--data-dir", d, "-o", str(again))
    assert again.read_bytes() == blob


def test_offline_logs_and_loops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = str(data)
    # Log some events with a server, then work on its data directory offline.
    srv = Server(data).start()
    try:
        _rank(srv, [{"user": {"id": "u1"}}], "e1")
        _rank(srv, [{"user": {"id": "u1"}}], "e2")
        _rank(srv, [{"user": {"id": "u2"}}], "e3")
        _rank(srv, [{"userId": "u9"}], "e4")
    finally:
        srv.stop()

    info = out_json(run("logs", "info", "--data-dir", d))
    assert info["dateRange"]["from"] is not None and info["dateRange"]["to"] is not None
    r = run("logs", "delete", "--data-dir", d, "--feature", "user.id", "--value", "u1")
    assert "deleted 2 events" in r.output
    assert "deleted 1 events" in run("logs", "delete", "--data-dir", d, "--event-id", "e3").output
    r = run("logs", "delete", "--data-dir", d, "--feature", "userId", "--value", "u9")
    assert "deleted 1 events" in r.output
    assert scalar(data, "SELECT count(*) FROM decisions") == 0

    # Deleting everything asks first; "n" keeps the logs.
    run("logs", "delete", "--data-dir", d, input="n\n", ok=False)
    run("logs", "delete", "--data-dir", d, "--yes")
    assert out_json(run("logs", "info", "--data-dir", d)) == {
        "dateRange": {"from": None, "to": None}
    }

    result = run("loops", "create", "--data-dir", d, "news", "--client-key", "nk")
    assert result.output.startswith("created ")
    assert "exists" in run("loops", "create", "--data-dir", d, "news").output
    names = [x["name"] for x in out_json(run("loops", "list", "--data-dir", d))]
    assert sorted(names) == ["default", "news"]
    shown = out_json(run("config", "show", "--data-dir", d, "--loop", "news"))
    assert shown["policy"]["name"] == "news"
    run("loops", "create", "--data-dir", d, "bad.name", ok=False)
    run("loops", "delete", "--data-dir", d, "news", input="n\n", ok=False)
    run("loops", "delete", "--data-dir", d, "news", "--yes")
    names = [x["name"] for x in out_json(run("loops", "list", "--data-dir", d))]
    assert names == ["default"]
    result = run("loops", "delete", "--data-dir", d, "default", "--yes", ok=False)
    assert "default" in result.output
    assert query(data, "SELECT name FROM loops") == [("default",)]


def test_offline_refused_while_a_server_runs(srv: Server) -> None:
    d = str(srv.data_dir)
    for args in (
        ("config", "show"),
        ("config", "set", "explorationPercentage=0.1"),
        ("model", "reset"),
        ("logs", "info"),
        ("loops", "list"),
    ):
        result = run(*args, "--data-dir", d, ok=False)
        assert "in use" in result.output, result.output
        assert "--url" in result.output
    r = httpx.get(
        srv.url + V1 + "/configurations/service",
        headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
        timeout=TIMEOUT,
    )
    assert r.json()["explorationPercentage"] != 0.1


# -- against a running server (--url) ------------------------------------------------------


def test_url_config(srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    url = ("--url", srv.url)
    result = run("config", "show", *url, ok=False)  # no key
    assert "Unauthorized" in result.output
    result = run("config", "show", *url, "--api-key", "wrong", ok=False)
    assert "Unauthorized" in result.output

    monkeypatch.setenv("BANDITLOOP_API_KEY", ADMIN_KEY)
    shown = out_json(run("config", "show", *url))
    assert shown["service"]["rewardWaitTime"] == "PT1S"
    changed = out_json(run("config", "set", *url, "explorationPercentage=0.4"))
    assert changed["explorationPercentage"] == 0.4
    r = httpx.get(
        srv.url + V1 + "/configurations/service",
        headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
        timeout=TIMEOUT,
    )
    assert r.json()["explorationPercentage"] == 0.4

    result = run("config", "set", *url, "explorationPercentage=3", ok=False)
    assert "explorationPercentage" in result.output
    result = run("config", "set", *url, "rewardWaitTime=P3D", ok=False)
    assert "InvalidRewardWaitTime" in result.output
    result = run("config", "set", *url, "--policy", "--cb_explore_adf --bogus", ok=False)
    assert "InvalidPolicyConfiguration" in result.output
    result = run("config", "show", "--url", "http://127.0.0.1:1", ok=False)
    assert "127.0.0.1:1" in result.output


def test_url_model_logs_loops(srv: Server, tmp_path: Path) -> None:
    key = ("--url", srv.url, "--api-key", ADMIN_KEY)
    _rank(srv, [{"user": {"id": "u1"}}], "k1")
    _rank(srv, [{"user": {"id": "u2"}}], "k2")
    _rank(srv, [{"user": {"id": "u2"}}], "k3")
    learned = "SELECT count(*) FROM decisions WHERE loop='default' AND learned_in IS NOT NULL"
    poll(lambda: scalar(srv.data_dir, learned) == 3, 120, "the 3 events learned")  # model still

    model, signed, again = tmp_path / "m.vw", tmp_path / "m.zip", tmp_path / "again.vw"
    run("model", "export", *key, "-o", str(model))
    run("model", "export", *key, "-o", str(signed), "--signed")
    with zipfile.ZipFile(signed) as zf:
        assert zf.read("model.vw") == model.read_bytes()
    run("model", "reset", *key)
    run("model", "import", *key, str(signed))
    run("model", "export", *key, "-o", str(again))
    assert again.read_bytes() == model.read_bytes()
    bad = tmp_path / "bad.vw"
    bad.write_bytes(b"\x00\x01garbage")
    assert "InvalidModelImportFormat" in run("model", "import", *key, str(bad), ok=False).output

    assert out_json(run("logs", "info", *key))["dateRange"]["from"] is not None

    def served() -> bytes:  # the closed events (reward windows of 1 s)
        return httpx.get(
            srv.url + V1 + "/logs/export",
            headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
            timeout=TIMEOUT,
        ).content

    all_three = poll(lambda: (b := served()).count(b"\n") == 3 and b, 120, "3 events exported")
    exported = tmp_path / "logs.json"
    run("logs", "export", *key, "-o", str(exported))
    assert exported.read_bytes() == all_three
    assert [orjson.loads(x)["EventId"] for x in exported.read_bytes().splitlines()] == [
        "k1", "k2", "k3"
    ]  # fmt: skip
    refused = run("logs", "export", "--url", srv.url, "-o", str(exported), ok=False)
    assert "Unauthorized" in refused.output
    r = run("logs", "delete", *key, "--feature", "user.id", "--value", "u2")
    assert "deleted 2 events" in r.output
    assert "deleted 1 events" in run("logs", "delete", *key, "--event-id", "k1").output
    assert scalar(srv.data_dir, "SELECT count(*) FROM decisions WHERE loop='default'") == 0
    run("logs", "delete", *key, "--feature", "user.id", ok=False)  # --value missing

    result = run("loops", "create", *key, "clinews", "--policy", "--cb_explore_adf --epsilon 0.1")
    assert result.output.startswith("created ")
    listed = {x["name"]: x for x in out_json(run("loops", "list", *key))}
    assert listed["clinews"]["policy"] == "--cb_explore_adf --epsilon 0.1"
    shown = out_json(run("config", "show", *key, "--loop", "clinews"))
    assert shown["policy"]["arguments"] == "--cb_explore_adf --epsilon 0.1"
    _rank(srv, [{"user": {"id": "u1"}}], "n1", loop="clinews")
    run("logs", "delete", *key, "--loop", "clinews", "--yes")
    assert scalar(srv.data_dir, "SELECT count(*) FROM decisions WHERE loop='clinews'") == 0
    run("loops", "delete", *key, "clinews", "--yes")
    assert "clinews" not in {x["name"] for x in out_json(run("loops", "list", *key))}
    assert "ResourceNotFound" in run("loops", "delete", *key, "clinews", "--yes", ok=False).output
