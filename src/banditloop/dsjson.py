"""Decision Service JSON (DSJSON): log lines out, and in, as ``vw --dsjson`` reads them.

Out: one line per processed decision, in Azure Personalizer's key order, with
the label the trainer learned (``_label_cost`` = -training reward,
``_original_label_cost`` = -real reward), every observation in ``o``, and
``_skipLearn`` for events that were not learned.  Multi-slot decisions use the
CCB form (``c._slots``, ``_outcomes``, ``_ba``).

In: lines exported here or by Azure Personalizer become decisions and rewards
again, so that a loop can be evaluated or warm-started on them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

import orjson

from . import logcheck
from .errors import BadRequest
from .featurize import FeatureLimits
from .join import shown_slot
from .store.base import Decision, LoggedEvent, SlotChoice

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_IMPORT_ACTIONS = 10_000  # as Settings.max_actions can be raised to


def timestamp(ts: float) -> str:
    """Azure's form: ``2021-02-04T16:31:29.9430000Z`` (seven decimals)."""
    t = EPOCH + dt.timedelta(microseconds=int(ts * 1_000_000))  # truncated, never later
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time (7 decimals and ``Z`` accepted)."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:  # Python takes at most 6 decimals
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _order(slot: SlotChoice) -> list[int]:
    """Positions of a slot's actions, the chosen one first."""
    return [slot.chosen] + [i for i in range(len(slot.actions)) if i != slot.chosen]


def line(ev: LoggedEvent) -> dict[str, Any]:
    """The DSJSON object of one processed decision; a holdout event is labelled with
    what was shown (the baseline, probability 1) and marked ``"_holdout": true``."""
    d = ev.decision
    if d.holdout:
        d = replace(d, slots=[shown_slot(s) for s in d.slots])
        ev = replace(ev, decision=d)
    out = ev.outcome or {"r": None, "t": None}
    real, trained = out["r"], out["t"]
    context = orjson.loads(d.example)
    observations = [
        {"v": value, "EventId": d.event_id, "ActionTaken": False} for _, value, _ in ev.rewards
    ]
    observations += [{"EventId": d.event_id, "ActionTaken": True} for _ in ev.activations]
    if d.multislot:
        return _ccb_line(ev, context, real, trained)
    slot = d.slots[0]
    chosen = slot.actions[slot.chosen]
    reward = (trained or real or [0.0])[0]
    obj: dict[str, Any] = {
        "_label_cost": -reward,
        "_label_probability": slot.probability,
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "o": observations,
        "Timestamp": timestamp(d.ts),
        "Version": "1",
        "EventId": d.event_id,
        "a": [slot.actions[i] + 1 for i in _order(slot)],
        "c": context,
        "p": [slot.pmf[i] for i in _order(slot)],
        "VWState": {"m": d.model_version},
    }
    if real is not None:
        obj["_original_label_cost"] = -real[0]
    if trained is None:
        obj["_skipLearn"] = True
    if d.holdout:
        obj["_holdout"] = True
    return obj


def _ccb_line(
    ev: LoggedEvent,
    context: dict[str, Any],
    real: list[float] | None,
    trained: list[float] | None,
) -> dict[str, Any]:
    d = ev.decision
    outcomes = []
    for k, slot in enumerate(d.slots):
        rewards = [v for _, v, s in ev.rewards if s == slot.id]
        outcome: dict[str, Any] = {"_id": slot.id}
        if slot.actions:
            outcome["_label_cost"] = -(trained or real or [0.0] * len(d.slots))[k]
            outcome["_a"] = [slot.actions[i] for i in _order(slot)]
            outcome["_p"] = [slot.pmf[i] for i in _order(slot)]
        if real is not None:
            outcome["_original_label_cost"] = -real[k]
        outcome["_o"] = rewards
        outcomes.append(outcome)
    obj: dict[str, Any] = {
        "Timestamp": timestamp(d.ts),
        "Version": "1",
        "EventId": d.event_id,
        "c": context,
        "_outcomes": outcomes,
        "VWState": {"m": d.model_version},
        "_ba": [
            slot.actions[slot.baseline] if slot.baseline is not None else None for slot in d.slots
        ],
    }
    if trained is None:
        obj["_skipLearn"] = True
    if d.holdout:
        obj["_holdout"] = True
    return obj


def dumps(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


# -- import ---------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    decision: Decision
    rewards: list[tuple[str | None, float]]


def parse_line(text: str | bytes, loop: str, limits: FeatureLimits | None = None) -> Imported:
    """A single-slot DSJSON line as a decision plus its reward, every field checked as
    strictly as API input (logcheck.py) before anything is made of it."""
    return parse_object(loads_line(text), loop, limits)


def loads_line(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as ex:
        raise BadRequest(f"Not a JSON line: {ex}.", logcheck.CODE) from None


def is_multislot(obj: Any) -> bool:
    """A CCB line (``_outcomes``, ``c._slots``): not imported (docs/migrating-from-azure.md)."""
    if not isinstance(obj, dict):
        return False
    c = obj.get("c")
    return "_outcomes" in obj or (isinstance(c, dict) and "_slots" in c)


def parse_object(
    obj: Any,
    loop: str,
    limits: FeatureLimits | None = None,
    seen: dict[bytes, int] | None = None,
) -> Imported:
    """A decoded single-slot DSJSON line as a decision plus its reward (see parse_line);
    ``seen``: the actions checked already by this import (logcheck.context)."""
    limits = limits or FeatureLimits(logcheck.CODE)
    values = logcheck.line(obj, limits, MAX_IMPORT_ACTIONS, seen)
    try:
        ts = parse_timestamp(obj["Timestamp"])
    except (ValueError, OverflowError):
        raise BadRequest("Timestamp must be an ISO-8601 time.", logcheck.CODE) from None
    if not 0 <= ts <= logcheck.MAX_TIMESTAMP:
        raise BadRequest("Timestamp must be between 1970 and 9999.", logcheck.CODE)
    context, multi = obj["c"], obj["c"]["_multi"]
    order = [a - 1 for a in obj["a"]]  # 0-based, chosen first
    slot = SlotChoice(None, order, [float(p) for p in obj["p"]], 0, 0, 0)
    ids = [_action_id(m, i) for i, m in enumerate(multi)]
    decision = Decision(
        loop=loop,
        event_id=obj["EventId"],
        ts=ts,
        close_at=ts,
        deferred=bool(obj.get("_skipLearn")),
        request_hash="imported",
        example=orjson.dumps(context).decode(),
        action_ids=ids,
        slots=[slot],
        response=b"{}",
        model_version=str((obj.get("VWState") or {}).get("m") or ""),
        holdout=bool(obj.get("_holdout")),
    )
    return Imported(decision, [(None, v) for v in values])


def _action_id(action: dict[str, Any], index: int) -> str:
    """An action's id as Rank logs it (``i.id``), else its ``_tag``, else its position."""
    features = action.get("i")
    ident = features.get("id") if isinstance(features, dict) else None
    return str(ident if ident is not None else action.get("_tag", index))
