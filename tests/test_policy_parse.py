"""Policy reads examples with VW's own parser and skips pyvw's per-line wrappers; over
random feature sets, single-slot and multi-slot, its predictions and what it learns are
those of pyvw's ``parse``/``predict``/``learn`` route, to the bit."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from banditloop.errors import BadRequest
from banditloop.join import labelled
from banditloop.policy import DEFAULT_POLICY, Policy
from banditloop.ranking import SlotInput, plan, plan_multislot

names = st.sampled_from(["a", "b", "user", "ß", "x y", "_x", "n1"])
values = st.one_of(
    st.text(min_size=1, max_size=6),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.booleans(),
)
namespaces = st.dictionaries(
    names, st.one_of(values, st.dictionaries(names, values, min_size=1, max_size=3)), min_size=1
)
requests = st.tuples(
    st.lists(namespaces, min_size=1, max_size=2),
    st.lists(st.lists(namespaces, min_size=1, max_size=2), min_size=1, max_size=5),
    st.lists(st.tuples(st.integers(0, 4), st.floats(-1, 1), st.floats(0.05, 1)), max_size=6),
)


def pyvw_pmf(policy: Policy, text: str, learn: bool = False) -> list[float]:
    """What Policy.pmf (and, with ``learn``, pmf_then_learn) did through pyvw."""
    ws = policy._ws
    ex = ws.parse(text)
    try:
        pmf = [float(p) for p in ws.predict(ex)]
        if learn:
            ws.learn(ex)
    finally:
        ws.finish_example(ex)
    return policy.floor(pmf)


def example_of(context: Any, action_features: Any) -> tuple[str, int]:
    """The request's example and its action count, for a request Rank takes."""
    actions = [(f"a{i}", f) for i, f in enumerate(action_features)]
    try:
        return plan(context, actions, None).example, len(actions)
    except BadRequest:  # features that clean to nothing: Rank refuses them
        assume(False)
        raise


@settings(max_examples=40, deadline=None)
@given(requests)
def test_single_slot_predictions_and_learning_equal_pyvw(req: Any) -> None:
    context, action_features, labels = req
    example, k = example_of(context, action_features)
    ours, theirs = Policy(DEFAULT_POLICY), Policy(DEFAULT_POLICY)
    for chosen, reward, p in [*labels, (0, 0.0, 1.0)]:
        line = labelled(example, chosen % k, p, -reward)
        assert ours.pmf(example) == pyvw_pmf(theirs, example)
        assert ours.learn_each([line]) == [None]
        theirs._ws.learn(line)  # parses, learns and finishes
    assert ours.pmf(example) == pyvw_pmf(theirs, example)
    assert ours.pmf_then_learn(line) == pyvw_pmf(theirs, line, learn=True)
    assert ours.save() == theirs.save()


@settings(max_examples=15, deadline=None)
@given(requests)
def test_multi_slot_learning_equals_pyvw(req: Any) -> None:
    context, action_features, labels = req
    _, k = example_of(context, action_features)
    actions = [(f"a{i}", f) for i, f in enumerate(action_features)]
    p = plan_multislot(context, actions, [SlotInput("s0", None, None, "a0")])
    args = DEFAULT_POLICY.replace("--cb_explore_adf", "--ccb_explore_adf")
    ours, theirs = Policy(args), Policy(args)
    for chosen, reward, prob in labels:
        obj = orjson.loads(p.with_slots([s.vw_object() for s in p.slots]))
        obj["_slots"][0].update(_label_cost=-reward, _a=[chosen % k], _p=[prob])
        line = orjson.dumps(obj).decode()
        assert ours.learn_each([line]) == [None]
        theirs._ws.learn(line)
    assert ours.save() == theirs.save()


def test_an_example_vw_cannot_read_is_reported_not_raised() -> None:
    policy = Policy(DEFAULT_POLICY)
    (error,) = policy.learn_each(["{not json"])
    assert error is not None and error.startswith("Vowpal Wabbit cannot read the example")
    (error,) = policy.learn_each([""])
    assert error is not None and "empty" in error
