"""Storing received events: durable, whole, once per (team, messageId, type) (within
RESEND_WINDOW of event time).

`store_events` returns only once the events are committed. Requests that arrive while
another request's commit is in flight in the same process are committed together, in
one statement (group commit): the first caller leads and writes everyone queued behind
it, the others wait for its commit. One commit, and one WAL flush, then serves many
requests, which is what lets ingest go past Postgres's rate of single-row commits
(SPEC §8; docs/benchmarks.md has the measurements). A lone request (sync workers, or a
quiet moment) leads at once: it pays no extra wait. If a group's statement fails, each
of its requests is tried again alone, so one request's bad data never fails another's.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.generators import execute as pq_execute
from sqlalchemy import Connection, Engine
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError

from schemas.segment import PreparedEvent
from service.per_process import PerProcess
from store.partitions import ensure_months, is_missing_partition

# A group's transaction holds at most this many events (a request's own batch of up to
# 2,500 always goes in whole): bounded statement size, bounded wait for the followers.
GROUP_MAX_EVENTS = 2500

# Idempotency, as Segment's own (it "deduplicates on the event's messageId, not on the
# contents of the event payload", over at least 24 hours): a (team, messageId, type) is
# stored once among events dated within RESEND_WINDOW of each other, whatever else the
# payloads say. The timeline is partitioned by event time (store/partitions.py), so the
# unique key holds `event_time` and refuses only an exact re-send (same time); the
# window is the insert's own look at the events around the new one's time: one or two
# months' unique index, whichever months the window spans. A payload with no time of its
# own is dated by its receipt, which a re-send does not share: the window finds it too.
# An SDK's queued re-send keeps its timestamp; a client that rebuilds the payload (the
# Python SDK called again with the same message_id) stamps it anew, seconds later.
RESEND_WINDOW = "7 days"

# One statement and one document whatever the number of rows (beside it, the rows' time
# bounds): Postgres plans it once (`_prepare`), and the rows travel as one JSON document that
# Postgres parses in C, instead of twelve arrays that psycopg would escape in Python.
_INSERT_SQL = """
    INSERT INTO events (team_id, message_id, type, event_name, user_id, anonymous_id, group_id,
                        previous_id, event_time, received_at, tiebreak, raw)
    SELECT team_id, message_id, type, event_name, user_id, anonymous_id, group_id,
           previous_id, event_time, received_at, tiebreak, raw
    FROM json_to_recordset(CAST({rows} AS json)) AS r(
        team_id bigint, message_id text, type text, event_name text, user_id text,
        anonymous_id text, group_id text, previous_id text, event_time timestamptz,
        received_at timestamptz, tiebreak bigint, raw jsonb)
    WHERE (  -- stored before migration 0012 and not moved yet (no month can match)
        SELECT true FROM events e WHERE e.layout = 0 AND e.team_id = r.team_id
            AND e.message_id = r.message_id AND e.type = r.type LIMIT 1) IS NULL
      AND (  -- stored already, dated within the re-send window of this one
        SELECT true FROM events e
        WHERE e.team_id = r.team_id AND e.message_id = r.message_id AND e.type = r.type
            AND e.event_time BETWEEN r.event_time - interval '{resend_window}'
                                 AND r.event_time + interval '{resend_window}'
            -- the same bounds for the whole group, known before the statement runs: only
            -- those months are opened at all (the row's own bounds prune per row after)
            AND e.event_time BETWEEN CAST({earliest} AS timestamptz) - interval '{resend_window}'
                                 AND CAST({latest} AS timestamptz) + interval '{resend_window}'
        LIMIT 1) IS NULL
    ON CONFLICT DO NOTHING
    RETURNING team_id, message_id, type
"""
# The committer's own statement goes to libpq directly (psycopg's `pq` layer, waited on
# with the connection's own `wait`, so it is cooperative under gevent too), prepared once
# per connection under our own name: SQLAlchemy's execute path, and then psycopg's
# cursor machinery (query conversion, adapters, prepare cache, result wrapping), each
# cost more CPU per request than libpq's own work for this one statement.
_INSERT_DRIVER = _INSERT_SQL.format(rows="%s", earliest="%s", latest="%s", resend_window=RESEND_WINDOW)
_INSERT_PQ = _INSERT_SQL.format(rows="$1", earliest="$2", latest="$3", resend_window=RESEND_WINDOW).encode()
_STATEMENT = b"timeline_insert_events"
# A connection plans the statement again this often, and after writing twice as many rows
# as at its last plan (from 1,000 to 1,000,000): see `_prepare`.
REPLAN_SECONDS = 60.0
REPLAN_FIRST_ROWS = 1_000
REPLAN_LAST_ROWS = 1_000_000


@dataclass
class _Plan:
    """When a connection last planned the statement, and the rows it wrote since."""

    at: float
    rows: int = 0
    replan_at_rows: int = REPLAN_FIRST_ROWS

    def stale(self) -> bool:
        return time.monotonic() - self.at > REPLAN_SECONDS or self.rows >= self.replan_at_rows


_prepared_on: weakref.WeakKeyDictionary[psycopg.Connection[object], _Plan] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class StoreResult:
    """How many events were new and how many were already stored."""

    accepted: int
    duplicates: int


@dataclass
class _Request:
    """One caller's events, waiting to be written (maybe by another caller)."""

    team_id: int
    events: Sequence[PreparedEvent]
    received_at: datetime
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    done: bool = False
    result: StoreResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Rows:
    """The statement's parameters: the group's rows as one JSON document (UTF-8), and the
    earliest and latest of their event times (RFC 3339)."""

    document: bytes
    earliest: bytes
    latest: bytes

    def parameters(self) -> list[bytes | None]:
        return [self.document, self.earliest, self.latest]


def _rows_document(group: Sequence[_Request]) -> _Rows | None:
    """The group's rows as one JSON document, UTF-8 (None: no rows).

    orjson writes the datetimes itself (RFC 3339, as `isoformat` would).
    """
    rows: list[dict[str, object]] = []
    keys: set[tuple[int, str, str]] = set()
    for request in group:
        received_at = request.received_at
        team_id = request.team_id
        for event in request.events:
            key = (team_id, event.message_id, event.type)
            if key in keys:  # stored once: the first occurrence (dated otherwise, the window
                continue  # would not see it, written by the same statement)
            keys.add(key)
            rows.append(
                {
                    "team_id": team_id,
                    "message_id": event.message_id,
                    "type": event.type,
                    "event_name": event.event_name,
                    "user_id": event.user_id,
                    "anonymous_id": event.anonymous_id,
                    "group_id": event.group_id,
                    "previous_id": event.previous_id,
                    "event_time": event.event_time,
                    "received_at": received_at,
                    "tiebreak": event.tiebreak,
                    "raw": event.raw,
                }
            )
    if not rows:
        return None
    times = [event.event_time for request in group for event in request.events]
    earliest, latest = min(times), max(times)
    try:
        document = orjson.dumps(rows)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits in an event: the stdlib writes it
        document = json.dumps(rows, separators=(",", ":"), default=_isoformat).encode()
    return _Rows(document, _isoformat(earliest).encode(), _isoformat(latest).encode())


def _isoformat(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _set_results(group: Sequence[_Request], inserted: set[tuple[int, str, str]]) -> None:
    """Each request's counts.

    A (team, messageId, type) that occurs twice (in one request or in two) is stored
    once: the first occurrence counts as accepted, the others as duplicates.
    """
    for request in group:
        accepted = 0
        for event in request.events:
            key = (request.team_id, event.message_id, event.type)
            if key in inserted:
                inserted.discard(key)  # a later occurrence of it is a duplicate
                accepted += 1
        request.result = StoreResult(accepted=accepted, duplicates=len(request.events) - accepted)


def _insert_group_driver(connection: Connection, group: Sequence[_Request]) -> None:
    """Insert every request's events with one statement, on an autocommit connection,
    through libpq directly (prepared); set each request's result.

    Driver errors are raised as SQLAlchemy's DBAPIError (as `Connection.execute` would),
    marked `connection_invalidated` when the connection is gone.
    """
    rows = _rows_document(group)
    inserted: set[tuple[int, str, str]] = set()
    if rows is not None:
        driver = connection.connection.driver_connection
        assert driver is not None
        try:
            inserted = _execute_prepared(driver, rows)
        except connection.dialect.loaded_dbapi.Error as error:
            dialect = connection.dialect
            gone = dialect.is_disconnect(error, driver, None)
            raise DBAPIError.instance(
                _INSERT_DRIVER,
                None,
                error,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=gone,
                dialect=dialect,
            ) from error
    _set_results(group, inserted)


def _execute_prepared(driver: psycopg.Connection[object], rows: _Rows) -> set[tuple[int, str, str]]:
    """The INSERT, prepared on this connection once, with one JSON parameter (and the
    rows' time bounds); its RETURNING rows.

    Which connections hold the statement is remembered, but Postgres has the last word:
    a connection that lost it (a pooled connection reset) prepares it again, one that
    already holds it is fine.
    """
    plan = _prepared_on.get(driver)
    if plan is None or plan.stale():
        _prepare(driver, again=plan is not None)
        if plan is not None and plan.replan_at_rows < REPLAN_LAST_ROWS:
            _prepared_on[driver].replan_at_rows = 2 * plan.replan_at_rows
    try:
        result = _run_prepared(driver, rows)
    except pg_errors.InvalidSqlStatementName:
        _prepare(driver, again=False)
        result = _run_prepared(driver, rows)
    _prepared_on[driver].rows += result.ntuples

    def text_at(row: int, column: int) -> str:
        return bytes(result.get_value(row, column) or b"").decode()

    return {(int(text_at(row, 0)), text_at(row, 1), text_at(row, 2)) for row in range(result.ntuples)}


def _prepare(driver: psycopg.Connection[object], *, again: bool) -> None:
    """Prepare the INSERT: one plan for every execution, made again every REPLAN_SECONDS.

    One plan (a generic plan): a plan for given parameters leaves out the months they
    cannot reach and looks cheaper, so Postgres would otherwise plan the statement at each
    execution (3 to 4 ms with 28 months: the partitioned INSERT's planning); the generic
    plan leaves those months out as it starts, the parameters known then (0.2 ms a
    one-event statement). But a plan is only as good as the sizes it was made with: made
    while a month was empty (a new month, a new database), the look for an earlier
    delivery may read the month's feed index instead of probing its unique key, and keep
    doing so as the month grows (measured: 3.6 ms of Postgres CPU a single-event request
    instead of 0.1 ms, 8% of the bare app's rate). So the plan is made again every
    minute and whenever the rows written since double (from 1,000), from the sizes then
    (after that, 48% of the bare app's rate, 0.07 ms of Postgres a request); the looks
    are subqueries run for each new event (never a join the planner could turn into a
    scan and a hash) and never a sequential scan. The settings stay with the connection,
    which serves ingest's writes only.
    """
    pgconn = driver.pgconn
    if again:
        pgconn.send_query(b"DEALLOCATE " + _STATEMENT)
        try:
            _check(driver, driver.wait(pq_execute(pgconn)), pq.ExecStatus.COMMAND_OK)
        except pg_errors.InvalidSqlStatementName:  # lost with a reset: nothing to drop
            pass
    pgconn.send_query(
        b"SELECT set_config('plan_cache_mode', 'force_generic_plan', false), "
        b"set_config('enable_seqscan', 'off', false)"
    )
    _check(driver, driver.wait(pq_execute(pgconn)), pq.ExecStatus.TUPLES_OK)
    pgconn.send_prepare(_STATEMENT, _INSERT_PQ, None)
    try:
        _check(driver, driver.wait(pq_execute(pgconn)), pq.ExecStatus.COMMAND_OK)
    except pg_errors.DuplicatePreparedStatement:
        pass
    _prepared_on[driver] = _Plan(time.monotonic())


def _run_prepared(driver: psycopg.Connection[object], rows: _Rows) -> pq.abc.PGresult:
    pgconn = driver.pgconn
    pgconn.send_query_prepared(_STATEMENT, rows.parameters())
    return _check(driver, driver.wait(pq_execute(pgconn)), pq.ExecStatus.TUPLES_OK)


def _check(driver: psycopg.Connection[object], results: list[pq.abc.PGresult], want: int) -> pq.abc.PGresult:
    """The one result of a statement, or the error Postgres answered, raised as psycopg would."""
    if len(results) != 1:
        raise psycopg.InternalError(f"expected one result, got {len(results)}")
    result = results[0]
    if result.status != want:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise pg_errors.error_from_result(result, encoding=driver.info.encoding)
        raise psycopg.InternalError(f"unexpected result status {pq.ExecStatus(result.status).name}")
    return result


class _GroupCommit:
    """Leader/follower group commit over one engine, in one process."""

    def __init__(self, engine: Engine):
        # Weak: the committer lives as long as its engine, and must not keep it alive.
        self._engine = weakref.ref(engine)
        self.lock = threading.Lock()
        self.pending: list[_Request] = []
        self.busy = False  # a leader is writing
        self.connection: Connection | None = None  # used by the leader only

    @property
    def engine(self) -> Engine:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of this group committer is gone")
        return engine

    def close(self) -> None:
        """Close the committer's connection: its engine is disposing of its pool."""
        with self.lock:
            if self.busy:  # a leader is using it; it goes when that write fails or the process ends
                return
            connection, self.connection = self.connection, None
        if connection is not None:
            connection.invalidate()  # closes it now; the pool it came from is gone

    def store(self, request: _Request) -> StoreResult:
        with self.lock:
            self.pending.append(request)
            if not self.busy:
                self.busy = request.lead = True
        if not request.lead:
            request.wake.wait()  # done by a leader, or made the next leader
        if not request.done:
            self._lead()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _take(self) -> list[_Request]:
        group: list[_Request] = []
        size = 0
        with self.lock:
            while self.pending and (not group or size + len(self.pending[0].events) <= GROUP_MAX_EVENTS):
                request = self.pending.pop(0)
                group.append(request)
                size += len(request.events)
        return group

    def _lead(self) -> None:
        group = self._take()
        try:
            self._write(group)
        except BaseException as interrupted:  # the leader's thread is being stopped
            for request in group:
                if request.result is None and request.error is None:
                    request.error = interrupted
            raise
        finally:
            with self.lock:
                successor = self.pending[0] if self.pending else None
                if successor is None:
                    self.busy = False
                else:
                    successor.lead = True
            for request in group:
                request.done = True
                request.wake.set()
            if successor is not None:
                successor.wake.set()

    def _write(self, group: list[_Request]) -> None:
        try:
            self._execute(group)
            return
        except Exception as error:
            if len(group) == 1:
                group[0].error = error
                return
        for request in group:  # one failed the group: each alone, each its own outcome
            try:
                self._execute([request])
            except Exception as error:
                request.error = error

    def _execute(self, group: list[_Request]) -> None:
        """The group's INSERT on the committer's own connection, in autocommit.

        The months the events fall in are made first if missing (store/partitions.py).
        One statement in autocommit is its own transaction: all its rows or none, and
        committed (WAL flushed, synchronous_commit) before Postgres answers it. That is
        one round trip per group instead of four (pool ping, BEGIN, INSERT, COMMIT).
        A connection that went stale (Postgres restarted) is replaced and the group
        tried once more; the insert is idempotent, so that retry cannot store twice.
        """
        times = [event.event_time for request in group for event in request.events]
        ensure_months(self.engine, times)
        for attempt in (1, 2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                _insert_group_driver(self.connection, group)
                return
            except DBAPIError as error:
                self._discard_connection(invalidate=error.connection_invalidated)
                if attempt == 1 and reused and error.connection_invalidated:
                    continue
                if attempt == 1 and is_missing_partition(error):  # dropped since this process looked
                    ensure_months(self.engine, times)
                    continue
                raise
            except Exception:
                self._discard_connection()
                raise

    def _discard_connection(self, invalidate: bool = False) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                if invalidate:  # gone: do not hand it back to the pool
                    connection.invalidate()
                else:
                    connection.close()
            except Exception:  # already broken: the pool drops it
                pass


@dataclass
class _Committers:
    """A process's group committers, one per engine (weak: a dropped engine takes its own)."""

    by_engine: weakref.WeakKeyDictionary[Engine, _GroupCommit] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    lock: threading.Lock = field(default_factory=threading.Lock)


_committers = PerProcess(_Committers)


def _committer(engine: Engine) -> _GroupCommit:
    """The process's group committer for this engine (a forked child makes its own)."""
    committers = _committers.get()
    found = committers.by_engine.get(engine)
    if found is None:
        with committers.lock:
            found = committers.by_engine.get(engine)
            if found is None:
                found = committers.by_engine[engine] = _GroupCommit(engine)
                if not sa_event.contains(engine, "engine_disposed", _engine_disposed):
                    sa_event.listen(engine, "engine_disposed", _engine_disposed)
    return found


def _engine_disposed(engine: Engine) -> None:
    """`engine.dispose()` closes the pool's idle connections; the committer's goes too."""
    committers = _committers.made()
    found = committers.by_engine.get(engine) if committers is not None else None
    if found is not None:
        found.close()


def store_events(
    engine: Engine, team_id: int, events: Sequence[PreparedEvent], received_at: datetime
) -> StoreResult:
    """Insert events and commit: when this returns, they are durable.

    Concurrent callers in this process share one transaction (see the module docstring);
    a duplicate of an already stored (team, messageId, type) counts as a duplicate.
    """
    if not events:
        return StoreResult(0, 0)
    return _committer(engine).store(_Request(team_id, events, received_at))
