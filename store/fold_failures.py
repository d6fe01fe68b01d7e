"""Events the fold set aside (`workers/poison.py`): recorded with their error, listed for
the team's admins, counted for `/metrics`, and put back in the backlog on request once the
cause is fixed. A delete that could not complete is listed too, but never set aside: it
stays in the backlog.

The owner of `fold_failures`: every statement that writes it is here. The fold's
halving strategy (`workers/poison.py`) decides which events to set aside and calls
`record_failures` / `mark_set_aside`; a delete's batch calls `erase_set_aside` and
`forget_failures` (`store/fold/erase.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from store.fold.batch import Batch
from store.fold.identity import SQL_IS_JUNK


@dataclass(frozen=True)
class FoldError:
    """Why one event could not be folded, as stored and shown to the team's admins."""

    error_class: str
    sqlstate: str | None
    message: str


@dataclass(frozen=True)
class SetAsideEvent:
    """One set-aside event: which event, and why the fold could not fold it."""

    event_id: int
    message_id: str
    type: str
    error_class: str
    sqlstate: str | None
    message: str
    failed_at: datetime
    retrying: bool  # a delete that could not complete: still in the backlog, tried again


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


def mark_set_aside(connection: Connection, team_id: int, ids: list[int], now: datetime) -> None:
    """Mark set-aside events folded without a customer, so the batch selection, the sweep
    and the backlog skip them (their errors are in `fold_failures`: `record_failures`)."""
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


def forget_failures(batch: Batch, ids: list[int]) -> None:
    """Drop the failures recorded for these events (deletes being applied: the delete is not
    kept, nor is the failure an earlier attempt recorded for it)."""
    batch.sql("DELETE FROM fold_failures WHERE team_id = :team AND event_id = ANY(:ids)", ids=ids)


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


def list_failures(
    connection: Connection, team_id: int, *, limit: int, after_id: int | None
) -> list[SetAsideEvent]:
    """Up to `limit` of the team's set-aside events, by event id, after `after_id`."""
    rows = connection.execute(
        text(
            """
            SELECT f.event_id, e.message_id, e.type, f.error_class, f.sqlstate, f.message, f.failed_at,
                   e.folded_at IS NULL
            FROM fold_failures f
            JOIN events e ON e.team_id = f.team_id AND e.id = f.event_id
            WHERE f.team_id = :team AND f.event_id > :after
            ORDER BY f.event_id
            LIMIT :limit
            """
        ),
        {"team": team_id, "after": after_id if after_id is not None else 0, "limit": limit},
    ).all()
    return [SetAsideEvent(*row) for row in rows]


def count_set_aside(connection: Connection) -> int:
    """How many events the fold has set aside, over every team (the `/metrics` gauge)."""
    return int(connection.execute(text("SELECT count(*) FROM fold_failures")).scalar_one())


def count_failing_deletes(connection: Connection) -> int:
    """Deletes that could not complete (still in the backlog), over every team: a gauge
    that must stay 0, since a delete is a promise to erase (`workers/poison.py`)."""
    return int(
        connection.execute(
            text(
                "SELECT count(*) FROM fold_failures f JOIN events e ON e.team_id = f.team_id "
                "AND e.id = f.event_id WHERE e.type = 'delete'"
            )
        ).scalar_one()
    )


def retry_failures(connection: Connection, team_id: int) -> int:
    """Put every set-aside event of the team back in its backlog; returns how many.

    The fold takes them again as new (those that still fail are set aside again, with
    the error of now). In the caller's transaction: the rows go and the events become
    unfolded together.
    """
    rows = connection.execute(
        text(
            """
            WITH gone AS (DELETE FROM fold_failures WHERE team_id = :team RETURNING event_id)
            UPDATE events e SET folded_at = NULL, customer_id = NULL
            FROM gone WHERE e.team_id = :team AND e.id = gone.event_id
            RETURNING e.id
            """
        ),
        {"team": team_id},
    ).all()
    return len(rows)
