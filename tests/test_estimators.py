"""Off-policy estimators: the arithmetic by hand, and one seeded log of the world of
bench/interval_coverage.py (each policy's true value is known), which prints how often
the intervals cover the truth over many seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from interval_coverage import MU, TARGETS, best, covers, logging_pmf, run, truth, uniform

from banditloop.evaluation.estimators import OffPolicy


def test_the_world_separates_the_policies() -> None:
    values = {name: truth(pol) for name, pol in TARGETS.items()}
    assert values["best"] == pytest.approx(0.675)
    assert values["uniform"] == pytest.approx(float(MU.mean()))
    assert values["always_first"] == pytest.approx(0.4)
    logging = truth(logging_pmf)
    assert logging < values["uniform"] < values["best"]


@pytest.mark.parametrize("target", list(TARGETS))
def test_one_seeded_log_is_covered_by_every_interval(target: str) -> None:
    """One case; the coverage rates over many seeds are bench/interval_coverage.py's."""
    value = truth(TARGETS[target])
    est = run(1, 500, TARGETS[target])  # seed 0 is one of the 5% an interval misses
    for name in ("ips", "snips", "dr"):
        e = getattr(est, f"estimate_{name}")()
        assert covers(e.low, e.high, value), (name, e)
    assert covers(*est.interval_cressie_read(), value)


def test_cressie_read_stays_in_the_reward_range_on_small_samples() -> None:
    """With 30 events the Gaussian IPS interval of a deterministic policy is too narrow
    (bench/interval_coverage.py: it covers 78%); Cressie-Read's stays inside [0, 1]."""
    for seed in range(50):
        low, high = run(1000 + seed, 30, best).interval_cressie_read()
        assert 0.0 <= low <= high <= 1.0, seed


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
    # the intervals are cut to the rewards' range [0, 1]: IPS's would be [-0.09, 1.34]
    assert ips.mean() + half > 1.0 and ips.mean() - half < 0.0
    assert (est.estimate_ips().low, est.estimate_ips().high) == (0.0, 1.0)
    within = filled(EVENTS * 40)  # narrower: inside the range, as computed
    n40 = 1.959963984540054 * np.tile(ips, 40).std(ddof=1) / math.sqrt(40 * n)
    assert within.estimate_ips().low == pytest.approx(ips.mean() - n40)
    assert ips.mean() + n40 < 1.0 and within.estimate_ips().high == pytest.approx(ips.mean() + n40)
    snips = (w * r).sum() / w.sum()
    assert est.estimate_snips().value == pytest.approx(snips)
    # delta method: Var(w r - v w) / (n mean(w)^2)
    resid = w * r - snips * w
    var = (resid**2).sum() / (n - 1) / n / w.mean() ** 2
    delta = 1.959963984540054 * math.sqrt(var)
    ess = w.sum() ** 2 / (w**2).sum()
    # never narrower than the rule of three on the effective sample (rewards in [0, 1])
    assert 3 / ess > delta
    snips_est = est.estimate_snips()
    assert snips - max(delta, 3 / ess) < 0.0 and snips + max(delta, 3 / ess) > 1.0
    assert (snips_est.low, snips_est.high) == (0.0, 1.0)
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
