"""Synthetic worlds with a known optimum, and a driver that plays them over HTTP.

``NewsWorld`` is the Vowpal Wabbit news-personalization tutorial: two users
at two times of day, each preferring one of seven articles; the preferred
article is clicked (reward 1), anything else is not (reward 0).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Interaction:
    context: dict[str, Any]
    actions: list[str]


class NewsWorld:
    """Users x times of day x 7 articles; each (user, time) has one clicked article."""

    users = ("Tom", "Anna")
    times = ("morning", "afternoon")
    articles = ("politics", "sports", "music", "food", "finance", "health", "camping")
    preferred = {
        ("Tom", "morning"): "politics",
        ("Tom", "afternoon"): "music",
        ("Anna", "morning"): "sports",
        ("Anna", "afternoon"): "politics",
    }

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def next(self) -> Interaction:
        user, tod = self.rng.choice(self.users), self.rng.choice(self.times)
        return Interaction({"user": user, "time_of_day": tod}, list(self.articles))

    def reward(self, it: Interaction, action: str) -> float:
        return (
            1.0
            if self.preferred[(it.context["user"], it.context["time_of_day"])] == action
            else 0.0
        )

    def best(self, it: Interaction) -> str:
        return self.preferred[(it.context["user"], it.context["time_of_day"])]


def rank_body(it: Interaction) -> dict[str, Any]:
    return {
        "contextFeatures": [it.context],
        "actions": [{"id": a, "features": [{"article": a}]} for a in it.actions],
    }


@dataclass
class SimulationResult:
    events: int
    ctr: float  # cumulative
    last_window_ctr: float
    seconds: float


def run_http(
    base_url: str,
    events: int = 5000,
    seed: int = 0,
    window: int = 1000,
    report_every: int = 500,
    api_key: str | None = None,
    echo: Callable[[str], None] = print,
    pause: float = 0.0,
) -> SimulationResult:
    """Play the news world against a server at ``base_url`` (its ``/personalizer/v1.0``)."""
    world = NewsWorld(seed)
    headers = {"Ocp-Apim-Subscription-Key": api_key} if api_key else {}
    total = 0.0
    recent: deque[float] = deque(maxlen=window)
    start = time.perf_counter()
    with httpx.Client(
        base_url=base_url.rstrip("/") + "/personalizer/v1.0", headers=headers, timeout=30
    ) as client:
        for i in range(1, events + 1):
            it = world.next()
            resp = client.post("/rank", json=rank_body(it))
            resp.raise_for_status()
            answer = resp.json()
            r = world.reward(it, answer["rewardActionId"])
            client.post(f"/events/{answer['eventId']}/reward", json={"value": r}).raise_for_status()
            total += r
            recent.append(r)
            if i % report_every == 0 or i == events:
                echo(
                    f"events {i:6d}  ctr {total / i:.3f}  last {len(recent)} ctr "
                    f"{sum(recent) / len(recent):.3f}"
                )
            if pause:
                time.sleep(pause)
    return SimulationResult(
        events, total / events, sum(recent) / len(recent), time.perf_counter() - start
    )
