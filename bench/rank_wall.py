"""Where a Rank's wall-clock CPU goes: per process, per thread and per system call.

Serves the bench's Rank body (bench/throughput.py) with ``--workers`` workers, saturated by
wrk, and splits what the kernel counts into a Rank's share: user and system CPU per
process role (supervisor, workers, trainer) and per thread (a worker's event loop,
its store writer, the others), context switches (voluntary and not) and system calls
by name. Each target gets two wrk runs of ``--duration`` seconds after a warm-up: a
clean one, counted from /proc (``/proc/PID/task/TID/{stat,status}``), and one under
``perf trace -s`` (system calls per thread; it slows the target, so its rate is not
used). The thread that calls fdatasync/fsync in the traced run is the store writer.

    .venv/bin/python bench/rank_wall.py                    # asgi+vw and banditloop
    .venv/bin/python bench/rank_wall.py --targets asgi+vw,banditloop@/tmp/base/src,banditloop
    # (banditloop@SRC: the code of SRC, a copy of another version's src/, in the same run)

Needs wrk and perf (``apt-get install -y wrk linux-perf``); run as root, or with
``perf_event_paranoid`` low enough for ``perf trace -p``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import Target, Wrk, has_socket, target  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SYNCS = ("fdatasync", "fsync")


@dataclass
class Task:
    """One thread's counters: CPU seconds and context switches."""

    pid: int
    tid: int
    user: float
    system: float
    voluntary: int
    involuntary: int


def _task(pid: int, tid: int) -> Task | None:
    base = Path(f"/proc/{pid}/task/{tid}")
    try:
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        status = (base / "status").read_text()
    except OSError:
        return None
    switches = dict(re.findall(r"^(\w+_ctxt_switches):\s+(\d+)", status, re.M))
    return Task(
        pid,
        tid,
        int(fields[11]) / TICK,
        int(fields[12]) / TICK,
        int(switches["voluntary_ctxt_switches"]),
        int(switches["nonvoluntary_ctxt_switches"]),
    )


def tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for t in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
    return out


def snapshot(pids: list[int]) -> dict[int, Task]:
    tasks: dict[int, Task] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for t in Path(f"/proc/{pid}/task").iterdir():
                task = _task(pid, int(t.name))
                if task is not None:
                    tasks[task.tid] = task
    return tasks


def roles(tgt: Target) -> dict[int, str]:
    """The role of each process of a target."""
    workers = {pid for pid in tree(tgt.proc.pid)[1:] if has_socket(pid)} or {tgt.proc.pid}
    if tgt.name != "banditloop":  # uvicorn --workers: every child but a helper serves
        workers |= set(tree(tgt.proc.pid)[1:])
    out = {}
    for pid in tree(tgt.proc.pid):
        if pid == tgt.proc.pid and pid not in workers:
            out[pid] = "supervisor"
        elif pid in workers:
            out[pid] = "worker"
        else:  # banditloop's trainer: the child without the socket (not a helper process)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            helper = b"resource_tracker" in cmdline or b"semaphore_tracker" in cmdline
            out[pid] = "trainer" if tgt.name == "banditloop" and not helper else "other"
    return out


@dataclass
class Traced:
    """``perf trace -s``'s summary: system calls per thread."""

    calls: dict[int, Counter[str]] = field(default_factory=dict)


def parse_trace(text: str) -> Traced:
    out = Traced()
    tid = None
    for line in text.splitlines():
        head = re.match(r"^\s*\S.*?\((\d+)\), \d+ events", line)
        if head:
            tid = int(head.group(1))
            out.calls[tid] = Counter()
            continue
        row = re.match(r"^\s+(\w+)\s+(\d+)\s+\d+\s", line)
        if row and tid is not None and row.group(1) != "syscall":
            out.calls[tid][row.group(1)] += int(row.group(2))
    return out


@dataclass
class Result:
    name: str
    ranks: int
    rps: float
    load: str
    cpu: dict[tuple[str, str], list[float]]  # (process role, thread role): user, sys, vcs, ivcs
    calls: dict[tuple[str, str], Counter[str]]
    traced_ranks: int


def thread_role(task: Task, proc_role: str, writers: set[int]) -> str:
    if task.tid == task.pid:
        return "main" if proc_role != "worker" else "event loop"
    return "store writer" if task.tid in writers else "others"


@contextlib.contextmanager
def version(src: str) -> Iterator[None]:
    """Targets started inside run the code of ``src`` (a copy of another version's src/)."""
    before = os.environ.get("PYTHONPATH")
    if src:
        os.environ["PYTHONPATH"] = src
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def measure(label: str, opts: argparse.Namespace, wrk: Wrk, tmp: Path) -> Result:
    """One target (``banditloop@/copy/of/src``: that version of banditloop)."""
    name, _, src = label.partition("@")
    data = tmp / f"data-{name}-{uuid.uuid4().hex[:6]}"
    with version(src), target(name, opts.workers, data if name == "banditloop" else None) as tgt:
        wrk.ranks(tgt.url, "warm" + uuid.uuid4().hex[:8], opts.warmup)
        procs = roles(tgt)
        # the traced run first: it tells which thread is the store writer
        trace_out = tmp / f"trace-{name}.txt"
        perf = subprocess.Popen(
            ["perf", "trace", "-s", "-o", str(trace_out), "-p", ",".join(map(str, procs))],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        traced, _ = wrk.ranks(tgt.url, "t" + uuid.uuid4().hex[:8], opts.duration)
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
        trace = parse_trace(trace_out.read_text())
        writers = {t for t, c in trace.calls.items() if any(c[s] for s in SYNCS)}
        owner = {t.tid: t.pid for t in snapshot(list(procs)).values()}
        time.sleep(1)
        load = Path("/proc/loadavg").read_text().split()[:3]
        before = snapshot(list(procs))
        rank, _ = wrk.ranks(tgt.url, "c" + uuid.uuid4().hex[:8], opts.duration)
        after = snapshot(list(procs))
    cpu: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    calls: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for tid, a in after.items():
        b = before.get(tid, Task(a.pid, tid, 0.0, 0.0, 0, 0))
        key = (procs.get(a.pid, "other"), thread_role(a, procs.get(a.pid, "other"), writers))
        row = cpu[key]
        row[0] += a.user - b.user
        row[1] += a.system - b.system
        row[2] += a.voluntary - b.voluntary
        row[3] += a.involuntary - b.involuntary
    for tid, counter in trace.calls.items():
        pid = owner.get(tid)
        proc_role = procs.get(pid, "other") if pid is not None else "other"
        key = (proc_role, thread_role(Task(pid or 0, tid, 0, 0, 0, 0), proc_role, writers))
        calls[key] += counter
    return Result(label, rank.requests, rank.rps, " ".join(load), cpu, calls, traced.requests)


def report(results: list[Result]) -> None:
    base = results[0]
    base_cpu = sum(sum(r[:2]) for r in base.cpu.values()) / base.ranks * 1e6
    base_cs = sum(r[2] + r[3] for r in base.cpu.values()) / base.ranks
    base_sc = sum(sum(c.values()) for c in base.calls.values()) / base.traced_ranks
    for res in results:
        n = res.ranks
        print(f"\n## {res.name}: {n} ranks in the clean run, {res.rps:.0f}/s, load {res.load}")
        print("| process | thread | user µs/Rank | sys µs/Rank | vol. cs/Rank | invol. cs/Rank |")
        print("|---|---|---|---|---|---|")
        tot = [0.0, 0.0, 0.0, 0.0]
        for (p, t), row in sorted(res.cpu.items()):
            if sum(row) == 0:
                continue
            tot = [x + y for x, y in zip(tot, row, strict=True)]
            print(
                f"| {p} | {t} | {row[0] / n * 1e6:.0f} | {row[1] / n * 1e6:.0f} "
                f"| {row[2] / n:.2f} | {row[3] / n:.2f} |"
            )
        cpu = (tot[0] + tot[1]) / n * 1e6
        cs = (tot[2] + tot[3]) / n
        print(
            f"| **all** | | {tot[0] / n * 1e6:.0f} | {tot[1] / n * 1e6:.0f} "
            f"| {tot[2] / n:.2f} | {tot[3] / n:.2f} |"
        )
        print(
            f"CPU {cpu:.0f} µs/Rank ({cpu / base_cpu:.2f}x {base.name}), "
            f"context switches {cs:.2f}/Rank ({cs / max(base_cs, 1e-9):.2f}x)"
        )
        m = res.traced_ranks
        total = sum(sum(c.values()) for c in res.calls.values()) / m
        print(
            f"\nsystem calls per Rank (perf trace -s, {m} ranks traced): {total:.2f} "
            f"({total / max(base_sc, 1e-9):.2f}x {base.name})"
        )
        print("| process | thread | calls/Rank | top calls per Rank |")
        print("|---|---|---|---|")
        for (p, t), c in sorted(res.calls.items()):
            top = ", ".join(f"{k} {v / m:.2f}" for k, v in c.most_common(8))
            print(f"| {p} | {t} | {sum(c.values()) / m:.2f} | {top} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="asgi+vw,banditloop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rank-wall-") as tmpdir:
        tmp = Path(tmpdir)
        wrk = Wrk(tmp, opts)
        results = [measure(n, opts, wrk, tmp) for n in opts.targets.split(",")]
    report(results)


if __name__ == "__main__":
    main()
