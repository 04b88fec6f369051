"""Off-policy estimators: IPS, SNIPS and doubly robust, with 95% intervals.

Each logged event contributes the logged probability of the action taken
(``p_log``), the reward observed (``r``), the target policy's probability of
that action (``p_target``) and, for doubly robust, the reward model's
prediction for that action (``r_hat``) and its expectation under the target
policy (``v_hat``).  The Gaussian intervals are 1.96 standard errors (the
original's ``1.96 * sqrt(s^2/N)``); the Cressie-Read interval of VW's own
``vw-estimators`` behaves on small samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from estimators.bandits import cressieread

Z95 = 1.959963984540054


@dataclass
class _Moments:
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.total_sq += x * x

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def half_width(self) -> float:
        if self.n < 2:
            return math.inf
        var = max(0.0, (self.total_sq - self.total**2 / self.n) / (self.n - 1))
        return Z95 * math.sqrt(var / self.n)


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "expectedReward": _num(self.value),
            "confidenceInterval": [_num(self.low), _num(self.high)],
        }


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class OffPolicy:
    """Accumulates events for one target policy; cheap to update, read at any time."""

    r_min: float = 0.0
    r_max: float = 1.0
    ips: _Moments = field(default_factory=_Moments)
    dr: _Moments = field(default_factory=_Moments)
    w: _Moments = field(default_factory=_Moments)
    wr: _Moments = field(default_factory=_Moments)  # for SNIPS' delta-method interval
    sum_w_sq: float = 0.0
    sum_wr_sq: float = 0.0
    sum_w_wr: float = 0.0
    cr: Any = None

    def add(
        self, p_log: float, r: float, p_target: float, r_hat: float = 0.0, v_hat: float = 0.0
    ) -> None:
        w = p_target / p_log
        self.ips.add(w * r)
        self.dr.add(v_hat + w * (r - r_hat))
        self.w.add(w)
        self.wr.add(w * r)
        self.sum_w_sq += w * w
        self.sum_wr_sq += (w * r) ** 2
        self.sum_w_wr += w * w * r
        self.r_min, self.r_max = min(self.r_min, r), max(self.r_max, r)
        if self.cr is None:
            self.cr = cressieread.Interval(
                rmin=self.r_min, rmax=self.r_max, empirical_r_bounds=True
            )
        self.cr.add_example(p_log, r, p_target)

    @property
    def n(self) -> int:
        return self.ips.n

    def sums(self) -> list[float]:
        """Everything but the Cressie-Read state, as numbers that add up across buckets."""
        return [
            self.ips.n,
            self.ips.total,
            self.ips.total_sq,
            self.dr.total,
            self.dr.total_sq,
            self.w.total,
            self.wr.total,
            self.sum_w_sq,
            self.sum_wr_sq,
            self.sum_w_wr,
        ]

    @classmethod
    def from_sums(cls, sums: list[float]) -> OffPolicy:
        n = int(sums[0])
        out = cls()
        out.ips = _Moments(n, sums[1], sums[2])
        out.dr = _Moments(n, sums[3], sums[4])
        out.w = _Moments(n, sums[5], 0.0)
        out.wr = _Moments(n, sums[6], 0.0)
        out.sum_w_sq, out.sum_wr_sq, out.sum_w_wr = sums[7], sums[8], sums[9]
        return out

    def estimate_ips(self) -> Estimate:
        m, h = self.ips.mean, self.ips.half_width
        return Estimate(m, m - h, m + h)

    def estimate_snips(self) -> Estimate:
        n, sw, swr = self.n, self.w.total, self.wr.total
        if n < 2 or sw <= 0:
            return Estimate(math.nan, -math.inf, math.inf)
        v = swr / sw
        # delta method for a ratio of means: Var(wr - v w) / (n mean(w)^2)
        resid_sq = self.sum_wr_sq - 2 * v * self.sum_w_wr + v * v * self.sum_w_sq
        var = max(0.0, resid_sq / (n - 1)) / n / (sw / n) ** 2
        h = Z95 * math.sqrt(var)
        return Estimate(v, v - h, v + h)

    def estimate_dr(self) -> Estimate:
        m, h = self.dr.mean, self.dr.half_width
        return Estimate(m, m - h, m + h)

    def interval_cressie_read(self) -> tuple[float, float]:
        """95% Cressie-Read interval (small-sample) from vw-estimators."""
        if self.cr is None or self.n < 2:
            return (-math.inf, math.inf)
        try:
            low, high = self.cr.get(alpha=0.05)
        except (AssertionError, ValueError, ZeroDivisionError):
            return (-math.inf, math.inf)
        return (low if low is not None else -math.inf, high if high is not None else math.inf)

    def summary(self) -> dict[str, Any]:
        """Every estimate; ``expectedReward`` (the wire field) is the SNIPS one."""
        snips = self.estimate_snips()
        low, high = self.interval_cressie_read()
        return {
            **snips.as_dict(),
            "events": self.n,
            "estimators": {
                "ips": self.estimate_ips().as_dict(),
                "snips": snips.as_dict(),
                "dr": self.estimate_dr().as_dict(),
                "cressieReadInterval": [_num(low), _num(high)],
            },
        }
