"""The read side's references: the same answers in plain Python, which the SQL is held to.

The feed and the profile are built as JSON by Postgres (`store/feed.py`,
`store/customers.py`); these build them from the rows in Python, the readable
definition, and tests compare the two.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, text

from schemas.api import FeedPosition
from schemas.fields import utc_iso
from store.customers import SUMMARY_COLUMNS, summaries
from store.feed import FEED_SCAN_BUDGET, FeedFilter, read_feed_page


def load_profile(connection: Connection, team_id: int, customer_id: int) -> dict[str, Any] | None:
    """The profile of a live customer in four plain queries, or None: what
    `store.customers.read_profile` builds in one, before ProfileSchema's dump."""
    params = {"team": team_id, "id": customer_id}
    customer = connection.execute(
        text(
            f"SELECT {SUMMARY_COLUMNS} FROM customers c "
            "WHERE c.team_id = :team AND c.id = :id AND c.merged_into IS NULL"
        ),
        params,
    ).first()
    if customer is None:
        return None
    traits = connection.execute(
        text(
            "SELECT key, value FROM customer_traits WHERE team_id = :team AND customer_id = :id ORDER BY key"
        ),
        params,
    ).all()
    groups = connection.execute(
        text(
            """
            SELECT m.group_id, g.name, m.joined_at,
                   COALESCE((SELECT jsonb_object_agg(t.key, t.value) FROM group_traits t
                             WHERE t.team_id = m.team_id AND t.group_id = m.group_id), '{}') AS traits
            FROM memberships m
            LEFT JOIN groups g ON g.team_id = m.team_id AND g.group_id = m.group_id
            WHERE m.team_id = :team AND m.customer_id = :id
            ORDER BY m.joined_at, m.group_id
            """
        ),
        params,
    ).all()
    profile = summaries(connection, team_id, [customer])[0]
    profile["traits"] = {key: value for key, value in traits}
    profile["groups"] = [
        {"id": g.group_id, "name": g.name, "traits": g.traits, "joined_at": g.joined_at} for g in groups
    ]
    return profile


def load_feed(
    connection: Connection,
    team_id: int,
    customer_id: int,
    *,
    limit: int,
    after: FeedPosition | None = None,
    newest_first: bool = True,
    filters: FeedFilter | None = None,
    budget: int = FEED_SCAN_BUDGET,
) -> tuple[list[dict[str, Any]], FeedPosition | None]:
    """`read_feed_page` with the items parsed: ([], None) for an unknown or merged id."""
    page = read_feed_page(
        connection,
        team_id,
        customer_id,
        limit=limit,
        after=after,
        newest_first=newest_first,
        filters=filters,
        budget=budget,
    )
    if page is None:
        return [], None
    items: list[dict[str, Any]] = json.loads(page.items_json)
    return items, page.next_position


def feed_item(row: Any, changes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A timeline entry as agents read it (SPEC §4), ready for JSON: every key always present.

    The reference for `store.feed.FEED_ITEM_SQL`, which the feed runs: Postgres builds the
    items' JSON and the route passes it through. tests/app/test_customers.py holds the two
    to the same output. `changes`: what an identify changed (the fold's trait history;
    none for rows outside a folded team).
    """
    raw: dict[str, Any] = row.raw if isinstance(row.raw, dict) else {}
    context = _object(raw.get("context")) or {}
    page = _object(context.get("page")) or {}
    properties = (_object(raw.get("properties")) or {}) if row.type == "page" else {}

    def page_field(key: str) -> str | None:
        found = _string(page.get(key))
        return found if found is not None else _string(properties.get(key))

    has_traits = row.type in ("identify", "group")
    return {
        "id": str(row.id),
        "type": row.type,
        "summary": summary(row.type, row.event_name, raw),
        "event": _string(row.event_name) if row.type == "track" else None,
        "name": _string(row.event_name) if row.type in ("page", "screen") else None,
        "timestamp": utc_iso(row.event_time),
        "received_at": utc_iso(row.received_at),
        "message_id": row.message_id,
        "user_id": row.user_id,
        "anonymous_id": row.anonymous_id,
        "properties": None if has_traits or row.type == "alias" else (_object(raw.get("properties")) or {}),
        "traits": (_object(raw.get("traits")) or {}) if has_traits else None,
        "group_id": row.group_id if row.type == "group" else None,
        "previous_id": row.previous_id if row.type == "alias" else None,
        "changes": (changes or []) if row.type == "identify" else None,
        "context": {
            "page_url": page_field("url"),
            "page_title": page_field("title"),
            "page_path": page_field("path"),
            "page_referrer": page_field("referrer"),
            "user_agent": _string(context.get("userAgent")),
            "ip": _string(context.get("ip")),
            "library": _object(context.get("library")),
        },
    }


def summary(kind: str, name: str | None, raw: dict[str, Any]) -> str:
    """A one-line label for the feed: what happened, in an agent's words."""
    if kind == "track":
        return str(name)
    if kind == "page":
        return f"Viewed page {name}" if name else "Viewed a page"
    if kind == "screen":
        return f"Viewed screen {name}" if name else "Viewed a screen"
    if kind == "identify":
        company = _object((_object(raw.get("traits")) or {}).get("company"))
        if company and company.get("remove") is True and _company_id(company.get("id")):
            label = company["name"] if isinstance(company.get("name"), str) else company["id"]
            return f"Left group {_python_str(label)}"
        return "Traits updated"
    if kind == "group":
        traits = _object(raw.get("traits")) or {}
        label = traits.get("name") if isinstance(traits.get("name"), str) else raw.get("groupId")
        return f"Joined group {label}"
    if kind == "alias":
        return f"Identified as {raw.get('userId')}"
    return kind


def _company_id(value: Any) -> bool:
    """A usable company id: a non-empty string, or a number."""
    return (isinstance(value, str) and value != "") or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _python_str(value: Any) -> str:
    """A label as the SQL writes it: strings as they are, JSON numbers as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _string(value: Any) -> str | None:
    # Raw events are stored as received: a number where a string belongs is not an error
    # at ingest, but the API promises strings.
    return value if isinstance(value, str) else None
