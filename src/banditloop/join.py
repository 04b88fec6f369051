"""Turning a closed event and what arrived for it into what is learned.

Pure functions, so that the rules of the join can be tested on their own:
rewards count only inside the reward window; several are combined by the
loop's aggregation (per slot); none means the default reward; a deferred event
that was never activated inside the window is not learned at all.  In
Apprentice mode the model is trained to imitate the baseline (reward 1 when its
own draw matches it, else 0) while the real reward is kept beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

import orjson

from .config import LoopConfig
from .store.base import ClosedEvent, Outcome, SlotChoice

#: Mode of decisions imported for evaluation only: logged as ranked elsewhere, not learned.
IMPORTED = "Imported"

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "earliest": lambda v: v[0],
    "sum": lambda v: float(sum(v)),
    "average": lambda v: float(statistics.fmean(v)),
    "median": lambda v: float(statistics.median(v)),
    "min": lambda v: float(min(v)),
    "max": lambda v: float(max(v)),
}


def in_window(ev: ClosedEvent, cfg: LoopConfig, slot: str | None = None) -> list[float]:
    """Reward values for a slot that arrived within ``rewardWaitTime``, in arrival order."""
    end = ev.ts + cfg.reward_wait
    return [value for ts, value, s in ev.rewards if ts <= end and s == slot]


def is_learnable(ev: ClosedEvent, cfg: LoopConfig) -> bool:
    """False for a deferred event not activated before its window closed."""
    return not ev.deferred or any(ts <= ev.ts + cfg.reward_wait for ts in ev.activations)


def slot_reward(ev: ClosedEvent, cfg: LoopConfig, slot: str | None = None) -> float:
    """The real reward of a slot: aggregated in-window rewards, else the default."""
    values = in_window(ev, cfg, slot)
    return AGGREGATIONS[cfg.aggregation](values) if values else cfg.default_reward


def training_reward(ev: ClosedEvent, cfg: LoopConfig) -> float | None:
    """The reward learned for a single-slot event, or None when it is not learned."""
    trained = outcome(ev, cfg).trained
    return trained[0] if trained else None


def outcome(ev: ClosedEvent, cfg: LoopConfig) -> Outcome:
    """Real and training rewards per slot; ``trained`` None when nothing is learned."""
    if not is_learnable(ev, cfg):
        return Outcome(ev.seq, None, None)
    real = [slot_reward(ev, cfg, s.id) for s in ev.slots]
    if ev.mode in ("LoggingOnly", IMPORTED):
        return Outcome(ev.seq, real, None)
    if ev.holdout:  # the baseline was shown with probability 1: learn its real reward
        return Outcome(ev.seq, real, real)
    if ev.mode == "Apprentice":
        return Outcome(ev.seq, real, [float(s.chosen == s.baseline) for s in ev.slots])
    return Outcome(ev.seq, real, real)


def labelled(example: str, chosen: int, probability: float, cost: float) -> str:
    """A single-slot example with a CB label, as VW's JSON parser reads it."""
    head = (
        f'{{"_label_cost":{cost!r},"_label_probability":{probability!r},'
        f'"_label_Action":{chosen + 1},"_labelIndex":{chosen},'
    )
    return head + example[1:]


def shown_slot(slot: SlotChoice) -> SlotChoice:
    """A slot as served to a holdout event: what was shown, drawn with probability 1."""
    if not slot.actions:
        return slot
    pmf = [float(i == slot.shown) for i in range(len(slot.actions))]
    return replace(slot, pmf=pmf, chosen=slot.shown)


def _slot_label(slot: SlotChoice, cost: float) -> dict[str, object]:
    order = [slot.chosen] + [i for i in range(len(slot.actions)) if i != slot.chosen]
    return {
        "_label_cost": cost,
        "_a": [slot.actions[i] for i in order],
        "_p": [slot.pmf[i] for i in order],
    }


def training_example(ev: ClosedEvent, trained: list[float]) -> str:
    """The logged example labelled with what the model chose and the training rewards
    (for a holdout event: what was shown, with probability 1)."""
    if ev.holdout:
        ev = replace(ev, slots=[shown_slot(s) for s in ev.slots])
    if not ev.multislot:
        slot = ev.slots[0]
        return labelled(ev.example, slot.actions[slot.chosen], slot.probability, -trained[0])
    obj = orjson.loads(ev.example)
    for slot_obj, slot, reward in zip(obj["_slots"], ev.slots, trained, strict=True):
        if slot.actions:  # a slot left with no action has nothing to learn
            slot_obj.update(_slot_label(slot, -reward))
    return orjson.dumps(obj).decode()
