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

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Connection, Row, text

from schemas.cursors import FeedPosition
from store.answers.feed_item import FEED_ITEM_SQL, feed_item_sql
from store.snapshot import snapshot

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


# A `:name` parameter of a statement (not the second colon of a `::` cast).
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=256)
def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with its `:name` parameters written `$1`, `$2`, ... (Postgres's own
    placeholders), and the names in that order; made once per shape of statement."""
    names = tuple(dict.fromkeys(_PARAMETER.findall(sql)))
    number = {name: f"${position}" for position, name in enumerate(names, 1)}
    return _PARAMETER.sub(lambda found: number[found.group(1)], sql), names


def first_row(connection: Connection, sql: str, params: Mapping[str, Any]) -> Row[Any] | None:
    """The first row of `sql`, its `:name` parameters bound from `params`.

    Sent through SQLAlchemy (its events, its errors and its handling of a lost
    connection, as any statement) with Postgres's `$n` placeholders, by a psycopg
    `RawCursor`: psycopg rewrites `%(name)s` placeholders with a regular expression on
    each execute of a statement over 4 KiB (the bound of its cache), and a feed page's
    statement is ~9 KiB, ~70 µs of CPU a page. Prepared by psycopg after a few executions
    on a connection, as any statement.
    """
    statement, names = numbered(sql)
    with _raw_cursors(connection):
        return connection.exec_driver_sql(statement, tuple(params[name] for name in names)).first()


@contextmanager
def _raw_cursors(connection: Connection) -> Iterator[None]:
    """The connection's cursors are psycopg RawCursors (`$n` placeholders) meanwhile."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    before = driver.cursor_factory
    driver.cursor_factory = psycopg.RawCursor
    try:
        yield
    finally:
        driver.cursor_factory = before


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

    One statement answers an unfiltered page (customer, items, cursor), so it runs in
    autocommit, no transaction. For a filtered page the page and the probe must see one
    snapshot (REPEATABLE READ): otherwise an event moved out of the window between the two
    would shift the probe's end past events the page never read. This function opens
    that snapshot itself (`store/snapshot.py`); callers pass any read connection.
    """
    filters = filters or FeedFilter()
    page_sql, probe_sql = feed_statements(filters, newest_first=newest_first, after=after is not None)
    params = feed_parameters(team_id, customer_id, filters, limit=limit, after=after, budget=budget)
    with snapshot(connection, several=probe_sql is not None):
        return _read_page(connection, page_sql, probe_sql, params, limit)


def _read_page(
    connection: Connection, page_sql: str, probe_sql: str | None, params: dict[str, Any], limit: int
) -> FeedPage | None:
    if probe_sql is not None:
        # A filtered page reads the timeline index in order up to its budget. No statistics
        # are kept on team_id (migration 0009), so a timeline is estimated smaller than it
        # may be, and a bitmap scan and sort of all of it would look cheap: not for this
        # transaction (the fold's rule too, workers/fold.py `take_batch`). Nor a scan and
        # sort of the months the timeline spans (a small month scans cheaper than its
        # index reads, and then the months' rows must be sorted together).
        connection.execute(
            text(
                "SELECT set_config('enable_bitmapscan', 'off', true), "
                "set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)"
            )
        )
    row = first_row(connection, page_sql, params)
    if row is None:
        return None
    if row.merged_into is not None:
        return FeedPage(int(row.merged_into), "[]", None)
    if row.fetched > limit:
        return FeedPage(None, row.items, FeedPosition(row.last_time, row.last_tiebreak, row.last_id))
    if probe_sql is None:
        return FeedPage(None, row.items, None)
    # A short page of a filtered feed: did it read to the end, or stop at the budget?
    end = first_row(connection, probe_sql, params)
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
    params = {"team": team_id, "customer": customer_id, "event": event_id}
    with snapshot(connection, several=False):
        row = first_row(connection, _WHOLE_ITEM_SQL, params)
    if row is None:
        return None
    if row.merged_into is not None:
        return int(row.merged_into), None
    return None, row.item


# -- a customer's activity by day (the console's chart, app/console/chart.py) ---------

# Each day's count is one range of the feed index, read index-only (event_time is in it;
# no row is visited where the heap is all-visible, as weeks-old rows are once vacuumed):
# no sort, no function of each event, only the count of each range.
_ACTIVITY_SQL = """
    SELECT day.n, (SELECT count(*) FROM events
                   WHERE team_id = :team AND customer_id = :customer
                     AND event_time >= day.since AND event_time < day.until) AS events
    FROM unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[])) WITH ORDINALITY
         AS day(since, until, n)
"""


def read_activity(
    connection: Connection, team_id: int, customer_id: int, bounds: Sequence[datetime]
) -> list[int]:
    """How many of the customer's events fall in each of the days `bounds` delimit: its
    `len(bounds) - 1` days, oldest first, a day from its bound to the next. One statement:
    a count of the feed index's range of each day, index-only."""
    params = {
        "team": team_id,
        "customer": customer_id,
        "starts": list(bounds[:-1]),
        "ends": list(bounds[1:]),
    }
    counts = [0] * (len(bounds) - 1)
    # A transaction for the planner's setting alone: while a day's rows are not yet
    # all-visible (and with no statistics on team_id, migration 0009) a bitmap scan of the
    # heap looks as cheap; the index's range is the read that stays cheap as rows age.
    with snapshot(connection, several=True):
        connection.execute(
            text(
                "SELECT set_config('enable_bitmapscan', 'off', true), "
                "set_config('enable_seqscan', 'off', true)"
            )
        )
        for row in connection.execute(text(_ACTIVITY_SQL), params):
            counts[row.n - 1] = int(row.events)
    return counts
