"""Ranks of the same actions store their catalogue once (schema m009), on both engines:
a catalogue met again among a loop's latest is a row of its own, one of a kind stays in
its decision's row, and every read gets each example back whole. Through ``Loop``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from banditloop import Loop, RankInput, Settings
from banditloop.featurize import dumps
from banditloop.loop import body_hash
from banditloop.ranking import SlotInput, plan, plan_multislot
from banditloop.store import SqlStore
from banditloop.store.events import catalogue_of
from test_event_reuse import ACTIONS, LATER, make_loop

OTHER = [("film", [{"topic": "film"}]), ("food", [{"topic": "food"}])]


def rank_with(loop: Loop, event_id: str, user: str, actions: list[Any]) -> bytes:
    context = [{"user": user}]
    ident = body_hash({"c": context, "a": actions})
    return asyncio.run(loop.rank(RankInput(context, actions, None, event_id, False, ident)))


def test_catalogue_of_cuts_the_actions_out_of_both_kinds_of_example() -> None:
    single = plan([{"user": "u"}], ACTIONS, None).example
    assert catalogue_of(single) == dumps(orjson.loads(single)["_multi"])
    multi = plan_multislot(
        [{"user": "u"}], ACTIONS, [SlotInput("top", [{"size": "big"}], None, "news")]
    )
    example = multi.with_slots([s.vw_object() for s in multi.slots])
    assert catalogue_of(example) == dumps(orjson.loads(example)["_multi"])
    assert catalogue_of('{"FromUrl":[]}') is None


def test_ranks_of_the_same_actions_share_one_catalogue(store: SqlStore, settings: Settings) -> None:
    loop = make_loop(store, settings)

    def count(sql: str) -> int:
        return int(store.reader().execute(sql).fetchone()[0])

    def examples() -> dict[str, str]:
        return {
            ev.decision.event_id: ev.decision.example
            for ev in store.iter_events("lib", 0, time.time() + LATER, processed_only=False)
        }

    made = {}
    for i, actions in enumerate([ACTIONS, ACTIONS, OTHER, ACTIONS]):
        eid = f"e{i}"
        assert orjson.loads(rank_with(loop, eid, f"u{i}", actions))["eventId"] == eid
        made[eid] = plan([{"user": f"u{i}"}], actions, None).example
    shared = dict(
        store.reader().execute("SELECT event_id, catalogue IS NOT NULL FROM decisions").fetchall()
    )
    assert shared == {"e0": 0, "e1": 1, "e2": 0, "e3": 1}  # the first of each: in its row
    assert count("SELECT count(*) FROM catalogues") == 1
    assert examples() == made
    closed = store.closed_events("lib", time.time() + LATER, 10)
    assert {e.event_id: e.example for e in closed} == made

    # retention removes the catalogue no decision holds: the loop still remembers it,
    # and the next Rank of it stores it again rather than pointing at the deleted row
    assert store.delete_logs("lib").result() == 4
    assert count("SELECT count(*) FROM catalogues") == 0
    rank_with(loop, "e4", "u4", ACTIONS)
    assert count("SELECT count(*) FROM catalogues") == 1
    assert examples() == {"e4": plan([{"user": "u4"}], ACTIONS, None).example}
