"""The read API's shapes: query arguments in, profiles, feeds and groups out (SPEC §4).

The request schemas validate query strings at the boundary; the response schemas are
what the views dump. Both feed the OpenAPI document (`app/openapi.py`), so the document
describes what the code does, not what someone remembered to write down.

Unknown query arguments are RAISEd (a 400 naming them): a misspelt filter such as
`?types=track` would otherwise return the whole unfiltered feed and look like an answer.

Cursors are opaque to callers and read by the one codec, `schemas/cursors.py`, which also
holds the positions they carry. Anything we did not make, or made for another list or
order, is a 400, never a 500.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from schemas.cursors import ORDERS, CursorArgument, FeedPosition, InstantPosition, ListOffset
from schemas.fields import Instant, QueryText, limit_field
from schemas.segment import SUPPORTED_TYPES

MAX_QUERY_TEXT = 255  # userIds and anonymousIds are at most 255 characters (SPEC §2)
MAX_EMAIL = 320
MAX_EVENT_NAME = 1000
MAX_INCLUDED_TRAITS = 100

# How wide an answer is (docs/read-api.md, "How wide an answer is"): a tenant chooses how
# wide its events and customers are, so each answer shows at most these and says, in its
# `truncated` list, what it left out; the rest is one request away.
SHOWN_KEYS = 50  # keys of an event's properties or traits a feed item shows; traits its `changes` examine
SHOWN_VALUE = 1_000  # characters of any one value a capped answer shows
PROFILE_TRAITS = 200  # traits a profile shows (the rest: /customers/{id}/traits, paged)
PROFILE_IDS = 100  # userIds, and anonymousIds, a profile shows (the rest: /external_ids)
PROFILE_GROUPS = 100  # memberships a profile shows (the rest: /customers/{id}/groups)
MAX_TRAITS_PAGE = 1_000  # traits per page of /customers/{id}/traits

# Presence (docs/read-api.md, "The profile"): the one rule of "active now", which Postgres
# applies in store/answers/presence.py (the profile's `presence`, read by the API and the
# console's customer page alike, and the console's home). Active now: the newest event (by
# event time) within ACTIVE_WITHIN of now, either side: one dated further ahead (a device
# clock set wrong) does not keep a customer "active" until that date. Where: the newest
# page or screen, if less than PLACE_WITHIN (the gap that starts a new visit) before it.
ACTIVE_WITHIN = timedelta(minutes=5)
# A visit (GET /customers/{id}/visits, the console's journey): a run of events with no gap
# of VISIT_GAP or more between one and the next, as analytics tools count sessions.
VISIT_GAP = timedelta(minutes=30)
PLACE_WITHIN = VISIT_GAP


# A delete erases the person, including the delete event itself: it is never in a feed.
FEED_TYPES = tuple(kind for kind in SUPPORTED_TYPES if kind != "delete")


# -- request arguments ---------------------------------------------------------------


class CustomerSearchArgs(Schema):
    """`GET /customers`: search, most recently seen first."""

    class Meta:
        unknown = RAISE

    q = QueryText(
        load_default="",
        validate=validate.Length(max=MAX_QUERY_TEXT),
        metadata={
            "description": "Case-insensitive prefix of an email, name, userId or anonymousId. "
            "Empty or absent lists every customer."
        },
    )
    limit = limit_field()
    cursor = CursorArgument("customers", InstantPosition)


class CustomerLookupArgs(Schema):
    """`GET /customers/lookup`: exactly one of the three ids."""

    class Meta:
        unknown = RAISE

    user_id = QueryText(
        validate=validate.Length(1, MAX_QUERY_TEXT), metadata={"description": "Exact userId."}
    )
    email = QueryText(
        validate=validate.Length(1, MAX_EMAIL),
        metadata={"description": "Email, compared case-insensitively."},
    )
    anonymous_id = QueryText(
        validate=validate.Length(1, MAX_QUERY_TEXT), metadata={"description": "Exact anonymousId."}
    )

    @validates_schema
    def exactly_one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if len(data) != 1:
            raise ValidationError("Give exactly one of user_id, email or anonymous_id.", "query")


class FeedArgs(Schema):
    """`GET /customers/{id}/feed`: filters, order and paging."""

    class Meta:
        unknown = RAISE

    type = fields.List(
        fields.String(validate=validate.OneOf(FEED_TYPES)),
        metadata={"description": "Only these event types (repeat the argument for several)."},
    )
    event = fields.List(
        QueryText(validate=validate.Length(1, MAX_EVENT_NAME)),
        metadata={
            "description": "Only track events with these names (repeatable). Other types stay "
            "only if also named in `type`."
        },
    )
    exclude_event = fields.List(
        QueryText(validate=validate.Length(1, MAX_EVENT_NAME)),
        metadata={"description": "Leave out track events with these names (repeatable)."},
    )
    since = Instant(metadata={"description": "Events at or after this event time."})
    until = Instant(metadata={"description": "Events before this event time."})
    order = fields.String(
        load_default="desc",
        validate=validate.OneOf(ORDERS),
        metadata={"description": "`desc` (newest first, the default) or `asc`."},
    )
    limit = limit_field()
    cursor = CursorArgument("feed", FeedPosition)

    @validates_schema
    def consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since > until:
            raise ValidationError("Must not be after until.", "since")
        cursor = data.get("cursor")
        if cursor is not None and cursor.order != data["order"]:
            raise ValidationError(
                f"This cursor pages order={cursor.order}; ask with that order or start again.", "cursor"
            )


class TraitsArgs(Schema):
    """`GET /customers/{id}/traits`: which traits, whether with their provenance, paging."""

    class Meta:
        unknown = RAISE

    verbose = fields.Boolean(
        load_default=False,
        truthy={"true", "1"},
        falsy={"false", "0"},
        metadata={"description": "`true`: each trait as {value, updated_at, message_id}."},
    )
    include = fields.List(
        QueryText(validate=validate.Length(1, MAX_QUERY_TEXT)),
        validate=validate.Length(max=MAX_INCLUDED_TRAITS),
        metadata={
            "description": "Only these traits, comma-separated (`include=email,plan`); "
            "spellings compare as the fold compares them (`firstName` = `first_name`)."
        },
    )
    limit = limit_field(default=MAX_TRAITS_PAGE, most=MAX_TRAITS_PAGE)
    cursor = CursorArgument("traits", ListOffset)


class ExternalIdsArgs(Schema):
    """`GET /customers/{id}/external_ids`: paging."""

    class Meta:
        unknown = RAISE

    limit = limit_field(default=200, most=1_000)
    cursor = CursorArgument("external_ids", ListOffset)


class MembershipsArgs(Schema):
    """`GET /customers/{id}/groups`: paging."""

    class Meta:
        unknown = RAISE

    limit = limit_field()
    cursor = CursorArgument("groups", ListOffset)


class GroupArgs(Schema):
    """`GET /groups/{group_id}`: paging of its members."""

    class Meta:
        unknown = RAISE

    limit = limit_field()
    cursor = CursorArgument("members", InstantPosition)


# Which arguments may repeat in a query string (`?type=track&type=page`).
REPEATABLE = {"type", "event", "exclude_event"}


# Which arguments list their values comma-separated (`?include=email,plan`), as
# Segment's Profile API reads `include`; repeating the argument adds more.
COMMA_SEPARATED = {"include"}


def query_arguments(schema: Schema, args: Any) -> dict[str, Any]:
    """A query string (a werkzeug MultiDict or any mapping with getlist) as the schema reads it."""
    loaded: dict[str, Any] = {}
    for name in args.keys():
        if name in COMMA_SEPARATED and name in schema.fields:
            loaded[name] = [part.strip() for value in args.getlist(name) for part in value.split(",")]
        elif name in REPEATABLE and name in schema.fields:
            loaded[name] = args.getlist(name)
        else:
            loaded[name] = args.get(name)
    return loaded


# -- responses -----------------------------------------------------------------------


class ErrorSchema(Schema):
    """The one error envelope of the whole API."""

    message = fields.String(required=True, metadata={"description": "What went wrong and what to do."})
    code = fields.String(required=True, metadata={"description": "A stable machine-readable code."})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"description": "Per argument or field, the list of problems."},
    )


class MergedSchema(Schema):
    """The body of a 308: the customer was merged into another; `Location` names it."""

    id = fields.String(required=True, metadata={"description": "The surviving customer's id."})
    message = fields.String(required=True)


class TraitDetailSchema(Schema):
    """A trait with its provenance (`verbose=true`)."""

    value = fields.Raw(required=True, allow_none=True)
    updated_at = Instant(required=True, metadata={"description": "Event time of the identify that set it."})
    message_id = fields.String(
        required=True, allow_none=True, metadata={"description": "The messageId of that event."}
    )


class TraitsSchema(Schema):
    """A customer's traits: latest value per key, or with `verbose=true` its provenance."""

    traits = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        required=True,
        metadata={"description": "key -> value, or key -> TraitDetail with `verbose=true`."},
    )
    next_cursor = fields.String(
        required=True, allow_none=True, metadata={"description": "The next page of traits; null at the end."}
    )


class ExternalIdSchema(Schema):
    """One of a customer's identities."""

    type = fields.String(required=True, validate=validate.OneOf(("user_id", "anonymous_id", "email")))
    value = fields.String(required=True)
    first_seen = Instant(
        required=True, allow_none=True, metadata={"description": "Event time of the first event carrying it."}
    )
    first_message_id = fields.String(
        required=True, allow_none=True, metadata={"description": "The messageId of that event."}
    )


class ExternalIdListSchema(Schema):
    data = fields.List(fields.Nested(ExternalIdSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata={"description": "null at the end."})


class EventSummarySchema(Schema):
    """A customer's events of one type and name over the whole history."""

    type = fields.String(required=True, validate=validate.OneOf(("track", "page", "screen")))
    name = fields.String(
        required=True, allow_none=True, metadata={"description": "Track event name, page or screen name."}
    )
    count = fields.Integer(required=True)
    first_seen = Instant(required=True, metadata={"description": "Event time of the first."})
    last_seen = Instant(required=True, metadata={"description": "Event time of the latest."})


class EventSummaryListSchema(Schema):
    data = fields.List(fields.Nested(EventSummarySchema), required=True)
    next_cursor = fields.String(
        required=True, allow_none=True, metadata={"description": "Always null: one page."}
    )


class MeTeamSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)


class MeKeySchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    scopes = fields.List(fields.String(), required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(("active", "expiring")),
        metadata={"description": "`expiring`: rotated, in its grace period."},
    )


class MeSchema(Schema):
    """The calling key and its team: what a destination calls to test pasted credentials."""

    team = fields.Nested(MeTeamSchema, required=True)
    key = fields.Nested(MeKeySchema, required=True)


# Registered as named components of the OpenAPI document (nested ones before their users).
# The answers Postgres builds are declared with their SQL (`store/answers/`): their schemas
# (`FeedItemSchema`, `ProfileSchema`, `CustomerListSchema`, `GroupSchema`, ...) are named by
# the route docstrings and apispec registers them under the same component names.
COMPONENTS: dict[str, type[Schema]] = {
    "Error": ErrorSchema,
    "Merged": MergedSchema,
    "TraitDetail": TraitDetailSchema,
    "Traits": TraitsSchema,
    "ExternalId": ExternalIdSchema,
    "ExternalIdList": ExternalIdListSchema,
    "EventSummary": EventSummarySchema,
    "EventSummaryList": EventSummaryListSchema,
    "MeTeam": MeTeamSchema,
    "MeKey": MeKeySchema,
    "Me": MeSchema,
}
