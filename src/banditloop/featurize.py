"""JSON features -> the Vowpal Wabbit JSON example Azure Personalizer built.

The object is ``{"FromUrl": contextFeatures, "_multi": [{"_tag": id, "i":
{"constant": 1, "id": id}, "j": features}, ...]}`` and VW's own JSON parser
hashes it, so our models, exported DSJSON logs and models imported from Azure
mean the same features.  We only clean the input first: keys starting with
``_`` are dropped (VW gives some of them meaning: labels, ``_multi``, ``_text``),
nulls are dropped, and anything but strings, finite numbers, booleans, nested
objects and arrays of numbers is refused.  What is left is serialised by orjson,
so no byte of a feature can become JSON structure: a feature can never add a
namespace, a label or an example.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .errors import BadRequest

MAX_DEPTH = 4  # objects nested below a feature list; VW's namespaces are one level deep
NON_NUMBER_ARRAY = "Features should not contain array with non-number items."


class FeatureError(BadRequest):
    """Raised when a feature value has a shape Personalizer does not accept."""


def _clean(value: Any, depth: int, code: str) -> Any:
    """Return the value with ``_``-keys and nulls removed, or None if nothing is left."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise FeatureError("Feature values must be finite numbers.", code)
        return value
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise FeatureError(f"Features may nest at most {MAX_DEPTH} objects deep.", code)
        out = {}
        for k, v in value.items():
            if k.startswith("_") or v is None:
                continue
            cleaned = _clean(v, depth + 1, code)
            if cleaned is not None:
                out[k] = cleaned
        return out or None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise FeatureError(NON_NUMBER_ARRAY, code)
            if not math.isfinite(item):
                raise FeatureError("Feature values must be finite numbers.", code)
        return value or None
    if value is None:
        return None
    raise FeatureError(f"Unsupported feature value of type {type(value).__name__}.", code)


def clean_features(
    features: Iterable[Any] | None, code: str = "BadRequest"
) -> list[dict[str, Any]]:
    """Clean a Personalizer feature list (a list of objects)."""
    out: list[dict[str, Any]] = []
    for obj in features or ():
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise FeatureError("Each feature must be a JSON object.", code)
        cleaned = _clean(obj, 0, code)
        if cleaned:
            out.append(cleaned)
    return out


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
