"""Storing an import: COPY straight into events, or through a staging table when it must.

Each batch is one transaction. Its rows (already deduplicated within the batch by the
caller, the first line of a key kept) are streamed with binary COPY (psycopg 3's
`cursor.copy`) straight into `events`: when none of them is stored yet, which is the
common case of a first import, that is all the storing costs, done while the caller
reads the next lines. When one is stored already (an earlier run, HTTP ingest, an
earlier batch of this run), the unique index refuses the COPY: the transaction is
rolled back and the batch's rows, kept for the purpose, are COPYed into a temporary
table and moved into `events` with `ON CONFLICT DO NOTHING` on the same dedupe key as
ingest (`(team_id, message_id, type, event_time)`), which counts what was new. Either way the
batch's refusals and counts (`store/rejections.py`) are written in the same
transaction. A run killed at any point loses only its open batch, which was never
committed; run again, every event already stored is a duplicate, so each is stored
exactly once. The staging table is `ON COMMIT DELETE ROWS`: each commit empties it.
After a batch that met stored events the next one is staged from the start (a run
again after a kill would otherwise COPY most batches twice); COPY into events resumes
after a staged batch that found nothing stored. The months a batch's events fall in are
made before its COPY (`store/partitions.py`); while the events of a table made before
migration 0012 are being moved (`store/timeline_move.py`) every batch is staged, whose
move also looks for them.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import errors, pq
from psycopg.adapt import Dumper
from sqlalchemy import Connection, Engine

from schemas.segment import PreparedEvent
from store.events import RESEND_WINDOW
from store.partitions import ensure_months, is_missing_partition
from store.rejections import CountKey, Refusal, hour_of, record_rejections
from store.timeline_move import timeline_move_pending

# The columns of a row, in this order (`event_row`).
EVENT_COLUMNS = (
    "team_id",
    "message_id",
    "type",
    "event_name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "event_time",
    "received_at",
    "tiebreak",
    "raw",
)
# Their Postgres types, in the same order: the COPY is binary, so the types must be exact.
EVENT_TYPES = (
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "bigint",
    "jsonb",
)
_COLUMNS = ", ".join(EVENT_COLUMNS)
EVENT_TIME = EVENT_COLUMNS.index("event_time")
_CREATE_STAGING = """
    CREATE TEMP TABLE IF NOT EXISTS import_staging (
        team_id bigint, message_id text, type text, event_name text, user_id text, anonymous_id text,
        group_id text, previous_id text, event_time timestamptz, received_at timestamptz,
        tiebreak bigint, raw jsonb
    ) ON COMMIT DELETE ROWS
"""
# Binary COPY: psycopg writes a row in half the CPU of the text format (no escaping, no
# timestamps and numbers as text), and the writer thread holds the GIL that much less.
_COPY_EVENTS = f"COPY events ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGING = f"COPY import_staging ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_JSONB_OID = 3802
# Staging order is file order (and the rows are unique within the batch), so the first of
# two lines with one dedupe key is the one stored, as the first of two deliveries over HTTP.
_MOVE = f"""
    WITH inserted AS (
        INSERT INTO events ({_COLUMNS})
        SELECT {_COLUMNS} FROM import_staging s
        WHERE NOT EXISTS (  -- stored before migration 0012 and not moved yet (store/events.py)
            SELECT 1 FROM events e WHERE e.layout = 0 AND e.team_id = s.team_id
                AND e.message_id = s.message_id AND e.type = s.type)
          AND NOT EXISTS (  -- stored already, dated within ingest's re-send window of this one
            SELECT 1 FROM events e
            WHERE e.team_id = s.team_id AND e.message_id = s.message_id AND e.type = s.type
                AND e.event_time BETWEEN s.event_time - interval '{RESEND_WINDOW}'
                                     AND s.event_time + interval '{RESEND_WINDOW}')
        ON CONFLICT DO NOTHING
        RETURNING type
    )
    SELECT type, count(*) FROM inserted GROUP BY type
"""
# The dedupe key, and each month's copy of it (`..._y2026m12`: store/partitions.py).
DEDUPE_CONSTRAINT = "uq_events_team_id_message_id_type_event_time"
# Chunks of rows (at most 1,000 events or 1 MiB each, app/imports/importer.py) waiting for the
# writer: enough for the reader to go on while a batch commits.
QUEUED_CHUNKS = 16


@dataclass(frozen=True)
class BatchResult:
    """What one committed batch did, per event type."""

    accepted: Mapping[str, int]
    duplicates: Mapping[str, int]
    # Whether the batch went through the staging table (some event was stored already).
    staged: bool = False


def already_stored(error: BaseException) -> bool:
    """Whether a COPY into events failed because an event of it is stored already.

    A unique violation of the dedupe key; or a deadlock, which only a concurrent writer
    of the same keys (HTTP ingest) can cause: the ON CONFLICT path settles both.
    """
    if isinstance(error, errors.UniqueViolation):
        return (error.diag.constraint_name or "").startswith(DEDUPE_CONSTRAINT)
    return isinstance(error, errors.DeadlockDetected)


def month_added(error: BaseException) -> bool:
    """Whether a COPY into events met an event whose month was made after the COPY began
    (a COPY sees the partitions of its start): the batch goes through staging."""
    return is_missing_partition(error)


def event_row(team_id: int, received_at: datetime, event: PreparedEvent) -> tuple[Any, ...]:
    """One row of `EVENT_COLUMNS` for a prepared event (the raw event as JSON bytes)."""
    return (
        team_id,
        event.message_id,
        event.type,
        event.event_name,
        event.user_id,
        event.anonymous_id,
        event.group_id,
        event.previous_id,
        event.event_time,
        received_at,
        event.tiebreak,
        encode_raw(event.raw),
    )


def encode_raw(raw: dict[str, Any]) -> bytes:
    """The raw event as compact UTF-8 JSON (orjson; the stdlib for an integer beyond 64 bits)."""
    try:
        return orjson.dumps(raw)
    except orjson.JSONEncodeError:
        return json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode()


class JsonbBytes:
    """Marks the jsonb column of the import's binary COPY (never instantiated)."""


class JsonbBytesDumper(Dumper):
    """jsonb in binary for COPY: a version byte, then JSON already encoded (`encode_raw`)."""

    format = pq.Format.BINARY
    oid = _JSONB_OID

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + bytes(obj)


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
        # By oid: `set_types` picks it for the jsonb column (on this cursor only).
        self.cursor.adapters.register_dumper(JsonbBytes, JsonbBytesDumper)
        self.staged: Counter[str] = Counter()
        # The open batch's rows, in order, kept until it commits in case it must be staged.
        self.rows: list[Sequence[tuple[Any, ...]]] = []
        # False once the COPY into events was refused for this batch; never while events
        # stored before migration 0012 are being moved (COPY cannot see them as duplicates).
        self.moving = timeline_move_pending(connection)
        self.direct = not self.moving
        self.staged_batches = 0
        self._copy: Any = None
        self._copy_manager: Any = None
        self.connection.exec_driver_sql(_CREATE_STAGING)
        self.connection.commit()

    def stage(self, rows: Sequence[tuple[Any, ...]], types: Sequence[str]) -> None:
        """Stream rows into the open batch (opened on the first rows)."""
        self.rows.append(rows)
        self.staged.update(types)
        if not self.direct:
            return  # staged at the commit
        try:
            ensure_months(self.connection.engine, [row[EVENT_TIME] for row in rows])
            if self._copy is None:
                self._open(_COPY_EVENTS)
            write = self._copy.write_row
            for row in rows:
                write(row)
        except psycopg.Error as error:
            self._refused(error)

    def commit(
        self,
        refusals: Sequence[Refusal],
        counts: dict[CountKey, int],
        repeated: Mapping[str, int],
        now: datetime,
    ) -> BatchResult:
        """Store the batch, keep the refusals, add the counts; commit.

        `repeated`: the lines of the batch left out by the caller because an earlier line
        of the batch had their key (duplicates, per type).
        """
        accepted: dict[str, int] = {}
        if self.staged and self.direct:
            try:
                self._close()
                accepted = dict(self.staged)
            except psycopg.Error as error:
                self._refused(error)
        staged = bool(self.staged) and not self.direct
        if staged:
            ensure_months(self.connection.engine, [row[EVENT_TIME] for rows in self.rows for row in rows])
            self._open(_COPY_STAGING)
            for rows in self.rows:
                for row in rows:
                    self._copy.write_row(row)
            self._close()
            found = self.cursor.execute(_MOVE).fetchall()
            accepted = {str(kind): int(n) for kind, n in found}
            self.staged_batches += 1
        duplicates = Counter(repeated)
        duplicates.update({kind: n - accepted.get(kind, 0) for kind, n in self.staged.items()})
        duplicates = Counter({kind: n for kind, n in duplicates.items() if n})
        hour = hour_of(now)
        for kind, n in accepted.items():
            key = CountKey(hour, "import", kind, "accepted")
            counts[key] = counts.get(key, 0) + n
        for kind, n in duplicates.items():
            key = CountKey(hour, "import", kind, "duplicate")
            counts[key] = counts.get(key, 0) + n
        record_rejections(self.connection, self.team_id, refusals, counts, now)
        self.connection.commit()
        # The COPY (and the move) went to psycopg directly: if SQLAlchemy had no statement
        # of its own in this batch, its commit was a no-op, so commit the driver too.
        self.driver.commit()
        # A batch that met stored events is likely followed by more (a run again after
        # a kill, an archive imported twice): the next one goes straight to staging, and
        # COPY into events resumes after a staged batch that found nothing stored.
        self.direct = (not staged or accepted == dict(self.staged)) and not self.moving
        self.staged = Counter()
        self.rows = []
        return BatchResult(accepted, dict(duplicates), staged)

    def abandon(self) -> None:
        """Leave an open COPY (the transaction is rolled back by the caller)."""
        if self._copy_manager is not None:
            manager, self._copy_manager, self._copy = self._copy_manager, None, None
            try:
                manager.__exit__(RuntimeError, RuntimeError("import stopped"), None)
            except Exception:  # the COPY is abandoned with its transaction
                pass

    def _open(self, statement: str) -> None:
        self._copy_manager = self.cursor.copy(statement)
        self._copy = self._copy_manager.__enter__()
        self._copy.set_types(EVENT_TYPES)

    def _close(self) -> None:
        manager, self._copy_manager, self._copy = self._copy_manager, None, None
        if manager is not None:
            manager.__exit__(None, None, None)

    def _refused(self, error: psycopg.Error) -> None:
        """The COPY into events failed: stage this batch if an event was stored already."""
        self.abandon()
        if not (already_stored(error) or month_added(error)):
            raise error
        # Nothing else ran in this transaction yet: undo the COPY, the batch starts over.
        self.connection.rollback()
        self.driver.rollback()
        self.direct = False


class BatchWriter:
    """`ImportBatches` driven by a thread of its own: Postgres copies one batch while the
    caller reads and validates the next lines (psycopg releases the GIL while it
    waits). The queue between them is short, so memory stays bounded. `on_commit` runs
    on the writer thread after each commit; an error there is raised to the caller at its
    next call."""

    def __init__(self, batches: ImportBatches, on_commit: Callable[[BatchResult], None]):
        self.batches = batches
        self.on_commit = on_commit
        self.work: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=QUEUED_CHUNKS)
        self.error: BaseException | None = None
        self.abort = False
        self.thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
        self.thread.start()

    def stage(self, rows: list[tuple[Any, ...]], types: list[str]) -> None:
        """Hand rows to the writer (the caller must not reuse the lists)."""
        self._raise_error()
        self.work.put(("stage", rows, types))

    def commit(
        self, refusals: list[Refusal], counts: dict[CountKey, int], repeated: Mapping[str, int], now: datetime
    ) -> None:
        """Close the open batch: the writer commits it after the rows handed before."""
        self._raise_error()
        self.work.put(("commit", refusals, counts, repeated, now))

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
                    self.on_commit(self.batches.commit(item[1], item[2], item[3], item[4]))
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
            batches.abandon()
            connection.rollback()
