"""banditloop: a self-hosted personalization service speaking Azure Personalizer's API.

As a library: :func:`open_service` opens a store and its loops (a
:class:`Registry`); each :class:`Loop` ranks, takes rewards and activations, and
is administered; every error a caller may see is in the tree of :mod:`errors`.
:class:`Client` and :class:`AsyncClient` talk to a running server (client.py).
The names below are loaded when first used, so that importing one module of the
package (a child process for VW, an evaluation job) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    BadRequest,
    BanditloopError,
    Conflict,
    FeatureError,
    Forbidden,
    InvalidPolicy,
    NotFound,
    NotLeader,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    RecommenderFailure,
    Unauthorized,
    Unavailable,
)

if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .config import Settings
    from .loop import Loop, RankInput
    from .ranking import SlotInput
    from .registry import Registry
    from .service import Service, open_service

__version__ = "0.1.0"

_HOMES = {
    "AsyncClient": "client",
    "Client": "client",
    "Loop": "loop",
    "RankInput": "loop",
    "Registry": "registry",
    "Service": "service",
    "Settings": "config",
    "SlotInput": "ranking",
    "open_service": "service",
}

__all__ = [
    "AsyncClient",
    "BadRequest",
    "BanditloopError",
    "Client",
    "Conflict",
    "FeatureError",
    "Forbidden",
    "InvalidPolicy",
    "Loop",
    "NotFound",
    "NotLeader",
    "Overloaded",
    "PayloadTooLarge",
    "RankInput",
    "RateLimited",
    "RecommenderFailure",
    "Registry",
    "Service",
    "Settings",
    "SlotInput",
    "Unauthorized",
    "Unavailable",
    "open_service",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'banditloop' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
