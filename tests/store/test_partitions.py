"""The timeline partitioned by event time (store/partitions.py, migration 0012).

Each test dates its events in a month of its own, far from other tests', so the
partitions it makes and reads are its own whatever ran before.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent, prepare_event
from store.events import store_events
from store.feed import FeedPosition, read_feed_page
from store.partitions import (
    AFTER,
    BEFORE,
    KnownPartitions,
    ensure_months,
    existing_partitions,
    months_between,
    partition_for,
)
from tests.workers.support import customer_of, new_team
from workers.fold import fold_until_empty
from workers.sweep import months_ahead


def ev(kind: str, message_id: str, when: datetime | None, **fields: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": kind, "messageId": message_id, "userId": "ann", **fields}
    if when is not None:
        raw["timestamp"] = when.isoformat().replace("+00:00", "Z")
    if kind == "track":
        raw.setdefault("event", "Viewed Invoice")
    return raw


def deliver(engine: Engine, team: int, raws: list[dict[str, Any]], received: datetime) -> tuple[int, int]:
    """One delivery as ingest stores it: (accepted, duplicates)."""
    events: list[PreparedEvent] = [prepare_event(json.loads(json.dumps(raw)), received) for raw in raws]
    result = store_events(engine, team, events, received)
    return result.accepted, result.duplicates


def where(engine: Engine, team: int) -> dict[str, str]:
    """message_id -> the partition holding it."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT message_id, tableoid::regclass::text FROM events WHERE team_id = :t"), {"t": team}
        ).all()
    return {str(m): str(p) for m, p in rows}


def test_an_event_lands_in_its_months_partition_and_absurd_times_in_the_bounding_ones(engine: Engine) -> None:
    team = new_team(engine)
    received = datetime(2026, 12, 8, 12, tzinfo=UTC)
    accepted, _ = deliver(
        engine,
        team,
        [
            ev("track", "march", datetime(2011, 3, 15, 9, tzinfo=UTC)),
            ev("track", "year-1", datetime(1, 1, 1, tzinfo=UTC)),
            ev("track", "year-9999", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
            ev("track", "1999", datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
            ev("track", "2100", datetime(2100, 1, 1, tzinfo=UTC)),
        ],
        received,
    )
    assert accepted == 5
    assert where(engine, team) == {
        "march": "events_y2011m03",
        "year-1": BEFORE,
        "1999": BEFORE,
        "year-9999": AFTER,
        "2100": AFTER,
    }
    fold_until_empty(engine, team)
    customer = customer_of(engine, team, "user", "ann")
    assert customer is not None
    with engine.connect() as connection:
        page = read_feed_page(connection, team, customer, limit=10)
    assert page is not None
    assert [item["message_id"] for item in json.loads(page.items_json)] == [
        "year-9999",
        "2100",
        "march",
        "1999",
        "year-1",
    ]


def test_a_resend_hours_later_of_an_event_on_a_partition_boundary_is_a_duplicate(engine: Engine) -> None:
    """The event time is the payload's: the re-send lands where the first delivery did."""
    team = new_team(engine)
    last_instant = datetime(2012, 4, 30, 23, 59, 59, 999000, tzinfo=UTC)
    first_instant = datetime(2012, 5, 1, tzinfo=UTC)
    sent = [ev("track", "before", last_instant), ev("track", "on", first_instant)]
    assert deliver(engine, team, sent, first_instant + timedelta(minutes=1)) == (2, 0)
    assert deliver(engine, team, sent, first_instant + timedelta(hours=6)) == (0, 2)
    assert where(engine, team) == {"before": "events_y2012m04", "on": "events_y2012m05"}


def test_a_resend_of_a_payload_with_no_time_across_a_month_boundary_is_a_duplicate(engine: Engine) -> None:
    """No timestamp, originalTimestamp nor receivedAt: the event is dated by its receipt,
    which a re-send does not share; ingest looks a day back (store/events.py RESEND_WINDOW)."""
    team = new_team(engine)
    first = datetime(2013, 6, 30, 22, tzinfo=UTC)
    timeless = [ev("track", "no-time", None)]
    assert deliver(engine, team, timeless, first) == (1, 0)
    assert deliver(engine, team, timeless, first + timedelta(hours=4)) == (0, 1)  # July now
    assert deliver(engine, team, timeless, first + timedelta(hours=20)) == (0, 1)
    assert where(engine, team) == {"no-time": "events_y2013m06"}


def test_a_messageid_sent_again_with_a_new_timestamp_within_the_window_is_a_duplicate(engine: Engine) -> None:
    """As Segment deduplicates: on the messageId, not on the payload (a client that builds
    the payload again stamps it anew), within a window (store/events.py RESEND_WINDOW);
    one request holding the key twice stores it once too."""
    team = new_team(engine)
    first = datetime(2013, 8, 31, 23, 59, 58, tzinfo=UTC)
    assert deliver(engine, team, [ev("track", "again", first)], first) == (1, 0)
    later = first + timedelta(seconds=5)  # another month
    assert deliver(engine, team, [ev("track", "again", later)], later) == (0, 1)
    twice = [ev("track", "twice", first), ev("track", "twice", later)]
    assert deliver(engine, team, twice, later) == (1, 1)
    # Out of the window, the same messageId is another message.
    far = first + timedelta(days=8)
    assert deliver(engine, team, [ev("track", "again", far)], far) == (1, 0)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT message_id, tableoid::regclass::text FROM events WHERE team_id = :t ORDER BY 1, 2"),
            {"t": team},
        ).all()
    assert [tuple(row) for row in stored] == [
        ("again", "events_y2013m08"),
        ("again", "events_y2013m09"),
        ("twice", "events_y2013m08"),
    ]


def test_a_feed_across_partitions_pages_without_gaps_or_repeats(engine: Engine) -> None:
    team = new_team(engine)
    start = datetime(2014, 1, 20, tzinfo=UTC)
    # 30 events every 3 days: January to April, four partitions; two share an instant.
    raws = [ev("track", f"e{n:02}", start + timedelta(days=3 * n)) for n in range(30)]
    raws.append(ev("page", "same-instant", start + timedelta(days=3 * 12), name="Home"))
    deliver(engine, team, raws, datetime(2014, 6, 1, tzinfo=UTC))
    fold_until_empty(engine, team)
    customer = customer_of(engine, team, "user", "ann")
    assert customer is not None
    assert len(set(where(engine, team).values())) == 4
    seen: list[str] = []
    after: FeedPosition | None = None
    with engine.connect() as connection:
        while True:
            page = read_feed_page(connection, team, customer, limit=4, after=after)
            assert page is not None
            seen += [item["message_id"] for item in json.loads(page.items_json)]
            if page.next_position is None:
                break
            after = page.next_position
    with engine.connect() as connection:
        expected = [
            str(m)
            for (m,) in connection.execute(
                text(
                    "SELECT message_id FROM events WHERE team_id = :t "
                    "ORDER BY event_time DESC, tiebreak DESC, id DESC"
                ),
                {"t": team},
            )
        ]
    assert seen == expected and len(seen) == 31


def test_months_are_made_once_whoever_asks_at_the_same_time(engine: Engine) -> None:
    when = datetime(2015, 7, 4, tzinfo=UTC)
    caches = [KnownPartitions() for _ in range(4)]
    errors: list[BaseException] = []

    def make(cache: KnownPartitions) -> None:
        try:
            cache.ensure(engine, [when])
        except BaseException as error:  # the test fails on it
            errors.append(error)

    threads = [threading.Thread(target=make, args=(cache,)) for cache in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as connection:
        names = [p.name for p in existing_partitions(connection)]
        indexes = {
            str(name)
            for (name,) in connection.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'events_y2015m07'")
            )
        }
    assert names.count("events_y2015m07") == 1
    assert indexes == {
        "pk_events_y2015m07",
        "uq_events_team_id_message_id_type_event_time_y2015m07",
        "ix_events_feed_y2015m07",
        "ix_events_unfolded_y2015m07",
        "ix_events_group_calls_y2015m07",
    }


def test_the_worker_makes_this_month_and_the_next_ahead(engine: Engine) -> None:
    months_ahead(engine, datetime(2016, 12, 20, tzinfo=UTC))
    with engine.connect() as connection:
        names = {p.name for p in existing_partitions(connection)}
    assert {"events_y2016m12", "events_y2017m01"} <= names


def test_a_month_dropped_behind_a_process_is_made_again_at_its_next_write(engine: Engine) -> None:
    """Expiry drops a month; a process that knew it still writes there (a `delete` dated
    then never expires): the write finds it missing, makes it again and goes through."""
    team = new_team(engine)
    when = datetime(2017, 2, 10, tzinfo=UTC)
    ensure_months(engine, [when])  # this process now knows the month
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE events_y2017m02"))
    assert deliver(engine, team, [ev("track", "late", when)], when) == (1, 0)
    assert where(engine, team) == {"late": "events_y2017m02"}


def test_month_names_and_bounds() -> None:
    march = partition_for(datetime(2019, 3, 31, 23, 59, tzinfo=UTC))
    assert (march.name, march.lower, march.upper) == (
        "events_y2019m03",
        datetime(2019, 3, 1, tzinfo=UTC),
        datetime(2019, 4, 1, tzinfo=UTC),
    )
    december = partition_for(datetime(2019, 12, 31, 23, tzinfo=UTC))
    assert december.upper == datetime(2020, 1, 1, tzinfo=UTC)
    # Another zone's instant belongs to its UTC month.
    assert partition_for(datetime.fromisoformat("2019-04-01T01:00:00+02:00")).name == "events_y2019m03"
    span = months_between(datetime(2019, 11, 5, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC))
    assert [m.month for m in span] == [11, 12, 1, 2]
