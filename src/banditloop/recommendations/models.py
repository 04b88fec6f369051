"""The built-in models, in memory: each is fed one event at a time and answers
"top-K items" in milliseconds.

* ``Popularity``: per event type, each item's event weights, decayed with a
  half-life and left out after a window.
* ``CoOccurrence``: per event type, how often two items had that event within
  one session (or one user's recent events): "also clicked", "also bought".
* ``Content``: items with similar catalogue features (TF-IDF over feature
  tokens, cosine similarity through an inverted index).

They are not thread-safe: ``builder.ModelSet`` owns them under one lock.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..store.base import Item

DAY = 86400.0
MAX_EXPONENT = 500.0  # rescale stored popularity scores before 2**x overflows
Scored = list[tuple[str, float]]


def top(scores: dict[str, float], k: int, skip: Iterable[str] = ()) -> Scored:
    """The k best (item, score), ties by item id, without ``skip``."""
    left_out = set(skip)
    best = heapq.nsmallest(k, ((-s, i) for i, s in scores.items() if i not in left_out and s > 0))
    return [(i, -s) for s, i in best]


class Popularity:
    """Decayed event weight per (type, item) over the last ``window_days``."""

    def __init__(self, window_days: float, half_life_days: float) -> None:
        self.window = window_days * DAY
        self.half_life = half_life_days * DAY
        self.base: float | None = None  # scores are kept in units of 2**((t - base) / half)
        self.scores: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.days: dict[int, dict[tuple[str, str], float]] = {}

    def add(self, kind: str, item: str, ts: float, weight: float, now: float) -> None:
        if weight <= 0 or ts < now - self.window:
            return
        if self.base is None:
            self.base = ts
        exponent = (ts - self.base) / self.half_life
        if exponent > MAX_EXPONENT:
            self._rebase(ts)
            exponent = 0.0
        x = weight * 2.0**exponent
        self.scores[kind][item] += x
        bucket = self.days.setdefault(int(ts // DAY), defaultdict(float))
        bucket[(kind, item)] += x

    def _rebase(self, base: float) -> None:
        assert self.base is not None
        factor = 2.0 ** ((self.base - base) / self.half_life)
        for per_item in self.scores.values():
            for item in per_item:
                per_item[item] *= factor
        for bucket in self.days.values():
            for key in bucket:
                bucket[key] *= factor
        self.base = base

    def expire(self, now: float) -> None:
        """Take out the days that have left the window."""
        first = int((now - self.window) // DAY)
        for day in [d for d in self.days if d < first]:
            for (kind, item), x in self.days.pop(day).items():
                per_item = self.scores[kind]
                left = per_item[item] - x
                if left <= per_item[item] * 1e-9:
                    del per_item[item]
                else:
                    per_item[item] = left

    def top(self, types: Sequence[str] | None, k: int, skip: Iterable[str] = ()) -> Scored:
        kinds = self.scores if types is None else types
        total: dict[str, float] = defaultdict(float)
        for kind in kinds:
            for item, x in self.scores.get(kind, {}).items():
                total[item] += x
        return top(total, k, skip)


class CoOccurrence:
    """Pair weights of items with the same event type in the same group (session or
    user); a group remembers its last ``history`` items, and at most ``max_groups``
    groups are remembered (least recently active first out)."""

    def __init__(self, history: int, max_groups: int = 100_000) -> None:
        self.history = history
        self.max_groups = max_groups
        self.groups: OrderedDict[tuple[str, str], deque[str]] = OrderedDict()
        self.pairs: dict[str, dict[str, dict[str, float]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(float))
        )
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, kind: str, item: str, group: str, weight: float) -> None:
        if weight <= 0:
            return
        key = (group, kind)
        seen = self.groups.get(key)
        if seen is None:
            seen = self.groups[key] = deque(maxlen=self.history)
            if len(self.groups) > self.max_groups:
                self.groups.popitem(last=False)
        self.groups.move_to_end(key)
        if item in seen:  # already paired with what this group had
            return
        pairs = self.pairs[kind]
        for other in seen:
            pairs[item][other] += weight
            pairs[other][item] += weight
        self.counts[kind][item] += weight
        seen.append(item)

    def related(
        self, seeds: Sequence[str], types: Sequence[str] | None, k: int, skip: Iterable[str] = ()
    ) -> Scored:
        """Items that occur with the seeds, each pair weight divided by the square root
        of the item's own weight, so that bestsellers do not crowd out everything."""
        kinds = self.pairs if types is None else types
        total: dict[str, float] = defaultdict(float)
        for kind in kinds:
            pairs, counts = self.pairs.get(kind), self.counts.get(kind)
            if pairs is None or counts is None:
                continue
            for seed in seeds:
                for other, w in pairs.get(seed, {}).items():
                    total[other] += w / math.sqrt(counts[other])
        return top(total, k, [*seeds, *skip])


def tokens(features: Iterable[Any], prefix: str = "") -> Iterator[str]:
    """``key=value`` for each text feature (``key`` alone for ``true``), nested keys
    joined by dots; numbers are left out (a price is not a kind of item)."""
    for obj in features:
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, str):
                yield f"{name}={value}"
            elif value is True:
                yield name
            elif isinstance(value, dict):
                yield from tokens([value], name + ".")


class Content:
    """Items with similar catalogue features: TF-IDF vectors, cosine similarity."""

    def __init__(self, items: Sequence[Item]) -> None:
        docs = {it.id: set(tokens(it.features)) for it in items}
        df: dict[str, int] = defaultdict(int)
        for toks in docs.values():
            for t in toks:
                df[t] += 1
        n = len(docs)
        self.vectors: dict[str, dict[str, float]] = {}
        self.index: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for item, toks in docs.items():
            weights = {t: math.log(1 + n / df[t]) for t in toks}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            vec = {t: w / norm for t, w in weights.items()}
            self.vectors[item] = vec
            for t, w in vec.items():
                self.index[t].append((item, w))

    def similar(self, seeds: Sequence[str], k: int, skip: Iterable[str] = ()) -> Scored:
        total: dict[str, float] = defaultdict(float)
        for seed in seeds:
            for t, w in self.vectors.get(seed, {}).items():
                for other, v in self.index[t]:
                    total[other] += w * v
        return top(total, k, [*seeds, *skip])
