"""Off-policy estimators against known truths.

A small contextual world where each policy's true value is computable: 4 contexts drawn
uniformly, 4 actions, Bernoulli rewards with known means.  Logs are drawn by an
epsilon-greedy logging policy (known propensities); over many seeded runs the 95%
intervals of IPS, SNIPS and DR must cover the true value about 95% of the time, and the
Cressie-Read interval at least about as often.  Seeds are fixed, so these are not flaky.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from banditloop.evaluation.estimators import OffPolicy

#: One xdist worker runs this module: its tests share a module-scoped fixture.
pytestmark = pytest.mark.xdist_group("estimators")

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


SEEDS = range(200)
N_EVENTS = 500


@pytest.fixture(scope="module")
def runs() -> dict[str, list[OffPolicy]]:
    return {name: [run(s, N_EVENTS, pol) for s in SEEDS] for name, pol in TARGETS.items()}


def test_the_world_separates_the_policies() -> None:
    values = {name: truth(pol) for name, pol in TARGETS.items()}
    assert values["best"] == pytest.approx(0.675)
    assert values["uniform"] == pytest.approx(float(MU.mean()))
    assert values["always_first"] == pytest.approx(0.4)
    logging = truth(logging_pmf)
    assert logging < values["uniform"] < values["best"]


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_gaussian_intervals_cover_the_truth_at_the_nominal_rate(
    runs: dict[str, list[OffPolicy]], target: str, estimator: str
) -> None:
    value = truth(TARGETS[target])
    hits, errors = 0, []
    for est in runs[target]:
        e = getattr(est, f"estimate_{estimator}")()
        hits += covers(e.low, e.high, value)
        errors.append(e.value - value)
    rate = hits / len(SEEDS)
    print(f"{target} {estimator}: coverage {rate:.3f}, bias {np.mean(errors):+.4f}")
    assert 0.88 <= rate <= 0.99, rate
    # unbiased (IPS, DR) or nearly so (SNIPS): the mean error is small against the spread
    assert abs(np.mean(errors)) < 3 * np.std(errors) / math.sqrt(len(SEEDS))


@pytest.mark.parametrize("target", list(TARGETS))
def test_cressie_read_interval_covers_at_least_nominally(
    runs: dict[str, list[OffPolicy]], target: str
) -> None:
    value = truth(TARGETS[target])
    hits = sum(covers(*est.interval_cressie_read(), value) for est in runs[target])
    rate = hits / len(SEEDS)
    print(f"{target} cressie-read: coverage {rate:.3f}")
    assert rate >= 0.92, rate


def test_cressie_read_behaves_on_small_samples() -> None:
    """With 30 events the Gaussian IPS interval of the deterministic policy undercovers;
    the Cressie-Read one does not, and it is always inside the reward range."""
    value = truth(best)
    gauss = cr = 0
    for seed in range(300):
        est = run(1000 + seed, 30, best)
        e = est.estimate_ips()
        gauss += covers(e.low, e.high, value)
        low, high = est.interval_cressie_read()
        assert 0.0 <= low <= high <= 1.0
        cr += covers(low, high, value)
    print(f"n=30 best: gaussian IPS {gauss / 300:.3f}, cressie-read {cr / 300:.3f}")
    assert cr / 300 >= 0.93
    assert cr > gauss


def test_interval_width_shrinks_with_more_events() -> None:
    small, large = run(5, 200, uniform), run(5, 5000, uniform)
    for name in ("ips", "snips", "dr"):
        s, big = getattr(small, f"estimate_{name}")(), getattr(large, f"estimate_{name}")()
        assert big.high - big.low < 0.5 * (s.high - s.low)


# -- the arithmetic, by hand ------------------------------------------------------------

EVENTS = [  # p_log, r, p_target, r_hat, v_hat
    (0.5, 1.0, 1.0, 0.4, 0.6),
    (0.25, 0.0, 0.0, 0.2, 0.5),
    (0.8, 1.0, 0.5, 0.7, 0.3),
    (0.1, 0.0, 1.0, 0.1, 0.1),
    (0.5, 1.0, 0.25, 0.9, 0.45),
]


def filled(events: list[tuple[float, ...]]) -> OffPolicy:
    est = OffPolicy()
    for ev in events:
        est.add(*ev)
    return est


def test_estimates_by_hand() -> None:
    est = filled(EVENTS)
    w = np.array([pt / pl for pl, _, pt, _, _ in EVENTS])
    r = np.array([e[1] for e in EVENTS])
    r_hat = np.array([e[3] for e in EVENTS])
    v_hat = np.array([e[4] for e in EVENTS])
    n = len(EVENTS)
    ips = w * r
    assert est.estimate_ips().value == pytest.approx(ips.mean())
    half = 1.959963984540054 * ips.std(ddof=1) / math.sqrt(n)
    assert est.estimate_ips().high - est.estimate_ips().value == pytest.approx(half)
    snips = (w * r).sum() / w.sum()
    assert est.estimate_snips().value == pytest.approx(snips)
    # delta method: Var(w r - v w) / (n mean(w)^2)
    resid = w * r - snips * w
    var = (resid**2).sum() / (n - 1) / n / w.mean() ** 2
    delta = 1.959963984540054 * math.sqrt(var)
    ess = w.sum() ** 2 / (w**2).sum()
    # never narrower than the rule of three on the effective sample (rewards in [0, 1])
    assert 3 / ess > delta
    assert est.estimate_snips().high - snips == pytest.approx(max(delta, 3 / ess))
    dr = v_hat + w * (r - r_hat)
    assert est.estimate_dr().value == pytest.approx(dr.mean())
    diagnostics = est.diagnostics()
    assert diagnostics["effectiveSampleSize"] == pytest.approx(ess)
    assert diagnostics["maxImportanceWeight"] == pytest.approx(w.max())
    assert diagnostics["missingSupportEvents"] == 0
    # five events weigh as 1.6: too few to say anything, so the summary withholds it
    summary = est.summary()
    assert summary["diagnostics"] == diagnostics and diagnostics["estimable"] is False
    assert "effective sample size 1.6" in diagnostics["reason"]
    assert summary["expectedReward"] is None and summary["confidenceInterval"] == [None, None]
    assert summary["events"] == n
    assert set(summary["estimators"]) == {"ips", "snips", "dr", "cressieReadInterval"}
    many = filled(EVENTS * 10)  # the same events ten times: ESS 16, estimable
    assert many.summary()["diagnostics"]["estimable"] is True
    assert many.summary()["expectedReward"] == pytest.approx(snips)  # the wire's is SNIPS


def test_too_few_events_give_unbounded_intervals() -> None:
    empty = OffPolicy()
    assert math.isnan(empty.estimate_ips().value)
    one = filled(EVENTS[:1])
    assert one.estimate_ips().low == -math.inf and one.estimate_ips().high == math.inf
    assert one.interval_cressie_read() == (-math.inf, math.inf)
    never = filled([(0.5, 1.0, 0.0, 0.0, 0.0), (0.5, 0.0, 0.0, 0.0, 0.0)])
    assert math.isnan(never.estimate_snips().value)  # the target never takes a logged action
    wire = never.summary()
    assert wire["expectedReward"] is None and wire["confidenceInterval"] == [None, None]


def _estimates(est: OffPolicy) -> list[float]:
    out = []
    for name in ("ips", "snips", "dr"):
        e = getattr(est, f"estimate_{name}")()
        out += [e.value, e.low, e.high]
    return out


def test_sums_round_trip() -> None:
    est = run(11, 300, uniform)
    again = OffPolicy.from_sums(est.sums())
    assert again.n == est.n == 300
    assert _estimates(again) == pytest.approx(_estimates(est), rel=1e-12)
    assert again.sums() == est.sums()


def test_merged_buckets_equal_one_pass() -> None:
    """What the time series does: per-bucket sums added up equal one pass over all events."""
    rng = np.random.default_rng(3)
    events = [
        (
            float(rng.choice([0.1, 0.3, 0.6])),
            float(rng.random() < 0.4),
            float(rng.random()),
            float(rng.random()),
            float(rng.random()),
        )
        for _ in range(400)
    ]
    whole = filled(events)
    buckets = [filled(events[i : i + 50]) for i in range(0, 400, 50)]
    merged = [0.0] * len(whole.sums())
    for b in buckets:
        merged = [a + b for a, b in zip(merged, b.sums(), strict=True)]
    combined = OffPolicy.from_sums(merged)
    assert combined.n == 400
    assert _estimates(combined) == pytest.approx(_estimates(whole), rel=1e-9)
