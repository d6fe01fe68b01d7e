"""The ingestion debugger's shapes: what a refused event looks like when kept, and the API.

A kept refusal holds a *preview* of what was sent: compact JSON cut to
`PREVIEW_CHARS`, with every credential taken out first (a `writeKey` at any depth, any
casing, and anything in our key format `tlk_` + base62), so a key can never reach the
debugger, even cut in half by the truncation.

The query schemas RAISE on unknown arguments, as the read API's do (a misspelt filter
would otherwise answer the unfiltered list). Cursors are opaque: URL-safe base64 of
`["rejections", id]` (schemas/cursors.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from schemas.cursors import CursorArgument, LastId, decode_cursor, encode_cursor
from schemas.fields import Instant, limit_field
from schemas.segment import SUPPORTED_TYPES

PREVIEW_CHARS = 2000
MESSAGE_CHARS = 1000
MESSAGE_ID_CHARS = 255
SOURCES = ("http", "import")
REDACTED = "[redacted]"

# Our key format (store/apikeys.py: "tlk_" + 32 base62). Shorter runs are redacted too:
# a key cut by a client, or pasted with a typo, is still most of a secret.
_OUR_KEY = re.compile(r"tlk_[0-9A-Za-z]{8,}")
# A writeKey in text that is not JSON we could decode (a request refused as invalid_json).
_WRITE_KEY_TEXT = re.compile(r'("write_?key"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\s]+)', re.IGNORECASE)
_CODE = re.compile(r"[a-z_]{1,64}")


def _is_write_key(name: str) -> bool:
    return name.lower().replace("_", "") == "writekey"


def redact(value: Any) -> Any:
    """The decoded value without credentials: writeKey fields dropped, our keys masked."""
    if isinstance(value, str):
        return _OUR_KEY.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            _OUR_KEY.sub(REDACTED, str(key)): redact(child)
            for key, child in value.items()
            if not _is_write_key(str(key))
        }
    if isinstance(value, list):
        return [redact(child) for child in value]
    return value


def redact_text(text: str) -> str:
    """Raw text without credentials (for bodies that are not valid JSON)."""
    return _OUR_KEY.sub(REDACTED, _WRITE_KEY_TEXT.sub(lambda m: m.group(1) + f'"{REDACTED}"', text))


def preview_of(value: Any) -> str:
    """What the debugger shows of a decoded event: key-free compact JSON, truncated."""
    try:
        text = json.dumps(redact(value), separators=(",", ":"), ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):
        text = redact_text(repr(value)[: PREVIEW_CHARS * 4])
    return _cut(text)


def preview_of_text(text: str) -> str:
    """What the debugger shows of undecodable text (a bad JSON line or body)."""
    return _cut(redact_text(text[: PREVIEW_CHARS * 4]))


def _cut(text: str) -> str:
    text = text.replace("\x00", "\ufffd")  # Postgres text cannot hold NUL
    text = re.sub("[\ud800-\udfff]", "\ufffd", text)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def message_id_of(item: Any) -> str | None:
    """The item's messageId as sent (any casing, string or number), bounded; None if none."""
    if isinstance(item, dict):
        for key, value in item.items():
            if isinstance(key, str) and key.lower() == "messageid":
                if isinstance(value, bool):
                    return None
                if isinstance(value, str | int | float):
                    return _cut(redact_text(str(value)))[:MESSAGE_ID_CHARS] or None
    return None


def type_label(item: Any) -> str:
    """The item's type when it is one we support, else `other` (bounded cardinality)."""
    kind = item.get("type") if isinstance(item, dict) else None
    return kind if isinstance(kind, str) and kind in SUPPORTED_TYPES else "other"


def bounded_message(message: str) -> str:
    return redact_text(message)[:MESSAGE_CHARS]


# -- cursors -------------------------------------------------------------------------


def encode_rejection_cursor(last_id: int) -> str:
    return encode_cursor("rejections", LastId(last_id))


def decode_rejection_cursor(text: str) -> int:
    """The id a cursor stopped at, or ValueError (a CursorError) for anything we did not make."""
    return decode_cursor(text, "rejections", LastId).position.id


class RejectionCursor(CursorArgument[LastId]):
    """`cursor`: the `next_cursor` of the previous page, loaded as the id it stopped at."""

    def __init__(self, **kwargs: Any):
        super().__init__("rejections", LastId, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:  # type: ignore[override]
        return super()._deserialize(value, attr, data, **kwargs).position.id


# -- request arguments ---------------------------------------------------------------


class RejectionListArgs(Schema):
    """`GET /ingest/rejections`: the team's refused events, newest first."""

    class Meta:
        unknown = RAISE

    code = fields.String(
        validate=validate.Regexp(_CODE, error="Must be an error code such as invalid_event."),
        metadata={"description": "Only refusals with this code (e.g. `invalid_event`)."},
    )
    source = fields.String(
        validate=validate.OneOf(SOURCES),
        metadata={"description": "Only refusals of HTTP ingest (`http`) or of an import (`import`)."},
    )
    since = Instant(metadata={"description": "Only refusals at or after this instant (ISO-8601)."})
    until = Instant(metadata={"description": "Only refusals before this instant (ISO-8601)."})
    limit = limit_field()
    cursor = RejectionCursor()


class IngestSummaryArgs(Schema):
    """`GET /ingest/summary` takes no arguments."""

    class Meta:
        unknown = RAISE


# -- responses -----------------------------------------------------------------------


class RejectionSchema(Schema):
    """One refused event (or whole request), as kept."""

    id = fields.String(required=True, metadata={"description": "This refusal's id."})
    at = Instant(required=True, metadata={"description": "When it was refused."})
    source = fields.String(required=True, metadata={"description": "`http` or `import`."})
    route = fields.String(
        required=True, metadata={"description": "The HTTP route, or for an import the file (`-`: stdin)."}
    )
    line = fields.Integer(allow_none=True, metadata={"description": "An import's line number (from 1)."})
    status = fields.Integer(required=True, metadata={"description": "The HTTP status it got (or would)."})
    code = fields.String(required=True, metadata={"description": "The error code (docs/ingest.md)."})
    message = fields.String(required=True, metadata={"description": "What was wrong and what to fix."})
    message_id = fields.String(allow_none=True, metadata={"description": "The messageId as sent, if any."})
    type = fields.String(allow_none=True, metadata={"description": "The event's type, if one we support."})
    preview = fields.String(
        required=True,
        metadata={"description": f"What was sent, at most {PREVIEW_CHARS} characters, keys removed."},
    )


class RejectionListSchema(Schema):
    data = fields.List(fields.Nested(RejectionSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class IngestTypeCountsSchema(Schema):
    accepted = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    refused = fields.Integer(required=True)
    expired = fields.Integer(required=True)


class IngestWindowSchema(Schema):
    """Counts over a window, whole hours (UTC) from `since`."""

    since = Instant(required=True, metadata={"description": "The window starts at this hour."})
    accepted = fields.Integer(required=True, metadata={"description": "Events stored (new)."})
    duplicates = fields.Integer(required=True, metadata={"description": "Events already stored."})
    refused = fields.Integer(required=True, metadata={"description": "Events (or requests) refused."})
    expired = fields.Integer(
        required=True,
        metadata={
            "description": "Events older than the team's retention when they arrived: answered 200, "
            "not stored (docs/retention.md)."
        },
    )
    by_type = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(IngestTypeCountsSchema),
        required=True,
        metadata={"description": "Per event type (`other`: unknown, `request`: a whole request)."},
    )
    refused_by_code = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Integer()),
        required=True,
        metadata={"description": "Refusals per code, then per type."},
    )


class IngestSummarySchema(Schema):
    last_24h = fields.Nested(IngestWindowSchema, required=True)
    last_7d = fields.Nested(IngestWindowSchema, required=True)
