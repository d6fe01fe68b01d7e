"""Storing an import: COPY into a staging table, then one INSERT ... SELECT into events.

Each batch is one transaction: the batch's events are streamed with COPY (psycopg 3's
`cursor.copy`) into a temporary table, then moved into `events` with
`ON CONFLICT (team_id, message_id, type) DO NOTHING`, the same dedupe key as ingest,
and the batch's refusals and counts (`store/rejections.py`) are written in the same
transaction. A run killed at any point loses only its open batch, which was never
committed; run again, every event already stored is a duplicate, so each is stored
exactly once. The staging table is `ON COMMIT DELETE ROWS`: each commit empties it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine

from schemas.segment import PreparedEvent
from store.rejections import CountKey, Refusal, hour_of, record_rejections

STAGING_COLUMNS = (
    "message_id",
    "type",
    "event_name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "event_time",
    "tiebreak",
    "raw",
)
_CREATE_STAGING = """
    CREATE TEMP TABLE IF NOT EXISTS import_staging (
        message_id text, type text, event_name text, user_id text, anonymous_id text,
        group_id text, previous_id text, event_time timestamptz, tiebreak bigint, raw jsonb
    ) ON COMMIT DELETE ROWS
"""
_COPY = f"COPY import_staging ({', '.join(STAGING_COLUMNS)}) FROM STDIN"
# Staging order is file order, so the first of two lines with one dedupe key is the one
# stored, as the first of two deliveries would be over HTTP.
_MOVE = """
    WITH inserted AS (
        INSERT INTO events (team_id, message_id, type, event_name, user_id, anonymous_id, group_id,
                            previous_id, event_time, received_at, tiebreak, raw)
        SELECT %(team_id)s, message_id, type, event_name, user_id, anonymous_id, group_id,
               previous_id, event_time, %(received_at)s, tiebreak, raw
        FROM import_staging
        ON CONFLICT (team_id, message_id, type) DO NOTHING
        RETURNING type
    )
    SELECT type, count(*) FROM inserted GROUP BY type
"""


@dataclass(frozen=True)
class BatchResult:
    """What one committed batch did, per event type."""

    accepted: Mapping[str, int]
    duplicates: Mapping[str, int]


def event_row(event: PreparedEvent, encode: Any) -> tuple[Any, ...]:
    """One staging row; `encode` writes the raw event as JSON text."""
    return (
        event.message_id,
        event.type,
        event.event_name,
        event.user_id,
        event.anonymous_id,
        event.group_id,
        event.previous_id,
        event.event_time,
        event.tiebreak,
        encode(event.raw),
    )


class ImportBatches:
    """Batches of one import, on one connection of its own (see the module docstring)."""

    def __init__(self, connection: Connection, team_id: int, received_at: datetime):
        self.connection = connection
        self.team_id = team_id
        self.received_at = received_at
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        self.driver: psycopg.Connection[Any] = driver
        self.cursor = self.driver.cursor()
        self.staged: Counter[str] = Counter()
        self._copy: Any = None
        self._copy_manager: Any = None
        self.connection.exec_driver_sql(_CREATE_STAGING)
        self.connection.commit()

    def stage(self, rows: Sequence[tuple[Any, ...]], types: Sequence[str]) -> None:
        """Stream rows into the open batch (opened on the first rows)."""
        if self._copy is None:
            self._copy_manager = self.cursor.copy(_COPY)
            self._copy = self._copy_manager.__enter__()
        write = self._copy.write_row
        for row in rows:
            write(row)
        self.staged.update(types)

    def commit(self, refusals: Sequence[Refusal], counts: dict[CountKey, int], now: datetime) -> BatchResult:
        """Move the staged events into events, keep the refusals, add the counts; commit."""
        if self._copy_manager is not None:
            self._copy_manager.__exit__(None, None, None)
            self._copy = self._copy_manager = None
        accepted: dict[str, int] = {}
        if self.staged:
            rows = self.cursor.execute(
                _MOVE, {"team_id": self.team_id, "received_at": self.received_at}
            ).fetchall()
            accepted = {str(kind): int(n) for kind, n in rows}
        duplicates = {kind: n - accepted.get(kind, 0) for kind, n in self.staged.items()}
        duplicates = {kind: n for kind, n in duplicates.items() if n}
        hour = hour_of(now)
        for kind, n in accepted.items():
            key = CountKey(hour, "import", kind, "accepted")
            counts[key] = counts.get(key, 0) + n
        for kind, n in duplicates.items():
            key = CountKey(hour, "import", kind, "duplicate")
            counts[key] = counts.get(key, 0) + n
        record_rejections(self.connection, self.team_id, refusals, counts, now)
        self.connection.commit()
        self.staged = Counter()
        return BatchResult(accepted, duplicates)


@contextmanager
def import_batches(engine: Engine, team_id: int, received_at: datetime) -> Iterator[ImportBatches]:
    """An import's batches on a connection of its own; an uncommitted batch is rolled back."""
    with engine.connect() as connection:
        batches = ImportBatches(connection, team_id, received_at)
        try:
            yield batches
        finally:
            if batches._copy_manager is not None:
                try:
                    batches._copy_manager.__exit__(RuntimeError, RuntimeError("import stopped"), None)
                except Exception:  # the COPY is abandoned with its transaction
                    pass
            connection.rollback()
