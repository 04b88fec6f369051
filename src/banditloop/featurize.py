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

import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .errors import BadRequest

FLOAT32_MAX = 3.4028234663852886e38  # VW keeps feature values as 32-bit floats
MAX_DEPTH = 4  # objects nested below a feature list; VW's namespaces are one level deep
NAMESPACE_ESCAPE = "~"  # prefixed to namespace names that start with a non-ASCII character
NON_NUMBER_ARRAY = "Features should not contain array with non-number items."


class FeatureError(BadRequest):
    """Raised when a feature value has a shape Personalizer does not accept."""


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


def _clean(value: Any, depth: int, code: str) -> Any:
    """Return the value with ``_``-keys and nulls removed, or None if nothing is left."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, code)
    if isinstance(value, int | float):
        return _number(value, code)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise FeatureError(f"Features may nest at most {MAX_DEPTH} objects deep.", code)
        out = {}
        for k, v in value.items():
            if k.startswith("_") or v is None:
                continue
            check_text(k, code)
            cleaned = _clean(v, depth + 1, code)
            if cleaned is None:
                continue
            if isinstance(cleaned, dict | list) and k and ord(k[0]) > 0x7F:
                # VW indexes namespaces by their first byte as a signed char: a
                # non-ASCII first byte corrupts its memory. Give it an ASCII one.
                k = NAMESPACE_ESCAPE + k
            out[k] = cleaned
        return out or None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise FeatureError(NON_NUMBER_ARRAY, code)
            _number(item, code)
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
