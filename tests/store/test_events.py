"""Storing events: committed before the call returns, once per key, one caller's bad data
never failing another's, also when concurrent callers share a group commit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from schemas.segment import PreparedEvent, prepare_event
from store.events import StoreResult, _committer, _GroupCommit, _Request, store_events
from tests.conftest import TeamKeys

RECEIVED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def track(message_id: str, user: str = "u1") -> PreparedEvent:
    raw: dict[str, Any] = {"type": "track", "event": "Clicked", "userId": user, "messageId": message_id}
    return prepare_event(raw, RECEIVED)


def unstorable(message_id: str) -> PreparedEvent:
    """An event Postgres refuses (jsonb has no \\u0000), as if validation had missed it."""
    good = track(message_id)
    return PreparedEvent(
        message_id=good.message_id,
        type=good.type,
        event_name=good.event_name,
        user_id=good.user_id,
        anonymous_id=None,
        group_id=None,
        previous_id=None,
        event_time=good.event_time,
        raw={**good.raw, "properties": {"note": "nul \x00 here"}},
    )


def stored(engine: Engine, team_id: int) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT message_id FROM events WHERE team_id = :t ORDER BY message_id"), {"t": team_id}
        )
        return [row.message_id for row in rows]


def test_events_are_committed_when_store_returns(engine: Engine, team: TeamKeys) -> None:
    result = store_events(engine, team.id, [track("m1"), track("m2")], RECEIVED)

    assert result == StoreResult(accepted=2, duplicates=0)
    assert stored(engine, team.id) == ["m1", "m2"]  # another connection sees them


def test_a_resent_event_is_a_duplicate_and_stored_once(engine: Engine, team: TeamKeys) -> None:
    store_events(engine, team.id, [track("m1")], RECEIVED)

    again = store_events(engine, team.id, [track("m1"), track("m1"), track("m2")], RECEIVED)

    assert again == StoreResult(accepted=1, duplicates=2)
    assert stored(engine, team.id) == ["m1", "m2"]


def test_concurrent_callers_each_get_their_own_counts(engine: Engine, team: TeamKeys) -> None:
    callers = 12
    results: dict[int, StoreResult] = {}
    gate = threading.Barrier(callers)

    def post(index: int) -> None:
        # Every caller sends one event of its own and one that all of them send.
        events = [track(f"own-{index:02d}"), track("shared")]
        gate.wait()
        results[index] = store_events(engine, team.id, events, RECEIVED)

    threads = [threading.Thread(target=post, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(results) == list(range(callers))
    assert all(r.accepted + r.duplicates == 2 for r in results.values())
    assert sum(r.accepted for r in results.values()) == callers + 1  # "shared" counted once
    assert stored(engine, team.id) == sorted([f"own-{i:02d}" for i in range(callers)] + ["shared"])


def test_one_callers_bad_event_does_not_fail_the_others_in_its_group(engine: Engine, team: TeamKeys) -> None:
    group = [
        _Request(team.id, [track("good-1")], RECEIVED),
        _Request(team.id, [track("bad-ok"), unstorable("bad")], RECEIVED),
        _Request(team.id, [track("good-2"), track("good-1")], RECEIVED),
    ]

    _GroupCommit(engine)._write(group)

    assert group[0].result == StoreResult(accepted=1, duplicates=0)
    assert isinstance(group[1].error, DBAPIError)
    assert group[2].result == StoreResult(accepted=1, duplicates=1)
    assert stored(engine, team.id) == ["good-1", "good-2"]  # nothing of the bad request


def test_a_caller_whose_events_postgres_refuses_gets_the_error(engine: Engine, team: TeamKeys) -> None:
    with pytest.raises(DBAPIError):
        store_events(engine, team.id, [unstorable("bad")], RECEIVED)

    assert store_events(engine, team.id, [track("after")], RECEIVED).accepted == 1
    assert stored(engine, team.id) == ["after"]


def test_the_committer_survives_its_connection_being_killed(engine: Engine, team: TeamKeys) -> None:
    store_events(engine, team.id, [track("before")], RECEIVED)
    connection = _committer(engine).connection
    assert connection is not None
    pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    assert store_events(engine, team.id, [track("after")], RECEIVED).accepted == 1
    assert stored(engine, team.id) == ["after", "before"]
