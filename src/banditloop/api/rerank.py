"""Extension: a Rank request that re-ranks an upstream list or asks the recommender."""

from __future__ import annotations

from ..loop import Loop, body_hash
from ..rerank import Reranker, RerankRequest
from .schemas import RankRequest


async def rank_extended(reranker: Reranker, body: RankRequest, loop: Loop) -> bytes:
    req = RerankRequest(
        context_features=body.contextFeatures,
        actions=None
        if body.actions is None
        else [(a.id, a.features, a.upstreamScore) for a in body.actions],
        excluded=body.excludedActions,
        event_id=body.eventId,
        defer_activation=bool(body.deferActivation),
        body_hash=body_hash(body.model_dump()),
        params=body.recommenderParams,
    )
    return await reranker.rank(loop, req)
