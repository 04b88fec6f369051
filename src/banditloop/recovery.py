"""Start-up with a damaged model: fall back to an older model, or to an empty one.

The store keeps a loop's last few models. If the newest cannot be loaded
(corrupt or truncated bytes), the older ones *of the same lineage* (same
``born``: no reset, import or policy change in between) are tried, newest
first.  The unusable ones are copied to ``<data_dir>/quarantine/`` and removed
from the store, so that nothing serves or exports them.  The trainer then
resumes from the model it got: the marks of events learned only into the
removed models are forgotten at start-up and those events learned again, so
nothing is skipped and nothing is learned twice.  With no usable model the loop
starts empty and relearns every event still in the log.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .config import Settings
from .policy import Policy
from .store import SqlStore
from .store.base import ModelRecord

log = logging.getLogger(__name__)


def _quarantine(store: SqlStore, data_dir: Path, bad: list[ModelRecord]) -> None:
    folder = data_dir / "quarantine"
    for rec in bad:
        try:
            folder.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", rec.loop)
            (folder / f"{name}-model-{rec.number}.vw").write_bytes(rec.blob)
        except OSError as ex:  # keep going: the copy is for forensics only
            log.error("could not keep a copy of model %d of loop %s: %s", rec.number, rec.loop, ex)
    store.delete_models(bad[0].loop, [rec.number for rec in bad]).result()


def load_policy(
    store: SqlStore, settings: Settings, loop: str, args: str
) -> tuple[Policy, ModelRecord | None]:
    """The loop's policy from its newest usable model, and that model's record."""
    latest = store.latest_model(loop)
    if latest is None:
        return Policy(args), None
    try:
        return Policy(args, latest.blob), latest
    except Exception as ex:
        log.error(
            "loop %s: model %d (%d bytes) cannot be loaded: %s",
            loop,
            latest.number,
            len(latest.blob),
            getattr(ex, "message", ex),
        )
    bad = [latest]
    for rec in store.older_models(loop, latest.number):
        if rec.born != latest.born:
            break  # another lineage: a reset, import or policy change came between
        try:
            policy = Policy(args, rec.blob)
        except Exception as ex:
            log.error("loop %s: model %d cannot be loaded either: %s", loop, rec.number, ex)
            bad.append(rec)
            continue
        _quarantine(store, settings.data_dir, bad)
        log.warning(
            "loop %s: FELL BACK to model %d; the unusable model(s) %s were moved to %s; "
            "events learned since model %d will be learned again",
            loop,
            rec.number,
            [b.number for b in bad],
            settings.data_dir / "quarantine",
            rec.number,
        )
        return policy, rec
    _quarantine(store, settings.data_dir, bad)
    log.warning(
        "loop %s: NO USABLE MODEL; starting with an empty model that relearns every event "
        "in the log; the unusable model(s) %s were moved to %s",
        loop,
        [b.number for b in bad],
        settings.data_dir / "quarantine",
    )
    return Policy(args), None
