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
import secrets
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
MAX_CATALOGUES = 100  # distinct catalogues one import recognizes by their bytes
HEAD = 64  # bytes of a catalogue looked for in a line


def timestamp(ts: float) -> str:
    """Azure's form: ``2021-02-04T16:31:29.9430000Z`` (seven decimals)."""
    t = EPOCH + dt.timedelta(microseconds=int(ts * 1_000_000))  # truncated, never later
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time (7 decimals and ``Z`` accepted)."""
    t = dt.datetime.fromisoformat(text.strip())  # since 3.11: Z, decimals past 6 cut
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
    return _parse(obj, loop, limits or FeatureLimits(logcheck.CODE), seen)[0]


def _parse(
    obj: Any,
    loop: str,
    limits: FeatureLimits,
    seen: dict[bytes, int] | None,
    known: _Catalogue | None = None,
    mode: str = "Online",
) -> tuple[Imported, bytes]:
    """parse_object, and the JSON of the line's catalogue (logcheck.Checked); ``known``:
    the line's ``c._multi`` is that catalogue, checked before (LineReader)."""
    values, whole, example = logcheck.line(
        obj, limits, MAX_IMPORT_ACTIONS, seen, known.whole if known else None
    )
    try:
        ts = parse_timestamp(obj["Timestamp"])
    except (ValueError, OverflowError):
        raise BadRequest("Timestamp must be an ISO-8601 time.", logcheck.CODE) from None
    if not 0 <= ts <= logcheck.MAX_TIMESTAMP:
        raise BadRequest("Timestamp must be between 1970 and 9999.", logcheck.CODE)
    multi = obj["c"]["_multi"]
    order = [a - 1 for a in obj["a"]]  # 0-based, chosen first
    slot = SlotChoice(None, order, list(map(float, obj["p"])), 0, 0, 0)
    ids = known.ids if known else [_action_id(m, i) for i, m in enumerate(multi)]
    decision = Decision(
        loop=loop,
        event_id=obj["EventId"],
        ts=ts,
        close_at=ts,
        deferred=bool(obj.get("_skipLearn")),
        request_hash="imported",
        example=example,
        action_ids=ids,
        slots=[slot],
        response=b"{}",
        model_version=str((obj.get("VWState") or {}).get("m") or ""),
        mode=mode,
        holdout=bool(obj.get("_holdout")),
        catalogue=known.text if known else None,
    )
    return Imported(decision, [(None, v) for v in values]), whole


def _action_id(action: dict[str, Any], index: int) -> str:
    """An action's id as Rank logs it (``i.id``), else its ``_tag``, else its position."""
    features = action.get("i")
    ident = features.get("id") if isinstance(features, dict) else None
    return str(ident if ident is not None else action.get("_tag", index))


@dataclass(frozen=True)
class _Catalogue:
    """A ``c._multi`` checked by this import."""

    multi: list[Any]
    whole: bytes  # as orjson writes it
    span: bytes  # the member ``"_multi":<whole>``, as it stands in a compact line
    text: str  # whole as text: stored once for the decisions made of it (Decision.catalogue)
    ids: list[str]  # its action ids, shared by the decisions made of it


class LineReader:
    """Reads the lines of one import. A log repeats its catalogue (``c._multi``, most
    of a line) on every line: when a line holds, byte for byte, the catalogue of the
    line before, that member is swapped for a placeholder string before decoding, and
    if the placeholder is what the decoded ``c._multi`` holds, the line is the one
    decoded with the catalogue checked already in that place (the bytes before it are
    the same, so they parse the same way). It is then not decoded, checked, re-encoded
    nor walked for action ids again. The placeholder is random: no line holds it."""

    def __init__(self, loop: str, mode: str = "Online") -> None:
        self.loop = loop
        self.mode = mode
        self.seen: dict[bytes, int] = {}  # logcheck.context's
        self._catalogues: dict[bytes, _Catalogue] = {}
        self._last: _Catalogue | None = None
        self._token = f"banditloop-catalogue-{secrets.token_hex(16)}"
        self._token_bytes = self._token.encode()
        self._placeholder = b'"_multi":' + orjson.dumps(self._token)

    def loads(self, text: bytes) -> tuple[Any, _Catalogue | None]:
        """The decoded line, and the catalogue it holds if it was met before."""
        known = self._last
        if known is not None and isinstance(text, bytes):
            span = known.span
            at = text.find(span[:HEAD])  # then compared: faster than finding it all
            if at >= 0 and not text.startswith(span, at):
                at = text.find(span)
            if at >= 0:
                head, tail = text[:at], text[at + len(span) :]
                token = self._token_bytes
                if token not in head and token not in tail:
                    try:
                        obj = orjson.loads(head + self._placeholder + tail)
                    except orjson.JSONDecodeError:
                        obj = None  # decoded again below, for the error
                    c = obj.get("c") if isinstance(obj, dict) else None
                    if isinstance(c, dict) and c.get("_multi") == self._token:
                        c["_multi"] = known.multi  # shared: never changed
                        return obj, known
        return loads_line(text), None

    def parse(self, obj: Any, known: _Catalogue | None, limits: FeatureLimits) -> Imported:
        """parse_object of a line from ``loads``; remembers its catalogue."""
        item, whole = _parse(obj, self.loop, limits, self.seen, known, self.mode)
        if known is None:
            known = self._catalogues.get(whole)
            if known is None and whole in self.seen and len(self._catalogues) < MAX_CATALOGUES:
                d = item.decision
                span = b'"_multi":' + whole
                known = _Catalogue(obj["c"]["_multi"], whole, span, whole.decode(), d.action_ids)
                self._catalogues[whole] = known
        if known is not None:
            self._last = known
        return item
