"""Retention: expired events leave the timeline with their payloads and trait history,
the profile stays, in bounded steps that never interleave with the team's fold
(store/retention.py, docs/retention.md).

Events are dated in 1990 (minutes after `T0`) and each test passes its own `now`, so a
pass run here erases nothing of other tests' teams that is dated after 1990.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent, prepare_event
from store.events import store_events
from store.feed import read_feed_page
from store.fold.backlog import FOLD_LOCK_NAMESPACE
from store.retention import (
    EXPIRY_LOCK_NAMESPACE,
    effective_days,
    expire_pass,
    expire_step,
    retention_problem,
    set_retention,
    split_expired,
)
from tests.workers.support import customer_of, new_team
from workers.fold import fold_until_empty
from workers.sweep import expiry_round

T0 = datetime(1990, 1, 1, tzinfo=UTC)
DAY = 24 * 60  # minutes


@pytest.fixture(autouse=True, scope="module")
def a_team_keeping_everything(engine: Engine) -> None:
    """Retention by rows is what these tests read: while a team keeps everything no month
    can be dropped (store/retention.py), whichever tests ran before in the database."""
    new_team(engine)


def ev(kind: str, message_id: str, day: float, **fields: Any) -> PreparedEvent:
    """A Segment event dated `day` days after T0, received at once."""
    when = T0 + timedelta(days=day)
    raw: dict[str, Any] = {"type": kind, "messageId": message_id, "timestamp": when.isoformat()}
    if kind == "track":
        raw["event"] = "Viewed Invoice"
    raw.update(fields)
    return prepare_event(raw, when)


def deliver(engine: Engine, team: int, events: list[PreparedEvent], *, fold: bool = True) -> None:
    for event in events:
        store_events(engine, team, [event], event.event_time)
    if fold:
        fold_until_empty(engine, team)


def count(engine: Engine, statement: str, **params: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(statement), params).scalar_one())


def rows(engine: Engine, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(statement), params)]


def message_ids(engine: Engine, team: int) -> set[str]:
    return {m for (m,) in rows(engine, "SELECT message_id FROM events WHERE team_id = :t", t=team)}


def with_retention(engine: Engine, days: int | None) -> int:
    team = new_team(engine)
    with engine.begin() as connection:
        set_retention(connection, team, days, None)
    return team


def ann(prefix: str = "") -> list[PreparedEvent]:
    """Ann's year: anonymous visits, identify, a company, then a recent identify and visit."""
    return [
        ev("page", f"{prefix}p-old", 0, anonymousId="ann-phone", name="Pricing"),
        ev(
            "identify",
            f"{prefix}i-old",
            1,
            userId="ann",
            anonymousId="ann-phone",
            traits={"email": "ann@x.io", "plan": "free"},
        ),
        ev("group", f"{prefix}g-old", 2, userId="ann", groupId="initech", traits={"name": "Initech"}),
        ev("track", f"{prefix}t-old", 3, userId="ann"),
        ev("identify", f"{prefix}i-new", 50, userId="ann", traits={"plan": "pro"}),
        ev("track", f"{prefix}t-new", 55, userId="ann"),
    ]


def profile(engine: Engine, team: int, customer: int) -> dict[str, Any]:
    """What the profile says now: the customer row, ids, current traits, groups, summaries."""
    return {
        "customer": rows(
            engine,
            "SELECT email, first_seen, last_seen, event_count, is_known FROM customers "
            "WHERE team_id = :t AND id = :c",
            t=team,
            c=customer,
        ),
        "ids": sorted(
            rows(
                engine,
                "SELECT kind, value FROM identities WHERE team_id = :t AND customer_id = :c",
                t=team,
                c=customer,
            )
        ),
        "traits": sorted(
            (k, json.dumps(v))
            for k, v in rows(
                engine,
                "SELECT key, value FROM customer_traits WHERE team_id = :t AND customer_id = :c",
                t=team,
                c=customer,
            )
        ),
        "groups": rows(
            engine,
            "SELECT group_id, active FROM memberships WHERE team_id = :t AND customer_id = :c",
            t=team,
            c=customer,
        ),
        "summaries": sorted(
            rows(
                engine,
                "SELECT type, name, event_count, first_at, last_at FROM event_summaries "
                "WHERE team_id = :t AND customer_id = :c",
                t=team,
                c=customer,
            )
        ),
    }


# --- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("team_days", "operator_days", "effective"),
    [(None, None, None), (30, None, 30), (None, 90, 90), (30, 90, 30), (120, 90, 90)],
)
def test_the_shorter_of_the_team_and_the_operator_applies(
    team_days: int | None, operator_days: int | None, effective: int | None
) -> None:
    assert effective_days(team_days, operator_days) == effective


def test_a_team_may_shorten_the_operators_retention_but_not_lengthen_it() -> None:
    assert retention_problem(30, 90) is None
    assert retention_problem(None, 90) is None
    problem = retention_problem(91, 90)
    assert problem is not None and "at most 90 days" in problem
    assert retention_problem(0, None) is not None
    assert retention_problem(3651, None) is not None


def test_a_delete_never_arrives_expired() -> None:
    cutoff = T0 + timedelta(days=30)
    old_track, old_delete = ev("track", "t", 1, userId="u"), ev("delete", "d", 1, userId="u")
    new_track = ev("track", "t2", 40, userId="u")
    kept, expired = split_expired([old_track, old_delete, new_track], cutoff)
    assert kept == [old_delete, new_track] and expired == [old_track]
    assert split_expired([old_track], None) == ([old_track], [])


# --- expiry ------------------------------------------------------------------------------------


def test_expiry_erases_old_events_their_payloads_and_trait_history_but_keeps_the_profile(
    engine: Engine,
) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, ann())
    customer = customer_of(engine, team, "user", "ann")
    assert customer is not None
    before = profile(engine, team, customer)
    history = "SELECT count(*) FROM trait_history WHERE team_id = :t"
    assert count(engine, history, t=team) == 3  # email and plan at day 1, plan at day 50

    done = expire_pass(engine, None, T0 + timedelta(days=60))  # cutoff: day 30

    assert done is not None and done.erased[team] == 4
    assert message_ids(engine, team) == {"i-new", "t-new"}
    # The trait history of erased events is gone; that of kept ones stays.
    assert rows(engine, "SELECT key, value FROM trait_history WHERE team_id = :t", t=team) == [
        ("plan", "pro")
    ]
    assert profile(engine, team, customer) == before  # ids, traits (email), groups, first seen, counts
    with engine.connect() as connection:
        page = read_feed_page(connection, team, customer, limit=50)
    assert page is not None
    assert [item["id"] for item in json.loads(page.items_json)] == [
        str(i)
        for (i,) in rows(engine, "SELECT id FROM events WHERE team_id = :t ORDER BY event_time DESC", t=team)
    ]
    assert len(json.loads(page.items_json)) == 2


def test_the_operators_retention_applies_to_teams_without_their_own_and_caps_longer_ones(
    engine: Engine,
) -> None:
    own = with_retention(engine, 10)
    default = with_retention(engine, None)
    for team in (own, default):
        deliver(engine, team, [ev("track", f"d{day}", day, userId="u") for day in (0, 20, 45, 55)])

    expire_pass(engine, 30, T0 + timedelta(days=60))  # the operator keeps 30 days: cutoff day 30

    # At the operator's (the longest) retention a team's events go with their month, once
    # all of it is 30 days old (tests/store/test_retention_months.py): not yet.
    assert message_ids(engine, default) == {"d0", "d20", "d45", "d55"}
    assert message_ids(engine, own) == {"d55"}  # its own 10 days, by rows: cutoff day 50


def test_a_team_without_retention_keeps_everything_while_another_expires(engine: Engine) -> None:
    keeper = with_retention(engine, None)
    expiring = with_retention(engine, 5)
    for team in (keeper, expiring):
        deliver(engine, team, ann())
    expire_pass(engine, None, T0 + timedelta(days=60))
    assert len(message_ids(engine, keeper)) == len(ann())
    assert message_ids(engine, expiring) == {"t-new"}


def test_a_step_reads_at_most_step_rows_events_and_erases_at_most_those(engine: Engine) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, [ev("track", f"m{n:02}", n / 10, userId=f"u{n % 3}") for n in range(25)])
    ids = [i for (i,) in rows(engine, "SELECT id FROM events WHERE team_id = :t ORDER BY id", t=team)]
    cutoff = T0 + timedelta(days=30)
    with engine.connect() as connection:
        first = expire_step(connection, team, cutoff, 0, step_rows=10)
        assert (first.window.last, first.erased) == (ids[9], 10)
        assert count(engine, "SELECT count(*) FROM events WHERE team_id = :t", t=team) == 15
        second = expire_step(connection, team, cutoff, first.window.last or 0, step_rows=10)
        assert (second.window.last, second.erased) == (ids[19], 10)
        third = expire_step(connection, team, cutoff, second.window.last or 0, step_rows=10)
        assert (third.window.last, third.erased) == (None, 5)  # the last window: to the end
    done = expire_pass(engine, None, T0 + timedelta(days=60), step_rows=10)
    assert done is not None and done.erased.get(team, 0) == 0


def test_a_pass_takes_bounded_steps_and_pauses_between_them(engine: Engine) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, [ev("track", f"m{n:02}", n / 10, userId="u") for n in range(25)])
    pauses: list[int] = []

    def pause() -> bool:
        pauses.append(count(engine, "SELECT count(*) FROM events WHERE team_id = :t", t=team))
        return False

    done = expire_pass(engine, None, T0 + timedelta(days=60), step_rows=10, pause=pause)
    assert done is not None and done.erased[team] == 25
    assert pauses[:2] == [15, 5]  # each step committed on its own, at most 10 events each


def test_a_step_waits_for_nothing_when_the_teams_fold_holds_its_lock(engine: Engine) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, ann())
    with engine.connect() as fold, engine.connect() as connection:
        fold.execute(text("SELECT pg_advisory_xact_lock(:ns, :t)"), {"ns": FOLD_LOCK_NAMESPACE, "t": team})
        step = expire_step(connection, team, T0 + timedelta(days=30), 0)
        assert step.busy and step.erased == 0
        fold.rollback()
        step = expire_step(connection, team, T0 + timedelta(days=30), 0)
        assert not step.busy and step.erased == 4


def test_only_one_worker_runs_a_pass_at_a_time(engine: Engine) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, ann())
    with engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:ns, 0)"), {"ns": EXPIRY_LOCK_NAMESPACE})
        assert expire_pass(engine, None, T0 + timedelta(days=60)) is None
        assert len(message_ids(engine, team)) == len(ann())
        other.execute(text("SELECT pg_advisory_unlock(:ns, 0)"), {"ns": EXPIRY_LOCK_NAMESPACE})
        other.commit()
    assert expire_pass(engine, None, T0 + timedelta(days=60)) is not None
    assert message_ids(engine, team) == {"i-new", "t-new"}


def test_unfolded_events_are_expired_only_once_folded(engine: Engine) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, ann(), fold=False)
    expire_pass(engine, None, T0 + timedelta(days=60))
    assert len(message_ids(engine, team)) == len(ann())  # the profile must learn them first
    fold_until_empty(engine, team)
    expire_pass(engine, None, T0 + timedelta(days=60))
    assert message_ids(engine, team) == {"i-new", "t-new"}
    customer = customer_of(engine, team, "user", "ann")
    traits = rows(
        engine, "SELECT key FROM customer_traits WHERE team_id = :t AND customer_id = :c", t=team, c=customer
    )
    assert sorted(k for (k,) in traits) == ["email", "plan"]


def test_a_later_delete_still_reaches_the_device_an_expired_event_linked(engine: Engine) -> None:
    """Ann's identify that tied her phone to her expires; her delete must still erase the
    phone's anonymous visits (the link is kept: store/fold/erase.py `keep_links`)."""
    team = with_retention(engine, 30)
    deliver(engine, team, [*ann(), ev("page", "p-phone-new", 52, anonymousId="ann-phone", name="Docs")])
    expire_pass(engine, None, T0 + timedelta(days=60))
    assert "i-old" not in message_ids(engine, team) and "p-phone-new" in message_ids(engine, team)
    deliver(engine, team, [ev("delete", "del", 58, userId="ann")])
    assert message_ids(engine, team) == set()
    assert customer_of(engine, team, "anonymous", "ann-phone") is None


def test_the_workers_round_expires_by_the_real_clock_and_stops_when_asked(engine: Engine) -> None:
    team = with_retention(engine, 30)
    deliver(engine, team, [ev("track", f"m{n:02}", n / 10, userId="u") for n in range(25)])
    stop = threading.Event()
    stop.set()  # the first pause stops the pass: one step done
    done = expiry_round(engine, None, stop, step_rows=10, pause_seconds=0)
    assert done is not None and done.stopped and done.erased[team] == 10
    done = expiry_round(engine, None, threading.Event(), step_rows=10, pause_seconds=0)
    assert done is not None and not done.stopped
    assert message_ids(engine, team) == set()  # 1990 is long before now minus 30 days
