"""Issue 18's check, as a new user would run it: the shuffled news world over HTTP
with the default policy, then an evaluation with Microsoft's SDK and the dashboard.

A server with the default loop (rewardWaitTime PT1S, every other setting default)
plays ``--events`` events of ``news_shuffled`` (7 articles in a random order per
event, so baseline1, the first article, has true value 1/7; a uniformly random
policy too). Then it prints:

* the logged probabilities (GET /logs/export): how many are 0, the smallest, against the floor
  explorationPercentage / K;
* the evaluation (azure-ai-personalizer's ``create_evaluation``) of online, baseline1
  and baselineRand: estimate, 95% interval, diagnostics, and whether the interval
  covers the truth;
* the dashboard's online, baseline and random rates with their diagnostics.

``python bench/support_check.py [--events 2000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import time
from contextlib import closing
from typing import Any

import httpx
from _common import server
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential

from banditloop.simulate import run_http


def logged_probabilities(api: str) -> list[float]:
    """Every probability of GET /logs/export (DSJSON ``p``), as the issue read them."""
    lines = httpx.get(api + "/logs/export", timeout=300).content.splitlines()
    return [p for line in lines if line.strip() for p in json.loads(line)["p"]]


def wait_learned(db: str, events: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with closing(sqlite3.connect(db)) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM decisions WHERE learned_in IS NOT NULL"
            ).fetchone()
        if n >= events:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {n} of {events} events learned after {timeout} s")
        time.sleep(0.5)


def evaluate(url: str) -> dict[str, dict[str, Any]]:
    admin = PersonalizerAdministrationClient(url, AzureKeyCredential("unused"))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    body = {"name": "support", "startTime": start.isoformat(), "endTime": end.isoformat()}
    admin.create_evaluation("support", body)
    deadline = time.monotonic() + 900
    while True:
        ev = admin.get_evaluation("support", start_time=start, end_time=end)
        if ev["status"] not in ("Running", "pending"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the evaluation did not finish in 15 minutes")
        time.sleep(1)
    if ev["status"] != "Succeeded":
        raise RuntimeError(f"evaluation {ev['status']}: {ev}")
    return {p["name"]: p["summary"] for p in ev["content"]["value"]}


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    truth = 1 / 7
    with server('{"rewardWaitTime": "PT1S"}') as srv:
        played = run_http(
            srv.url, events=a.events, seed=a.seed, world="news_shuffled", echo=lambda _: None
        )
        wait_learned(str(srv.db), a.events)
        config = httpx.get(srv.api + "/configurations/service", timeout=30).json()
        policy = httpx.get(srv.api + "/configurations/policy", timeout=30).json()
        probs = logged_probabilities(srv.api)
        floor = config["explorationPercentage"] / 7
        print(f"policy: {policy['arguments']}")
        print(
            f"{a.events} events over HTTP, online reward {played.ctr:.3f}; "
            f"explorationPercentage {config['explorationPercentage']}"
        )
        print(
            f"logged probabilities: {len(probs)}, of them 0: {sum(p == 0 for p in probs)}, "
            f"smallest {min(probs):.4f} (floor {floor:.4f})"
        )
        summaries = evaluate(srv.url)
        print(f"\nevaluation (truth of baseline1 and baselineRand: 1/7 = {truth:.3f})")
        print(f"{'policy':<14}{'estimate':>9}  {'95% interval':<16}{'ESS':>8}  covers / verdict")
        for name in ("online", "baseline1", "baselineRand"):
            s = summaries[name]
            d = s["diagnostics"]
            low, high = s["confidenceInterval"]
            verdict = (
                d["reason"]
                if not d["estimable"]
                else ("covers 1/7" if low <= truth <= high else "MISSES 1/7")
                if name != "online"
                else ""
            )
            print(
                f"{name:<14}{fmt(s['expectedReward']):>9}  "
                f"[{fmt(low)}, {fmt(high)}]{'':<2}{d['effectiveSampleSize']:>8.0f}  {verdict}"
            )
        board = httpx.get(srv.url + "/dashboard/data?minutes=60", timeout=60).json()
        print("\ndashboard (SNIPS over the last hour)")
        for name, r in board["totals"]["rewardRate"].items():
            shown = (
                f"{fmt(r['value'])} [{fmt(r['low'])}, {fmt(r['high'])}]"
                if r["value"] is not None
                else f"not estimable: {r['reason']}"
            )
            print(f"{name:<10}{shown}  ESS {r['effectiveSampleSize']:.0f}, events {r['events']}")


if __name__ == "__main__":
    main()
