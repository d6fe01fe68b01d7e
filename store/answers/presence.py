"""Presence: whether a customer is active now, and on which page or screen; declared once.

The rule is `schemas.api`'s (`ACTIVE_WITHIN`, `PLACE_WITHIN`); here it is in SQL, the
one place it is applied (the console's customer page reads the profile's `presence`).
A customer is *active now* when their newest event (`last_seen`, by event time) is
within ACTIVE_WITHIN of now, either side; where an active customer is: their newest page
or screen, if dated less than PLACE_WITHIN (the gap that starts a new visit) before
`last_seen`, else nowhere known.

`PRESENCE` is over a `customers` row `c` and the parameter `:now` (the reader's clock, set
in Python so tests control it): the profile carries it (`store/answers/profile.py`), so
`GET /api/v1/customers/{id}` answers it, and the console's home lists the customers
active now with it (`ACTIVE_CUSTOMER`, read by `store.presence.read_active_customers`).
The place is read only for a customer active now: one probe of `ix_events_feed`,
backwards over the customer's last `PLACE_WITHIN` of events at most.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from marshmallow import fields, validate

from schemas.api import ACTIVE_WITHIN, PLACE_WITHIN
from schemas.fields import Instant
from store.answers.declared import Answer, Field
from store.answers.feed_item import FEED_CONTEXT
from store.statements import iso_sql

_NOW = "CAST(:now AS timestamptz)"


def _interval(span: timedelta) -> str:
    return f"interval '{int(span.total_seconds())} seconds'"


def active_sql(last_seen: str) -> str:
    """The rule in SQL: `last_seen` (a timestamptz expression) is within ACTIVE_WITHIN of `:now`.
    A range on `last_seen`, so `ix_customers_recent` answers it as one index range."""
    window = _interval(ACTIVE_WITHIN)
    return f"({last_seen} > {_NOW} - {window} AND {last_seen} < {_NOW} + {window})"


_CONTEXT = {field.name: field.expression(True) for field in FEED_CONTEXT.fields}

# The page or screen, over an `events` row (bare column names, as a feed item's).
PLACE = Answer(
    "Place",  # the page or screen an active customer is on
    (
        Field("type", "type", partial(fields.String, validate=validate.OneOf(("page", "screen")))),
        Field("name", "event_name", fields.String, "The page's or screen's name.", nullable=True),
        Field("title", _CONTEXT["page_title"], fields.String, "As a feed item's `context`.", nullable=True),
        Field("url", _CONTEXT["page_url"], fields.String, "As a feed item's `context`.", nullable=True),
        Field("path", _CONTEXT["page_path"], fields.String, "As a feed item's `context`.", nullable=True),
        Field("since", iso_sql("event_time"), Instant, "The page's or screen's event time."),
    ),
)

# The customer's newest page or screen of the newest event's visit: the feed index read
# backwards from the customer's newest events, no further than PLACE_WITHIN before them.
_PLACE_SQL = f"""(SELECT {PLACE.sql()} FROM events
        WHERE team_id = c.team_id AND customer_id = c.id AND type IN ('page', 'screen')
          AND event_time > c.last_seen - {_interval(PLACE_WITHIN)}
        ORDER BY event_time DESC, tiebreak DESC, id DESC
        LIMIT 1)"""

PRESENCE = Answer(
    "Presence",  # whether the customer is active now, and where
    (
        Field(
            "active_now",
            f"COALESCE({active_sql('c.last_seen')}, false)",
            fields.Boolean,
            f"An event within {int(ACTIVE_WITHIN.total_seconds() // 60)} minutes of now "
            "(by event time, either side).",
        ),
        Field("last_seen", iso_sql("c.last_seen"), Instant, "The newest event's time.", nullable=True),
        Field(
            "place",
            f"CASE WHEN {active_sql('c.last_seen')} THEN {_PLACE_SQL} END",
            partial(fields.Nested, PLACE.schema),
            "Where an active customer is: their newest page or screen, when it is of the "
            f"current visit (less than {int(PLACE_WITHIN.total_seconds() // 60)} minutes before "
            "their newest event). null when not active now, or no page or screen says.",
            nullable=True,
        ),
    ),
)

# A customer on the console's home, in the list of those active now (over `c` and `:now`).
ACTIVE_CUSTOMER = Answer(
    "ActiveCustomer",
    (
        Field("id", "c.id::text", fields.String),
        Field("name", "c.name", fields.String, nullable=True),
        Field("email", "c.email", fields.String, nullable=True),
        Field(
            "user_id",
            "(SELECT i.value FROM identities i WHERE i.team_id = c.team_id AND i.customer_id = c.id "
            "AND i.kind = 'user' ORDER BY i.kind, i.value LIMIT 1)",
            fields.String,
            "The first of the customer's userIds, by value.",
            nullable=True,
        ),
        Field("presence", PRESENCE),
    ),
)

PlaceSchema = PLACE.schema
PresenceSchema = PRESENCE.schema
ActiveCustomerSchema = ACTIVE_CUSTOMER.schema
