"""The read queries' plans at a realistic size: indexes in order, never a sort of a timeline.

One customer gets 200,000 events (SPEC §8 asks for 100,000 per customer at ten million
in the table), other customers some more, a team 30,000 customers; all in one transaction
that is rolled back, with ANALYZE inside it so the planner sees the real distribution.
The statements explained are the ones the store functions run, captured as they run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, event, text

from store.customers import lookup_customer, search_customers
from store.feed import FEED_SCAN_BUDGET, FeedFilter
from store.partitions import ensure_span
from tests.store.reference import load_feed

EVENTS = 200_000
CUSTOMERS = 30_000
MIDDLE = datetime(2024, 3, 1, tzinfo=UTC)  # about halfway through the big timeline

SEED = """
INSERT INTO customers (team_id, id, is_known, email, name, first_seen, last_seen, event_count, created_at)
OVERRIDING SYSTEM VALUE
SELECT :team, g, true, 'person' || g || '@example.com', 'Person ' || g,
       timestamptz '2023-01-01' + g * interval '1 minute', timestamptz '2024-01-01' + g * interval '1 minute',
       1, now()
FROM generate_series(1, :customers) g;

INSERT INTO identities (team_id, kind, value, customer_id)
SELECT :team, 'user', 'user-' || g, g FROM generate_series(1, :customers) g
UNION ALL
SELECT :team, 'anonymous', md5(g::text), g FROM generate_series(1, :customers) g;

INSERT INTO events (team_id, message_id, type, event_name, user_id, event_time, received_at, tiebreak,
                    raw, customer_id, folded_at)
SELECT :team, 'm' || g,
       CASE WHEN g % 20000 = 0 THEN 'alias' WHEN g % 10 < 6 THEN 'track'
            WHEN g % 10 < 9 THEN 'page' ELSE 'identify' END,
       CASE WHEN g % 10 < 6 THEN (CASE WHEN g % 5000 = 1 THEN 'Refund Requested'
                                       WHEN g % 2 = 0 THEN 'Viewed Item' ELSE 'Added to Cart' END)
            WHEN g % 10 < 9 THEN 'Home' END,
       'user-1', timestamptz '2023-10-01' + g * interval '1 minute', now(), hashtext('m' || g),
       jsonb_build_object('properties', jsonb_build_object('n', g),
                          'context', jsonb_build_object('ip', '10.0.0.1')),
       1, now()
FROM generate_series(1, :events) g;

INSERT INTO events (team_id, message_id, type, event_name, user_id, event_time, received_at, tiebreak,
                    raw, customer_id, folded_at)
SELECT :team, 'o' || g, 'track', 'Other', 'user-' || (2 + g % 5000),
       timestamptz '2023-10-01' + g * interval '1 second', now(), hashtext('o' || g), '{}'::jsonb,
       2 + g % 5000, now()
FROM generate_series(1, 50000) g;

-- What the fold's trait history would hold: each identify set the customer's plan.
INSERT INTO trait_history (team_id, event_id, key_norm, customer_id, key, value, event_time, tiebreak)
SELECT team_id, id, 'plan', customer_id, 'plan', to_jsonb(id % 3), event_time, tiebreak
FROM events WHERE team_id = :team AND type = 'identify';

ANALYZE events;
ANALYZE customers;
ANALYZE identities;
ANALYZE trait_history;
"""


@pytest.fixture(autouse=True)
def planner_settings_reset(big: tuple[Connection, int]) -> Iterator[None]:
    """A read's planner settings are its transaction's, and here every read runs in the
    module's one transaction: put them back after each test."""
    yield
    big[0].execute(
        text(
            "SELECT set_config('enable_bitmapscan', 'on', true), set_config('enable_seqscan', 'on', true), "
            "set_config('enable_sort', 'on', true)"
        )
    )


@pytest.fixture(scope="module")
def big(engine: Engine) -> Iterator[tuple[Connection, int]]:
    """A connection inside the seeding transaction, and the (otherwise unused) team id.

    REPEATABLE READ: the reads run inside it (store/snapshot.py), seeing the uncommitted rows."""
    first = datetime(2023, 10, 1, tzinfo=UTC)  # the months the SQL below writes
    ensure_span(engine, first, first + timedelta(minutes=EVENTS))
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        transaction = connection.begin()
        team = connection.execute(
            text("INSERT INTO teams (name, created_at) VALUES ('plans', now()) RETURNING id")
        ).scalar_one()
        params = {"team": team, "customers": CUSTOMERS, "events": EVENTS}
        for statement in SEED.split(";\n"):
            if statement.strip():
                connection.execute(text(statement), params)
        yield connection, team
        transaction.rollback()


def plans_of(connection: Connection, run: Any, *, analyze: bool = False) -> list[dict[str, Any]]:
    """The JSON plans of every statement `run(connection)` executes (`analyze`: run again
    under EXPLAIN ANALYZE, so partitions pruned while running show `Actual Loops` 0)."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        captured.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", capture)
    try:
        run(connection)
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    plans = []
    for statement, parameters in captured:
        if statement.lstrip().upper().startswith(("SELECT LOWER", "SELECT SET_CONFIG")):
            continue  # not a read; a set_config has already set what the plans below see
        explain = ("EXPLAIN (ANALYZE, FORMAT JSON) " if analyze else "EXPLAIN (FORMAT JSON) ") + statement
        if isinstance(parameters, tuple):  # `$n` placeholders, as store.feed sends its statements
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            with psycopg.RawCursor(driver) as cursor:
                raw = cursor.execute(explain, parameters).fetchone()[0]  # type: ignore[index]
        else:
            raw = connection.exec_driver_sql(explain, parameters).scalar_one()
        plans.append((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def executed(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan without the partitions Postgres pruned as it ran (never executed)."""
    kept = [executed(child) for child in plan.get("Plans", []) if child.get("Actual Loops", 1) > 0]
    return {**plan, "Plans": kept}


def timeline_reads(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The scans of the timeline's months that returned rows, as Postgres ran them (a
    month holding nothing of the customer may be scanned any way: it costs nothing)."""
    return [
        node
        for node in nodes(executed(plan))
        if node.get("Relation Name", "").startswith("events")
        and node["Actual Rows"] * node["Actual Loops"] > 0
    ]


def describe(plan: dict[str, Any]) -> str:
    return " > ".join(
        f"{n['Node Type']}({n.get('Index Name') or n.get('Relation Name') or ''})" for n in nodes(plan)
    )


FEEDS = {
    "unfiltered": (FeedFilter(), True),
    "oldest first": (FeedFilter(), False),
    "one type": (FeedFilter(types=("track",)), True),
    "a rare type (page is short: the probe runs too)": (FeedFilter(types=("alias",)), True),
    "a rare event": (FeedFilter(events=("Refund Requested",)), True),
    "an event and a type": (FeedFilter(types=("page",), events=("Viewed Item",)), True),
    "excluded events": (FeedFilter(exclude_events=("Viewed Item", "Added to Cart")), True),
    "since": (FeedFilter(since=MIDDLE), True),
    "a window and a type, oldest first": (
        FeedFilter(types=("identify",), since=MIDDLE, until=MIDDLE.replace(day=9)),
        False,
    ),
}


@pytest.mark.parametrize("name", list(FEEDS))
def test_the_feed_reads_the_timeline_index_in_order_whatever_the_filter(
    big: tuple[Connection, int], name: str
) -> None:
    connection, team = big
    filters, newest_first = FEEDS[name]
    for after in (None, "deep"):
        position = None
        if after == "deep":  # a page 10,000 items in
            _, position = load_feed(connection, team, 1, limit=200, newest_first=newest_first)
            for _ in range(49):
                _, position = load_feed(
                    connection, team, 1, limit=200, after=position, newest_first=newest_first
                )
        plans = plans_of(
            connection,
            lambda c, p=position: load_feed(
                c, team, 1, limit=50, after=p, newest_first=newest_first, filters=filters
            ),
            analyze=True,
        )
        assert plans
        for plan in plans:
            shape = describe(executed(plan))
            reads = timeline_reads(plan)  # none when the window holds nothing of the customer
            for node in reads:  # the customer's months, each by its feed index, in order
                assert node["Node Type"] in ("Index Scan", "Index Only Scan"), shape
                assert node["Index Name"].startswith("ix_events_feed_"), shape
            # Bounded: never more than the page's scan budget, however long the timeline.
            assert sum(n["Actual Rows"] * n["Actual Loops"] for n in reads) <= FEED_SCAN_BUDGET + 1, shape
            assert "Bitmap" not in shape, shape


def test_search_uses_the_prefix_indexes_for_a_narrow_prefix(big: tuple[Connection, int]) -> None:
    connection, team = big
    candidates, page = plans_of(connection, lambda c: search_customers(c, team, "Person123", limit=50))[:2]
    shape = describe(candidates)
    for index in ("ix_customers_email_prefix", "ix_customers_name_prefix", "ix_identities_value_prefix"):
        assert index in shape, shape
    assert "Seq Scan" not in shape, shape
    assert "pk_customers" in describe(page) and "Seq Scan" not in describe(page), describe(page)


@pytest.mark.parametrize("query", ["p", "PERSON1", ""])
def test_search_walks_the_recency_index_for_a_broad_prefix(big: tuple[Connection, int], query: str) -> None:
    connection, team = big
    plans = plans_of(connection, lambda c: search_customers(c, team, query, limit=50))
    page = [plan for plan in plans if "ix_customers_recent" in describe(plan)]
    assert page, [describe(plan) for plan in plans]
    shape = describe(page[0])
    # No sort of the customers: nothing above their recency walk sorts. (Below it, each
    # listed customer's few ids are aggregated in order: Postgres 16 sorts those few rows
    # where 15 read them in index order; either is a handful of rows per customer.)
    above_the_walk = shape.split("Index Scan(ix_customers_recent)")[0]
    assert "Sort" not in above_the_walk and "Seq Scan" not in shape, shape


def test_lookup_by_email_uses_its_index(big: tuple[Connection, int]) -> None:
    connection, team = big
    (plan,) = plans_of(connection, lambda c: lookup_customer(c, team, "email", "PERSON77@example.com"))
    assert "ix_customers_email_prefix" in describe(plan), describe(plan)


def test_an_unfiltered_feed_page_is_one_statement_that_also_resolves_the_customer(
    big: tuple[Connection, int],
) -> None:
    connection, team = big
    plans = plans_of(connection, lambda c: load_feed(c, team, 1, limit=50))
    assert len(plans) == 1
    shape = describe(plans[0])
    assert "Sort" not in shape and "Seq Scan" not in shape, shape
    # The months' feed indexes, newest first: an ordered Append that stops in the newest month.
    scans = [n for n in nodes(plans[0]) if n.get("Relation Name", "").startswith("events")]
    assert scans and all(n["Index Name"].startswith("ix_events_feed_") for n in scans), shape
    assert "Merge Append" not in shape, shape


def test_an_identify_page_reads_each_change_by_index(big: tuple[Connection, int]) -> None:
    connection, team = big
    items, _ = load_feed(connection, team, 1, limit=50, filters=FeedFilter(types=("identify",)))
    assert len(items) == 50 and all(item["changes"] for item in items)  # the plans differ in turn
    plans = plans_of(
        connection, lambda c: load_feed(c, team, 1, limit=50, filters=FeedFilter(types=("identify",)))
    )
    shape = describe(plans[0])
    assert "Index Scan(ix_trait_history_previous)" in shape and "pk_trait_history" in shape, shape
    assert "Seq Scan" not in shape and "Sort" not in shape, shape
