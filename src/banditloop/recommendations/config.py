"""The wire models of tracking and scenarios: extension fields of a loop's service
configuration (``tracking``, ``scenarios``), so that the config file, the admin API
and every worker process see them the way they see the rest of the configuration."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..recommender import Param

SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_COUNT = 50

DEFAULT_REWARDS = {"click": 0.2, "basket": 0.5, "consume": 0.5, "buy": 1.0}
DEFAULT_WEIGHTS = {
    "view": 0.2,
    "click": 1.0,
    "rate": 1.0,
    "basket": 2.0,
    "consume": 2.0,
    "buy": 4.0,
}


def _check_types(types: dict[str, float] | list[str] | None) -> None:
    for name in types or ():
        if not EVENT_TYPE.match(name):
            raise ValueError(f"event type {name!r}: 1 to 64 letters, digits, '_', '.', ':', '-'")


class PopularityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    windowDays: float = Field(30.0, gt=0, le=3650, description="Older events are left out.")
    halfLifeDays: float = Field(
        7.0, gt=0, le=3650, description="An event counts half as much after this many days."
    )


class CoOccurrenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Literal["session", "user"] = Field(
        "session", description="Items count as together within a session, or a user's events."
    )
    history: int = Field(
        20, ge=2, le=200, description="Recent items per session or user that a new one pairs with."
    )


class TrackingConfig(BaseModel):
    """How tracked events become rewards and feed the built-in models."""

    model_config = ConfigDict(extra="forbid")

    rewards: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_REWARDS),
        description="Event type -> reward (-1..1) for the Rank named by the event's eventId.",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="Event type -> weight in the models; other types weigh `defaultWeight`.",
    )
    defaultWeight: float = Field(1.0, ge=0, le=1000, allow_inf_nan=False)
    popularity: PopularityConfig = Field(
        default_factory=lambda: PopularityConfig.model_validate({})
    )
    cooccurrence: CoOccurrenceConfig = Field(
        default_factory=lambda: CoOccurrenceConfig.model_validate({})
    )

    @field_validator("rewards")
    @classmethod
    def _check_rewards(cls, rewards: dict[str, float]) -> dict[str, float]:
        _check_types(rewards)
        if any(not -1.0 <= v <= 1.0 for v in rewards.values()):  # NaN fails too
            raise ValueError("rewards must be between -1 and 1")
        return rewards

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        _check_types(weights)
        if any(not 0.0 <= v <= 1000.0 for v in weights.values()):
            raise ValueError("weights must be between 0 and 1000")
        return weights

    def weight(self, event_type: str) -> float:
        return self.weights.get(event_type, self.defaultWeight)


ModelName = Literal[
    "popularity", "cooccurrence", "similar", "history", "static", "recommender", "catalogue"
]


class SourceConfig(BaseModel):
    """One source of candidates and how many it gives."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(
        description="popularity | cooccurrence (also clicked/bought) | similar (item "
        "features) | history (the user's recent items) | static | recommender | catalogue."
    )
    count: int = Field(10, ge=1, le=MAX_COUNT, description="Candidates taken from it.")
    types: list[str] | None = Field(
        None, description="Event types it reads (popularity, cooccurrence, history); all if null."
    )
    items: list[str] = Field(default_factory=list, description="static: the item ids.")
    params: dict[str, Param] = Field(
        default_factory=dict,
        description="recommender: fixed recommenderParams; the request's win.",
    )

    @field_validator("types")
    @classmethod
    def _check(cls, types: list[str] | None) -> list[str] | None:
        _check_types(types)
        return types


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    excludeTypes: list[str] = Field(
        default_factory=lambda: ["buy"],
        description="Leave out items the user has events of these types for (e.g. bought).",
    )
    categoryFeature: str = Field(
        "category", min_length=1, max_length=256, description="Catalogue feature of categories."
    )
    categories: list[str] | None = Field(
        None, description="Only items in these categories (a request may narrow it)."
    )
    excludeContextItem: bool = Field(True, description="Leave out the request's itemId.")

    @field_validator("excludeTypes")
    @classmethod
    def _check(cls, types: list[str]) -> list[str]:
        _check_types(types)
        return types


class ScenarioConfig(BaseModel):
    """A named recommendation: candidate sources, filters and a fallback chain."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] = Field(
        min_length=1, max_length=10, description="Candidate sources, merged in this order."
    )
    fallback: list[SourceConfig] = Field(
        default_factory=list,
        max_length=10,
        description="Tried in order while there are fewer than minCandidates candidates.",
    )
    count: int = Field(5, ge=1, le=MAX_COUNT, description="Items returned (K).")
    minCandidates: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="Fewer candidates than this start the fallback chain (default: count).",
    )
    maxCandidates: int = Field(
        30, ge=1, le=MAX_COUNT, description="Candidates the loop ranks at most."
    )
    filters: FilterConfig = Field(default_factory=lambda: FilterConfig.model_validate({}))
    historyContext: bool = Field(
        True,
        description="Add the user's recent items' catalogue features to the context "
        "(namespace `history`), so that the loop can learn tastes.",
    )

    @property
    def enough(self) -> int:
        return self.minCandidates or self.count


def check_scenario_name(name: str) -> str:
    if not SCENARIO_NAME.match(name):
        raise ValueError(
            "scenario names are 1 to 64 letters, digits, '-' or '_', starting with a letter "
            "or digit"
        )
    return name
