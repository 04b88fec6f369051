"""The Vowpal Wabbit workspace of one loop: pmf, learn, save and load, under a lock.

VW is not thread-safe and holds the GIL, so every call goes through ``lock``
and stays short; parallelism comes from processes, each with its own Policy.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import pylibvw
import vowpalwabbit

from . import modelfile, vwargs
from .errors import BadRequest, InvalidPolicy

#: banditloop's default, chosen by measurement of online reward and of how well its own
#: logs evaluate other policies (docs/learning.md); with explorationPercentage 0.05 every
#: action keeps probability >= 0.05/K (``floor``).  Azure's default learns with
#: ``--power_t 0 -l 0.001``, far too slowly at low traffic.
DEFAULT_POLICY = "--cb_explore_adf --synthcover --synthcoverpsi 0.3 --clip_p 0.1 -q ::"
#: Azure Personalizer's own default, kept for comparison and for imported loops.
AZURE_DEFAULT_POLICY = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
_EPSILON = re.compile(r"--epsilon(=|\s+)\S+")


def check_arguments(args: str) -> list[str]:
    """Tokens of a policy string: allow-listed learning options only (vwargs.py)."""
    return vwargs.policy_tokens(args)


def with_epsilon(args: str, epsilon: float) -> str:
    """The policy string with ``--epsilon`` set to the loop's exploration percentage."""
    value = f"--epsilon {epsilon:g}"
    if _EPSILON.search(args):
        return _EPSILON.sub(value, args, count=1)
    return f"{args} {value}"


def epsilon_of(args: str) -> float:
    """The ``--epsilon`` of a policy string (explorationPercentage, as served), else 0."""
    value = next((v for n, v in vwargs.parse(args) if n == "--epsilon"), None)
    return float(value) if value else 0.0


def floor(pmf: Sequence[float], epsilon: float) -> list[float]:
    """``pmf`` with every action at least ``p_min = epsilon / K``, summing to 1.

    Actions below the floor are raised to it and the others scaled down alike, so
    a pmf that already keeps the floor (epsilon-greedy's, synthetic cover's with
    ``--epsilon``) is unchanged: VW's own ``enforce_minimum_probability``, made to
    hold for every algorithm and every action.  Without a floor (``epsilon`` 0) the
    pmf is returned as it is.
    """
    k = len(pmf)
    if epsilon <= 0 or k == 0:
        return list(pmf)
    q = [max(0.0, float(p)) for p in pmf]
    total = math.fsum(q)
    p_min = min(epsilon, 1.0) / k
    if total <= 0 or epsilon >= 1:
        return [1.0 / k] * k
    low: set[int] = set()
    while True:  # raising some may pull others below the floor: at most K rounds
        rest = math.fsum(q[i] for i in range(k) if i not in low)
        if rest <= 0:
            return [1.0 / k] * k
        scale = (1.0 - p_min * len(low)) / rest
        more = {i for i in range(k) if i not in low and q[i] * scale < p_min}
        if not more:
            break
        low |= more
    out = [p_min if i in low else q[i] * scale for i in range(k)]
    top = max(range(k), key=out.__getitem__)  # the rounding goes to the largest
    out[top] = 1.0 - math.fsum(p for i, p in enumerate(out) if i != top)
    return out


def _parse(ws: vowpalwabbit.Workspace, text: str) -> list[Any]:
    """The lines of a multi-line (ADF) example as VW's own parser reads them, without the
    Python wrapper pyvw's ``parse`` puts on each line: that was more than half of a
    prediction's time (docs/performance.md). The caller finishes them (``_finish``)."""
    lines: list[Any] = ws._parse(text.replace("\r", "").strip())  # as pyvw's parse
    if not lines:
        raise ValueError("An empty list is invalid")  # pyvw's words
    return lines


def _finish(ws: vowpalwabbit.Workspace, lines: list[Any]) -> None:
    pylibvw.vw._finish_example_multi_ex(ws, lines)


class Policy:
    """One VW workspace started with ``--json`` so that VW hashes Personalizer's JSON.

    Every pmf it gives keeps the exploration floor of its ``--epsilon`` (``floor``).
    """

    def __init__(self, args: str, model: bytes | None = None) -> None:
        self.args = args
        self.lock = threading.Lock()
        tokens = [*check_arguments(args), "--json", "--quiet"]
        self.multislot = "--ccb_explore_adf" in tokens
        self.epsilon = epsilon_of(args)
        if model is not None:
            check_model(args, model)
        self._ws = _workspace(tokens, model)

    def pmf(self, example: str) -> list[float]:
        """Probabilities per action, in the order of the example's ``_multi``, floored."""
        with self.lock:
            ex = _parse(self._ws, example)
            try:
                pylibvw.vw.predict_multi(self._ws, ex)
                pmf = list(ex[0].get_action_scores())  # what pyvw's predict returns here
            finally:
                _finish(self._ws, ex)
        return self.floor(pmf)

    def floor(self, pmf: Sequence[float]) -> list[float]:
        """``pmf`` (over the eligible actions only) with this policy's exploration floor."""
        return floor(pmf, self.epsilon)

    def pmf_then_learn(self, labelled: str) -> list[float]:
        """Progressive validation in one parse: the (floored) probabilities per action
        before learning the labelled example (VW's predict reads no label), then learn it."""
        with self.lock:
            ex = _parse(self._ws, labelled)
            try:
                pylibvw.vw.predict_multi(self._ws, ex)
                pmf = list(ex[0].get_action_scores())
                pylibvw.vw.learn_multi(self._ws, ex)
            finally:
                _finish(self._ws, ex)
        return self.floor(pmf)

    def slot_pmf(self, example: str) -> list[tuple[int, float]]:
        """(action index, probability) for the first slot of a CCB example, as VW gives
        them: the caller floors the pmf over the slot's eligible actions (``floor``)."""
        with self.lock:
            ex = self._ws.parse(example)
            try:
                return [(int(a), float(p)) for a, p in self._ws.predict(ex)[0]]
            finally:
                self._ws.finish_example(ex)

    def explain(self, example: str) -> list[list[dict[str, object]]]:
        """Top contributions per action of a single-slot example (explain.py)."""
        from .explain import explain

        with self.lock:
            return explain(self._ws, example)

    def learn(self, examples: Iterable[str]) -> int:
        """Learn from labelled JSON examples; returns how many were learned."""
        errors = self.learn_each(examples)
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            raise RuntimeError(failed)
        return len(errors)

    def learn_each(self, examples: Iterable[str]) -> list[str | None]:
        """Learn from each example that VW takes; per example, None or why it failed."""
        out: list[str | None] = []
        with self.lock:
            for line in examples:
                try:
                    ex = _parse(self._ws, line)
                except Exception as err:
                    out.append(f"Vowpal Wabbit cannot read the example: {err}"[:500])
                    continue
                try:
                    pylibvw.vw.learn_multi(self._ws, ex)
                    out.append(None)
                except Exception as err:
                    out.append(f"Vowpal Wabbit cannot learn the example: {err}"[:500])
                finally:
                    _finish(self._ws, ex)
        return out

    def save(self) -> bytes:
        """The model as a VW model file, stamped with the digest of its content."""
        fd, path = tempfile.mkstemp(suffix=".vw")
        os.close(fd)
        try:
            with self.lock:
                self._ws.save(path)
            with open(path, "rb") as fh:
                return modelfile.stamp(fh.read())
        finally:
            os.unlink(path)

    def close(self) -> None:
        with self.lock:
            self._ws.finish()


def check_model(args: str, model: bytes) -> modelfile.Header:
    """Refuse a model file before VW loads it: its header must pass modelfile.verify
    and hold the options the policy gives a model (a model of another policy would
    bring its own options in, unseen by GET /configurations/policy)."""
    header = modelfile.verify(model)
    modelfile.check_policy(header, kept_options(args))
    return header


@functools.lru_cache(maxsize=64)
def kept_options(args: str) -> tuple[vwargs.Pair, ...]:
    """The options VW stores in the header of a model of this policy (with the implied
    ones, such as --cb_adf), read from a one-bit empty model; plus the policy's -b."""
    pairs = vwargs.parse(args)
    tokens = vwargs.tokens(p for p in pairs if p[0] != "--bit_precision")
    with tempfile.TemporaryDirectory(prefix="banditloop-") as tmp:
        path = os.path.join(tmp, "empty.vw")
        ws = _start([*tokens, "-b", "1", "--quiet"])
        try:
            ws.save(path)
        finally:
            ws.finish()
        with open(path, "rb") as fh:
            header = modelfile.read_header(fh.read())
    return (*header.pairs(), ("--bit_precision", str(vwargs.bits(pairs))))


def _workspace(tokens: list[str], model: bytes | None) -> vowpalwabbit.Workspace:
    if model is None:
        return _start(tokens)
    fd, path = tempfile.mkstemp(suffix=".vw")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model)
        return _start([*tokens, "-i", path])
    except InvalidPolicy as ex:
        raise BadRequest(
            f"Not a usable model file: {ex.message}", "InvalidModelImportFormat"
        ) from None
    finally:
        os.unlink(path)


def _start(tokens: list[str]) -> vowpalwabbit.Workspace:
    try:
        return vowpalwabbit.Workspace(arg_list=tokens)
    except RuntimeError as ex:
        raise InvalidPolicy(f"Vowpal Wabbit rejected the arguments: {ex}") from None
