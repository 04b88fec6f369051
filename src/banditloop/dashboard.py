"""What the operator dashboard shows, computed from the store and cached for a few seconds.

Over a recent window (an hour by default, in 60 buckets): events and rewards
per minute; late rewards (after ``rewardWaitTime``) and orphan rewards (no such
event); and, from the latest ``dashboard_events`` events, the share that got a
reward in time, the exploration share (the model's draw was not its greedy
action), the mean pmf entropy, the Apprentice imitation rate, and the reward
rate of the online policy against the baseline (first action) and a uniformly
random policy, estimated by IPS with 95% intervals (:mod:`evaluation.estimators`).
Plus model versions, trainer lag, the latest evaluations and feature
importances, and the loop's configuration.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from . import stats
from .evaluation.estimators import OffPolicy
from .evaluation.jobs import EVALUATION, IMPORTANCE
from .holdout import lift
from .loop import iso
from .store.sql import Conn

if TYPE_CHECKING:
    from .loop import Loop

BUCKETS = 60
SMOOTH = 5  # reward-rate points cover this many buckets (a rolling window)
CACHE_SECONDS = 3.0
HISTORY = 720  # samples of trainer lag and model version kept per loop (in memory)
POLICIES = ("online", "baseline", "random")


def _sums() -> list[float]:
    return [0.0] * 10


def _add(s: list[float], p_log: float, r: float, p_target: float) -> None:
    """Add one event to OffPolicy's sums (no reward model: DR equals IPS here)."""
    w = p_target / p_log
    s[0] += 1
    s[1] += w * r
    s[2] += (w * r) ** 2
    s[3] += w * r
    s[4] += (w * r) ** 2
    s[5] += w
    s[6] += w * r
    s[7] += w * w
    s[8] += (w * r) ** 2
    s[9] += w * w * r


def _estimate(s: list[float]) -> dict[str, Any]:
    if s[0] < 1:
        return {"value": None, "low": None, "high": None, "events": 0}
    est = OffPolicy.from_sums(s).estimate_ips()

    def num(x: float) -> float | None:
        return round(x, 6) if math.isfinite(x) else None

    return {
        "value": num(est.value),
        "low": num(est.low),
        "high": num(est.high),
        "events": int(s[0]),
    }


def _entropy(pmf: list[float]) -> float:
    return -sum(p * math.log(p) for p in pmf if p > 0)


class Dashboards:
    """Per-loop dashboard data, cached; keeps a short in-memory history of the trainer."""

    def __init__(self, max_events: int = 10_000) -> None:
        self.max_events = max_events
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
        self._history: dict[str, collections.deque[tuple[float, float, int, int, int]]] = {}

    def data(self, loop: Loop, minutes: int = 60) -> dict[str, Any]:
        key = (loop.name, minutes)
        with self._lock:  # one computation at a time; concurrent callers share it
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
                return hit[1]
            out = self._compute(loop, minutes)
            self._cache[key] = (time.monotonic(), out)
            return out

    def _compute(self, loop: Loop, minutes: int) -> dict[str, Any]:
        conn = loop.store.reader()
        now = time.time()
        width = minutes * 60 / BUCKETS
        start = now - minutes * 60
        start = math.floor(start / width) * width  # stable bucket edges between refreshes
        n = math.ceil((now - start) / width)
        per_minute = 60.0 / width
        wait = loop.config.reward_wait

        events = [0.0] * n
        for b, count in conn.execute(
            "SELECT CAST(floor((ts-?)/?) AS INTEGER), count(*) FROM decisions "
            "WHERE loop=? AND ts>=? GROUP BY 1",
            (start, width, loop.name, start),
        ):
            if 0 <= b < n:
                events[b] = count * per_minute

        rewards, late, orphan = [0.0] * n, [0] * n, [0] * n
        first = stats.first_seq_since(conn, "rewards", start - 600)
        for b, count, n_orphan, n_late in conn.execute(
            """SELECT CAST(floor((r.ts-?)/?) AS INTEGER), count(*),
                      sum(CASE WHEN d.seq IS NULL THEN 1 ELSE 0 END),
                      sum(CASE WHEN r.ts > d.ts + ? THEN 1 ELSE 0 END)
               FROM rewards r LEFT JOIN decisions d ON d.loop=r.loop AND d.event_id=r.event_id
               WHERE r.seq>=? AND r.loop=? AND r.ts>=? GROUP BY 1""",
            (start, width, wait, first, loop.name, start),
        ):
            if 0 <= b < n:
                rewards[b], orphan[b], late[b] = count * per_minute, n_orphan, n_late

        sample = self._sample(conn, loop, start, n, width, now, wait)
        trainer = stats.trainer_state(conn, loop.name, now)
        saved = stats.models(conn, loop.name)
        learned = max(loop.trainer.events_learned, saved[0].events_learned if saved else 0)
        version = saved[0].number if saved else 0
        history = self._history.setdefault(loop.name, collections.deque(maxlen=HISTORY))
        history.append((now, trainer.lag, trainer.backlog, learned, version))
        return {
            "loop": loop.name,
            "generated": now,
            "window": {"start": start, "end": now, "bucketSeconds": width, "minutes": minutes},
            "series": {
                "t": [start + i * width for i in range(n)],
                "events": events,
                "rewards": rewards,
                "late": late,
                "orphan": orphan,
                **sample["series"],
            },
            "totals": {
                "events": round(sum(events) / per_minute),
                "rewards": round(sum(rewards) / per_minute),
                "late": sum(late),
                "orphan": sum(orphan),
                **sample["totals"],
            },
            "trainer": {
                "lagSeconds": trainer.lag,
                "backlog": trainer.backlog,
                "eventsLearned": learned,
                "modelVersion": version,
                "liveModelVersion": loop.model_version,
            },
            "history": {
                "t": [h[0] for h in history],
                "lagSeconds": [h[1] for h in history],
                "backlog": [h[2] for h in history],
                "eventsLearned": [h[3] for h in history],
                "modelVersion": [h[4] for h in history],
            },
            "models": [
                {
                    "number": m.number,
                    "created": iso(m.created),
                    "eventsLearned": m.events_learned,
                    "born": iso(m.born),
                }
                for m in saved
            ],
            "holdout": _holdout(loop),
            "evaluations": _evaluations(conn, loop.name),
            "featureImportances": _importances(conn, loop.name),
            "configuration": loop.wire.model_dump(mode="json"),
            "policy": loop.policy_contract(),
            "learningMode": loop.config.learning_mode,
            "sampleSize": self.max_events,
        }

    def _sample(
        self,
        conn: Conn,
        loop: Loop,
        start: float,
        n: int,
        width: float,
        now: float,
        wait: float,
    ) -> dict[str, Any]:
        """Statistics of the latest ``max_events`` events of the window, per bucket."""
        closed, rewarded = [0] * n, [0] * n
        slots_n, explored, entropy = [0] * n, [0] * n, [0.0] * n
        appr, imitated = [0] * n, [0] * n
        failed = 0
        sums = {p: [_sums() for _ in range(n)] for p in POLICIES}
        rows = conn.execute(
            """SELECT ts, slots, mode, multislot, outcome, EXISTS (SELECT 1 FROM rewards r
                 WHERE r.loop=d.loop AND r.event_id=d.event_id AND r.ts <= d.ts + ?)
               FROM decisions d WHERE loop=? AND ts>=? ORDER BY ts DESC LIMIT ?""",
            (wait, loop.name, start, self.max_events),
        )
        for ts, slots_text, mode, multislot, outcome_text, got_reward in rows:
            b = int((ts - start) / width)
            if not 0 <= b < n:
                continue
            if ts + wait <= now:
                closed[b] += 1
                rewarded[b] += got_reward
            slots = orjson.loads(slots_text)
            for slot in slots:
                pmf, chosen = slot["p"], slot["c"]
                if not pmf or chosen < 0:
                    continue
                slots_n[b] += 1
                explored[b] += pmf[chosen] < max(pmf) - 1e-9
                entropy[b] += _entropy(pmf)
                if mode == "Apprentice":
                    appr[b] += 1
                    imitated[b] += chosen == slot["b"]
            if outcome_text is None:
                continue
            outcome = orjson.loads(outcome_text)
            failed += bool(outcome.get("e"))  # the trainer could not learn it (trainer.py)
            if multislot or not outcome.get("r"):
                continue
            slot, r = slots[0], float(outcome["r"][0])
            shown = slot["s"]
            p_log = 1.0 if mode in ("Apprentice", "LoggingOnly") else slot["p"][shown]
            if p_log <= 0:
                continue
            _add(sums["online"][b], p_log, r, p_log)
            _add(sums["baseline"][b], p_log, r, float(shown == slot["b"]))
            _add(sums["random"][b], p_log, r, 1.0 / len(slot["a"]))

        def ratio(num: list[int] | list[float], den: list[int]) -> list[float | None]:
            return [x / d if d else None for x, d in zip(num, den, strict=True)]

        rolling: dict[str, dict[str, list[Any]]] = {}
        totals: dict[str, Any] = {}
        for name in POLICIES:
            points = []
            for i in range(n):
                acc = _sums()
                for s in sums[name][max(0, i - SMOOTH + 1) : i + 1]:
                    acc = [a + x for a, x in zip(acc, s, strict=True)]
                points.append(_estimate(acc))
            rolling[name] = {k: [p[k] for p in points] for k in ("value", "low", "high")}
            total = _sums()
            for s in sums[name]:
                total = [a + x for a, x in zip(total, s, strict=True)]
            totals[name] = _estimate(total)
        is_apprentice = loop.config.learning_mode == "Apprentice" or any(appr)
        n_slots, n_closed, n_appr = sum(slots_n), sum(closed), sum(appr)
        return {
            "series": {
                "rewardedShare": ratio(rewarded, closed),
                "exploration": ratio(explored, slots_n),
                "entropy": ratio(entropy, slots_n),
                "imitation": ratio(imitated, appr) if is_apprentice else None,
                "rewardRate": rolling,
            },
            "totals": {
                "sampled": n_slots,
                "failed": failed,
                "rewardedShare": sum(rewarded) / n_closed if n_closed else None,
                "exploration": sum(explored) / n_slots if n_slots else None,
                "entropy": sum(entropy) / n_slots if n_slots else None,
                "imitation": sum(imitated) / n_appr if is_apprentice and n_appr else None,
                "rewardRate": totals,
            },
        }


def _holdout(loop: Loop, days: int = 7) -> dict[str, Any] | None:
    """The online lift over the last week, when the loop keeps a holdout group."""
    if not loop.wire.holdoutPercentage:
        return None
    now = time.time()
    return lift(loop.store.iter_events(loop.name, now - days * 86400, now))


def _evaluations(conn: Conn, loop: str, limit: int = 3) -> list[dict[str, Any]]:
    out = []
    for job_id, created, status, request, result in conn.execute(
        """SELECT id, created, status, request, result FROM jobs
           WHERE loop=? AND kind=? ORDER BY created DESC LIMIT ?""",
        (loop, EVALUATION, limit),
    ):
        req, res = orjson.loads(request), orjson.loads(result) if result else {}
        policies = []
        for p in res.get("policies", []):
            summary = p.get("summary", {})
            low, high = summary.get("confidenceInterval") or (None, None)
            policies.append(
                {
                    "name": p.get("name"),
                    "source": p.get("policySource"),
                    "arguments": p.get("arguments"),
                    "expectedReward": summary.get("expectedReward"),
                    "low": low,
                    "high": high,
                    "events": summary.get("events"),
                }
            )
        out.append(
            {
                "id": job_id,
                "name": req.get("name"),
                "created": iso(created),
                "status": status,
                "optimalPolicy": res.get("optimalPolicy"),
                "error": res.get("error"),
                "policies": policies,
            }
        )
    return out


def _importances(conn: Conn, loop: str, limit: int = 3) -> list[dict[str, Any]]:
    out = []
    for job_id, created, status, request, result in conn.execute(
        """SELECT id, created, status, request, result FROM jobs
           WHERE loop=? AND kind=? ORDER BY created DESC LIMIT ?""",
        (loop, IMPORTANCE, limit),
    ):
        req, res = orjson.loads(request), orjson.loads(result) if result else {}
        out.append(
            {
                "id": job_id,
                "name": req.get("name"),
                "created": iso(created),
                "status": status,
                "error": res.get("error"),
                "featureScores": res.get("featureScores", [])[:20],
            }
        )
    return out
