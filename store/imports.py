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

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
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
        # The COPY and the move went to psycopg directly: if SQLAlchemy had no statement
        # of its own in this batch, its commit was a no-op, so commit the driver too.
        self.driver.commit()
        self.staged = Counter()
        return BatchResult(accepted, duplicates)


class BatchWriter:
    """`ImportBatches` driven by a thread of its own: Postgres copies and inserts one batch
    while the caller reads and validates the next (psycopg releases the GIL while it
    waits). The queue between them is short, so memory stays bounded. `on_commit` runs
    on the writer thread after each commit; an error there is raised to the caller at its
    next call."""

    def __init__(self, batches: ImportBatches, on_commit: Callable[[BatchResult], None]):
        self.batches = batches
        self.on_commit = on_commit
        self.work: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.abort = False
        self.thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
        self.thread.start()

    def stage(self, rows: list[tuple[Any, ...]], types: list[str]) -> None:
        """Hand rows to the writer (the caller must not reuse the lists)."""
        self._raise_error()
        self.work.put(("stage", rows, types))

    def commit(self, refusals: list[Refusal], counts: dict[CountKey, int], now: datetime) -> None:
        """Close the open batch: the writer commits it after the rows handed before."""
        self._raise_error()
        self.work.put(("commit", refusals, counts, now))

    def close(self, abort: bool = False) -> None:
        """Wait for every batch handed over (or, aborting, drop them); raise the writer's error."""
        self.abort = abort
        self.work.put(None)
        self.thread.join()
        if not abort:
            self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            if self.error is not None or self.abort:
                continue  # drain: the open batch is rolled back with the connection
            try:
                if item[0] == "stage":
                    self.batches.stage(item[1], item[2])
                else:
                    self.on_commit(self.batches.commit(item[1], item[2], item[3]))
            except BaseException as error:  # handed to the caller
                self.error = error


@contextmanager
def import_batches(
    engine: Engine, team_id: int, received_at: datetime, on_commit: Callable[[BatchResult], None]
) -> Iterator[BatchWriter]:
    """An import's batches on a connection of its own, written by a thread of their own.

    Leaving the block normally waits for every batch; leaving it by an exception drops
    what is not committed yet (rolled back).
    """
    with engine.connect() as connection:
        batches = ImportBatches(connection, team_id, received_at)
        writer = BatchWriter(batches, on_commit)
        try:
            yield writer
            writer.close()
        except BaseException:
            writer.close(abort=True)
            raise
        finally:
            if batches._copy_manager is not None:
                try:
                    batches._copy_manager.__exit__(RuntimeError, RuntimeError("import stopped"), None)
                except Exception:  # the COPY is abandoned with its transaction
                    pass
            connection.rollback()
