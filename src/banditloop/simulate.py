"""A driver that plays a simulated world (``banditloop.worlds``) over HTTP.

Rewards go through the real Reward API; in a world with delays (``delayed``)
each is sent that many events later, or never.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .worlds import Interaction, NewsWorld, World, make_world, rank_body

__all__ = ["Interaction", "NewsWorld", "SimulationResult", "rank_body", "run_http"]


@dataclass
class SimulationResult:
    events: int
    ctr: float  # cumulative
    last_window_ctr: float
    seconds: float
    rewards: list[float] = field(default_factory=list)  # per event, as the world gave them
    optimum: float = 0.0  # mean expected reward of the best actions
    rewards_sent: int = 0  # how many rewards reached the Reward API


def run_http(
    base_url: str,
    events: int = 5000,
    seed: int = 0,
    window: int = 1000,
    report_every: int = 500,
    api_key: str | None = None,
    echo: Callable[[str], None] = print,
    pause: float = 0.0,
    world: str | World = "news",
    event_id_prefix: str | None = None,
) -> SimulationResult:
    """Play a world against a server at ``base_url`` (its ``/personalizer/v1.0``).

    A reward whose ``delay`` is d is sent after d further Rank calls; one with delay
    ``None`` is never sent; the rest are sent when the run ends.  With
    ``event_id_prefix``, event IDs are ``{prefix}{i}`` (so the server's draws can be
    replayed offline); otherwise the server makes them up.
    """
    if isinstance(world, str):
        world = make_world(world, seed)
    headers = {"Ocp-Apim-Subscription-Key": api_key} if api_key else {}
    total = best = 0.0
    rewards: list[float] = []
    pending: dict[int, list[tuple[str, float]]] = {}
    sent = 0
    recent: deque[float] = deque(maxlen=window)
    start = time.perf_counter()
    with httpx.Client(
        base_url=base_url.rstrip("/") + "/personalizer/v1.0", headers=headers, timeout=30
    ) as client:

        def send(event_id: str, value: float) -> None:
            nonlocal sent
            client.post(f"/events/{event_id}/reward", json={"value": value}).raise_for_status()
            sent += 1

        for i in range(1, events + 1):
            it = world.next()
            body = rank_body(it)
            if event_id_prefix is not None:
                body["eventId"] = f"{event_id_prefix}{i}"
            resp = client.post("/rank", json=body)
            resp.raise_for_status()
            answer = resp.json()
            r = world.reward(it, answer["rewardActionId"])
            best += world.expected(it, world.best(it))
            if it.delay == 0:
                send(answer["eventId"], r)
            elif it.delay is not None:
                pending.setdefault(i + it.delay, []).append((answer["eventId"], r))
            for event_id, value in pending.pop(i, ()):
                send(event_id, value)
            total += r
            rewards.append(r)
            recent.append(r)
            if i % report_every == 0 or i == events:
                echo(
                    f"events {i:6d}  ctr {total / i:.3f}  last {len(recent)} ctr "
                    f"{sum(recent) / len(recent):.3f}"
                )
            if pause:
                time.sleep(pause)
        for due in sorted(pending):
            for event_id, value in pending[due]:
                send(event_id, value)
    return SimulationResult(
        events,
        total / events,
        sum(recent) / len(recent),
        time.perf_counter() - start,
        rewards,
        best / events,
        sent,
    )
