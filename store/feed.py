"""Reading a customer's feed: one keyset page of the timeline, built as JSON by Postgres.

Every page is keyset-paged: it ends at the sort values of its last item and the next
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from schemas.api import SHOWN_KEYS, SHOWN_VALUE, FeedPosition
from store.statements import (
    iso_sql,
    object_cut_sql,
    prepared,
    shown_object_sql,
    shown_value_sql,
    value_cut_sql,
)

# Events a filtered feed request reads at most, through the index, before it answers.
FEED_SCAN_BUDGET = 10_000


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


def _string_sql(value: str) -> str:
    """A jsonb value when a JSON string: itself when a JSON string, else SQL NULL (JSON null)."""
    return f"CASE WHEN jsonb_typeof({value}) = 'string' THEN {value} END"


def _object_sql(value: str) -> str:
    """A jsonb value when a JSON object: itself when a JSON object, else SQL NULL."""
    return f"CASE WHEN jsonb_typeof({value}) = 'object' THEN {value} END"


def _python_str_sql(value: str) -> str:
    """Python's `str()` of a jsonb value, as an item's summary shows it (ids are stored as strings)."""
    return (
        f"CASE jsonb_typeof({value}) WHEN 'string' THEN {value} #>> '{{}}' "
        f"WHEN 'boolean' THEN CASE WHEN {value} = 'true' THEN 'True' ELSE 'False' END "
        f"WHEN 'null' THEN 'None' WHEN 'number' THEN {value} #>> '{{}}' "
        f"WHEN 'object' THEN {value} #>> '{{}}' WHEN 'array' THEN {value} #>> '{{}}' ELSE 'None' END"
    )


# The company an identify names in `traits.company` (an object with an id, or a string),
# when it leaves it (`remove: true`, Intercom's convention): its name, else its id.
_COMPANY = "(raw -> 'traits' -> 'company')"
_LEAVES_COMPANY = (
    f"(jsonb_typeof({_COMPANY}) = 'object' AND {_COMPANY} -> 'remove' = 'true'::jsonb "
    f"AND jsonb_typeof({_COMPANY} -> 'id') IN ('string', 'number') AND {_COMPANY} ->> 'id' <> '')"
)
_COMPANY_LABEL = (
    f"CASE WHEN jsonb_typeof({_COMPANY} -> 'name') = 'string' THEN {_COMPANY} -> 'name' "
    f"ELSE {_COMPANY} -> 'id' END"
)


# What an identify changed: each trait the event set (trait_history, written by the fold)
# against the customer's value just before it by (event time, tiebreak), one probe of
# ix_trait_history_previous per trait, in the primary key's order (normalised key, so no
# sort); only traits whose value differs (a first value has `from` null). Order-independent:
# it reads the stored events' history, not their arrival. Capped (the feed's items), it
# examines the event's first SHOWN_KEYS traits only, each value cut as `shown_value_sql`.
def _changes_sql(capped: bool) -> str:
    shown = "LIMIT " + str(SHOWN_KEYS) if capped else ""

    def value(column: str) -> str:
        return shown_value_sql(column, SHOWN_VALUE) if capped else column

    return f"""COALESCE((
        SELECT json_agg(
            json_build_object('trait', h.key, 'from', {value("p.value")}, 'to', {value("h.value")})
            ORDER BY h.key_norm)
        FROM (
            SELECT set_here.* FROM trait_history set_here
            WHERE set_here.team_id = :team AND set_here.event_id = id
            ORDER BY set_here.key_norm {shown}
        ) h
        LEFT JOIN LATERAL (
            SELECT q.value FROM trait_history q
            WHERE q.team_id = h.team_id AND q.customer_id = h.customer_id AND q.key_norm = h.key_norm
              AND (q.event_time, q.tiebreak) < (h.event_time, h.tiebreak)
            ORDER BY q.event_time DESC, q.tiebreak DESC
            LIMIT 1
        ) p ON true
        WHERE p.value IS NULL OR p.value <> h.value
    ), '[]')"""


# Whether capped changes leave something out: the event set more traits than it examines,
# or a value it shows as `to` was cut (a `from` is the `to` of an earlier item, marked there).
_CHANGES_CUT_SQL = f"""(SELECT count(*) > {SHOWN_KEYS}
               OR COALESCE(bool_or({value_cut_sql("set_here.value", SHOWN_VALUE)}), false)
        FROM (
            SELECT value FROM trait_history
            WHERE team_id = :team AND event_id = id ORDER BY key_norm LIMIT {SHOWN_KEYS + 1}
        ) set_here)"""


# An identify whose traits and context.traits are short together (written, under 8
# characters a key for SHOWN_KEYS + 1 keys, and under SHOWN_VALUE) surely set at most
# SHOWN_KEYS traits, none with a long value: its changes are whole without reading them.
_SETS_FEW_TRAITS = (
    "(length(COALESCE(raw -> 'traits', '{}')::text)"
    " + length(COALESCE(raw -> 'context' -> 'traits', '{}')::text)"
    f" < {min(8 * (SHOWN_KEYS + 1), SHOWN_VALUE)})"
)


def _page_sql(key: str) -> str:
    """A page's `key` (url, title, path, referrer): context.page's, else, for a page call,
    its properties' (server-side `page` calls carry them there)."""
    page = _string_sql(f"(raw -> 'context' -> 'page' -> '{key}')")
    properties = _string_sql(f"(raw -> 'properties' -> '{key}')")
    return f"COALESCE({page}, CASE WHEN type = 'page' THEN {properties} END)"


# A feed item, in SQL: the item's JSON text is built by Postgres and passed through, so a
# page costs Python nothing per item (Python building and re-encoding 50 items cost ~4 ms
# a page); tests/store/reference.py's `feed_item` is the same in Python, held to it.
# Keys in FeedItemSchema's order; every key present. `capped`: as the feed shows it (at
# most SHOWN_KEYS keys of properties and traits, values cut at SHOWN_VALUE characters,
# `truncated` naming what was left out); else whole (`GET .../feed/{event_id}`).
def feed_item_sql(capped: bool) -> str:
    """The SQL expression of one feed item's JSON, over an `events` row (and `:team`)."""
    properties = _object_sql("(raw -> 'properties')")
    traits = _object_sql("(raw -> 'traits')")

    def shown(value: str) -> str:
        return shown_object_sql(value, SHOWN_KEYS, SHOWN_VALUE) if capped else value

    def cut(value: str) -> str:
        return object_cut_sql(value, SHOWN_KEYS, SHOWN_VALUE)

    truncated = (
        f"""to_json(array_remove(ARRAY[
        CASE WHEN type NOT IN ('identify', 'group', 'alias') AND {cut(properties)} THEN 'properties' END,
        CASE WHEN type IN ('identify', 'group') AND {cut(traits)} THEN 'traits' END,
        CASE WHEN type = 'identify' AND CASE WHEN {_SETS_FEW_TRAITS} THEN false ELSE {_CHANGES_CUT_SQL} END
            THEN 'changes' END
    ], NULL))"""
        if capped
        else "'[]'::json"
    )
    return f"""json_build_object(
    'id', id::text,
    'type', type,
    'summary', CASE type
        WHEN 'track' THEN COALESCE(event_name, 'None')
        WHEN 'page' THEN CASE WHEN event_name <> '' THEN 'Viewed page ' || event_name ELSE 'Viewed a page' END
        WHEN 'screen' THEN
            CASE WHEN event_name <> '' THEN 'Viewed screen ' || event_name ELSE 'Viewed a screen' END
        WHEN 'identify' THEN CASE WHEN {_LEAVES_COMPANY}
            THEN 'Left group ' || {_python_str_sql(f"({_COMPANY_LABEL})")} ELSE 'Traits updated' END
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
    'timestamp', {iso_sql("event_time")},
    'received_at', {iso_sql("received_at")},
    'message_id', message_id,
    'user_id', user_id,
    'anonymous_id', anonymous_id,
    'properties', CASE WHEN type NOT IN ('identify', 'group', 'alias')
        THEN COALESCE({shown(properties)}, '{{}}'::jsonb) END,
    'traits', CASE WHEN type IN ('identify', 'group')
        THEN COALESCE({shown(traits)}, '{{}}'::jsonb) END,
    'group_id', CASE WHEN type = 'group' THEN group_id END,
    'previous_id', CASE WHEN type = 'alias' THEN previous_id END,
    'changes', CASE WHEN type = 'identify' THEN {_changes_sql(capped)} END,
    'context', json_build_object(
        'page_url', {_page_sql("url")},
        'page_title', {_page_sql("title")},
        'page_path', {_page_sql("path")},
        'page_referrer', {_page_sql("referrer")},
        'user_agent', {_string_sql("(raw -> 'context' -> 'userAgent')")},
        'ip', {_string_sql("(raw -> 'context' -> 'ip')")},
        'library', {_object_sql("(raw -> 'context' -> 'library')")}
    ),
    'truncated', {truncated}
)"""


# The feed's items: capped.
FEED_ITEM_SQL = feed_item_sql(capped=True)


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
                SELECT {FEED_ITEM_SQL} AS item, event_time, tiebreak, id,
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
    if probe_sql is not None:
        # A filtered page reads the timeline index in order up to its budget. No statistics
        # are kept on team_id (migration 0009), so a timeline is estimated smaller than it
        # may be, and a bitmap scan and sort of all of it would look cheap: not for this
        # transaction (the fold's rule too, workers/fold.py `take_batch`).
        connection.execute(text("SELECT set_config('enable_bitmapscan', 'off', true)"))
    statement, names = prepared(page_sql)
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
    statement, names = prepared(probe_sql)
    end = connection.execute(statement, {name: params[name] for name in names}).first()
    return FeedPage(None, row.items, FeedPosition(end.event_time, end.tiebreak, end.id) if end else None)


# One item whole, by its id: the way to what a capped item left out.
_WHOLE_ITEM_SQL = f"""
    SELECT c.merged_into, whole.item::text AS item
    FROM customers c
    LEFT JOIN LATERAL (
        SELECT {feed_item_sql(capped=False)} AS item
        FROM events
        WHERE team_id = :team AND id = :event AND customer_id = c.id
    ) whole ON c.merged_into IS NULL
    WHERE c.team_id = :team AND c.id = :customer
"""


def read_feed_item(
    connection: Connection, team_id: int, customer_id: int, event_id: int
) -> tuple[int | None, str | None] | None:
    """(merged_into, one item of the customer's feed whole, as JSON text; None when the
    customer has no such event), or None for a customer id unknown in the team.

    One statement by the events primary key. Whole: every property and trait, every
    change; the event itself is bounded at ingest (32 KiB, MAX_TRAIT_KEYS trait keys).
    """
    statement, names = prepared(_WHOLE_ITEM_SQL)
    params = {"team": team_id, "customer": customer_id, "event": event_id}
    row = connection.execute(statement, {name: params[name] for name in names}).first()
    if row is None:
        return None
    if row.merged_into is not None:
        return int(row.merged_into), None
    return None, row.item
