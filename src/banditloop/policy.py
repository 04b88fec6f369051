"""The Vowpal Wabbit workspace of one loop: pmf, learn, save and load, under a lock.

VW is not thread-safe and holds the GIL, so every call goes through ``lock``
and stays short; parallelism comes from processes, each with its own Policy.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import threading
from collections.abc import Iterable

import vowpalwabbit

from .errors import BadRequest, InvalidPolicy

#: banditloop's default, chosen by measurement (docs/learning.md): synthetic cover
#: explores by itself, so the default explorationPercentage (the --epsilon floor) is 0.
#: Azure's default learns with ``--power_t 0 -l 0.001``, far too slowly at low traffic.
DEFAULT_POLICY = "--cb_explore_adf --synthcover -q ::"
#: Azure Personalizer's own default, kept for comparison and for imported loops.
AZURE_DEFAULT_POLICY = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
MAX_ARGUMENTS_LENGTH = 1024

# Options that read or write files, open sockets or change how the process runs.
_FORBIDDEN = {
    "-d",
    "--data",
    "-f",
    "--final_regressor",
    "-i",
    "--initial_regressor",
    "-c",
    "--cache",
    "--cache_file",
    "--readable_model",
    "--invert_hash",
    "--daemon",
    "--port",
    "-p",
    "--predictions",
    "-r",
    "--raw_predictions",
    "--pid_file",
    "--port_file",
    "--feature_mask",
    "--save_per_pass",
    "--output_feature_regularizer_binary",
    "--output_feature_regularizer_text",
    "--input_feature_regularizer",
    "--dictionary",
    "--dictionary_path",
    "--audit_regressor",
    "--extra_metrics",
    "--json",
    "--dsjson",
    "--passes",
    "--help",
    "-h",
    "--onethread",
    "--num_children",
    "--span_server",
    "--unique_id",
    "--total",
    "--node",
    "--sendto",
    "--progress",
    "-P",
    "--flatbuffer",
    "--compressed",
    "--db",
    "--id",
    "--preserve_performance_counters",
    "--kill_cache",
    "-k",
    "--no_stdin",
    "--version",
    "--predict_only_model",
    "--log_output",
    "--limit_output",
}
_EPSILON = re.compile(r"(--epsilon|-e)(=|\s+)\S+")


def check_arguments(args: str) -> list[str]:
    """Tokens of a policy string, refusing options that could touch files or the process."""
    if len(args) > MAX_ARGUMENTS_LENGTH:
        raise InvalidPolicy(f"Policy arguments must be at most {MAX_ARGUMENTS_LENGTH} characters.")
    try:
        tokens = shlex.split(args)
    except ValueError as ex:
        raise InvalidPolicy(f"Policy arguments cannot be parsed: {ex}.") from None
    if "--cb_explore_adf" not in tokens and "--ccb_explore_adf" not in tokens:
        raise InvalidPolicy("Policy arguments must contain --cb_explore_adf or --ccb_explore_adf.")
    for tok in tokens:
        name = tok.split("=", 1)[0]
        short = name[:2] if name.startswith("-") and not name.startswith("--") else name
        if name in _FORBIDDEN or short in _FORBIDDEN:
            raise InvalidPolicy(f"Policy argument {name} is not allowed.")
    return tokens


def with_epsilon(args: str, epsilon: float) -> str:
    """The policy string with ``--epsilon`` set to the loop's exploration percentage."""
    value = f"--epsilon {epsilon:g}"
    if _EPSILON.search(args):
        return _EPSILON.sub(value, args, count=1)
    return f"{args} {value}"


class Policy:
    """One VW workspace started with ``--json`` so that VW hashes Personalizer's JSON."""

    def __init__(self, args: str, model: bytes | None = None) -> None:
        self.args = args
        self.lock = threading.Lock()
        tokens = [*check_arguments(args), "--json", "--quiet"]
        self.multislot = "--ccb_explore_adf" in tokens
        self._ws = _workspace(tokens, model)

    def pmf(self, example: str) -> list[float]:
        """Probabilities per action, in the order of the example's ``_multi``."""
        with self.lock:
            ex = self._ws.parse(example)
            try:
                return list(self._ws.predict(ex))
            finally:
                self._ws.finish_example(ex)

    def slot_pmf(self, example: str) -> list[tuple[int, float]]:
        """(action index, probability) for the first slot of a CCB example."""
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
        n = 0
        with self.lock:
            for line in examples:
                ex = self._ws.parse(line)
                try:
                    self._ws.learn(ex)
                finally:
                    self._ws.finish_example(ex)
                n += 1
        return n

    def save(self) -> bytes:
        """The model as a VW model file."""
        fd, path = tempfile.mkstemp(suffix=".vw")
        os.close(fd)
        try:
            with self.lock:
                self._ws.save(path)
            with open(path, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(path)

    def close(self) -> None:
        with self.lock:
            self._ws.finish()


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
