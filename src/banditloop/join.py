"""Turning a closed event and what arrived for it into a training reward.

Pure functions, so that the rules of the join can be tested on their own:
rewards count only inside the reward window; several are combined by the
loop's aggregation; none means the default reward; a deferred event that was
never activated inside the window is not learned at all.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from .config import LoopConfig
from .store.base import ClosedEvent

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "earliest": lambda v: v[0],
    "sum": lambda v: float(sum(v)),
    "average": lambda v: float(statistics.fmean(v)),
    "median": lambda v: float(statistics.median(v)),
    "min": lambda v: float(min(v)),
    "max": lambda v: float(max(v)),
}


def in_window(ev: ClosedEvent, cfg: LoopConfig) -> list[float]:
    """Reward values that arrived within ``rewardWaitTime`` of the Rank, in arrival order."""
    end = ev.ts + cfg.reward_wait
    return [value for ts, value in ev.rewards if ts <= end]


def is_learnable(ev: ClosedEvent, cfg: LoopConfig) -> bool:
    """False for a deferred event not activated before its window closed."""
    return not ev.deferred or any(ts <= ev.ts + cfg.reward_wait for ts in ev.activations)


def training_reward(ev: ClosedEvent, cfg: LoopConfig) -> float | None:
    """The reward to learn, or None when the event must not be learned."""
    if not is_learnable(ev, cfg):
        return None
    values = in_window(ev, cfg)
    if not values:
        return cfg.default_reward
    return AGGREGATIONS[cfg.aggregation](values)


def labelled(example: str, chosen: int, probability: float, cost: float) -> str:
    """The logged example with a CB label, as VW's JSON parser reads it."""
    head = (
        f'{{"_label_cost":{cost!r},"_label_probability":{probability!r},'
        f'"_label_Action":{chosen + 1},"_labelIndex":{chosen},'
    )
    return head + example[1:]
