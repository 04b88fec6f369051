"""Try policy arguments or a model file in a child process before the server uses them.

A hostile or broken model file, or arguments that ask for gigabytes of weights,
must not crash or exhaust the server: the child has a memory cap, and if it
dies, the request is refused with VW's message.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
import tempfile

from .errors import BadRequest, InvalidPolicy

MEMORY_CAP = 2 << 30  # bytes a policy's workspace may need
_PROBE = '{"FromUrl":[{"a":1}],"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]}'


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def check(args: str, model: bytes | None = None, timeout: float = 60) -> None:
    """Raise InvalidPolicy (or InvalidModelImportFormat) unless VW accepts them."""
    path = None
    try:
        cmd = [sys.executable, "-m", "banditloop.vwcheck", args]
        if model is not None:
            fd, path = tempfile.mkstemp(suffix=".vw")
            with os.fdopen(fd, "wb") as fh:
                fh.write(model)
            cmd.append(path)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit
        )
    except subprocess.TimeoutExpired:
        raise InvalidPolicy("Vowpal Wabbit did not start within the time limit.") from None
    finally:
        if path:
            os.unlink(path)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"the check process died (exit {proc.returncode})"
        if model is not None:
            raise BadRequest(f"Not a usable model file: {reason}", "InvalidModelImportFormat")
        raise InvalidPolicy(f"Vowpal Wabbit rejected the arguments: {reason}")


def _main(argv: list[str]) -> int:
    import vowpalwabbit

    tokens = [*shlex.split(argv[0]), "--json", "--quiet"]
    if len(argv) > 1:
        tokens += ["-i", argv[1]]
    try:
        ccb = "--ccb_explore_adf" in tokens
        ws = vowpalwabbit.Workspace(arg_list=tokens)
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
    except Exception as ex:  # report VW's own message to the parent
        print(str(ex).strip().splitlines()[0] if str(ex).strip() else repr(ex), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
