"""Off-policy estimators: IPS, SNIPS and doubly robust, with 95% intervals.

Each logged event contributes the logged probability of the action taken
(``p_log``), the reward observed (``r``), the target policy's probability of
that action (``p_target``) and, for doubly robust, the reward model's
prediction for that action (``r_hat``) and its expectation under the target
policy (``v_hat``).  The Gaussian intervals are 1.96 standard errors (the
original's ``1.96 * sqrt(s^2/N)``), cut to the range of the rewards seen (with
[0, 1]); the Cressie-Read interval of VW's own ``vw-estimators`` behaves on small
samples.

Every summary carries its diagnostics (docs/evaluation.md): the effective sample
size, the events where the target put weight on actions the logging policy
(almost) never showed, the largest importance weight, and whether the estimate
can be trusted at all; when not, its value and interval are null, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from estimators.bandits import cressieread

Z95 = 1.959963984540054
#: A logged probability below this is no support: an importance weight above 10^4.
MIN_SUPPORT = 1e-4
#: Not estimable if more than this share of events lack support for the target ...
MAX_MISSING_SHARE = 0.01
#: ... or if the effective sample size (sum w)^2 / sum w^2 is below this.
MIN_ESS = 10.0


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
    missing: int = 0  # events where the target weighed actions without support
    max_w: float = 0.0
    cr: Any = None

    def add(
        self,
        p_log: float,
        r: float,
        p_target: float,
        r_hat: float = 0.0,
        v_hat: float = 0.0,
        unsupported: float = 0.0,
    ) -> None:
        """One event; ``unsupported`` is the target's probability of the actions that
        the logging policy gave less than ``MIN_SUPPORT``."""
        w = p_target / p_log
        self.missing += unsupported > 1e-9
        self.max_w = max(self.max_w, w)
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
            self.missing,
            self.max_w,
        ]

    @staticmethod
    def merge_sums(a: list[float], b: list[float]) -> list[float]:
        """The sums of two sets of events (the largest weight is a maximum, not a sum)."""
        if not a:
            return list(b)
        out = [x + y for x, y in zip(a, b, strict=True)]
        out[11] = max(a[11], b[11])
        return out

    @classmethod
    def from_sums(cls, sums: list[float]) -> OffPolicy:
        n = int(sums[0])
        out = cls()
        out.ips = _Moments(n, sums[1], sums[2])
        out.dr = _Moments(n, sums[3], sums[4])
        out.w = _Moments(n, sums[5], 0.0)
        out.wr = _Moments(n, sums[6], 0.0)
        out.sum_w_sq, out.sum_wr_sq, out.sum_w_wr = sums[7], sums[8], sums[9]
        if len(sums) > 11:  # results stored before the diagnostics have no such sums
            out.missing, out.max_w = int(sums[10]), sums[11]
        return out

    @property
    def ess(self) -> float:
        """Effective sample size, (sum w)^2 / sum w^2 (Kish)."""
        return self.w.total**2 / self.sum_w_sq if self.sum_w_sq > 0 else 0.0

    def verdict(self) -> str | None:
        """None if the estimate can be trusted; else why not."""
        if self.n == 0:
            return "no events to evaluate on"
        share = self.missing / self.n
        if share > MAX_MISSING_SHARE:
            return (
                f"not estimable: the logging policy never showed these actions "
                f"({share:.1%} of events lack support for this policy)"
            )
        if self.ess < MIN_ESS:
            return (
                f"not estimable: effective sample size {self.ess:.1f} is below {MIN_ESS:g} "
                "(the logs rarely show what this policy would)"
            )
        return None

    def diagnostics(self) -> dict[str, Any]:
        """What the estimate rests on (the wire's ``diagnostics`` extension)."""
        reason = self.verdict()
        return {
            "events": self.n,
            "effectiveSampleSize": self.ess,
            "missingSupportEvents": self.missing,
            "missingSupportShare": self.missing / self.n if self.n else None,
            "maxImportanceWeight": self.max_w,
            "estimable": reason is None,
            "reason": reason,
        }

    def _within(self, m: float, h: float) -> Estimate:
        """The interval m ± h, cut to the rewards' range (every policy's value lies in
        it), never so far that it leaves out m; unbounded (too few events) it stays so."""
        if not math.isfinite(h):
            return Estimate(m, m - h, m + h)
        return Estimate(m, min(m, max(m - h, self.r_min)), max(m, min(m + h, self.r_max)))

    def estimate_ips(self) -> Estimate:
        return self._within(self.ips.mean, self.ips.half_width)

    def estimate_snips(self) -> Estimate:
        n, sw, swr = self.n, self.w.total, self.wr.total
        if n < 2 or sw <= 0:
            return Estimate(math.nan, -math.inf, math.inf)
        v = swr / sw
        # delta method for a ratio of means: Var(wr - v w) / (n mean(w)^2)
        resid_sq = self.sum_wr_sq - 2 * v * self.sum_w_wr + v * v * self.sum_w_sq
        var = max(0.0, resid_sq / (n - 1)) / n / (sw / n) ** 2
        # never narrower than the rule of three on the effective sample: with no
        # reward seen in m effective events, 3/m is still a 95% upper bound
        ess = self.ess
        h = max(Z95 * math.sqrt(var), 3.0 / ess * (self.r_max - self.r_min) if ess else math.inf)
        return self._within(v, h)

    def estimate_dr(self) -> Estimate:
        return self._within(self.dr.mean, self.dr.half_width)

    def interval_cressie_read(self) -> tuple[float, float]:
        """95% Cressie-Read interval (small-sample) from vw-estimators."""
        if self.cr is None or self.n < 2:
            return (-math.inf, math.inf)
        try:
            low, high = self.cr.get(alpha=0.05)
        except (AssertionError, ValueError, ZeroDivisionError):
            return (-math.inf, math.inf)
        return (low if low is not None else -math.inf, high if high is not None else math.inf)

    def point(self) -> dict[str, Any]:
        """SNIPS with its interval (null when not estimable) and the diagnostics."""
        diagnostics = self.diagnostics()
        est = self.estimate_snips() if diagnostics["estimable"] else Estimate(*[math.nan] * 3)
        return {**est.as_dict(), "diagnostics": diagnostics}

    def summary(self) -> dict[str, Any]:
        """Every estimate; ``expectedReward`` (the wire field) is the SNIPS one. Not
        estimable: every value and interval null, and ``diagnostics`` says why."""
        diagnostics = self.diagnostics()
        if not diagnostics["estimable"]:
            none = Estimate(math.nan, math.nan, math.nan).as_dict()
            return {
                **none,
                "events": self.n,
                "estimators": {
                    "ips": none,
                    "snips": none,
                    "dr": none,
                    "cressieReadInterval": [None, None],
                },
                "diagnostics": diagnostics,
            }
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
            "diagnostics": diagnostics,
        }
