"""VW examples for a Rank built from the cleaned features, without VW's JSON parser.

A Rank's example is the JSON object of featurize.py, and the trainer, the DSJSON
export and models imported from Azure all read it through VW's JSON parser. For a
prediction, writing that JSON and having VW parse it again (and pyvw wrap every
example in Python) was the largest part of a Rank's time. ``Predictor`` hashes the
same features as VW's JSON parser does (vowpal_wabbit's ``parse_example_json.cc``):

* a namespace's hash is ``hash(name, hash_seed)``, its feature group the first byte
  of the name; the objects of a feature list (``"FromUrl": [...]``, ``"j": [...]``)
  are each a namespace named after the list, a nested object one named after its key;
* a string is the feature ``key + value`` (in the value, space, tab, ``|`` and ``:``
  become ``_``), a number the feature ``key`` with its value as a 32-bit float (a
  zero is dropped), ``true`` the feature ``key`` (``false`` is nothing); an array of
  numbers is the namespace ``key`` whose i-th feature has the index
  ``hash(key) + i``;
* a hashed name ends at its first NUL character (VW reads C strings), a string
  feature is hashed with the namespace hash cut to 32 bits, a number with all of it;
* a feature group joins the example's namespaces when the first namespace of that
  group with features of its own closes (the order ``-q ::`` crosses them in).

tests/test_vwexample.py proves, over random feature sets, that the examples (feature
groups, indices, values) and the predictions are the JSON route's. Policies this
module does not cover (multi-slot, ``--chain_hash``, ``--ignore``, ``--keep``) keep
the JSON route (``Predictor.covers``).

The hashed features of an action's feature list are cached while the list is:
featurize.clean_recurring returns the same list object for the same features.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pylibvw

#: Policy options under which examples are not what this module builds.
NOT_COVERED = ("--ccb_explore_adf", "--chain_hash", "--ignore", "--keep")
_CB = pylibvw.vw.lContextualBandit
_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1
_ESCAPE = str.maketrans({" ": "_", "\t": "_", "|": "_", ":": "_"})
_FLOAT32_NORMAL = 1.1754943508222875e-38  # the smallest normal float: below, fewer bits
_FLOAT32_STEPS = float(1 << 24)  # a float's mantissa
_NEAR_TIE = 2.0**-20  # of a float's ulp: some hundred doubles around a tie
_CACHE = 4096  # hashed feature lists kept (the actions of a catalogue)

Features = list[tuple[int, float]]
#: Hashed features of a part of an example: the feature groups in the order they join
#: the example, and each group's features in the order VW's parser pushes them.
Hashed = tuple[list[int], dict[int, Features]]


def covers(tokens: Sequence[str]) -> bool:
    """Whether Predictor builds the examples of a policy with these VW tokens."""
    return not any(t in NOT_COVERED or t.split("=")[0] in NOT_COVERED for t in tokens)


def f32(value: float) -> float | None:
    """A number as a double whose cast to float (pybind11's, when it reaches VW) is the
    float VW's JSON parser keeps for it, or None when only VW's parser can tell.

    The parser casts once, so an integer beyond 53 bits is rounded here to 24 bits at
    once. RapidJSON reads a decimal number within an ulp or so, not always exactly: a
    double close to a tie between two floats (or among the tiny ones) may end up on
    either side, so those are left to VW (``Predictor._number``)."""
    if isinstance(value, int) and not -(1 << 53) <= value <= 1 << 53:
        # float(int) would round once to 53 bits, then the cast again to 24
        big = abs(value)
        shift = big.bit_length() - 24
        q, r = divmod(big, 1 << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and q & 1):
            q += 1
        return math.copysign(float(q << shift), value)
    if isinstance(value, int) or value == 0:
        return float(value)
    v = float(value)
    a = abs(v)
    if a < _FLOAT32_NORMAL:
        return None
    scaled = math.frexp(a)[0] * _FLOAT32_STEPS
    if abs(scaled - math.floor(scaled) - 0.5) < _NEAR_TIE:
        return None
    return v


def _name(text: str) -> str:
    """A name as VW's parser hashes it: a C string, ended by its first NUL."""
    return text.partition("\0")[0] if "\0" in text else text


def _group(name: str) -> int:
    """The feature group of a namespace: the first byte of its name (0 if empty)."""
    return ord(name[0]) if name and name[0] != "\0" else 0


class Predictor:
    """Rank predictions of one workspace from cleaned features; the caller holds the
    workspace's lock (policy.py)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._hash_feature = functools.partial(pylibvw.vw.hash_feature, ws)
        self._space: dict[str, int] = {}
        self._lists: dict[int, tuple[object, Hashed]] = {}  # id(list) -> (list, hashed)
        self._ids: dict[str, Hashed] = {}  # action id -> its namespace "i"
        self._pool: list[Any] = []  # examples reused from Rank to Rank (_take)
        self._numbers: dict[str, float] = {}  # numbers only VW's parser could tell

    # -- hashing ------------------------------------------------------------------

    def _number(self, value: float) -> float:
        """The value VW's JSON parser keeps for a number (asked of it when f32 cannot
        tell: rare, and remembered)."""
        v = f32(value)
        if v is not None:
            return v
        key = orjson.dumps(value).decode()
        v = self._numbers.get(key)
        if v is None:
            exs = pylibvw.vw._parse(self.ws, '{"_multi":[{"a":{"x":' + key + "}}]}")
            try:
                ex = exs[1]
                v = ex.feature_weight(97, 0) if ex.num_features_in(97) else 0.0
            finally:
                pylibvw.vw._finish_example_multi_ex(self.ws, exs)
            if len(self._numbers) >= _CACHE:
                self._numbers.clear()
            self._numbers[key] = v
        return v

    def space(self, name: str) -> int:
        h = self._space.get(name)
        if h is None:
            h = self._space[name] = pylibvw.vw.hash_space(self.ws, _name(name))
        return h

    def _namespace(
        self, name: str, obj: dict[str, Any], order: list[int], groups: dict[int, Features]
    ) -> None:
        """One object's features, as VW's parser reads a namespace named ``name``."""
        ns = self.space(name)
        ns32 = ns & _M32
        group = _group(name)
        feats = groups.setdefault(group, [])
        hash_feature = self._hash_feature
        count = 0
        for key, value in obj.items():
            kind = type(value)
            if kind is str:
                feats.append((hash_feature(_name(key + value.translate(_ESCAPE)), ns32), 1.0))
                count += 1
            elif kind is bool:
                if value:
                    feats.append((hash_feature(_name(key), ns32), 1.0))
                    count += 1
            elif kind is int or kind is float:
                v = self._number(value)
                if v != 0:
                    feats.append((hash_feature(_name(key), ns), v))
                    count += 1
            elif kind is dict:
                self._namespace(key, value, order, groups)
            elif kind is list:
                self._array(key, value, order, groups)
        if count and group not in order:
            order.append(group)

    def _array(
        self, name: str, values: list[Any], order: list[int], groups: dict[int, Features]
    ) -> None:
        """An array of numbers: features ``hash(name) + i``, zeros dropped."""
        base = self.space(name)
        group = _group(name)
        feats = groups.setdefault(group, [])
        count = 0
        for i, value in enumerate(values):
            v = self._number(value)
            if v != 0:
                feats.append(((base + i) & _M64, v))
                count += 1
        if count and group not in order:
            order.append(group)

    def feature_list(self, name: str, features: list[dict[str, Any]]) -> Hashed:
        """A feature list (``"name": [{...}, ...]``): each object a namespace ``name``."""
        order: list[int] = []
        groups: dict[int, Features] = {}
        for obj in features:
            self._namespace(name, obj, order, groups)
        return order, groups

    def _action_list(self, features: list[dict[str, Any]]) -> Hashed:
        """An action's features (namespace ``j``), cached while the list object lives."""
        hit = self._lists.get(id(features))
        if hit is not None and hit[0] is features:
            return hit[1]
        hashed = self.feature_list("j", features)
        if len(self._lists) >= _CACHE:
            self._lists.clear()
        self._lists[id(features)] = (features, hashed)
        return hashed

    def _action_id(self, action_id: str) -> Hashed:
        """Namespace ``i``: ``{"constant": 1, "id": action_id}``."""
        hit = self._ids.get(action_id)
        if hit is None:
            order: list[int] = []
            groups: dict[int, Features] = {}
            self._namespace("i", {"constant": 1, "id": action_id}, order, groups)
            hit = (order, groups)
            if len(self._ids) >= _CACHE:
                self._ids.clear()
            self._ids[action_id] = hit
        return hit

    # -- examples -------------------------------------------------------------------

    def _fill(self, ex: Any, parts: Sequence[Hashed]) -> None:
        ws = self.ws
        if len(parts) == 1:
            order, groups = parts[0]
            for g in order:
                ex.push_namespace(g)
                ex.push_feature_list(ws, g, 0, groups[g])
            return
        seen: list[int] = []
        for order, _ in parts:
            seen.extend(g for g in order if g not in seen)
        for g in seen:
            ex.push_namespace(g)
            for _, groups in parts:
                if g in groups:
                    ex.push_feature_list(ws, g, 0, groups[g])

    def _take(self, n: int) -> list[Any]:
        """n + 1 empty examples, the first one shared: kept between Ranks, since making
        a VW example (256 feature groups) costs more than filling one."""
        pool = self._pool
        if not pool:
            shared = pylibvw.example(self.ws, _CB)
            shared.set_label_string(self.ws, "shared", _CB)
            pool.append(shared)
        while len(pool) <= n:
            pool.append(pylibvw.example(self.ws, _CB))
        return pool[: n + 1]

    @contextlib.contextmanager
    def built(
        self, context: list[dict[str, Any]], actions: Sequence[tuple[str, list[dict[str, Any]]]]
    ) -> Iterator[list[Any]]:
        """The shared example and one per action, set up for VW (featurize.context_object's
        object, as VW's JSON parser would make it); emptied again afterwards."""
        exs = self._take(len(actions))
        try:
            self._fill(exs[0], [self.feature_list("FromUrl", context)])
            for ex, (action_id, features) in zip(exs[1:], actions, strict=True):
                self._fill(ex, [self._action_id(action_id), self._action_list(features)])
            for ex in exs:
                pylibvw.vw.setup_example(self.ws, ex)
            yield exs
        finally:
            for ex in exs:
                while ex.pop_namespace():  # the constant's too: setup adds it again
                    pass
                pylibvw.vw.unsetup_example(self.ws, ex)  # and the counts start again at 0

    def pmf(
        self, context: list[dict[str, Any]], actions: Sequence[tuple[str, list[dict[str, Any]]]]
    ) -> list[float]:
        """Probabilities per action, in the order of ``actions``."""
        with self.built(context, actions) as exs:
            try:
                pylibvw.vw.predict_multi(self.ws, exs)
                return list(exs[0].get_action_scores())
            finally:
                pylibvw.vw._finish_example_multi_ex(self.ws, exs)
