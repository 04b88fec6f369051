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

import functools
import math
import struct
from collections.abc import Sequence
from typing import Any

import pylibvw

#: Policy options under which examples are not what this module builds.
NOT_COVERED = ("--ccb_explore_adf", "--chain_hash", "--ignore", "--keep")
_CB = pylibvw.vw.lContextualBandit
_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1
_ESCAPE = str.maketrans({" ": "_", "\t": "_", "|": "_", ":": "_"})
_TINY = 1e-44  # below this a double may round to a zero float (the smallest is 1.4e-45)
_CACHE = 4096  # hashed feature lists kept (the actions of a catalogue)

Features = list[tuple[int, float]]
#: Hashed features of a part of an example: the feature groups in the order they join
#: the example, and each group's features in the order VW's parser pushes them.
Hashed = tuple[list[int], dict[int, Features]]


def covers(tokens: Sequence[str]) -> bool:
    """Whether Predictor builds the examples of a policy with these VW tokens."""
    return not any(t in NOT_COVERED or t.split("=")[0] in NOT_COVERED for t in tokens)


def f32(value: float) -> float:
    """A number as a double whose cast to float (pybind11's, when it reaches VW) is the
    float VW's JSON parser keeps for it: the parser casts once, so an integer beyond 53
    bits is rounded here to 24 bits at once; a double that rounds to a zero float is 0."""
    if isinstance(value, int) and not -(1 << 53) <= value <= 1 << 53:
        # float(int) would round once to 53 bits, then the cast again to 24
        a = abs(value)
        shift = a.bit_length() - 24
        q, r = divmod(a, 1 << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and q & 1):
            q += 1
        return math.copysign(float(q << shift), value)
    v = float(value)
    if -_TINY < v < _TINY:
        return float(struct.unpack("<f", struct.pack("<f", v))[0])
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

    # -- hashing ------------------------------------------------------------------

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
                v = f32(value)
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
            v = f32(value)
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

    def _example(self, parts: Sequence[Hashed], shared: bool) -> Any:
        ws = self.ws
        ex = pylibvw.example(ws, _CB)
        if shared:
            ex.set_label_string(ws, "shared", _CB)
        if len(parts) == 1:
            order, groups = parts[0]
            for g in order:
                ex.push_namespace(g)
                ex.push_feature_list(ws, g, 0, groups[g])
            return ex
        seen: list[int] = []
        for order, _ in parts:
            seen.extend(g for g in order if g not in seen)
        for g in seen:
            ex.push_namespace(g)
            for _, groups in parts:
                if g in groups:
                    ex.push_feature_list(ws, g, 0, groups[g])
        return ex

    def examples(
        self, context: list[dict[str, Any]], actions: Sequence[tuple[str, list[dict[str, Any]]]]
    ) -> list[Any]:
        """The shared example and one per action, set up for VW (featurize.context_object's
        object, as VW's JSON parser would make it)."""
        exs = [self._example([self.feature_list("FromUrl", context)], True)]
        for action_id, features in actions:
            parts = [self._action_id(action_id), self._action_list(features)]
            exs.append(self._example(parts, False))
        ws = self.ws
        for ex in exs:
            pylibvw.vw.setup_example(ws, ex)
        return exs

    def pmf(
        self, context: list[dict[str, Any]], actions: Sequence[tuple[str, list[dict[str, Any]]]]
    ) -> list[float]:
        """Probabilities per action, in the order of ``actions``."""
        exs = self.examples(context, actions)
        try:
            pylibvw.vw.predict_multi(self.ws, exs)
            return list(exs[0].get_action_scores())
        finally:
            pylibvw.vw._finish_example_multi_ex(self.ws, exs)
