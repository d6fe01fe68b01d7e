"""What a key is: its material (`tlk_` + 32 base62 characters), its stored digest and
its displayed prefix, and its status at an instant (SPEC §5).

A key has 190 random bits. Only its SHA-256 digest is stored; a key has so much entropy
that a slow hash would add nothing. The displayed `prefix` is the first 12 characters;
the 24 characters after it still carry 142 random bits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from datetime import datetime

from store.models import ApiKey

KEY_PREFIX = "tlk_"
SECRET_LENGTH = 32
DISPLAY_PREFIX_LENGTH = 12  # "tlk_" + 8 characters: enough to tell keys apart
_ALPHABET = string.ascii_letters + string.digits
# What new_secret makes, and so the only shape worth looking up (app/auth.py refuses any other).
KEY_FORMAT = re.compile(rf"{re.escape(KEY_PREFIX)}[A-Za-z0-9]{{{SECRET_LENGTH}}}")

ACTIVE, EXPIRING, EXPIRED, REVOKED = "active", "expiring", "expired", "revoked"


def new_secret() -> str:
    """A new key's plaintext: shown once, never stored."""
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def key_digest(secret: str) -> str:
    """What is stored of a key, and what a presented key is looked up by."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def key_status(key: ApiKey, now: datetime) -> str:
    """active, expiring (rotated, in its grace period), expired, or revoked."""
    if key.revoked_at is not None and key.revoked_at <= now:
        return REVOKED
    if key.expires_at is not None:
        return EXPIRING if now < key.expires_at else EXPIRED
    return ACTIVE
