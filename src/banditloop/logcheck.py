"""Checking a DSJSON line from outside (``logs import``) as strictly as API input.

An imported line becomes a stored decision that the trainer feeds to VW, so
every field is type-checked before anything of it is stored: the same event ID
rules as Rank, rewards finite and in [-1, 1] as Reward takes them,
probabilities in [0, 1] with the chosen one above 0 and the pmf summing to 1,
``a`` a permutation of the actions, and a context that VW reads as features
only: no key starting with ``_`` (VW gives them meaning: labels, ``_multi``,
``_text``) except an action's ``_tag``, feature values of the kinds and sizes
Rank accepts.  Errors name the field, never its value.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from .errors import BadRequest
from .featurize import FLOAT32_MAX, INT64_MIN, UINT64_MAX, FeatureLimits
from .ids import check_event_id

CODE = "InvalidImportLine"
PMF_TOLERANCE = 0.01  # logged pmfs are rounded; a sum further from 1 is not a pmf
MAX_DEPTH = 4  # objects nested in a feature, as featurize.py allows
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_SEEN = 100_000  # distinct actions remembered as checked by one import


class Checked(NamedTuple):
    """What a checked line gives its caller."""

    rewards: list[float]  # from ``o``, else from the label
    catalogue: bytes  # ``c._multi`` as orjson writes it: its key in ``seen``
    example: str  # ``c`` as orjson writes it (its members joined)


def refuse(message: str) -> BadRequest:
    return BadRequest(message, CODE)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: Any, field: str, low: float, high: float) -> float:
    """A finite JSON number (not a string, not a boolean) in [low, high]."""
    if not is_number(value):
        raise refuse(f"{field} must be a number.")
    out = float(value)
    if not (math.isfinite(out) and low <= out <= high):
        raise refuse(f"{field} must be a finite number between {low:g} and {high:g}.")
    return out


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise refuse(f"{field} must be an integer between {low} and {high}.")
    return value


def flag(obj: dict[str, Any], field: str) -> bool:
    value = obj.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise refuse(f"{field} must be true or false.")
    return value


def text(value: Any, field: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise refuse(f"{field} must be a string of at most {limit} characters.")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise refuse(f"{field} must be valid Unicode.") from None
    return value


def features(value: Any, field: str, limits: FeatureLimits) -> None:
    """A top-level value of ``c`` or of an action, as Rank writes them: a feature list
    (objects), a numeric array, an object, or a plain value."""
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise refuse(f"{field}[{i}]: a feature list holds objects only.")
            _value(item, f"{field}[{i}]", limits, 0)
    else:
        _value(value, field, limits, 0)


def _value(value: Any, field: str, limits: FeatureLimits, depth: int) -> None:
    """A feature value by featurize.py's rules: text, finite 32-bit numbers, booleans,
    nulls, arrays of numbers, and objects (at most MAX_DEPTH deep) whose keys do not
    start with ``_``."""
    if value is None or isinstance(value, bool):
        limits.spend(1)
    elif isinstance(value, str):
        if len(value) > limits.max_string:
            raise refuse(f"{field} holds a string longer than {limits.max_string} characters.")
        text(value, field, limits.max_string)
        limits.spend(1)
    elif isinstance(value, int | float):
        _number(value, field)
        limits.spend(1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise refuse(f"{field}[{i}]: arrays hold numbers only.")
            _number(item, f"{field}[{i}]")
        limits.spend(len(value))
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise refuse(f"{field} nests objects deeper than {MAX_DEPTH}.")
        for key, item in value.items():
            if key.startswith("_"):
                raise refuse(f"{field}: keys starting with _ are not features ({key[:32]!r}).")
            if len(key) > limits.max_string:
                raise refuse(f"{field} holds a key longer than {limits.max_string} characters.")
            text(key, f"{field} key", limits.max_string)
            namespace(key, item, field)
            _value(item, f"{field}.{key}", limits, depth + 1)
    else:
        raise refuse(f"{field} holds an unsupported value.")


def namespace(key: str, value: Any, field: str) -> None:
    """VW indexes namespaces (objects, arrays) by their first byte as a signed char: one
    whose name starts with a non-ASCII character corrupts its memory (featurize.py
    renames them for Rank; an imported line is refused)."""
    if key and not key[0].isascii() and isinstance(value, dict | list):
        raise refuse(f"{field}: a namespace name must start with an ASCII character.")


def _number(value: int | float, field: str) -> None:
    if isinstance(value, int) and not INT64_MIN <= value <= UINT64_MAX:
        raise refuse(f"{field} holds an integer beyond 64 bits.")
    if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise refuse(f"{field} holds a number beyond 32-bit floats.")


def context(
    c: Any,
    limits: FeatureLimits,
    max_actions: int,
    seen: dict[bytes, int] | None = None,
    whole: bytes | None = None,
) -> tuple[list[dict[str, Any]], bytes, str]:
    """The checked ``c`` of a single-slot line; returns its ``_multi``, that as orjson
    writes it (``whole``, if the caller has it already), and ``c`` as orjson writes it.
    ``seen`` holds what was checked already (its JSON, and the features it holds): a
    log repeats its catalogue on every line, and most of its contexts, so each
    distinct action and context member (``"key":value``, which no action's or
    catalogue's JSON can equal) is checked once per import."""
    if not isinstance(c, dict):
        raise refuse("c must be an object.")
    if "_slots" in c:
        raise refuse("Multi-slot (CCB) lines cannot be imported.")
    multi = c.get("_multi")
    if not isinstance(multi, list) or not multi:
        raise refuse("c._multi must be a non-empty list of actions.")
    if len(multi) > max_actions:
        raise refuse(f"c._multi holds more than {max_actions} actions.")
    seen = {} if seen is None else seen
    whole = orjson.dumps(multi) if whole is None else whole
    members = []  # orjson writes an object as its members joined
    for key, value in c.items():
        if key == "_multi":
            members.append(b'"_multi":' + whole)
            continue
        if key.startswith("_"):
            raise refuse(f"c: keys starting with _ are not features ({key[:32]!r}).")
        member = orjson.dumps(key) + b":" + orjson.dumps(value)
        members.append(member)
        known = seen.get(member)
        if known is not None:
            limits.spend(known)
            continue
        left = limits.left
        namespace(key, value, "c")
        features(value, f"c.{key}", limits)
        if len(seen) < MAX_SEEN:
            seen[member] = left - limits.left
    example = (b"{" + b",".join(members) + b"}").decode()
    known = seen.get(whole)
    if known is not None:  # the same catalogue as a line before
        limits.spend(known)
        return multi, whole, example
    before = limits.left
    for i, action in enumerate(multi):
        if not isinstance(action, dict):
            raise refuse(f"c._multi[{i}] must be an object.")
        key = orjson.dumps(action)
        known = seen.get(key)
        if known is not None:
            limits.spend(known)
            continue
        left = limits.left
        for name, value in action.items():
            if name == "_tag":
                text(value, f"c._multi[{i}]._tag")
                continue
            if name.startswith("_"):
                raise refuse(
                    f"c._multi[{i}]: keys starting with _ are not features ({name[:32]!r})."
                )
            namespace(name, value, f"c._multi[{i}]")
            features(value, f"c._multi[{i}].{name}", limits)
        if len(seen) < MAX_SEEN:
            seen[key] = left - limits.left
    if len(seen) < MAX_SEEN:
        seen[whole] = before - limits.left
    return multi, whole, example


def line(
    obj: Any,
    limits: FeatureLimits,
    max_actions: int,
    seen: dict[bytes, int] | None = None,
    whole: bytes | None = None,
) -> Checked:
    """Check a decoded single-slot DSJSON line; returns its rewards for the caller to
    store (and its catalogue's JSON: see context). Raises BadRequest naming the field."""
    if not isinstance(obj, dict):
        raise refuse("A DSJSON line must be a JSON object.")
    if "_outcomes" in obj:
        raise refuse("Multi-slot (CCB) lines cannot be imported.")
    for field in ("EventId", "Timestamp", "a", "p", "c"):
        if field not in obj:
            raise refuse(f"The line has no {field}.")
    event_id = text(obj["EventId"], "EventId")
    check_event_id(event_id, CODE)
    text(obj["Timestamp"], "Timestamp", 64)
    multi, whole, example = context(obj["c"], limits, max_actions, seen, whole)
    n = len(multi)
    actions, pmf = obj["a"], obj["p"]
    if not isinstance(actions, list) or not isinstance(pmf, list):
        raise refuse("a and p must be lists.")
    if len(actions) != n or len(pmf) != n:
        raise refuse("a and p must have one entry per action of c._multi.")
    if set(map(type, actions)) != {int}:  # the common case at C speed
        for i, a in enumerate(actions):
            integer(a, f"a[{i}]", 1, n)
    if sorted(actions) != list(range(1, n + 1)):
        raise refuse("a must hold each action number 1 to n once.")
    if set(map(type, pmf)) == {float} and min(pmf) >= 0.0 and max(pmf) <= 1.0:
        probabilities = pmf  # the common case at C speed (orjson reads no NaN or inf)
    else:
        probabilities = [number(p, f"p[{i}]", 0.0, 1.0) for i, p in enumerate(pmf)]
    if probabilities[0] <= 0:
        raise refuse("p[0], the probability of the chosen action, must be above 0.")
    if abs(sum(probabilities) - 1.0) > PMF_TOLERANCE:
        raise refuse("p must sum to 1.")
    chosen = actions[0]
    if "_label_Action" in obj and integer(obj["_label_Action"], "_label_Action", 1, n) != chosen:
        raise refuse("_label_Action must be the chosen action, a[0].")
    if "_labelIndex" in obj and integer(obj["_labelIndex"], "_labelIndex", 0, n) != chosen - 1:
        raise refuse("_labelIndex must be the chosen action's index, a[0] - 1.")
    if "_label_probability" in obj:
        number(obj["_label_probability"], "_label_probability", 1e-12, 1.0)
    costs = {}
    for field in ("_label_cost", "_original_label_cost"):
        if obj.get(field) is not None:
            costs[field] = -number(obj[field], field, -1.0, 1.0)
    flag(obj, "_skipLearn")
    flag(obj, "_holdout")
    state = obj.get("VWState")
    if state is not None:
        if not isinstance(state, dict):
            raise refuse("VWState must be an object.")
        if state.get("m") is not None:
            text(state["m"], "VWState.m")
    rewards = _observations(obj.get("o"))
    if not rewards and costs:
        rewards = [costs.get("_original_label_cost", costs.get("_label_cost", 0.0))]
    return Checked(rewards, whole, example)


def _observations(o: Any) -> list[float]:
    if o is None:
        return []
    if not isinstance(o, list):
        raise refuse("o must be a list of observations.")
    rewards = []
    for i, obs in enumerate(o):
        if not isinstance(obs, dict):
            raise refuse(f"o[{i}] must be an object.")
        if "EventId" in obs and obs["EventId"] is not None:
            text(obs["EventId"], f"o[{i}].EventId")
        flag(obs, "ActionTaken")
        if "v" in obs:
            rewards.append(number(obs["v"], f"o[{i}].v", -1.0, 1.0))
    return rewards
