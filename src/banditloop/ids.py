"""Identifiers that end up in URL paths: event IDs, and values put into a path segment.

An event ID is part of ``/events/{eventId}/reward`` and ``/logs/events/{eventId}``:
``.`` and ``..`` would be collapsed by HTTP clients and proxies into another path
(``DELETE /logs/events/..`` became ``DELETE /logs``), and a ``/`` makes an ID that
no client can reward or delete. Rank refuses them; everything that builds a URL
encodes what it puts in (``path_segment``).
"""

from __future__ import annotations

from urllib.parse import quote

from .errors import BadRequest
from .featurize import check_text

MAX_EVENT_ID = 256
DOT_SEGMENTS = (".", "..")


def check_event_id(event_id: str, code: str = "BadRequest") -> None:
    check_text(event_id, code)
    if not event_id:
        raise BadRequest("EventId should be non-empty or null.", code)
    if len(event_id) > MAX_EVENT_ID:
        raise BadRequest(f"EventId must be at most {MAX_EVENT_ID} characters.", code)
    if event_id in DOT_SEGMENTS or "/" in event_id:
        raise BadRequest("EventId may not be '.' or '..' nor contain '/'.", code)


def path_segment(value: str, what: str = "An ID") -> str:
    """``value`` as one URL path segment: encoded, and never a dot segment."""
    if not value or value in DOT_SEGMENTS or "/" in value:
        raise BadRequest(f"{what} may not be empty, '.' or '..' nor contain '/'.")
    return quote(value, safe="")
