"""Counterfactual evaluation: replay logged decisions through other policies.

Every policy is judged on the same logged events, in time order, with the
estimators of :mod:`estimators`.  Custom VW policies learn as they go
(progressive validation, as the original did): each event is first scored,
then learned.  A reward model (``--cb_adf --cb_type mtr``) learned the same way
supplies the doubly robust estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import vowpalwabbit

from ..join import labelled
from ..policy import Policy
from ..store.base import LoggedEvent
from .estimators import MIN_SUPPORT, OffPolicy

ONLINE, BASELINE, RANDOM = "online", "baseline1", "baselineRand"
REWARD_MODEL = "--cb_adf -q :: --cb_type mtr"


@dataclass(frozen=True)
class Replayable:
    """A logged single-slot decision as an evaluation sees it."""

    ts: float
    example: str
    n_actions: int
    logged: int  # index (in the example) of the action shown
    p_log: float  # the probability it was shown with
    logged_pmf: list[float]  # the logging policy's pmf, per example action
    reward: float  # the real reward
    holdout: bool = False


def replayable(ev: LoggedEvent) -> Replayable | None:
    """None for what cannot be evaluated: multi-slot, not learnable, not yet joined."""
    d = ev.decision
    if d.multislot or not ev.outcome or ev.outcome.get("r") is None:
        return None
    slot = d.slots[0]
    pmf = [0.0] * len(d.action_ids)
    for i, p in zip(slot.actions, slot.pmf, strict=True):
        pmf[i] = p
    shown = slot.actions[slot.shown]
    if d.holdout or d.mode in ("Apprentice", "LoggingOnly"):  # the baseline, whatever was drawn
        pmf = [float(i == shown) for i in range(len(pmf))]
    reward = ev.outcome["r"][0]
    return Replayable(d.ts, d.example, len(pmf), shown, pmf[shown], pmf, reward, d.holdout)


def _labelled(ev: Replayable) -> str:
    """The event as it was logged and rewarded, for learning."""
    return labelled(ev.example, ev.logged, ev.p_log, -ev.reward)


class VwPolicy:
    """A custom policy replayed with progressive validation."""

    def __init__(self, args: str) -> None:
        self.args = args
        self.policy = Policy(args)

    def pmf_then_learn(self, ev: Replayable) -> list[float]:
        """pmf, then learn: one parse of the event instead of two."""
        return self.policy.pmf_then_learn(_labelled(ev))

    def model(self) -> bytes:
        return self.policy.save()


class RewardModel:
    """Predicted reward per action, learned progressively from the logs."""

    def __init__(self) -> None:
        self.ws = vowpalwabbit.Workspace(arg_list=[*REWARD_MODEL.split(), "--json", "--quiet"])
        self.label_type = self.ws.get_label_type()  # given to parse: not asked per example

    def predict_then_learn(self, ev: Replayable) -> list[float]:
        """predict, then learn: one parse of the event instead of two."""
        ex = self.ws.parse(_labelled(ev), self.label_type)
        try:
            r_hat = [-float(c) for c in self.ws.predict(ex)]
            self.ws.learn(ex)
            return r_hat
        finally:
            self.ws.finish_example(ex)


@dataclass
class PolicyResult:
    name: str
    arguments: str
    source: str  # Online, Baseline, Random, Custom, OfflineExperimentation
    total: OffPolicy = field(default_factory=OffPolicy)
    buckets: dict[int, OffPolicy] = field(default_factory=dict)
    model: bytes | None = None

    def add(self, bucket: int, ev: Replayable, pmf: list[float], r_hat: list[float]) -> None:
        p_target = pmf[ev.logged]
        v_hat = sum(p * r for p, r in zip(pmf, r_hat, strict=True))
        args = (ev.p_log, ev.reward, p_target, r_hat[ev.logged], v_hat, unsupported(ev, pmf))
        self.total.add(*args)
        self.buckets.setdefault(bucket, OffPolicy()).add(*args)


def unsupported(ev: Replayable, pmf: list[float]) -> float:
    """The target's probability, beyond the logger's, of actions the logger (almost)
    never showed: no estimator can learn their reward from this event."""
    return sum(t - p for t, p in zip(pmf, ev.logged_pmf, strict=True) if p < MIN_SUPPORT and t > p)


def evaluate(
    events: Iterable[LoggedEvent],
    custom: list[tuple[str, str]],
    bucket_seconds: float = 300.0,
    progress: Callable[[int], None] | None = None,
    keep_models: bool = False,
) -> list[PolicyResult]:
    """Replay the logs through online, baseline1, baselineRand and each custom
    (name, VW arguments) policy; returns their estimates, overall and per bucket."""
    results = [
        PolicyResult(ONLINE, "", "Online"),
        PolicyResult(BASELINE, "", "Baseline"),
        PolicyResult(RANDOM, "", "Random"),
    ]
    vw = [(PolicyResult(name, args, "Custom"), VwPolicy(args)) for name, args in custom]
    reward_model = RewardModel()
    for n, ev in enumerate(_replayable(events), 1):
        bucket = int(ev.ts // bucket_seconds)
        r_hat = reward_model.predict_then_learn(ev)
        results[0].add(bucket, ev, ev.logged_pmf, r_hat)
        results[1].add(bucket, ev, [1.0] + [0.0] * (ev.n_actions - 1), r_hat)
        results[2].add(bucket, ev, [1.0 / ev.n_actions] * ev.n_actions, r_hat)
        for res, pol in vw:
            res.add(bucket, ev, pol.pmf_then_learn(ev), r_hat)
        if progress and n % 1000 == 0:
            progress(n)
    for res, pol in vw:
        if keep_models:
            res.model = pol.model()
        results.append(res)
    return results


def _replayable(events: Iterable[LoggedEvent]) -> Iterator[Replayable]:
    """The events a counterfactual evaluation uses: not the holdout's (they show the
    baseline whatever was drawn, so their logged pmf is not the one they were shown by)."""
    for ev in events:
        r = replayable(ev)
        if r is not None and not r.holdout and r.p_log > 0 and math.isfinite(r.reward):
            yield r
