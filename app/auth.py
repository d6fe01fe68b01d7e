"""Who is calling: the API key from Basic, Bearer or the body's writeKey, and its scope.

Any `Authorization` value a client sends gets a 401 at worst, never a 500: a value
that is not our key format (`tlk_` + 32 letters and digits) is refused before any
lookup, so junk neither reaches Postgres nor fills the key cache.

A rotated key, during its grace period, keeps only the `ingest` scope: grace exists
because Segment keeps sending the old key until the customer pastes the new one; it
gives nobody admin or read power (SPEC §5, docs/keys.md). The read and key routes
also pay one request of the key's rate limit here (app/ingest/ratelimit.py).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from flask import request

from app.errors import ApiError
from app.ingest.ratelimit import check_key_rate_limit
from app.resources import resources
from store.apikeys import KEY_FORMAT, AuthenticatedKey, KeyCache

AUTH_CHALLENGE = {"WWW-Authenticate": 'Basic realm="segment-timeline"'}
# Long enough for base64 of "KEY:" with slack; anything longer is not our credentials.
_MAX_CREDENTIALS = 256


def _bad_basic() -> ApiError:
    return ApiError(
        401,
        "invalid_key",
        "The Basic credentials are not valid base64 of KEY:.",
        headers=AUTH_CHALLENGE,
    )


def key_from_header() -> str | None:
    """The key in this request's `Authorization` (see `credentials_in`)."""
    return credentials_in(request.headers.get("Authorization", ""))


def credentials_in(header: str) -> str | None:
    """The key in an `Authorization` value: Basic base64(KEY:) as Segment sends it, or Bearer KEY."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        if len(value) > _MAX_CREDENTIALS or not value.isascii():
            raise _bad_basic()
        try:
            # Some clients leave out the base64 padding; add it back.
            decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise _bad_basic() from None
        user, _, password = decoded.partition(":")
        return user or password or None
    return None


def _refused() -> ApiError:
    return ApiError(
        401,
        "invalid_key",
        "The API key is unknown, expired or revoked; copy a current key from your settings.",
        headers=AUTH_CHALLENGE,
    )


def authenticate(
    scope: str, body_key: str | None = None, *, header_key: str | None = None
) -> AuthenticatedKey:
    """The caller's key, checked for `scope`; raises 401/403 (429 over the key's rate) with what to fix.

    `header_key`: what `key_from_header()` returned, when the caller has read it already.
    """
    key = check_key(resources().keys, header_key or key_from_header() or body_key, scope)
    if scope != "ingest":
        check_key_rate_limit(key.key_id)
    return key


def check_key(keys: KeyCache, secret: str | None, scope: str) -> AuthenticatedKey:
    """The key `secret` names, if usable now and for `scope`; raises 401/403 with what to fix.

    No Flask in it: the ingest lane (app/ingest/lane.py) calls it with its app's key cache.
    """
    key = _usable_key(keys, secret)
    if scope not in key.scopes:
        raise ApiError(
            403,
            "missing_scope",
            f"This API key lacks the {scope!r} scope; use a key that has it.",
        )
    if key.expires_at is not None and scope != "ingest":
        raise ApiError(
            403,
            "key_expiring",
            "This key was rotated: during its grace period it only sends events (ingest). "
            "Use its replacement.",
        )
    return key


_POWERS = {"admin": "administer", "read": "read"}


def check_browser_key(key: AuthenticatedKey, origin: str | None) -> None:
    """A browser's request (it names its `Origin`) may only use an ingest-only key; else a 403.

    A key in a web page is public: anyone can copy it from the page's source. A key that
    can also read or administer would hand them the team's customers, so it is refused
    from a browser even though it has the ingest scope (SPEC §2, docs/keys.md).
    """
    extra = sorted(key.scopes - {"ingest"})
    if origin is not None and extra:
        raise ApiError(
            403,
            "browser_key_not_ingest_only",
            f"This key can also {' and '.join(_POWERS.get(scope, scope) for scope in extra)}, and "
            "a key in a web page is public: use an ingest-only key in browsers (a key whose "
            "only scope is ingest).",
        )


def identify_caller() -> AuthenticatedKey:
    """The caller's usable key whatever its scopes, in a rotation's grace too (`GET /api/v1/me`).

    Only for answering what a key is: a pasted key is tested with it, the old one of a
    rotation included. 401 for no key or one that is unknown, expired or revoked.
    """
    key = _usable_key(resources().keys, key_from_header())
    check_key_rate_limit(key.key_id)
    return key


def _usable_key(keys: KeyCache, secret: str | None) -> AuthenticatedKey:
    if not secret:
        raise ApiError(
            401,
            "missing_key",
            "No API key: send Authorization: Basic base64(KEY:), Bearer KEY, or writeKey.",
            headers=AUTH_CHALLENGE,
        )
    if not KEY_FORMAT.fullmatch(secret):
        raise _refused()
    key = keys.lookup(secret)
    if key is None or not key.usable_at(datetime.now(UTC)):
        raise _refused()
    return key
