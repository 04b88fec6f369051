"""Feature importance by dropping one feature at a time and replaying the logs.

A feature is a (namespace, name) pair as the client sent it: a flat context key
is in namespace ``FromUrl``, a flat action key in ``j``, a key inside a nested
object in that object's namespace.  For each feature, the loop's policy is
replayed progressively on the logs without it; its importance is how much the
estimated reward (SNIPS) falls compared with the policy that sees everything.
Scores are normalised to sum to 1.  Features with very many distinct values
(user IDs, item IDs, timestamps) are flagged ``highCardinality`` so that a person
can tell a real signal from memorisation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from ..store.base import LoggedEvent
from .replay import Replayable, VwPolicy, replayable, unsupported

Feature = tuple[str, str]
MAX_FEATURES = 64
HIGH_CARDINALITY = 0.5  # distinct values per event above which a feature looks like an ID


def _walk(objs: Any, namespace: str, out: dict[Feature, list[Any]]) -> None:
    for obj in objs if isinstance(objs, list) else [objs]:
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if isinstance(value, dict):
                _walk(value, key, out)
            else:
                out.setdefault((namespace, key), []).append(value)


def features_of(example: dict[str, Any]) -> dict[Feature, list[Any]]:
    """Every feature of an example with its values (one per action for action features)."""
    found: dict[Feature, list[Any]] = {}
    _walk(example.get("FromUrl", []), "FromUrl", found)
    for action in example.get("_multi", []):
        _walk(action.get("j", []), "j", found)
    return found


def _drop(objs: Any, namespace: str, feature: Feature) -> Any:
    if isinstance(objs, list):
        return [_drop(o, namespace, feature) for o in objs]
    if not isinstance(objs, dict):
        return objs
    return {
        k: _drop(v, k, feature) if isinstance(v, dict) else v
        for k, v in objs.items()
        if not (not isinstance(v, dict) and (namespace, k) == feature)
    }


def without(example: dict[str, Any], feature: Feature) -> str:
    out = {
        "FromUrl": _drop(example.get("FromUrl", []), "FromUrl", feature),
        "_multi": [
            {**a, "j": _drop(a.get("j", []), "j", feature)} for a in example.get("_multi", [])
        ],
    }
    return orjson.dumps(out).decode()


def _value(
    events: list[Replayable], policy_args: str, feature: Feature | None
) -> tuple[float, dict[str, Any]]:
    """The policy's SNIPS value without ``feature``, and the diagnostics it rests on."""
    from .estimators import OffPolicy

    pol = VwPolicy(policy_args)
    est = OffPolicy()
    for ev in events:
        if feature is not None:
            ev = Replayable(
                ev.ts,
                without(orjson.loads(ev.example), feature),
                ev.n_actions,
                ev.logged,
                ev.p_log,
                ev.logged_pmf,
                ev.reward,
            )
        pmf = pol.pmf_then_learn(ev)
        est.add(ev.p_log, ev.reward, pmf[ev.logged], unsupported=unsupported(ev, pmf))
    value = est.estimate_snips().value
    return (value if value == value else 0.0), est.diagnostics()  # NaN: no events


def feature_importance(
    logged: Iterable[LoggedEvent], policy_args: str, max_events: int = 50_000
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Scores per feature, most important first, and the diagnostics of the policy's
    estimate on the logs (when it is not estimable, no feature is scored)."""
    events: list[Replayable] = []
    values: dict[Feature, set[str]] = defaultdict(set)
    for ev in logged:
        r = replayable(ev)
        if r is None or r.holdout or r.p_log <= 0:
            continue
        events.append(r)
        for feat, vs in features_of(orjson.loads(r.example)).items():
            if len(values[feat]) <= max_events:
                values[feat].update(orjson.dumps(v).decode() for v in vs)
        if len(events) >= max_events:
            break
    if not events:
        return [], None
    feats = sorted(values, key=lambda f: -len(values[f]))[:MAX_FEATURES]
    full, diagnostics = _value(events, policy_args, None)
    if not diagnostics["estimable"]:
        return [], diagnostics
    drops = {f: max(0.0, full - _value(events, policy_args, f)[0]) for f in feats}
    total = sum(drops.values()) or 1.0
    out = [
        {
            "namespace": ns,
            "featureName": name,
            "score": drops[(ns, name)] / total,
            "distinctValues": len(values[(ns, name)]),
            "highCardinality": len(values[(ns, name)]) > HIGH_CARDINALITY * len(events),
        }
        for ns, name in feats
    ]
    return sorted(out, key=lambda d: -d["score"]), diagnostics
