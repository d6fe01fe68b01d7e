"""The Segment Spec: what an event must look like to be stored.

`prepare_event` is the one entry point: it takes one decoded JSON value and returns a
`PreparedEvent` (the columns we store plus the raw event) or an `EventRejected` error
that says what to fix. The raw event is what was received, with three changes: the
Spec's top-level keys in their canonical casing, ids that came as numbers written as
strings, and no `writeKey` (a credential is not event data). A derived messageId is
added when none was sent. What each type must hold is declared once, as marshmallow
schemas (`schemas/event_schemas.py`); the fast path (`schemas/quick_load.py`) answers
for the plainly valid events and leaves the others to them; trait keys and their bounds
are `schemas/trait_keys.py`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError

from schemas.event_schemas import SCHEMAS, json_type, present
from schemas.problems import flatten_errors
from schemas.quick_load import quick_load
from schemas.timestamps import TimestampError, parse_timestamp

SUPPORTED_TYPES = ("identify", "track", "page", "screen", "group", "alias", "delete")

MAX_EVENT_BYTES = 32 * 1024
MAX_DEPTH = 64

# Segment warns that top-level keys arrive in any casing (`messageid`, `MessageId`).
CANONICAL_KEYS = {
    key.lower(): key
    for key in (
        "type",
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "context",
        "integrations",
        "properties",
        "traits",
        "event",
        "name",
        "category",
        "groupId",
        "previousId",
        "channel",
        "version",
        "writeKey",
        "options",
    )
}
_CANONICAL_SPELLINGS = frozenset(CANONICAL_KEYS.values())
# Keys left out of a derived messageId's content (sentAt is added back when the event has
# no time of its own: `derive_message_id`).
_VOLATILE_KEYS = frozenset(("sentAt", "receivedAt", "writeKey", "messageId"))
# Ids that may come as numbers; stored as strings, in the columns and in the raw event.
_ID_KEYS = ("messageId", "userId", "anonymousId", "groupId", "previousId")


class EventRejected(Exception):
    """An event we will not store, with the status and message to answer."""

    def __init__(self, status: int, code: str, message: str, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or {}


@dataclass(frozen=True)
class PreparedEvent:
    """A valid event: the columns we index plus the raw event as received."""

    message_id: str
    type: str
    event_name: str | None
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    event_time: datetime
    raw: dict[str, Any] = field(repr=False)

    @property
    def tiebreak(self) -> int:
        """A stable 63-bit order for events with the same event time."""
        digest = hashlib.blake2b(f"{self.type}\x1f{self.message_id}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)


def canonical_keys(event: dict[str, Any]) -> dict[str, Any]:
    """Re-case the Spec's top-level keys; unknown keys stay as sent.

    Where two casings of one key are sent, the canonical spelling wins.
    """
    # Most events use only canonical spellings and unknown keys: one set difference in C,
    # then a look at the few keys outside the canonical spellings.
    if all(key.lower() not in CANONICAL_KEYS for key in event.keys() - _CANONICAL_SPELLINGS):
        return event
    result: dict[str, Any] = {}
    for key, value in event.items():
        canonical = CANONICAL_KEYS.get(key.lower(), key)
        if canonical in result and key != canonical:
            continue
        result[canonical] = value
    return result


def derive_message_id(
    event: dict[str, Any], sent_at: Any = None, occurrence: int = 0, *, archived: bool = False
) -> str:
    """A messageId for an event sent without one (docs/ingest.md, "Derived messageIds").

    It must tell separate sends apart (Segment gives each such call a fresh id, and a
    real event is never dropped as a duplicate) while an unchanged re-send of the same
    request dedupes. What tells two sends apart, in order: the event's own time
    (`timestamp` or `originalTimestamp`: the client's clock at the call), else the
    request's `sentAt` (the event's, else the batch's: the client's clock at the send,
    the same in an unchanged re-send); with neither, nothing can, and the id is fresh.
    `occurrence` counts identical copies earlier in the same request (three identical
    clicks in one batch are three clicks). Left out of the content: `receivedAt`,
    `writeKey` and an empty or null messageId. An `archived` event (a line of an import,
    read again on every run of it) is one stored record, not a send: its id comes from its
    content alone, so rerunning an import dedupes it (docs/import.md).
    """
    content = {k: v for k, v in event.items() if k not in _VOLATILE_KEYS}
    if not any(present(content.get(key)) for key in ("timestamp", "originalTimestamp")):
        sent_at = event.get("sentAt") if present(event.get("sentAt")) else sent_at
        if not present(sent_at) and not archived:
            return "derived-" + uuid.uuid4().hex
        if present(sent_at):
            content["sentAt"] = sent_at
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if occurrence:
        encoded += f"\x1f{occurrence}"
    return "derived-" + hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def event_time(event: dict[str, Any], loaded: dict[str, Any], received_at: datetime) -> datetime:
    """timestamp, else originalTimestamp, else receivedAt, else our receive time.

    `timestamp` is validated by the schema; the fallbacks are best effort: an unreadable
    originalTimestamp or receivedAt is skipped, never a reason to drop the event.
    """
    if loaded.get("timestamp") is not None:
        return loaded["timestamp"]  # type: ignore[no-any-return]
    for key in ("originalTimestamp", "receivedAt"):
        value = event.get(key)
        if value is not None:
            try:
                return parse_timestamp(value)
            except TimestampError:
                continue
    return received_at


def summarize(kind: str, errors: dict[str, list[str]]) -> str:
    """One sentence for Segment's debugger: which fields are wrong and why."""
    parts = [f"{name}: {' '.join(messages)}" for name, messages in errors.items()]
    return f"Invalid {kind} event. " + "; ".join(parts)


def prepare_event(
    event: Any,
    received_at: datetime,
    *,
    forced_type: str | None = None,
    sent_at: Any = None,
    occurrence: int = 0,
    archived: bool = False,
) -> PreparedEvent:
    """Validate one decoded event against the Spec, or raise EventRejected.

    `sent_at` (the batch's `sentAt`), `occurrence` and `archived` only matter to an event
    without a messageId (`derive_message_id`).
    """
    if not isinstance(event, dict):
        raise EventRejected(400, "invalid_event", f"An event must be a JSON object, not {json_type(event)}.")
    event = canonical_keys(event)
    if forced_type is not None:
        event["type"] = _route_type(forced_type, event.get("type"))
    kind = event.get("type")
    if kind is None:
        raise EventRejected(
            400,
            "invalid_event",
            "type is required: one of " + ", ".join(SUPPORTED_TYPES) + ".",
            {"type": ["Missing data for required field."]},
        )
    if not isinstance(kind, str):
        raise EventRejected(
            400,
            "invalid_event",
            f"type must be a string, not {json_type(kind)}.",
            {"type": ["Must be a string."]},
        )
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise EventRejected(
            501,
            "unsupported_type",
            f"type {kind[:50]!r} is not supported; send one of " + ", ".join(SUPPORTED_TYPES) + ".",
            {"type": [f"Unsupported type {kind[:50]!r}."]},
        )
    loaded = quick_load(kind, event)
    if loaded is None:  # not the common shape: the schema decides, and says what is wrong
        loaded = _schema_load(kind, schema, event)
        for key in _ID_KEYS:  # (the fast path takes string ids only)
            if key in loaded and isinstance(event.get(key), int | float):
                event[key] = loaded[key]  # validated by the schema: numbers stored as strings
    event.pop("writeKey", None)
    message_id = loaded.get("messageId")
    if not message_id:
        message_id = derive_message_id(event, sent_at, occurrence, archived=archived)
        event["messageId"] = message_id
    return PreparedEvent(
        message_id=message_id,
        type=kind,
        event_name=_event_name(kind, loaded),
        user_id=_id_or_none(loaded.get("userId")),
        anonymous_id=_id_or_none(loaded.get("anonymousId")),
        # Only the types whose schema validated them: a groupId on a track is unknown data.
        group_id=_id_or_none(loaded.get("groupId")) if kind == "group" else None,
        previous_id=_id_or_none(loaded.get("previousId")) if kind == "alias" else None,
        event_time=event_time(event, loaded, received_at),
        raw=event,
    )


def _route_type(route_type: str, sent: Any) -> str:
    """The type of an event posted to a Tracking API route of `route_type`.

    A body without a type takes the route's. A body of another type is refused rather
    than rewritten: a misrouted identify stored as a track would be a second event once
    the client, corrected, sends it again to the right route (same messageId, other
    type), and the traits it carried would be lost (issue 22).
    """
    if sent is None or sent == route_type:
        return route_type
    if sent == "delete":  # no Tracking API route of its own
        where = "send it to /v1/segment"
    elif isinstance(sent, str) and sent in SUPPORTED_TYPES:
        where = f"send it to /v1/{sent} (or /v1/segment, which takes any type)"
    else:
        where = f"leave type out or make it {route_type!r}"
    message = (
        f"This route takes {route_type} events and this event's type is "
        f"{(sent[:50] if isinstance(sent, str) else json_type(sent))!r}: {where}."
    )
    raise EventRejected(400, "invalid_event", message, {"type": [message]})


def _schema_load(kind: str, schema: Schema, event: dict[str, Any]) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(event)
    except ValidationError as error:
        flat = flatten_errors(error.messages, root="_schema")
        raise EventRejected(400, "invalid_event", summarize(kind, flat), flat) from None
    return loaded


def _event_name(kind: str, loaded: dict[str, Any]) -> str | None:
    if kind == "track":
        return str(loaded["event"])
    if kind in ("page", "screen"):
        name = loaded.get("name")
        if name is None and isinstance(loaded.get("properties"), dict):
            candidate = loaded["properties"].get("name")
            name = candidate if isinstance(candidate, str) else None
        return name
    return None


def _id_or_none(value: Any) -> str | None:
    return value if value not in (None, "") else None
