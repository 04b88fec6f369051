"""Multi-slot learning through HTTP: a page with three slots where position changes clicks.

A real ``banditloop serve`` process with ``--ccb_explore_adf`` fills a page of three
slots (top, middle, bottom) from five articles for three kinds of user.  A user clicks
an article shown in slot k with probability ``appeal[user][article] * POSITION[k]``, with
``POSITION = [1.0, 0.6, 0.3]``; each click is sent as that slot's reward (1.0), slots not
clicked get the default reward (0).  The best page puts the user's three most appealing
articles in order of appeal; a random page draws three distinct articles.

Part 1 (Online) plays ``--events`` pages and prints the expected clicks per page (the sum
of the click probabilities of what was shown, so that the figure is not noisy) for the
learned loop, per block of 1000 pages, beside random, the best page that ignores the user,
and the optimum.  Part 2 (Apprentice) plays ``--apprentice-events`` pages on a fresh
loop whose baseline is an editor's rule that depends on the user (``--rule``, see
``RULES``), with ``--apprentice-exploration`` 0.05 (with 0.2, at most about 84% of
draws can match the baseline), and prints the imitation rate of
``latestApprenticeModeMetrics.lastBatchMetrics`` (the latest 1000 slot decisions) as it
rises.

    .venv/bin/python bench/multislot_learning.py            # about 1 minute
    .venv/bin/python bench/multislot_learning.py --events 6000 --seed 2
    .venv/bin/python bench/multislot_learning.py --events 0 --rule order
    .venv/bin/python bench/multislot_learning.py --events 0 --rule order \
        --apprentice-policy "--ccb_explore_adf -q :: --cubic ::: --cb_type mtr"
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, print_table, server

POLICY = "--ccb_explore_adf --epsilon 0.2 -q :: --cb_type mtr"
POSITION = [1.0, 0.6, 0.3]
SLOT_IDS = ["top", "middle", "bottom"]
ARTICLES = ["sports", "politics", "games", "weather", "celebrity"]
APPEAL: dict[str, dict[str, float]] = {
    "sports_fan": {"sports": 0.8, "politics": 0.1, "games": 0.3, "weather": 0.2, "celebrity": 0.15},
    "politics_buff": {
        "sports": 0.1,
        "politics": 0.7,
        "games": 0.05,
        "weather": 0.3,
        "celebrity": 0.2,
    },
    "gamer": {"sports": 0.2, "politics": 0.05, "games": 0.9, "weather": 0.1, "celebrity": 0.4},
}
USERS = list(APPEAL)
#: Editors' rules that Apprentice mode imitates: a page per kind of user.  "favourite"
#: puts the user's favourite topic on top, then weather, then celebrity news: each slot's
#: choice is a user x article or a slot x article preference, which ``-q ::`` can learn.
#: "order" is a full page order per user, which needs user x slot x article (``--cubic``).
RULES: dict[str, dict[str, list[str]]] = {
    "favourite": {
        "sports_fan": ["sports", "weather", "celebrity"],
        "politics_buff": ["politics", "weather", "celebrity"],
        "gamer": ["games", "weather", "celebrity"],
    },
    "order": {
        "sports_fan": ["sports", "weather", "politics"],
        "politics_buff": ["politics", "celebrity", "sports"],
        "gamer": ["games", "sports", "celebrity"],
    },
}
ACTIONS = [{"id": a, "features": [{"topic": a}]} for a in ARTICLES]
WINDOW = 1000


def page_value(user: str, page: Sequence[str | None]) -> float:
    """Expected clicks on a page: the sum over slots of appeal times position factor."""
    return sum(APPEAL[user][a] * f for a, f in zip(page, POSITION, strict=False) if a)


def optimum(user: str) -> float:
    return page_value(user, sorted(ARTICLES, key=lambda a: -APPEAL[user][a])[:3])


def random_page_value(user: str) -> float:
    """Each slot of a random page of distinct articles is uniform over the articles."""
    return sum(POSITION) * statistics.fmean(APPEAL[user].values())


def best_fixed_page() -> float:
    """The best single page for everyone (users are equally likely)."""
    return max(
        statistics.fmean(page_value(u, page) for u in USERS)
        for page in itertools.permutations(ARTICLES, 3)
    )


def slots_for(baselines: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"id": sid, "baselineAction": b, "positionFeatures": [{"slot": sid}]}
        for sid, b in zip(SLOT_IDS, baselines, strict=True)
    ]


def start_loop(srv: Server, name: str, configuration: dict[str, Any], policy: str = POLICY) -> str:
    r = httpx.put(
        f"{srv.url}/loops/{name}", json={"policy": policy, "configuration": configuration}
    )
    r.raise_for_status()
    return f"{srv.url}/loops/{name}/personalizer/v1.0"


def play(
    http: httpx.Client,
    base: str,
    rng: random.Random,
    tag: str,
    i: int,
    rule: dict[str, list[str]] | None = None,
) -> tuple[str, list[str | None]]:
    """One page: rank, simulate the user's clicks, send the clicked slots' rewards."""
    user = rng.choice(USERS)
    page_baselines = rule[user] if rule else ARTICLES[:3]
    event_id = f"{tag}-{i}"
    body = {
        "contextFeatures": [{"user": {"kind": user}}],
        "actions": ACTIONS,
        "slots": slots_for(page_baselines),
        "eventId": event_id,
    }
    r = http.post(base + "/multislot/rank", json=body)
    r.raise_for_status()
    page = [s["rewardActionId"] for s in r.json()["slots"]]
    clicks = [
        {"slotId": sid, "value": 1.0}
        for sid, a, f in zip(SLOT_IDS, page, POSITION, strict=True)
        if a and rng.random() < APPEAL[user][a] * f
    ]
    if clicks:
        http.post(f"{base}/multislot/events/{event_id}/reward", json={"reward": clicks})
    return user, page


def online(srv: Server, events: int, seed: int) -> None:
    base = start_loop(srv, "online", {"rewardWaitTime": "PT1S"})
    rng = random.Random(seed)
    values: list[float] = []
    t0 = time.monotonic()
    with httpx.Client(timeout=30) as http:
        for i in range(events):
            user, page = play(http, base, rng, "page", i)
            values.append(page_value(user, page))
    elapsed = time.monotonic() - t0
    opt = statistics.fmean(optimum(u) for u in USERS)
    rnd = statistics.fmean(random_page_value(u) for u in USERS)
    fixed = best_fixed_page()
    print(f"\nOnline, {POLICY}: {events} pages in {elapsed:.0f} s through HTTP\n")
    rows = [
        ["random page", f"{rnd:.3f}", f"{rnd / opt:.0%}"],
        ["best page ignoring the user", f"{fixed:.3f}", f"{fixed / opt:.0%}"],
    ]
    for start in range(0, events, WINDOW):
        block = values[start : start + WINDOW]
        v = statistics.fmean(block)
        label = f"learned, pages {start + 1}-{start + len(block)}"
        rows.append([label, f"{v:.3f}", f"{v / opt:.0%}"])
    rows.append(["optimum (top 3 by appeal, in order)", f"{opt:.3f}", "100%"])
    print_table(["policy", "expected clicks per page", "of optimum"], rows)


def apprentice(
    srv: Server, events: int, seed: int, exploration: float, rule_name: str, policy: str
) -> None:
    rule = RULES[rule_name]
    base = start_loop(
        srv,
        f"apprentice-{rule_name}",
        {"rewardWaitTime": "PT1S", "explorationPercentage": exploration},
        policy,
    )
    config = httpx.get(base + "/configurations/service").json()
    r = httpx.put(base + "/configurations/service", json={**config, "learningMode": "Apprentice"})
    r.raise_for_status()
    rng = random.Random(seed + 1)
    rows: list[list[str]] = []
    report_every = max(events // 6, 1)

    def metrics() -> dict[str, Any]:
        m = httpx.get(base + "/configurations/service").json()["latestApprenticeModeMetrics"]
        return dict(m)

    def row(pages: int) -> None:
        m = metrics()
        last = m["lastBatchMetrics"]
        rate = last["numberOfImitatedEvents"] / max(last["numberOfEvents"], 1)
        total = m["numberOfImitatedEvents"] / max(m["numberOfEvents"], 1)
        rows.append([str(pages), str(m["numberOfEvents"]), f"{total:.1%}", f"{rate:.1%}"])

    with httpx.Client(timeout=30) as http:
        for i in range(events):
            user, page = play(http, base, rng, "app", i, rule)
            if page != rule[user]:
                raise AssertionError(f"Apprentice mode showed {page}, not the baseline")
            if (i + 1) % report_every == 0 and i + 1 < events:
                row(i + 1)
    deadline = time.monotonic() + 60
    while metrics()["numberOfEvents"] < 3 * events and time.monotonic() < deadline:
        time.sleep(0.2)
    row(events)
    print(
        f"\nApprentice, {policy} with explorationPercentage {exploration}: the baseline is "
        f"the editor's rule {rule_name!r}, a page per kind of user\n"
    )
    print_table(
        [
            "pages played",
            "slot decisions learned",
            "imitation since start",
            "imitation, lastBatchMetrics (latest 1000)",
        ],
        rows,
    )
    m = metrics()
    print(f"\nlatestApprenticeModeMetrics at the end: {json.dumps(m)}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3000, help="online pages (default 3000)")
    ap.add_argument(
        "--apprentice-events", type=int, default=2400, help="apprentice pages (default 2400)"
    )
    ap.add_argument(
        "--rule", choices=sorted(RULES), default="favourite", help="the editor's rule to imitate"
    )
    ap.add_argument("--apprentice-policy", default=POLICY, help="policy of the apprentice loop")
    ap.add_argument(
        "--apprentice-exploration",
        type=float,
        default=0.05,
        help="explorationPercentage of the apprentice loop (default 0.05)",
    )
    ap.add_argument("--seed", type=int, default=1)
    opts = ap.parse_args(argv)
    t0 = time.monotonic()
    with server() as srv:
        if opts.events:
            online(srv, opts.events, opts.seed)
        apprentice(
            srv,
            opts.apprentice_events,
            opts.seed,
            opts.apprentice_exploration,
            opts.rule,
            opts.apprentice_policy,
        )
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
