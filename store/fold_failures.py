"""Events the fold set aside (`workers/poison.py`): listed for the team's admins, counted
for `/metrics`, and put back in the backlog on request once the cause is fixed. A delete
that could not complete is listed too, but never set aside: it stays in the backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text


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
