"""Try policy arguments or a model file in a child process before the server uses them.

Everything that can be checked in Python is checked first, with no side effect:
the arguments against the allow-list (vwargs.py), a model's header against it
and against the loop's policy (modelfile.py).  Only then does a child process
start VW, so that arguments asking for gigabytes of weights, or a model that
crashes VW, cost the child and not the server.  The child runs in an empty
temporary directory of its own (removed afterwards), with caps on its memory,
file sizes and core dumps, in a network namespace of its own where the system
allows one, and in a process group of its own that is killed when it ends.

A model is loaded and written back: VW reads weights until the end of the file,
so a cut between two weights would load as a smaller model, but then what VW
writes back differs from the file (models of the same VW version; banditloop's
own models carry a digest of their content, checked before this).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from typing import Any

import orjson

from . import vwargs
from .errors import BadRequest, InvalidPolicy
from .policy import check_arguments, check_model

MEMORY_CAP = 2 << 30  # bytes a policy's workspace may need
FILE_CAP = 64 << 20  # bytes the child may write to one file, plus twice the model's size
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
_PROBE = '{"FromUrl":[{"a":1}],"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]}'
MODEL, WRITTEN = "model.vw", "written.vw"

try:  # resolved before any fork: the child only makes the call
    _unshare: Any = ctypes.CDLL(None, use_errno=True).unshare
except (OSError, AttributeError):  # not Linux
    _unshare = None


def _confine(file_cap: int) -> None:
    """In the child, before it runs Python: caps, and no network where possible."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_cap, file_cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _unshare is not None and _unshare(CLONE_NEWNET) != 0:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)  # unprivileged: a user namespace first


def check(args: str, model: bytes | None = None, timeout: float = 60) -> None:
    """Raise InvalidPolicy (or InvalidModelImportFormat) unless VW accepts them."""
    tokens = check_arguments(args)
    spec: dict[str, Any] = {"tokens": tokens}
    if model is not None:
        header = check_model(args, model)
        # the options free in models (--epsilon, --random_seed) come from the model itself,
        # so that what VW writes back is comparable byte for byte
        kept = [p for p in vwargs.parse(args) if p[0] not in vwargs.FREE_IN_MODELS]
        spec = {"tokens": vwargs.tokens(kept), "model": MODEL, "version": header.version}
    file_cap = FILE_CAP + 2 * len(model or b"")
    with tempfile.TemporaryDirectory(prefix="banditloop-vwcheck-") as tmp:
        if model is not None:
            with open(os.path.join(tmp, MODEL), "wb") as fh:
                fh.write(model)
        code, reason = _run(spec, tmp, file_cap, timeout)
    if code != 0:
        if model is not None:
            raise BadRequest(f"Not a usable model file: {reason}", "InvalidModelImportFormat")
        raise InvalidPolicy(f"Vowpal Wabbit rejected the arguments: {reason}")


def _run(spec: dict[str, Any], cwd: str, file_cap: int, timeout: float) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "banditloop.vwcheck", orjson.dumps(spec).decode()]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: _confine(file_cap),
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        return 1, "Vowpal Wabbit did not finish within the time limit."
    finally:
        _kill_group(proc.pid)  # whatever the child left behind in its group
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"the check process died (exit {proc.returncode})"
    return proc.returncode, reason


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _main(argv: list[str]) -> int:
    import vowpalwabbit

    from .modelfile import read_header

    spec = orjson.loads(argv[0])
    tokens = [*spec["tokens"], "--json", "--quiet"]
    model = spec.get("model")
    if model:
        tokens += ["-i", model, "--preserve_performance_counters"]
    try:
        ccb = "--ccb_explore_adf" in tokens
        ws = vowpalwabbit.Workspace(arg_list=tokens)
        if model:
            ws.save(WRITTEN)  # before the probe, which may move VW's random state
        ex = ws.parse(_PROBE[:-1] + ',"_slots":[{"_id":"s"}]}' if ccb else _PROBE)
        pmf = ws.predict(ex)
        ws.finish_example(ex)
        if ccb:
            pmf = pmf[0] if isinstance(pmf, list) and len(pmf) == 1 else None
        if not isinstance(pmf, list) or len(pmf) != 2:
            raise RuntimeError(
                "the model does not rank actions (not a --cb_explore_adf "
                "or --ccb_explore_adf model)"
            )
        ws.finish()
        if model:
            with open(model, "rb") as fh, open(WRITTEN, "rb") as out:
                given, written = fh.read(), out.read()
            if read_header(written).version == spec["version"] and given != written:
                raise RuntimeError(
                    "the model file is damaged or truncated: Vowpal Wabbit reads "
                    f"{len(given)} bytes but writes back {len(written)} different ones"
                )
    except Exception as ex:  # report VW's own message to the parent
        print(str(ex).strip().splitlines()[0] if str(ex).strip() else repr(ex), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
