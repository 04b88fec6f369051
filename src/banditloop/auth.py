"""API keys: client keys may Rank, Reward and Activate; admin keys may do everything.

Keys are kept only as SHA-256 hashes and compared in constant time against
every known hash, so neither timing nor a leaked database gives a key away.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from .errors import Forbidden, Unauthorized

CLIENT, ADMIN = "client", "admin"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _matches(digest: str, hashes: Iterable[str]) -> bool:
    found = False
    for h in hashes:
        found |= hmac.compare_digest(digest, h)
    return found


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from ``Ocp-Apim-Subscription-Key`` or ``Authorization: Bearer`` (the first
    of each header, as Starlette reads them) of raw ASGI headers."""
    key = auth = None
    for name, value in headers:
        if name == b"ocp-apim-subscription-key" and key is None:
            key = value.decode("latin-1")
        elif name == b"authorization" and auth is None:
            auth = value.decode("latin-1")
    if key:
        return key
    scheme, _, token = (auth or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def role_of(key: str | None, *keyrings: Mapping[str, list[str]]) -> str | None:
    """The highest role the key has in any of the keyrings (role -> hashes), or None."""
    if not key:
        return None
    digest = hash_key(key)
    role = None
    for ring in keyrings:
        if _matches(digest, ring.get(ADMIN, ())):
            return ADMIN
        if _matches(digest, ring.get(CLIENT, ())):
            role = CLIENT
    return role


def authorize(key: str | None, needed: str, *keyrings: Mapping[str, list[str]]) -> None:
    """Raise 401/403 unless the key grants ``needed``; open when no keyring has a key."""
    if not any(ring.get(CLIENT) or ring.get(ADMIN) for ring in keyrings):
        return
    role = role_of(key, *keyrings)
    if role is None:
        raise Unauthorized(
            "Access denied due to missing or invalid subscription key. Send a valid key in "
            "the Ocp-Apim-Subscription-Key header."
        )
    if needed == ADMIN and role != ADMIN:
        raise Forbidden("This key may call Rank, Reward and Activate only.")


def keyring(client: Iterable[str] = (), admin: Iterable[str] = ()) -> dict[str, list[str]]:
    return {CLIENT: [hash_key(k) for k in client], ADMIN: [hash_key(k) for k in admin]}
