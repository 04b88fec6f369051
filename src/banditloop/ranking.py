"""Rank requests: the rules of the original, and the answer built from a pmf.

Kept free of I/O so that validation and the shape of the answer can be
tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .featurize import (
    FeatureLimits,
    check_text,
    clean_features,
    clean_recurring,
    context_object,
    dumps,
)

CODE = "InvalidRankRequest"


@dataclass(frozen=True)
class RankPlan:
    """What VW sees for a request: the non-excluded actions, in request order."""

    example: str
    vw_ids: list[str]  # ids of the example's actions
    all_ids: list[str]  # every action id, in request order


def plan(
    context_features: Sequence[Any] | None,
    actions: Sequence[tuple[str, Sequence[Any] | None]],
    excluded: Sequence[str] | None,
    max_actions: int = 50,
    limits: FeatureLimits | None = None,
    slots: Sequence[dict[str, Any]] | None = None,
) -> RankPlan:
    """Validate a rank request as the original did and build its VW example (with
    ``_slots``, if given: a CCB example); the features count against ``limits``
    (max_features, max_string_length) if given."""
    example, kept_ids, ids = _example(context_features, actions, excluded, max_actions, limits)
    if slots is not None:
        example["_slots"] = slots
    return RankPlan(example=dumps(example), vw_ids=kept_ids, all_ids=ids)


def _example(
    context_features: Sequence[Any] | None,
    actions: Sequence[tuple[str, Sequence[Any] | None]],
    excluded: Sequence[str] | None,
    max_actions: int,
    limits: FeatureLimits | None,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The example object of a checked request, the ids of its actions, every action id."""
    limits = limits or FeatureLimits(CODE)
    if not 1 <= len(actions) <= max_actions:
        raise BadRequest(f"Action count should be between 1 and {max_actions}.", CODE)
    ids = [check_text(a, CODE) for a, _ in actions]
    if any(not a for a in ids):
        raise BadRequest("Action ids must not be empty.", CODE)
    if len(set(ids)) != len(ids):
        raise BadRequest("Action ids must be unique.", CODE)
    excluded_set = set(excluded or ())
    if not excluded_set <= set(ids):
        raise BadRequest("All excluded action ID's must have corresponding action ID", CODE)
    if excluded_set >= set(ids):
        raise BadRequest("At least one action must not be excluded.", CODE)
    context = clean_features(context_features, CODE, limits)
    kept: list[tuple[str, list[dict[str, Any]]]] = []
    for action_id, features in actions:
        cleaned = clean_recurring(features, limits)
        if not cleaned:
            raise BadRequest("Every action should have at least one non-null action feature.", CODE)
        if action_id not in excluded_set:
            kept.append((action_id, cleaned))
    return context_object(context, kept), [a for a, _ in kept], ids


def ranking(plan: RankPlan, pmf: Sequence[float], chosen: int) -> list[dict[str, Any]]:
    """The chosen action first, then the rest by probability, excluded ones last at 0."""
    order = sorted(range(len(plan.vw_ids)), key=lambda i: (i != chosen, -pmf[i], i))
    out = [{"id": plan.vw_ids[i], "probability": float(pmf[i])} for i in order]
    kept = set(plan.vw_ids)
    out.extend({"id": a, "probability": 0.0} for a in plan.all_ids if a not in kept)
    return out


@dataclass(frozen=True)
class SlotInput:
    """A multi-slot request's slot, as plain data."""

    id: str
    features: Sequence[Any] | None
    excluded: Sequence[str] | None  # action ids this slot may not show
    baseline: str | None  # the action id it shows by default (required)


@dataclass(frozen=True)
class SlotPlan:
    id: str
    allowed: list[int]  # indices into the plan's action ids that this slot may use
    baseline: int  # index into the plan's action ids
    features: list[dict[str, Any]]

    def vw_object(self, allowed: list[int] | None = None) -> dict[str, Any]:
        """The slot in VW's JSON: id, features (namespace ``sj``), included actions."""
        obj: dict[str, Any] = {"_id": self.id, "_inc": self.allowed if allowed is None else allowed}
        if self.features:
            obj["sj"] = self.features
        return obj


@dataclass(frozen=True)
class MultiSlotPlan:
    base: dict[str, Any]  # the example object without slots: every action, in request order
    action_ids: list[str]
    slots: list[SlotPlan]

    def with_slots(self, slots: list[dict[str, Any]]) -> str:
        """The example JSON with these slots."""
        return dumps({**self.base, "_slots": slots})


def plan_multislot(
    context_features: Sequence[Any] | None,
    actions: Sequence[tuple[str, Sequence[Any] | None]],
    slots: Sequence[SlotInput],
    max_actions: int = 50,
    limits: FeatureLimits | None = None,
) -> MultiSlotPlan:
    """Validate a multi-slot request as the original did."""
    limits = limits or FeatureLimits(CODE)
    base, _, all_ids = _example(context_features, actions, None, max_actions, limits)
    index = {a: i for i, a in enumerate(all_ids)}
    if not 1 <= len(slots) <= len(index):
        raise BadRequest(
            f"Slot count should be between 1 and the number of actions ({len(index)}).", CODE
        )
    ids = [check_text(s.id, CODE) for s in slots]
    if any(not s for s in ids) or len(set(ids)) != len(ids):
        raise BadRequest("Slot ids must be non-empty and unique.", CODE)
    baselines = [s.baseline for s in slots]
    if any(not b for b in baselines):
        raise BadRequest("BaselineAction must be defined for every slot.", CODE)
    if len(set(baselines)) != len(baselines) or any(b not in index for b in baselines):
        raise BadRequest(
            "Each slot must have a unique BaselineAction which corresponds to an action from "
            "the event's Actions list.",
            CODE,
        )
    planned = []
    for slot in slots:
        excluded_set = set(slot.excluded or ())
        if not excluded_set <= index.keys():
            raise BadRequest("All excluded action ID's must have corresponding action ID", CODE)
        if slot.baseline in excluded_set:
            raise BadRequest("BaselineAction should never be part of ExcludedActions.", CODE)
        allowed = [i for a, i in index.items() if a not in excluded_set]
        assert slot.baseline is not None
        cleaned = clean_features(slot.features, CODE, limits)
        planned.append(SlotPlan(slot.id, allowed, index[slot.baseline], cleaned))
    return MultiSlotPlan(base, all_ids, planned)
