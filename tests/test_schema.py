"""One schema for both engines (store/schema.py): every migration runs on SQLite and on
PostgreSQL, and both end with the same tables, columns and indexes."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
import sqlite_utils

from banditloop.store import SqliteStore, SqlStore
from banditloop.store.events import ACTIVATIONS_OF, REWARDS_OF
from banditloop.store.schema import MIGRATIONS, POSTGRES_BEFORE
from banditloop.store.sqlite import _applies
from banditloop.store.stats import SAMPLE

#: (table, columns in order) and (index, table, columns, predicate)
Schema = tuple[set[tuple[str, tuple[str, ...]]], set[tuple[str, str, tuple[str, ...], str]]]
BOOKKEEPING = {"banditloop_migrations", "_sqlite_migrations", "sqlite_sequence"}


def _predicate(sql: str) -> str:
    """An index's WHERE clause, spelled the same for both engines."""
    _, _, where = sql.partition(" WHERE ")
    return re.sub(r"[()\s]+", " ", where).strip().lower()


def sqlite_schema(path: Path) -> Schema:
    with closing(sqlite3.connect(path)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = {
            (t, tuple(r[1] for r in conn.execute(f"PRAGMA table_info({t})")))
            for t in names
            if t not in BOOKKEEPING
        }
        indexes = {
            (name, table, tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})")), sql)
            for name, table, sql in conn.execute(
                "SELECT name, tbl_name, sql FROM sqlite_master WHERE type='index' AND sql NOT NULL"
            )
        }
    return tables, {(n, t, c, _predicate(sql)) for n, t, c, sql in indexes if t not in BOOKKEEPING}


def postgres_schema(url: str) -> Schema:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
        columns: dict[str, list[str]] = {}
        for table, column in rows:
            columns.setdefault(table, []).append(column)
        indexes = set()
        for name, table, sql in conn.execute(
            "SELECT indexname, tablename, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema()"
        ):
            if name.endswith(("_pkey", "_key")):  # keys: SQLite makes them without SQL
                continue
            cols = re.search(r"USING btree \(([^)]*)\)", sql)
            assert cols is not None, sql
            parts = tuple(c.strip() for c in cols.group(1).split(","))
            indexes.add((name, table, parts, _predicate(sql)))
    tables = {(t, tuple(c)) for t, c in columns.items() if t not in BOOKKEEPING}
    return tables, indexes


def test_every_migration_gives_both_engines_the_same_schema(tmp_path: Path, pg_url: str) -> None:
    from banditloop.store.postgres import PostgresStore

    SqliteStore(tmp_path).close()
    PostgresStore(pg_url).close()
    lite, pg = sqlite_schema(tmp_path / "banditloop.db"), postgres_schema(pg_url)
    assert lite[1] == pg[1], "indexes"
    assert lite[0] == pg[0], "tables and columns"
    assert ("rewards_ts", "rewards", ("loop", "ts"), "") in lite[1]
    assert ("decisions_open", "decisions", ("loop", "close_at"), "learned_in is null") in pg[1]
    assert len(lite[1]) == 15 and len(lite[0]) == 11


def sqlite_store_before(tmp_path: Path, migration: str) -> sqlite_utils.Database:
    """An SQLite store as a version before ``migration`` made it."""
    earlier = sqlite_utils.Migrations("banditloop")
    for m in MIGRATIONS[: [m.name for m in MIGRATIONS].index(migration)]:
        earlier(name=m.name)(_applies(m.sql("sqlite")))
    tmp_path.mkdir(exist_ok=True)
    db = sqlite_utils.Database(tmp_path / "banditloop.db")
    earlier.apply(db)
    return db


def test_an_sqlite_store_of_an_earlier_version_gets_the_time_indexes(tmp_path: Path) -> None:
    sqlite_store_before(tmp_path, "m007_time_indexes").close()
    before = {name for name, *_ in sqlite_schema(tmp_path / "banditloop.db")[1]}
    assert "rewards_ts" not in before
    SqliteStore(tmp_path).close()
    after = {name for name, *_ in sqlite_schema(tmp_path / "banditloop.db")[1]}
    assert after - before == {
        "rewards_ts",
        "activations_ts",
        "decisions_event",
        "decisions_catalogue",
    }


OLD_DECISION = (
    "INSERT INTO decisions (seq, loop, event_id, ts, close_at, deferred, request_hash, example, "
    "action_ids, slots, mode, multislot, response, model_version, learned_in, outcome, holdout) "
    "VALUES (7, 'default', 'e1', 1.0, 2.0, 0, 'h1', '{}', '[]', '[]', 'Online', 0, ?, 'v', "
    "3, '{\"r\": [1.0]}', 1)"
)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_store_with_decisions_takes_reused_event_ids_after_the_migration(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """m008 keeps every decision as it was (SQLite copies the table), and a seq is never
    given twice, not even that of a deleted decision."""
    from banditloop.store.base import Decision

    if engine == "sqlite":
        db = sqlite_store_before(tmp_path, "m008_event_id_reuse")
        db.execute(OLD_DECISION, [b"{}"])
        db.execute(OLD_DECISION.replace("(7, ", "(9, ").replace("'e1'", "'e2'"), [b"{}"])
        db.execute("DELETE FROM decisions WHERE seq=9")
        db.conn.commit()
        db.close()
        store: SqlStore = SqliteStore(tmp_path)
    else:
        import psycopg

        from banditloop.store.postgres import PostgresStore

        url = request.getfixturevalue("pg_url")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE banditloop_migrations (name TEXT PRIMARY KEY, applied REAL)")
            for m in MIGRATIONS[: [m.name for m in MIGRATIONS].index("m008_event_id_reuse")]:
                for statement in m.sql("postgresql"):
                    conn.execute(statement)  # type: ignore[call-overload]
                conn.execute("INSERT INTO banditloop_migrations VALUES (%s, 0)", (m.name,))
            conn.execute(OLD_DECISION.replace("?", "%s"), (b"{}",))
            conn.execute(
                OLD_DECISION.replace("?", "%s").replace("(7, ", "(9, ").replace("'e1'", "'e2'"),
                (b"{}",),
            )
            conn.execute("DELETE FROM decisions WHERE seq=9")
            conn.execute("SELECT setval(pg_get_serial_sequence('decisions', 'seq'), 9)")
        store = PostgresStore(url)
    try:
        old = store.get_decision("default", "e1")
        assert old is not None and old.seq == 7 and old.request_hash == "h1"
        again = Decision("default", "e1", 5.0, 6.0, False, "h2", "{}", [], [], b"{}", "v")
        assert store.append_decision(again).result() is None  # another body: a new decision
        newest = store.get_decision("default", "e1")
        assert newest is not None and newest.request_hash == "h2" and newest.seq == 10
        same = store.append_decision(replace(again, ts=8.0)).result()
        assert same is not None and same.seq == 10  # a retry finds it
        learned = [e.outcome for e in store.iter_events("default", 0, 10)]
        assert learned == [{"r": [1.0]}]
    finally:
        store.close()


NEWER = [m.name for m in MIGRATIONS][[m.name for m in MIGRATIONS].index("m007_time_indexes") + 1 :]


def test_a_postgresql_store_named_the_old_way_migrates_on(pg_url: str) -> None:
    """Stores made before both engines shared the list recorded three other names; their
    migrations are not applied again (ALTER TABLE ... ADD COLUMN would fail)."""
    import psycopg

    from banditloop.store.postgres import PostgresStore

    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM banditloop_migrations")
        # the old names, and what came after m007 (this store has it; such a store would not)
        for old in [*POSTGRES_BEFORE, *NEWER]:
            conn.execute("INSERT INTO banditloop_migrations VALUES (%s, 0)", (old,))
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM banditloop_migrations")}
    assert names == {m.name for m in MIGRATIONS} | set(POSTGRES_BEFORE)
    assert NEWER


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (REWARDS_OF.format("?,?"), "rewards_event"),
        (ACTIVATIONS_OF.format("?,?"), "activations_event"),
        (SAMPLE, "rewards_event"),
    ],
)
def test_sqlite_looks_rewards_up_by_event(tmp_path: Path, sql: str, index: str) -> None:
    """The trainer's join and the dashboard's sample read an event's rewards by its id,
    not by walking the loop's (loop, ts) index."""
    SqliteStore(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / "banditloop.db")) as conn:
        params = (0,) * sql.count("?")
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert f"INDEX {index} (loop=? AND event_id=?)" in plan, plan
