"""Import and evaluation speed on the Open Bandit Dataset sample (docs/performance.md).

The sample (10,000 impressions of the "men" campaign, 34 items) ships inside the
source distribution of Open Bandit Pipeline; get it with

    pip download --no-deps --no-binary=:all: --ignore-requires-python obp==0.5.7
    tar xzf obp-0.5.7.tar.gz obp-0.5.7/obp/dataset/obd

then ``python bench/import_speed.py obp-0.5.7/obp/dataset/obd/random/men``.

It converts the CSV into DSJSON lines (user features as context, item features per
action, the logged propensity), then measures in the same run:

* import: ``Loop.import_lines`` (whole file checked, then batched ``executemany``)
  against the former way: with ``--baseline-src DIR`` the ``Loop.import_lines`` of an
  older checkout's ``src``, run in a child process (``mkdir /tmp/old && git archive
  4f41bad src | tar x -C /tmp/old``, then ``--baseline-src /tmp/old/src``); without
  it, a replica of its store path (one writer round trip per event and per reward)
  over today's line check;
* evaluation (one custom policy, as ``banditloop evaluate --policy``) against the raw
  VW passes it needs: the reward model and the policy, each a plain ``--dsjson``
  learning pass over the same lines.

It prints events/s and the ratios, and the import's first pass (checking) timed alone.
``--profile`` prints cProfile's top functions of the import and the evaluation.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import vowpalwabbit

from banditloop import dsjson, logcheck
from banditloop.config import Settings
from banditloop.evaluation.jobs import run_evaluation
from banditloop.evaluation.replay import REWARD_MODEL
from banditloop.featurize import FeatureLimits
from banditloop.join import IMPORTED
from banditloop.service import open_service
from banditloop.store.sqlite import SqliteStore

POLICY = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"


def obd_lines(folder: Path, limit: int) -> list[bytes]:
    """The sample as DSJSON lines, in time order."""
    campaign = folder.name
    items = {}
    with (folder / "item_context.csv").open() as fh:
        for row in csv.DictReader(fh):
            items[int(row["item_id"])] = {
                k: (float(v) if k == "item_feature_0" else v)
                for k, v in row.items()
                if k.startswith("item_feature")
            }
    n_items = len(items)
    multi = [{"_tag": str(i), "i": {"id": str(i)}, "j": [items[i]]} for i in range(n_items)]
    out = []
    with (folder / f"{campaign}.csv").open() as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            if n >= limit:
                break
            chosen = int(row["item_id"])
            p = float(row["propensity_score"])
            rest = (1 - p) / (n_items - 1)
            ts = dsjson.parse_timestamp(row["timestamp"].replace(" ", "T"))
            user = {k: v for k, v in row.items() if k.startswith("user_feature")}
            reward = float(row["click"])
            line = {
                "_label_cost": -reward,
                "_label_probability": p,
                "_label_Action": chosen + 1,
                "_labelIndex": chosen,
                "o": [{"v": reward, "EventId": f"obd-{n}", "ActionTaken": False}],
                "Timestamp": dsjson.timestamp(ts),
                "Version": "1",
                "EventId": f"obd-{n}",
                "a": [chosen + 1] + [i + 1 for i in range(n_items) if i != chosen],
                "c": {"user": [user], "_multi": multi},
                "p": [p] + [rest] * (n_items - 1),
                "VWState": {"m": "obd"},
            }
            out.append(orjson.dumps(line))
    return out


def import_before(lines: list[bytes], data_dir: Path) -> float:
    """The former import: every decision and reward its own writer job, awaited."""
    store = SqliteStore(data_dir)
    t0 = time.perf_counter()
    for text in lines:
        item = dsjson.parse_line(text, "default")
        if store.append_decision(item.decision).result() is None and item.rewards:
            d = item.decision
            store.append_rewards("default", d.event_id, item.rewards, d.ts, False).result()
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


def import_old_checkout(src: Path, lines: list[bytes], data_dir: Path) -> float:
    """``Loop.import_lines`` of another checkout (its ``src``), timed in a child process."""
    data_dir.mkdir(parents=True)
    (data_dir / "lines.json").write_bytes(b"\n".join(lines) + b"\n")
    code = f"""
import sys, time, pathlib
sys.path.insert(0, {str(src)!r})
from banditloop.config import Settings
from banditloop.service import open_service
d = pathlib.Path({str(data_dir)!r})
lines = (d / "lines.json").read_bytes().splitlines(keepends=True)
with open_service(Settings(data_dir=d / "data"), train=False) as service:
    t0 = time.perf_counter()
    service.registry.get("default").import_lines(lines, learn=False)
    print(time.perf_counter() - t0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def import_now(lines: list[bytes], data_dir: Path) -> float:
    with open_service(Settings(data_dir=data_dir), train=False) as service:
        loop = service.registry.get("default")
        t0 = time.perf_counter()
        summary = loop.import_lines(lines, learn=False)
        elapsed = time.perf_counter() - t0
        assert summary.events == len(lines), summary
        loop.trainer.drain(now=1e18)  # joined: what an evaluation reads
    return elapsed


def check_only(lines: list[bytes]) -> float:
    """The import's first pass alone: every line checked and made a decision, held."""
    reader = dsjson.LineReader("default", IMPORTED)
    held = []
    t0 = time.perf_counter()
    for text in lines:
        obj, known = reader.loads(text)
        held.append(reader.parse(obj, known, FeatureLimits(logcheck.CODE, 10_000, 16_384)))
    return time.perf_counter() - t0


def evaluation(data_dir: Path) -> tuple[float, dict[str, Any]]:
    request = {"start": 0.0, "end": 1e18, "policies": [{"name": "p", "arguments": POLICY}]}
    t0 = time.perf_counter()
    result = run_evaluation(str(data_dir / "banditloop.db"), "default", request, POLICY)
    return time.perf_counter() - t0, result


def raw_pass(args: str, lines: list[bytes]) -> float:
    """VW alone: parse and learn every line once (``vw --dsjson -d FILE`` in Python)."""
    ws = vowpalwabbit.Workspace(f"{args} --dsjson --quiet")
    t0 = time.perf_counter()
    for text in lines:
        ex = ws.parse(text.decode())
        ws.learn(ex)
        ws.finish_example(ex)
    elapsed = time.perf_counter() - t0
    ws.finish()
    return elapsed


def profiled(fn: Any, *args: Any) -> Any:
    prof = cProfile.Profile()
    out = prof.runcall(fn, *args)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="obp's obd/<random|bts>/men folder")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--baseline-src", type=Path, help="an older checkout's src directory")
    opts = ap.parse_args()
    lines = obd_lines(opts.folder, opts.events)
    n = len(lines)
    run = profiled if opts.profile else (lambda fn, *a: fn(*a))
    with tempfile.TemporaryDirectory() as tmp:
        if opts.baseline_src:
            before = import_old_checkout(opts.baseline_src, lines, Path(tmp) / "before")
        else:
            before = import_before(lines, Path(tmp) / "before")
        now = run(import_now, lines, Path(tmp) / "now")
        checking = check_only(lines)
        evaluated, result = run(evaluation, Path(tmp) / "now")
    passes = {args: raw_pass(args, lines) for args in (REWARD_MODEL, POLICY)}
    raw = sum(passes.values())
    print(f"events: {n}")
    print(f"import before: {before:.2f} s, {n / before:.0f} events/s")
    print(f"import now:    {now:.2f} s, {n / now:.0f} events/s  ({before / now:.1f}x faster)")
    print(f"  its first pass alone (check every line, hold the decisions): {checking:.2f} s")
    for args, t in passes.items():
        print(f"raw VW pass {args!r}: {t:.2f} s")
    print(f"evaluation:    {evaluated:.2f} s = {evaluated / raw:.2f}x the raw VW passes it needs")
    print(f"evaluated events: {result['events']}")


if __name__ == "__main__":
    main()
