"""Reading customers, their feeds and groups, always inside one team (SPEC §4).

Every list is keyset-paged: a page ends at the sort values of its last item and the next
page starts strictly after them, so items that existed when paging began are neither
repeated nor skipped whatever arrives in between (a late, old-dated event lands behind
or ahead of the reader, never under a page boundary).

The feed reads `events` through `ix_events_feed (team_id, customer_id, event_time,
tiebreak, id)`, in index order, never sorting the customer's events. A filtered feed reads
that index through a bounded window (`FEED_SCAN_BUDGET` events per request), so a rare
filter over a long timeline costs a bounded amount per page instead of a scan of all of
it: such a page can be short, or empty, and still carry a `next_cursor`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, TextClause, text

from schemas.api import CustomerPosition, FeedPosition, MemberPosition

# Events a filtered feed request reads at most, through the index, before it answers.
FEED_SCAN_BUDGET = 10_000

_SUMMARY_COLUMNS = "c.id, c.email, c.name, c.first_seen, c.last_seen, c.event_count"


# -- customers -----------------------------------------------------------------------


def resolve_customer(connection: Connection, team_id: int, customer_id: int) -> tuple[int, bool] | None:
    """(the live customer id, whether it was merged away) or None when unknown in this team.

    The fold flattens merge chains (`merged_into` always names a live customer).
    """
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


def load_profile(connection: Connection, team_id: int, customer_id: int) -> dict[str, Any] | None:
    """The profile of a live customer, or None."""
    params = {"team": team_id, "id": customer_id}
    customer = connection.execute(
        text(
            f"SELECT {_SUMMARY_COLUMNS} FROM customers c "
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
    profile = _summaries(connection, team_id, [customer])[0]
    profile["traits"] = {key: value for key, value in traits}
    profile["groups"] = [
        {"id": g.group_id, "name": g.name, "traits": g.traits, "joined_at": g.joined_at} for g in groups
    ]
    return profile


def _profile_sql() -> str:
    # `load_profile` dumped through ProfileSchema, built by Postgres in one statement.
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
                    'joined_at', {_iso_sql("m.joined_at")}
                ) ORDER BY m.joined_at, m.group_id)
                FROM memberships m
                LEFT JOIN groups g ON g.team_id = m.team_id AND g.group_id = m.group_id
                WHERE m.team_id = c.team_id AND m.customer_id = c.id), '[]'),
            'first_seen', {_iso_sql("c.first_seen")},
            'last_seen', {_iso_sql("c.last_seen")},
            'event_count', c.event_count
        )::text END AS profile
        FROM customers c
        WHERE c.team_id = :team AND c.id = :id
    """


def read_profile(connection: Connection, team_id: int, customer_id: int) -> tuple[int | None, str] | None:
    """(merged_into, the profile's JSON text; "" when merged), or None for an id unknown in the team.

    One statement (one snapshot, no transaction) for what `load_profile` reads in four and
    the route then dumps through ProfileSchema; the profile comes out as that dump would.
    """
    statement, _ = _prepared(_profile_sql())
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
            SELECT {_SUMMARY_COLUMNS} FROM customers c
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
    return _summaries(connection, team_id, rows), (
        CustomerPosition(last.last_seen, last.id) if last else None
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


def _summaries(connection: Connection, team_id: int, rows: Sequence[Any]) -> list[dict[str, Any]]:
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


# -- the feed ------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedFilter:
    """Which of a customer's events a feed shows (SPEC §4)."""

    types: Sequence[str] = field(default_factory=tuple)
    events: Sequence[str] = field(default_factory=tuple)
    exclude_events: Sequence[str] = field(default_factory=tuple)
    since: datetime | None = None
    until: datetime | None = None

    @property
    def narrows(self) -> bool:
        """True when the filter drops events inside the time window (not index conditions)."""
        return bool(self.types or self.events or self.exclude_events)


_FEED_COLUMNS = (
    "id, type, event_name, event_time, received_at, message_id, user_id, anonymous_id, "
    "group_id, previous_id, tiebreak, raw"
)


def _iso_sql(column: str) -> str:
    """`iso(column)` in SQL: UTC with Z, microseconds only when not zero (Python's isoformat).

    The colons are quoted text in the format so that no `:name` appears in the statement
    outside its parameters (pgbench, which runs it in bench/, would take `:MI` for one).
    """
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN to_char({utc}, 'US') = '000000' "
        f"""THEN to_char({utc}, 'YYYY-MM-DD"T"HH24":"MI":"SS"Z"') """
        f"""ELSE to_char({utc}, 'YYYY-MM-DD"T"HH24":"MI":"SS.US"Z"') END"""
    )


def _string_sql(value: str) -> str:
    """`_string(value)` of a jsonb value: itself when a JSON string, else SQL NULL (JSON null)."""
    return f"CASE WHEN jsonb_typeof({value}) = 'string' THEN {value} END"


def _object_sql(value: str) -> str:
    """`_object(value)` of a jsonb value: itself when a JSON object, else SQL NULL."""
    return f"CASE WHEN jsonb_typeof({value}) = 'object' THEN {value} END"


def _python_str_sql(value: str) -> str:
    """Python's `str()` of a jsonb value as `summary` formats it (ids are stored as strings)."""
    return (
        f"CASE jsonb_typeof({value}) WHEN 'string' THEN {value} #>> '{{}}' "
        f"WHEN 'boolean' THEN CASE WHEN {value} = 'true' THEN 'True' ELSE 'False' END "
        f"WHEN 'null' THEN 'None' WHEN 'number' THEN {value} #>> '{{}}' "
        f"WHEN 'object' THEN {value} #>> '{{}}' WHEN 'array' THEN {value} #>> '{{}}' ELSE 'None' END"
    )


# `feed_item`, in SQL: the item's JSON text is built by Postgres and passed through, so a
# page costs Python nothing per item. Keys in FeedItemSchema's order; every key present.
_FEED_ITEM_SQL = f"""json_build_object(
    'id', id::text,
    'type', type,
    'summary', CASE type
        WHEN 'track' THEN COALESCE(event_name, 'None')
        WHEN 'page' THEN CASE WHEN event_name <> '' THEN 'Viewed page ' || event_name ELSE 'Viewed a page' END
        WHEN 'screen' THEN
            CASE WHEN event_name <> '' THEN 'Viewed screen ' || event_name ELSE 'Viewed a screen' END
        WHEN 'identify' THEN 'Traits updated'
        WHEN 'group' THEN 'Joined group ' || {
    _python_str_sql(
        "CASE WHEN jsonb_typeof(raw -> 'traits' -> 'name') = 'string' "
        "THEN raw -> 'traits' -> 'name' ELSE raw -> 'groupId' END"
    )
}
        WHEN 'alias' THEN 'Identified as ' || {_python_str_sql("(raw -> 'userId')")}
        ELSE type END,
    'event', CASE WHEN type = 'track' THEN event_name END,
    'name', CASE WHEN type IN ('page', 'screen') THEN event_name END,
    'timestamp', {_iso_sql("event_time")},
    'received_at', {_iso_sql("received_at")},
    'message_id', message_id,
    'user_id', user_id,
    'anonymous_id', anonymous_id,
    'properties', CASE WHEN type NOT IN ('identify', 'group', 'alias')
        THEN COALESCE({_object_sql("(raw -> 'properties')")}, '{{}}'::jsonb) END,
    'traits', CASE WHEN type IN ('identify', 'group')
        THEN COALESCE({_object_sql("(raw -> 'traits')")}, '{{}}'::jsonb) END,
    'group_id', CASE WHEN type = 'group' THEN group_id END,
    'previous_id', CASE WHEN type = 'alias' THEN previous_id END,
    'context', json_build_object(
        'page_url', {_string_sql("(raw -> 'context' -> 'page' -> 'url')")},
        'page_title', {_string_sql("(raw -> 'context' -> 'page' -> 'title')")},
        'user_agent', {_string_sql("(raw -> 'context' -> 'userAgent')")},
        'ip', {_string_sql("(raw -> 'context' -> 'ip')")},
        'library', {_object_sql("(raw -> 'context' -> 'library')")}
    )
)"""


def feed_statements(filters: FeedFilter, *, newest_first: bool, after: bool) -> tuple[str, str | None]:
    """The SQL of one feed page, and of the probe that finds where a short page's scan ended.

    The page statement also resolves the customer (one row: `merged_into`, or no row for an
    unknown id) and builds the page's JSON in Postgres: `items` is the JSON text of the
    first `:shown` items, in order; `fetched` says whether one more followed; `last_*` is
    the keyset of the last item shown. Exposed so tests and bench/ can EXPLAIN exactly
    what the API runs.
    """
    direction, compare = ("DESC", "<") if newest_first else ("ASC", ">")
    keys = f"event_time {direction}, tiebreak {direction}, id {direction}"
    order = f"ORDER BY {keys}"
    window = ["team_id = :team", "customer_id = :customer"]
    if filters.since is not None:
        window.append("event_time >= :since")
    if filters.until is not None:
        window.append("event_time < :until")
    if after:
        window.append(f"(event_time, tiebreak, id) {compare} (:after_time, :after_tiebreak, :after_id)")
    in_window = " AND ".join(window)
    if not filters.narrows:
        rows = f"SELECT {_FEED_COLUMNS} FROM events WHERE {in_window} {order} LIMIT :limit"
        probe = None
    else:
        # The inner LIMIT keeps the index order and bounds the scan; the outer LIMIT stops
        # it as soon as a page is full, so a common filter reads barely more than a page.
        rows = f"""
            SELECT {_FEED_COLUMNS} FROM (
                SELECT {_FEED_COLUMNS} FROM events WHERE {in_window} {order} LIMIT :budget
            ) window_events
            WHERE {_narrowing(filters)}
            {order}
            LIMIT :limit
        """
        probe = f"""
            SELECT event_time, tiebreak, id FROM events WHERE {in_window}
            {order} OFFSET :budget - 1 LIMIT 1
        """
    # The row number follows the rows' own order (no sort); json_agg's ORDER BY is the
    # order they already come in.
    page = f"""
        SELECT c.merged_into, page.items::text AS items, page.fetched,
               page.last_time, page.last_tiebreak, page.last_id
        FROM customers c
        LEFT JOIN LATERAL (
            SELECT COALESCE(json_agg(item ORDER BY {keys}) FILTER (WHERE n <= :shown), '[]') AS items,
                   count(*) AS fetched,
                   max(event_time) FILTER (WHERE n = :shown) AS last_time,
                   max(tiebreak) FILTER (WHERE n = :shown) AS last_tiebreak,
                   max(id) FILTER (WHERE n = :shown) AS last_id
            FROM (
                SELECT {_FEED_ITEM_SQL} AS item, event_time, tiebreak, id,
                       row_number() OVER ({order}) AS n
                FROM ({rows}) page_events
            ) numbered
        ) page ON c.merged_into IS NULL
        WHERE c.team_id = :team AND c.id = :customer
    """
    return page, probe


def _narrowing(filters: FeedFilter) -> str:
    conditions = []
    if filters.events:
        shown = "(type = 'track' AND event_name = ANY(:events))"
        others = [kind for kind in filters.types if kind != "track"]
        conditions.append(f"({shown} OR type = ANY(:other_types))" if others else shown)
    elif filters.types:
        conditions.append("type = ANY(:types)")
    if filters.exclude_events:
        conditions.append("NOT (type = 'track' AND COALESCE(event_name = ANY(:exclude_events), false))")
    return " AND ".join(conditions)


def feed_parameters(
    team_id: int,
    customer_id: int,
    filters: FeedFilter,
    *,
    limit: int,
    after: FeedPosition | None,
    budget: int = FEED_SCAN_BUDGET,
) -> dict[str, Any]:
    """The bound values of `feed_statements` (a page of `limit` plus one to see if more follow)."""
    params: dict[str, Any] = {
        "team": team_id,
        "customer": customer_id,
        "shown": limit,
        "limit": limit + 1,
        "budget": max(budget, limit + 1),
        "since": filters.since,
        "until": filters.until,
        "types": list(filters.types),
        "other_types": [kind for kind in filters.types if kind != "track"],
        "events": list(filters.events),
        "exclude_events": list(filters.exclude_events),
    }
    if after is not None:
        params.update(after_time=after.event_time, after_tiebreak=after.tiebreak, after_id=after.id)
    return params


@dataclass(frozen=True)
class FeedPage:
    """A feed page as read: the customer's merge state and, for a live one, the items' JSON."""

    merged_into: int | None
    items_json: str  # a JSON array of items in FeedItemSchema's shape ("[]" for a merged customer)
    next_position: FeedPosition | None


def read_feed_page(
    connection: Connection,
    team_id: int,
    customer_id: int,
    *,
    limit: int,
    after: FeedPosition | None = None,
    newest_first: bool = True,
    filters: FeedFilter | None = None,
    budget: int = FEED_SCAN_BUDGET,
) -> FeedPage | None:
    """One page of a customer's timeline by event time, or None for an id unknown in the team.

    One statement answers an unfiltered page (customer, items, cursor), so it needs no
    transaction. For a filtered page the page and the probe must see one snapshot
    (REPEATABLE READ on the caller's connection): otherwise an event moved out of the
    window between the two would shift the probe's end past events the page never read.
    """
    filters = filters or FeedFilter()
    page_sql, probe_sql = feed_statements(filters, newest_first=newest_first, after=after is not None)
    params = feed_parameters(team_id, customer_id, filters, limit=limit, after=after, budget=budget)
    statement, names = _prepared(page_sql)
    row = connection.execute(statement, {name: params[name] for name in names}).first()
    if row is None:
        return None
    if row.merged_into is not None:
        return FeedPage(int(row.merged_into), "[]", None)
    if row.fetched > limit:
        return FeedPage(None, row.items, FeedPosition(row.last_time, row.last_tiebreak, row.last_id))
    if probe_sql is None:
        return FeedPage(None, row.items, None)
    # A short page of a filtered feed: did it read to the end, or stop at the budget?
    statement, names = _prepared(probe_sql)
    end = connection.execute(statement, {name: params[name] for name in names}).first()
    return FeedPage(None, row.items, FeedPosition(end.event_time, end.tiebreak, end.id) if end else None)


@lru_cache(maxsize=512)
def _prepared(sql: str) -> tuple[TextClause, tuple[str, ...]]:
    """The statement for `sql` and the parameters it binds, made once per shape of query.

    Parsing the page statement for its binds costs ~0.3 ms; there are a few dozen shapes.
    """
    return text(sql), tuple(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", sql)))


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


def feed_item(row: Any) -> dict[str, Any]:
    """A timeline entry as agents read it (SPEC §4), ready for JSON: every key always present.

    The reference for `_FEED_ITEM_SQL`, which the feed runs: Postgres builds the items'
    JSON and the route passes it through (Python building and re-encoding 50 items cost
    ~4 ms a page). tests/app/test_customers.py holds the two to the same output.
    """
    raw: dict[str, Any] = row.raw if isinstance(row.raw, dict) else {}
    context = _object(raw.get("context")) or {}
    page = _object(context.get("page")) or {}
    has_traits = row.type in ("identify", "group")
    return {
        "id": str(row.id),
        "type": row.type,
        "summary": summary(row.type, row.event_name, raw),
        "event": _string(row.event_name) if row.type == "track" else None,
        "name": _string(row.event_name) if row.type in ("page", "screen") else None,
        "timestamp": iso(row.event_time),
        "received_at": iso(row.received_at),
        "message_id": row.message_id,
        "user_id": row.user_id,
        "anonymous_id": row.anonymous_id,
        "properties": None if has_traits or row.type == "alias" else (_object(raw.get("properties")) or {}),
        "traits": (_object(raw.get("traits")) or {}) if has_traits else None,
        "group_id": row.group_id if row.type == "group" else None,
        "previous_id": row.previous_id if row.type == "alias" else None,
        "context": {
            "page_url": _string(page.get("url")),
            "page_title": _string(page.get("title")),
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
        return "Traits updated"
    if kind == "group":
        traits = _object(raw.get("traits")) or {}
        label = traits.get("name") if isinstance(traits.get("name"), str) else raw.get("groupId")
        return f"Joined group {label}"
    if kind == "alias":
        return f"Identified as {raw.get('userId')}"
    return kind


def iso(value: datetime) -> str:
    """ISO-8601 in UTC with Z, as `schemas.api.Instant` writes it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _string(value: Any) -> str | None:
    # Raw events are stored as received: a number where a string belongs is not an error
    # at ingest, but the API promises strings.
    return value if isinstance(value, str) else None


# -- groups --------------------------------------------------------------------------


def load_group(
    connection: Connection,
    team_id: int,
    group_id: str,
    *,
    limit: int,
    after: MemberPosition | None = None,
) -> tuple[dict[str, Any], MemberPosition | None] | None:
    """A group with its traits and one page of members (by joined_at, then id), or None."""
    params: dict[str, Any] = {"team": team_id, "group": group_id, "limit": limit + 1}
    group = connection.execute(
        text(
            "SELECT group_id, name, first_seen, last_seen FROM groups "
            "WHERE team_id = :team AND group_id = :group"
        ),
        params,
    ).first()
    if group is None:
        return None
    traits = connection.execute(
        text("SELECT key, value FROM group_traits WHERE team_id = :team AND group_id = :group ORDER BY key"),
        params,
    ).all()
    member_count = connection.execute(
        text("SELECT count(*) FROM memberships WHERE team_id = :team AND group_id = :group"), params
    ).scalar_one()
    keyset = ""
    if after is not None:
        keyset = "AND (m.joined_at, m.customer_id) > (:after_joined, :after_id)"
        params.update(after_joined=after.joined_at, after_id=after.customer_id)
    rows = connection.execute(
        text(
            f"""
            SELECT {_SUMMARY_COLUMNS}, m.joined_at
            FROM memberships m
            JOIN customers c ON c.team_id = m.team_id AND c.id = m.customer_id
            WHERE m.team_id = :team AND m.group_id = :group AND c.merged_into IS NULL {keyset}
            ORDER BY m.joined_at, m.customer_id
            LIMIT :limit
            """
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    members = _summaries(connection, team_id, rows)
    for member, row in zip(members, rows, strict=True):
        member["joined_at"] = row.joined_at
    last = rows[-1] if rows and more else None
    found = {
        "id": group.group_id,
        "name": group.name,
        "traits": {key: value for key, value in traits},
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
        "member_count": member_count,
        "members": members,
    }
    return found, (MemberPosition(last.joined_at, last.id) if last else None)
