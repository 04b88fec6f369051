"""``banditloop logs import``: a whole log mirror (a tree of .json and .json.gz files),
offline and over HTTP against a running server on both stores, and POST .../logs/import."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from banditloop.cli import main
from banditloop.config import Settings
from banditloop.dsjson import parse_line, timestamp
from banditloop.errors import BadRequest
from banditloop.service import open_service
from banditloop.store.events import EXAMPLE
from conftest import Server, free_port
from helpers import POSTGRES, TIMEOUT, V1, query, scalar

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def azure_line(n: int, ts: float, reward: float | None = 1.0) -> dict[str, Any]:
    """A single-slot DSJSON line as Azure Personalizer's log mirror writes it."""
    multi = [
        {"_tag": a, "i": {"constant": 1, "id": a}, "j": [{"kind": a, "size": len(a)}]}
        for a in ("espresso", "latte", "tea")
    ]
    chosen = 1 + n % 3
    line: dict[str, Any] = {
        "_label_cost": -(reward or 0.0),
        "_label_probability": 0.8,
        "_label_Action": chosen,
        "_labelIndex": chosen - 1,
        "o": [] if reward is None else [{"v": reward, "EventId": f"ev-{n}", "ActionTaken": False}],
        "Timestamp": timestamp(ts),
        "Version": "1",
        "EventId": f"ev-{n}",
        "a": [chosen] + [a for a in (1, 2, 3) if a != chosen],
        "c": {"FromUrl": [{"hour": n % 24, "weather": "sunny"}], "_multi": multi},
        "p": [0.8, 0.1, 0.1],
        "VWState": {"m": "abc/def"},
    }
    if reward is None:  # a deferred event never activated: no reward, not learned
        line["_skipLearn"] = True
        del line["_label_cost"]
    return line


def ccb_line(n: int, ts: float) -> dict[str, Any]:
    multi = [{"i": {"id": a}} for a in ("x", "y")]
    return {
        "Timestamp": timestamp(ts),
        "Version": "1",
        "EventId": f"ccb-{n}",
        "c": {"_multi": multi, "_slots": [{"_id": "s1"}, {"_id": "s2"}]},
        "_outcomes": [
            {"_id": "s1", "_label_cost": 0, "_a": [0, 1], "_p": [0.9, 0.1], "_o": []},
            {"_id": "s2", "_label_cost": 0, "_a": [1], "_p": [1.0], "_o": []},
        ],
        "VWState": {"m": "x"},
        "_ba": [0, 1],
    }


def write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def azure_tree(root: Path) -> list[str]:
    """A log mirror of nested date folders; the names do not sort in time order. The
    event IDs in time order, with one CCB line and a file that is not a log."""
    hour = 3600.0
    write(root / "2024/01/01/10/b.json", [azure_line(n, T0 + n) for n in range(0, 40)])
    write(root / "2024/01/01/10/a.json.gz", [azure_line(n, T0 + hour + n) for n in range(40, 90)])
    late = [azure_line(n, T0 + 2 * hour + n, None if n % 7 == 0 else 0.5) for n in range(90, 120)]
    write(root / "2024/01/01/09/c.json", [*late[:10], ccb_line(1, T0 + 2 * hour), *late[10:]])
    (root / "2024/01/01/09/README.txt").write_text("not a log")
    return [f"ev-{n}" for n in range(120)]


@pytest.fixture(params=["offline", "sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The CLI options of an import: a data directory, or a running server on SQLite
    or on PostgreSQL."""
    data = tmp_path / "data"
    if request.param == "offline":
        yield ["--data-dir", str(data)]
        return
    extra: tuple[str, ...] = ()
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        POSTGRES[data] = pg_url
        extra = (f"BANDITLOOP_STORE={pg_url}",)
    srv = Server(data, free_port(), extra=extra)
    try:
        srv.start()  # a server that does not start is stopped below all the same
        yield ["--url", srv.url]
    finally:
        srv.stop()
        POSTGRES.pop(data, None)


def test_a_log_mirror_imports_in_time_order(tmp_path: Path, target: list[str]) -> None:
    ids = azure_tree(tmp_path / "mirror")
    data = tmp_path / "data"
    args = ["logs", "import", *target, "--no-learn", str(tmp_path / "mirror")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "imported 120 events from 3 of 3 files: 121 lines, 0 skipped duplicates" in res.output
    assert "1 multi-slot (CCB) lines were not imported" in res.output
    assert "a.json.gz: 50 lines, 50 events, 0 duplicates" in res.output
    # stored in time order, file after file, each with its reward at the decision's time
    rows = query(data, "SELECT event_id, mode FROM decisions ORDER BY seq")
    assert [r[0] for r in rows] == ids
    assert {r[1] for r in rows} == {"Imported"}
    rewards = query(data, "SELECT event_id, value FROM rewards ORDER BY event_id")
    expected = {f"ev-{n}": 1.0 if n < 90 else 0.5 for n in range(120) if n < 90 or n % 7}
    assert dict(rewards) == expected
    # again: every event is a duplicate, nothing is added
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "imported 0 events from 3 of 3 files: 121 lines, 120 skipped duplicates" in res.output
    assert scalar(data, "SELECT count(*) FROM decisions") == 120
    assert scalar(data, "SELECT count(*) FROM rewards") == len(expected)


def test_a_file_with_bad_lines_stores_nothing_and_names_them(
    tmp_path: Path, target: list[str]
) -> None:
    good = [azure_line(n, T0 + n) for n in range(5)]
    bad = [azure_line(n, T0 + 100 + n) for n in range(5, 12)]
    bad[2]["p"] = [0.5, 0.9, 0.1]
    del bad[5]["EventId"]
    write(tmp_path / "logs/good.json", good)
    write(tmp_path / "logs/bad.json.gz", bad)
    res = CliRunner().invoke(main, ["logs", "import", *target, str(tmp_path / "logs")])
    assert res.exit_code == 1, res.output
    assert "bad.json.gz line 3: p must sum to 1." in res.output
    assert "bad.json.gz line 6: The line has no EventId." in res.output
    assert "imported 5 events from 1 of 2 files" in res.output
    assert "Error: 1 files not imported" in res.output
    rows = query(tmp_path / "data", "SELECT event_id, mode FROM decisions ORDER BY seq")
    assert rows == [(f"ev-{n}", "Online") for n in range(5)]  # learned: the default


def test_the_import_endpoint_checks_the_whole_upload(server: Server) -> None:
    """POST .../logs/import takes a gzip-compressed body, refuses a bad one whole with
    the JSON error body naming its lines, and answers with what it stored."""
    lines = [azure_line(n, T0 + n) for n in range(30)]
    body = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    bad = body + b"not json\n" + orjson.dumps({**lines[0], "a": [1, 1, 2]}) + b"\n"
    for prefix, query_string in ((V1, ""), ("/personalizer", "?api-version=2022-09-01-preview")):
        r = httpx.post(
            f"{server.url}{prefix}/logs/import{query_string}", content=bad, timeout=TIMEOUT
        )
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "InvalidImportLine"
        assert [d["target"] for d in err["details"]] == ["line 31", "line 32"]
        assert err["message"].startswith("line 31: Not a JSON line")
        assert scalar(server.data_dir, "SELECT count(*) FROM decisions") == 0
    r = httpx.post(
        f"{server.url}/loops/default{V1}/logs/import?learn=false",
        content=gzip.compress(body),
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"lines": 30, "events": 30, "duplicates": 0, "multiSlotLines": 0}
    modes = query(server.data_dir, "SELECT DISTINCT mode FROM decisions")
    assert modes == [("Imported",)]
    assert json.loads(httpx.get(f"{server.url}{V1}/logs/properties", timeout=TIMEOUT).text)[
        "dateRange"
    ]["from"]


def import_bytes(data: Path, lines: list[bytes]) -> None:
    """``Loop.import_lines`` (what ``logs import`` and POST .../logs/import run)."""
    with open_service(Settings(data_dir=data), train=False) as service:
        service.registry.get("default").import_lines(lines)


def test_a_repeated_catalogue_is_stored_as_each_line_alone_would_be(tmp_path: Path) -> None:
    """The import recognizes the catalogue (``c._multi``) of the line before by its
    bytes: each line is still stored as it is when parsed alone, its example being its
    ``c`` as orjson writes it, whatever the order and spelling of its keys."""
    objs = [azure_line(n, T0 + n) for n in range(7)]
    multi = objs[0]["c"]["_multi"]
    objs[2]["c"] = {"_multi": multi, 'k\u2028"é': {"a\\b": "x", "n": 1.5e-7}}  # _multi first
    objs[3]["c"]["FromUrl"] = [{"x": '"_multi":\U0001f600'}, {"y": orjson.dumps(multi).decode()}]
    objs[4]["c"]["_multi"] = [{**multi[0], "j": [{"kind": "ristretto"}]}, *multi[1:]]
    objs[5]["c"]["_multi"] = [{"i": {"id": a}} for a in ("x", "y", "z")]  # other ids
    lines = [orjson.dumps(o) + b"\n" for o in objs]
    lines[6] = lines[6].replace(b'"c":{', b'"c": {')  # a spelling orjson does not write
    import_bytes(tmp_path, lines)
    rows = query(tmp_path, f"SELECT event_id, {EXAMPLE}, action_ids FROM decisions ORDER BY seq")
    for obj, text, (event_id, example, ids) in zip(objs, lines, rows, strict=True):
        alone = parse_line(text, "default").decision
        assert (event_id, example, orjson.loads(ids)) == (
            alone.event_id,
            alone.example,
            alone.action_ids,
        )
        assert example == orjson.dumps(obj["c"]).decode()
    # the catalogue of lines 1 to 3 (recognized by its bytes) is stored once (schema m009)
    held = "SELECT event_id FROM decisions WHERE catalogue IS NOT NULL ORDER BY seq"
    assert [eid for (eid,) in query(tmp_path, held)] == ["ev-1", "ev-2", "ev-3"]
    assert scalar(tmp_path, "SELECT count(*) FROM catalogues") == 1
    assert [orjson.loads(r[2]) for r in rows[4:6]] == [
        ["espresso", "latte", "tea"],
        ["x", "y", "z"],
    ]


def _with_catalogue_elsewhere(kind: str) -> bytes:
    """A line holding the catalogue of the line before byte for byte, but not as its own
    ``c._multi`` (which is refused)."""
    obj = azure_line(1, T0 + 1)
    member = b'"_multi":' + orjson.dumps(obj["c"]["_multi"])
    if kind == "duplicate key":  # JSON's last one counts
        return orjson.dumps(obj).replace(member, member + b',"_multi":[]')
    if kind == "before c":
        obj = {"x": {"_multi": obj["c"]["_multi"]}, **obj}
    elif kind == "in a key":
        obj["c"] = {'k"_multi': obj["c"]["_multi"], **obj["c"]}
    obj["c"]["_multi"] = None if kind != "in a key" else []
    return orjson.dumps(obj)


@pytest.mark.parametrize("kind", ["duplicate key", "before c", "in a key"])
def test_a_catalogue_met_elsewhere_in_a_line_is_not_taken_for_its_own(
    tmp_path: Path, kind: str
) -> None:
    lines = [orjson.dumps(azure_line(0, T0)), _with_catalogue_elsewhere(kind)]
    with pytest.raises(BadRequest) as caught:
        import_bytes(tmp_path, lines)
    assert caught.value.message == (
        "line 2: c._multi must be a non-empty list of actions.; nothing was imported."
    )
    assert scalar(tmp_path, "SELECT count(*) FROM decisions") == 0
