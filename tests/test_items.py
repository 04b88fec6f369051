"""The item catalogue: PUT /items, GET and DELETE /items/{id}, `banditloop items import`,
and migration m003; real SQLite, real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import sqlite_utils
from click.testing import CliRunner
from fastapi.testclient import TestClient

from banditloop.cli import main
from banditloop.items import read_items
from banditloop.store.sqlite import SqliteStore
from conftest import Server
from helpers import TIMEOUT, V1, db_path, query

ITEMS = V1 + "/items"


def test_put_get_delete(client: TestClient) -> None:
    items = [
        {"id": "a", "features": [{"color": "red", "_hidden": 1, "size": None}]},
        {"id": "b", "features": [{"price": 3.5}], "available": False},
        {"id": "c"},
    ]
    r = client.put(ITEMS, json=items)
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 3}
    assert client.get(ITEMS + "/a").json() == {
        "id": "a",
        "features": [{"color": "red"}],  # cleaned as Rank cleans features
        "available": True,
    }
    assert client.get(ITEMS + "/b").json()["available"] is False
    assert client.get(ITEMS + "/c").json()["features"] == []
    # Upsert: replaced, not merged.
    client.put(ITEMS, json=[{"id": "a", "features": [{"shape": "round"}]}])
    assert client.get(ITEMS + "/a").json()["features"] == [{"shape": "round"}]
    assert client.delete(ITEMS + "/a").status_code == 204
    r = client.get(ITEMS + "/a")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ResourceNotFound"
    assert client.delete(ITEMS + "/a").status_code == 404


def test_invalid_items_are_400_and_nothing_is_stored(client: TestClient) -> None:
    for body in (
        [{"id": "ok", "features": [{"k": 1}]}, {"id": "bad", "features": [{"arr": ["x"]}]}],
        [{"id": "", "features": [{"k": 1}]}],
        [{"features": [{"k": 1}]}],
        {"id": "not-a-list"},
        [{"id": "x", "features": [1]}],
    ):
        r = client.put(ITEMS, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "BadRequest"
        assert r.headers["x-ms-error-code"] == "BadRequest"
    assert client.get(ITEMS + "/ok").status_code == 404


def test_items_belong_to_their_loop(client: TestClient, tmp_path: Path) -> None:
    assert client.put("/loops/shop", json={}).status_code == 201
    client.put("/loops/shop" + ITEMS, json=[{"id": "a", "features": [{"k": 1}]}])
    assert client.get("/loops/shop" + ITEMS + "/a").status_code == 200
    assert client.get(ITEMS + "/a").status_code == 404
    assert client.delete("/loops/shop").status_code == 204
    assert client.put("/loops/shop", json={}).status_code == 201
    assert client.get("/loops/shop" + ITEMS + "/a").status_code == 404


def test_items_need_an_admin_key(tmp_path: Path) -> None:
    from banditloop.app import create_app
    from banditloop.config import Settings

    settings = Settings(data_dir=tmp_path / "d", admin_keys=["adm"], client_keys=["cli"])
    with TestClient(create_app(settings)) as c:
        for method, path in [("PUT", ITEMS), ("GET", ITEMS + "/a"), ("GET", V1 + "/counters")]:
            body = [] if method == "PUT" else None
            assert c.request(method, path, json=body).status_code == 401
            r = c.request(method, path, json=body, headers={"Ocp-Apim-Subscription-Key": "cli"})
            assert r.status_code == 403


def test_read_items_csv_and_json_lines() -> None:
    csv_lines = [
        "id,category,price,available,features\n",
        'a,books,12.5,true,"[{""tag"": ""new""}]"\n',
        "b,games,,0,\n",
    ]
    a, b = read_items(csv_lines, "csv")
    assert a.to_json() == {
        "id": "a",
        "features": [{"tag": "new"}, {"category": "books", "price": 12.5}],
        "available": True,
    }
    assert b.to_json() == {"id": "b", "features": [{"category": "games"}], "available": False}
    jsonl = ['{"id": "x", "features": [{"k": 1}]}\n', "\n", '{"id": "y", "available": false}\n']
    assert [i.to_json() for i in read_items(jsonl, "jsonl")] == [
        {"id": "x", "features": [{"k": 1}], "available": True},
        {"id": "y", "features": [], "available": False},
    ]


def test_cli_import_on_a_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv_file = tmp_path / "items.csv"
    csv_file.write_text("id,category\nbook1,books\nbook2,books\n")
    runner = CliRunner()
    r = runner.invoke(main, ["items", "import", "--data-dir", str(data), str(csv_file)])
    assert r.exit_code == 0, r.output
    assert "imported 2 items" in r.output
    rows = query(data, "SELECT id, features FROM items ORDER BY id")
    assert rows == [("book1", '[{"category":"books"}]'), ("book2", '[{"category":"books"}]')]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\nnot json\n')
    r = runner.invoke(main, ["items", "import", "--data-dir", str(data), str(bad)])
    assert r.exit_code == 1
    assert "line 2" in r.output


def test_cli_import_against_a_server(server: Server, tmp_path: Path) -> None:
    import httpx

    assert httpx.put(server.url + "/loops/shop", json={}, timeout=TIMEOUT).status_code == 201
    lines = tmp_path / "items.jsonl"
    lines.write_text(
        "\n".join(json.dumps({"id": f"i{n}", "features": [{"n": n}]}) for n in range(5))
    )
    args = ["items", "import", "--url", server.url, "--loop", "shop", "--batch", "2", str(lines)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "imported 5 items" in r.output
    got = httpx.get(server.url + "/loops/shop" + ITEMS + "/i3", timeout=TIMEOUT).json()
    assert got == {"id": "i3", "features": [{"n": 3}], "available": True}


def test_migration_m003_adds_the_source_column_and_items(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.close()
    db = sqlite_utils.Database(db_path(tmp_path))
    assert "source" in db["decisions"].columns_dict
    assert set(db["items"].columns_dict) == {"loop", "id", "features", "available", "updated"}
    applied = [r["name"] for r in db["_sqlite_migrations"].rows]
    assert "m003_items_and_sources" in applied
    SqliteStore(tmp_path).close()  # applying again is a no-op
