"""Offline bake-off of candidate default policies on the news world.

Every candidate sees the same stream as the server gives it: the Rank example is built
by ``banditloop.ranking.plan`` (Personalizer's JSON, hashed by VW's own ``--json``
parser), the pmf comes from a ``vowpalwabbit.Workspace(args + " --json --quiet")``, the
action is drawn with ``banditloop.sampling.sample_index`` seeded from the event ID, and
the example is learned at once with ``banditloop.join.labelled(..., cost=-reward)``.
Learning at once is the best case for the server, whose trainer learns an event only
after its reward window closes; ``--http`` plays the same world through a real server
(``banditloop.simulate.run_http``) and prints its CTR beside the offline figure.

Reported per policy, mean ± std over seeds: cumulative CTR after 1000 / 2500 / all
events and the CTR over the last 1000 events.  The best possible CTR is 1.0; a policy
exploring uniformly with probability epsilon over 7 articles tops out at
``1 - epsilon * 6 / 7`` (0.829 for epsilon 0.2).

    .venv/bin/python bench/learning_defaults.py                 # ~2 minutes on 2 cores
    .venv/bin/python bench/learning_defaults.py --seeds 20 --events 20000
    .venv/bin/python bench/learning_defaults.py --http          # also through a server
    .venv/bin/python bench/learning_defaults.py --policy "--cb_explore_adf --epsilon 0.3"
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import vowpalwabbit

from banditloop.join import labelled
from banditloop.policy import AZURE_DEFAULT_POLICY, DEFAULT_POLICY
from banditloop.ranking import plan
from banditloop.sampling import sample_index, seed_for
from banditloop.simulate import NewsWorld, run_http

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, server

WINDOW = 1000

#: (label, VW arguments).  The first two are Azure's default and banditloop's default.
CANDIDATES: list[tuple[str, str]] = [
    ("azure default", AZURE_DEFAULT_POLICY),
    ("banditloop default", DEFAULT_POLICY),
    ("eps .2 ips", "--cb_explore_adf --epsilon 0.2 -q :: --cb_type ips"),
    ("eps .2 dr", "--cb_explore_adf --epsilon 0.2 -q :: --cb_type dr"),
    ("eps .2 mtr, no -q", "--cb_explore_adf --epsilon 0.2 --cb_type mtr"),
    ("eps .2 mtr, power_t 0", "--cb_explore_adf --epsilon 0.2 -q :: --cb_type mtr --power_t 0"),
    ("eps .1 mtr", "--cb_explore_adf --epsilon 0.1 -q :: --cb_type mtr"),
    ("eps .05 mtr", "--cb_explore_adf --epsilon 0.05 -q :: --cb_type mtr"),
    ("squarecb", "--cb_explore_adf --squarecb -q ::"),
    ("squarecb gamma 10", "--cb_explore_adf --squarecb --gamma_scale 10 -q ::"),
    ("squarecb gamma 100", "--cb_explore_adf --squarecb --gamma_scale 100 -q ::"),
    ("squarecb gamma 1000", "--cb_explore_adf --squarecb --gamma_scale 1000 -q ::"),
    # The server appends --epsilon <explorationPercentage> to every policy (policy.with_epsilon):
    (
        "squarecb gamma 100 +eps .2",
        "--cb_explore_adf --squarecb --gamma_scale 100 -q :: --epsilon 0.2",
    ),
    ("cover 3", "--cb_explore_adf --cover 3 -q ::"),
    ("bag 5", "--cb_explore_adf --bag 5 -q ::"),
    ("bag 5 +eps .05", "--cb_explore_adf --bag 5 -q :: --epsilon 0.05"),
    ("softmax lambda 10", "--cb_explore_adf --softmax --lambda 10 -q ::"),
    ("softmax lambda 10 +eps .2", "--cb_explore_adf --softmax --lambda 10 -q :: --epsilon 0.2"),
]


@dataclass(frozen=True)
class Run:
    """One policy on one seed: CTR at each checkpoint, CTR of the last window, seconds."""

    label: str
    seed: int
    checkpoints: tuple[float, ...]
    last_window: float
    seconds: float


def checkpoints_for(events: int) -> list[int]:
    return sorted({c for c in (1000, 2500) if c < events} | {events})


def play_offline(label: str, args: str, seed: int, events: int) -> Run:
    """Play ``events`` news-world events, learning each one as soon as it is rewarded."""
    world = NewsWorld(seed)
    ws = vowpalwabbit.Workspace(args + " --json --quiet")
    marks = checkpoints_for(events)
    at: list[float] = []
    total = 0.0
    recent: deque[float] = deque(maxlen=WINDOW)
    start = time.perf_counter()
    try:
        for i in range(1, events + 1):
            it = world.next()
            p = plan(
                context_features=[it.context],
                actions=[(a, [{"article": a}]) for a in it.actions],
                excluded=None,
            )
            ex = ws.parse(p.example)
            try:
                pmf = list(ws.predict(ex))
            finally:
                ws.finish_example(ex)
            chosen = sample_index(pmf, seed_for(f"bench-{seed}-{i}"))
            reward = world.reward(it, p.vw_ids[chosen])
            ex = ws.parse(labelled(p.example, chosen, pmf[chosen], -reward))
            try:
                ws.learn(ex)
            finally:
                ws.finish_example(ex)
            total += reward
            recent.append(reward)
            if i in marks:
                at.append(total / i)
    finally:
        ws.finish()
    return Run(label, seed, tuple(at), sum(recent) / len(recent), time.perf_counter() - start)


def _play(job: tuple[str, str, int, int]) -> Run:
    return play_offline(*job)


def mean_std(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000, help="events per run (default 5000)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per policy (default 5)")
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores)",
    )
    ap.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="ARGS",
        help="extra candidate VW arguments (repeatable)",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only candidates whose label or arguments contain TEXT",
    )
    ap.add_argument(
        "--http",
        action="store_true",
        help="also play banditloop's default policy through a real server",
    )
    ap.add_argument(
        "--http-seeds",
        type=int,
        default=1,
        help="seeds to play through the server with --http (default 1)",
    )
    ap.add_argument(
        "--reward-wait",
        default="PT1S",
        help="rewardWaitTime of the server's loop with --http (default PT1S)",
    )
    opts = ap.parse_args(argv)

    candidates = CANDIDATES + [(args, args) for args in opts.policy]
    if opts.only:
        candidates = [
            (label, args)
            for label, args in candidates
            if any(t in label or t in args for t in opts.only)
        ]
    seeds = list(range(opts.seeds))
    jobs = [(label, args, seed, opts.events) for label, args in candidates for seed in seeds]
    print(
        f"news world, {opts.events} events, seeds {seeds}, {len(candidates)} policies, "
        f"{opts.jobs} processes",
        flush=True,
    )
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=opts.jobs) as pool:
        runs = list(pool.map(_play, jobs))
    elapsed = time.perf_counter() - start

    marks = checkpoints_for(opts.events)
    headers = ["policy", *[f"ctr@{m}" for m in marks], f"last {WINDOW}", "s/run", "VW arguments"]
    rows: list[list[str]] = []
    for label, args in candidates:
        mine = [r for r in runs if r.label == label]
        rows.append(
            [
                label,
                *[mean_std([r.checkpoints[k] for r in mine]) for k in range(len(marks))],
                mean_std([r.last_window for r in mine]),
                f"{statistics.fmean(r.seconds for r in mine):.1f}",
                args,
            ]
        )

    print_table(headers, rows)
    print(f"\n{len(runs)} offline runs in {elapsed:.0f} s\n", flush=True)
    if opts.http:
        compare_http(opts, runs, seeds[: max(1, opts.http_seeds)])


def compare_http(opts: argparse.Namespace, runs: Sequence[Run], seeds: Sequence[int]) -> None:
    """Play banditloop's default through a real server and print it beside the offline run."""
    results = []
    for seed in seeds:
        with server(f'{{"rewardWaitTime":"{opts.reward_wait}"}}') as srv:
            results.append(
                run_http(srv.url, events=opts.events, seed=seed, window=WINDOW, echo=_quiet)
            )
    offline = [r for r in runs if r.label == "banditloop default" and r.seed in seeds]
    headers = ["banditloop default", "seeds", f"ctr@{opts.events}", f"last {WINDOW}", "s/run"]
    rows = [
        [
            f"through HTTP (rewardWaitTime {opts.reward_wait})",
            str(len(results)),
            mean_std([r.ctr for r in results]),
            mean_std([r.last_window_ctr for r in results]),
            f"{statistics.fmean(r.seconds for r in results):.1f}",
        ]
    ]
    if offline:
        rows.append(
            [
                "offline, same seeds",
                str(len(offline)),
                mean_std([r.checkpoints[-1] for r in offline]),
                mean_std([r.last_window for r in offline]),
                f"{statistics.fmean(r.seconds for r in offline):.1f}",
            ]
        )
    print_table(headers, rows)


def _quiet(_line: str) -> None:
    pass


if __name__ == "__main__":
    main()
