"""DSJSON export and import against a real server: every line is read by VW, the keys and
labels are as in API.md, a model trained on the export in VW directly equals the server's
own model, multi-slot lines are CCB lines, imports land in a fresh data directory, and the
export streams (memory stays flat)."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import vowpalwabbit
from click.testing import CliRunner
from fastapi.testclient import TestClient

from banditloop import dsjson
from banditloop.app import create_app
from banditloop.cli import main
from banditloop.config import Settings
from banditloop.policy import with_epsilon
from banditloop.store.events import EXAMPLE  # the example whole (schema m009)
from banditloop.worlds import NewsWorld, rank_body
from conftest import Server
from helpers import TIMEOUT, V1, poll, query, scalar

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("dsjson")

SINGLE_KEYS = [
    "_label_cost",
    "_label_probability",
    "_label_Action",
    "_labelIndex",
    "o",
    "Timestamp",
    "Version",
    "EventId",
    "a",
    "c",
    "p",
    "VWState",
]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
CCB = "--ccb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
POLICY = "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
LOOP = 'BANDITLOOP_LOOP={"rewardWaitTime": "PT1S", "explorationPercentage": 0.2}'


@dataclass
class Sent:
    """What the test did with one event, to check its exported line against."""

    event_id: str
    mode: str = "Online"
    deferred: bool = False
    activated: bool = False
    rewards: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # sent after the window closed


@dataclass
class Traffic:
    server: Server
    sent: dict[str, Sent]
    lines: list[bytes]  # GET /logs/export
    content_type: str


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """A few hundred news-world events, every reward sent at once (earliest aggregation),
    so that the trainer (which learns in close order) learns them in rank order."""
    srv = Server(tmp_path_factory.mktemp("dsjson") / "data", extra=(LOOP,)).start()
    world = NewsWorld(seed=7)
    sent: dict[str, Sent] = {}
    with httpx.Client(base_url=srv.url + V1, timeout=30) as http:
        r = http.put("/configurations/policy", json={"name": "q", "arguments": POLICY})
        assert r.status_code == 200, r.text

        def rank(event_id: str, **extra: Any) -> dict[str, Any]:
            it = world.next()
            r = http.post("/rank", json={**rank_body(it), "eventId": event_id, **extra})
            assert r.status_code == 201, r.text
            body = r.json()
            body["_reward"] = world.reward(it, body["rewardActionId"])
            return body

        def reward(s: Sent, value: float) -> None:
            r = http.post(f"/events/{s.event_id}/reward", json={"value": value})
            assert r.status_code == 204
            s.rewards.append(value)

        def set_mode(mode: str) -> None:
            cfg = http.get("/configurations/service").json()
            cfg["learningMode"] = mode
            assert http.put("/configurations/service", json=cfg).status_code == 200

        for i in range(200):
            s = sent.setdefault(f"e{i}", Sent(f"e{i}"))
            if i == 100:  # a checkpoint: later decisions carry a newer model version
                assert http.get("/model").status_code == 200
            if i % 10 == 3:  # deferred, never activated (every other one rewarded anyway)
                s.deferred = True
                body = rank(s.event_id, deferActivation=True)
                if i % 20 == 3:
                    reward(s, body["_reward"])
            elif i % 10 == 5:  # deferred, activated, rewarded
                s.deferred = s.activated = True
                body = rank(s.event_id, deferActivation=True)
                assert http.post(f"/events/{s.event_id}/activate").status_code == 204
                reward(s, body["_reward"])
            elif i % 10 == 7:  # several rewards: the earliest counts, all are exported
                body = rank(s.event_id)
                reward(s, body["_reward"])
                reward(s, 0.5)
                reward(s, -0.25)
            else:
                body = rank(s.event_id)
                reward(s, body["_reward"])

        set_mode("Apprentice")
        for i in range(200, 260):
            s = sent.setdefault(f"e{i}", Sent(f"e{i}", mode="Apprentice"))
            body = rank(s.event_id)
            assert body["rewardActionId"] == NewsWorld.articles[0]  # the baseline is shown
            reward(s, body["_reward"])
        set_mode("Online")
        for i in range(260, 280):  # never rewarded, last: learned with the default reward
            s = sent.setdefault(f"e{i}", Sent(f"e{i}"))
            rank(s.event_id)

        db = srv.data_dir
        poll(lambda: scalar(db, "SELECT count(*) FROM decisions WHERE outcome IS NULL") == 0, 15)
        late = sent["e0"]  # window closed: logged and exported, not learned
        assert http.post("/events/e0/reward", json={"value": 0.75}).status_code == 204
        late.late.append(0.75)

        r = http.get("/logs/export")
        assert r.status_code == 200, r.text
        yield Traffic(srv, sent, r.content.splitlines(), r.headers["content-type"])
    srv.stop()


def _rows(data_dir: Path) -> dict[str, dict[str, Any]]:
    rows = query(
        data_dir,
        f"SELECT event_id, {EXAMPLE}, action_ids, slots, model_version, mode, outcome "
        "FROM decisions WHERE loop='default'",
    )
    return {
        e: {
            "example": json.loads(x),
            "action_ids": json.loads(a),
            "slot": json.loads(s)[0],
            "m": m,
            "mode": mode,
            "outcome": json.loads(o),
        }
        for e, x, a, s, m, mode, o in rows
    }


def test_every_line_parses_in_vw(traffic: Traffic) -> None:
    assert traffic.content_type.startswith("application/x-ndjson")
    assert len(traffic.lines) == len(traffic.sent) == 280
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet")
    try:
        for line in traffic.lines:
            ex = ws.parse(line.decode())
            # shared + 7 articles; VW reads a _skipLearn line as one empty example (skipped)
            assert len(ex) == (1 if b'"_skipLearn":true' in line else 8)
            ws.finish_example(ex)
    finally:
        ws.finish()


def test_lines_hold_what_happened(traffic: Traffic) -> None:
    rows = _rows(traffic.server.data_dir)
    versions = []
    for line in traffic.lines:
        obj = json.loads(line)
        s = traffic.sent[obj["EventId"]]
        row = rows[s.event_id]
        skip = s.deferred and not s.activated
        keys = SINGLE_KEYS + ([] if skip else ["_original_label_cost"])
        assert list(obj) == keys + (["_skipLearn"] if skip else []), s
        if skip:
            assert obj["_skipLearn"] is True
        assert TIMESTAMP.match(obj["Timestamp"]) and obj["Version"] == "1"
        # a: 1-based, the chosen action first; p aligned with it
        slot, ids = row["slot"], row["action_ids"]
        chosen = slot["a"][slot["c"]]
        assert sorted(obj["a"]) == list(range(1, len(ids) + 1))
        assert obj["a"][0] == obj["_label_Action"] == obj["_labelIndex"] + 1 == chosen + 1
        pmf = dict(zip(slot["a"], slot["p"], strict=True))
        assert obj["p"] == [pmf[a - 1] for a in obj["a"]]
        assert obj["_label_probability"] == obj["p"][0] > 0
        multi = obj["c"]["_multi"]
        assert [m["j"][0]["article"] for m in multi] == ids
        assert obj["c"] == row["example"]
        # o: every reward in arrival order (late ones too), then the activations
        values = [o["v"] for o in obj["o"] if "v" in o]
        assert values == s.rewards + s.late
        assert sum(o["ActionTaken"] for o in obj["o"]) == int(s.activated)
        assert all(o["EventId"] == s.event_id for o in obj["o"])
        # labels: cost = -training reward; the original cost = -real (aggregated) reward
        real = s.rewards[0] if s.rewards else 0.0
        if s.mode == "Apprentice":
            trained = float(chosen == 0)  # imitating the baseline, the first action
            assert row["mode"] == "Apprentice"
        else:
            trained = real
        if not skip:
            assert obj["_label_cost"] == -trained
            assert obj["_original_label_cost"] == -real
        assert obj["VWState"] == {"m": row["m"]}
        versions.append(int(row["m"]))
    assert versions == sorted(versions) and len(set(versions)) >= 2
    modes = [traffic.sent[json.loads(x)["EventId"]].mode for x in traffic.lines]
    assert modes.count("Apprentice") == 60
    # in Apprentice mode the model's draw is not always the baseline: both labels occur
    costs = {
        json.loads(x)["_label_cost"]
        for x, m in zip(traffic.lines, modes, strict=True)
        if m == "Apprentice"
    }
    assert costs == {-1.0, -0.0} or costs == {-1.0, 0.0}


def _pmfs(model: bytes, args: str, examples: list[str], tmp: Path) -> list[list[float]]:
    path = tmp / "m.vw"
    path.write_bytes(model)
    ws = vowpalwabbit.Workspace(f"{args} --json --quiet -i {path}")
    try:
        out = []
        for x in examples:
            ex = ws.parse(x)
            out.append([float(p) for p in ws.predict(ex)])
            ws.finish_example(ex)
        return out
    finally:
        ws.finish()


def test_model_trained_on_the_export_equals_the_servers(traffic: Traffic, tmp_path: Path) -> None:
    """The trainer learns in close order; every reward here was sent at once with the
    earliest aggregation (the event closes at its first reward) and the unrewarded events
    come last, so close order is rank order, which is the export's order."""
    policy = httpx.get(traffic.server.url + V1 + "/configurations/policy", timeout=TIMEOUT).json()
    assert policy["arguments"] == POLICY
    args = with_epsilon(POLICY, 0.2)  # what the loop runs: explorationPercentage 0.2
    server_model = httpx.get(traffic.server.url + V1 + "/model", timeout=30).content
    ws = vowpalwabbit.Workspace(f"{args} --dsjson --quiet")
    try:
        for line in traffic.lines:
            ex = ws.parse(line.decode())
            ws.learn(ex)
            ws.finish_example(ex)
        ws.save(str(tmp_path / "offline.vw"))
    finally:
        ws.finish()
    offline = (tmp_path / "offline.vw").read_bytes()
    world = NewsWorld(seed=99)
    examples = []
    for user in NewsWorld.users:
        for tod in NewsWorld.times:
            it = world.next()
            ctx = {"FromUrl": [{"user": user, "time_of_day": tod}]}
            multi = [{"i": {"id": a.id}, "j": [a.features]} for a in it.actions]
            examples.append(json.dumps({**ctx, "_multi": multi}))
    ours = _pmfs(offline, args, examples, tmp_path)
    theirs = _pmfs(server_model, args, examples, tmp_path)
    for a, b in zip(ours, theirs, strict=True):
        assert max(a) > 0.5  # it learned something: not uniform
        assert a == pytest.approx(b, abs=1e-5)


def test_cli_export_offline_while_the_server_runs(traffic: Traffic, tmp_path: Path) -> None:
    out = tmp_path / "logs.json"
    export = ["logs", "export", "--data-dir", str(traffic.server.data_dir), "-o", str(out)]
    res = CliRunner().invoke(main, export)
    assert res.exit_code == 0, res.output
    assert "wrote 280 events" in res.output
    assert out.read_bytes().splitlines() == traffic.lines

    # a time range: only the decisions ranked inside it
    def before(k: int) -> str:  # 1 ms before event k (events are several ms apart)
        ts = dsjson.parse_timestamp(json.loads(traffic.lines[k])["Timestamp"]) - 0.001
        return dsjson.timestamp(ts)

    stamps = {k: before(k) for k in (100, 200)}
    res = CliRunner().invoke(
        main,
        [*export, "--from", stamps[100], "--to", stamps[200]],
    )
    assert res.exit_code == 0, res.output
    assert out.read_bytes().splitlines() == traffic.lines[100:200]
    # and over HTTP with the same range
    r = httpx.get(
        traffic.server.url + "/personalizer/logs/export",
        params={
            "api-version": "2022-09-01-preview",
            "startTime": stamps[100],
            "endTime": stamps[200],
        },
        timeout=TIMEOUT,
    )
    assert r.status_code == 200 and r.content.splitlines() == traffic.lines[100:200]


def _learned(data_dir: Path) -> list[tuple[str, str, Any]]:
    return query(data_dir, "SELECT event_id, mode, outcome FROM decisions ORDER BY seq")


@pytest.mark.parametrize("learn", [True, False], ids=["learn", "no-learn"])
def test_import_into_a_fresh_data_dir(traffic: Traffic, tmp_path: Path, learn: bool) -> None:
    src = tmp_path / "export.json"
    src.write_bytes(b"\n".join(traffic.lines) + b"\n")
    fresh = tmp_path / "fresh"
    args = ["logs", "import", "--data-dir", str(fresh), str(src)]
    res = CliRunner().invoke(main, args + ([] if learn else ["--no-learn"]))
    assert res.exit_code == 0, res.output
    assert "imported 280 events" in res.output
    rows = query(fresh, "SELECT event_id, mode, deferred, outcome FROM decisions ORDER BY ts")
    assert [r[0] for r in rows] == [json.loads(x)["EventId"] for x in traffic.lines]
    assert all(r[3] is None for r in rows)  # not yet learned: the trainer does that
    skipped = {json.loads(x)["EventId"] for x in traffic.lines if b"_skipLearn" in x}
    assert {r[0] for r in rows if r[2]} == skipped
    # importing the same file again adds nothing
    res = CliRunner().invoke(main, args + ([] if learn else ["--no-learn"]))
    assert res.exit_code == 0 and "imported 0 events" in res.output
    # a server on the fresh directory: its trainer learns the imported events, or not
    settings = Settings(data_dir=fresh)
    with TestClient(create_app(settings)):
        poll(lambda: scalar(fresh, "SELECT count(*) FROM decisions WHERE outcome IS NULL") == 0)
    learned = scalar(fresh, "SELECT max(events_learned) FROM models")  # saved at shutdown
    outcomes = {e: json.loads(o) for e, _, o in _learned(fresh)}
    trained = [e for e, o in outcomes.items() if o["t"] is not None]
    if learn:
        assert len(trained) == 280 - len(skipped)
        assert learned == len(trained)
    else:
        assert trained == [] and not learned
        assert {m for _, m, _ in _learned(fresh)} == {"Imported"}
    # the real rewards came along: the first reward is the real one
    for line in traffic.lines:
        obj = json.loads(line)
        if "_skipLearn" not in obj:
            assert outcomes[obj["EventId"]]["r"] == [-obj["_original_label_cost"]]


def test_import_refuses_malformed_lines(traffic: Traffic, tmp_path: Path) -> None:
    """A bad line fails the import with its line number, and nothing of the file is
    stored: every line is checked before any is written."""
    src = tmp_path / "bad.json"
    bad = json.loads(traffic.lines[3])
    del bad["a"]
    src.write_bytes(
        traffic.lines[0]
        + b"\n"
        + traffic.lines[1]
        + b"\n\n"
        + json.dumps(bad).encode()
        + b"\n"
        + traffic.lines[4]
        + b"\n"
    )
    fresh = tmp_path / "fresh"
    res = CliRunner().invoke(main, ["logs", "import", "--data-dir", str(fresh), str(src)])
    assert res.exit_code == 1
    assert "line 4: The line has no a." in res.output
    assert scalar(fresh, "SELECT count(*) FROM decisions") == 0
    for text in (
        b"not json",
        b'{"a": [1, 2], "p": [1.0], "c": {"_multi": [{}]}, '
        b'"EventId": "x", "Timestamp": "2024-01-01T00:00:00Z"}',
    ):
        src.write_bytes(text + b"\n")
        res = CliRunner().invoke(main, ["logs", "import", "--data-dir", str(fresh), str(src)])
        assert res.exit_code == 1 and "line 1" in res.output, res.output
    assert scalar(fresh, "SELECT count(*) FROM decisions") == 0


def test_multislot_lines_parse_as_ccb(traffic: Traffic) -> None:
    srv = traffic.server
    r = httpx.put(
        f"{srv.url}/loops/slots",
        json={
            "policy": CCB,
            "configuration": {"rewardWaitTime": "PT1S", "explorationPercentage": 0.2},
        },
        timeout=TIMEOUT,
    )
    assert r.status_code == 201, r.text
    base = f"{srv.url}/loops/slots{V1}"
    world = NewsWorld(seed=3)
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(30):
            it = world.next()
            body = rank_body(it)
            body["slots"] = [
                {"id": "top", "baselineAction": "politics", "positionFeatures": [{"size": "L"}]},
                {"id": "side", "baselineAction": "sports", "positionFeatures": [{"size": "S"}]},
            ]
            body["eventId"] = f"ms{i}"
            r = http.post("/multislot/rank", json=body)
            assert r.status_code == 201, r.text
            if i % 3:
                r = http.post(
                    f"/multislot/events/ms{i}/reward",
                    json={"reward": [{"slotId": "top", "value": 1.0}]},
                )
                assert r.status_code == 204
        db = srv.data_dir
        poll(
            lambda: (
                scalar(db, "SELECT count(*) FROM decisions WHERE loop='slots' AND outcome IS NULL")
                == 0
            ),
            10,
        )
        r = http.get("/logs/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.content.splitlines()
    assert len(lines) == 30
    ws = vowpalwabbit.Workspace("--ccb_explore_adf --dsjson --quiet")
    try:
        for line in lines:
            obj = json.loads(line)
            assert [s["_id"] for s in obj["c"]["_slots"]] == ["top", "side"]
            assert [o["_id"] for o in obj["_outcomes"]] == ["top", "side"]
            top = obj["_outcomes"][0]
            # 0-based baselines: politics, sports (None when the top slot took sports)
            assert obj["_ba"] == [0, None if top["_a"][0] == 1 else 1]
            rewarded = int(obj["EventId"][2:]) % 3 != 0
            assert top["_o"] == ([1.0] if rewarded else [])
            assert top["_label_cost"] == (-1.0 if rewarded else 0.0)
            assert abs(sum(top["_p"]) - 1) < 1e-6 and len(top["_a"]) == len(top["_p"])
            ex = ws.parse(line.decode())
            ws.finish_example(ex)
    finally:
        ws.finish()


RSS_SCRIPT = """
import resource, sys
from banditloop.cli import main
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RSS", before, after)
"""


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def test_export_memory_stays_flat(traffic: Traffic, tmp_path: Path) -> None:
    """20,000 decisions (a real logged example each, rows put straight into SQLite), exported
    by the CLI and over HTTP: the peak resident memory grows far less than what is written
    (20 MB)."""
    srv = traffic.server
    assert srv.proc is not None
    r = httpx.put(f"{srv.url}/loops/big", json={"policy": POLICY}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    n = 20_000
    with closing(sqlite3.connect(srv.data_dir / "banditloop.db", timeout=30)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(decisions)") if r[1] != "seq"]
        at = {c: i for i, c in enumerate(cols)}
        # a processed and learned row: the trainer of "big" leaves its copies alone
        template = list(
            poll(
                lambda: conn.execute(
                    f"SELECT {', '.join(cols)} FROM decisions WHERE loop='default' AND "
                    "event_id='e1' AND outcome IS NOT NULL AND learned_in IS NOT NULL"
                ).fetchone(),
                60,
                "e1 to be learned",
            )
        )
        template[at["loop"]] = "big"
        # marked 0, which no model need cover: big's trainer, starting whenever it sees the
        # loop, forgets every mark above its (absent) model's, and the export would skip them
        template[at["learned_in"]] = 0

        first = time.time() - n  # recent: retention (90 days) must not take them meanwhile

        def row(k: int) -> list[Any]:
            out = list(template)
            out[at["event_id"]], out[at["ts"]] = f"synthetic-{k}", first + k
            return out

        conn.executemany(
            f"INSERT INTO decisions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (row(k) for k in range(n)),
        )
        conn.commit()

    started = time.perf_counter()
    # the CLI, offline, in a process of its own
    out = tmp_path / "big.json"
    args = ["logs", "export", "--data-dir", str(srv.data_dir), "--loop", "big", "-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    print(f"CLI export took {time.perf_counter() - started:.1f} s")
    before, after = (int(x) for x in proc.stdout.split("RSS")[1].split())
    size = out.stat().st_size
    with out.open("rb") as fh:
        assert sum(1 for _ in fh) == n
    assert size > 20_000_000
    print(f"CLI export: {size / 1e6:.0f} MB written, peak RSS +{(after - before) / 1e3:.1f} MB")
    assert (after - before) * 1024 < 10_000_000  # a list of the lines would be > 20 MB

    # over HTTP: the server's resident peak grows little while 20 MB stream out
    rss_before = _kib(srv.proc.pid, "VmRSS")
    total = 0
    with httpx.stream("GET", f"{srv.url}/loops/big{V1}/logs/export", timeout=60) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_bytes():
            total += len(chunk)
    growth = (_kib(srv.proc.pid, "VmHWM") - rss_before) * 1024
    print(f"HTTP export: {total / 1e6:.0f} MB streamed, peak RSS +{growth / 1e6:.1f} MB")
    assert total == size
    assert growth < 12_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-02-04T16:31:29.9430000Z", "2021-02-04T16:31:29.943000+00:00"),  # Azure's 7
        ("2021-02-04T16:31:29.943+02:00", "2021-02-04T14:31:29.943000+00:00"),
        ("2021-02-04T16:31:29-05:30", "2021-02-04T22:01:29+00:00"),
        ("2021-02-04T16:31:29", "2021-02-04T16:31:29+00:00"),  # no offset: UTC
    ],
)
def test_timestamps_with_fractions_and_offsets(text: str, expected: str) -> None:
    ts = dsjson.parse_timestamp(text)
    assert dt.datetime.fromtimestamp(ts, dt.UTC).isoformat() == expected
