"""JSON features -> the Vowpal Wabbit JSON example Azure Personalizer built.

The object is ``{"FromUrl": contextFeatures, "_multi": [{"_tag": id, "i":
{"constant": 1, "id": id}, "j": features}, ...]}`` and VW's own JSON parser
hashes it, so our models, exported DSJSON logs and models imported from Azure
mean the same features.  We only clean the input first: keys starting with
``_`` are dropped (VW gives some of them meaning: labels, ``_multi``, ``_text``),
nulls are dropped, a namespace (an object or a numeric array) whose name
starts with a non-ASCII character gets a ``~`` in front (VW would corrupt its
memory on it), and anything but valid Unicode text, finite 32-bit numbers,
booleans, nested objects and arrays of numbers is refused.  What is left is
serialised by orjson,
so no byte of a feature can become JSON structure: a feature can never add a
namespace, a label or an example.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .errors import BadRequest, FeatureError

FLOAT32_MAX = 3.4028234663852886e38  # VW keeps feature values as 32-bit floats
MAX_DEPTH = 4  # objects nested below a feature list; VW's namespaces are one level deep
NAMESPACE_ESCAPE = "~"  # prefixed to namespace names that start with a non-ASCII character
NON_NUMBER_ARRAY = "Features should not contain array with non-number items."
RECURRING_CACHE = 4096  # feature lists of actions kept cleaned (about 2 KB each)
INT64_MIN, UINT64_MAX = -(1 << 63), (1 << 64) - 1  # what VW's JSON parser reads as a number


def check_text(value: str, code: str) -> str:
    """Refuse strings with lone surrogates: JSON can carry them, UTF-8 cannot."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise FeatureError("Text in the request must be valid Unicode.", code) from None
    return value


def _number(value: float, code: str) -> float:
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        raise FeatureError("Integer feature values must fit in 64 bits.", code)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise FeatureError("Feature values must be finite numbers within 32-bit range.", code)
    return value


class FeatureLimits:
    """What one request's features may hold: ``max_features`` features (each string,
    number, boolean or array item counts one), keys and strings of at most
    ``max_string`` characters. Counted while the features are cleaned: one walk."""

    __slots__ = ("code", "left", "max_features", "max_string")

    def __init__(
        self, code: str, max_features: int = sys.maxsize, max_string: int = sys.maxsize
    ) -> None:
        self.code = code
        self.max_features = self.left = max_features
        self.max_string = max_string

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise BadRequest(f"A request may hold at most {self.max_features} features.", self.code)

    def too_long(self) -> BadRequest:
        return BadRequest(
            f"Feature names and values must be at most {self.max_string} characters.", self.code
        )


def count_features(value: Any, limits: FeatureLimits) -> None:
    """Count what a value holds against the limits without cleaning it (for what the
    cleaning drops: ``_`` keys are not features, but still count)."""
    if isinstance(value, str):
        if len(value) > limits.max_string:
            raise limits.too_long()
        limits.spend(1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and len(k) > limits.max_string:
                raise limits.too_long()
            count_features(v, limits)
    elif isinstance(value, list):
        for v in value:
            count_features(v, limits)
    elif value is not None:
        limits.spend(1)


def _clean(value: Any, depth: int, limits: FeatureLimits) -> Any:
    """Return the value with ``_``-keys and nulls removed, or None if nothing is left.

    The leaves of an object (strings, numbers, booleans) are checked in its loop, not by
    a call each: this walk is a good part of a Rank's time."""
    code = limits.code
    if isinstance(value, bool):
        limits.spend(1)
        return value
    if isinstance(value, str):
        if len(value) > limits.max_string:
            raise limits.too_long()
        limits.spend(1)
        return check_text(value, code)
    if isinstance(value, int | float):
        limits.spend(1)
        return _number(value, code)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise FeatureError(f"Features may nest at most {MAX_DEPTH} objects deep.", code)
        longest = limits.max_string
        leaves = 0
        out = {}
        for k, v in value.items():
            if len(k) > longest:
                raise limits.too_long()
            if v is None:
                continue
            if k.startswith("_"):
                count_features(v, limits)
                continue
            if not k.isascii():
                check_text(k, code)
            kind = type(v)
            if kind is str:
                if len(v) > longest:
                    raise limits.too_long()
                if not v.isascii():
                    check_text(v, code)
                leaves += 1
            elif kind is float:
                if not -FLOAT32_MAX <= v <= FLOAT32_MAX:  # also NaN
                    _number(v, code)
                leaves += 1
            elif kind is int:
                if not INT64_MIN <= v <= UINT64_MAX:
                    _number(v, code)
                leaves += 1
            elif kind is bool:
                leaves += 1
            else:
                v = _clean(v, depth + 1, limits)
                if v is None:
                    continue
                if k and ord(k[0]) > 0x7F and isinstance(v, dict | list):
                    # VW indexes namespaces by their first byte as a signed char: a
                    # non-ASCII first byte corrupts its memory. Give it an ASCII one.
                    k = NAMESPACE_ESCAPE + k
            out[k] = v
        limits.spend(leaves)
        return out or None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise FeatureError(NON_NUMBER_ARRAY, code)
            _number(item, code)
        limits.spend(len(value))
        return value or None
    if value is None:
        return None
    raise FeatureError(f"Unsupported feature value of type {type(value).__name__}.", code)


def clean_features(
    features: Iterable[Any] | None, code: str = "BadRequest", limits: FeatureLimits | None = None
) -> list[dict[str, Any]]:
    """Clean a Personalizer feature list (a list of objects), within ``limits`` if given
    (shared by all the feature lists of one request)."""
    limits = limits or FeatureLimits(code)
    out: list[dict[str, Any]] = []
    for obj in features or ():
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise FeatureError("Each feature must be a JSON object.", code)
        cleaned = _clean(obj, 0, limits)
        if cleaned:
            out.append(cleaned)
    return out


def clean_recurring(features: Sequence[Any] | None, limits: FeatureLimits) -> list[dict[str, Any]]:
    """``clean_features`` for a feature list that recurs from request to request (the
    actions of a catalogue): cached by its JSON. The cached lists are shared: never
    change them."""
    try:
        key = orjson.dumps(features)
    except orjson.JSONEncodeError:  # lone surrogates, huge integers: cleaning says why
        key = b"null"
    if b"null" in key:  # orjson writes NaN and infinities as null: the key would lie
        return clean_features(features, limits.code, limits)
    cleaned, count = _clean_json(key, limits.code, limits.max_string)
    limits.spend(count)
    return cleaned


@functools.lru_cache(maxsize=RECURRING_CACHE)
def _clean_json(features: bytes, code: str, max_string: int) -> tuple[list[dict[str, Any]], int]:
    """Cleaned features and how many they count (a refused list raises: not cached)."""
    limits = FeatureLimits(code, max_string=max_string)
    cleaned = clean_features(orjson.loads(features), code, limits)
    return cleaned, limits.max_features - limits.left


def action_object(action_id: str, features: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``_multi`` entry: the id is also a feature (namespace ``i``), as in Azure."""
    return {"_tag": action_id, "i": {"constant": 1, "id": action_id}, "j": features}


def context_object(
    context: list[dict[str, Any]], actions: Sequence[tuple[str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """The example object for cleaned features; actions in the order VW will see them."""
    return {"FromUrl": context, "_multi": [action_object(a, f) for a, f in actions]}


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def context_has(example: dict[str, Any], path: list[str], value: Any) -> bool:
    """Whether a logged example's context holds ``value`` at ``path`` (e.g. ["user", "id"])."""
    for obj in example.get("FromUrl") or ():
        node: Any = obj
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and node == value and type(node) is type(value):
            return True
    return False
