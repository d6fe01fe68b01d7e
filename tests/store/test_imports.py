"""store/imports.py: a batch COPYed into events, or staged when an event of it is stored already."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from schemas.segment import prepare_event
from store.imports import EVENT_COLUMNS, BatchResult, ImportBatches, event_row
from store.partitions import ensure_months
from tests.conftest import TeamKeys

RECEIVED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
INSERT = text(
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(':' + c for c in EVENT_COLUMNS)})"
)


def rows(team_id: int, ids: list[str]) -> list[tuple[Any, ...]]:
    return [
        event_row(
            team_id,
            RECEIVED,
            prepare_event({"type": "track", "userId": "u", "event": "E", "messageId": m}, RECEIVED),
        )  # fmt: skip
        for m in ids
    ]


def stored(engine: Engine, team_id: int) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT message_id FROM events WHERE team_id = :t ORDER BY message_id"), {"t": team_id}
            ).scalars()
        )


def waiting_on_a_lock(engine: Engine) -> bool:
    """Whether a backend of this database waits on a lock (the COPY behind ingest's row)."""
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_new_batch_is_copied_into_events_and_a_batch_with_a_stored_event_is_staged(
    engine: Engine, team: TeamKeys
) -> None:
    with engine.connect() as connection:
        batches = ImportBatches(connection, team.id, RECEIVED)
        batches.stage(rows(team.id, ["a", "b"]), ["track"] * 2)
        first = batches.commit([], {}, {"track": 1}, RECEIVED)
        batches.stage(rows(team.id, ["c"]), ["track"])
        batches.stage(rows(team.id, ["b", "d"]), ["track"] * 2)  # b is stored already
        second = batches.commit([], {}, {}, RECEIVED)
        # After a batch that met a stored event, the next is staged from the start...
        batches.stage(rows(team.id, ["e", "f"]), ["track"] * 2)
        third = batches.commit([], {}, {}, RECEIVED)
        # ... and after a staged batch that met none, COPY into events resumes.
        batches.stage(rows(team.id, ["g"]), ["track"])
        fourth = batches.commit([], {}, {}, RECEIVED)
    assert first == BatchResult({"track": 2}, {"track": 1}, staged=False)
    assert second == BatchResult({"track": 2}, {"track": 1}, staged=True)
    assert third == BatchResult({"track": 2}, {}, staged=True)
    assert fourth == BatchResult({"track": 1}, {}, staged=False)
    assert stored(engine, team.id) == ["a", "b", "c", "d", "e", "f", "g"]


def test_an_event_ingested_while_the_batch_is_copied_is_a_duplicate_not_an_error(
    engine: Engine, team: TeamKeys
) -> None:
    batch = rows(team.id, [f"c{n}" for n in range(5)])
    outcome: dict[str, Any] = {}
    ensure_months(engine, [RECEIVED])  # the month the INSERT below writes
    with engine.connect() as ingest, engine.connect() as connection:
        # HTTP ingest stores c2 in a transaction still open when the COPY reaches c2.
        values = dict(zip(EVENT_COLUMNS, batch[2], strict=True))
        ingest.execute(INSERT, {**values, "raw": values["raw"].decode()})
        batches = ImportBatches(connection, team.id, RECEIVED)
        batches.stage(batch, ["track"] * 5)

        def commit() -> None:
            try:
                outcome["result"] = batches.commit([], {}, {}, RECEIVED)
            except BaseException as error:  # pragma: no cover - the test fails on it
                outcome["error"] = error

        thread = threading.Thread(target=commit)
        thread.start()
        # The COPY waits for ingest's transaction: its backend waits on a lock (or, were it
        # not to wait, the commit would end; either is seen, whatever the machine's load).
        deadline = time.monotonic() + 30
        while thread.is_alive() and not waiting_on_a_lock(engine):
            assert time.monotonic() < deadline, "the COPY neither waited nor ended"
            time.sleep(0.02)
        assert thread.is_alive(), outcome  # the COPY waits for ingest's transaction
        ingest.commit()
        thread.join(30)
    assert "error" not in outcome, outcome
    assert outcome["result"] == BatchResult({"track": 4}, {"track": 1}, staged=True)
    assert stored(engine, team.id) == [f"c{n}" for n in range(5)]


def test_another_error_of_the_copy_is_raised_and_nothing_of_the_batch_is_kept(
    engine: Engine, team: TeamKeys
) -> None:
    bad = list(rows(team.id, ["x"])[0])
    bad[EVENT_COLUMNS.index("raw")] = b"{not json"
    with engine.connect() as connection:
        batches = ImportBatches(connection, team.id, RECEIVED)
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            batches.stage(rows(team.id, ["w"]) + [tuple(bad)], ["track"] * 2)
            batches.commit([], {}, {}, RECEIVED)
        batches.abandon()
        connection.rollback()
    assert stored(engine, team.id) == []
