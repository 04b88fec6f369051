"""How often the 95% intervals cover the truth: the off-policy estimators'
(IPS, SNIPS, DR, Cressie-Read) and the holdout lift's (docs/evaluation.md,
docs/holdout.md).

A small contextual world where each policy's true value is computable: 4 contexts
drawn uniformly, 4 actions, Bernoulli rewards with known means. Logs are drawn by an
epsilon-greedy logging policy (known propensities). Over many seeded runs a 95%
interval should cover the true value about 95% of the time. Seeded: the same figures
every run. ``python bench/interval_coverage.py [--seeds 200] [--events 500]``
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable

import numpy as np

from banditloop.evaluation.estimators import OffPolicy
from banditloop.holdout import compare

# mean reward of action a in context x
MU = np.array(
    [
        [0.2, 0.6, 0.1, 0.3],
        [0.5, 0.1, 0.7, 0.2],
        [0.3, 0.3, 0.2, 0.8],
        [0.6, 0.4, 0.3, 0.1],
    ]
)
N_CONTEXTS, N_ACTIONS = MU.shape
EPSILON = 0.3
LOGGING_GREEDY = np.array([2, 3, 0, 1])  # a poor greedy choice per context

Policy = Callable[[int], np.ndarray]  # context -> pmf over actions


def logging_pmf(x: int) -> np.ndarray:
    pmf = np.full(N_ACTIONS, EPSILON / N_ACTIONS)
    pmf[LOGGING_GREEDY[x]] += 1 - EPSILON
    return pmf


def uniform(x: int) -> np.ndarray:
    return np.full(N_ACTIONS, 1 / N_ACTIONS)


def always_first(x: int) -> np.ndarray:
    return np.eye(N_ACTIONS)[0]


def best(x: int) -> np.ndarray:
    return np.eye(N_ACTIONS)[int(np.argmax(MU[x]))]


TARGETS: dict[str, Policy] = {"uniform": uniform, "always_first": always_first, "best": best}


def truth(policy: Policy) -> float:
    return float(np.mean([policy(x) @ MU[x] for x in range(N_CONTEXTS)]))


def run(seed: int, n: int, policy: Policy) -> OffPolicy:
    """One log of n events, estimated for ``policy`` (DR with a constant reward model)."""
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, N_CONTEXTS, n)
    logged = np.array([logging_pmf(x) for x in range(N_CONTEXTS)])
    actions = (rng.random(n)[:, None] > np.cumsum(logged[xs], axis=1)).sum(axis=1)
    actions = np.minimum(actions, N_ACTIONS - 1)
    rewards = (rng.random(n) < MU[xs, actions]).astype(float)
    p_log = logged[xs, actions]
    p_target = np.array([policy(x) for x in range(N_CONTEXTS)])[xs, actions]
    est = OffPolicy()
    r_hat = 0.5  # a trivial reward model: DR stays unbiased, only the variance moves
    for pl, r, pt in zip(p_log.tolist(), rewards.tolist(), p_target.tolist(), strict=True):
        est.add(pl, r, pt, r_hat, r_hat)
    return est


def covers(low: float, high: float, value: float) -> bool:
    return low <= value <= high


def estimator_rows(seeds: int, events: int) -> list[tuple[str, str, float, float]]:
    """(target, estimator, coverage, mean error) over ``seeds`` logs of ``events``."""
    rows = []
    for name, policy in TARGETS.items():
        value = truth(policy)
        runs = [run(s, events, policy) for s in range(seeds)]
        for estimator in ("ips", "snips", "dr"):
            ests = [getattr(r, f"estimate_{estimator}")() for r in runs]
            hits = sum(covers(e.low, e.high, value) for e in ests)
            bias = float(np.mean([e.value - value for e in ests]))
            rows.append((name, estimator, hits / seeds, bias))
        hits = sum(covers(*r.interval_cressie_read(), value) for r in runs)
        rows.append((name, "cressie-read", hits / seeds, float("nan")))
    return rows


def lift_coverage(seeds: int) -> float:
    """The holdout lift's Welch interval: loop 0.5 against holdout 0.4, 400 and 100 events."""
    covered = 0
    for seed in range(seeds):
        rng = random.Random(seed)
        loop = [float(rng.random() < 0.5) for _ in range(400)]
        hold = [float(rng.random() < 0.4) for _ in range(100)]
        r = compare(loop, hold)
        covered += r["low"] < 0.1 < r["high"]
    return covered / seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--events", type=int, default=500)
    a = ap.parse_args()
    print(f"{a.seeds} seeds of {a.events} events; 95% intervals")
    print(f"{'target':<14}{'estimator':<14}{'coverage':>9}{'mean error':>12}")
    for target, estimator, rate, bias in estimator_rows(a.seeds, a.events):
        error = "" if np.isnan(bias) else f"{bias:+.4f}"
        print(f"{target:<14}{estimator:<14}{rate:>9.3f}{error:>12}")
    small = estimator_rows(a.seeds, 30)
    best_small = {e: rate for t, e, rate, _ in small if t == "best"}
    print(
        f"30 events, deterministic best policy: Gaussian IPS {best_small['ips']:.3f}, "
        f"Cressie-Read {best_small['cressie-read']:.3f}"
    )
    print(f"holdout lift (Welch), {a.seeds} worlds: coverage {lift_coverage(a.seeds):.3f}")


if __name__ == "__main__":
    main()
