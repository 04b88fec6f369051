"""What the checks of docs/security.md cost, as ratios to a baseline in the same run.

    .venv/bin/python bench/security_costs.py [--events 5000] [--repeat 20]

* saving a model: the digest stamp / VW's save of the model to a file;
* loading a model: the Python checks before VW (header, digest, policy options) /
  loading it into VW;
* importing a model: vwcheck with the model (parent checks, child loads and writes it
  back) / vwcheck of the policy alone (the child the server always started);
* importing logs: checking and parsing a DSJSON line / orjson.loads of it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import orjson

from banditloop import dsjson, modelfile, vwcheck
from banditloop.join import labelled
from banditloop.policy import Policy, check_model, with_epsilon
from banditloop.ranking import plan

ARGS = with_epsilon("--cb_explore_adf --synthcover -q ::", 0.0)


def best(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def trained(events: int) -> Policy:
    policy = Policy(ARGS)
    lines = []
    for i in range(events):
        p = plan([{"user": f"u{i}", "hour": i % 24}], [(a, [{"k": a}]) for a in "abcdef"], None)
        lines.append(labelled(p.example, i % 6, 1 / 6, -float(i % 3 == 0)))
    policy.learn(lines)
    return policy


def line(i: int) -> bytes:
    multi = [
        {"_tag": a, "i": {"constant": 1, "id": a}, "j": [{"k": a, "n": 1.5}]} for a in "abcdef"
    ]
    obj = {
        "_label_cost": -1.0,
        "_label_probability": 0.4,
        "_label_Action": 2,
        "_labelIndex": 1,
        "o": [{"v": 1.0, "EventId": f"e{i}", "ActionTaken": False}],
        "Timestamp": "2024-01-02T03:04:05.0000000Z",
        "Version": "1",
        "EventId": f"e{i}",
        "a": [2, 1, 3, 4, 5, 6],
        "c": {"FromUrl": [{"user": f"u{i}", "device": "mobile", "hour": 3}], "_multi": multi},
        "p": [0.4, 0.12, 0.12, 0.12, 0.12, 0.12],
        "VWState": {"m": "7"},
    }
    return orjson.dumps(obj)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=20)
    opts = ap.parse_args()
    policy = trained(opts.events)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.vw")

        def raw_save() -> bytes:
            with policy.lock:
                policy._ws.save(path)
            with open(path, "rb") as fh:
                return fh.read()

        blob = policy.save()
        print(f"model: {len(blob)} bytes after {opts.events} events ({ARGS})")
        t_raw = best(raw_save, opts.repeat)
        t_stamp = best(lambda: modelfile.stamp(blob), opts.repeat)
        print(f"save:  stamp {t_stamp * 1e3:.3f} ms / VW's save {t_raw * 1e3:.3f} ms "
              f"= {t_stamp / t_raw:.2f}")  # fmt: skip
        check_model(ARGS, blob)  # the policy's kept options are cached after the first
        t_check = best(lambda: check_model(ARGS, blob), opts.repeat)
        t_load = best(lambda: Policy(ARGS, blob).close(), opts.repeat)
        print(f"load:  Python checks {t_check * 1e3:.2f} ms / Policy(args, model) "
              f"{t_load * 1e3:.2f} ms = {t_check / t_load:.2f}")  # fmt: skip
        runs = max(3, opts.repeat // 4)
        t_model = best(lambda: vwcheck.check(ARGS, blob), runs)
        t_policy = best(lambda: vwcheck.check(ARGS), runs)
        print(f"import: vwcheck with the model {t_model * 1e3:.0f} ms / policy alone "
              f"{t_policy * 1e3:.0f} ms = {t_model / t_policy:.2f}")  # fmt: skip
    lines = [line(i) for i in range(2000)]
    t_json = best(lambda: [orjson.loads(x) for x in lines], opts.repeat) / len(lines)
    t_parse = best(lambda: [dsjson.parse_line(x, "default") for x in lines], opts.repeat)
    t_parse /= len(lines)
    print(f"logs:  check + parse {t_parse * 1e6:.1f} µs/line / orjson.loads "
          f"{t_json * 1e6:.1f} µs/line = {t_parse / t_json:.1f}")  # fmt: skip
    assert modelfile.verify(blob).id.startswith(modelfile.STAMP)


if __name__ == "__main__":
    main()
