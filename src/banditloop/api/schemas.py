"""Request and response models of the wire format (Azure Personalizer's field names)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RankableAction(_Wire):
    id: str = Field(max_length=256, description="Action id; the first action is the baseline.")
    features: list[Any] | None = Field(
        None, description="Feature objects; at least one non-null feature is required."
    )


class RerankableAction(RankableAction):
    upstreamScore: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Extension (with rerank): the upstream recommender's score, a feature.",
    )


class RankRequest(_Wire):
    contextFeatures: list[Any] | None = Field(None, description="Context feature objects.")
    actions: list[RerankableAction] | None = Field(
        None,
        description="1 to 50 candidate actions (required unless recommenderParams is given).",
        json_schema_extra={"minItems": 1, "maxItems": 50},
    )
    excludedActions: list[str] | None = Field(None, description="Ids not to choose.")
    eventId: str | None = Field(
        None, max_length=256, description="Generated when absent; seeds the sampling."
    )
    deferActivation: bool | None = Field(False, description="Learn only if the event is activated.")
    rerank: bool | None = Field(
        None,
        description="Extension: the actions are an upstream recommender's list, in its order; "
        "their positions and upstreamScore become features (docs/reranking.md).",
    )
    recommenderParams: dict[str, str | int | float | bool] | None = Field(
        None,
        description="Extension: instead of actions, ask the loop's recommender; these values "
        "fill its URL template (docs/reranking.md).",
    )

    @property
    def extended(self) -> bool:
        """Whether the Rank uses an extension: re-ranking, or the loop's recommender."""
        return self.actions is None or bool(self.rerank) or self.recommenderParams is not None

    def identity(self) -> dict[str, Any]:
        """What tells a retried Rank from a reused event ID: all its fields; a plain Rank's
        without the extensions, as before they existed (built directly: a ``model_dump``
        with an ``exclude`` was 25 µs of every Rank)."""
        if self.extended:
            return self.model_dump()
        actions = self.actions
        return {
            "contextFeatures": self.contextFeatures,
            "actions": None
            if actions is None
            else [{"id": a.id, "features": a.features} for a in actions],
            "excludedActions": self.excludedActions,
            "eventId": self.eventId,
            "deferActivation": self.deferActivation,
        }


class RankedAction(_Wire):
    id: str
    probability: float = Field(ge=0, le=1)


class RankResponse(_Wire):
    ranking: list[RankedAction]
    eventId: str
    rewardActionId: str


class RewardRequest(_Wire):
    value: float = Field(allow_inf_nan=False, ge=-1, le=1, description="Reward, between -1 and 1.")


class SlotRequest(_Wire):
    id: str = Field(max_length=256)
    features: list[Any] | None = Field(None, description="Slot features (older previews).")
    positionFeatures: list[Any] | None = Field(None, description="Slot features (SDK name).")
    excludedActions: list[str] | None = None
    baselineAction: str | None = Field(None, max_length=256, description="Required.")


class MultiSlotRankRequest(_Wire):
    contextFeatures: list[Any] | None = None
    actions: list[RankableAction] = Field(json_schema_extra={"minItems": 1, "maxItems": 50})
    slots: list[SlotRequest] = Field(json_schema_extra={"minItems": 1, "maxItems": 50})
    eventId: str | None = Field(None, max_length=256)
    deferActivation: bool | None = False

    extended: ClassVar[bool] = False  # no extension fields

    def identity(self) -> dict[str, Any]:
        """What tells a retried multi-slot Rank from a reused event ID: all its fields."""
        return self.model_dump()


class SlotResponse(_Wire):
    id: str
    rewardActionId: str | None = None


class MultiSlotRankResponse(_Wire):
    slots: list[SlotResponse]
    eventId: str


class SlotReward(_Wire):
    slotId: str = Field(min_length=1, max_length=256)
    value: float = Field(allow_inf_nan=False, ge=-1, le=1)


class MultiSlotRewardRequest(_Wire):
    reward: list[SlotReward]


class ErrorDetail(_Wire):
    code: str
    message: str
    target: str | None = None


class ErrorResponse(_Wire):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Invalid request."),
        (401, "Missing or wrong key."),
        (404, "Not found."),
        (409, "Conflicting event ID."),
        (413, "Payload too large."),
        (503, "Unavailable."),
    ]
}
