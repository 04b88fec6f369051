"""Featurization: no feature can change the structure of the VW example; Azure's hashing rules.

Every example is built with ``banditloop.ranking.plan`` and parsed by a real VW workspace
(``--cb_explore_adf --json``), then inspected through pylibvw's Example API.
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import vowpalwabbit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vowpalwabbit import pyvw

from banditloop.errors import BadRequest
from banditloop.featurize import FLOAT32_MAX, FeatureLimits
from banditloop.ranking import plan

CONSTANT_NS = 128  # VW's constant namespace, always added
NON_NUMBER_ARRAY = "Features should not contain array with non-number items."
NO_ACTION_FEATURE = "Every action should have at least one non-null action feature."

PROPS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def ws() -> Iterator[vowpalwabbit.Workspace]:
    w = vowpalwabbit.Workspace("--cb_explore_adf --json --quiet")
    yield w
    w.finish()


@pytest.fixture(scope="module")
def box(ws: vowpalwabbit.Workspace) -> SimpleNamespace:
    """The workspace in a box: Hypothesis mistakes a first argument with a
    ``setup_example`` attribute (as Workspace has) for a test-runner object."""
    return SimpleNamespace(ws=ws)


# -- helpers reading the parsed examples ---------------------------------------------------


def parse(ws: vowpalwabbit.Workspace, text: str) -> list[dict[str, Any]]:
    """Parse a JSON example; return per example its label costs and features per namespace."""
    exs = ws.parse(text)
    try:
        out = []
        for ex in exs:
            namespaces: dict[int, list[tuple[int, float]]] = {}
            for i in range(ex.num_namespaces()):
                ns = ex.get_ns(i)
                feats = [
                    (ex.feature(ns, k), ex.feature_weight(ns, k))
                    for k in range(ex.num_features_in(ns))
                ]
                namespaces.setdefault(ex.namespace(i), []).extend(feats)
            costs = [(c.action, c.cost, c.probability) for c in ex.get_label(pyvw.CBLabel).costs]
            out.append({"ns": namespaces, "costs": costs})
        return out
    finally:
        ws.finish_example(exs)


def is_shared(costs: list[tuple[int, float, float]]) -> bool:
    """VW marks the shared example of a multi-line ADF example with one cost of p = -1."""
    return len(costs) == 1 and costs[0][2] == -1.0 and costs[0][1] > 1e37


def first_byte(key: str) -> int:
    """The namespace index VW gives an object or array under ``key``."""
    raw = key.encode("utf-8")
    return raw[0] if raw else 0


def implied(features: Any) -> set[int]:
    """Namespaces a feature list may create: objects and numeric arrays under a key."""
    out: set[int] = set()

    def walk(obj: dict[str, Any]) -> None:
        for k, v in obj.items():
            if k.startswith("_") or v is None:
                continue
            if isinstance(v, dict):
                out.add(first_byte(k))
                walk(v)
            elif isinstance(v, list) and v:
                out.add(first_byte(k))

    for obj in features or ():
        if isinstance(obj, dict):
            walk(obj)
    return out


def check_structure(
    ws: vowpalwabbit.Workspace,
    context: Any,
    actions: list[tuple[str, Any]],
    excluded: list[str] | None = None,
) -> None:
    p = plan(context, actions, excluded)
    kept = [(a, f) for a, f in actions if a not in set(excluded or ())]
    parsed = parse(ws, p.example)
    assert len(parsed) == 1 + len(kept), "exactly one shared example and one per action"
    shared, acts = parsed[0], parsed[1:]
    assert is_shared(shared["costs"]), shared["costs"]
    allowed_shared = {ord("F"), CONSTANT_NS} | implied(context)
    assert set(shared["ns"]) <= allowed_shared
    for ex, (_, feats) in zip(acts, kept, strict=True):
        assert ex["costs"] == [], "an unlabelled action example must carry no label"
        assert ord("i") in ex["ns"]
        assert set(ex["ns"]) <= {ord("i"), ord("j"), CONSTANT_NS} | implied(feats)


# -- strategies -----------------------------------------------------------------------------

HOSTILE = [
    "|", ":", " ", "\t", "\n", "\r", "\x00", '"', "'", "\\", "", "_", "{", "}", "[", "]",
    "|a b:1", '"},{"_label_cost":-1', "\n|b x", "shared |s a", "_multi", "_label_cost",
    "_text", "FromUrl", "\\u0000", "ccb shared", "1:2:3", "|:|",
]  # fmt: skip
hostile = st.sampled_from(HOSTILE)
any_text = st.one_of(
    st.text(max_size=10),
    hostile,
    st.lists(st.one_of(hostile, st.text(max_size=3)), max_size=4).map("".join),
)
# Keys of objects and arrays name a namespace by their first byte.  A non-ASCII first
# character is covered separately, in a subprocess (see test_non_ascii_namespace_keys...).
ns_key = st.one_of(
    st.just(""),
    st.builds(lambda c, rest: c + rest, st.characters(max_codepoint=127), any_text),
)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX),
)
scalar = st.one_of(any_text, numbers, st.booleans(), st.none())
num_array = st.lists(numbers, max_size=4)


def objects(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    pairs = [st.tuples(any_text, scalar), st.tuples(ns_key, num_array)]
    if depth > 0:
        pairs.append(st.tuples(ns_key, objects(depth - 1)))
    return st.lists(st.one_of(*pairs), max_size=4).map(dict)


feature_object = objects(3)  # a feature object plus three nested levels: within the limit
feature_list = st.lists(st.one_of(feature_object, st.none()), max_size=3)
action_ids = st.lists(any_text.filter(bool), min_size=1, max_size=5, unique=True)


# -- structure --------------------------------------------------------------------------------


@PROPS
@given(context=feature_list, ids=action_ids, data=st.data())
def test_no_feature_changes_the_example_structure(
    box: SimpleNamespace, context: list[Any], ids: list[str], data: st.DataObject
) -> None:
    actions = []
    for a in ids:
        feats = data.draw(feature_list)
        # every action needs one non-null feature; put it anywhere among the hostile ones
        feats.insert(data.draw(st.integers(0, len(feats))), {"k": a})
        actions.append((a, feats))
    excluded = data.draw(st.lists(st.sampled_from(ids), max_size=len(ids) - 1, unique=True))
    check_structure(box.ws, context, actions, excluded)


@pytest.mark.parametrize(
    "context",
    [
        [{"a": '"}, "_label_cost": -1, "x": {"y": "'}],
        [{'a"}],"_multi":[{"j":[{"x': '1"}]}]}'}],
        [{"a|b": "c|d e:f", "\n": "\n|x y\n", "": ""}],
        [{"\x00": "\x00", "x\x00y": {"z\x00": "\x00|"}}],
        [{"_label_cost": -1, "_label_probability": 0.5, "_labelIndex": 0, "_label_Action": 1}],
        [{"_multi": [{"a": "b"}], "_text": "a b c", "_tag": "x", "_slots": [{}]}],
        [{"ok": "v", "nested": {"_label_cost": 1, "_multi": [1, 2], "a": "b"}}],
    ],
)
def test_hostile_context_examples(ws: vowpalwabbit.Workspace, context: list[Any]) -> None:
    check_structure(ws, context, [("a", [{"x": 1}]), ('b"}|:\n', [{"_y": 1, "y": '"]}'}])])


@pytest.mark.parametrize(
    "action_id", ['"}', '"},{"_label_cost":-1,"i":{"x":"', "a|b:c d\n", "\x00", "_multi", "\\"]
)
def test_hostile_action_ids(ws: vowpalwabbit.Workspace, action_id: str) -> None:
    check_structure(ws, [{"u": 1}], [(action_id, [{"x": "1"}]), ("other", [{"x": "2"}])])


def test_underscore_keys_cannot_label_or_add_examples(ws: vowpalwabbit.Workspace) -> None:
    """VW gives ``_label_*``, ``_multi``, ``_text`` meaning: in features they must be dropped."""
    ctx = [{"_label_cost": -1.0, "_label_probability": 0.5, "_labelIndex": 0, "u": "x"}]
    acts = [
        ("a", [{"_label_cost": -1, "_multi": [{"j": [{"z": 1}]}], "t": 1}]),
        ("b", [{"_text": "|x a b c", "t": 2}]),
    ]
    p = plan(ctx, acts, None)
    assert "_label" not in p.example and "_text" not in p.example
    parsed = parse(ws, p.example)
    assert len(parsed) == 3
    assert is_shared(parsed[0]["costs"])
    assert [ex["costs"] for ex in parsed[1:]] == [[], []]


@pytest.mark.parametrize("first", ["é", "中", "ÿ", "\U0001f600", "\x80"])
def test_non_ascii_namespace_keys_do_not_break_vw(first: str) -> None:
    """An object or numeric array under a key starting with a non-ASCII character.

    Runs in a child process: if VW's memory gets corrupted, only the child dies.  Accepting
    the input (with a well-formed example) or refusing it with a BadRequest are both fine;
    crashing is not.
    """
    script = f"""
import vowpalwabbit
from banditloop.errors import BadRequest
from banditloop.ranking import plan
first = {first!r}
cases = [
    ([{{first: {{"x": 1}}}}], [("a", [{{"t": 1}}]), ("b", [{{"t": 2}}])]),
    ([{{first + "k": [1.0, 2.0]}}], [("a", [{{"t": 1}}]), ("b", [{{"t": 2}}])]),
    ([{{"u": 1}}], [("a", [{{first: {{"x": 1}}}}]), ("b", [{{"n": {{first: [3]}}}}])]),
]
ws = vowpalwabbit.Workspace("--cb_explore_adf --json --quiet -q ::")
for context, actions in cases:
    try:
        p = plan(context, actions, None)
    except BadRequest:
        continue
    exs = ws.parse(p.example)
    assert len(exs) == 3, len(exs)
    ws.predict(exs)
    ws.finish_example(exs)
    labelled = '{{"_label_cost":-1,"_label_probability":0.5,"_label_Action":1,"_labelIndex":0,'
    for _ in range(20):
        exs = ws.parse(labelled + p.example[1:])
        ws.learn(exs)
        ws.finish_example(exs)
ws.finish()
del ws
print("survived")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "survived" in proc.stdout


# -- hashing: Azure's rules -------------------------------------------------------------------


def escape(value: str) -> str:
    return value.translate(str.maketrans({" ": "_", "\t": "_", "|": "_", ":": "_"}))


def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def test_string_feature_is_key_plus_escaped_value(ws: vowpalwabbit.Workspace) -> None:
    parsed = parse(ws, plan([{"a": "b c"}], [("x", [{"t": 1}])], None).example)
    expected = ws.hash_feature("ab_c", ws.hash_space("FromUrl"))
    assert parsed[0]["ns"][ord("F")] == [(expected, 1.0)]


no_nul = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8
)
flat_value = st.one_of(
    no_nul,
    st.sampled_from([s for s in HOSTILE if "\x00" not in s]),
    st.booleans(),
    st.integers(min_value=-(2**24), max_value=2**24),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@PROPS
@given(
    context=st.dictionaries(no_nul.filter(lambda k: not k.startswith("_")), flat_value),
    action_id=no_nul.filter(bool),
    action_features=st.dictionaries(no_nul.filter(lambda k: not k.startswith("_")), no_nul),
)
def test_flat_features_hash_as_azure_did(
    box: SimpleNamespace,
    context: dict[str, Any],
    action_id: str,
    action_features: dict[str, str],
) -> None:
    """String v under k -> feature ``k + escape(v)``; number -> k with value v; true -> k."""
    ws = box.ws
    features = [{"present": "1", **action_features}]
    parsed = parse(ws, plan([context], [(action_id, features)], None).example)

    space = ws.hash_space("FromUrl")
    want: Counter[tuple[int, float]] = Counter()
    for k, v in context.items():
        if isinstance(v, str):
            want[(ws.hash_feature(k + escape(v), space), 1.0)] += 1
        elif v is True:
            want[(ws.hash_feature(k, space), 1.0)] += 1
        elif v is False or v == 0:
            continue  # false adds nothing, VW drops zero values
        else:
            want[(ws.hash_feature(k, space), f32(float(v)))] += 1
    assert Counter(parsed[0]["ns"].get(ord("F"), [])) == want

    i_space = ws.hash_space("i")
    i_want = Counter(
        [
            (ws.hash_feature("constant", i_space), 1.0),
            (ws.hash_feature("id" + escape(action_id), i_space), 1.0),
        ]
    )
    assert Counter(parsed[1]["ns"][ord("i")]) == i_want
    j_space = ws.hash_space("j")
    j_want = Counter((ws.hash_feature(k + escape(v), j_space), 1.0) for k, v in features[0].items())
    assert Counter(parsed[1]["ns"][ord("j")]) == j_want


def test_nested_object_is_a_namespace_named_by_its_key(ws: vowpalwabbit.Workspace) -> None:
    parsed = parse(
        ws, plan([{"user": {"age": 3, "tier": "gold x"}}], [("a", [{"t": 1}])], None).example
    )
    space = ws.hash_space("user")
    assert Counter(parsed[0]["ns"][ord("u")]) == Counter(
        [(ws.hash_feature("age", space), 3.0), (ws.hash_feature("tiergold_x", space), 1.0)]
    )
    assert ord("F") not in parsed[0]["ns"]


# -- validation rules -------------------------------------------------------------------------


def _plan_with_context(context: Any) -> None:
    plan(context, [("a", [{"t": 1}])], None)


@pytest.mark.parametrize(
    "array",
    [["a"], [1, "2"], [True], [1, None], [[1]], [{"x": 1}], [1.0, False]],
)
@pytest.mark.parametrize("where", ["context", "nested", "action"])
def test_arrays_of_non_numbers_are_refused(array: list[Any], where: str) -> None:
    with pytest.raises(BadRequest) as info:
        if where == "context":
            _plan_with_context([{"arr": array}])
        elif where == "nested":
            _plan_with_context([{"n": {"arr": array}}])
        else:
            plan(None, [("a", [{"t": 1, "arr": array}])], None)
    assert info.value.message == NON_NUMBER_ARRAY
    assert info.value.status == 400


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("shape", ["value", "array", "nested", "action"])
def test_non_finite_numbers_are_refused(bad: float, shape: str) -> None:
    with pytest.raises(BadRequest):
        if shape == "value":
            _plan_with_context([{"x": bad}])
        elif shape == "array":
            _plan_with_context([{"x": [1.0, bad]}])
        elif shape == "nested":
            _plan_with_context([{"n": {"x": bad}}])
        else:
            plan(None, [("a", [{"t": 1, "x": bad}])], None)


def test_recurring_actions_are_cleaned_and_counted_each_time() -> None:
    """Action features are cached by their JSON (featurize.clean_recurring): a hit still
    counts against the limits, and a NaN (JSON null to orjson) never hits a null's entry."""
    features = [{"t": "x", "n": None}]
    first = plan(None, [("a", features)], None).example
    assert plan(None, [("a", [{"t": "x", "n": None}])], None).example == first
    with pytest.raises(BadRequest):
        plan(None, [("a", [{"t": "x", "n": math.nan}])], None)
    both = [("a", [{"t": "xy", "u": 1}]), ("b", [{"t": "y", "u": 2}])]
    plan(None, both, None, limits=FeatureLimits("InvalidRankRequest", 4))  # cached now
    with pytest.raises(BadRequest, match="at most 3 features"):
        plan(None, both, None, limits=FeatureLimits("InvalidRankRequest", 3))
    with pytest.raises(BadRequest, match="at most 1 characters"):
        plan(None, both, None, limits=FeatureLimits("InvalidRankRequest", 4, 1))


def nest(depth: int) -> dict[str, Any]:
    obj: dict[str, Any] = {"leaf": 1}
    for i in range(depth):
        obj = {f"n{i}": obj}
    return obj


def test_moderate_nesting_is_accepted(ws: vowpalwabbit.Workspace) -> None:
    check_structure(ws, [nest(2)], [("a", [nest(2)])])


@pytest.mark.parametrize("depth", [10, 50, 5000])
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    with pytest.raises(BadRequest) as info:
        _plan_with_context([nest(depth)])
    assert info.value.status == 400


def test_underscore_keys_and_nulls_are_dropped(ws: vowpalwabbit.Workspace) -> None:
    with_junk = plan(
        [{"a": "b", "_x": "y", "_": 1, "n": None, "o": {"_p": 1, "q": 2}}],
        [("a", [{"t": "x", "_hidden": {"z": 1}, "nul": None}])],
        None,
    )
    clean = plan([{"a": "b", "o": {"q": 2}}], [("a", [{"t": "x"}])], None)
    assert parse(ws, with_junk.example) == parse(ws, clean.example)


@pytest.mark.parametrize(
    "features", [None, [], [None], [{}], [{"a": None}], [{"_a": 1}], [{"o": {"_b": 1}}]]
)
def test_action_with_only_null_features_is_refused(features: Any) -> None:
    with pytest.raises(BadRequest) as info:
        plan(None, [("a", [{"t": 1}]), ("b", features)], None)
    assert info.value.message == NO_ACTION_FEATURE


TOO_BIG = "Integer feature values must fit in 64 bits."
NOT_UNICODE = "Text in the request must be valid Unicode."
#: Values Python's json module (used for request bodies) accepts and JSON cannot carry
#: to VW, with the reason each is refused.
BAD_FOR_JSON: list[tuple[Any, str]] = [
    ([{"x": 10**30}], TOO_BIG),
    ([{"x": -(10**30)}], TOO_BIG),
    ([{"x": 2**64}], TOO_BIG),
    ([{"x": [1, 10**30]}], TOO_BIG),
    ([{"x": "\ud800"}], NOT_UNICODE),
    ([{"x": "a\udfffb"}], NOT_UNICODE),
    ([{"\ud800": "v"}], NOT_UNICODE),
    ([{"n": {"k\udc00": 1}}], NOT_UNICODE),
]


@pytest.mark.parametrize(("context", "reason"), BAD_FOR_JSON, ids=lambda c: ascii(c)[:40])
def test_values_json_cannot_carry_to_vw_are_a_bad_request(
    ws: vowpalwabbit.Workspace, context: list[Any], reason: str
) -> None:
    """Refused as a BadRequest (a 400 saying why), never a 500 nor a malformed example."""
    with pytest.raises(BadRequest, match=re.escape(reason)):
        check_structure(ws, context, [("a", [{"t": 1}])])


def test_lone_surrogate_in_action_id_is_a_bad_request(ws: vowpalwabbit.Workspace) -> None:
    with pytest.raises(BadRequest, match=re.escape(NOT_UNICODE)):
        check_structure(ws, None, [("\udc00", [{"t": 1}])])
