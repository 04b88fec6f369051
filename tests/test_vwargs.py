"""The allow-list of VW options: what it parses, what it refuses, and that every policy
the project itself uses, documents or benchmarks passes it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from banditloop import vwargs
from banditloop.errors import InvalidPolicy
from banditloop.evaluation.jobs import SEARCH_SPACE
from banditloop.policy import AZURE_DEFAULT_POLICY, DEFAULT_POLICY, check_arguments, kept_options

ROOT = Path(__file__).resolve().parent.parent
#: The policy the Azure SDKs' own tests set (azure-ai-personalizer's test helper).
SDK_TEST_POLICY = (
    "--cb_explore_adf --quadratic GT --quadratic MR --ignore A --cb_type ips --epsilon 0.2"
)


def _bench_policies() -> list[str]:
    """The candidates of bench/learning.py, as the learning bake-off runs them."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("_learning", ROOT / "bench/learning.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["_learning"] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return [args for _, args in module.CANDIDATES]


def _documented_policies() -> list[str]:
    """Policies written in the docs, the README and the example configuration."""
    found = set()
    configs = [p for p in sorted(ROOT.glob("configs/**/*")) if p.is_file()]
    files = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", *configs]
    for path in files:
        for match in re.finditer(r"[`\"](--c?cb_explore_adf[^`\"]*)[`\"]", path.read_text()):
            text = " ".join(match.group(1).split())  # a policy may wrap across lines
            if not any(c in text for c in ("{", "<", "--json", "--dsjson")):
                found.add(text)
    return sorted(found)


PROJECT_POLICIES = sorted(
    {
        DEFAULT_POLICY,
        AZURE_DEFAULT_POLICY,
        SDK_TEST_POLICY,
        *SEARCH_SPACE,
        *_bench_policies(),
        *_documented_policies(),
        "--ccb_explore_adf --epsilon 0.2 -q :: --cb_type mtr",
        "--cb_explore_adf -q :: --squarecb --epsilon 0 --gamma_scale 10 --gamma_exponent 0.5",
        "--cb_explore_adf -q :: --synthcover --synthcoverpsi 0.1 --synthcoversize 50 --epsilon 0",
        "--cb_explore_adf --cubic ::: --interactions ab --ignore_linear c --keep ab -b 20",
        "--cb_explore_adf --regcb --mellowness 0.1 --first_only --noconstant --l1 1e-6 --l2 0",
        "--cb_explore_adf --cover 4 --psi 0.5 --nounif --lambda 2 --softmax --power_t 0.5",
        "--cb_explore_adf --large_action_space --max_actions 10 --first 3 -l 0.5",
    }
)


@pytest.mark.parametrize("args", PROJECT_POLICIES)
def test_every_policy_the_project_uses_passes(args: str) -> None:
    assert check_arguments(args)


def test_the_lists_are_not_empty() -> None:
    assert len(_bench_policies()) > 20
    assert DEFAULT_POLICY in _documented_policies()


def test_every_allowed_option_is_documented() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    for name in vwargs.OPTIONS:
        assert f"`{name}`" in text, name


@pytest.mark.parametrize(
    ("args", "tokens"),
    [
        ("--cb_explore_adf -q ::", ["--cb_explore_adf", "--quadratic", "::"]),
        ("--cb_explore_adf -qab", ["--cb_explore_adf", "--quadratic", "ab"]),
        ("--cb_explore_adf --epsilon=0.1", ["--cb_explore_adf", "--epsilon", "0.1"]),
        ("--cb_explore_adf -l0.5", ["--cb_explore_adf", "--learning_rate", "0.5"]),
        (
            "--cb_explore_adf --ignore A B",
            ["--cb_explore_adf", "--ignore", "A", "--ignore", "B"],
        ),
        (
            "--cb_explore_adf --cb_min_cost -1 --cb_max_cost 0",
            ["--cb_explore_adf", "--cb_min_cost", "-1", "--cb_max_cost", "0"],
        ),
    ],
)
def test_vw_gets_exactly_what_was_checked(args: str, tokens: list[str]) -> None:
    assert check_arguments(args) == tokens


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ("--cb_explore_adf --audit", "--audit is not allowed"),
        ("--cb_explore_adf -a", "-a is not allowed"),
        ("--cb_explore_adf --dump_json_weights_experimental", "not allowed"),
        ("--cb_explore_adf --epsilon_decay_audit x", "--epsilon_decay_audit is not allowed"),
        ("--cb_explore_adf --bag 0", "--bag: '0' is not an int in [1, 64]"),
        ("--cb_explore_adf --epsilon 1.5", "--epsilon"),
        ("--cb_explore_adf --epsilon nan", "--epsilon"),
        ("--cb_explore_adf --epsilon inf", "--epsilon"),
        ("--cb_explore_adf --epsilon", "needs a value"),
        ("--cb_explore_adf --epsilon 0.1 --epsilon 0.2", "given twice"),
        ("--cb_explore_adf -b 40", "-b: '40' is not an int in [1, 28]"),
        ("--cb_explore_adf -q abc", "-q"),
        ("--cb_explore_adf -q -a", "-q"),
        ("--cb_explore_adf --cb_type x", "one of ips"),
        ("--cb_explore_adf --noconstant=1", "takes no value"),
        ("--cb_explore_adf stray", "not an option"),
        ("--cb_explore_adf '-q ::'", "quotes"),
        ("--cb_explore_adf -q \\x41\\x42", "backslashes"),
        ("--epsilon 0.2", "must contain --cb_explore_adf"),
        ("--cb_explore_adf " + "-q ab " * 200, "at most 1024"),
    ],
)
def test_refused_with_the_option_named(args: str, words: str) -> None:
    with pytest.raises(InvalidPolicy) as info:
        check_arguments(args)
    assert words in info.value.message
    assert info.value.code == "InvalidPolicyConfiguration"


def test_a_model_of_the_policy_keeps_its_implied_options() -> None:
    kept = dict(kept_options("--cb_explore_adf --synthcover -q :: --epsilon 0.1"))
    assert kept["--cb_adf"] is None and kept["--csoaa_ldf"] == "multiline"
    assert kept["--bit_precision"] == "18"
    # what VW keeps is allow-listed itself, so a model of an allowed policy passes
    assert vwargs.parse(vwargs.show(kept.items()))
