"""A simulated shop: does a scenario ranked by the bandit sell more than popularity alone
and than random, with nothing but a catalogue and tracked traffic to start from?

The shop has ``--items`` products in 6 categories (with a brand and a price tier) and
``--users`` customers, each with a hidden taste: a favourite category, a second one, and
a price tier they prefer. A session is one customer: they browse two products of their
own choosing (tracked as ``view`` and ``click``), then see ``K`` recommendations, look at
them in order (position bias), click at most one (by their taste), and buy it with a
probability; the purchase is tracked several sessions later (delayed).

Three arms play the same customers in the same order, each on its own loop of one
``banditloop serve`` process, all through HTTP:

* **random**: K random available products;
* **popularity**: a scenario with the popularity model only, on a loop in
  ``LoggingOnly`` mode, so the popularity order is served as is;
* **bandit**: a scenario with co-occurrence, content similarity and popularity as
  sources, the customer's recent items as context (``historyContext``), ranked by the
  loop (default policy), rewards from the tracked clicks (0.2) and purchases (1.0).

It prints purchases (and clicks) per session, overall and over the last half.

    .venv/bin/python bench/shop.py                      # about 1 minute on 2 cores
    .venv/bin/python bench/shop.py --sessions 6000 --seed 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, server

CATEGORIES = ["books", "games", "garden", "kitchen", "music", "sport"]
CATEGORY_SHARE = [0.30, 0.22, 0.16, 0.13, 0.11, 0.08]  # customers' favourite categories
TIERS = ["low", "mid", "high"]
POSITION = [1.0, 0.75, 0.55, 0.4, 0.3, 0.25]  # chance a customer looks at each slot
BUY = 0.5  # chance a click ends in a purchase
TRACKING = {
    "rewards": {"click": 0.2, "buy": 1.0},
    "cooccurrence": {"by": "user", "history": 20},
    "popularity": {"windowDays": 30, "halfLifeDays": 7},
}
FILTERS = {"excludeTypes": ["buy"]}


@dataclass(frozen=True)
class Customer:
    id: str
    first: str
    second: str
    tier: str


def catalogue(n: int, rng: random.Random) -> dict[str, dict[str, str]]:
    return {
        f"p{k:03d}": {
            "category": CATEGORIES[k % len(CATEGORIES)],
            "tier": rng.choice(TIERS),
            "brand": f"brand{rng.randrange(8)}",
        }
        for k in range(n)
    }


def customers(n: int, rng: random.Random) -> list[Customer]:
    out = []
    for k in range(n):
        first = rng.choices(CATEGORIES, CATEGORY_SHARE)[0]
        second = rng.choice([c for c in CATEGORIES if c != first])
        out.append(Customer(f"u{k}", first, second, rng.choice(TIERS)))
    return out


def appeal(c: Customer, item: dict[str, str]) -> float:
    """The chance that the customer clicks the product when they look at it."""
    p = 0.02
    if item["category"] == c.first:
        p += 0.35
    elif item["category"] == c.second:
        p += 0.12
    if item["tier"] == c.tier:
        p += 0.1
    return p


@dataclass
class Arm:
    name: str
    prefix: str  # the loop's base path; "" for random
    rng: random.Random
    pending: deque[tuple[int, dict[str, object]]]  # (due session, buy event)
    bought: dict[str, set[str]]
    clicks: int = 0
    purchases: int = 0
    late_purchases: int = 0


def make_loop(http: httpx.Client, name: str, mode: str, sources: list[dict[str, object]]) -> str:
    config = {
        "rewardWaitTime": "PT10S",
        "rewardAggregation": "max",
        "learningMode": mode,
        "tracking": TRACKING,
        "scenarios": {
            "shop": {
                "sources": sources,
                "fallback": [{"model": "catalogue", "count": 20}],
                "count": 4,
                "filters": FILTERS,
            }
        },
    }
    r = http.put(f"/loops/{name}", json={"configuration": config})
    r.raise_for_status()
    return f"/loops/{name}/personalizer/v1.0"


def track(http: httpx.Client, prefix: str, events: list[dict[str, object]]) -> None:
    if prefix and events:
        http.post(prefix + "/tracking/events", json={"events": events}).raise_for_status()


def play(args: argparse.Namespace) -> list[Arm]:
    rng = random.Random(args.seed)
    items = catalogue(args.items, rng)
    people = customers(args.users, rng)
    ids = sorted(items)
    with server(log_level="error") as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        rows = [{"id": i, "features": [f]} for i, f in items.items()]
        bandit_sources = [
            {"model": "cooccurrence", "count": 8, "types": ["click", "buy"]},
            {"model": "similar", "count": 8},
            {"model": "popularity", "count": 8},
        ]
        arms = [
            Arm("random", "", random.Random(args.seed + 1), deque(), {}),
            Arm(
                "popularity",
                make_loop(http, "pop", "LoggingOnly", [{"model": "popularity", "count": 8}]),
                random.Random(args.seed + 1),
                deque(),
                {},
            ),
            Arm(
                "bandit",
                make_loop(http, "bandit", "Online", bandit_sources),
                random.Random(args.seed + 1),
                deque(),
                {},
            ),
        ]
        for arm in arms[1:]:
            http.put(arm.prefix + "/items", json=rows).raise_for_status()
        started = time.monotonic()
        for s in range(args.sessions):
            person = rng.choice(people)
            weights = [appeal(person, items[i]) for i in ids]
            browsed = rng.choices(ids, weights, k=2)
            for arm in arms:
                session(http, arm, s, person, browsed, items, ids, args)
            if args.progress and s and s % 500 == 0:
                print(f"{s} sessions, {time.monotonic() - started:.0f} s", file=sys.stderr)
        return arms


def session(
    http: httpx.Client,
    arm: Arm,
    s: int,
    person: Customer,
    browsed: list[str],
    items: dict[str, dict[str, str]],
    ids: list[str],
    args: argparse.Namespace,
) -> None:
    events: list[dict[str, object]] = []
    for item in browsed:
        events.append({"type": "view", "itemId": item, "userId": person.id})
        events.append({"type": "click", "itemId": item, "userId": person.id})
    while arm.pending and arm.pending[0][0] <= s:  # purchases of earlier sessions arrive
        events.append(arm.pending.popleft()[1])
    track(http, arm.prefix, events)
    owned = arm.bought.setdefault(person.id, set())
    if arm.prefix:
        answer = http.get(arm.prefix + "/recommendations/shop", params={"userId": person.id})
        answer.raise_for_status()
        shown = [r["id"] for r in answer.json()["items"]]
        event_id = answer.json()["eventId"]
    else:
        shown = arm.rng.sample([i for i in ids if i not in owned], 4)
        event_id = None
    for pos, item in enumerate(shown):
        if arm.rng.random() >= POSITION[pos]:
            continue
        if arm.rng.random() < appeal(person, items[item]):
            arm.clicks += 1
            click = {"type": "click", "itemId": item, "userId": person.id, "eventId": event_id}
            track(http, arm.prefix, [click])
            if arm.rng.random() < BUY:
                arm.purchases += 1
                arm.late_purchases += s >= args.sessions // 2
                owned.add(item)
                buy = {**click, "type": "buy"}
                arm.pending.append((s + args.delay, buy))
            break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=4000)
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--delay", type=int, default=10, help="Sessions before a purchase is tracked.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    arms = play(args)
    n, late = args.sessions, args.sessions - args.sessions // 2
    print(
        f"{n} sessions, {args.items} products, {args.users} customers, K=4, "
        f"seed {args.seed}, {time.monotonic() - t0:.0f} s"
    )
    print_table(
        ["arm", "clicks / session", "purchases / session", "purchases / session, last half"],
        [
            [
                a.name,
                f"{a.clicks / n:.3f}",
                f"{a.purchases / n:.3f}",
                f"{a.late_purchases / late:.3f}",
            ]
            for a in arms
        ],
    )


if __name__ == "__main__":
    main()
