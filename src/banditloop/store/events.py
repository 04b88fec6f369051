"""Decisions, rewards and activations: logged by Rank, Reward and Activate, joined for
the trainer, read back for export and evaluation, deleted by retention and forgetting."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import orjson

from .base import ClosedEvent, Decision, LoggedEvent, LogRange, Outcome, SlotChoice
from .db import Conn, Queries, Reader, chunks, marks
from .models import newest

DECISION_COLS = (
    "loop, event_id, ts, close_at, deferred, request_hash, example, action_ids, slots, mode, "
    "multislot, response, model_version"
)
#: A decision's example as Rank or import gave it: one cut at ``catalogue_at`` gets its
#: catalogue back (schema m009), any other is whole.
EXAMPLE = (
    "coalesce(substr(decisions.example, 1, decisions.catalogue_at) || (SELECT k.body FROM "
    "catalogues k WHERE k.id=decisions.catalogue) || "
    "substr(decisions.example, decisions.catalogue_at + 1), decisions.example)"
)
#: DECISION_COLS as read: the example whole.
DECISION_READ = DECISION_COLS.replace(" example,", f" {EXAMPLE},")

#: Rewards and activations of some events (``+ts``: sort after looking them up by id;
#: SQLite would otherwise walk the loop's whole (loop, ts) index to save the sort).
REWARDS_OF = (
    "SELECT event_id, decision, ts, value, slot FROM rewards WHERE loop=? AND event_id IN ({}) "
    "ORDER BY +ts, seq"
)
ACTIVATIONS_OF = (
    "SELECT event_id, decision, ts FROM activations WHERE loop=? AND event_id IN ({}) ORDER BY +ts"
)
#: The decision a reward or activation arriving now is for: the newest of its event ID.
NEWEST = "SELECT max(seq) FROM decisions WHERE loop=? AND event_id=?"


INSERT_DECISION = (
    f"INSERT INTO decisions ({DECISION_COLS}, source, holdout, catalogue, catalogue_at) VALUES "
    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (loop, event_id, request_hash) DO NOTHING"
)


MULTI = '"_multi":'  # where a checked example holds its catalogue


def decision_row(
    d: Decision, action_ids: str | None = None, catalogue: int | None = None
) -> tuple[Any, ...]:
    """A decision's values for INSERT_DECISION (``action_ids``: its JSON, if known;
    ``catalogue``: the row of its ``d.catalogue``, cut out of its example)."""
    example, at = d.example, -1
    if catalogue is not None and d.catalogue:
        # the one ``_multi`` key of a checked example (a shorter needle finds it faster);
        # whatever it finds, the catalogue goes back where it was cut from
        at = example.find(MULTI) + len(MULTI)
        if at < len(MULTI) or not example.startswith(d.catalogue, at):
            at = -1
        else:
            example = example[:at] + example[at + len(d.catalogue) :]
    return (
        d.loop,
        d.event_id,
        d.ts,
        d.close_at,
        int(d.deferred),
        d.request_hash,
        example,
        orjson.dumps(d.action_ids).decode() if action_ids is None else action_ids,
        orjson.dumps([s.to_json() for s in d.slots]).decode(),
        d.mode,
        int(d.multislot),
        d.response,
        d.model_version,
        d.source,
        int(d.holdout),
        catalogue if at >= 0 else None,
        at if at >= 0 else None,
    )


def catalogue_of(example: str) -> str | None:
    """The catalogue (``_multi``) of an example as Rank writes it: the last key, or the
    last before ``_slots``. Any cut is lossless: decision_row checks where it is."""
    start = example.find(MULTI) + len(MULTI)
    if start < len(MULTI):
        return None
    end = example.rfind(',"_slots":', start)
    return example[start : end if end > 0 else -1]


def store_catalogue(conn: Conn, loop: str, body: str, lock: str = "") -> int:
    """The row of a loop's catalogue, stored now if it was not. ``lock``: what keeps a
    concurrent deletion of an orphan from taking it before this transaction ends."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    find = f"SELECT id FROM catalogues WHERE loop=? AND digest=?{lock}"
    found = conn.execute(find, (loop, digest)).fetchone()
    if found is None:
        conn.execute(
            "INSERT INTO catalogues (loop, digest, body) VALUES (?,?,?) "
            "ON CONFLICT (loop, digest) DO NOTHING",
            (loop, digest, body),
        )
        found = conn.execute(find, (loop, digest)).fetchone()
    return int(found[0])


def decision(row: Sequence[Any]) -> Decision:
    """A Decision from ``seq, DECISION_READ``."""
    seq, loop, event_id, ts, close_at, deferred, rhash, example, ids, slots = row[:10]
    mode, multislot, response, version = row[10:14]
    return Decision(
        loop=loop,
        event_id=event_id,
        ts=ts,
        close_at=close_at,
        deferred=bool(deferred),
        request_hash=rhash,
        example=example,
        action_ids=orjson.loads(ids),
        slots=[SlotChoice.from_json(d) for d in orjson.loads(slots)],
        response=bytes(response),
        model_version=version,
        mode=mode,
        multislot=bool(multislot),
        seq=seq,
    )


def outcome_json(o: Outcome) -> str:
    """An outcome as stored; ``e`` only for an event the trainer could not learn."""
    out: dict[str, Any] = {"r": o.rewards, "t": o.trained}
    if o.error:
        out["e"] = o.error
    return orjson.dumps(out).decode()


def joined(
    conn: Reader, loop: str, decisions: Sequence[tuple[int, str]]
) -> tuple[dict[int, list[tuple[float, float, str | None]]], dict[int, list[float]]]:
    """Rewards (ts, value, slot) and activation times of these decisions (seq, event id),
    by seq. Each has its own: a reward is for the decision it named when it arrived (the
    newest of its event ID), or for all of them if it came before any."""
    seqs: dict[str, list[int]] = {}
    for seq, eid in decisions:
        seqs.setdefault(eid, []).append(seq)

    def owners(eid: str, named: int | None) -> list[int]:
        return [s for s in seqs.get(eid, ()) if named is None or named == s]

    rewards: dict[int, list[tuple[float, float, str | None]]] = {}
    activations: dict[int, list[float]] = {}
    for ids in chunks(list(seqs)):
        for eid, named, ts, value, slot in conn.execute(
            REWARDS_OF.format(marks(len(ids))), (loop, *ids)
        ):
            for seq in owners(eid, named):
                rewards.setdefault(seq, []).append((ts, value, slot))
        for eid, named, ts in conn.execute(ACTIVATIONS_OF.format(marks(len(ids))), (loop, *ids)):
            for seq in owners(eid, named):
                activations.setdefault(seq, []).append(ts)
    return rewards, activations


def read_events(
    conn: Reader,
    loop: str,
    start: float,
    end: float,
    processed_only: bool = True,
    page: int = 1000,
) -> Iterator[LoggedEvent]:
    """Decisions ranked in [start, end), in rank order, with rewards and activations;
    read page by page so that memory stays flat."""
    after = (start, -1)
    while True:
        rows = conn.execute(
            f"""SELECT seq, {DECISION_READ}, outcome, holdout FROM decisions
               WHERE loop=? AND (ts>? OR (ts=? AND seq>?)) AND ts<?
               {"AND outcome IS NOT NULL" if processed_only else ""}
               ORDER BY ts, seq LIMIT ?""",
            (loop, after[0], after[0], after[1], end, page),
        ).fetchall()
        if not rows:
            return
        rewards, activations = joined(conn, loop, [(r[0], r[2]) for r in rows])
        for row in rows:
            d = decision(row)
            if row[15]:
                d = replace(d, holdout=True)
            yield LoggedEvent(
                decision=d,
                outcome=orjson.loads(row[14]) if row[14] else None,
                rewards=rewards.get(d.seq, []),
                activations=activations.get(d.seq, []),
            )
        after = (rows[-1][3], rows[-1][0])


class Events(Queries):
    """The event log of every loop."""

    #: The shown item and its reward (``item``, ``r``), read inside the logged JSON: the
    #: one expression each engine writes in its own SQL.
    shown_and_reward = ""
    #: SELECT's suffix that keeps a found catalogue row from a concurrent deletion
    key_share = ""

    def _catalogue(self, conn: Conn, loop: str, body: str) -> int:
        """store_catalogue, once per catalogue and transaction (the writer's memo)."""
        found: int | None = self.memo.get((loop, body))
        if found is None:
            found = self.memo[(loop, body)] = store_catalogue(conn, loop, body, self.key_share)
        return found

    def append_decision(self, d: Decision, refuse_reuse: bool = False) -> Future[Decision | None]:
        """Log a decision, unless one of its event ID has the same request hash (a retry):
        then the future holds that one. With ``refuse_reuse`` any decision of its event ID
        stops it (that with the same hash first): the caller refuses a different body.
        Its ``catalogue`` is stored once per loop (schema m009)."""

        def job(conn: Conn) -> Decision | None:
            if refuse_reuse:
                found = conn.execute(
                    f"SELECT seq, {DECISION_READ} FROM decisions WHERE loop=? AND event_id=? "
                    "ORDER BY request_hash=? DESC, seq LIMIT 1",
                    (d.loop, d.event_id, d.request_hash),
                ).fetchone()
                if found is not None:
                    return decision(found)
            catalogue = self._catalogue(conn, d.loop, d.catalogue) if d.catalogue else None
            row = decision_row(d, catalogue=catalogue)
            if conn.execute(INSERT_DECISION, row).rowcount:  # one step, one GIL hand-off
                return None
            found = conn.execute(
                f"SELECT seq, {DECISION_READ} FROM decisions "
                "WHERE loop=? AND event_id=? AND request_hash=?",
                (d.loop, d.event_id, d.request_hash),
            ).fetchone()
            return decision(found)

        return self.submit(job)

    def import_decisions(
        self, items: Sequence[tuple[Decision, list[tuple[str | None, float]]]]
    ) -> Future[int]:
        """Log imported decisions of one loop with their rewards (at the decision's time),
        in one job; a decision whose event ID is taken (logged already, or earlier in
        ``items``) is skipped with its rewards. How many were stored."""

        def job(conn: Conn) -> int:
            if not items:
                return 0
            loop = items[0][0].loop
            taken: set[str] = set()
            for ids in chunks([d.event_id for d, _ in items]):
                taken.update(
                    eid
                    for (eid,) in conn.execute(
                        f"SELECT event_id FROM decisions WHERE loop=? AND event_id IN "
                        f"({marks(len(ids))})",
                        (loop, *ids),
                    )
                )
            new = []
            for d, rewards in items:
                if d.event_id not in taken:
                    taken.add(d.event_id)
                    new.append((d, rewards))
            encoded: dict[int, str] = {}  # decisions of one catalogue share its id list
            rows = []
            for d, _ in new:
                key = id(d.action_ids)  # the lists are alive in items meanwhile
                if key not in encoded:
                    encoded[key] = orjson.dumps(d.action_ids).decode()
                catalogue = self._catalogue(conn, loop, d.catalogue) if d.catalogue else None
                rows.append(decision_row(d, encoded[key], catalogue))
            conn.executemany(INSERT_DECISION, rows)
            conn.executemany(
                "INSERT INTO rewards (loop, event_id, slot, value, ts) VALUES (?,?,?,?,?)",
                [(d.loop, d.event_id, slot, v, d.ts) for d, rewards in new for slot, v in rewards],
            )
            return len(new)

        return self.submit(job)

    def append_rewards(
        self,
        loop: str,
        event_id: str,
        rewards: list[tuple[str | None, float]],
        ts: float,
        early_close: bool,
    ) -> Future[None]:
        """Log rewards (slot, value) for the newest decision of the event ID; with
        ``early_close`` (earliest aggregation, single slot) it closes now: its first reward
        is final."""

        def job(conn: Conn) -> None:
            newest = conn.execute(NEWEST, (loop, event_id)).fetchone()[0]
            conn.executemany(
                "INSERT INTO rewards (loop, event_id, slot, value, ts, decision) "
                "VALUES (?,?,?,?,?,?)",
                [(loop, event_id, slot, value, ts, newest) for slot, value in rewards],
            )
            if early_close and newest is not None:
                conn.execute(
                    """UPDATE decisions SET close_at=? WHERE seq=? AND learned_in IS NULL
                       AND close_at>? AND multislot=0 AND (deferred=0
                       OR EXISTS (SELECT 1 FROM activations a WHERE a.loop=? AND a.event_id=?
                                  AND (a.decision IS NULL OR a.decision=?)))""",
                    (ts, newest, ts, loop, event_id, newest),
                )

        return self.submit(job)

    def append_activation(
        self, loop: str, event_id: str, ts: float, early_close: bool
    ) -> Future[None]:
        """Log an activation of the newest decision of the event ID; with ``early_close``
        a rewarded decision closes now."""

        def job(conn: Conn) -> None:
            newest = conn.execute(NEWEST, (loop, event_id)).fetchone()[0]
            conn.execute(
                "INSERT INTO activations (loop, event_id, ts, decision) VALUES (?,?,?,?)",
                (loop, event_id, ts, newest),
            )
            if early_close and newest is not None:
                conn.execute(
                    """UPDATE decisions SET close_at=? WHERE seq=? AND learned_in IS NULL
                       AND close_at>? AND EXISTS (SELECT 1 FROM rewards r WHERE r.loop=?
                       AND r.event_id=? AND (r.decision IS NULL OR r.decision=?))""",
                    (ts, newest, ts, loop, event_id, newest),
                )

        return self.submit(job)

    def get_decision(self, loop: str, event_id: str) -> Decision | None:
        row = (
            self.reader()
            .execute(
                f"SELECT seq, {DECISION_READ} FROM decisions WHERE loop=? AND event_id=? "
                "ORDER BY seq DESC LIMIT 1",
                (loop, event_id),
            )
            .fetchone()
        )
        return decision(row) if row else None

    # -- the trainer -------------------------------------------------------------------

    def closed_events(self, loop: str, now: float, limit: int) -> list[ClosedEvent]:
        """Unlearned decisions whose window has closed, oldest close first, with rewards."""
        with self.snapshot() as conn:
            rows = conn.execute(
                f"""SELECT seq, event_id, ts, deferred, {EXAMPLE}, slots, mode, multislot,
                   holdout FROM decisions WHERE loop=? AND learned_in IS NULL AND close_at<=?
                   ORDER BY close_at, seq LIMIT ?""",
                (loop, now, limit),
            ).fetchall()
            if not rows:
                return []
            rewards, activations = joined(conn, loop, [(r[0], r[1]) for r in rows])
        return [
            ClosedEvent(
                seq=seq,
                event_id=eid,
                ts=ts,
                deferred=bool(deferred),
                example=example,
                slots=[SlotChoice.from_json(s) for s in orjson.loads(slots)],
                mode=mode,
                multislot=bool(multislot),
                rewards=rewards.get(seq, []),
                activations=activations.get(seq, []),
                holdout=bool(holdout),
            )
            for seq, eid, ts, deferred, example, slots, mode, multislot, holdout in rows
        ]

    def mark_learned(
        self, loop: str, outcomes: list[Outcome], mark: int, onto: int | None = None
    ) -> Future[bool]:
        """Mark events as handled under the trainer's mark, with what they were learned as.
        With ``onto``, only while model ``onto`` is the newest (else False, nothing marked):
        the events went into a model that another process has replaced (a reset, import or
        policy change), and must be learned again into the new one."""
        rows = [(mark, outcome_json(o), o.seq) for o in outcomes]

        def job(conn: Conn) -> bool:
            self._check_lead(conn, loop)
            if onto is not None and newest(conn, loop) != onto:
                return False
            conn.executemany(
                # by primary key alone: with ``loop=?`` PostgreSQL may scan decisions_open
                "UPDATE decisions SET learned_in=?, outcome=? WHERE seq=? AND learned_in IS NULL",
                rows,
            )
            return True

        return self.submit(job)

    def forget_unsaved(self, loop: str, covers: int) -> Future[int]:
        """Undo marks that no saved model covers (the trainer died before saving)."""

        def job(conn: Conn) -> int:
            self._check_lead(conn, loop)  # else it would undo the marks of the real trainer
            cur = conn.execute(
                "UPDATE decisions SET learned_in=NULL, outcome=NULL WHERE loop=? AND learned_in>?",
                (loop, covers),
            )
            return int(cur.rowcount)

        return self.submit(job)

    def count_learned(self, loop: str) -> int:
        row = (
            self.reader()
            .execute(
                "SELECT count(*) FROM decisions WHERE loop=? AND learned_in IS NOT NULL", (loop,)
            )
            .fetchone()
        )
        return int(row[0])

    def reschedule(self, loop: str, old_wait: float, new_wait: float) -> Future[None]:
        """Move the close time of open events to a new reward wait time."""

        def job(conn: Conn) -> None:
            conn.execute(
                """UPDATE decisions SET close_at = CASE
                     WHEN close_at >= ts + ? - 1e-6 THEN ts + ?
                     WHEN close_at < ts + ? THEN close_at ELSE ts + ? END
                   WHERE loop=? AND learned_in IS NULL""",
                (old_wait, new_wait, new_wait, new_wait, loop),
            )

        return self.submit(job)

    # -- reading the log back ------------------------------------------------------------

    def iter_events(
        self, loop: str, start: float, end: float, processed_only: bool = True
    ) -> Iterator[LoggedEvent]:
        with self.open_reader() as conn:
            yield from read_events(conn, loop, start, end, processed_only)

    def apprentice_events(self, loop: str, since: float) -> list[tuple[float, dict[str, Any]]]:
        """(time, outcome) of learned Apprentice-mode events since ``since``, oldest first,
        each outcome with the slots as logged."""
        rows = self.reader().execute(
            """SELECT ts, slots, outcome FROM decisions WHERE loop=? AND mode='Apprentice'
               AND outcome IS NOT NULL AND ts>=? ORDER BY ts""",
            (loop, since),
        )
        return [(ts, {**orjson.loads(o), "slots": orjson.loads(sl)}) for ts, sl, o in rows]

    def log_range(self, loop: str) -> LogRange:
        first, last = (
            self.reader()
            .execute("SELECT min(ts), max(ts) FROM decisions WHERE loop=?", (loop,))
            .fetchone()
        )
        return LogRange(first, last)

    def top_rewarded(
        self, loop: str, since: float, by: str, min_events: int, limit: int
    ) -> list[str]:
        """The items with the most reward (``by`` "total" or "mean") among the loop's
        learned single-slot events ranked since ``since``, shown at least ``min_events``
        times."""
        order = "sum(r) DESC" if by == "total" else "avg(r) DESC"
        rows = self.reader().execute(
            f"""SELECT item, sum(r), count(*) FROM (
                  SELECT {self.shown_and_reward}
                  FROM decisions
                  WHERE loop=? AND ts>=? AND multislot=0 AND outcome IS NOT NULL) AS shown
                WHERE item IS NOT NULL AND r IS NOT NULL
                GROUP BY item HAVING count(*) >= ?
                ORDER BY {order}, count(*) DESC, item LIMIT ?""",
            (loop, since, min_events, limit),
        )
        return [str(item) for item, _, _ in rows]

    # -- deleting ----------------------------------------------------------------------

    def find_events(self, loop: str, matches: Callable[[dict[str, Any]], bool]) -> list[str]:
        """The event IDs of the loop's decisions whose example (the JSON object) matches."""
        rows = self.reader().execute(
            f"SELECT event_id, {EXAMPLE} FROM decisions WHERE loop=?", (loop,)
        )
        return [eid for eid, example in rows if matches(orjson.loads(example))]

    def delete_logs(
        self,
        loop: str,
        before: float | None = None,
        event_ids: Sequence[str] | None = None,
    ) -> Future[int]:
        """Delete decisions (with their rewards and activations): all of them, those
        older than ``before``, or those with these event IDs; how many decisions."""
        wheres: list[tuple[str, list[Any]]]
        if event_ids is not None:
            wheres = [(f"event_id IN ({marks(len(c))})", list(c)) for c in chunks(event_ids)]
        elif before is not None:
            wheres = [("ts<?", [before])]  # rewards older than the cutoff, orphans included
        else:
            wheres = [("1=1", [])]

        def job(conn: Conn) -> int:
            n = 0
            for where, args in wheres:
                cur = conn.execute(f"DELETE FROM decisions WHERE loop=? AND {where}", (loop, *args))
                n += cur.rowcount
                for table in ("rewards", "activations"):
                    conn.execute(f"DELETE FROM {table} WHERE loop=? AND {where}", (loop, *args))
            conn.execute(
                "DELETE FROM catalogues WHERE loop=? AND NOT EXISTS "
                "(SELECT 1 FROM decisions d WHERE d.catalogue=catalogues.id)",
                (loop,),
            )
            return n

        return self.submit(job)
