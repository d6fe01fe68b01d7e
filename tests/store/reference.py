"""The read side's references: the same answers in plain Python, which the SQL is held to.

The feed item, the profile, the customer list item (search) and the group are built as
JSON by Postgres, as `store/answers/` declares them; these build them from the rows in
Python, the readable definition, and tests compare the two. This is a test oracle, kept independent of the
declarations on purpose: a second, plainly written account of each answer, so that a
mistake in the SQL shows up as a difference instead of being copied into the expectation.
No production code imports it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from schemas.api import PROFILE_GROUPS, PROFILE_IDS, PROFILE_TRAITS, SHOWN_KEYS, SHOWN_VALUE
from schemas.cursors import FeedPosition, InstantPosition
from schemas.fields import utc_iso
from store.feed import FEED_SCAN_BUDGET, FeedFilter, read_feed_page


def list_items(connection: Connection, team_id: int, customer_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Customers as a list shows them, in the order given, in two plain queries: what
    `store.answers.customer_list_item.CUSTOMER_LIST_ITEM` builds, before its schema's dump.
    Every userId and anonymousId, each list by value (bytewise: the database's C collation)."""
    params = {"team": team_id, "ids": list(customer_ids)}
    customers = {
        row.id: row
        for row in connection.execute(
            text(
                "SELECT id, email, name, first_seen, last_seen, event_count FROM customers "
                "WHERE team_id = :team AND id = ANY(:ids)"
            ),
            params,
        )
    }
    ids: dict[int, dict[str, list[str]]] = {c: {"user": [], "anonymous": []} for c in customer_ids}
    for customer, kind, value in connection.execute(
        text(
            "SELECT customer_id, kind, value FROM identities i "
            "WHERE i.team_id = :team AND i.customer_id = ANY(:ids)"
        ),
        params,
    ):
        ids[customer]["user" if kind == "user" else "anonymous"].append(value)
    return [
        {
            "id": str(c),
            "user_ids": sorted(ids[c]["user"], key=str.encode),
            "anonymous_ids": sorted(ids[c]["anonymous"], key=str.encode),
            "email": customers[c].email,
            "name": customers[c].name,
            "first_seen": customers[c].first_seen,
            "last_seen": customers[c].last_seen,
            "event_count": customers[c].event_count,
        }
        for c in customer_ids
    ]


def search(
    connection: Connection, team_id: int, query: str, *, limit: int, after: InstantPosition | None = None
) -> tuple[list[dict[str, Any]], InstantPosition | None]:
    """`GET /customers?q=` read plainly: every live customer with events whose email, name,
    userId or anonymousId starts with `query` in any case (ASCII, as these tests write),
    most recently seen first; a page of `limit` after `after`, and where the next starts."""
    rows = connection.execute(
        text(
            "SELECT c.id, c.email, c.name, c.last_seen, ARRAY(SELECT i.value FROM identities i "
            "WHERE i.team_id = c.team_id AND i.customer_id = c.id) AS ids "
            "FROM customers c WHERE c.team_id = :team AND c.merged_into IS NULL AND c.last_seen IS NOT NULL"
        ),
        {"team": team_id},
    ).all()
    prefix = query.lower()
    found = sorted(
        (
            row
            for row in rows
            if any(
                value is not None and value.lower().startswith(prefix)
                for value in [row.email, row.name, *row.ids]
            )
        ),
        key=lambda row: (row.last_seen, row.id),
        reverse=True,
    )
    if after is not None:
        found = [row for row in found if (row.last_seen, row.id) < (after.at, after.id)]
    page = found[:limit]
    following = InstantPosition(page[-1].last_seen, page[-1].id) if len(found) > limit else None
    return list_items(connection, team_id, [row.id for row in page]), following


def load_group(
    connection: Connection, team_id: int, group_id: str, *, limit: int, after: InstantPosition | None = None
) -> tuple[dict[str, Any], InstantPosition | None] | None:
    """A group and one page of its members in plain queries, or None: what
    `store.groups.read_group` builds in one, before GroupSchema's dump (no `next_cursor`),
    and where the next page of members starts."""
    params = {"team": team_id, "group": group_id}
    group = connection.execute(
        text("SELECT name, first_seen, last_seen FROM groups WHERE team_id = :team AND group_id = :group"),
        params,
    ).first()
    memberships = connection.execute(
        text(
            "SELECT m.customer_id, m.joined_at, m.last_seen, m.active, c.merged_into FROM memberships m "
            "JOIN customers c ON c.team_id = m.team_id AND c.id = m.customer_id "
            "WHERE m.team_id = :team AND m.group_id = :group"
        ),
        params,
    ).all()
    if group is None and not memberships:
        return None
    if group is None:  # a company only named in identifies' traits.company
        name = None
        first_seen = min(m.joined_at or m.last_seen for m in memberships)
        last_seen = max(m.last_seen for m in memberships)
    else:
        name, first_seen, last_seen = group.name, group.first_seen, group.last_seen
    traits = connection.execute(
        text("SELECT key, value FROM group_traits WHERE team_id = :team AND group_id = :group"), params
    ).all()
    members = sorted(
        (m for m in memberships if m.active and m.merged_into is None),
        key=lambda m: (m.joined_at, m.customer_id),
    )
    if after is not None:
        members = [m for m in members if (m.joined_at, m.customer_id) > (after.at, after.id)]
    page = members[:limit]
    items = list_items(connection, team_id, [m.customer_id for m in page])
    found = {
        "id": group_id,
        "name": name,
        "traits": {t.key: t.value for t in sorted(traits, key=lambda t: t.key.encode())},
        "first_seen": first_seen,
        "last_seen": last_seen,
        "member_count": sum(1 for m in memberships if m.active),
        "members": [{**item, "joined_at": m.joined_at} for item, m in zip(items, page, strict=True)],
    }
    following = InstantPosition(page[-1].joined_at, page[-1].customer_id) if len(members) > limit else None
    return found, following


def load_profile(
    connection: Connection, team_id: int, customer_id: int, now: datetime | None = None
) -> dict[str, Any] | None:
    """The profile of a live customer in four plain queries, or None: what
    `store.customers.read_profile` builds in one, before ProfileSchema's dump."""
    params = {"team": team_id, "id": customer_id}
    customer = connection.execute(
        text("SELECT id FROM customers WHERE team_id = :team AND id = :id AND merged_into IS NULL"), params
    ).first()
    if customer is None:
        return None
    traits = connection.execute(
        text("SELECT key, key_norm, value FROM customer_traits WHERE team_id = :team AND customer_id = :id"),
        params,
    ).all()
    groups = connection.execute(
        text(
            """
            SELECT m.group_id, g.name, m.joined_at,
                   (SELECT array_agg(ARRAY[t.key_norm, t.key, t.value::text]) FROM group_traits t
                    WHERE t.team_id = m.team_id AND t.group_id = m.group_id) AS traits
            FROM memberships m
            LEFT JOIN groups g ON g.team_id = m.team_id AND g.group_id = m.group_id
            WHERE m.team_id = :team AND m.customer_id = :id AND m.active
            """
        ),
        params,
    ).all()
    (profile,) = list_items(connection, team_id, [customer.id])
    truncated = []
    for ids in ("user_ids", "anonymous_ids"):
        if len(profile[ids]) > PROFILE_IDS:
            profile[ids] = profile[ids][:PROFILE_IDS]
            truncated.append(ids)
    # The first PROFILE_TRAITS by normalised key (bytewise: the key_norm column's order in
    # these tests' ASCII), shown by key.
    by_norm = sorted(traits, key=lambda t: t.key_norm.encode())
    shown = by_norm[:PROFILE_TRAITS]
    profile["traits"] = {t.key: shown_value(t.value) for t in sorted(shown, key=lambda t: t.key.encode())}
    if len(by_norm) > PROFILE_TRAITS or any(shown_value(t.value) != t.value for t in shown):
        truncated.append("traits")
    memberships = sorted(groups, key=lambda g: g.group_id.encode())
    profile["groups"] = [
        membership(g.group_id, g.name, g.joined_at, g.traits or [])
        for g in sorted(memberships[:PROFILE_GROUPS], key=lambda g: (g.joined_at, g.group_id.encode()))
    ]
    if len(memberships) > PROFILE_GROUPS:
        truncated.append("groups")
    profile["truncated"] = truncated
    profile["presence"] = presence(connection, team_id, customer_id, now or datetime.now(UTC))
    return profile


def presence(connection: Connection, team_id: int, customer_id: int, now: datetime) -> dict[str, Any]:
    """Active now (an event within 5 minutes of `now`, either side), and the newest page or
    screen when less than 30 minutes before the newest event: what
    `store.answers.presence.PRESENCE` builds, before its schema's dump."""
    params = {"team": team_id, "id": customer_id}
    last_seen = connection.execute(
        text("SELECT last_seen FROM customers WHERE team_id = :team AND id = :id"), params
    ).scalar()
    active = last_seen is not None and abs(now - last_seen) < timedelta(minutes=5)
    place = None
    if active:
        pages = connection.execute(
            text(
                "SELECT type, event_name, event_time, tiebreak, id, raw FROM events "
                "WHERE team_id = :team AND customer_id = :id AND type IN ('page', 'screen')"
            ),
            params,
        ).all()
        recent = [p for p in pages if last_seen - p.event_time < timedelta(minutes=30)]
        if recent:
            newest = max(recent, key=lambda p: (p.event_time, p.tiebreak, p.id))
            place = {
                "type": newest.type,
                "name": newest.event_name,
                **{key: _page_value(newest, key) for key in ("title", "url", "path")},
                "since": newest.event_time,
            }
    return {"active_now": active, "last_seen": last_seen, "place": place}


def _page_value(event: Any, key: str) -> str | None:
    """context.page's `key` when a string, else a page call's properties' (a feed item's context)."""
    raw = event.raw or {}
    page = (raw.get("context") or {}).get("page") if isinstance(raw.get("context"), dict) else None
    found = page.get(key) if isinstance(page, dict) else None
    if isinstance(found, str):
        return found
    properties = raw.get("properties")
    if event.type == "page" and isinstance(properties, dict) and isinstance(properties.get(key), str):
        value: str = properties[key]
        return value
    return None


def membership(group_id: str, name: str | None, joined_at: Any, traits: list[list[str]]) -> dict[str, Any]:
    """A group on a profile: its first SHOWN_KEYS traits by normalised key, values cut."""
    by_norm = sorted(traits, key=lambda t: t[0].encode())
    shown = [(key, json.loads(value)) for _, key, value in by_norm[:SHOWN_KEYS]]
    cut = len(by_norm) > SHOWN_KEYS or any(shown_value(value) != value for _, value in shown)
    return {
        "id": group_id,
        "name": name,
        "traits": {key: shown_value(value) for key, value in shown},
        "joined_at": joined_at,
        "truncated": ["traits"] if cut else [],
    }


def jsonb_text(value: Any) -> str:
    """A JSON value as Postgres writes a jsonb's text: `", "` and `": "`, keys in jsonb order."""
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(value[k])}" for k in jsonb_order(value)
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def jsonb_order(mapping: dict[str, Any]) -> list[str]:
    """An object's keys as jsonb keeps them: shorter (in UTF-8 bytes) first, then bytewise."""
    return sorted(mapping, key=lambda key: (len(key.encode()), key.encode()))


def shown_value(value: Any) -> Any:
    """A value as a capped answer shows it (store.statements.shown_value_sql)."""
    if isinstance(value, str):
        return value[:SHOWN_VALUE]
    if isinstance(value, dict | list):
        written = jsonb_text(value)
        return written[:SHOWN_VALUE] if len(written) > SHOWN_VALUE else value
    return value


def shown_object(mapping: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """An object as a feed item shows it: its first SHOWN_KEYS keys in jsonb order, values
    cut; and whether anything was left out."""
    keys = jsonb_order(mapping)[:SHOWN_KEYS]
    shown = {key: shown_value(mapping[key]) for key in keys}
    return shown, len(mapping) > SHOWN_KEYS or any(shown[key] != mapping[key] for key in keys)


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


def feed_item(
    row: Any, changes: list[dict[str, Any]] | None = None, *, set_traits: int = 0, capped: bool = True
) -> dict[str, Any]:
    """A timeline entry as agents read it (SPEC §4), ready for JSON: every key always present.

    The reference for `store.answers.feed_item.FEED_ITEM`, which the feed runs: Postgres builds the
    items' JSON and the route passes it through. tests/app/test_customers.py holds the two
    to the same output. `changes`: what an identify changed (the fold's trait history;
    none for rows outside a folded team); `set_traits`: how many traits the event set (its
    trait history rows), which decides whether capped changes were cut. `capped`: as the
    feed shows it; else whole, as `GET .../feed/{id}` does.
    """
    raw: dict[str, Any] = row.raw if isinstance(row.raw, dict) else {}
    context = _object(raw.get("context")) or {}
    page = _object(context.get("page")) or {}
    properties = (_object(raw.get("properties")) or {}) if row.type == "page" else {}

    def page_field(key: str) -> str | None:
        found = _string(page.get(key))
        return found if found is not None else _string(properties.get(key))

    has_traits = row.type in ("identify", "group")
    shown_properties, properties_cut = shown_object(_object(raw.get("properties")) or {})
    shown_traits, traits_cut = shown_object(_object(raw.get("traits")) or {})
    truncated = []
    if capped:
        if row.type not in ("identify", "group", "alias") and properties_cut:
            truncated.append("properties")
        if has_traits and traits_cut:
            truncated.append("traits")
        if row.type == "identify" and (
            set_traits > SHOWN_KEYS or any(shown_value(c["to"]) != c["to"] for c in changes or [])
        ):
            truncated.append("changes")
    else:
        shown_properties, shown_traits = (
            _object(raw.get("properties")) or {},
            _object(raw.get("traits")) or {},
        )
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
        "properties": None if has_traits or row.type == "alias" else shown_properties,
        "traits": shown_traits if has_traits else None,
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
            "locale": _string(context.get("locale")),
            "library": _object(context.get("library")),
        },
        "truncated": truncated,
    }


def summary(kind: str, name: str | None, raw: dict[str, Any]) -> str:
    """A one-line label for the feed: what happened, in an agent's words."""
    if kind == "track":
        return name or ""
    if kind == "page":
        return f"Viewed page {name}" if name else "Viewed a page"
    if kind == "screen":
        return f"Viewed screen {name}" if name else "Viewed a screen"
    if kind == "identify":
        company = _object((_object(raw.get("traits")) or {}).get("company"))
        if company and company.get("remove") is True and _company_id(company.get("id")):
            label = company["name"] if isinstance(company.get("name"), str) else company["id"]
            return f"Left group {_label(label)}"
        return "Traits updated"
    if kind == "group":
        traits = _object(raw.get("traits")) or {}
        label = traits.get("name") if isinstance(traits.get("name"), str) else raw.get("groupId")
        return f"Joined group {_label(label)}"
    if kind == "alias":
        return f"Identified as {_label(raw.get('userId'))}"
    return kind


def _company_id(value: Any) -> bool:
    """A usable company id: a non-empty string, or a number."""
    return (isinstance(value, str) and value != "") or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _label(value: Any) -> str:
    """A label as a JSON value's text (SQL's `->>`): a string as it is, nothing for null,
    anything else as Postgres writes it."""
    if value is None:
        return ""
    return value if isinstance(value, str) else jsonb_text(value)


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _string(value: Any) -> str | None:
    # Raw events are stored as received: a number where a string belongs is not an error
    # at ingest, but the API promises strings.
    return value if isinstance(value, str) else None
