"""Simulated worlds with a known optimum, so that reward and regret can be measured.

Every world is seeded and reproducible, and speaks one small interface
(:class:`World`): ``next()`` gives an :class:`Interaction` (context features,
actions with their features), ``expected(it, action)`` is the mean reward of
an action, ``reward(it, action)`` a draw of it, and ``best(it)`` the action
with the highest expected reward.  ``it.delay`` says after how many further
events the reward is reported (``None``: never).

* ``news`` - the Vowpal Wabbit tutorial: 2 users x 2 times of day, 7 articles,
  one clicked article per context.
* ``digits``, ``wine``, ``breast_cancer`` - scikit-learn's bundled data sets as
  bandits (Bietti, Agarwal and Langford's conversion): the features are the
  context, the classes the actions, reward 1 for the true class.  Needs
  scikit-learn (the ``dev`` extra).
* ``many_actions`` - 50 actions with numeric features; the click probability is
  a hidden bilinear function of context and action features.
* ``news_shuffled`` - the news world with the articles in a random order per event,
  so that the first one (``baseline1``) is clicked with probability 1/7.
* ``nonstationary`` - the news world whose preferred articles change at event
  ``shift_at``.
* ``delayed`` - the news world whose clicks are reported after a random delay,
  or never.
* ``cold_start`` - the news world in which a new article appears at event
  ``appear_at`` and becomes the best one in one context.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Action:
    id: str
    features: dict[str, Any]


@dataclass(frozen=True)
class Interaction:
    """One event: what the client sends to Rank, plus what only the world knows."""

    index: int  # 1-based position in the stream
    context: dict[str, Any]
    actions: tuple[Action, ...]
    vector: tuple[float, ...] = ()  # the context as numbers, for learners outside VW
    delay: int | None = 0  # events until the reward is reported; None: never
    hidden: Any = field(default=None, compare=False)  # the world's own state for this event

    @property
    def action_ids(self) -> list[str]:
        return [a.id for a in self.actions]


class World(Protocol):
    name: str

    def next(self) -> Interaction: ...

    def expected(self, it: Interaction, action_id: str) -> float: ...

    def reward(self, it: Interaction, action_id: str) -> float: ...

    def best(self, it: Interaction) -> str: ...


class _Deterministic:
    """Reward equals expected reward; the best action is the argmax."""

    name = ""

    def expected(self, it: Interaction, action_id: str) -> float:
        raise NotImplementedError

    def reward(self, it: Interaction, action_id: str) -> float:
        return self.expected(it, action_id)

    def best(self, it: Interaction) -> str:
        return max(it.action_ids, key=lambda a: self.expected(it, a))


class NewsWorld(_Deterministic):
    """Users x times of day x 7 articles; each (user, time) has one clicked article."""

    name = "news"
    users = ("Tom", "Anna")
    times = ("morning", "afternoon")
    articles = ("politics", "sports", "music", "food", "finance", "health", "camping")
    preferred = {
        ("Tom", "morning"): "politics",
        ("Tom", "afternoon"): "music",
        ("Anna", "morning"): "sports",
        ("Anna", "afternoon"): "politics",
    }

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.count = 0
        self._actions = tuple(Action(a, {"article": a}) for a in self.articles)

    def next(self) -> Interaction:
        user, tod = self.rng.choice(self.users), self.rng.choice(self.times)
        self.count += 1
        vector = tuple(float(v) for v in (user == "Tom", tod == "morning"))
        vector = (*vector, vector[0] * vector[1], 1.0)
        return Interaction(
            self.count, {"user": user, "time_of_day": tod}, self._actions, vector, 0, (user, tod)
        )

    def preferences(self, it: Interaction) -> dict[tuple[str, str], str]:
        return self.preferred

    def expected(self, it: Interaction, action_id: str) -> float:
        return 1.0 if self.preferences(it)[it.hidden] == action_id else 0.0

    def best(self, it: Interaction) -> str:
        return self.preferences(it)[it.hidden]


class ShuffledNewsWorld(NewsWorld):
    """The news world whose Rank requests list the articles in a random order."""

    name = "news_shuffled"

    def next(self) -> Interaction:
        it = super().next()
        order = list(it.actions)
        self.rng.shuffle(order)
        return Interaction(it.index, it.context, tuple(order), it.vector, 0, it.hidden)


class NonStationaryWorld(NewsWorld):
    """The news world whose preferred article changes in every context at ``shift_at``."""

    name = "nonstationary"
    shifted = {
        ("Tom", "morning"): "food",
        ("Tom", "afternoon"): "sports",
        ("Anna", "morning"): "health",
        ("Anna", "afternoon"): "music",
    }

    def __init__(self, seed: int = 0, shift_at: int = 2500) -> None:
        super().__init__(seed)
        self.shift_at = shift_at

    def preferences(self, it: Interaction) -> dict[tuple[str, str], str]:
        return self.shifted if it.index > self.shift_at else self.preferred


class DelayedWorld(NewsWorld):
    """The news world whose rewards are reported after ``min_delay..max_delay`` events,
    or never with probability ``missing``."""

    name = "delayed"

    def __init__(
        self, seed: int = 0, min_delay: int = 0, max_delay: int = 200, missing: float = 0.2
    ) -> None:
        super().__init__(seed)
        if not 0 <= min_delay <= max_delay or not 0 <= missing <= 1:
            raise ValueError("need 0 <= min_delay <= max_delay and 0 <= missing <= 1")
        self.min_delay, self.max_delay, self.missing = min_delay, max_delay, missing
        self.delays = random.Random(f"delays-{seed}")

    def next(self) -> Interaction:
        it = super().next()
        lost = self.delays.random() < self.missing
        delay = self.delays.randint(self.min_delay, self.max_delay)
        return Interaction(
            it.index, it.context, it.actions, it.vector, None if lost else delay, it.hidden
        )


class ColdStartWorld(NewsWorld):
    """The news world in which a never-seen article, ``new_article``, joins the actions
    at event ``appear_at`` and is from then on the one clicked by Tom in the morning."""

    name = "cold_start"
    new_article = "weather"

    def __init__(self, seed: int = 0, appear_at: int = 2500) -> None:
        super().__init__(seed)
        self.appear_at = appear_at
        self._with_new = (*self._actions, Action(self.new_article, {"article": self.new_article}))
        self._after = {**self.preferred, ("Tom", "morning"): self.new_article}

    def next(self) -> Interaction:
        it = super().next()
        if it.index <= self.appear_at:
            return it
        return Interaction(it.index, it.context, self._with_new, it.vector, 0, it.hidden)

    def preferences(self, it: Interaction) -> dict[tuple[str, str], str]:
        return self._after if it.index > self.appear_at else self.preferred


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class ManyActionsWorld:
    """``n_actions`` actions with ``dim`` numeric features; context ``x`` and action ``y``
    are clicked with probability ``sigmoid(scale * x.W.y)`` for a hidden matrix ``W``."""

    name = "many_actions"

    def __init__(
        self, seed: int = 0, n_actions: int = 50, dim: int = 5, scale: float = 3.0
    ) -> None:
        world = random.Random(f"many-actions-{seed}")
        self.dim = dim
        self.w = [[world.gauss(0, 1 / math.sqrt(dim)) for _ in range(dim)] for _ in range(dim)]
        self.scale = scale
        self.vectors = [[world.gauss(0, 1) for _ in range(dim)] for _ in range(n_actions)]
        self._actions = tuple(
            Action(f"item{k}", {f"y{j}": round(v, 4) for j, v in enumerate(vec)})
            for k, vec in enumerate(self.vectors)
        )
        self._index = {a.id: k for k, a in enumerate(self._actions)}
        self.rng = random.Random(seed)
        self.count = 0

    def next(self) -> Interaction:
        x = [round(self.rng.gauss(0, 1), 4) for _ in range(self.dim)]
        self.count += 1
        wx = [sum(x[i] * self.w[i][j] for i in range(self.dim)) for j in range(self.dim)]
        means = tuple(
            _sigmoid(self.scale * sum(a * b for a, b in zip(wx, y, strict=True)))
            for y in self.vectors
        )
        context = {f"x{i}": v for i, v in enumerate(x)}
        return Interaction(self.count, context, self._actions, (*x, 1.0), 0, means)

    def expected(self, it: Interaction, action_id: str) -> float:
        return float(it.hidden[self._index[action_id]])

    def reward(self, it: Interaction, action_id: str) -> float:
        return 1.0 if self.rng.random() < self.expected(it, action_id) else 0.0

    def best(self, it: Interaction) -> str:
        means: Sequence[float] = it.hidden
        return self._actions[max(range(len(means)), key=means.__getitem__)].id


DATASETS = ("digits", "wine", "breast_cancer")


class SupervisedWorld(_Deterministic):
    """A classification data set as a bandit: passes over the rows, reshuffled each pass;
    features (standardized) are the context, classes are the actions, reward 1 for the
    true class."""

    def __init__(self, dataset: str = "digits", seed: int = 0) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"unknown data set {dataset!r}; choose from {', '.join(DATASETS)}")
        try:
            from sklearn import datasets
        except ImportError:
            raise RuntimeError(
                f"the {dataset} world needs scikit-learn: pip install 'banditloop[dev]'"
            ) from None
        data = getattr(datasets, f"load_{dataset}")()
        self.name = dataset
        rows = [list(map(float, r)) for r in data.data]
        cols = list(zip(*rows, strict=True))
        means = [sum(c) / len(c) for c in cols]
        sds = [
            math.sqrt(sum((v - m) ** 2 for v in c) / len(c)) or 1.0
            for c, m in zip(cols, means, strict=True)
        ]
        self.rows = [
            tuple(round((v - m) / s, 3) for v, m, s in zip(r, means, sds, strict=True))
            for r in rows
        ]
        self.labels = [f"class{int(y)}" for y in data.target]
        self._actions = tuple(
            Action(c, {"class": c}) for c in sorted(set(self.labels), key=lambda c: int(c[5:]))
        )
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.count = 0

    def next(self) -> Interaction:
        if not self.order:
            self.order = list(range(len(self.rows)))
            self.rng.shuffle(self.order)
        row = self.order.pop()
        self.count += 1
        x = self.rows[row]
        context = {f"f{i}": v for i, v in enumerate(x) if v != 0}
        return Interaction(self.count, context, self._actions, (*x, 1.0), 0, self.labels[row])

    def expected(self, it: Interaction, action_id: str) -> float:
        return 1.0 if it.hidden == action_id else 0.0

    def best(self, it: Interaction) -> str:
        return str(it.hidden)


WORLDS: dict[str, Callable[[int], World]] = {
    "news": NewsWorld,
    "news_shuffled": ShuffledNewsWorld,
    "digits": lambda seed: SupervisedWorld("digits", seed),
    "wine": lambda seed: SupervisedWorld("wine", seed),
    "breast_cancer": lambda seed: SupervisedWorld("breast_cancer", seed),
    "many_actions": ManyActionsWorld,
    "nonstationary": NonStationaryWorld,
    "delayed": DelayedWorld,
    "cold_start": ColdStartWorld,
}


def make_world(name: str, seed: int = 0) -> World:
    """The world called ``name`` (a key of ``WORLDS``), seeded."""
    try:
        factory = WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown world {name!r}; choose from {', '.join(WORLDS)}") from None
    return factory(seed)


def rank_body(it: Interaction) -> dict[str, Any]:
    """The Rank request for an interaction."""
    return {
        "contextFeatures": [it.context],
        "actions": [{"id": a.id, "features": [a.features]} for a in it.actions],
    }
