"""vwexample.py builds a Rank's VW examples as VW's JSON parser does: same feature groups,
in the same order, same indices and values, same predictions.

Random feature sets (names with spaces, ``|``, ``:``, NULs, digits only, non-ASCII;
strings, booleans, integers up to 64 bits, tiny and huge floats, nested objects,
number arrays) go through ``ranking.plan`` as a Rank's do; the JSON it writes is parsed
by VW and compared with what ``Predictor`` builds from the cleaned features, in
workspaces of several policies that have learned from the same examples.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pylibvw
import pytest
import vowpalwabbit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditloop.errors import BadRequest
from banditloop.featurize import FLOAT32_MAX
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.ranking import RankPlan, plan
from banditloop.vwexample import Predictor, covers, f32

PROPS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
POLICIES = [
    DEFAULT_POLICY,
    "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::",
    "--cb_explore_adf --softmax --lambda 4 --hash all -b 6 --interactions ::: --noconstant",
    "--cb_explore_adf --bag 3 --hash_seed 77 -q ij -q FF --permutations",
]

# -- random features ----------------------------------------------------------------------

_CHARS = st.sampled_from([*"ab z1:|\t\0_é~9", "日", "\U0001f600"])
NAMES = st.one_of(
    st.text(_CHARS, max_size=6),
    st.sampled_from(["id", "constant", "i", "j", "FromUrl", "123", "4294967296123", ""]),
)
NUMBERS = st.one_of(
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.integers(-1000, 1000),
    st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False),
    st.sampled_from([0, 0.0, -0.0, 1e-45, 7e-46, 1.5e-45, 3.4028234663852886e38, 16777217]),
)
LEAVES = st.one_of(st.text(_CHARS, max_size=8), st.booleans(), NUMBERS)
VALUES = st.recursive(
    st.one_of(LEAVES, st.lists(NUMBERS, max_size=4)),
    lambda inner: st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(NAMES, VALUES, max_size=5)
FEATURE_LISTS = st.lists(OBJECTS, max_size=3)
ACTIONS = st.lists(
    st.tuples(st.text(_CHARS, min_size=1, max_size=5), st.lists(OBJECTS, min_size=1, max_size=3)),
    min_size=1,
    max_size=4,
    unique_by=lambda a: a[0],
)


# -- helpers -------------------------------------------------------------------------------


def counts(exs: list[Any]) -> list[Any]:
    """Per example, after a prediction: its feature count (with the crossed features the
    prediction counts). Not its sum of squares: with squares beyond a float's range VW's
    own examples carry NaN from one parse to the next."""
    return [ex.get_feature_number() for ex in exs]


def features(exs: list[Any]) -> list[Any]:
    """Per example: its feature groups in order, each with its (index, value) features."""
    out = []
    for ex in exs:
        groups: list[Any] = []
        for k in range(ex.num_namespaces()):
            g = ex.namespace(k)
            n = ex.num_features_in(g)
            groups.append((g, [(ex.feature(g, i), ex.feature_weight(g, i)) for i in range(n)]))
        out.append(groups)
    return out


def json_route(ws: vowpalwabbit.Workspace, p: RankPlan) -> tuple[list[Any], list[float]]:
    exs = pylibvw.vw._parse(ws, p.example)
    try:
        seen = features(exs)
        pylibvw.vw.predict_multi(ws, exs)
        return [seen, counts(exs)], list(exs[0].get_action_scores())
    finally:
        pylibvw.vw._finish_example_multi_ex(ws, exs)


def direct_route(pred: Predictor, p: RankPlan) -> tuple[list[Any], list[float]]:
    """What Predictor.pmf does, looking at the examples (reused from case to case)."""
    with pred.built(p.context, p.actions) as exs:
        try:
            seen = features(exs)
            pylibvw.vw.predict_multi(pred.ws, exs)
            return [seen, counts(exs)], list(exs[0].get_action_scores())
        finally:
            pylibvw.vw._finish_example_multi_ex(pred.ws, exs)


def planned(context: list[dict[str, Any]], actions: list[tuple[str, Any]]) -> RankPlan | None:
    try:
        return plan(context, actions, None)
    except BadRequest:  # what a Rank would refuse (lone surrogates, nothing left, ...)
        return None


@pytest.fixture(scope="module")
def boxes() -> Iterator[list[SimpleNamespace]]:
    """One workspace per policy that has learned a little, so that weights are not zero;
    in boxes (Hypothesis mistakes an argument with ``setup_example`` for a runner)."""
    out = []
    for args in POLICIES:
        ws = vowpalwabbit.Workspace(f"{args} --json --quiet")
        out.append(SimpleNamespace(ws=ws, pred=Predictor(ws), args=args))
    yield out
    for b in out:
        b.ws.finish()


def tamed(value: Any) -> Any:
    """A value with its numbers clipped to [-10, 10]: the same features (names and
    indices), and learning from them leaves the weights finite."""
    if isinstance(value, dict):
        return {k: tamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tamed(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return max(-10.0, min(10.0, float(value)))


def learn(ws: vowpalwabbit.Workspace, p: RankPlan) -> None:
    """Learn the plan's example (numbers tamed) with a cost on its first action, so
    that the weights of its features are not all zero."""
    obj = tamed(orjson.loads(p.example))
    obj["_multi"][0]["_label"] = "0:-1:0.5"
    exs = ws.parse(orjson.dumps(obj).decode())
    ws.learn(exs)
    ws.finish_example(exs)


# -- properties ----------------------------------------------------------------------------


@PROPS
@given(context=FEATURE_LISTS, actions=ACTIONS)
def test_examples_and_predictions_are_the_json_routes(
    boxes: list[SimpleNamespace], context: list[dict[str, Any]], actions: list[Any]
) -> None:
    p = planned(context, actions)
    if p is None:
        return
    for b in boxes:
        learn(b.ws, p)
        want = json_route(b.ws, p)
        got = direct_route(b.pred, p)
        assert repr(got[0]) == repr(want[0]), b.args  # repr: NaN equals NaN
        assert struct.pack(f"{len(got[1])}f", *got[1]) == struct.pack(
            f"{len(want[1])}f", *want[1]
        ), b.args


def test_the_policy_answers_the_same_through_either_route() -> None:
    body = {"user": {"name": "ana b", "age": 31}, "tags": [0.5, 0, 2]}
    actions = [("a", [{"color": "red", "w": 2.5}]), ("b:|", [{"color": "blue", "on": True}])]
    p = plan([body], actions, None)
    policy = Policy(DEFAULT_POLICY)
    for _ in range(20):
        policy.learn([p.example.replace('"_multi":[{', '"_multi":[{"_label":"0:-1:0.5",', 1)])
    assert policy.rank_pmf(p.example, p.context, p.actions) == policy.pmf(p.example)
    assert policy.pmf(p.example) != [0.5, 0.5]  # it learned something to compare


def test_an_action_list_is_hashed_once_while_it_lives() -> None:
    ws = vowpalwabbit.Workspace("--cb_explore_adf --json --quiet")
    try:
        pred = Predictor(ws)
        feats = [{"color": "red"}]
        first = pred._action_list(feats)
        assert pred._action_list(feats) is first
        assert pred._action_list([{"color": "red"}]) is not first  # another list, hashed anew
    finally:
        ws.finish()


def test_policies_it_does_not_cover_keep_the_json_route() -> None:
    assert covers(["--cb_explore_adf", "-q", "::"])
    for tokens in (["--ccb_explore_adf"], ["--chain_hash"], ["--ignore", "a"], ["--keep=a"]):
        assert not covers(tokens)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (16777217, 16777216.0),
        (16777219, 16777220.0),
        ((1 << 64) - 1, 2.0**64),
        (2**60 + 2**36 + 1, 2.0**60 + 2.0**37),  # rounding twice would give 2**60
        (0.1, 0.10000000149011612),
    ],
)
def test_numbers_become_the_floats_vw_keeps(value: float, want: float) -> None:
    """f32 gives VW a double that its cast to float turns into what the parser keeps."""
    v = f32(value)
    assert v is not None
    assert struct.unpack("<f", struct.pack("<f", v))[0] == want


@pytest.mark.parametrize("value", [18446743523953737728.0, 1e-40, 1.401298464324817e-45])
def test_numbers_near_a_tie_or_tiny_are_left_to_vw(value: float) -> None:
    assert f32(value) is None
