"""Read-only statistics of the log, for /metrics and the dashboard.

Indexed queries only (a range of ``seq``, a loop's time window, the open events),
so that a scrape or a dashboard refresh stays cheap however large the log grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .base import RewardCounts, SampledDecision, SlotChoice, TrainerState
from .db import TOP, Queries

BACKLOG_CAP = 1_000_000  # closed, unlearned events counted at most
#: Rewards of a seq range and a time window, by bucket: how many, how many for no such
#: event (orphans), how many after the event's reward wait (late).  Parameters: bucket
#: start and width, wait, seq range, loop, window start.
REWARDS = """SELECT {bucket}, count(*), sum(CASE WHEN d.seq IS NULL THEN 1 ELSE 0 END),
                  sum(CASE WHEN r.ts > d.ts + ? THEN 1 ELSE 0 END)
           FROM rewards r LEFT JOIN decisions d ON d.loop=r.loop AND d.event_id=r.event_id
             AND (r.decision IS NULL OR d.seq=r.decision)
           WHERE r.seq>? AND r.seq<=? AND r.loop=? {window}GROUP BY 1"""

#: The newest decisions of a loop's window, each with whether a reward came in time
#: (``+r.ts``: look the event's rewards up by its id; SQLite would otherwise walk every
#: earlier reward of the loop).  Parameters: wait, loop, window start, how many.
SAMPLE = """SELECT ts, slots, mode, multislot, outcome, holdout, EXISTS (SELECT 1 FROM rewards r
              WHERE r.loop=d.loop AND r.event_id=d.event_id AND +r.ts <= d.ts + ?
              AND (r.decision IS NULL OR r.decision=d.seq))
            FROM decisions d WHERE loop=? AND ts>=? ORDER BY ts DESC LIMIT ?"""


def _counts(row: Sequence[Any]) -> RewardCounts:
    bucket, total, orphan, late = row
    return RewardCounts(int(bucket), int(total), int(orphan or 0), int(late or 0))


class Stats(Queries):
    """Statistics over the decisions and rewards of every loop."""

    def trainer_state(self, loop: str, now: float) -> TrainerState:
        """How long the oldest closed, unlearned event has waited, and how many there are."""
        oldest, backlog = (
            self.reader()
            .execute(
                """SELECT min(close_at), count(*) FROM (SELECT close_at FROM decisions
                   WHERE loop=? AND learned_in IS NULL AND close_at<=? LIMIT ?) AS backlog""",
                (loop, now, BACKLOG_CAP),
            )
            .fetchone()
        )
        return TrainerState(max(0.0, now - oldest) if oldest is not None else 0.0, int(backlog))

    def last_seq(self, table: str) -> int:
        """The newest ``seq`` of an append-only table (decisions, rewards)."""
        assert table in ("decisions", "rewards")
        row = self.reader().execute(f"SELECT coalesce(max(seq), 0) FROM {table}").fetchone()
        return int(row[0])

    def first_seq_since(self, table: str, since: float) -> int:
        """The first ``seq`` of an append-only table with ``ts >= since`` (binary search on
        the key: rows are appended in time order)."""
        assert table in ("decisions", "rewards")
        conn = self.reader()
        lo, hi = conn.execute(
            f"SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM {table}"
        ).fetchone()
        hi += 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = conn.execute(
                f"SELECT ts FROM {table} WHERE seq>=? ORDER BY seq LIMIT 1", (mid,)
            ).fetchone()
            if row is not None and row[0] < since:
                lo = mid + 1
            else:
                hi = mid
        return int(lo)

    def decisions_per_loop(self, after: int, upto: int) -> dict[str, int]:
        """Decisions with ``seq`` in (after, upto], counted per loop."""
        rows = self.reader().execute(
            "SELECT loop, count(*) FROM decisions WHERE seq>? AND seq<=? GROUP BY loop",
            (after, upto),
        )
        return {loop: int(n) for loop, n in rows}

    def reward_counts(self, loop: str, wait: float, after: int, upto: int) -> RewardCounts:
        """The loop's rewards with ``seq`` in (after, upto], by kind."""
        sql = REWARDS.format(bucket="0", window="")
        row = self.reader().execute(sql, (wait, after, upto, loop)).fetchone()
        return _counts(row) if row else RewardCounts(0, 0, 0, 0)

    def reward_buckets(
        self, loop: str, wait: float, start: float, width: float
    ) -> list[RewardCounts]:
        """The loop's rewards since ``start`` by kind, per bucket of ``width`` seconds
        (rewards come in time order: the search starts 10 minutes before ``start``)."""
        first = self.first_seq_since("rewards", start - 600)
        sql = REWARDS.format(bucket="CAST(floor((r.ts-?)/?) AS INTEGER)", window="AND r.ts>=? ")
        rows = self.reader().execute(sql, (start, width, wait, first - 1, TOP, loop, start))
        return [_counts(r) for r in rows]

    def decision_buckets(self, loop: str, start: float, width: float) -> dict[int, int]:
        """The loop's decisions since ``start``, counted per bucket of ``width`` seconds."""
        rows = self.reader().execute(
            "SELECT CAST(floor((ts-?)/?) AS INTEGER), count(*) FROM decisions "
            "WHERE loop=? AND ts>=? GROUP BY 1",
            (start, width, loop, start),
        )
        return {int(b): int(n) for b, n in rows}

    def sample_decisions(
        self, loop: str, start: float, wait: float, limit: int
    ) -> list[SampledDecision]:
        """The loop's newest ``limit`` decisions since ``start``, newest first, each with
        whether a reward came within ``wait``."""
        rows = self.reader().execute(SAMPLE, (wait, loop, start, limit))
        return [
            SampledDecision(
                ts=ts,
                slots=[SlotChoice.from_json(s) for s in orjson.loads(slots)],
                mode=mode,
                multislot=bool(multislot),
                outcome=orjson.loads(outcome) if outcome else None,
                rewarded=bool(rewarded),
                holdout=bool(holdout),
            )
            for ts, slots, mode, multislot, outcome, holdout, rewarded in rows
        ]
