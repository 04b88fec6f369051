"""Seeded sampling from a pmf, as Microsoft's rlclientlib does it.

The seed is MurmurHash3 of the event ID plus MurmurHash3 of the app (loop)
name, and the uniform draw is VW's ``merand48_noadvance``.  So a retried Rank
with the same event ID and the same model picks the same action, and our
choices match what the original service would have drawn for the same pmf.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import mmh3

_A = 0xEECE66D5DEECE66D
_C = 2147483647
_MASK64 = (1 << 64) - 1
_ONE_BITS = 127 << 23


def seed_for(event_id: str, app_id: str = "") -> int:
    """rlclientlib's seed: ``uniform_hash(event_id) + uniform_hash(app_id)``."""
    return (mmh3.hash(event_id, 0, signed=False) + mmh3.hash(app_id, 0, signed=False)) & _MASK64


def merand48(seed: int) -> float:
    """VW's ``merand48_noadvance``: one LCG step, 23 bits as a float in [0, 1)."""
    state = (_A * seed + _C) & _MASK64
    bits = ((state >> 25) & 0x7FFFFF) | _ONE_BITS
    return float(struct.unpack("<f", struct.pack("<I", bits))[0]) - 1.0


def normalized(pmf: Sequence[float]) -> list[float]:
    """The pmf scaled to sum to 1 within float precision (negative entries as 0), as
    Azure answers and logs it: VW's own sums to 1 only within its 32-bit floats."""
    clean = [p if p > 0 else 0.0 for p in pmf]
    total = sum(clean)
    return [p / total for p in clean] if total > 0 else clean


def sample_index(pmf: Sequence[float], seed: int) -> int:
    """Index drawn from ``pmf`` (negative entries count as 0) with the given seed."""
    total = sum(p for p in pmf if p > 0)
    if total <= 0:
        raise ValueError("pmf has no positive mass")
    draw = min(total * merand48(seed), total)
    acc = 0.0
    last = 0
    for i, p in enumerate(pmf):
        if p <= 0:
            continue
        acc += p
        last = i
        if acc > draw:
            return i
    return last
