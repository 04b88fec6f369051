"""Re-rank a popularity recommender with banditloop, and measure it through HTTP.

The shop has 8 products and 4 kinds of visitors. Its recommender (a tiny HTTP
service started here) ranks by overall popularity: the bestseller first, for
everyone. That order is the best single order on average, but wrong for most
visitors: gamers want the console, parents the stroller, and so on.

The script starts the recommender and a banditloop server (or uses --url),
points the loop's recommender connector at it, loads the item catalogue, and
plays visits: Rank with ``recommenderParams`` (no actions), show
``rewardActionId``, send a reward of 1 on a simulated click. It prints the
click rate of banditloop's choice beside the click rate the recommender's own
first item would have had in the same visits.

    .venv/bin/python examples/rerank_recommender.py                 # about 20 s
    .venv/bin/python examples/rerank_recommender.py --events 10000 --seed 1
    .venv/bin/python examples/rerank_recommender.py --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

SEGMENTS = ["student", "parent", "gamer", "retiree"]
#: Click probability of each product for each kind of visitor.
CTR: dict[str, dict[str, float]] = {
    "student": {"laptop": 0.35, "headphones": 0.30, "phone": 0.20, "bestseller": 0.15},
    "parent": {"stroller": 0.40, "bestseller": 0.25, "phone": 0.10, "garden": 0.10},
    "gamer": {"console": 0.45, "headphones": 0.30, "laptop": 0.15, "bestseller": 0.05},
    "retiree": {"garden": 0.35, "novel": 0.30, "bestseller": 0.20, "phone": 0.05},
}
CATALOGUE = {
    "bestseller": {"category": "books", "price": "low"},
    "novel": {"category": "books", "price": "low"},
    "laptop": {"category": "computers", "price": "high"},
    "headphones": {"category": "audio", "price": "mid"},
    "phone": {"category": "phones", "price": "high"},
    "console": {"category": "games", "price": "high"},
    "stroller": {"category": "baby", "price": "mid"},
    "garden": {"category": "garden", "price": "low"},
}
BASE_CTR = 0.02  # any product not listed for a segment


def ctr(segment: str, item: str) -> float:
    return CTR[segment].get(item, BASE_CTR)


def popularity() -> list[tuple[str, float]]:
    """The recommender's order: mean click rate over visitors, best first."""
    mean = {i: sum(ctr(s, i) for s in SEGMENTS) / len(SEGMENTS) for i in CATALOGUE}
    return sorted(mean.items(), key=lambda kv: -kv[1])


# -- the upstream recommender: GET /recs?user=...&n=K -> {"items": [{"id", "score"}]} ------


class _Recs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: banditloop reuses its connection
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body in one write, flushed after each request

    def do_GET(self) -> None:
        n = int(self.path.partition("n=")[2].split("&")[0] or 10)
        items = [{"id": i, "score": round(s, 4)} for i, s in popularity()[:n]]
        body = json.dumps({"items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def recommender() -> Iterator[str]:
    """The popularity recommender on a free local port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def banditloop_server() -> Iterator[str]:
    """``banditloop serve`` on a free port with a fresh data directory."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            "BANDITLOOP_LOOP": '{"rewardWaitTime": "PT1S"}',
            "BANDITLOOP_SQLITE_SYNCHRONOUS": "NORMAL",  # a demo: survive crashes, not power loss
        }
        cmd = [sys.executable, "-m", "banditloop", "serve", "--port", str(port)]
        proc = subprocess.Popen([*cmd, "--data-dir", data, "--log-level", "error"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("banditloop did not start") from None
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(20)


# -- the driver ----------------------------------------------------------------------------


def setup(http: httpx.Client, prefix: str, recs_url: str) -> None:
    """Point the loop at the recommender and load the catalogue."""
    config = http.get(prefix + "/configurations/service").json()
    config["recommender"] = {
        "url": recs_url + "/recs?user={userId}&n={topK}",
        "timeoutSeconds": 0.5,
        "topK": 8,
        "items": "items",
        "id": "id",
        "score": "score",
        "features": None,
    }
    http.put(prefix + "/configurations/service", json=config).raise_for_status()
    items = [{"id": i, "features": [f]} for i, f in CATALOGUE.items()]
    http.put(prefix + "/items", json=items).raise_for_status()


@dataclass
class Result:
    events: int
    clicks: int  # banditloop's choices that were clicked
    expected: float  # sum of the click rates of banditloop's choices
    upstream_expected: float  # ... of the recommender's first item, same visits
    best_expected: float  # ... of the best product for each visit
    dcg: float  # expected clicks of banditloop's top 3, position-discounted
    upstream_dcg: float
    window: list[tuple[float, float]]  # (banditloop, upstream) expected, per visit
    policy: str = ""

    def last(self, n: int) -> tuple[float, float]:
        part = self.window[-n:]
        return (sum(a for a, _ in part) / len(part), sum(b for _, b in part) / len(part))


def dcg(segment: str, ids: list[str], k: int = 3) -> float:
    return sum(ctr(segment, i) / math.log2(pos + 2) for pos, i in enumerate(ids[:k]))


def play(
    url: str | httpx.Client,
    events: int,
    seed: int,
    loop: str | None = None,
    clicks: bool = True,
    learn: Callable[[], object] | None = None,
    every: int = 50,
) -> Result:
    """Set up the loop and play ``events`` visits through HTTP (``url``, or a client of
    one's own, such as a test's). With ``clicks`` False the reward is the click
    probability itself (less noise: for quick tests). ``learn``, if given, is called
    after every ``every`` visits: a test drives the trainer there, so that what the
    model has learned does not depend on how fast the machine is."""
    rng = random.Random(seed)
    prefix = (f"/loops/{loop}" if loop else "") + "/personalizer/v1.0"
    res = Result(events, 0, 0.0, 0.0, 0.0, 0.0, 0.0, [])
    upstream = [i for i, _ in popularity()]
    with ExitStack() as stack:
        recs_url = stack.enter_context(recommender())
        if isinstance(url, str):
            http = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        else:
            http = url
        setup(http, prefix, recs_url)
        res.policy = http.get(prefix + "/configurations/policy").json()["arguments"]
        for n in range(events):
            if learn is not None and n and n % every == 0:
                learn()
            segment = rng.choice(SEGMENTS)
            user = f"{segment}-{rng.randrange(1000)}"
            r = http.post(
                prefix + "/rank",
                json={
                    "contextFeatures": [{"segment": segment}],
                    "recommenderParams": {"userId": user},
                    "eventId": f"visit-{seed}-{n}",
                },
            )
            r.raise_for_status()
            answer = r.json()
            shown = answer["rewardActionId"]
            reward = ctr(segment, shown)
            if clicks:
                reward = 1.0 if rng.random() < reward else 0.0
                res.clicks += int(reward)
            if reward:
                http.post(prefix + f"/events/{answer['eventId']}/reward", json={"value": reward})
            ours, theirs = ctr(segment, shown), ctr(segment, upstream[0])
            res.expected += ours
            res.upstream_expected += theirs
            res.best_expected += max(ctr(segment, i) for i in CATALOGUE)
            res.dcg += dcg(segment, [a["id"] for a in answer["ranking"]])
            res.upstream_dcg += dcg(segment, upstream)
            res.window.append((ours, theirs))
    return res


def report(res: Result) -> str:
    n = res.events
    last_ours, last_theirs = res.last(1000)
    rows = [
        ("recommender's order (its first item)", res.upstream_expected / n, last_theirs),
        ("banditloop re-ranked (rewardActionId)", res.expected / n, last_ours),
        ("best possible (knows each visitor)", res.best_expected / n, res.best_expected / n),
    ]
    lines = [
        f"{n} visits, {res.clicks} clicks (click rate {res.clicks / n:.3f}), policy {res.policy}",
        "",
        "| shown item | expected click rate, all visits | last 1000 visits |",
        "|---|---|---|",
        *(f"| {name} | {a:.3f} | {b:.3f} |" for name, a, b in rows),
        "",
        f"top-3 list, position-discounted expected clicks per visit: "
        f"recommender {res.upstream_dcg / n:.3f}, banditloop {res.dcg / n:.3f}",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="A running banditloop server (default: start one).")
    ap.add_argument("--loop", default=None, help="Loop name on --url (default: default).")
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.monotonic()
    if args.url:
        res = play(args.url, args.events, args.seed, args.loop)
    else:
        with banditloop_server() as url:
            res = play(url, args.events, args.seed)
    print(report(res))
    print(f"\n({time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
