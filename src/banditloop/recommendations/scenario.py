"""A scenario's candidates for one request: its sources in order, the filters, and the
fallback chain while there are too few; plus the context the loop ranks them in.

Every candidate carries its catalogue features and the namespace ``via`` (which
source proposed it); ``rerank.with_upstream`` adds its position and normalised
score, as for any re-ranked list.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..items import Catalogue
from ..recommender import Candidate, Param
from ..store.base import Item, TrackedEvent
from .builder import ModelSet
from .config import FilterConfig, ScenarioConfig, SourceConfig
from .models import Scored, tokens

HISTORY_EVENTS = 200  # a user's newest events read for filters and seeds
SEED_ITEMS = 5  # distinct recent items that seed co-occurrence and similarity
CONTEXT_ITEMS = 10  # distinct recent items whose features describe the user's taste

#: Asks the loop's HTTP recommender (the connector of docs/reranking.md) for item ids.
AskRecommender = Callable[[dict[str, Param], int], Awaitable[Scored]]


@dataclass(frozen=True)
class Visit:
    """Who asks, about what: the request, with the user's history already read."""

    item: str | None
    history: list[TrackedEvent]  # newest first
    categories: list[str] | None
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def seeds(self) -> list[str]:
        if self.item is not None:
            return [self.item]
        return _distinct([e.item for e in self.history])[:SEED_ITEMS]


@dataclass
class Gathered:
    candidates: list[Candidate]
    via: dict[str, str]  # item -> the source that proposed it
    fallback: bool  # the fallback chain was used


def _distinct(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _category_of(item: Item, feature: str) -> set[str]:
    """The values of a catalogue feature, flat or one namespace deep."""
    out: set[str] = set()
    for obj in item.features:
        for key, value in obj.items():
            if key == feature and isinstance(value, str):
                out.add(value)
            elif isinstance(value, dict) and isinstance(value.get(feature), str):
                out.add(value[feature])
    return out


class Gatherer:
    """Collects one request's candidates (blocking reads: run it in a worker thread,
    except the recommender's answer, which is awaited)."""

    def __init__(
        self,
        scenario: ScenarioConfig,
        models: ModelSet,
        catalogue: Catalogue,
        ask: AskRecommender,
        limit: int,
    ) -> None:
        self.scenario = scenario
        self.models = models
        self.catalogue = catalogue
        self.ask = ask
        self.limit = min(limit, scenario.maxCandidates)

    async def gather(self, visit: Visit) -> Gathered:
        f = self.scenario.filters
        skip = self._skipped(visit, f)
        out = Gathered([], {}, False)
        for source in self.scenario.sources:
            await self._add(out, source, visit, skip)
        for source in self.scenario.fallback:
            if len(out.candidates) >= self.scenario.enough:
                break
            out.fallback = True
            await self._add(out, source, visit, skip)
        if not out.candidates:  # cold start with nothing learned: the catalogue itself
            out.fallback = True
            await self._add(
                out,
                SourceConfig.model_validate({"model": "catalogue", "count": self.limit}),
                visit,
                skip,
            )
        out.candidates = out.candidates[: self.limit]
        return out

    @staticmethod
    def _skipped(visit: Visit, f: FilterConfig) -> set[str]:
        skip = {e.item for e in visit.history if e.type in f.excludeTypes}
        if f.excludeContextItem and visit.item is not None:
            skip.add(visit.item)
        return skip

    async def _add(self, out: Gathered, source: SourceConfig, visit: Visit, skip: set[str]) -> None:
        taken = set(out.via) | skip
        want = source.count + len(taken)
        if source.model == "recommender":
            proposed = await self.ask({**source.params, **visit.params}, want)
        else:
            proposed = await asyncio.to_thread(self._propose, source, visit, want, sorted(taken))
        proposed = [(i, s) for i, s in proposed if i not in taken]
        found = await asyncio.to_thread(self.catalogue.get_many, [i for i, _ in proposed])
        best = max((s for _, s in proposed), default=0.0) or 1.0
        kept = 0
        for item, score in proposed:
            known = found.get(item)
            if not self._allowed(known, visit):
                continue
            features: list[Any] = list(known.features) if known else []
            features.append({"via": {source.model: 1}})
            out.candidates.append(Candidate(item, round(score / best, 6), features))
            out.via[item] = source.model
            kept += 1
            if kept >= source.count:
                break

    def _allowed(self, known: Item | None, visit: Visit) -> bool:
        """Available, and in the scenario's categories narrowed by the request's."""
        if known is not None and not known.available:
            return False
        f = self.scenario.filters
        wanted = set(f.categories) if f.categories is not None else None
        if visit.categories:
            wanted = set(visit.categories) & wanted if wanted is not None else set(visit.categories)
        if wanted is None:
            return True
        return known is not None and bool(_category_of(known, f.categoryFeature) & wanted)

    def _propose(self, source: SourceConfig, visit: Visit, k: int, skip: list[str]) -> Scored:
        m = source.model
        if m == "popularity":
            return self.models.popular(source.types, k, skip)
        if m == "cooccurrence":
            return self.models.related(visit.seeds, source.types, k, skip)
        if m == "similar":
            return self.models.similar(visit.seeds, k, skip)
        if m == "history":
            events = [e for e in visit.history if source.types is None or e.type in source.types]
            recent = _distinct([e.item for e in events])
            return [(item, 1.0 / (n + 1)) for n, item in enumerate(recent)][:k]
        if m == "static":
            return [(item, 1.0 / (n + 1)) for n, item in enumerate(source.items)][:k]
        items = self.catalogue.first(k)  # "catalogue": available items, newest first
        return [(it.id, 1.0 / (n + 1)) for n, it in enumerate(items)]


def taste(history: Sequence[TrackedEvent], catalogue: Catalogue) -> dict[str, float]:
    """The user's taste as context features: the share of their recent distinct items
    that have each catalogue feature token (``category=books``: 0.6)."""
    recent = _distinct([e.item for e in history])[:CONTEXT_ITEMS]
    found = catalogue.get_many(recent)
    counts: Counter[str] = Counter()
    for item in found.values():
        counts.update(set(tokens(item.features)))
    n = len(found)
    return {t: round(c / n, 4) for t, c in sorted(counts.items())} if n else {}
