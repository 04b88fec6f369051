"""Learning bake-off: exploration algorithms and settings on every simulated world.

Offline, each candidate sees exactly what the server does: the Rank example built by
``banditloop.ranking.plan`` (Personalizer's JSON, hashed by VW's ``--json`` parser), the
pmf from a ``vowpalwabbit.Workspace(args + " --json --quiet")``, the action drawn by
``banditloop.sampling.sample_index`` seeded from the event ID, and the event learned with
``banditloop.join.labelled(..., cost=-reward)`` once its reward arrives (a world's
``delay``, in events; a reward that never arrives, or arrives after ``--window`` events,
is learned as the default reward 0, as the server's join does).  Reported per world and
candidate, mean ± std over seeds: progressive reward (the mean expected reward of the
chosen actions over all events so far; equal to the CTR in the 0/1 worlds), the reward
over the last ``WINDOW`` events, and the share of the best candidate's final reward.
On the worlds of ``EVALUABLE_WORLDS`` each candidate's own logs are also scored for
evaluability: IPS/SNIPS/DR estimates (with banditloop's diagnostics) of baseline1,
random and "last action" against the world's truth on the same contexts.

The server appends ``--epsilon <explorationPercentage>`` to every policy
(``banditloop.policy.with_epsilon``); candidates are listed as served.

Then ``--http`` plays the default through a real server (``banditloop serve``, reward
wait ``--reward-wait``) with ``banditloop.simulate.run_http`` and compares it with VW
directly on the same stream (same world seed, same event IDs, hence the same draws from
the same pmf).

    .venv/bin/python bench/learning.py --quick            # 5 worlds, 9 candidates, 2 seeds
    .venv/bin/python bench/learning.py                    # the full grid, all worlds
    .venv/bin/python bench/learning.py --world news --only squarecb --seeds 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import vowpalwabbit

from banditloop.config import ServiceConfiguration
from banditloop.evaluation.estimators import OffPolicy
from banditloop.evaluation.replay import Replayable, RewardModel, unsupported
from banditloop.join import labelled
from banditloop.policy import (
    AZURE_DEFAULT_POLICY,
    DEFAULT_POLICY,
    epsilon_of,
    floor,
    with_epsilon,
)
from banditloop.ranking import plan
from banditloop.sampling import sample_index, seed_for
from banditloop.simulate import run_http
from banditloop.worlds import ColdStartWorld, Interaction, NonStationaryWorld, make_world

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, server

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 500
POINTS = 50  # points per curve
EPS = ServiceConfiguration().explorationPercentage
SERVED_DEFAULT = with_epsilon(DEFAULT_POLICY, EPS)
ORACLE = "oracle"
LINUCB = "LinUCB (mabwiser)"
ALL_WORLDS = (
    "news",
    "news_shuffled",
    "digits",
    "wine",
    "breast_cancer",
    "many_actions",
    "nonstationary",
    "delayed",
)
QUICK_WORLDS = ("news", "news_shuffled", "wine", "many_actions", "delayed")
#: Worlds whose logs are also scored for evaluability (the delayed world logs lost
#: rewards as 0, so its truth is not the world's expected reward).
EVALUABLE_WORLDS = ("news", "news_shuffled", "digits", "wine", "breast_cancer", "many_actions")
#: The target policies evaluated on each candidate's logs, with their pmf over K actions.
TARGETS = ("baseline1", "random", "last action")
ESTIMATORS = ("ips", "snips", "dr")

_ADF = "--cb_explore_adf"
#: The policy and explorationPercentage that this benchmark recommends (docs/learning.md).
PROPOSED_POLICY = f"{_ADF} --synthcover --synthcoverpsi 0.3 --clip_p 0.1 -q ::"
PROPOSED_EPS = 0.05
PROPOSED = "synthcover psi .3 clip .1, eps .05 (proposed)"
OLD_DEFAULT = "old default: synthcover, eps 0"
#: (label, VW arguments), as the server runs them.  The first is banditloop's default.
CANDIDATES: list[tuple[str, str]] = [
    ("banditloop default", SERVED_DEFAULT),
    (PROPOSED, with_epsilon(PROPOSED_POLICY, PROPOSED_EPS)),
    (OLD_DEFAULT, f"{_ADF} --synthcover -q :: --epsilon 0"),
    ("synthcover psi .3 clip .1, eps .02", with_epsilon(PROPOSED_POLICY, 0.02)),
    ("synthcover eps .05", f"{_ADF} -q :: --synthcover --epsilon 0.05"),
    ("synthcover eps .2", f"{_ADF} -q :: --synthcover --epsilon 0.2"),
    ("synthcover no -q", f"{_ADF} --synthcover --epsilon 0"),
    ("synthcover psi 0.05", f"{_ADF} -q :: --synthcover --synthcoverpsi 0.05 --epsilon 0"),
    ("synthcover psi 0.3", f"{_ADF} -q :: --synthcover --synthcoverpsi 0.3 --epsilon 0"),
    ("azure default", with_epsilon(AZURE_DEFAULT_POLICY, 0.2)),
    ("eps .2", f"{_ADF} -q :: --cb_type mtr --epsilon 0.2"),
    ("eps .1", f"{_ADF} -q :: --cb_type mtr --epsilon 0.1"),
    ("eps .05", f"{_ADF} -q :: --cb_type mtr --epsilon 0.05"),
    ("eps .02", f"{_ADF} -q :: --cb_type mtr --epsilon 0.02"),
    ("eps .05 no -q", f"{_ADF} --cb_type mtr --epsilon 0.05"),
    ("eps .05 ips", f"{_ADF} -q :: --cb_type ips --epsilon 0.05"),
    ("eps .05 -l 0.1", f"{_ADF} -q :: --cb_type mtr --epsilon 0.05 -l 0.1"),
    ("eps .05 -l 2", f"{_ADF} -q :: --cb_type mtr --epsilon 0.05 -l 2"),
    ("eps .05 power_t 0", f"{_ADF} -q :: --cb_type mtr --epsilon 0.05 --power_t 0"),
    ("squarecb", f"{_ADF} -q :: --squarecb"),
    ("squarecb eps .05", f"{_ADF} -q :: --squarecb --epsilon 0.05"),
    ("squarecb gamma 100", f"{_ADF} -q :: --squarecb --gamma_scale 100"),
    ("regcbopt", f"{_ADF} -q :: --regcbopt"),
    ("regcbopt costs -1..0", f"{_ADF} -q :: --regcbopt --cb_min_cost -1 --cb_max_cost 0"),
    ("regcb costs -1..0", f"{_ADF} -q :: --regcb --cb_min_cost -1 --cb_max_cost 0"),
    ("squarecb costs -1..0", f"{_ADF} -q :: --squarecb --cb_min_cost -1 --cb_max_cost 0"),
    ("bag 5", f"{_ADF} -q :: --bag 5"),
    ("bag 5 eps .05", f"{_ADF} -q :: --bag 5 --epsilon 0.05"),
    ("cover 3", f"{_ADF} -q :: --cover 3"),
    ("cover 3 eps .05", f"{_ADF} -q :: --cover 3 --epsilon 0.05"),
    ("softmax lambda 10", f"{_ADF} -q :: --softmax --lambda 10"),
]
QUICK = (
    "banditloop default",
    OLD_DEFAULT,
    "synthcover eps .05",
    "azure default",
    "eps .05",
    "squarecb",
    "squarecb eps .05",
)


@dataclass
class Run:
    """One candidate on one world and seed."""

    world: str
    label: str
    seed: int
    curve: list[float]  # progressive reward at each of POINTS checkpoints
    final: float
    last: float  # mean over the last WINDOW events
    optimum: float  # mean expected reward of the best actions
    seconds: float
    recovery: int | None = None  # nonstationary: events after the shift to recover
    extra: dict[str, float] = field(default_factory=dict)


def event_id(world: str, seed: int, i: int) -> str:
    return f"{world}-{seed}-{i}"


def checkpoints(events: int) -> list[int]:
    return sorted({max(1, events * k // POINTS) for k in range(1, POINTS + 1)})


def recovery(
    values: Sequence[float], shift: int, block: int = 100, share: float = 0.9
) -> int | None:
    """Events after ``shift`` until a block of ``block`` events, all after the shift,
    earns ``share`` of what the ``WINDOW`` events before the shift earned."""
    before = values[max(0, shift - WINDOW) : shift]
    target = share * statistics.fmean(before)
    for end in range(shift + block, len(values) + 1, 10):
        if statistics.fmean(values[end - block : end]) >= target:
            return end - shift
    return None


def summarize(
    world: str, label: str, seed: int, values: list[float], best: float, secs: float
) -> Run:
    n = len(values)
    curve, total, marks, k = [], 0.0, checkpoints(n), 0
    for i, v in enumerate(values, 1):
        total += v
        if k < len(marks) and i == marks[k]:
            curve.append(total / i)
            k += 1
    run = Run(
        world, label, seed, curve, total / n, statistics.fmean(values[-WINDOW:]), best / n, secs
    )
    if world == "nonstationary":
        run.recovery = recovery(values, NonStationaryWorld(0).shift_at)
    return run


def play_vw(world_name: str, label: str, args: str, seed: int, events: int, window: int) -> Run:
    """Play ``events`` events of a world with VW, as the server would (see module doc)."""
    world = make_world(world_name, seed)
    ws = vowpalwabbit.Workspace(args + " --json --quiet")
    epsilon = epsilon_of(args)
    scored = world_name in EVALUABLE_WORLDS
    reward_model = RewardModel() if scored else None
    offs = {t: OffPolicy() for t in TARGETS}
    truth = dict.fromkeys(TARGETS, 0.0)
    pending: dict[int, list[str]] = {}
    values: list[float] = []
    best = 0.0
    cold: list[float] = []  # cold_start: probability of the new article when it is shown
    start = time.perf_counter()
    try:
        for i in range(1, events + 1):
            it = world.next()
            p = plan([it.context], [(a.id, [a.features]) for a in it.actions], None)
            ex = ws.parse(p.example)
            try:
                pmf = floor(list(ws.predict(ex)), epsilon)  # as policy.Policy serves it
            finally:
                ws.finish_example(ex)
            chosen = sample_index(pmf, seed_for(event_id(world_name, seed, i)))
            action = p.vw_ids[chosen]
            reward = world.reward(it, action)
            if reward_model is not None:
                score_event(world, it, p.example, p.vw_ids, pmf, chosen, reward, reward_model, offs)
                k = len(p.vw_ids)
                truth["baseline1"] += world.expected(it, p.vw_ids[0])
                truth["random"] += statistics.fmean(world.expected(it, a) for a in p.vw_ids)
                truth["last action"] += world.expected(it, p.vw_ids[k - 1])
            values.append(world.expected(it, action))
            best += world.expected(it, world.best(it))
            if isinstance(world, ColdStartWorld) and it.index > world.appear_at:
                cold.append(pmf[p.vw_ids.index(world.new_article)] / sum(pmf))
            delay = it.delay
            if delay is None or delay > window:
                delay, reward = window, 0.0
            prob = pmf[chosen] / sum(pmf)
            pending.setdefault(i + delay, []).append(labelled(p.example, chosen, prob, -reward))
            for line in pending.pop(i, ()):
                ex = ws.parse(line)
                try:
                    ws.learn(ex)
                finally:
                    ws.finish_example(ex)
    finally:
        ws.finish()
    run = summarize(world_name, label, seed, values, best, time.perf_counter() - start)
    if cold:
        run.extra = cold_start_figures(world_name, values, cold)
    if scored:
        run.extra = evaluability(offs, {t: v / events for t, v in truth.items()})
    return run


def target_pmf(target: str, k: int) -> list[float]:
    if target == "baseline1":
        return [1.0] + [0.0] * (k - 1)
    if target == "random":
        return [1.0 / k] * k
    return [0.0] * (k - 1) + [1.0]


def score_event(
    world: object,
    it: Interaction,
    example: str,
    ids: list[str],
    pmf: list[float],
    chosen: int,
    reward: float,
    reward_model: RewardModel,
    offs: dict[str, OffPolicy],
) -> None:
    """Add one logged event to the estimates of every target (as replay.evaluate does)."""
    total = sum(pmf)
    logged = [p / total for p in pmf]
    ev = Replayable(0.0, example, len(ids), chosen, logged[chosen], logged, reward)
    r_hat = reward_model.predict_then_learn(ev)  # predicted before it is learned
    for t, off in offs.items():
        target = target_pmf(t, len(ids))
        v_hat = sum(a * b for a, b in zip(target, r_hat, strict=True))
        off.add(ev.p_log, reward, target[chosen], r_hat[chosen], v_hat, unsupported(ev, target))


def evaluability(offs: dict[str, OffPolicy], truth: dict[str, float]) -> dict[str, float]:
    """Per target and estimator: 1 if estimable, 1 if its interval covers the truth, and
    its absolute error (NaN when not estimable)."""
    out: dict[str, float] = {}
    for t, off in offs.items():
        estimable = off.verdict() is None
        ests = {"ips": off.estimate_ips(), "snips": off.estimate_snips(), "dr": off.estimate_dr()}
        for name, est in ests.items():
            key = f"{t}/{name}"
            out[f"{key}/estimable"] = float(estimable)
            out[f"{key}/covers"] = float(estimable and est.low <= truth[t] <= est.high)
            out[f"{key}/error"] = abs(est.value - truth[t]) if estimable else float("nan")
    return out


def cold_start_figures(world_name: str, values: list[float], cold: list[float]) -> dict[str, float]:
    w = ColdStartWorld(0)
    return {
        "p_new_first": cold[0],
        "p_new_mean_100": statistics.fmean(cold[:100]),
        "recovery": float(recovery(values, w.appear_at) or -1),
    }


def play_reference(world_name: str, label: str, seed: int, events: int) -> Run:
    """The known optimum (``oracle``) or LinUCB from mabwiser (one linear model per arm)."""
    world = make_world(world_name, seed)
    values: list[float] = []
    best = 0.0
    start = time.perf_counter()
    if label == ORACLE:
        for _ in range(events):
            it = world.next()
            values.append(world.expected(it, world.best(it)))
            best += values[-1]
        return summarize(world_name, label, seed, values, best, time.perf_counter() - start)
    import numpy as np
    from mabwiser.mab import MAB, LearningPolicy

    first = world.next()
    mab: MAB | None = None
    pending: dict[int, list[tuple[tuple[float, ...], str, float]]] = {}
    it: Interaction | None = first
    for i in range(1, events + 1):
        it = it or world.next()
        arms = it.action_ids
        if mab is None or set(arms) - set(mab.arms):
            if mab is None:
                mab = MAB(arms, LearningPolicy.LinUCB(alpha=1.0), seed=seed)
                mab.fit([arms[0]], [0.0], np.zeros((1, len(it.vector))))
            for a in set(arms) - set(mab.arms):
                mab.add_arm(a)
        action = str(mab.predict(np.array([it.vector])))
        reward = world.reward(it, action)
        values.append(world.expected(it, action))
        best += world.expected(it, world.best(it))
        if it.delay is not None:
            pending.setdefault(i + it.delay, []).append((it.vector, action, reward))
        due = pending.pop(i, [])
        if due:
            mab.partial_fit(
                [a for _, a, _ in due], [r for _, _, r in due], np.array([v for v, _, _ in due])
            )
        it = None
    return summarize(world_name, label, seed, values, best, time.perf_counter() - start)


def _play(job: tuple[str, str, str, int, int, int]) -> Run:
    world, label, args, seed, events, window = job
    if label in (ORACLE, LINUCB):
        return play_reference(world, label, seed, events)
    return play_vw(world, label, args, seed, events, window)


def mean_std(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def report(
    world: str, events: int, labels: Sequence[str], args: dict[str, str], runs: Sequence[Run]
) -> dict[str, float]:
    """Print one world's table; returns the mean final reward per candidate."""
    mine = {label: [r for r in runs if r.world == world and r.label == label] for label in labels}
    finals = {label: statistics.fmean(r.final for r in rs) for label, rs in mine.items() if rs}
    learners = [label for label in finals if label != ORACLE]
    top = max(finals[label] for label in learners)
    headers = ["candidate", "final", f"last {WINDOW}", "of best", "s/run"]
    if world == "nonstationary":
        headers.append("recovery (events)")
    headers.append("VW arguments")
    rows = []
    for label, rs in sorted(mine.items(), key=lambda kv: -finals.get(kv[0], 0)):
        if not rs:
            continue
        row = [
            label,
            mean_std([r.final for r in rs]),
            mean_std([r.last for r in rs]),
            f"{finals[label] / top:.0%}" if label != ORACLE else "",
            f"{statistics.fmean(r.seconds for r in rs):.1f}",
        ]
        if world == "nonstationary":
            rec = [r.recovery for r in rs]
            ok = [x for x in rec if x is not None]
            row.append(
                (f"{statistics.median(ok):.0f}" if ok else "never")
                + (f" ({len(rec) - len(ok)} never)" if len(ok) < len(rec) else "")
            )
        row.append(args.get(label, ""))
        rows.append(row)
    seeds = max(len(rs) for rs in mine.values())
    print(f"\n### {world} ({events} events, {seeds} seeds)\n")
    print_table(headers, rows)
    return finals


def plot(
    path: Path,
    worlds: Sequence[str],
    labels: Sequence[str],
    runs: Sequence[Run],
    events: dict[str, int],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(worlds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, world in zip(axes.flat, worlds, strict=False):
        xs = checkpoints(events[world])
        for k, label in enumerate(labels):
            rs = [r for r in runs if r.world == world and r.label == label]
            if not rs:
                continue
            ys = [statistics.fmean(r.curve[j] for r in rs) for j in range(len(xs))]
            style = "--" if label in (ORACLE, LINUCB) else "-"
            width = 2.5 if label == "banditloop default" else 1.2
            ax.plot(xs, ys, style, color=cmap(k % 20), lw=width, label=label)
        ax.set_title(world)
        ax.set_xlabel("events")
        ax.set_ylabel("progressive reward")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(worlds) :]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset: about 2 minutes on 2 cores")
    ap.add_argument(
        "--events",
        type=int,
        default=None,
        help="events per run (default 5000; quick: 3000, news and nonstationary 5000)",
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds per candidate (default 5; quick 2)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--world", action="append", default=[], help="only this world (repeatable)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="only candidates whose label contains TEXT (=TEXT: is TEXT)",
    )
    ap.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="ARGS",
        help="extra candidate (VW arguments, as served)",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=1000,
        help="events after which a missing reward is learned as 0",
    )
    ap.add_argument("--no-reference", action="store_true", help="skip the oracle and LinUCB")
    ap.add_argument("--no-http", action="store_true", help="skip the run through a real server")
    ap.add_argument(
        "--cold-start",
        action="store_true",
        help="also the cold-start world (on by default except with --quick)",
    )
    ap.add_argument(
        "--http-seeds", type=int, default=1, help="seeds through the server (default 1)"
    )
    ap.add_argument(
        "--reward-wait", default="PT1S", help="rewardWaitTime of the server's loop (default PT1S)"
    )
    ap.add_argument(
        "--plot",
        type=lambda s: Path(s) if s else None,
        default=ROOT / "docs" / "img" / "learning.png",
        help="PNG to write ('': none)",
    )
    opts = ap.parse_args(argv)

    worlds = opts.world or list(QUICK_WORLDS if opts.quick else ALL_WORLDS)
    seeds = list(range(opts.seeds or (2 if opts.quick else 5)))
    events = {
        w: opts.events or (5000 if not opts.quick or w in ("news", "nonstationary") else 3000)
        for w in worlds
    }
    candidates = CANDIDATES + [(a, a) for a in opts.policy]
    if opts.quick:
        candidates = [c for c in candidates if c[0] in QUICK or c[1] in opts.policy]
    if opts.only:
        candidates = [
            c
            for c in candidates
            if c[0] == "banditloop default"
            or any(c[0] == t[1:] if t.startswith("=") else t in c[0] for t in opts.only)
        ]
    refs = [] if opts.no_reference else [(ORACLE, ""), (LINUCB, "")]
    labels = [label for label, _ in candidates + refs]
    args = dict(candidates)
    jobs = [
        (w, label, a, seed, events[w], opts.window)
        for w in worlds
        for label, a in candidates + refs
        for seed in seeds
    ]
    jobs.sort(
        key=lambda j: (
            -(events[j[0]] * (50 if j[0] == "many_actions" else 1) * (5 if j[1] == LINUCB else 1))
        )
    )
    print(
        f"{len(worlds)} worlds, {len(labels)} candidates, seeds {seeds}, {opts.jobs} processes; "
        f"served default: {SERVED_DEFAULT}",
        flush=True,
    )
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=opts.jobs) as pool:
        runs = list(pool.map(_play, jobs))
    print(f"{len(runs)} offline runs in {time.perf_counter() - start:.0f} s", flush=True)

    summary = []
    for w in worlds:
        finals = report(w, events[w], labels, args, runs)
        learners = {k: v for k, v in finals.items() if k != ORACLE}
        top = max(learners, key=learners.__getitem__)
        vw = {k: v for k, v in learners.items() if k != LINUCB}
        top_vw = max(vw, key=vw.__getitem__)
        d = finals.get("banditloop default")
        summary.append(
            [
                w,
                f"{d:.3f}" if d is not None else "",
                f"{top_vw} {vw[top_vw]:.3f}",
                f"{d / vw[top_vw]:.0%}" if d is not None else "",
                f"{top} {learners[top]:.3f}",
                f"{finals[ORACLE]:.3f}" if ORACLE in finals else "",
            ]
        )
    print("\n### summary: the default against the best\n")
    print_table(
        ["world", "default", "best VW candidate", "default/best VW", "best overall", "optimum"],
        summary,
    )
    evaluability_report(worlds, [c[0] for c in candidates], runs)
    if opts.plot:
        plot(opts.plot, worlds, labels, runs, events)
        print(f"\nplot: {opts.plot}", flush=True)
    if opts.cold_start or (not opts.quick and not opts.world):
        cold_start(seeds, candidates, opts.window, opts.jobs)
    if not opts.no_http:
        compare_http(opts, seeds[: max(1, opts.http_seeds)])
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def evaluability_report(worlds: Sequence[str], labels: Sequence[str], runs: Sequence[Run]) -> None:
    """Both scores per candidate: online reward against the best candidate per world,
    and how honestly its own logs evaluate baseline1, random and 'last action'."""
    scored = [w for w in worlds if w in EVALUABLE_WORLDS]
    if not scored:
        return
    rows = []
    for label in labels:
        rs = [r for r in runs if r.label == label and r.world in scored and r.extra]
        if not rs:
            continue
        shares = []
        for w in scored:
            finals = {
                lab: statistics.fmean(r.final for r in runs if r.world == w and r.label == lab)
                for lab in labels
                if any(r.world == w and r.label == lab for r in runs)
            }
            shares.append(finals[label] / max(finals.values()))
        row = [label, f"{statistics.fmean(shares):.1%}", f"{min(shares):.1%}"]
        for est in ESTIMATORS:
            keys = [f"{t}/{est}" for t in TARGETS]
            ok = sum(r.extra[f"{k}/estimable"] for r in rs for k in keys)
            cov = sum(r.extra[f"{k}/covers"] for r in rs for k in keys)
            errs = [r.extra[f"{k}/error"] for r in rs for k in keys]
            errs = [e for e in errs if e == e]
            cases = len(rs) * len(keys)
            mae = f"{statistics.fmean(errs):.3f}" if errs else "n/a"
            row.append(f"{cov / ok:.0%} of {ok:.0f}/{cases}, MAE {mae}" if ok else f"0/{cases}")
        shuffled = [r for r in rs if r.world == "news_shuffled"]
        if shuffled:
            ok = sum(r.extra["baseline1/snips/estimable"] for r in shuffled)
            cov = sum(r.extra["baseline1/snips/covers"] for r in shuffled)
            row.append(f"{cov:.0f}/{len(shuffled)} ({ok:.0f} estimable)")
        else:
            row.append("")
        rows.append(row)
    print(
        f"\n### evaluability on the candidates' own logs ({', '.join(scored)}; targets "
        f"{', '.join(TARGETS)})\n"
    )
    print(
        "Reward: mean and worst share of the best candidate's progressive reward per world. "
        "Per estimator: share of estimable cases whose 95% interval covers the truth, of "
        "estimable/all (world x seed x target) cases, and the mean absolute error of the "
        "estimable ones. Not estimable = the estimate is withheld (diagnostics).\n"
    )
    print_table(
        [
            "candidate",
            "reward (mean)",
            "reward (worst)",
            "IPS covers",
            "SNIPS covers",
            "DR covers",
            "news_shuffled baseline1 SNIPS covers 1/7",
        ],
        rows,
    )


def cold_start(
    seeds: Sequence[int], candidates: Sequence[tuple[str, str]], window: int, jobs: int
) -> None:
    """A never-seen article appears at event 2500 and is the best for one context of four."""
    chosen = [
        c
        for c in candidates
        if c[0] in ("banditloop default", PROPOSED, "eps .05", "squarecb", "azure default")
    ]
    work = [("cold_start", label, a, seed, 5000, window) for label, a in chosen for seed in seeds]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(_play, work))
    rows = []
    for label, _ in chosen:
        rs = [r for r in runs if r.label == label]
        rec = [r.extra["recovery"] for r in rs]
        ok = [x for x in rec if x >= 0]
        rows.append(
            [
                label,
                f"{statistics.fmean(r.extra['p_new_first'] for r in rs):.3f}",
                f"{statistics.fmean(r.extra['p_new_mean_100'] for r in rs):.3f}",
                (f"{statistics.median(ok):.0f}" if ok else "never")
                + (f" ({len(rec) - len(ok)} never)" if len(ok) < len(rec) else ""),
                mean_std([r.last for r in rs]),
            ]
        )
    print(
        f"\n### cold start: a new article at event {ColdStartWorld(0).appear_at} "
        f"({len(seeds)} seeds)\n"
    )
    print_table(
        ["candidate", "P(new) first", "P(new) first 100", "events to recover", f"last {WINDOW}"],
        rows,
    )


def compare_http(opts: argparse.Namespace, seeds: Sequence[int]) -> None:
    """Defaults through a real server with reward delay, and VW on the same stream."""
    setups = [("proposed", PROPOSED_POLICY, PROPOSED_EPS)]
    worlds = ["news"] if opts.quick else ["news", "delayed"]
    if not opts.quick:
        setups.append(("current", DEFAULT_POLICY, EPS))
    rows = []
    for name, policy, eps in setups:
        served = with_epsilon(policy, eps)
        for world in worlds:
            for seed in seeds:
                config = f'{{"rewardWaitTime":"{opts.reward_wait}","explorationPercentage":{eps}}}'
                os.environ["BANDITLOOP_DEFAULT_POLICY"] = policy
                try:
                    with server(config) as srv:
                        res = run_http(
                            srv.url,
                            events=5000,
                            seed=seed,
                            window=WINDOW,
                            echo=_quiet,
                            world=world,
                            event_id_prefix=f"{world}-{seed}-",
                        )
                finally:
                    del os.environ["BANDITLOOP_DEFAULT_POLICY"]
                direct = play_vw(world, name, served, seed, 5000, opts.window)
                last = statistics.fmean(res.rewards[-WINDOW:])
                rows.append(
                    [
                        f"{name}: {served}",
                        world,
                        str(seed),
                        f"HTTP, rewardWaitTime {opts.reward_wait}",
                        f"{res.ctr:.3f}",
                        f"{last:.3f}",
                        f"{res.seconds:.0f}",
                    ]
                )
                rows.append(
                    [
                        f"{name}: {served}",
                        world,
                        str(seed),
                        "VW directly, same stream",
                        f"{direct.final:.3f}",
                        f"{direct.last:.3f}",
                        f"{direct.seconds:.1f}",
                    ]
                )
    print("\n### through the live HTTP loop\n")
    headers = ["policy as served", "world", "seed", "run", "ctr@5000", f"last {WINDOW}", "s"]
    print_table(headers, rows)


def _quiet(_line: str) -> None:
    pass


if __name__ == "__main__":
    main()
