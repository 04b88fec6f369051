"""The online lift of a loop over its holdout group (docs/holdout.md).

Events of the holdout were served the baseline; the others were served the
loop's choice.  The report compares their mean real reward (summed over slots
for a multi-slot Rank) with Welch's t interval, overall and per UTC day.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

from scipy import stats

from .store.base import LoggedEvent


def _side(values: list[float]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n if n else None
    return {"events": n, "meanReward": mean}


def compare(loop: list[float], holdout: list[float], level: float = 0.95) -> dict[str, Any]:
    """Means of both sides, their difference (loop - holdout) and its Welch interval."""
    out: dict[str, Any] = {"loop": _side(loop), "holdout": _side(holdout)}
    out["lift"] = out["low"] = out["high"] = None
    n1, n0 = len(loop), len(holdout)
    # a direct comparison of what each group was served: no importance weights, so
    # the only diagnostic is whether both groups have the events to compare
    out["estimable"] = n1 >= 2 and n0 >= 2
    out["reason"] = None if out["estimable"] else "not estimable: fewer than 2 events in a group"
    if n1 == 0 or n0 == 0:
        return out
    m1, m0 = sum(loop) / n1, sum(holdout) / n0
    out["lift"] = m1 - m0
    if n1 < 2 or n0 < 2:
        return out
    v1 = sum((x - m1) ** 2 for x in loop) / (n1 - 1) / n1
    v0 = sum((x - m0) ** 2 for x in holdout) / (n0 - 1) / n0
    se = math.sqrt(v1 + v0)
    if se == 0:
        out["low"] = out["high"] = m1 - m0
        return out
    df = (v1 + v0) ** 2 / (v1**2 / (n1 - 1) + v0**2 / (n0 - 1))
    t = float(stats.t.ppf(0.5 + level / 2, df))
    out["low"], out["high"] = m1 - m0 - t * se, m1 - m0 + t * se
    return out


def lift(events: Iterable[LoggedEvent]) -> dict[str, Any]:
    """The lift report of a loop's joined Online-mode events."""
    days: dict[str, tuple[list[float], list[float]]] = {}
    total: tuple[list[float], list[float]] = ([], [])
    for ev in events:
        d = ev.decision
        if d.mode != "Online" or not ev.outcome or ev.outcome.get("r") is None:
            continue
        reward = float(sum(ev.outcome["r"]))
        day = dt.datetime.fromtimestamp(d.ts, dt.UTC).date().isoformat()
        side = 1 if d.holdout else 0
        days.setdefault(day, ([], []))[side].append(reward)
        total[side].append(reward)
    return {
        **compare(*total),
        "days": [{"day": day, **compare(*days[day])} for day in sorted(days)],
    }
