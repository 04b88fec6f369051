"""Inference explanations: which features and interactions made each action's score.

VW keeps no names, so the names come from the Rank example itself: every
feature's VW hash is computed from its JSON path and matched to the parsed
example.  A feature contributes ``-weight x value``; a quadratic interaction of
two features contributes ``-weight(interaction hash) x value x value``, with the
hash VW uses (``FNV_prime x first ^ second`` on the strided indices).  Signs are
flipped because VW scores costs: a positive score pushes the action up.  Terms of
context features alone (and the constant) add the same to every action, so they
cannot explain a choice and are left out.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import vowpalwabbit

FNV_PRIME = 16777619
CONSTANT_NS = 128
TOP = 10


def _names(obj: Any, ns: str, path: str) -> Iterator[tuple[str, str, str]]:
    """(VW namespace, VW feature name, display name) of the JSON leaves under ``ns``."""
    if isinstance(obj, list):
        for item in obj:
            yield from _names(item, ns, path)
        return
    if not isinstance(obj, dict):
        return
    for key, value in obj.items():
        if key.startswith("_"):
            continue
        name = f"{path}.{key}" if path else key
        if isinstance(value, (dict, list)):
            yield from _names(value, key, name)
        elif isinstance(value, bool):
            if value:
                yield ns, key, name
        elif isinstance(value, str):
            yield ns, key + value, name
        elif isinstance(value, (int, float)):
            yield ns, key, name


def _features(
    ws: vowpalwabbit.Workspace, ex: Any, names: dict[tuple[int, int], str]
) -> list[tuple[int, int, float, str]]:
    """(namespace, strided index, value, name) of a parsed example's features."""
    stride = ws.get_stride()
    out = []
    for k in range(ex.num_namespaces()):
        ns = ex.get_ns(k)
        for i in range(ex.num_features_in(ns)):
            h = ex.feature(ns, i)
            if ns.ord_ns == CONSTANT_NS:
                name = "constant"
            else:
                name = names.get((ns.ord_ns, h), f"{ns.ns}#{h}")
            out.append((ns.ord_ns, h * stride, ex.feature_weight(ns, i), name))
    return out


def _interactions(ws: vowpalwabbit.Workspace) -> list[tuple[int, int]] | None:
    """Quadratic namespace pairs of the workspace; None for ``-q ::`` (every pair)."""
    args = ws.get_arguments()
    args = args.split() if isinstance(args, str) else list(args)
    pairs: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(args):
        if a in ("-q", "--quadratic") or a.startswith("--interactions"):
            if ":" in b:
                return None
            if len(b) == 2:
                pairs.append((ord(b[0]), ord(b[1])))
    return pairs


def explain(ws: vowpalwabbit.Workspace, example: str, top: int = TOP) -> list[list[dict[str, Any]]]:
    """Per action of ``example`` (a ``--cb_explore_adf`` JSON example), its ``top``
    features and interactions by absolute contribution, largest first."""
    obj = orjson.loads(example)
    mask = ws.num_weights() - 1
    names: dict[tuple[int, int], str] = {}
    leaves = list(_names({k: v for k, v in obj.items() if k != "_multi"}, " ", ""))
    for action in obj.get("_multi") or ():
        leaves += _names(action, " ", "")
    for ns, fname, display in leaves:
        if display.startswith("FromUrl."):
            display = display[len("FromUrl.") :]
        elif display.startswith(("i.", "j.")):
            display = display[2:]
        names[(ord(ns[0]), ws.hash_feature(fname, ws.hash_space(ns)) & mask)] = display
    stride = ws.get_stride()
    pairs = _interactions(ws)
    parsed = ws.parse(example)
    try:
        shared: list[tuple[int, int, float, str]] = []
        actions = []
        for ex in parsed:
            feats = _features(ws, ex, names)
            if "_multi" in obj and ex is parsed[0] and len(parsed) == len(obj["_multi"]) + 1:
                shared = feats
            else:
                actions.append(feats)
    finally:
        ws.finish_example(parsed)
    out = []
    for feats in actions:
        own = {f[1] for f in feats}  # what differs between actions: their own features
        allf = shared + feats
        scores: dict[str, float] = {}
        for _, idx, value, name in feats:
            if name != "constant":
                w = ws.get_weight(idx // stride)
                scores[name] = scores.get(name, 0.0) - w * value
        spaces = sorted({ns for ns, *_ in allf if ns != CONSTANT_NS})
        for a in spaces:
            for b in spaces:
                if b < a or (pairs is not None and (a, b) not in pairs):
                    continue
                fa = [f for f in allf if f[0] == a]
                fb = [f for f in allf if f[0] == b]
                for i, (_, ia, va, na) in enumerate(fa):
                    for _, ib, vb, nb in fb[i if a == b else 0 :]:
                        if ia not in own and ib not in own:
                            continue  # context only: the same for every action
                        idx = ((FNV_PRIME * ia) ^ ib) & (mask * stride + stride - 1)
                        w = ws.get_weight(idx // stride)
                        if w:
                            key = f"{na}^{nb}"
                            scores[key] = scores.get(key, 0.0) - w * va * vb
        ranked = sorted(scores.items(), key=lambda kv: -abs(kv[1]))[:top]
        out.append([{"name": n, "score": round(s, 6)} for n, s in ranked if s])
    return out
