"""The Vowpal Wabbit options a policy may use: an allow-list of learning options.

Policy arguments reach VW's command line, and so do the options stored in a
model file's header (VW obeys them when it loads the model).  Anything VW
offers beyond learning (files, sockets, daemons, audit output, JSON dumps) is
refused by not being here.  Each option has a kind and a range; the check is
pure parsing, with no side effect, and VW is given the tokens as parsed here
(one canonical long name and at most one value per token pair), so that what VW
reads is exactly what was checked.  docs/security.md lists the options.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidPolicy

MAX_ARGUMENTS_LENGTH = 1024
DEFAULT_BITS = 18
MAX_BITS = 28
#: Characters of a namespace spec (-q ab, --ignore A): printable ASCII without quotes,
#: backslash or whitespace. featurize.py gives every namespace a printable first byte.
_SPEC = re.compile(r"^[!#-&(-\[\]-~]+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^\d{1,20}$")


Kind = Literal["flag", "float", "int", "spec", "choice"]


@dataclass(frozen=True)
class Option:
    """An allowed option: its kind, range (numbers), length (specs) or choices."""

    kind: Kind
    doc: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    many: bool = False  # may be given several times (specs)

    def describe(self) -> str:
        if self.kind == "flag":
            return "flag"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "spec":
            size = f"{self.low:g}" if self.low == self.high else f"{self.low:g} to {self.high:g}"
            return f"{size} namespace characters" + (", repeatable" if self.many else "")
        return f"{self.kind} in [{self.low:g}, {self.high:g}]"


def _flag(doc: str) -> Option:
    return Option("flag", doc)


def _num(kind: Kind, low: float, high: float, doc: str) -> Option:
    return Option(kind, doc, low, high)


def _spec(low: int, high: int, doc: str) -> Option:
    return Option("spec", doc, low, high, many=True)


#: Every option a policy (or a model header) may hold, by its long name.
OPTIONS: dict[str, Option] = {
    # the learning problem (VW adds the implied ones to every model header)
    "--cb_explore_adf": _flag("contextual bandit with action features (or --ccb_explore_adf)"),
    "--ccb_explore_adf": _flag("conditional contextual bandit: multi-slot ranking"),
    "--cb_adf": _flag("implied by --cb_explore_adf"),
    "--cb_sample": _flag("implied by --ccb_explore_adf"),
    "--csoaa_ldf": Option("choice", "implied by --cb_adf", choices=("multiline", "m")),
    "--csoaa_rank": _flag("implied by --cb_adf"),
    "--cb_type": Option("choice", "cost estimator", choices=("ips", "dm", "dr", "mtr", "sm")),
    "--clip_p": _num("float", 0, 1, "clip importance weights at this probability"),
    # exploration
    "--epsilon": _num("float", 0, 1, "epsilon-greedy floor (set from explorationPercentage)"),
    "--first": _num("int", 1, 1e9, "tau-first exploration"),
    "--bag": _num("int", 1, 64, "bagging exploration with N policies"),
    "--greedify": _flag("bagging: always update the first policy"),
    "--cover": _num("int", 1, 64, "online cover with N policies"),
    "--psi": _num("float", 0, 1e6, "cover: disagreement parameter"),
    "--nounif": _flag("cover: no uniform exploration on zero-probability actions"),
    "--first_only": _flag("explore only the first action of a tie"),
    "--softmax": _flag("softmax exploration"),
    "--lambda": _num("float", -1e6, 1e6, "softmax: inverse temperature"),
    "--regcb": _flag("RegCB-elim exploration"),
    "--regcbopt": _flag("RegCB optimistic exploration"),
    "--mellowness": _num("float", 0, 1e6, "RegCB / SquareCB mellowness"),
    "--squarecb": _flag("SquareCB exploration"),
    "--gamma_scale": _num("float", 0, 1e9, "SquareCB greediness scale"),
    "--gamma_exponent": _num("float", 0, 10, "SquareCB greediness exponent"),
    "--cb_min_cost": _num("float", -1e6, 1e6, "lower bound on cost"),
    "--cb_max_cost": _num("float", -1e6, 1e6, "upper bound on cost"),
    "--synthcover": _flag("synthetic cover exploration (banditloop's default)"),
    "--synthcoverpsi": _num("float", 0, 1e6, "synthetic cover: exploration bonus"),
    "--synthcoversize": _num("int", 1, 1000, "synthetic cover: policies in the cover"),
    "--large_action_space": _flag("large action space filtering"),
    "--max_actions": _num("int", 1, 10_000, "large action space: actions kept"),
    "--spanner_c": _num("float", 0, 1e6, "large action space: spanner parameter"),
    # the update
    "--learning_rate": _num("float", 0, 1e4, "learning rate (-l)"),
    "--power_t": _num("float", 0, 10, "learning rate decay exponent"),
    "--initial_t": _num("float", 0, 1e12, "initial t of the decay"),
    "--l1": _num("float", 0, 1e3, "L1 regularization"),
    "--l2": _num("float", 0, 1e3, "L2 regularization"),
    "--sgd": _flag("plain SGD updates"),
    "--adaptive": _flag("adaptive learning rates"),
    "--normalized": _flag("normalized updates"),
    "--invariant": _flag("importance-invariant updates"),
    "--random_seed": _num("int", 0, 2**64 - 1, "seed of VW's random numbers"),
    # the features
    "--bit_precision": _num("int", 1, MAX_BITS, "bits of the weight table (-b)"),
    "--quadratic": _spec(2, 2, "pairs of namespaces to cross (-q)"),
    "--cubic": _spec(3, 3, "triples of namespaces to cross"),
    "--interactions": _spec(2, 4, "crosses of 2 to 4 namespaces"),
    "--ignore": _spec(1, 64, "namespaces to ignore"),
    "--ignore_linear": _spec(1, 64, "namespaces to ignore for linear terms only"),
    "--keep": _spec(1, 64, "namespaces to keep (the others are ignored)"),
    "--noconstant": _flag("no constant feature"),
    "--permutations": _flag("interactions: permutations instead of combinations"),
    "--leave_duplicate_interactions": _flag("interactions: keep duplicates"),
    "--hash": Option("choice", "how features are hashed", choices=("strings", "all")),
    "--hash_seed": _num("int", 0, 2**32 - 1, "seed of the feature hash"),
    "--chain_hash": _flag("JSON: hash nested names as a chain"),
}
ALIASES = {"-q": "--quadratic", "-l": "--learning_rate", "-b": "--bit_precision"}
#: Options whose value a saved model may differ in from its policy: the exploration
#: rate (explorationPercentage sets it) and the state of VW's random numbers.
FREE_IN_MODELS = ("--epsilon", "--random_seed")

Pair = tuple[str, str | None]


def _value(name: str, opt: Option, value: str, what: str) -> str:
    bad = f"{what} option {name}: {value!r} is not "
    if opt.kind == "choice":
        if value not in opt.choices:
            raise InvalidPolicy(bad + opt.describe() + ".")
    elif opt.kind == "spec":
        if not _SPEC.match(value) or value.startswith("-"):
            raise InvalidPolicy(bad + "a namespace spec (printable ASCII, no quotes).")
        if not opt.low <= len(value) <= opt.high:
            raise InvalidPolicy(bad + opt.describe() + ".")
    else:
        ok = _INT.match(value) if opt.kind == "int" else _FLOAT.match(value)
        number = float(value) if ok else math.nan
        if not (math.isfinite(number) and opt.low <= number <= opt.high):
            raise InvalidPolicy(bad + f"an {opt.describe()}.")
    return value


def parse(args: str | Sequence[str], what: str = "Policy") -> list[Pair]:
    """(long name, value) pairs of an argument string, every option allow-listed and
    every value checked; raises InvalidPolicy naming the first refused option."""
    if isinstance(args, str):
        if len(args) > MAX_ARGUMENTS_LENGTH:
            raise InvalidPolicy(
                f"{what} arguments must be at most {MAX_ARGUMENTS_LENGTH} characters."
            )
        if any(c in args for c in "\"'\\\x00"):
            raise InvalidPolicy(f"{what} arguments may not contain quotes or backslashes.")
        tokens: Sequence[str] = args.split()
    else:
        tokens = args
    pairs: list[Pair] = []
    seen: set[str] = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("--"):
            name, eq, inline = tok.partition("=")
            attached = inline if eq else None
        elif tok.startswith("-") and len(tok) >= 2 and not tok[1].isdigit():
            name, attached = tok[:2], (tok[2:] or None)
        else:
            raise InvalidPolicy(f"{what} argument {tok!r} is not an option.")
        canon = ALIASES.get(name, name)
        opt = OPTIONS.get(canon)
        if opt is None:
            raise InvalidPolicy(
                f"{what} option {name} is not allowed: only learning options are "
                "(docs/security.md lists them)."
            )
        if canon in seen and not opt.many:
            raise InvalidPolicy(f"{what} option {name} is given twice.")
        seen.add(canon)
        if opt.kind == "flag":
            if attached is not None:
                raise InvalidPolicy(f"{what} option {name} takes no value.")
            pairs.append((canon, None))
            continue
        if attached is not None:
            values = [attached]
        else:
            if i >= len(tokens):
                raise InvalidPolicy(f"{what} option {name} needs a value.")
            values = [tokens[i]]
            i += 1
            while opt.many and i < len(tokens) and not tokens[i].startswith("-"):
                values.append(tokens[i])  # --ignore A B, as VW reads it
                i += 1
        pairs += [(canon, _value(name, opt, v, what)) for v in values]
    return pairs


def tokens(pairs: Iterable[Pair]) -> list[str]:
    """The tokens VW is given: exactly what was checked."""
    out: list[str] = []
    for name, value in pairs:
        out += [name] if value is None else [name, value]
    return out


def policy_tokens(args: str) -> list[str]:
    """The checked tokens of a policy, which must name the problem VW solves."""
    pairs = parse(args)
    names = {name for name, _ in pairs}
    if not names & {"--cb_explore_adf", "--ccb_explore_adf"}:
        raise InvalidPolicy("Policy arguments must contain --cb_explore_adf or --ccb_explore_adf.")
    return tokens(pairs)


def bits(pairs: Iterable[Pair]) -> int:
    """The weight table's bits of a policy (VW's default if it does not say)."""
    return next((int(v) for n, v in pairs if n == "--bit_precision" and v), DEFAULT_BITS)


def canonical(pairs: Iterable[Pair]) -> tuple[Pair, ...]:
    """What a model must share with its policy: every option but those free in models,
    numbers compared as 32-bit floats would be (VW prints 0.2 as 0.200000002980232)."""
    out = []
    for name, value in pairs:
        if name in FREE_IN_MODELS or name == "--bit_precision":
            continue
        opt = OPTIONS[name]
        if value is not None and opt.kind == "float":
            value = f"{float(value):.6g}"
        out.append((name, value))
    return tuple(sorted(out, key=lambda p: (p[0], p[1] or "")))


def show(pairs: Iterable[Pair]) -> str:
    return " ".join(tokens(pairs))
