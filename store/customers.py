"""Reading customers and their feeds, always inside one team."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class FeedPosition:
    """Where a feed page ends: the keyset (event_time, tiebreak, id) of its last item."""

    event_time: datetime
    tiebreak: int
    id: int

    def encode(self) -> str:
        raw = json.dumps([self.event_time.isoformat(), self.tiebreak, self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> FeedPosition:
        """Raises ValueError for a cursor we did not make."""
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            when, tiebreak, event_id = json.loads(base64.urlsafe_b64decode(padded))
            position = cls(datetime.fromisoformat(when), int(tiebreak), int(event_id))
        except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError("not a cursor from this API") from error
        if position.event_time.tzinfo is None:
            raise ValueError("not a cursor from this API")
        return position


def resolve_customer(connection: Connection, team_id: int, customer_id: int) -> tuple[int, bool] | None:
    """(the live customer id, whether it was merged away) or None when unknown."""
    row = connection.execute(
        text("SELECT id, merged_into FROM customers WHERE team_id = :team AND id = :id"),
        {"team": team_id, "id": customer_id},
    ).first()
    if row is None:
        return None
    if row.merged_into is not None:
        return int(row.merged_into), True
    return int(row.id), False


def lookup_customer(connection: Connection, team_id: int, kind: str, value: str) -> int | None:
    """The customer of a userId, anonymousId ('user'/'anonymous') or email."""
    if kind == "email":
        statement = (
            "SELECT id FROM customers WHERE team_id = :team AND lower(email) = lower(:v) "
            "AND merged_into IS NULL ORDER BY last_seen DESC NULLS LAST, id DESC LIMIT 1"
        )
        return connection.execute(text(statement), {"team": team_id, "v": value}).scalar()
    return connection.execute(
        text("SELECT customer_id FROM identities WHERE team_id = :team AND kind = :k AND value = :v"),
        {"team": team_id, "k": kind, "v": value},
    ).scalar()


def load_profile(connection: Connection, team_id: int, customer_id: int) -> dict[str, Any] | None:
    """The profile of a live customer, or None."""
    params = {"team": team_id, "id": customer_id}
    customer = connection.execute(
        text(
            "SELECT id, email, name, first_seen, last_seen, event_count FROM customers "
            "WHERE team_id = :team AND id = :id AND merged_into IS NULL"
        ),
        params,
    ).first()
    if customer is None:
        return None
    identities = connection.execute(
        text(
            "SELECT kind, value FROM identities WHERE team_id = :team AND customer_id = :id "
            "ORDER BY kind, value"
        ),
        params,
    ).all()
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
    return {
        "id": str(customer.id),
        "user_ids": [v for k, v in identities if k == "user"],
        "anonymous_ids": [v for k, v in identities if k == "anonymous"],
        "email": customer.email,
        "name": customer.name,
        "traits": {key: value for key, value in traits},
        "groups": [
            {"id": g.group_id, "name": g.name, "traits": g.traits, "joined_at": _iso(g.joined_at)}
            for g in groups
        ],
        "first_seen": _iso(customer.first_seen),
        "last_seen": _iso(customer.last_seen),
        "event_count": customer.event_count,
    }


def load_feed(
    connection: Connection,
    team_id: int,
    customer_id: int,
    *,
    limit: int,
    after: FeedPosition | None = None,
    newest_first: bool = True,
) -> tuple[list[dict[str, Any]], FeedPosition | None]:
    """One page of a customer's timeline by event time, and where the next page starts."""
    direction, compare = ("DESC", "<") if newest_first else ("ASC", ">")
    keyset = ""
    params: dict[str, Any] = {"team": team_id, "customer": customer_id, "limit": limit + 1}
    if after is not None:
        keyset = f"AND (event_time, tiebreak, id) {compare} (:t, :b, :i)"
        params.update(t=after.event_time, b=after.tiebreak, i=after.id)
    rows = connection.execute(
        text(
            f"""
            SELECT id, type, event_name, event_time, received_at, message_id, group_id,
                   tiebreak, raw
            FROM events
            WHERE team_id = :team AND customer_id = :customer {keyset}
            ORDER BY event_time {direction}, tiebreak {direction}, id {direction}
            LIMIT :limit
            """
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [feed_item(row) for row in rows]
    last = rows[-1] if rows and more else None
    return items, (FeedPosition(last.event_time, last.tiebreak, last.id) if last else None)


def feed_item(row: Any) -> dict[str, Any]:
    """A timeline entry as agents read it (SPEC §4)."""
    raw: dict[str, Any] = row.raw
    context = raw.get("context") if isinstance(raw.get("context"), dict) else {}
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    item: dict[str, Any] = {
        "id": str(row.id),
        "type": row.type,
        "summary": summary(row.type, row.event_name, raw),
        "timestamp": _iso(row.event_time),
        "received_at": _iso(row.received_at),
        "message_id": row.message_id,
        "context": {
            "page_url": page.get("url"),
            "page_title": page.get("title"),
            "user_agent": context.get("userAgent"),
            "ip": context.get("ip"),
            "library": context.get("library"),
        },
    }
    if row.type == "track":
        item["event"] = row.event_name
    elif row.type in ("page", "screen"):
        item["name"] = row.event_name
    if row.type in ("identify", "group"):
        item["traits"] = raw.get("traits") if isinstance(raw.get("traits"), dict) else {}
    else:
        item["properties"] = raw.get("properties") if isinstance(raw.get("properties"), dict) else {}
    if row.type == "group":
        item["group_id"] = row.group_id
    if row.type == "alias":
        item["previous_id"] = raw.get("previousId")
    return item


def summary(kind: str, name: str | None, raw: dict[str, Any]) -> str:
    """A one-line label for the feed: what happened, in an agent's words."""
    if kind == "track":
        return str(name)
    if kind == "page":
        return f"Viewed page {name}" if name else "Viewed a page"
    if kind == "screen":
        return f"Viewed screen {name}" if name else "Viewed a screen"
    if kind == "identify":
        return "Traits updated"
    if kind == "group":
        traits = raw.get("traits") if isinstance(raw.get("traits"), dict) else {}
        label = traits.get("name") if isinstance(traits.get("name"), str) else raw.get("groupId")
        return f"Joined group {label}"
    if kind == "alias":
        return f"Identified as {raw.get('userId')}"
    return kind


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
