"""What the operator dashboard shows, computed from the store and cached for a few seconds.

Over a recent window (an hour by default, in 60 buckets): events and rewards
per minute; late rewards (after ``rewardWaitTime``) and orphan rewards (no such
event); and, from the latest ``dashboard_events`` events, the share that got a
reward in time, the exploration share (the model's draw was not its greedy
action), the mean pmf entropy, the Apprentice imitation rate, and the reward
rate of the online policy against the baseline (first action) and a uniformly
random policy, estimated by SNIPS with 95% intervals and their diagnostics
(:mod:`evaluation.estimators`).
Plus model versions, trainer lag, the latest evaluations and feature
importances, and the loop's configuration.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from .clock import WALL, Clock
from .evaluation.estimators import MIN_SUPPORT, OffPolicy
from .evaluation.jobs import EVALUATION, IMPORTANCE
from .holdout import lift
from .loop import iso
from .store import SqlStore

if TYPE_CHECKING:
    from .loop import Loop

BUCKETS = 60
SMOOTH = 5  # reward-rate points cover this many buckets (a rolling window)
CACHE_SECONDS = 3.0
HISTORY = 720  # samples of trainer lag and model version kept per loop (in memory)
POLICIES = ("online", "baseline", "random")


def _sums() -> list[float]:
    return [0.0] * 12


def _add(s: list[float], p_log: float, r: float, p_target: float, unsupported: float) -> None:
    """Add one event to OffPolicy's sums (no reward model: DR equals IPS here)."""
    w = p_target / p_log
    s[10] += unsupported > 1e-9
    s[11] = max(s[11], w)
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
    """SNIPS, or None with the reason when the logs cannot tell (estimators.py)."""
    off = OffPolicy.from_sums(s)
    diagnostics = off.diagnostics()
    if not diagnostics["estimable"]:
        return {"value": None, "low": None, "high": None, "events": int(s[0]), **diagnostics}
    est = off.estimate_snips()

    def num(x: float) -> float | None:
        return round(x, 6) if math.isfinite(x) else None

    return {
        "value": num(est.value),
        "low": num(est.low),
        "high": num(est.high),
        **diagnostics,
    }


def _unsupported(pmf: list[float], target: list[float]) -> float:
    return sum(t - p for t, p in zip(target, pmf, strict=True) if p < MIN_SUPPORT and t > p)


def _entropy(pmf: list[float]) -> float:
    return -sum(p * math.log(p) for p in pmf if p > 0)


class Dashboards:
    """Per-loop dashboard data, cached; keeps a short in-memory history of the trainer."""

    def __init__(self, max_events: int = 10_000, clock: Clock = WALL) -> None:
        self.max_events = max_events
        self.clock = clock
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
        store = loop.store
        now = self.clock()
        width = minutes * 60 / BUCKETS
        start = now - minutes * 60
        start = math.floor(start / width) * width  # stable bucket edges between refreshes
        n = math.ceil((now - start) / width)
        per_minute = 60.0 / width
        wait = loop.config.reward_wait

        events = [0.0] * n
        for b, count in store.decision_buckets(loop.name, start, width).items():
            if 0 <= b < n:
                events[b] = count * per_minute

        rewards, late, orphan = [0.0] * n, [0] * n, [0] * n
        for c in store.reward_buckets(loop.name, wait, start, width):
            if 0 <= c.bucket < n:
                rewards[c.bucket], orphan[c.bucket], late[c.bucket] = (
                    c.total * per_minute,
                    c.orphan,
                    c.late,
                )

        sample = self._sample(loop, start, n, width, now, wait)
        trainer = store.trainer_state(loop.name, now)
        saved = store.saved_models(loop.name)
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
            "evaluations": _evaluations(store, loop.name),
            "featureImportances": _importances(store, loop.name),
            "configuration": loop.wire.model_dump(mode="json"),
            "policy": loop.policy_contract(),
            "learningMode": loop.config.learning_mode,
            "sampleSize": self.max_events,
        }

    def _sample(
        self,
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
        for d in loop.store.sample_decisions(loop.name, start, wait, self.max_events):
            b = int((d.ts - start) / width)
            if not 0 <= b < n:
                continue
            if d.ts + wait <= now:
                closed[b] += 1
                rewarded[b] += d.rewarded
            for slot in d.slots:
                pmf, chosen = slot.pmf, slot.chosen
                if not pmf or chosen < 0:
                    continue
                slots_n[b] += 1
                explored[b] += pmf[chosen] < max(pmf) - 1e-9
                entropy[b] += _entropy(pmf)
                if d.mode == "Apprentice":
                    appr[b] += 1
                    imitated[b] += chosen == slot.baseline
            if d.outcome is None:
                continue
            failed += bool(d.outcome.get("e"))  # the trainer could not learn it (trainer.py)
            if d.multislot or d.holdout or not d.outcome.get("r"):
                continue  # the holdout shows the baseline: not a draw from its pmf
            first, r = d.slots[0], float(d.outcome["r"][0])
            shown, k = first.shown, len(first.actions)
            logged = first.pmf
            if d.mode in ("Apprentice", "LoggingOnly"):
                logged = [float(i == shown) for i in range(k)]
            p_log = logged[shown]
            if p_log <= 0:
                continue
            base = [float(i == first.baseline) for i in range(k)]
            _add(sums["online"][b], p_log, r, p_log, 0.0)
            _add(sums["baseline"][b], p_log, r, base[shown], _unsupported(logged, base))
            uniform = [1.0 / k] * k
            _add(sums["random"][b], p_log, r, 1.0 / k, _unsupported(logged, uniform))

        def ratio(num: list[int] | list[float], den: list[int]) -> list[float | None]:
            return [x / d if d else None for x, d in zip(num, den, strict=True)]

        rolling: dict[str, dict[str, list[Any]]] = {}
        totals: dict[str, Any] = {}
        for name in POLICIES:
            points = []
            for i in range(n):
                acc = _sums()
                for s in sums[name][max(0, i - SMOOTH + 1) : i + 1]:
                    acc = OffPolicy.merge_sums(acc, s)
                points.append(_estimate(acc))
            rolling[name] = {k: [p[k] for p in points] for k in ("value", "low", "high")}
            total = _sums()
            for s in sums[name]:
                total = OffPolicy.merge_sums(total, s)
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
    now = loop.clock()
    return lift(loop.logged(now - days * 86400, now))


def _evaluations(store: SqlStore, loop: str, limit: int = 3) -> list[dict[str, Any]]:
    out = []
    for job in store.recent_jobs(loop, EVALUATION, limit):
        req, res = job.request, job.result or {}
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
                    "diagnostics": summary.get("diagnostics"),
                }
            )
        out.append(
            {
                "id": job.id,
                "name": req.get("name"),
                "created": iso(job.created),
                "status": job.status,
                "optimalPolicy": res.get("optimalPolicy"),
                "error": res.get("error"),
                "policies": policies,
            }
        )
    return out


def _importances(store: SqlStore, loop: str, limit: int = 3) -> list[dict[str, Any]]:
    out = []
    for job in store.recent_jobs(loop, IMPORTANCE, limit):
        req, res = job.request, job.result or {}
        out.append(
            {
                "id": job.id,
                "name": req.get("name"),
                "created": iso(job.created),
                "status": job.status,
                "error": res.get("error"),
                "featureScores": res.get("featureScores", [])[:20],
            }
        )
    return out
