"""Poison events: an event the fold cannot write is set aside, so the team's others fold.

Ingest bounds what has a rule (`schemas/segment.py`), but an event stored before a bound
existed, or a value no rule foresaw, can make a batch's transaction fail on the data
itself (an index entry too large, a value out of range). Retrying such a batch would fail
forever and stall the team. So when a batch fails with a *data* error (`cannot_fold`),
`fold_isolating` folds it again in halves, each under a savepoint, down to the single
events that fail; those are recorded in `fold_failures` with their error and marked
folded without a customer, so the batch selection, the sweep and the backlog skip them.
A connection or server error is not the data's fault: it propagates, the transaction
rolls back and the batch is taken again.

A delete is never set aside (issue 22): it is a person exercising a legal right, and
what fails while folding it is re-deriving *other* people who shared a device, a group
or a company with the deleted one. So a delete that fails alone is applied again by
`erase_first`: its person is erased with statements that cannot fail on data (the
customers it touched are taken apart, not derived again), and what was taken apart is
folded again as new, with the isolation above setting aside the poison among it. If even
that fails, the delete stays in the backlog (retried with every batch) with a row in
`fold_failures` that names it, a log line at ERROR and the `fold_failing_deletes` gauge:
loud, and never looking done.

The happy path pays nothing: no savepoint and no extra statement unless a batch failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from workers import derived
from workers.batch import Batch
from workers.erase import apply_deletes
from workers.identity import SQL_IS_JUNK
from workers.pending import PENDING_COLUMNS, PendingEvent

log = logging.getLogger(__name__)

# SQLSTATE classes that blame the data, not the server or the connection: 22 data
# exception (out of range, invalid text), 23 integrity constraint violation, 54 program
# limit exceeded (an index row too large, a statement too deep).
DATA_ERROR_CLASSES = ("22", "23", "54")
MAX_MESSAGE = 1_000

FoldStep = Callable[[Connection, int, Sequence[PendingEvent], datetime], None]


@dataclass(frozen=True)
class FoldError:
    """Why one event could not be folded, as stored and shown to the team's admins."""

    error_class: str
    sqlstate: str | None
    message: str


def sqlstate_of(error: DBAPIError) -> str | None:
    """The SQLSTATE Postgres gave the failed statement, None for a driver-side error."""
    state = getattr(error.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def cannot_fold(error: BaseException) -> bool:
    """Whether a batch failed because of what its events hold (retrying would fail again)."""
    if not isinstance(error, DBAPIError) or error.connection_invalidated:
        return False
    state = sqlstate_of(error)
    return state is not None and state[:2] in DATA_ERROR_CLASSES


def describe(error: DBAPIError) -> FoldError:
    """The error's class, SQLSTATE and first line (Postgres's primary message, bounded)."""
    original = error.orig
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    message = primary if isinstance(primary, str) and primary else str(original).split("\n", 1)[0]
    return FoldError(type(original).__name__, sqlstate_of(error), message[:MAX_MESSAGE])


def fold_isolating(
    connection: Connection,
    team_id: int,
    events: Sequence[PendingEvent],
    now: datetime,
    fold: FoldStep,
) -> dict[int, FoldError]:
    """Fold `events` (a batch that failed whole) in halves under savepoints; set aside the
    single events that still fail. Returns them by event id; every other event is folded.

    Halves fold one after another in the caller's transaction, each seeing what the ones
    before wrote, as batches do; the result is the fold of the set minus those set aside.
    """
    failed: dict[int, FoldError] = {}
    deletes_failed: dict[int, FoldError] = {}
    pending = (
        [list(events[: len(events) // 2]), list(events[len(events) // 2 :])]
        if len(events) > 1
        else [list(events)]
    )
    while pending:
        part = pending.pop(0)
        if not part:
            continue
        try:
            with connection.begin_nested():
                fold(connection, team_id, part, now)
        except DBAPIError as error:
            if not cannot_fold(error):
                raise
            if len(part) > 1:
                middle = len(part) // 2
                pending[:0] = [part[:middle], part[middle:]]
            elif part[0].type == "delete":  # never set aside: erase its person first
                try:
                    with connection.begin_nested():
                        erase_first(connection, team_id, part[0], now, fold)
                except DBAPIError as again:
                    if not cannot_fold(again):
                        raise
                    deletes_failed[part[0].id] = describe(again)
            else:
                failed[part[0].id] = describe(error)
    if failed:
        set_aside(connection, team_id, failed, now)
    if deletes_failed:
        delete_failed(connection, team_id, deletes_failed, now)
    return failed


def erase_first(
    connection: Connection, team_id: int, delete: PendingEvent, now: datetime, fold: FoldStep
) -> None:
    """Apply a delete whose fold failed on other people's data: erase its person, then fold
    again what that took apart, setting aside what cannot be folded.

    The erasure is deletes and updates (events, payloads, traits, trait history,
    identities, claims, memberships, customers), which no value can make fail; the
    customers the delete touched are taken apart (`apply_deletes(take_apart=True)`) and
    their remaining events folded as new by `fold_isolating`. A group the person's calls
    described is derived again from its other calls; a call whose traits cannot be
    written is left out of the group's traits (logged), as there is no event to set aside
    for it without undoing its customer's fold.
    """
    batch = Batch(connection, team_id)
    erasure = apply_deletes(batch, [delete], take_apart=True)
    erase_set_aside(batch)
    for group in sorted(erasure.groups):
        try:
            with connection.begin_nested():
                derived.recompute_groups(batch, [group])
        except DBAPIError as error:
            if not cannot_fold(error):
                raise
            _rebuild_group_call_by_call(connection, batch, group)
    if erasure.events:
        fold_isolating(connection, team_id, erasure.events, now, fold)
    log.warning(
        "delete %s of team %s applied alone after its batch failed on other events' data; "
        "%d events of the customers it touched folded again",
        delete.id,
        team_id,
        len(erasure.events),
    )


def _rebuild_group_call_by_call(connection: Connection, batch: Batch, group: str) -> None:
    """A group derived again from its folded calls one at a time, each under a savepoint."""
    batch.sql("DELETE FROM group_traits WHERE team_id = :team AND group_id = :g", g=group)
    batch.sql("DELETE FROM groups WHERE team_id = :team AND group_id = :g", g=group)
    rows = batch.sql(
        f"""SELECT {PENDING_COLUMNS} FROM events
            WHERE team_id = :team AND type = 'group' AND group_id = :g AND folded_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM fold_failures f WHERE f.team_id = events.team_id
                              AND f.event_id = events.id)
            ORDER BY id""",
        g=group,
    )
    for row in rows:
        call = PendingEvent(*row)
        try:
            with connection.begin_nested():
                derived.update_groups(batch, [call])
        except DBAPIError as error:
            if not cannot_fold(error):
                raise
            log.error(
                "group %r of team %s: the traits of call %s cannot be written (%s); left out of the group",
                group,
                batch.team,
                call.id,
                describe(error).message,
            )


def delete_failed(connection: Connection, team_id: int, failed: dict[int, FoldError], now: datetime) -> None:
    """Record deletes that could not complete, and leave them in the backlog.

    Not set aside: each stays unfolded, so every batch of the team tries it again until
    it completes (then its row goes with it, `workers/erase.py`); its `fold_failures` row
    names it to the team's admins, `fold_failing_deletes` counts it, and this logs it.
    """
    ids = sorted(failed)
    record_failures(connection, team_id, failed, now)
    for event_id in ids:
        error = failed[event_id]
        log.error(
            "delete %s of team %s could not complete, retried with every batch: %s (%s) %s",
            event_id,
            team_id,
            error.error_class,
            error.sqlstate,
            error.message,
        )


def record_failures(
    connection: Connection, team_id: int, failed: dict[int, FoldError], now: datetime
) -> None:
    """The events' errors in `fold_failures` (one row per event, the latest error)."""
    ids = sorted(failed)
    connection.execute(
        text(
            """
            INSERT INTO fold_failures AS f (team_id, event_id, error_class, sqlstate, message, failed_at)
            SELECT :team, x.id, x.c, x.s, x.m, :now
            FROM unnest(CAST(:ids AS bigint[]), CAST(:classes AS text[]), CAST(:states AS text[]),
                        CAST(:messages AS text[])) AS x(id, c, s, m)
            ON CONFLICT (team_id, event_id) DO UPDATE
            SET error_class = excluded.error_class, sqlstate = excluded.sqlstate,
                message = excluded.message, failed_at = excluded.failed_at
            """
        ),
        {
            "team": team_id,
            "now": now,
            "ids": ids,
            "classes": [failed[i].error_class for i in ids],
            "states": [failed[i].sqlstate for i in ids],
            "messages": [failed[i].message for i in ids],
        },
    )


def set_aside(connection: Connection, team_id: int, failed: dict[int, FoldError], now: datetime) -> None:
    """Record the events' errors and mark them folded without a customer."""
    ids = sorted(failed)
    record_failures(connection, team_id, failed, now)
    connection.execute(
        text(
            """
            UPDATE events e SET folded_at = :now, customer_id = NULL
            FROM unnest(CAST(:ids AS bigint[])) AS x(id)
            WHERE e.team_id = :team AND e.id = x.id
            """
        ),
        {"team": team_id, "now": now, "ids": ids},
    )
    for event_id in ids:
        error = failed[event_id]
        log.warning(
            "fold set aside event %s of team %s: %s (%s) %s",
            event_id,
            team_id,
            error.error_class,
            error.sqlstate,
            error.message,
        )


def erase_set_aside(batch: Batch) -> None:
    """Erase set-aside events that the team's tombstones cover (a delete's batch calls it).

    The eraser reaches folded events through their customers, and a set-aside event has
    none; so, by the rules of docs/fold.md "Delete": an event carrying a deleted userId
    (an alias: or previousId) dated at or before its tombstone or received by then, or
    one whose only id is a tombstoned anonymousId. Its `fold_failures` row goes with it.
    """
    user_is_junk = SQL_IS_JUNK.format(column="e.user_id")
    batch.sql(
        f"""
        WITH erased AS (
            DELETE FROM events e USING fold_failures f
            WHERE f.team_id = :team AND e.team_id = :team AND e.id = f.event_id AND EXISTS (
                SELECT 1 FROM tombstones t
                WHERE t.team_id = :team
                  AND (e.event_time <= t.deleted_at OR e.received_at <= t.received_at) AND (
                    (t.kind = 'user' AND (t.value = e.user_id
                                          OR (e.type = 'alias' AND t.value = e.previous_id)))
                    OR (t.kind = 'anonymous' AND t.value = e.anonymous_id
                        AND (e.user_id IS NULL OR {user_is_junk}))))
            RETURNING e.id)
        DELETE FROM fold_failures f USING erased
        WHERE f.team_id = :team AND f.event_id = erased.id
        """
    )
