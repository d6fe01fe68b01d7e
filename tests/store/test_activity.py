"""A customer's events per day (`store.feed.read_activity`, the console's chart): each in
its UTC day, one customer of one team, and read from the feed index, range by range."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, text

from app.console.chart import day_bounds
from schemas.segment import prepare_event
from store.customers import lookup_customer
from store.events import store_events
from store.feed import read_activity
from store.partitions import ensure_span
from tests.conftest import TeamKeys, make_team
from tests.store.test_feed_plan import executed, timeline_reads
from workers.fold import fold_until_empty

NOW = datetime.now(UTC)
BOUNDS = day_bounds(NOW)
FIRST = BOUNDS[0]  # the first day's start
TODAY = BOUNDS[-2]


def stamp(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, user: str, instants: list[datetime]) -> int:
    now = datetime.now(UTC)
    events = [
        {
            "type": "track",
            "userId": user,
            "event": "Clicked",
            "timestamp": stamp(at),
            "messageId": f"{user}-{n}",
        }
        for n, at in enumerate(instants)
    ]
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)
    with engine.connect() as connection:
        found = lookup_customer(connection, team.id, "user", user)
    assert found is not None
    return found


def test_events_fall_in_their_utc_days(engine: Engine, team: TeamKeys) -> None:
    instants = [
        FIRST - timedelta(days=30),  # before the window: not counted
        FIRST - timedelta(microseconds=1),  # the instant before the first day: not counted
        FIRST,  # the first day's first instant
        FIRST + timedelta(days=10, hours=23, minutes=59, seconds=59),  # a day's last second
        FIRST + timedelta(days=11),  # and the next day's first
        TODAY + timedelta(minutes=1),  # today, three
        TODAY + timedelta(minutes=1),
        TODAY + timedelta(hours=23),
        BOUNDS[-1] + timedelta(minutes=1),  # tomorrow (a clock ahead): not counted
    ]
    customer = send(engine, team, "u-days", instants)
    other_team = make_team(engine, "activity other team")
    send(engine, other_team, "u-days", instants)  # the same userId in another team
    send(engine, team, "u-someone-else", [TODAY + timedelta(minutes=3)])
    with engine.connect() as connection:
        activity = read_activity(connection, team.id, customer, BOUNDS)
    expected = [0] * 90
    expected[0], expected[10], expected[11], expected[89] = 1, 1, 1, 3
    assert activity == expected


def test_a_customer_with_no_events_in_the_window_has_zero_days(engine: Engine, team: TeamKeys) -> None:
    customer = send(engine, team, "u-long-ago", [FIRST - timedelta(days=1), FIRST - timedelta(days=400)])
    with engine.connect() as connection:
        activity = read_activity(connection, team.id, customer, BOUNDS)
    assert activity == [0] * 90


SEED = """
INSERT INTO events (team_id, message_id, type, event_name, user_id, event_time, received_at, tiebreak,
                    raw, customer_id, folded_at)
SELECT :team, 'm' || g, 'track', 'Clicked', 'user-' || (g % 50), :end - g * interval '1 minute', now(),
       hashtext('m' || g), '{}'::jsonb, CASE WHEN g % 5 = 0 THEN 2 + g % 50 ELSE 1 END, now()
FROM generate_series(1, 150000) g;
ANALYZE events;
"""


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [node for child in plan.get("Plans", []) for node in nodes(child)]


def test_the_days_are_read_along_the_feed_index_without_a_sort(engine: Engine) -> None:
    """120,000 events of one customer over 104 days: each day is a range of the feed index,
    read index-only; the timeline is never sorted nor the table scanned."""
    # REPEATABLE READ: the read runs inside the seeding transaction (store/snapshot.py).
    ensure_span(engine, NOW - timedelta(minutes=150_000), NOW)  # the months the SQL below writes
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        transaction = connection.begin()
        team = connection.execute(
            text("INSERT INTO teams (name, created_at) VALUES ('activity plans', now()) RETURNING id")
        ).scalar_one()
        for statement in SEED.split(";\n"):
            if statement.strip():
                connection.execute(text(statement), {"team": team, "end": NOW})
        captured: list[tuple[str, Any]] = []

        def capture(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            captured.append((statement, parameters))

        event.listen(connection, "before_cursor_execute", capture)
        try:
            activity = read_activity(connection, team, 1, BOUNDS)
        finally:
            event.remove(connection, "before_cursor_execute", capture)
        in_window = connection.execute(
            text(
                "SELECT count(*) FROM events WHERE team_id = :team AND customer_id = 1 "
                "AND event_time >= :since AND event_time < :until"
            ),
            {"team": team, "since": BOUNDS[0], "until": BOUNDS[-1]},
        ).scalar_one()
        assert sum(activity) == in_window > 100_000
        settings, (statement, parameters) = captured[-2], captured[-1]
        connection.exec_driver_sql(*settings)  # the read's planner settings, for this transaction
        raw = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
        ).scalar_one()
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        transaction.rollback()
    found = nodes(executed(plan))
    kinds = [node["Node Type"] for node in found]
    reads = [(n["Node Type"], n.get("Index Name", "")) for n in timeline_reads(plan)]
    assert reads and {kind for kind, _ in reads} == {"Index Only Scan"}, kinds
    assert all(index.startswith("ix_events_feed_") for _, index in reads), reads
    assert not {"Sort", "Incremental Sort", "Seq Scan", "Bitmap Heap Scan"} & set(kinds), kinds
