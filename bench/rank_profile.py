"""Instructions per Rank, counted by valgrind's callgrind: independent of the machine's load.

Wall-clock figures on a shared machine are noise; an instruction count is not. Each
target serves the bench's Rank body (bench/throughput.py's ``rank_body``) in-process,
straight through its ASGI app (no HTTP server, no socket: uvicorn's part is not in
these counts), and is run under callgrind twice, for N and for 2N requests after a
warm-up: (count(2N) - count(N)) / N is the cost of one request, start-up and warm-up
cancelled out. All threads count (banditloop's store writer: its SQLite commit, with
fsync).

| target | what one request is |
|---|---|
| ``asgi+vw`` | bench/_baselines.py's bare ASGI endpoint: orjson, ``plan``, VW predict |
| ``banditloop`` | ``create_app``: middleware, fast path, ``Loop.rank``, durable logging |
| ``banditloop+reward`` | a Rank and a Reward for it |
| ``pmf`` | ``Policy.pmf`` of the body's example JSON (VW's JSON parser, predict, floor) |
| ``plan`` | ``ranking.plan`` of the body (cleaning, the action cache, the example's JSON) |

``banditloop``'s trainer is on but idle (``rewardWaitTime`` PT10M) and looks for closed
events once an hour: its default poll, every 50 ms of wall-clock time, would add as many
polls to each request as valgrind's speed (that is, the machine's load) allows.

    .venv/bin/python bench/rank_profile.py                 # every target, N=200
    .venv/bin/python bench/rank_profile.py --targets banditloop,asgi+vw -n 100
    .venv/bin/python bench/rank_profile.py --annotate banditloop   # + callgrind_annotate

Needs valgrind (``apt-get install -y valgrind``). About 1 to 3 minutes of CPU per target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
TARGETS = ("asgi+vw", "banditloop", "banditloop+reward", "pmf", "plan")
WARM = 30


_REST: list[bytes] = []


def _body(i: int) -> bytes:
    """The bench's Rank body with eventId ev-i (made once: not part of the count)."""
    if not _REST:
        sys.path.insert(0, str(HERE))
        from throughput import rank_body

        _REST.append(orjson.dumps(rank_body())[1:])
    return b'{"eventId":"ev-%d",' % i + _REST[0]


class Asgi:
    """Drives an ASGI app in-process: lifespan, then one POST at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._life: asyncio.Queue[dict[str, Any]] | None = None
        self._sent: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def go() -> None:
            self._life, self._sent = asyncio.Queue(), asyncio.Queue()
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
            self._task = asyncio.ensure_future(self.app(scope, self._life.get, self._sent.put))
            await self._life.put({"type": "lifespan.startup"})
            message = await self._sent.get()
            assert message["type"] == "lifespan.startup.complete", message

        self.loop.run_until_complete(go())

    def stop(self) -> None:
        async def go() -> None:
            assert self._life is not None and self._task is not None
            await self._life.put({"type": "lifespan.shutdown"})
            await self._task

        self.loop.run_until_complete(go())

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.loop.run_until_complete(post(self.app, path, body))


async def post(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """One POST through an ASGI app, no socket: its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    out: list[dict[str, Any]] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no disconnect while the answer is made
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in out if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")


def _request(name: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    """(one request, clean-up) for a target, started and ready."""
    sys.path.insert(0, str(HERE))
    if name == "asgi+vw":
        import _baselines

        drv = Asgi(_baselines.asgi_app)
        drv.start()

        def base(i: int) -> object:
            status, _ = drv.post("/personalizer/v1.0/rank", _body(i))
            assert status == 201, status
            return None

        return base, drv.stop
    if name.startswith("banditloop"):
        from banditloop.app import create_app
        from banditloop.config import Settings

        tmp = tempfile.mkdtemp(prefix="banditloop-profile-")
        os.environ["BANDITLOOP_LOOP"] = '{"rewardWaitTime":"PT10M","modelExportFrequency":"PT1M"}'
        drv = Asgi(create_app(Settings(data_dir=Path(tmp), trainer_poll_seconds=3600)))
        drv.start()
        reward = name.endswith("+reward")

        def rank(i: int) -> object:
            status, _ = drv.post("/personalizer/v1.0/rank", _body(i))
            assert status == 201, status
            if reward:
                path = f"/personalizer/v1.0/events/ev-{i}/reward"
                status, _ = drv.post(path, b'{"value":1.0}')
                assert status == 204, status
            return None

        return rank, drv.stop
    from banditloop.policy import DEFAULT_POLICY, Policy
    from banditloop.ranking import plan

    data = orjson.loads(_body(0))
    actions = [(a["id"], a["features"]) for a in data["actions"]]
    policy = Policy(DEFAULT_POLICY)
    p = plan(data["contextFeatures"], actions, None)
    calls: dict[str, Callable[[int], object]] = {
        "pmf": lambda i: policy.pmf(p.example),
        "plan": lambda i: plan(data["contextFeatures"], actions, None),
    }
    return calls[name], policy.close


def run_inside(name: str, n: int) -> None:
    """The measured process: start the target, warm up, then n requests."""
    one, done = _request(name)
    for i in range(WARM):
        one(i)
    for i in range(WARM, WARM + n):
        one(i)
    done()


_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)


def count(name: str, n: int, out: Path) -> int:
    """Instructions of a whole run of the target with n requests."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, __file__, "--inside", name, "-n", str(n)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = _TOTAL.search(out.read_bytes())
    assert m is not None, out
    return int(m.group(1))


def per_request(name: str, n: int, tmp: Path) -> tuple[float, Path]:
    """Instructions of one request: the difference of a 2n and an n run, over n."""
    small = count(name, n, tmp / f"{name}.{n}.out")
    big_out = tmp / f"{name}.{2 * n}.out"
    big = count(name, 2 * n, big_out)
    return (big - small) / n, big_out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("-n", type=int, default=200, help="requests of the shorter run")
    ap.add_argument("--annotate", default="", help="targets to print callgrind_annotate of")
    ap.add_argument("--inside", default="", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.inside:
        run_inside(opts.inside, opts.n)
        return 0
    names = [t for t in opts.targets.split(",") if t]
    unknown = set(names) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rank-profile-") as tmp:
        for name in names:
            ins, out = per_request(name, opts.n, Path(tmp))
            results[name] = ins
            print(f"{name:20s} {ins:12,.0f} instructions per request", flush=True)
            if name in opts.annotate.split(","):
                subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], check=False)
    base = results.get("asgi+vw")
    if base:
        print()
        for name, ins in results.items():
            print(f"{name:20s} {ins / base:6.2f}x asgi+vw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
