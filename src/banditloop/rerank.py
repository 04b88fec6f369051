"""Extension: re-rank an upstream recommender's list, and fall back when it fails.

Two ways in, both ending in :meth:`Loop.rank`, so the decision is logged,
learned, exported and evaluated like any other:

* client-side: a Rank with ``rerank: true`` whose actions are the upstream list
  in its order (each with an optional ``upstreamScore``);
* server-side: a Rank with ``recommenderParams`` and no actions; the loop's
  recommender (``recommender`` in its service configuration) is called for
  the candidates; if it times out, fails or answers nothing usable, the
  fallback (the loop's most rewarded items, or a static list) is ranked.

Every candidate gets the feature namespace ``upstream`` with ``position``
(1-based) and, when known, ``score``. Features sent with an item (by the client
or in the recommender's answer) win; otherwise the loop's catalogue supplies
them. ``Loop.counters`` counts what happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import BadRequest, RecommenderFailure, Unavailable
from .items import Catalogue
from .loop import Loop, RankInput
from .recommender import (
    Candidate,
    FallbackConfig,
    Param,
    RecommenderConfig,
    fetch,
)

log = logging.getLogger(__name__)
CODE = "InvalidRankRequest"
UPSTREAM = "upstream"  # the namespace of the upstream position and score


@dataclass(frozen=True)
class RerankRequest:
    """A Rank request that uses an extension field, as plain data."""

    context_features: list[Any] | None
    actions: list[tuple[str, list[Any] | None, float | None]] | None  # id, features, score
    excluded: list[str] | None
    event_id: str | None
    defer_activation: bool
    body_hash: str
    params: dict[str, Param] | None  # recommenderParams


def upstream_features(position: int, score: float | None) -> dict[str, Any]:
    """The feature object added to a candidate: namespace ``upstream``."""
    ns: dict[str, Any] = {"position": position}
    if score is not None:
        ns["score"] = score
    return {UPSTREAM: ns}


def with_upstream(
    candidates: Sequence[Candidate], catalogue: Catalogue
) -> list[tuple[str, list[Any] | None]]:
    """Rank actions: own features or the catalogue's, plus the upstream features."""
    missing = [c.id for c in candidates if not c.features]
    known = catalogue.get_many(missing) if missing else {}
    out: list[tuple[str, list[Any] | None]] = []
    for pos, c in enumerate(candidates, 1):
        item = known.get(c.id)
        features = list(c.features or (item.features if item else ()))
        out.append((c.id, [*features, upstream_features(pos, c.score)]))
    return out


class Reranker:
    """One per application: the HTTP client for recommenders, and each loop's cached
    fallback list."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(follow_redirects=False)
        self._top: weakref.WeakKeyDictionary[Loop, tuple[float, FallbackConfig, list[str]]]
        self._top = weakref.WeakKeyDictionary()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def rank(self, loop: Loop, req: RerankRequest) -> bytes:
        excluded = req.excluded
        if req.params is None:
            if not req.actions:
                raise BadRequest("Action count should be between 1 and 50.", CODE)
            candidates = [Candidate(a, score, features) for a, features, score in req.actions]
            source = "client"
        else:
            if req.actions is not None:
                raise BadRequest("Send either actions or recommenderParams, not both.", CODE)
            cfg = loop.wire.recommender
            if cfg is None:
                raise BadRequest(
                    "This loop has no recommender: set `recommender` in its service "
                    "configuration, or send actions.",
                    CODE,
                )
            candidates, source = await self._candidates(loop, cfg, req.params, excluded)
            excluded = None  # already left out of the candidates
        loop.counters[f"rank_{source}"] += 1
        return await loop.rank(
            RankInput(
                context_features=req.context_features,
                actions=with_upstream(candidates, loop.items),
                excluded=excluded,
                event_id=req.event_id,
                defer_activation=req.defer_activation,
                body_hash=req.body_hash,
                source=source,
            )
        )

    async def _candidates(
        self,
        loop: Loop,
        cfg: RecommenderConfig,
        params: dict[str, Param],
        excluded: list[str] | None,
    ) -> tuple[list[Candidate], str]:
        catalogue = loop.items
        skip = set(excluded or ())
        try:
            loop.counters["recommender_calls"] += 1
            answer = await fetch(self.http, cfg, params)
            usable = _usable(answer, catalogue, skip, cfg.topK)
            if not usable:
                raise RecommenderFailure("empty", "no item is available and not excluded")
            return usable, "recommender"
        except RecommenderFailure as ex:
            loop.counters[f"recommender_{ex.reason}"] += 1
            loop.counters["fallback"] += 1
            log.warning("loop %s: recommender %s; ranking the fallback", loop.name, ex)
        ids = await self._fallback_ids(loop, cfg.fallback, cfg.topK + len(skip))
        found = catalogue.get_many(ids)
        fallback = [
            Candidate(i, None, found[i].features if i in found else None)
            for i in ids
            if i not in skip and (i not in found or found[i].available)
        ][: cfg.topK]
        if not fallback:  # nothing learned and no static list: the catalogue itself
            items = catalogue.first(cfg.topK + len(skip))
            fallback = [Candidate(it.id, None, it.features) for it in items if it.id not in skip]
            fallback = fallback[: cfg.topK]
        if not fallback:
            loop.counters["fallback_empty"] += 1
            raise Unavailable(
                "The recommender gave no items and the loop has no fallback items yet "
                "(no rewarded items in its logs, no static list, no catalogue).",
                "RecommenderUnavailable",
            )
        return fallback, "fallback"

    async def _fallback_ids(self, loop: Loop, fb: FallbackConfig, limit: int) -> list[str]:
        ids: list[str] = []
        if fb.source == "topRewarded":
            now = time.monotonic()
            cached = self._top.get(loop)
            if cached is not None and cached[0] > now and cached[1] == fb:
                ids = cached[2]
            else:
                ids = await asyncio.to_thread(top_rewarded, loop, fb, max(limit, 50))
                self._top[loop] = (now + fb.cacheSeconds, fb, ids)
        return [*ids[:limit], *(i for i in fb.items if i not in ids)]


def _usable(
    answer: list[Candidate], catalogue: Catalogue, skip: set[str], top_k: int
) -> list[Candidate]:
    """The answer's first top-K items that are not excluded nor unavailable."""
    wanted = [c for c in answer if c.id not in skip]
    found = catalogue.get_many([c.id for c in wanted[: top_k * 2 + 10]])
    return [c for c in wanted if c.id not in found or found[c.id].available][:top_k]


def top_rewarded(loop: Loop, fb: FallbackConfig, limit: int) -> list[str]:
    """The loop's items with the most reward (total or mean) among its learned
    single-slot events of the last ``windowHours``."""
    since = time.time() - fb.windowHours * 3600
    return loop.store.top_rewarded(loop.name, since, fb.by, fb.minEvents, limit)
