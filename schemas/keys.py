"""The key management API's request and response shapes (SPEC §5).

Requests RAISE on unknown fields, on purpose: a misspelt `grace_secs` silently taking
the 24-hour default, or `scope` instead of `scopes`, is a mistake the admin should see.
Types are strict: `"3600"` or `true` is not a number of seconds, `"read"` is not a list.

Responses never carry a secret except `ApiKeyCreatedSchema.key`, which only the create
and rotate answers use.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from schemas.fields import utc_iso

SCOPES = ("ingest", "read", "admin")
STATUSES = ("active", "expiring", "expired", "revoked")
AUDIT_ACTIONS = ("create", "rotate", "revoke")
MAX_NAME_LENGTH = 200
DEFAULT_GRACE_SECONDS = 24 * 3600
MAX_GRACE_SECONDS = 30 * 24 * 3600


# Bidirectional embeddings, overrides, isolates and marks: in a key list they can make
# "Segment prod" display as another name (the "Trojan Source" trick, CVE-2021-42574).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def name_problem(value: str) -> str | None:
    """What is wrong with a key or team name, or None: shared by the API and the CLI."""
    if not value.strip():
        return "Must not be blank."
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return "Must not contain control characters (such as newlines, tabs or NUL)."
    if any(char in BIDI_CONTROLS for char in value):
        return "Must not contain bidirectional override characters (U+202A-U+202E, U+2066-U+2069, ...)."
    return None


def _printable_name(value: str) -> None:
    problem = name_problem(value)
    if problem is not None:
        raise ValidationError(problem)


class UtcDateTime(fields.DateTime):
    """An instant as ISO 8601 in UTC with a `Z`, like the rest of the API."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else utc_iso(value)


class Id(fields.String):
    """A database id, shown as a string like every id of the API."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)


class ApiKeyCreateRequestSchema(Schema):
    """Body of `POST /api/v1/keys`."""

    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=MAX_NAME_LENGTH), _printable_name],
        metadata={"description": "What the key is for, e.g. 'Segment production'.", "example": "Segment"},
    )
    scopes = fields.List(
        fields.String(validate=validate.OneOf(SCOPES)),
        required=True,
        validate=validate.Length(min=1, max=len(SCOPES) * 4),
        metadata={"description": "Any of ingest, read, admin.", "example": ["ingest"]},
    )


class ApiKeyRotateRequestSchema(Schema):
    """Body of `POST /api/v1/keys/{id}/rotate`; an empty body takes the defaults."""

    class Meta:
        unknown = RAISE

    grace_seconds = fields.Integer(
        strict=True,
        load_default=DEFAULT_GRACE_SECONDS,
        validate=validate.Range(min=0, max=MAX_GRACE_SECONDS),
        metadata={
            "description": "How long the old key keeps working: 0 cuts it at once; at most 30 days.",
            "example": DEFAULT_GRACE_SECONDS,
        },
    )


class ApiKeySchema(Schema):
    """A key as listed: never its secret."""

    id = Id(required=True)
    name = fields.String(required=True)
    prefix = fields.String(
        required=True, metadata={"description": "The key's first characters, to tell keys apart."}
    )
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    created_at = UtcDateTime(required=True)
    last_used_at = UtcDateTime(
        allow_none=True, required=True, metadata={"description": "Accurate to about a minute."}
    )
    expires_at = UtcDateTime(
        allow_none=True, required=True, metadata={"description": "End of the grace period of a rotated key."}
    )
    revoked_at = UtcDateTime(allow_none=True, required=True)
    rotated_from_id = Id(allow_none=True, required=True)


class ApiKeyCreatedSchema(ApiKeySchema):
    """A key just made, with its secret: shown this once and never again."""

    key = fields.String(
        required=True, metadata={"description": "The secret. Store it now: it cannot be shown again."}
    )


class ApiKeyRotatedSchema(ApiKeyCreatedSchema):
    """The replacement key (with its secret) and the old key, now expiring."""

    rotated_from = fields.Nested(ApiKeySchema, required=True)


class ApiKeyListSchema(Schema):
    data = fields.List(fields.Nested(ApiKeySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class KeyAuditEntrySchema(Schema):
    """One create, rotate or revoke: who, when, what."""

    id = Id(required=True)
    at = UtcDateTime(required=True)
    action = fields.String(required=True, validate=validate.OneOf(AUDIT_ACTIONS))
    key_id = Id(required=True)
    actor = fields.String(
        required=True,
        validate=validate.OneOf(("key", "cli")),
        metadata={"description": "'key' for a change made through the API, 'cli' for the CLI."},
    )
    actor_key_id = Id(allow_none=True, required=True, metadata={"description": "The admin key used."})
    detail = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={"description": "name, scopes and prefix; for a rotation the new key and the grace."},
    )


class KeyAuditListSchema(Schema):
    data = fields.List(fields.Nested(KeyAuditEntrySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
