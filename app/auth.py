"""Who is calling: the API key from Basic, Bearer or the body's writeKey, and its scope."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from flask import request

from app.errors import ApiError
from app.resources import resources
from store.apikeys import AuthenticatedKey

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="segment-timeline"'}


def key_from_header() -> str | None:
    """The key in `Authorization`: Basic base64(KEY:) as Segment sends it, or Bearer KEY."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            # Some clients leave out the base64 padding; add it back.
            decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(
                401,
                "invalid_key",
                "The Basic credentials are not valid base64 of KEY:.",
                headers=_CHALLENGE,
            ) from None
        user, _, password = decoded.partition(":")
        return user or password or None
    return None


def authenticate(
    scope: str, body_key: str | None = None, *, header_key: str | None = None
) -> AuthenticatedKey:
    """The caller's key, checked for `scope`; raises 401/403 with what to fix.

    `header_key`: what `key_from_header()` returned, when the caller has read it already.
    """
    secret = header_key or key_from_header() or body_key
    if not secret:
        raise ApiError(
            401,
            "missing_key",
            "No API key: send Authorization: Basic base64(KEY:), Bearer KEY, or writeKey.",
            headers=_CHALLENGE,
        )
    key = resources().keys.lookup(secret)
    if key is None or not key.usable_at(datetime.now(UTC)):
        raise ApiError(
            401,
            "invalid_key",
            "The API key is unknown, expired or revoked; copy a current key from your settings.",
            headers=_CHALLENGE,
        )
    if scope not in key.scopes:
        raise ApiError(
            403,
            "missing_scope",
            f"This API key lacks the {scope!r} scope; use a key that has it.",
        )
    return key
