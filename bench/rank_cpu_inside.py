"""CPU per Rank in-process at real speed: one request at a time, and many in flight.

The same requests as bench/rank_profile.py (its ``Asgi`` driver: the target's ASGI app,
no socket, no uvicorn), timed by the kernel instead of counted by callgrind: user and
system CPU of the event-loop thread and of the whole process (``getrusage``), and
context switches, per request; best of three runs. The same instructions cost more CPU
when they run cold (a request at a time: the loop sleeps while the writer commits)
than when requests overlap.

    .venv/bin/python bench/rank_cpu_inside.py asgi+vw 1000 1
    .venv/bin/python bench/rank_cpu_inside.py banditloop 1000 64
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rank_profile

PATH = "/personalizer/v1.0/rank"


def usage(who: int) -> list[float]:
    r = resource.getrusage(who)
    return [r.ru_utime, r.ru_stime, float(r.ru_nvcsw), float(r.ru_nivcsw)]


async def run(app: Any, first: int, n: int, inflight: int) -> None:
    gate = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with gate:
            status, _ = await rank_profile.post(app, PATH, rank_profile._body(i))
            assert status == 201, status

    await asyncio.gather(*(one(i) for i in range(first, first + n)))


def main() -> None:
    name, n, inflight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    one, done = rank_profile._request(name)
    for i in range(200):
        one(i)  # warm-up
    driver = next(c.cell_contents for c in one.__closure__ or () if isinstance(
        c.cell_contents, rank_profile.Asgi))  # fmt: skip
    best: list[float] = []
    for rep in range(3):
        thread, proc = usage(resource.RUSAGE_THREAD), usage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        driver.loop.run_until_complete(run(driver.app, 1000 + rep * n, n, inflight))
        seconds = time.perf_counter() - start
        after = usage(resource.RUSAGE_THREAD) + usage(resource.RUSAGE_SELF)
        row = [(b - a) / n for a, b in zip(thread + proc, after, strict=True)] + [n / seconds]
        if not best or row[4] + row[5] < best[4] + best[5]:
            best = row
    done()
    mu, ms, _, _, pu, ps, pv, pi, rate = best
    print(
        f"{name}, {inflight} in flight: event-loop thread user {mu * 1e6:.0f} sys "
        f"{ms * 1e6:.0f} µs; process user {pu * 1e6:.0f} sys {ps * 1e6:.0f} µs; context "
        f"switches {pv:.2f} voluntary, {pi:.2f} involuntary per request; {rate:.0f}/s"
    )


if __name__ == "__main__":
    main()
