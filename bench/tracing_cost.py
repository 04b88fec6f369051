"""What trace-context support costs a Rank with tracing off: the observability middleware
of this tree against the one of a baseline commit (before tracing), in one process.

The middleware is the only code on the Rank path that changed: it now also looks for a
``traceparent`` among the request's headers. Requests carry the headers of a typical
SDK Rank and no trace context. Two measures:

* time per request, both variants interleaved in the same run (min of 10 rounds):

      .venv/bin/python bench/tracing_cost.py

* instructions per request (load-independent), one variant per callgrind run, with
  ``--n 0`` runs to take away start-up:

      for v in baseline current; do for n in 0 20000; do
        valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$v.$n \\
          .venv/bin/python bench/tracing_cost.py --variant $v --n $n; done; done
      callgrind_annotate /tmp/cg.current.20000 | grep 'PROGRAM TOTALS'   # etc.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from middleware import app, per_request  # bench/middleware.py

import banditloop
from banditloop.config import Settings
from banditloop.observability import ObservabilityMiddleware

BASELINE = "cdd73d8"  # the commit before trace context (issue 24, part 5)
ROOT = Path(__file__).resolve().parent.parent
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"user-agent", b"azsdk-python-ai-personalizer/1.0.0b1 Python/3.11"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept", b"application/json"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"application/json"),
    (b"ocp-apim-subscription-key", b"0123456789abcdef"),
    (b"content-length", b"180"),
]


def baseline_module() -> ModuleType:
    """observability.py as it was at BASELINE, imported beside the current one."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:src/banditloop/observability.py"],
        check=True,
        capture_output=True,
    ).stdout
    spec = importlib.util.spec_from_loader("banditloop._observability_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = banditloop.__name__
    exec(compile(source, "observability@baseline", "exec"), module.__dict__)
    return module


async def run(target: Any, n: int) -> float:
    return await per_request(target, n, HEADERS)


def middleware(variant: str) -> Any:
    cls = (
        ObservabilityMiddleware
        if variant == "current"
        else baseline_module().ObservabilityMiddleware
    )
    return cls(app, Settings())


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=["baseline", "current"])
    ap.add_argument("--n", type=int, default=50_000)
    args = ap.parse_args()
    if args.variant:  # one variant, for callgrind
        await run(middleware(args.variant), args.n)
        return
    old, new = middleware("baseline"), middleware("current")
    t_old = t_new = float("inf")
    for i in range(10):  # interleaved, each going first in turn
        pair = (old, new) if i % 2 == 0 else (new, old)
        first, second = await run(pair[0], args.n), await run(pair[1], args.n)
        a, b = (first, second) if i % 2 == 0 else (second, first)
        t_old, t_new = min(t_old, a), min(t_new, b)
    print(
        f"middleware per request: baseline {t_old:.3f} µs, current {t_new:.3f} µs, "
        f"ratio {t_new / t_old:.3f}",
        file=sys.stdout,
    )


if __name__ == "__main__":
    asyncio.run(main())
