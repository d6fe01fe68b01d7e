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

This module is the strategy; its statements are in `store/fold_failures.py` (recording,
marking set aside, erasing set-aside events) and `store/fold/` (the fold itself).

The happy path pays nothing: no savepoint and no extra statement unless a batch failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from store.fold import derived
from store.fold.batch import Batch
from store.fold.erase import apply_deletes
from store.fold.pending import PendingEvent
from store.fold_failures import FoldError, erase_set_aside, mark_set_aside, record_failures

log = logging.getLogger(__name__)

# SQLSTATE classes that blame the data, not the server or the connection: 22 data
# exception (out of range, invalid text), 23 integrity constraint violation, 54 program
# limit exceeded (an index row too large, a statement too deep).
DATA_ERROR_CLASSES = ("22", "23", "54")
MAX_MESSAGE = 1_000

FoldStep = Callable[[Connection, int, Sequence[PendingEvent], datetime], None]


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
    for call in derived.reset_group(batch, group):
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
    it completes (then its row goes with it, `store/fold/erase.py`); its `fold_failures` row
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


def set_aside(connection: Connection, team_id: int, failed: dict[int, FoldError], now: datetime) -> None:
    """Record the events' errors and mark them folded without a customer (`store/fold_failures.py`)."""
    ids = sorted(failed)
    record_failures(connection, team_id, failed, now)
    mark_set_aside(connection, team_id, ids, now)
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
