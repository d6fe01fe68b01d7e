"""Retention by month: the longest retention in force drops whole months; a shorter one
takes the row steps (store/retention.py, docs/retention.md).

Each test has a database of its own (`scratch`): which months may go depends on every
team's retention, so other tests' teams (keeping everything) must not be in it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from schemas.segment import prepare_event
from store.events import store_events
from store.retention import expire_pass, set_retention
from tests.store.test_migration_0007 import scratch
from tests.workers.support import customer_of, new_team
from workers.fold import fold_until_empty

__all__ = ["scratch"]  # the fixture, shared with 0007's test

NOW = datetime(2005, 4, 10, tzinfo=UTC)
OPERATOR_DAYS = 30  # the bound: 2005-03-11; January and February are wholly before it


def deliver(
    engine: Engine,
    team: int,
    *events: tuple[str, str, datetime, dict[str, Any]],
    received: datetime | None = None,
) -> None:
    for kind, message_id, when, fields in events:
        raw = {"type": kind, "messageId": message_id, "timestamp": when.isoformat(), **fields}
        if kind == "track":
            raw["event"] = "Viewed Invoice"
        store_events(engine, team, [prepare_event(raw, received or when)], received or when)


def one(engine: Engine, statement: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(statement), params).scalar()


def message_ids(engine: Engine, team: int) -> set[str]:
    with engine.connect() as connection:
        return {
            str(m)
            for (m,) in connection.execute(
                text("SELECT message_id FROM events WHERE team_id = :t"), {"t": team}
            )
        }


def year(engine: Engine, team: int) -> None:
    deliver(
        engine,
        team,
        (
            "identify",
            "jan",
            datetime(2005, 1, 10, tzinfo=UTC),
            {"userId": "ann", "traits": {"email": "a@x.io"}},
        ),
        ("track", "feb", datetime(2005, 2, 10, tzinfo=UTC), {"userId": "ann"}),
        ("track", "mar-5", datetime(2005, 3, 5, tzinfo=UTC), {"userId": "ann"}),
        ("track", "mar-20", datetime(2005, 3, 20, tzinfo=UTC), {"userId": "ann"}),
        ("track", "apr", datetime(2005, 4, 5, tzinfo=UTC), {"userId": "ann"}),
    )


def test_whole_months_past_the_longest_retention_are_dropped_and_a_shorter_one_takes_steps(
    scratch: tuple[str, Engine],
) -> None:
    _, engine = scratch
    default, shorter = new_team(engine), new_team(engine)
    with engine.begin() as connection:
        set_retention(connection, shorter, 10, OPERATOR_DAYS)  # cutoff 2005-03-31
    for team in (default, shorter):
        year(engine, team)
        fold_until_empty(engine, team)
    assert one(engine, "SELECT count(*) FROM trait_history") == 2

    done = expire_pass(engine, OPERATOR_DAYS, NOW, step_rows=2)

    assert done is not None
    assert done.months == ["events_y2005m01", "events_y2005m02"]
    assert done.month_seconds > 0 and done.settle_seconds > 0
    assert one(engine, "SELECT to_regclass('events_y2005m01')") is None
    assert one(engine, "SELECT to_regclass('events_y2005m02')") is None
    # A team at the longest retention keeps an expired event until its month goes
    # (mar-5 is 36 days old); the shorter one's steps erased its March.
    assert message_ids(engine, default) == {"mar-5", "mar-20", "apr"}
    assert message_ids(engine, shorter) == {"apr"}
    assert done.erased == {shorter: 2}
    # The trait history of the dropped identify is gone; the profile keeps what it learned.
    assert one(engine, "SELECT count(*) FROM trait_history") == 0
    customer = customer_of(engine, default, "user", "ann")
    assert one(
        engine, "SELECT email FROM customers WHERE team_id = :t AND id = :c", t=default, c=customer
    ) == ("a@x.io")
    # A second pass finds nothing more to drop.
    again = expire_pass(engine, OPERATOR_DAYS, NOW, step_rows=2)
    assert again is not None and again.months == []


def test_a_month_with_an_event_not_folded_yet_is_left_until_it_is(scratch: tuple[str, Engine]) -> None:
    _, engine = scratch
    team = new_team(engine)
    year(engine, team)  # not folded

    done = expire_pass(engine, OPERATOR_DAYS, NOW)
    assert done is not None and done.months == []
    assert "jan" in message_ids(engine, team)

    fold_until_empty(engine, team)
    done = expire_pass(engine, OPERATOR_DAYS, NOW)
    assert done is not None and done.months == ["events_y2005m01", "events_y2005m02"]


def test_no_month_is_dropped_while_a_team_keeps_everything(scratch: tuple[str, Engine]) -> None:
    _, engine = scratch
    keeper, expiring = new_team(engine), new_team(engine)
    with engine.begin() as connection:
        set_retention(connection, expiring, 30, None)
    for team in (keeper, expiring):
        year(engine, team)
        fold_until_empty(engine, team)

    done = expire_pass(engine, None, NOW)

    assert done is not None and done.months == []
    assert len(message_ids(engine, keeper)) == 5
    assert message_ids(engine, expiring) == {"mar-20", "apr"}  # by rows, to the day


def test_a_delete_dated_in_a_dropped_month_still_erases_its_person(scratch: tuple[str, Engine]) -> None:
    """A delete never expires: its month is made again for it, and it is folded."""
    _, engine = scratch
    team = new_team(engine)
    year(engine, team)
    fold_until_empty(engine, team)
    done = expire_pass(engine, OPERATOR_DAYS, NOW)
    assert done is not None and "events_y2005m01" in done.months

    # Dated in January, received now: it erases what was sent before it.
    deliver(
        engine, team, ("delete", "del", datetime(2005, 1, 20, tzinfo=UTC), {"userId": "ann"}), received=NOW
    )
    fold_until_empty(engine, team)

    assert customer_of(engine, team, "user", "ann") is None
    assert message_ids(engine, team) == set()
    assert one(engine, "SELECT to_regclass('events_y2005m01')") is not None
    # And the next pass drops that month again.
    done = expire_pass(engine, OPERATOR_DAYS, NOW + timedelta(days=1))
    assert done is not None and "events_y2005m01" in done.months
