"""Reading customers inside one team: find one, read a profile, search (SPEC §4).

Lists are keyset-paged: a page ends at the sort values of its last item and the next
page starts strictly after them, so items that existed when paging began are neither
repeated nor skipped whatever arrives in between. A profile is built as JSON by Postgres
in one statement (`read_profile`), for `/customers/{id}` and `/customers/lookup` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from schemas.api import CustomerPosition
from store.statements import iso_sql, prepared

SUMMARY_COLUMNS = "c.id, c.email, c.name, c.first_seen, c.last_seen, c.event_count"


def lookup_customer(connection: Connection, team_id: int, kind: str, value: str) -> int | None:
    """The live customer of a userId or anonymousId ('user'/'anonymous'), or of an email.

    Emails compare case-insensitively; when several customers share one, the most recently
    seen answers.
    """
    if kind == "email":
        # OFFSET 0 keeps the planner from answering "the most recent" by walking every
        # customer in recency order and testing each email: the few with this email come
        # from the email index, then are sorted.
        statement = """
            SELECT id FROM (
                SELECT id, last_seen FROM customers
                WHERE team_id = :team AND lower(email) = lower(:v) AND merged_into IS NULL
                OFFSET 0
            ) with_email
            ORDER BY last_seen DESC NULLS LAST, id DESC LIMIT 1
        """
        found: int | None = connection.execute(text(statement), {"team": team_id, "v": value}).scalar()
        return found
    found = connection.execute(
        text("SELECT customer_id FROM identities WHERE team_id = :team AND kind = :k AND value = :v"),
        {"team": team_id, "k": kind, "v": value},
    ).scalar()
    return found


def _profile_sql() -> str:
    # A live customer's profile in ProfileSchema's shape, built by Postgres in one statement
    # (tests/store/reference.py holds it to the schema's dump of the same rows).
    return f"""
        SELECT c.merged_into, CASE WHEN c.merged_into IS NULL THEN json_build_object(
            'id', c.id::text,
            'user_ids', COALESCE((
                SELECT json_agg(i.value ORDER BY i.kind, i.value) FROM identities i
                WHERE i.team_id = c.team_id AND i.customer_id = c.id AND i.kind = 'user'), '[]'),
            'anonymous_ids', COALESCE((
                SELECT json_agg(i.value ORDER BY i.kind, i.value) FROM identities i
                WHERE i.team_id = c.team_id AND i.customer_id = c.id AND i.kind <> 'user'), '[]'),
            'email', c.email,
            'name', c.name,
            'traits', COALESCE((
                SELECT json_object_agg(t.key, t.value ORDER BY t.key) FROM customer_traits t
                WHERE t.team_id = c.team_id AND t.customer_id = c.id), '{{}}'),
            'groups', COALESCE((
                SELECT json_agg(json_build_object(
                    'id', m.group_id,
                    'name', g.name,
                    'traits', COALESCE((SELECT jsonb_object_agg(gt.key, gt.value) FROM group_traits gt
                                        WHERE gt.team_id = m.team_id AND gt.group_id = m.group_id), '{{}}'),
                    'joined_at', {iso_sql("m.joined_at")}
                ) ORDER BY m.joined_at, m.group_id)
                FROM memberships m
                LEFT JOIN groups g ON g.team_id = m.team_id AND g.group_id = m.group_id
                WHERE m.team_id = c.team_id AND m.customer_id = c.id), '[]'),
            'first_seen', {iso_sql("c.first_seen")},
            'last_seen', {iso_sql("c.last_seen")},
            'event_count', c.event_count
        )::text END AS profile
        FROM customers c
        WHERE c.team_id = :team AND c.id = :id
    """


def read_profile(connection: Connection, team_id: int, customer_id: int) -> tuple[int | None, str] | None:
    """(merged_into, the profile's JSON text; "" when merged), or None for an id unknown in the team.

    One statement (one snapshot, no transaction); the profile comes out as ProfileSchema's
    dump of the customer, its ids, traits and groups would.
    """
    statement, _ = prepared(_profile_sql())
    row = connection.execute(statement, {"team": team_id, "id": customer_id}).first()
    if row is None:
        return None
    if row.merged_into is not None:
        return int(row.merged_into), ""
    return None, row.profile


def search_customers(
    connection: Connection,
    team_id: int,
    query: str,
    *,
    limit: int,
    after: CustomerPosition | None = None,
) -> tuple[list[dict[str, Any]], CustomerPosition | None]:
    """Customers whose email, name, userId or anonymousId starts with `query` (any case),
    most recently seen first; every live customer when `query` is empty.

    A narrow prefix ("jane.doe@") is answered from the prefix indexes: the few matches are
    fetched and sorted. A broad one ("j") would match too many to sort per page, and is
    answered by walking `ix_customers_recent` and keeping the matches, which are dense.
    Customers with no events left (an anonymous visitor whose history moved to the person
    who claimed it) have nothing to show and are not listed.
    """
    params: dict[str, Any] = {"team": team_id, "limit": limit + 1}
    conditions = ["c.team_id = :team", "c.merged_into IS NULL", "c.last_seen IS NOT NULL"]
    if after is not None:
        conditions.append("(c.last_seen, c.id) < (:after_seen, :after_id)")
        params.update(after_seen=after.last_seen, after_id=after.id)
    if query:
        low, high = prefix_range(_lower(connection, query))
        params.update(low=low, high=high)
        candidates = _search_candidates(connection, team_id, low, high)
        if candidates is not None:
            conditions.append("c.id = ANY(:candidates)")
            params["candidates"] = candidates
        else:
            # The customer's own few identities, through ix_identities_customer: a scalar
            # subquery (an EXISTS may become one hashed scan of every matching identity,
            # most of the team's for a broad prefix) with a prefix test no index serves.
            params["low_length"] = len(low)
            conditions.append(
                "({email} OR {name} OR COALESCE((SELECT true FROM identities i WHERE i.team_id = c.team_id "
                "AND i.customer_id = c.id AND substr(lower(i.value), 1, :low_length) = :low LIMIT 1), "
                "false))".format(
                    email=_in_range("lower(c.email)", high), name=_in_range("lower(c.name)", high)
                )
            )
    rows = connection.execute(
        text(
            f"""
            SELECT {SUMMARY_COLUMNS} FROM customers c
            WHERE {" AND ".join(conditions)}
            ORDER BY c.last_seen DESC NULLS LAST, c.id DESC
            LIMIT :limit
            """
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows and more else None
    return summaries(connection, team_id, rows), (CustomerPosition(last.last_seen, last.id) if last else None)


# Up to this many prefix matches are fetched and sorted; beyond, the recency walk answers.
SEARCH_CANDIDATES = 2_000


def _search_candidates(connection: Connection, team_id: int, low: str, high: str | None) -> list[int] | None:
    """Every customer id matching the prefix range, or None when there are too many."""
    rows = connection.execute(
        text(
            f"""
            SELECT id FROM customers
            WHERE team_id = :team AND merged_into IS NULL AND {_in_range("lower(email)", high)}
            UNION ALL
            SELECT id FROM customers
            WHERE team_id = :team AND merged_into IS NULL AND {_in_range("lower(name)", high)}
            UNION ALL
            SELECT customer_id FROM identities WHERE team_id = :team AND {_in_range("lower(value)", high)}
            LIMIT :cap
            """
        ),
        {"team": team_id, "low": low, "high": high, "cap": SEARCH_CANDIDATES + 1},
    ).scalars()
    found = list(rows)
    # The three branches can name one customer thrice: a full LIMIT may still be few
    # customers, but it is the cheap, safe side to walk then.
    return None if len(found) > SEARCH_CANDIDATES else sorted(set(found))


def _in_range(expression: str, high: str | None) -> str:
    return f"{expression} ~>=~ :low" + (f" AND {expression} ~<~ :high" if high is not None else "")


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """[low, high): exactly the strings that start with `prefix`, in code-point order.

    `text_pattern_ops` indexes compare byte-wise, and UTF-8 byte order is code-point order,
    so the range is an index range scan whatever the plan (a `LIKE 'p%'` is only one when
    the planner sees the literal, which a cached generic plan does not).
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        following = last + 1 if last + 1 != 0xD800 else 0xE000  # surrogates are not text
        if following <= 0x10FFFF:
            return prefix, "".join(chars) + chr(following)
    return prefix, None


def _lower(connection: Connection, value: str) -> str:
    # Lower-cased by Postgres, so the bounds agree with the lower(...) the indexes hold
    # whatever the database's locale (Python's str.lower differs on some letters).
    lowered: str = connection.execute(text("SELECT lower(:v)"), {"v": value}).scalar_one()
    return lowered


def summaries(connection: Connection, team_id: int, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Customer rows (id, email, name, first_seen, last_seen, event_count) with their ids."""
    ids = [row.id for row in rows]
    user_ids: dict[int, list[str]] = {customer: [] for customer in ids}
    anonymous_ids: dict[int, list[str]] = {customer: [] for customer in ids}
    if ids:
        for customer, kind, value in connection.execute(
            text(
                "SELECT customer_id, kind, value FROM identities "
                "WHERE team_id = :team AND customer_id = ANY(:ids) ORDER BY kind, value"
            ),
            {"team": team_id, "ids": ids},
        ):
            (user_ids if kind == "user" else anonymous_ids)[customer].append(value)
    return [
        {
            "id": str(row.id),
            "user_ids": user_ids[row.id],
            "anonymous_ids": anonymous_ids[row.id],
            "email": row.email,
            "name": row.name,
            "first_seen": row.first_seen,
            "last_seen": row.last_seen,
            "event_count": row.event_count,
        }
        for row in rows
    ]
