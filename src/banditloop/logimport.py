"""Importing DSJSON logs (Azure Personalizer's log mirror, or our own export) into a loop.

Two passes, so that a bad upload stores nothing and a large one costs flat memory:
first every line is checked as strictly as API input (dsjson.parse_object, logcheck.py)
and the decisions are held (past ``HELD`` batches, in a temporary file); only if no
line was refused are they
stored, ``BATCH`` per writer job, each job awaited before the next is queued.  So Ranks
and the trainer's writes go on between two batches: an import never stalls the trainer
nor fills the write queue.  Event IDs already logged are skipped and counted: importing
a file twice adds nothing.  Multi-slot (CCB) lines are not imported; they are counted.
"""

from __future__ import annotations

import gzip
import itertools
import math
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from . import dsjson, logcheck
from .errors import BadRequest
from .featurize import FeatureLimits
from .join import IMPORTED
from .store import SqlStore
from .store.base import Decision

BATCH = 2000  # decisions per writer job: a few milliseconds of the writer's time
HELD = 10  # batches kept in memory; an import's further ones are spooled to disk
MAX_REFUSED = 100  # refused lines named in the error (all are counted)
GZIP_MAGIC = b"\x1f\x8b"

Rewards = list[tuple[str | None, float]]


@dataclass
class ImportSummary:
    """What an import did: lines read (not blank), decisions stored, duplicates skipped
    (event ID already logged) and multi-slot lines left out."""

    lines: int = 0
    events: int = 0
    duplicates: int = 0
    multislot: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "events": self.events,
            "duplicates": self.duplicates,
            "multiSlotLines": self.multislot,
        }


def lines_of(fh: IO[bytes]) -> Iterator[bytes]:
    """The lines of a seekable DSJSON file, gzip-compressed (``.json.gz``) or not."""
    head = fh.read(2)
    fh.seek(0)
    return iter(gzip.GzipFile(fileobj=fh, mode="rb") if head == GZIP_MAGIC else fh)


def import_lines(
    store: SqlStore,
    loop: str,
    lines: Iterable[bytes],
    learn: bool = True,
    max_features: int = 10_000,
    max_string: int = 16_384,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Check every line, then store the decisions (learned by the trainer unless
    ``learn`` is False); raises BadRequest naming the refused lines, nothing stored."""
    summary = ImportSummary()
    refused: list[tuple[int, str]] = []
    n_refused = 0
    reader = dsjson.LineReader(loop, "Online" if learn else IMPORTED)  # see its catalogues
    with tempfile.TemporaryFile() as spool:
        held: list[list[tuple[Decision, Rewards]]] = []  # in memory up to HELD batches
        batch: list[tuple[Decision, Rewards]] = []
        for n, text in enumerate(lines, 1):
            if not text or text.isspace():  # not strip(): it would copy the line
                continue
            summary.lines += 1
            try:
                obj, known = reader.loads(text)
                if dsjson.is_multislot(obj):
                    summary.multislot += 1
                    continue
                limits = FeatureLimits(logcheck.CODE, max_features, max_string)
                item = reader.parse(obj, known, limits)
            except BadRequest as ex:
                n_refused += 1
                if len(refused) < MAX_REFUSED:
                    refused.append((n, ex.message))
                continue
            if n_refused:
                continue  # nothing will be stored: only look for more refused lines
            batch.append((item.decision, item.rewards))
            if len(batch) == BATCH:
                held.append(batch)
                batch = []
                if len(held) > HELD:  # a large import: the rest waits on disk
                    pickle.dump(held.pop(0), spool, pickle.HIGHEST_PROTOCOL)
        if n_refused:
            raise _refusal(refused, n_refused)
        spool.seek(0)
        for stored in itertools.chain(_batches(spool), held, [batch]):
            added = store.import_decisions(stored).result()
            summary.events += added
            summary.duplicates += len(stored) - added
            if progress:
                progress(summary)
    return summary


def _batches(spool: IO[bytes]) -> Iterator[list[tuple[Decision, Rewards]]]:
    while True:
        try:
            yield pickle.load(spool)  # our own spool, written above
        except EOFError:
            return


def _refusal(refused: list[tuple[int, str]], count: int) -> BadRequest:
    n, first = refused[0]
    more = f" ({count - 1} more lines refused)" if count > 1 else ""
    return BadRequest(
        f"line {n}: {first}{more}; nothing was imported.",
        logcheck.CODE,
        details=[
            {"code": logcheck.CODE, "message": message, "target": f"line {line}"}
            for line, message in refused
        ],
    )


def log_files(paths: Iterable[Path]) -> list[Path]:
    """The DSJSON files among ``paths`` and under its directories (``.json``,
    ``.json.gz``, recursively), in the order of their first line's timestamp."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and _is_log(p.name))
        else:
            found.add(path)
    return sorted(found, key=lambda p: (_first_timestamp(p), str(p)))


def _is_log(name: str) -> bool:
    return name.endswith((".json", ".json.gz"))


def _first_timestamp(path: Path) -> float:
    """The first line's Timestamp; a file without one sorts last (and is refused)."""
    try:
        with path.open("rb") as fh:
            for text in lines_of(fh):
                if text.strip():
                    return dsjson.parse_timestamp(orjson.loads(text)["Timestamp"])
    except (OSError, EOFError, ValueError, TypeError, KeyError, OverflowError):
        pass  # gzip.BadGzipFile and orjson.JSONDecodeError are OSError and ValueError
    return math.inf
