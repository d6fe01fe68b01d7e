"""What the console reads, through the read API's own store functions (SPEC §4, §10).

Every import of `store/` for the console is here, so that when those modules move only
this file changes. The profile, a feed page, a page of search results and a group come
from the very read functions the API calls (`read_profile`, `read_feed_page`,
`search_customers`, `read_group`, each choosing its own snapshot), parsed from the
JSON text Postgres builds as `store/answers/` declares it; no query of theirs is repeated
here, and what the console shows beyond the API is presentation (`present.py`). The
console adds reads of its own: when each trait was last set, the signed-in key by id (its
session names the key, never the secret), and a customer's events per day
(`read_activity`, for the activity chart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.read_api.visits import read_visits
from schemas.api import PROFILE_TRAITS
from schemas.cursors import FeedPosition, InstantPosition, encode_cursor
from store.apikeys import ACTIVE, key_digest, key_status
from store.apikeys import find_key as _find_key
from store.customers import lookup_customer, read_profile
from store.customers import search_customers as _search_customers
from store.feed import FeedFilter, read_activity, read_feed_page
from store.groups import read_group
from store.models import ApiKey
from store.presence import ACTIVE_COUNTED, read_active_customers

__all__ = [
    "ACTIVE",
    "ACTIVE_COUNTED",
    "ApiKey",
    "FeedFilter",
    "FeedPosition",
    "InstantPosition",
    "encode_cursor",
    "key_digest",
    "key_status",
    "lookup_customer",
    "read_activity",
    "read_visits",
]


def find_key(connection: Connection, team_id: int, key_id: int) -> ApiKey | None:
    """The team's key by id (digest, scopes, expiry, revocation), read fresh each request."""
    return _find_key(connection, team_id, key_id)


def search_customers(
    connection: Connection, team_id: int, query: str, *, limit: int, after: InstantPosition | None
) -> tuple[list[dict[str, Any]], InstantPosition | None]:
    """A page of the search `GET /customers` answers (`search_customers`), parsed, and where
    the next page starts."""
    page = _search_customers(connection, team_id, query, limit=limit, after=after)
    customers: list[dict[str, Any]] = json.loads(page.items_json)
    return customers, page.next_position


def load_group(
    connection: Connection, team_id: int, group_id: str, *, limit: int, after: InstantPosition | None
) -> tuple[dict[str, Any], InstantPosition | None] | None:
    """The group `GET /groups/{id}` answers (`read_group`), parsed, and where its next page
    of members starts; None for a group unknown in the team."""
    found = read_group(connection, team_id, group_id, limit=limit, after=after)
    if found is None:
        return None
    body, position = found
    group: dict[str, Any] = json.loads(body)
    return group, position


@dataclass(frozen=True)
class Profile:
    """A live customer's profile as the API answers it, plus when each trait was set."""

    data: dict[str, Any]
    trait_times: dict[str, datetime]


def load_profile(connection: Connection, team_id: int, customer_id: int) -> tuple[int | None, Profile | None]:
    """(the survivor's id when `customer_id` was merged away, the profile when live).

    The profile is the API's (`read_profile`, what `GET /customers/{id}` answers), plus the
    console's `trait_times`. (None, None) for an id unknown in the team.
    """
    found = read_profile(connection, team_id, customer_id)
    if found is None:
        return None, None
    merged_into, body = found
    if merged_into is not None:
        return merged_into, None
    return None, Profile(json.loads(body), trait_times(connection, team_id, customer_id))


def trait_times(connection: Connection, team_id: int, customer_id: int) -> dict[str, datetime]:
    """Trait key (as the profile spells it) -> the event time of the call that set its value.

    Read by the console alone (the API's profile carries values only): one index range
    of the `customer_traits` primary key, the traits the profile shows (its first
    PROFILE_TRAITS by normalised key) and no more.
    """
    rows = connection.execute(
        text(
            "SELECT key, event_time FROM customer_traits WHERE team_id = :team AND customer_id = :customer "
            "ORDER BY key_norm LIMIT :shown"
        ),
        {"team": team_id, "customer": customer_id, "shown": PROFILE_TRAITS},
    )
    return {row.key: row.event_time for row in rows}


@dataclass(frozen=True)
class Timeline:
    """One page of a customer's timeline, newest first."""

    merged_into: int | None
    items: list[dict[str, Any]]
    next_cursor: str | None


def load_timeline(
    connection: Connection,
    team_id: int,
    customer_id: int,
    *,
    filters: FeedFilter,
    after: FeedPosition | None,
    limit: int,
) -> Timeline | None:
    """A page of the feed exactly as `GET /customers/{id}/feed` reads it, or None when unknown.

    The next page's cursor is the API's own (`encode_cursor("feed", ..., "desc")`), so
    paging here has the API's guarantee: nothing repeated, nothing skipped.
    """
    page = read_feed_page(connection, team_id, customer_id, limit=limit, after=after, filters=filters)
    if page is None:
        return None
    if page.merged_into is not None:
        return Timeline(page.merged_into, [], None)
    items: list[dict[str, Any]] = json.loads(page.items_json)
    cursor = encode_cursor("feed", page.next_position, "desc") if page.next_position else None
    return Timeline(None, items, cursor)


def active_customers(
    connection: Connection, team_id: int, now: datetime, *, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The team's customers active at `now`, the most recently seen first (at most `limit`,
    as `store/answers/presence.py` declares them), and how many are active in all (counted
    up to `ACTIVE_COUNTED`)."""
    found = read_active_customers(connection, team_id, now, limit=limit)
    customers: list[dict[str, Any]] = json.loads(found.items_json)
    return customers, found.active
