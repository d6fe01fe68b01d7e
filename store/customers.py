"""Reading customers inside one team: find one, read a profile, search (SPEC §4).

Lists are keyset-paged: a page ends at the sort values of its last item and the next
page starts strictly after them, so items that existed when paging began are neither
repeated nor skipped whatever arrives in between. A profile is built as JSON by Postgres
in one statement (`read_profile`), for `/customers/{id}` and `/customers/lookup` alike;
so is a page of search results (`search_customers`), as `store/answers/` declares them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

from schemas.api import (
    PROFILE_GROUPS,
    PROFILE_IDS,
    PROFILE_TRAITS,
    SHOWN_VALUE,
)
from schemas.cursors import InstantPosition
from store.answers.customer_list_item import CUSTOMER_LIST_ITEM
from store.answers.profile import GROUP_MEMBERSHIP, PROFILE
from store.snapshot import snapshot
from store.statements import normalised_key, prepared, shown_value_sql, value_cut_sql


def lookup_customer(connection: Connection, team_id: int, kind: str, value: str) -> int | None:
    """The live customer of a userId or anonymousId ('user'/'anonymous'), or of an email.

    Emails compare case-insensitively; when several customers share one, the most recently
    seen answers.
    """
    params = {"team": team_id, "v": value}
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
    else:
        statement = "SELECT customer_id FROM identities WHERE team_id = :team AND kind = :k AND value = :v"
        params["k"] = kind
    with snapshot(connection, several=False):
        found: int | None = connection.execute(text(statement), params).scalar()
    return found


def _profile_sql() -> str:
    # A live customer's profile (store/answers/profile.py), built by Postgres in one statement
    # (tests/store/reference.py holds it to the schema's dump of the same rows). Each list
    # is read once, through an index in order, stopped at its cap plus one (schemas.api:
    # PROFILE_IDS, PROFILE_TRAITS, PROFILE_GROUPS): the first `cap` are shown, the one
    # more says the list was cut (`truncated`).
    def identities(kind: str) -> str:
        return f"""
            SELECT json_agg(i.value ORDER BY i.n) FILTER (WHERE i.n <= {PROFILE_IDS}) AS shown,
                   count(*) > {PROFILE_IDS} AS cut
            FROM (SELECT value, row_number() OVER (ORDER BY kind, value) AS n FROM identities
                  WHERE team_id = c.team_id AND customer_id = c.id AND kind {kind}
                  ORDER BY kind, value LIMIT {PROFILE_IDS + 1}) i"""

    return f"""
        SELECT c.merged_into, CASE WHEN c.merged_into IS NULL THEN {PROFILE.sql()}::text END AS profile
        FROM customers c
        LEFT JOIN LATERAL ({identities("= 'user'")}) user_ids ON c.merged_into IS NULL
        LEFT JOIN LATERAL ({identities("<> 'user'")}) anonymous_ids ON c.merged_into IS NULL
        LEFT JOIN LATERAL (
            SELECT json_object_agg(t.key, {shown_value_sql("t.value", SHOWN_VALUE)} ORDER BY t.key)
                       FILTER (WHERE t.n <= {PROFILE_TRAITS}) AS shown,
                   count(*) > {PROFILE_TRAITS}
                       OR COALESCE(bool_or({value_cut_sql("t.value", SHOWN_VALUE)}), false) AS cut
            FROM (SELECT key, value, row_number() OVER (ORDER BY key_norm) AS n FROM customer_traits
                  WHERE team_id = c.team_id AND customer_id = c.id
                  ORDER BY key_norm LIMIT {PROFILE_TRAITS + 1}) t
        ) traits ON c.merged_into IS NULL
        LEFT JOIN LATERAL (
            SELECT json_agg({GROUP_MEMBERSHIP.sql()} ORDER BY m.joined_at, m.group_id)
                       FILTER (WHERE m.n <= {PROFILE_GROUPS}) AS shown,
                   count(*) > {PROFILE_GROUPS} AS cut
            FROM (SELECT *, row_number() OVER (ORDER BY group_id) AS n FROM memberships
                  WHERE team_id = c.team_id AND customer_id = c.id AND active
                  ORDER BY group_id LIMIT {PROFILE_GROUPS + 1}) m
        ) groups ON c.merged_into IS NULL
        WHERE c.team_id = :team AND c.id = :id
    """


PROFILE_SQL = _profile_sql()


def read_profile(connection: Connection, team_id: int, customer_id: int) -> tuple[int | None, str] | None:
    """(merged_into, the profile's JSON text; "" when merged), or None for an id unknown in the team.

    One statement, in autocommit (its own snapshot, no transaction); the profile is built
    as declared in store/answers/profile.py (`PROFILE`).
    """
    statement, _ = prepared(PROFILE_SQL)
    params = {"team": team_id, "id": customer_id, "now": datetime.now(UTC)}  # presence's clock
    with snapshot(connection, several=False):
        row = connection.execute(statement, params).first()
    if row is None:
        return None
    if row.merged_into is not None:
        return int(row.merged_into), ""
    return None, row.profile


@dataclass(frozen=True)
class CustomerPage:
    """A page of customers: their JSON, and where the next page starts (None at the end)."""

    items_json: str  # a JSON array of items in CustomerSummarySchema's shape
    next_position: InstantPosition | None


# Each item's JSON is built by Postgres as declared (CUSTOMER_LIST_ITEM) over the page's
# rows, which come in the list's order: the row number and json_agg's ORDER BY follow it
# (no sort), and one row more than `:shown` says whether another page follows.
_SEARCH_PAGE = f"""
    SELECT COALESCE(json_agg(item ORDER BY last_seen DESC NULLS LAST, id DESC)
                        FILTER (WHERE n <= :shown), '[]')::text AS items,
           count(*) AS fetched,
           max(last_seen) FILTER (WHERE n = :shown) AS last_seen,
           max(id) FILTER (WHERE n = :shown) AS last_id
    FROM (
        SELECT {CUSTOMER_LIST_ITEM.sql()} AS item, c.last_seen, c.id,
               row_number() OVER (ORDER BY c.last_seen DESC NULLS LAST, c.id DESC) AS n
        FROM (
            SELECT c.* FROM customers c
            WHERE {{conditions}}
            ORDER BY c.last_seen DESC NULLS LAST, c.id DESC
            LIMIT :limit
        ) c
    ) numbered
"""


def search_customers(
    connection: Connection,
    team_id: int,
    query: str,
    *,
    limit: int,
    after: InstantPosition | None = None,
) -> CustomerPage:
    """Customers whose email, name, userId or anonymousId starts with `query` (any case),
    most recently seen first; every live customer when `query` is empty.

    A narrow prefix ("jane.doe@") is answered from the prefix indexes: the few matches are
    fetched and sorted. A broad one ("j") would match too many to sort per page, and is
    answered by walking `ix_customers_recent` and keeping the matches, which are dense.
    Customers with no events left (an anonymous visitor whose history moved to the person
    who claimed it) have nothing to show and are not listed. The page itself is one
    statement that builds its JSON (store/answers/customer_list_item.py); with a query,
    it and the statements that find the candidates run in one snapshot.
    """
    params: dict[str, Any] = {"team": team_id, "shown": limit, "limit": limit + 1}
    conditions = ["c.team_id = :team", "c.merged_into IS NULL", "c.last_seen IS NOT NULL"]
    if after is not None:
        conditions.append("(c.last_seen, c.id) < (:after_seen, :after_id)")
        params.update(after_seen=after.at, after_id=after.id)
    with snapshot(connection, several=bool(query)):  # the prefix's candidates and the page agree
        if query:
            conditions.append(_matching(connection, team_id, query, params))
        row = connection.execute(
            text(_SEARCH_PAGE.replace("{conditions}", " AND ".join(conditions))), params
        ).one()
    more = row.fetched > limit
    return CustomerPage(row.items, InstantPosition(row.last_seen, row.last_id) if more else None)


def _matching(connection: Connection, team_id: int, query: str, params: dict[str, Any]) -> str:
    """The condition a customer matching the prefix `query` meets (its values put in `params`)."""
    low, high = prefix_range(_lower(connection, query))
    params.update(low=low, high=high)
    candidates = _search_candidates(connection, team_id, low, high)
    if candidates is not None:
        params["candidates"] = candidates
        return "c.id = ANY(:candidates)"
    # The customer's own few identities, through ix_identities_customer: a scalar
    # subquery (an EXISTS may become one hashed scan of every matching identity,
    # most of the team's for a broad prefix) with a prefix test no index serves.
    params["low_length"] = len(low)
    return (
        "({email} OR {name} OR COALESCE((SELECT true FROM identities i WHERE i.team_id = c.team_id "
        "AND i.customer_id = c.id AND substr(lower(i.value), 1, :low_length) = :low LIMIT 1), "
        "false))".format(email=_in_range("lower(c.email)", high), name=_in_range("lower(c.name)", high))
    )


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


def customer_state(connection: Connection, team_id: int, customer_id: int) -> tuple[bool, int | None]:
    """(whether the id is a customer of the team, the customer it was merged into or None)."""
    row = connection.execute(
        text("SELECT merged_into FROM customers WHERE team_id = :team AND id = :id"),
        {"team": team_id, "id": customer_id},
    ).first()
    if row is None:
        return False, None
    return True, (int(row.merged_into) if row.merged_into is not None else None)


def read_traits(
    connection: Connection,
    team_id: int,
    customer_id: int,
    include: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[Any]:
    """A customer's traits (key, value, updated_at, message_id), by normalised key; only
    `include`'s keys (compared normalised) when given; `limit` of them after the first
    `offset` (a page: the primary key in order, so a page costs what it holds).

    `updated_at` is the event time of the event that set the value; its messageId comes
    from that event, found by the feed index (the customer's event at that time and
    tiebreak).
    """
    only = ""
    params: dict[str, Any] = {"team": team_id, "c": customer_id, "offset": offset, "limit": limit}
    if include is not None:
        only = f"AND t.key_norm IN (SELECT {normalised_key('k')} FROM unnest(CAST(:include AS text[])) AS k)"
        params["include"] = list(include)
    return list(
        connection.execute(
            text(
                f"""
                SELECT t.key, t.value, t.event_time AS updated_at, e.message_id
                FROM (
                    SELECT * FROM customer_traits t
                    WHERE t.team_id = :team AND t.customer_id = :c {only}
                    ORDER BY t.key_norm OFFSET :offset LIMIT :limit
                ) t
                LEFT JOIN LATERAL (
                    SELECT message_id FROM events e
                    WHERE e.team_id = t.team_id AND e.customer_id = t.customer_id
                      AND e.event_time = t.event_time AND e.tiebreak = t.tiebreak
                    LIMIT 1) e ON true
                ORDER BY t.key_norm
                """
            ),
            params,
        ).all()
    )


# A customer's identities with their first events, in one pass over the customer's
# timeline: each event offers its userId and its anonymousId, and the earliest offer per
# id (by the feed's order) is its first sighting. The email's comes from the trait history.
# Exposed so tests and bench/ can EXPLAIN what the API runs.
EXTERNAL_IDS_SQL = """
    WITH firsts AS (
        SELECT DISTINCT ON (offered.kind, offered.value)
               offered.kind, offered.value, e.event_time, e.message_id
        FROM events e
        CROSS JOIN LATERAL (VALUES ('user', e.user_id), ('anonymous', e.anonymous_id)) offered(kind, value)
        WHERE e.team_id = :team AND e.customer_id = :c AND offered.value IS NOT NULL
        ORDER BY offered.kind, offered.value, e.event_time, e.tiebreak, e.id
    )
    SELECT CASE i.kind WHEN 'user' THEN 'user_id' ELSE 'anonymous_id' END AS type, i.value,
           f.event_time AS first_seen, f.message_id AS first_message_id
    FROM identities i
    LEFT JOIN firsts f
      ON f.kind = CASE WHEN i.kind = 'user' THEN 'user' ELSE 'anonymous' END AND f.value = i.value
    WHERE i.team_id = :team AND i.customer_id = :c
    UNION ALL
    SELECT 'email', c.email, f.event_time, f.message_id
    FROM customers c
    LEFT JOIN LATERAL (
        SELECT h.event_time, e.message_id FROM trait_history h
        JOIN events e ON e.team_id = h.team_id AND e.id = h.event_id
        WHERE h.team_id = c.team_id AND h.customer_id = c.id AND h.key_norm = 'email'
          AND h.value = to_jsonb(c.email)
        ORDER BY h.event_time, h.tiebreak
        LIMIT 1) f ON true
    WHERE c.team_id = :team AND c.id = :c AND c.email IS NOT NULL
    ORDER BY first_seen NULLS LAST, type, value
    OFFSET :offset LIMIT :limit
"""


def read_external_ids(
    connection: Connection, team_id: int, customer_id: int, *, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """A page of a customer's userIds, anonymousIds and email, each with its first event
    (time, messageId), earliest first: `limit` of them after the first `offset`.

    An id's first event is the customer's earliest event carrying it; all of them come
    from one pass over the customer's timeline (`EXTERNAL_IDS_SQL`), never a walk per
    id. The email's is the identify that first set the current email (the trait history).
    """
    rows = connection.execute(
        text(EXTERNAL_IDS_SQL), {"team": team_id, "c": customer_id, "offset": offset, "limit": limit}
    )
    return [dict(row._mapping) for row in rows]


def read_memberships(
    connection: Connection, team_id: int, customer_id: int, *, limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """A page of the groups a customer is a member of now, by groupId: `limit` of them after
    the first `offset`, each in GroupMembershipSchema's shape (built by Postgres, as the
    profile's are: `store/answers/profile.py`)."""
    rows = connection.execute(
        text(
            f"""
            SELECT {GROUP_MEMBERSHIP.sql()}::text AS membership
            FROM (
                SELECT * FROM memberships m
                WHERE m.team_id = :team AND m.customer_id = :c AND m.active
                ORDER BY m.group_id OFFSET :offset LIMIT :limit
            ) m
            ORDER BY m.group_id
            """
        ),
        {"team": team_id, "c": customer_id, "offset": offset, "limit": limit},
    )
    return [json.loads(row.membership) for row in rows]


def read_event_summary(connection: Connection, team_id: int, customer_id: int) -> list[dict[str, Any]]:
    """Per track event name and per page or screen name: count, first and last event time.

    Read from `event_summaries`, which the fold keeps per batch: a few rows per customer
    whatever the length of the history.
    """
    rows = connection.execute(
        text(
            """
            SELECT type, NULLIF(name, '') AS name, event_count AS count,
                   first_at AS first_seen, last_at AS last_seen
            FROM event_summaries
            WHERE team_id = :team AND customer_id = :c
            ORDER BY event_count DESC, type, name COLLATE "C"
            """
        ),
        {"team": team_id, "c": customer_id},
    )
    return [dict(row._mapping) for row in rows]
