"""The Segment Spec: what an event must look like to be stored.

One marshmallow schema per event type, declared once at the boundary. Unknown
top-level keys are INCLUDEd on purpose: Segment adds keys over time (`_metadata`,
`projectId`, `channel`, ...) and we store the event as received.

`prepare_event` is the one entry point: it takes one decoded JSON value and returns a
`PreparedEvent` (the columns we store plus the raw event) or an `EventRejected` error
that says what to fix. The raw event is what was received, with three changes: the
Spec's top-level keys in their canonical casing, ids that came as numbers written as
strings, and no `writeKey` (a credential is not event data). A derived messageId is
added when none was sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validates_schema

from schemas.problems import flatten_errors
from schemas.timestamps import TimestampError, parse_timestamp

SUPPORTED_TYPES = ("identify", "track", "page", "screen", "group", "alias", "delete")

MAX_MESSAGE_ID = 100
MAX_ID = 255
MAX_EVENT_BYTES = 32 * 1024
# Trait names become index keys when folded (a Postgres btree entry holds ~2.7 KB at most):
# a longer name would make the event impossible to fold.
MAX_TRAIT_NAME = 255
# The email and name traits (firstName + lastName make a name too) become the customer's
# indexed email and name columns: bounded so that even four-byte characters fit an entry.
MAX_PROFILE_TRAIT = 255
# Trait keys one event may carry, `traits` and `context.traits` together: the fold writes
# a customer (or group) trait and a `trait_history` row per key, so this bounds what one
# event makes it write. Amplitude's SDKs refuse more than 1,000 user properties a call,
# Mixpanel takes 255 properties an event, Segment's own source schema keeps 300 traits
# by default (docs/ingest.md has the references).
MAX_TRAIT_KEYS = 1_000
PROFILE_TRAITS = frozenset(("email", "name", "firstname", "lastname"))
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


class Identifier(fields.Field[str]):
    """A Segment id: a string, or a number that we store as its string."""

    default_error_messages = {
        "invalid": "Must be a string or a number.",
        "too_long": "Must be at most {max} characters.",
    }

    def __init__(self, max_length: int = MAX_ID, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise self.make_error("invalid")
            text = str(int(value)) if value.is_integer() else repr(value)
        elif isinstance(value, str):
            text = value
        else:
            raise self.make_error("invalid")
        if len(text) > self.max_length:
            raise self.make_error("too_long", max=self.max_length)
        return text


class Timestamp(fields.Field[datetime | None]):
    """A lenient Segment timestamp (see schemas.timestamps); an empty string is no timestamp."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime | None:
        if isinstance(value, str) and not value.strip():
            return None
        try:
            return parse_timestamp(value)
        except TimestampError as error:
            raise ValidationError(f"Not a timestamp: {error}.") from None


class ObjectOrNull(fields.Field[Any]):
    """A JSON object or null; the value is kept as sent."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise ValidationError(f"Must be an object or null, not {json_type(value)}.")
        return value


def check_trait_names(traits: dict[str, Any]) -> None:
    """Raise ValidationError if a trait name is longer than MAX_TRAIT_NAME, or an email or
    name trait (as the fold normalises its key) is a string longer than MAX_PROFILE_TRAIT."""
    for name, value in traits.items():
        if len(name) > MAX_TRAIT_NAME:
            raise ValidationError(
                f"Trait names may be at most {MAX_TRAIT_NAME} characters; {name[:30]!r}... has {len(name)}."
            )
        if type(value) is str and len(value) > MAX_PROFILE_TRAIT and _profile_trait(name):
            raise ValidationError(
                f"The {name[:30]!r} trait may be at most {MAX_PROFILE_TRAIT} characters; it has {len(value)}."
            )


def _context_traits(context: Any) -> Any:
    return context.get("traits") if type(context) is dict else None


def _trait_keys(traits: Any) -> int:
    """How many trait keys `traits` holds (0 unless an object)."""
    return len(traits) if type(traits) is dict else 0


# Trait-key normalisation, the one rule (docs/fold.md, "Traits"): ASCII letters lower-cased,
# ASCII whitespace, `_`, `.` and `-` removed; a key made only of those is kept as it is.
# Written here twice, in Python and as SQL, with nothing left to a locale: Python's
# Unicode `lower()` and Postgres's (the database's locale) disagree (`"EMAİL".lower()` is
# `emai̇l` in Python, `email` under glibc), and a key that passed the profile-trait bound
# here as not-`email` became the customer's indexed email in the fold (issue 22).
# `lower(... COLLATE "C")` folds ASCII only, and under the C collation `[[:space:]]` is
# ASCII whitespace only; tests/schemas/test_trait_keys.py holds the two to one answer
# over every code point.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_KEY_SEPARATORS = re.compile("[ \t\n\v\f\r_.-]+")


def normalise_trait_key(key: str) -> str:
    """A trait key as the fold compares it: `firstName` = `first_name` = `First Name`."""
    return _KEY_SEPARATORS.sub("", key.translate(_ASCII_LOWER)) or key


def normalised_key_sql(key: str) -> str:
    """`normalise_trait_key` in SQL, of the text expression `key`."""
    return f"""COALESCE(NULLIF(regexp_replace(lower(({key}) COLLATE "C"), '[[:space:]_.-]+', '', 'g'), ''),
                        {key})"""


def _profile_trait(name: str) -> bool:
    """Whether the fold keeps this trait as the email or name (`normalise_trait_key`)."""
    return normalise_trait_key(name) in PROFILE_TRAITS


class Traits(ObjectOrNull):
    """A traits object (or null): the fold keeps each trait by name, so names are bounded."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        value = super()._deserialize(value, attr, data, **kwargs)
        if value is not None:
            check_trait_names(value)
        return value


class OptionalString(fields.Field[Any]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"Must be a string or null, not {json_type(value)}.")
        return value


class EventSchema(Schema):
    """Fields common to every type."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    messageId = Identifier(max_length=MAX_MESSAGE_ID, allow_none=True)
    userId = Identifier(allow_none=True)
    anonymousId = Identifier(allow_none=True)
    timestamp = Timestamp(allow_none=True)
    context = ObjectOrNull(allow_none=True)
    integrations = ObjectOrNull(allow_none=True)
    properties = ObjectOrNull(allow_none=True)
    traits = Traits(allow_none=True)

    @validates_schema
    def check_context_traits(self, data: dict[str, Any], **kwargs: Any) -> None:
        context = data.get("context")
        traits = context.get("traits") if isinstance(context, dict) else None
        if isinstance(traits, dict):
            try:
                check_trait_names(traits)
            except ValidationError as error:
                raise ValidationError(error.messages, "context.traits") from None

    @validates_schema
    def check_trait_count(self, data: dict[str, Any], **kwargs: Any) -> None:
        traits, context_traits = data.get("traits"), _context_traits(data.get("context"))
        count = _trait_keys(traits) + _trait_keys(context_traits)
        if count > MAX_TRAIT_KEYS:
            where = "traits" if _trait_keys(traits) >= _trait_keys(context_traits) else "context.traits"
            raise ValidationError(
                f"An event may carry at most {MAX_TRAIT_KEYS} trait keys (traits and context.traits "
                f"together); this one has {count}. Send the traits an agent needs, or split them "
                "over several identify calls.",
                where,
            )

    @validates_schema
    def check_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not _present(data.get("userId")) and not _present(data.get("anonymousId")):
            raise ValidationError(
                "userId or anonymousId is required: send at least one, non-empty.", "userId"
            )


class TrackSchema(EventSchema):
    event = fields.String(required=True, error_messages={"invalid": "Must be a string."})

    @validates_schema
    def check_event(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not str(data.get("event") or "").strip():
            raise ValidationError("Must be a non-empty string naming the action.", "event")


class PageSchema(EventSchema):
    name = OptionalString(allow_none=True)
    category = OptionalString(allow_none=True)


class IdentifySchema(EventSchema):
    pass


class GroupSchema(EventSchema):
    groupId = Identifier(required=True, allow_none=False)

    @validates_schema
    def check_group(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not _present(data.get("groupId")):
            raise ValidationError("Must be a non-empty id of the group.", "groupId")


class AliasSchema(EventSchema):
    previousId = Identifier(required=True, allow_none=False)

    @validates_schema
    def check_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not _present(data.get("userId")):
            raise ValidationError("alias needs the new userId.", "userId")
        if not _present(data.get("previousId")):
            raise ValidationError("alias needs the previousId it links.", "previousId")


class DeleteSchema(EventSchema):
    @validates_schema
    def check_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not _present(data.get("userId")):
            raise ValidationError("delete needs the userId of the person to erase.", "userId")


SCHEMAS: dict[str, Schema] = {
    "identify": IdentifySchema(),
    "track": TrackSchema(),
    "page": PageSchema(),
    "screen": PageSchema(),
    "group": GroupSchema(),
    "alias": AliasSchema(),
    "delete": DeleteSchema(),
}


def _present(value: Any) -> bool:
    return value is not None and value != ""


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


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
    if not any(_present(content.get(key)) for key in ("timestamp", "originalTimestamp")):
        sent_at = event.get("sentAt") if _present(event.get("sentAt")) else sent_at
        if not _present(sent_at) and not archived:
            return "derived-" + uuid.uuid4().hex
        if _present(sent_at):
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
    loaded = _quick_load(kind, event)
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


# The fast path. Most events are plainly valid: string ids within their bounds, objects
# where objects go, a readable timestamp. For those, `_quick_load` returns what
# `schema.load` would for the fields prepare_event reads (the declared ones). For
# anything else (a numeric id, a wrong type, a missing field, a bad timestamp, ...) it
# returns None and the schema above, the one definition of the Spec, decides and words
# the errors. tests/schemas/test_quick_load.py holds the two to the same answers.
_QUICK_IDS = {"messageId": MAX_MESSAGE_ID, "userId": MAX_ID, "anonymousId": MAX_ID}
_QUICK_OBJECTS = ("context", "integrations", "properties")


# The timestamps SDKs and Segment's archives send, RFC 3339 in UTC or with an offset
# (`2024-03-01T09:30:00.123Z`): `datetime.fromisoformat` reads exactly these as
# `parse_timestamp` does, several times faster. Anything else goes to parse_timestamp.
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)", re.ASCII
)


def _quick_timestamp(stamp: str) -> datetime | None:
    """`parse_timestamp(stamp)` for the common RFC 3339 form, else None (ask parse_timestamp)."""
    if _RFC3339.fullmatch(stamp) is None:
        return None
    try:
        return datetime.fromisoformat(stamp).astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, year 0 in UTC: parse_timestamp words it
        return None


def _names_fit(traits: dict[str, Any]) -> bool:
    return all(
        len(name) <= MAX_TRAIT_NAME
        and not (type(v) is str and len(v) > MAX_PROFILE_TRAIT and _profile_trait(name))
        for name, v in traits.items()
    )


def _quick_load(kind: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """What the schema would load for a plainly valid event, or None: ask the schema."""
    loaded: dict[str, Any] = {"type": kind}
    get = event.get
    for key, limit in _QUICK_IDS.items():
        if key in event:
            value = get(key)
            if value is not None and not (type(value) is str and len(value) <= limit):
                return None
            loaded[key] = value
    for key in _QUICK_OBJECTS:
        if key in event:
            value = get(key)
            if value is not None and type(value) is not dict:
                return None
            loaded[key] = value
    if "traits" in event:
        traits = get("traits")
        if traits is not None and not (type(traits) is dict and _names_fit(traits)):
            return None
        loaded["traits"] = traits
    context = loaded.get("context")
    if context is not None:
        context_traits = context.get("traits")
        if type(context_traits) is dict and not _names_fit(context_traits):
            return None
    if _trait_keys(loaded.get("traits")) + _trait_keys(_context_traits(context)) > MAX_TRAIT_KEYS:
        return None
    if "timestamp" in event:
        stamp = get("timestamp")
        if stamp is None:
            loaded["timestamp"] = None
        elif type(stamp) is not str:
            return None
        elif not stamp.strip():
            loaded["timestamp"] = None
        else:
            quick = _quick_timestamp(stamp)
            if quick is None:
                try:
                    quick = parse_timestamp(stamp)
                except TimestampError:
                    return None
            loaded["timestamp"] = quick
    user_id, anonymous_id = loaded.get("userId"), loaded.get("anonymousId")
    if kind == "track":
        name = get("event")
        if type(name) is not str or not name.strip():
            return None
        loaded["event"] = name
    elif kind in ("page", "screen"):
        for key in ("name", "category"):
            if key in event:
                value = get(key)
                if value is not None and type(value) is not str:
                    return None
                loaded[key] = value
    elif kind == "group":
        group_id = get("groupId")
        if not (type(group_id) is str and 0 < len(group_id) <= MAX_ID):
            return None
        loaded["groupId"] = group_id
    elif kind == "alias":
        previous_id = get("previousId")
        if not (type(previous_id) is str and 0 < len(previous_id) <= MAX_ID):
            return None
        loaded["previousId"] = previous_id
        return loaded if _present(user_id) else None
    elif kind == "delete":
        return loaded if _present(user_id) else None
    elif kind != "identify":
        return None
    return loaded if _present(user_id) or _present(anonymous_id) else None


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
