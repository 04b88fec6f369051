"""The store contract, run on SQLite and on PostgreSQL (``make_store`` is parametrized).

Each test drives a real database through the store's interface and reads the
result back the way the service does.  PostgreSQL-only behaviour (trainer
election, fencing, concurrent migration) is at the end.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from banditloop.config import LoopConfig
from banditloop.errors import Overloaded
from banditloop.featurize import context_has
from banditloop.items import Catalogue
from banditloop.live import LivePolicy
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.recommender import FallbackConfig
from banditloop.store import SqliteStore, SqlStore
from banditloop.store.base import Decision, Item, JobRecord, LoopRecord, ModelRecord, Outcome
from banditloop.trainer import Trainer
from helpers import poll
from test_trainer import LOOP, T0, WAIT, config, decision, drain, log, reference_blob, weights


def model(blob: bytes = b"m", loop: str = LOOP) -> ModelRecord:
    return ModelRecord(loop, 0, time.time(), DEFAULT_POLICY, 0, T0, blob=blob)


def events(store: SqlStore) -> dict[str, tuple[int, int]]:
    """event id -> (rewards, activations) of every logged decision."""
    return {
        ev.decision.event_id: (len(ev.rewards), len(ev.activations))
        for ev in store.iter_events(LOOP, 0, 1e12, processed_only=False)
    }


def test_a_decision_is_logged_once_and_a_retry_gets_it_back(store: SqlStore) -> None:
    d = decision(1)
    assert store.append_decision(d).result() is None
    again = store.append_decision(d).result()
    assert again is not None
    assert (again.event_id, again.response, again.slots) == (d.event_id, d.response, d.slots)
    assert again.example == d.example and again.action_ids == d.action_ids
    assert store.get_decision(LOOP, d.event_id) == again
    assert len(events(store)) == 1


def test_rewards_activations_and_early_close(store: SqlStore) -> None:
    a, b = decision(1), decision(2, deferred=True)
    log(store, [a, b])
    store.append_rewards(LOOP, a.event_id, [(None, 1.0)], T0 + 2, True).result()
    store.append_rewards(LOOP, b.event_id, [(None, 0.5)], T0 + 2, True).result()
    assert [e.event_id for e in store.closed_events(LOOP, T0 + 3, 10)] == [a.event_id]
    store.append_activation(LOOP, b.event_id, T0 + 4, True).result()
    closed = store.closed_events(LOOP, T0 + 5, 10)
    assert [(e.event_id, e.rewards, e.activations) for e in closed] == [
        (a.event_id, [(T0 + 2, 1.0, None)], []),
        (b.event_id, [(T0 + 2, 0.5, None)], [T0 + 4]),
    ]
    assert events(store) == {a.event_id: (1, 0), b.event_id: (1, 1)}


def test_marks_outcomes_and_forgetting_unsaved(store: SqlStore) -> None:
    ds = [decision(i) for i in range(4)]
    log(store, ds)
    assert store.lead(LOOP)  # only the loop's trainer may mark (PostgreSQL checks)
    closed = store.closed_events(LOOP, T0 + WAIT, 10)
    store.mark_learned(LOOP, [Outcome(e.seq, [0.0], [0.0]) for e in closed[:2]], 1).result()
    store.mark_learned(LOOP, [Outcome(e.seq, [1.0], None) for e in closed[2:]], 2).result()
    assert store.count_learned(LOOP) == 4
    assert store.closed_events(LOOP, T0 + WAIT, 10) == []
    outcomes = [ev.outcome for ev in store.iter_events(LOOP, 0, 1e12)]
    assert outcomes == [{"r": [0.0], "t": [0.0]}] * 2 + [{"r": [1.0], "t": None}] * 2
    assert store.forget_unsaved(LOOP, 1).result() == 2
    assert store.count_learned(LOOP) == 2


def test_models_are_numbered_kept_and_compared_before_saving(store: SqlStore) -> None:
    assert store.lead(LOOP)
    saved = [store.save_model(model(bytes([i])), covers=i).result() for i in range(1, 6)]
    assert [m.number for m in saved if m] == [1, 2, 3, 4, 5]
    latest = store.latest_model(LOOP)
    assert latest is not None and (latest.number, latest.blob, latest.covers) == (5, b"\x05", 5)
    assert [m.number for m in store.older_models(LOOP, 5)] == [4, 3]  # keep=3
    assert store.save_model(model(), covers=6, after=4).result() is None, "5 is newer than 4"
    assert store.model_number(LOOP) == 5
    store.delete_models(LOOP, [5]).result()
    assert store.model_number(LOOP) == 4
    # a model from outside the trainer covers every mark made so far
    log(store, [decision(1)])
    (ev,) = store.closed_events(LOOP, T0 + WAIT, 10)
    store.mark_learned(LOOP, [Outcome(ev.seq, [0.0], [0.0])], 9).result()
    outside = store.save_model(model(), covers=None).result()
    assert outside is not None and outside.covers == 9


def test_loops_and_deleting_a_loop_deletes_its_data(store: SqlStore) -> None:
    rec = LoopRecord("other", {"a": 1}, "other", DEFAULT_POLICY, T0, {"client": ["h"]})
    store.put_loop(rec).result()
    store.put_loop(LoopRecord(LOOP, {}, LOOP, DEFAULT_POLICY, T0)).result()
    assert store.get_loop("other") == rec
    assert [r.name for r in store.list_loops()] == [LOOP, "other"]
    store.put_loop(LoopRecord("other", {"a": 2}, "p", "--cb_explore_adf", T0)).result()
    changed = store.get_loop("other")
    assert changed is not None and changed.config == {"a": 2} and changed.policy_name == "p"
    log(store, [decision(1)])
    store.save_model(model(), covers=None).result()
    store.delete_loop(LOOP).result()
    assert store.get_loop(LOOP) is None and store.latest_model(LOOP) is None
    assert events(store) == {}


def test_deleting_logs_by_event_time_feature_and_all(store: SqlStore) -> None:
    ds = [decision(i, ts=T0 + i) for i in range(8)]  # users u0..u3
    log(store, ds)
    for d in ds:
        store.append_rewards(LOOP, d.event_id, [(None, 1.0)], d.ts + 1, False).result()
    assert store.delete_logs(LOOP, event_ids=["evt-0"]).result() == 1
    assert store.delete_logs(LOOP, before=T0 + 3).result() == 2
    u3 = store.find_events(LOOP, lambda example: context_has(example, ["user"], "u3"))
    assert u3 == ["evt-3", "evt-7"]
    assert store.delete_logs(LOOP, event_ids=u3).result() == 2
    assert store.delete_logs(LOOP, event_ids=[]).result() == 0
    assert sorted(events(store)) == ["evt-4", "evt-5", "evt-6"]
    assert all(n == (1, 0) for n in events(store).values())
    rng = store.log_range(LOOP)
    assert (rng.first, rng.last) == (T0 + 4, T0 + 6)
    assert store.delete_logs(LOOP).result() == 3
    assert events(store) == {}


def test_an_imported_catalogue_is_stored_once_and_read_back_whole(store: SqlStore) -> None:
    """A catalogue shared by imported decisions is one row (schema m009); every read
    gets each example back whole, its offsets counted in characters, not bytes."""
    shared = '[{"i":{"id":"é😀"}},{"i":{"id":"b"}}]'

    def imported(i: int) -> Decision:
        example = f'{{"user":"ü😀{i % 2}","_multi":{shared},"x":{i}}}'
        return replace(decision(i), example=example, catalogue=shared)

    ds = [imported(i) for i in range(4)]
    assert store.import_decisions([(d, [(None, 1.0)]) for d in ds[:3]]).result() == 3
    assert store.import_decisions([(ds[3], [])]).result() == 1  # another batch: the same row

    def count(sql: str) -> int:
        return int(store.reader().execute(sql).fetchone()[0])

    assert count("SELECT count(*) FROM catalogues") == 1
    assert count("SELECT count(*) FROM decisions WHERE catalogue IS NOT NULL") == 4
    assert (
        count("SELECT max(length(example)) FROM decisions") < len(ds[0].example) - len(shared) + 3
    )
    whole = {d.event_id: d.example for d in ds}
    assert {e.event_id: e.example for e in store.closed_events(LOOP, T0 + WAIT, 10)} == whole
    assert {
        ev.decision.event_id: ev.decision.example for ev in store.iter_events(LOOP, 0, 1e12, False)
    } == whole
    got = store.get_decision(LOOP, "evt-1")
    assert got is not None and got.example == whole["evt-1"]
    odd = store.find_events(LOOP, lambda example: example["user"].endswith("1"))
    assert (odd, store.find_events(LOOP, lambda ex: len(ex["_multi"]) != 2)) == (
        ["evt-1", "evt-3"],
        [],
    )
    assert store.delete_logs(LOOP, event_ids=odd).result() == 2
    assert count("SELECT count(*) FROM catalogues") == 1  # still held by evt-0 and evt-2
    assert store.delete_logs(LOOP).result() == 2
    assert count("SELECT count(*) FROM catalogues") == 0


def test_reschedule_moves_open_events_to_a_new_wait(store: SqlStore) -> None:
    a, b = decision(1), decision(2)
    log(store, [a, b])
    store.append_rewards(LOOP, b.event_id, [(None, 1.0)], T0 + 5, True).result()  # closed early
    store.reschedule(LOOP, WAIT, 10.0).result()
    assert [e.event_id for e in store.closed_events(LOOP, T0 + 10, 10)] == ["evt-2", "evt-1"]
    assert [e.event_id for e in store.closed_events(LOOP, T0 + 5, 10)] == ["evt-2"]


def test_jobs(store: SqlStore) -> None:
    job = JobRecord("j1", T0, "Running", {"name": "x"})
    assert store.put_job(LOOP, "evaluation", job).result()
    assert not store.put_job(LOOP, "evaluation", job).result(), "the id is taken"
    done = JobRecord("j1", T0, "Succeeded", {"name": "x"}, {"r": 1})
    assert store.put_job(LOOP, "evaluation", done).result()
    assert store.get_jobs(LOOP, "evaluation") == [done]
    assert store.get_jobs(LOOP, "evaluation", "nope") == []
    assert store.delete_job(LOOP, "evaluation", "j1").result() == 1


def test_catalogue_and_top_rewarded(store: SqlStore) -> None:
    cat = Catalogue(store, LOOP)
    items = [Item(f"i{n}", [{"n": n}], available=n % 7 != 0) for n in range(1200)]
    cat.put(items).result()
    found = cat.get_many([f"i{n}" for n in range(1200)])  # more ids than one IN list
    assert len(found) == 1200 and found["i7"].available is False
    assert cat.count() == 1200 and cat.get("i3") == items[3]
    assert all(it.id != "i0" for it in cat.first(50))
    assert cat.delete("i3").result() == 1 and cat.get("i3") is None
    # the shown item and its reward are read inside the logged JSON, per dialect
    now = time.time()
    ds = [decision(i, ts=now) for i in range(6)]  # shown: a, b, c, a, b, c
    log(store, ds)
    closed = store.closed_events(LOOP, now + WAIT, 10)
    assert store.lead(LOOP)
    rewards = {"evt-0": 1.0, "evt-3": 1.0, "evt-1": 0.5}
    outcomes = [Outcome(e.seq, [rewards.get(e.event_id, 0.0)], [0.0]) for e in closed]
    store.mark_learned(LOOP, outcomes, 1).result()
    fb = FallbackConfig()
    since = now - fb.windowHours * 3600
    assert store.top_rewarded(LOOP, since, fb.by, fb.minEvents, 3) == ["a", "b", "c"]
    assert store.top_rewarded(LOOP, since, "total", 3, 3) == []  # each shown twice
    assert store.top_rewarded(LOOP, now + 1, fb.by, fb.minEvents, 3) == []


def test_decision_source_and_holdout_are_kept(store: SqlStore) -> None:
    from dataclasses import replace

    log(store, [replace(decision(1), source="fallback", holdout=True)])
    (ev,) = store.iter_events(LOOP, 0, 1e12, processed_only=False)
    assert ev.decision.holdout
    row = store.reader().execute("SELECT source FROM decisions").fetchone()
    assert row[0] == "fallback"


# -- SQLite: several processes write to one file ------------------------------------------


def test_a_write_takes_the_lock_within_milliseconds_of_its_release(tmp_path: Path) -> None:
    """Another process's write lock is waited for in short steps: SQLite's own busy
    handler would be sleeping 100 ms at a time after a 0.3 s wait."""
    store = SqliteStore(tmp_path, synchronous="NORMAL", busy_timeout=5)
    other = sqlite3.connect(store.path, isolation_level=None)
    delays = []
    try:
        for _ in range(5):
            other.execute("BEGIN IMMEDIATE")
            written = store.submit(lambda conn: None)
            time.sleep(0.3)
            released = time.perf_counter()
            other.execute("COMMIT")
            written.result(5)
            delays.append(time.perf_counter() - released)
    finally:
        other.close()
        store.close()
    assert sorted(delays)[2] < 0.05, delays  # SQLite's handler: 100 ms steps


def test_writes_queued_while_another_process_writes_share_one_commit(tmp_path: Path) -> None:
    """Group commit: the writer takes the lock, then every write queued by then, so
    writes that arrive while another process holds the lock wait for one COMMIT."""
    store = SqliteStore(tmp_path, synchronous="NORMAL", busy_timeout=5)
    other = sqlite3.connect(store.path, isolation_level=None)
    statements: list[str] = []
    store._writer_conn.set_trace_callback(statements.append)
    try:
        other.execute("BEGIN IMMEDIATE")
        first = store.submit(lambda conn: 1)
        poll(lambda: "BEGIN IMMEDIATE" in statements)  # the writer waits for the lock
        later = [store.submit(lambda conn, n=n: n) for n in (2, 3)]
        other.execute("COMMIT")
        assert [f.result(5) for f in (first, *later)] == [1, 2, 3]
    finally:
        other.close()
        store.close()
    assert statements.count("COMMIT") == 1, statements


# -- PostgreSQL: several processes, one trainer per loop ---------------------------------


def trainer(store: SqlStore, cfg: LoopConfig) -> Trainer:
    """A trainer as a Loop makes it, on a live policy of its own."""
    return Trainer(
        LOOP,
        store,
        LivePolicy(Policy(DEFAULT_POLICY)),
        cfg,
        latest=store.latest_model(LOOP),
        born=T0,
        batch=4,
    )


def backend_pid(store: SqlStore) -> int:
    return int(
        store.submit(lambda c: c.execute("SELECT pg_backend_pid()").fetchall()[0][0]).result()
    )


def test_one_trainer_is_elected_and_a_dead_one_is_replaced_exactly_once(pg_url: str) -> None:
    from banditloop.store.postgres import PostgresStore, connect

    cfg = config()
    ds = [decision(i, ts=T0 + i) for i in range(12)]
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        log(first, ds)
        t1, t2 = trainer(first, cfg), trainer(second, cfg)
        assert drain(t1, T0 + 5 + WAIT) == 6 and t1.active
        assert t2.step(T0 + 5 + WAIT) == 0 and not t2.active, "the lock is taken"
        assert t1.save() is not None  # covers the first 6
        assert drain(t1, T0 + 9 + WAIT) == 4  # marked, never saved: to be learned again
        with connect(pg_url) as admin:  # the first trainer's connection dies
            admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid(first),))
        poll(lambda: second.lead(LOOP), timeout=10)  # once the dead session is gone
        assert drain(t2, T0 + 20 + WAIT) == 6, "takes over: 4 unsaved + 2 new events"
        assert t2.active and t2.save() is not None
        # the old trainer learns more events, but cannot mark them: it steps down
        more = [decision(i, ts=T0 + i) for i in range(12, 14)]
        log(second, more)
        with pytest.raises(Overloaded):  # its connection died with its lock (503)
            t1.step(T0 + 30 + WAIT)
        assert t1.step(T0 + 30 + WAIT) == 0 and not t1.active
        assert drain(t2, T0 + 30 + WAIT) == 2 and t2.save() is not None
        latest = second.latest_model(LOOP)
        assert latest is not None and latest.events_learned == 14
        assert weights(latest.blob) == weights(reference_blob(ds + more, {}, cfg))
    finally:
        first.close()
        second.close()


def test_a_write_of_a_trainer_that_lost_the_lead_is_refused(pg_url: str) -> None:
    from banditloop.errors import NotLeader
    from banditloop.store.postgres import PostgresStore, connect

    store = PostgresStore(pg_url)
    try:
        log(store, [decision(1)])
        assert store.lead(LOOP)
        (ev,) = store.closed_events(LOOP, T0 + WAIT, 10)
        with connect(pg_url) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid(store),))
        with pytest.raises(Overloaded):  # the batch fails (503): the connection died
            store.mark_learned(LOOP, [Outcome(ev.seq, [0.0], [0.0])], 1).result()
        with pytest.raises(NotLeader):  # reconnected, but without the lock
            store.mark_learned(LOOP, [Outcome(ev.seq, [0.0], [0.0])], 1).result()
        assert store.count_learned(LOOP) == 0
        assert store.lead(LOOP), "nobody else holds it: taken again"
    finally:
        store.close()


def test_nodes_starting_together_migrate_once(pg_url: str) -> None:
    from banditloop.store.postgres import PostgresStore

    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(pg_url))
        except BaseException as ex:
            errors.append(ex)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == 4
        from banditloop.store.schema import MIGRATIONS

        rows = stores[0].reader().execute("SELECT name FROM banditloop_migrations").fetchall()
        assert sorted(r[0] for r in rows) == [m.name for m in MIGRATIONS]
    finally:
        for s in stores:
            s.close()


def test_store_url_selects_postgresql(pg_url: str) -> None:
    from banditloop.config import Settings
    from banditloop.store import open_store
    from banditloop.store.postgres import PostgresStore

    store = open_store(Settings(store=pg_url))
    try:
        assert isinstance(store, PostgresStore) and store.size_bytes() > 0
    finally:
        store.close()
