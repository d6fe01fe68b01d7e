"""Moving a running service's events into the months, online (migration 0012).

Migration 0012 leaves a database that had events with `events` partitioned by `layout`:
the old table is partition 0 (`events_legacy`), the months are partition 1
(`events_by_month`, store/partitions.py). Every statement that reads `events` reads
both, so the service answers ingest and reads all along; this module empties the old
table into the months, then swaps the months in as `events`.

- **A step** moves at most `step_rows` of one team's events, the oldest ids first, in one
  statement: `DELETE ... RETURNING` into an `INSERT` of the same rows (same ids, customer
  and fold state), so at every commit an event is in exactly one of the two tables. Ingest
  and import look for an event of partition 0 before storing a re-send (store/events.py),
  which that single statement keeps exact: a re-send sees the event where its snapshot
  has it. The step holds the team's fold lock, taken without waiting (the fold's updates
  of the team's events never meet a step's delete), and waits at most a second for any
  other lock: a busy team is tried again after a pause.
- **Resumable.** A killed step is rolled back with its transaction; running again goes on
  with what partition 0 still holds. Nothing else records progress.
- **The swap**, once partition 0 is empty: under a brief exclusive lock of `events`, the
  empty old table and the list-partitioned parent are dropped and `events_by_month`
  renamed `events`. Statements prepared before it are planned again by Postgres.

The worker runs it at start when there is something to move (`workers/__main__.py`);
`flask timeline move` runs it in the foreground and says how far it got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from store.fold.backlog import try_team_step
from store.partitions import (
    EVENT_COLUMNS,
    LEGACY,
    MONTHS_DURING_MOVE,
    TIMELINE,
    ensure_months,
    is_missing_partition,
)

log = logging.getLogger(__name__)

# Events a step moves at most: ~100-200 ms of one transaction on this machine.
STEP_ROWS = 2000
# The pause between two steps, so the move takes a bounded share of Postgres.
STEP_PAUSE_SECONDS = 0.05
# A step whose team's fold is running waits a pause and tries again, this many times in a row.
BUSY_TRIES = 200

_COLUMNS = EVENT_COLUMNS

_NEXT_TEAM = f"SELECT team_id FROM {LEGACY} ORDER BY team_id LIMIT 1"
_CHUNK = f"SELECT id, event_time FROM {LEGACY} WHERE team_id = :team ORDER BY id LIMIT :rows"
# The step's rows are the ones it chose (and made the months of): another worker moving at
# the same time may have taken some, which are then simply not there any more.
_MOVE = f"""
    WITH moved AS (
        DELETE FROM {LEGACY} WHERE team_id = :team AND id = ANY(CAST(:ids AS bigint[]))
        RETURNING {_COLUMNS}
    )
    INSERT INTO {TIMELINE} ({_COLUMNS}, layout)
    SELECT {_COLUMNS}, 1 FROM moved
    ON CONFLICT DO NOTHING
"""


def timeline_move_pending(connection: Connection) -> bool:
    """Whether events stored before migration 0012 are still to be moved (or swapped in)."""
    return bool(connection.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": LEGACY}).scalar())


@dataclass(frozen=True)
class MoveStep:
    """What one step did: the team it moved (None: nothing left), how many events,
    and whether the team's fold held its lock (nothing moved)."""

    team_id: int | None
    moved: int
    busy: bool = False


def move_step(engine: Engine, step_rows: int = STEP_ROWS) -> MoveStep:
    """Move at most `step_rows` events of one team out of the old table, in one transaction."""
    with engine.connect() as connection:
        try:
            team = connection.execute(text(_NEXT_TEAM)).scalar()
            chunk = connection.execute(text(_CHUNK), {"team": team, "rows": step_rows}).all()
        except ProgrammingError as error:  # another mover swapped the months in: nothing left
            if getattr(error.orig, "sqlstate", None) != "42P01":
                raise
            return MoveStep(None, 0)
        if team is None:
            return MoveStep(None, 0)
        connection.rollback()
        ids, months = [int(row.id) for row in chunk], [row.event_time for row in chunk]
        ensure_months(engine, months)  # committed before the move's statement plans its partitions
        try:
            return _move(connection, int(team), ids)
        except IntegrityError as error:
            if not is_missing_partition(error):  # a month dropped since this process looked
                raise
        ensure_months(engine, months)
        return _move(connection, int(team), ids)


def _move(connection: Connection, team: int, ids: list[int]) -> MoveStep:
    """The step's one transaction: the team's fold lock, then the statement."""
    with connection.begin():
        if not try_team_step(connection, team, statement_timeout="60s"):
            return MoveStep(int(team), 0, busy=True)
        moved = connection.execute(text(_MOVE), {"team": team, "ids": ids}).rowcount
    return MoveStep(int(team), int(moved))


def swap_in(engine: Engine) -> bool:
    """Once the old table is empty, make the months `events` (True: done, or done already)."""
    with engine.connect() as connection:
        if not timeline_move_pending(connection):
            return True
        connection.rollback()
        try:
            swapped = _swap(connection)
        except OperationalError as error:  # lock_timeout: a long read held `events`; next time
            if getattr(error.orig, "sqlstate", None) != "55P03":
                raise
            log.info("timeline: the swap waited too long for events' lock; trying again")
            return False
    if swapped:
        log.info("timeline: every event is in the months; the old events table is gone")
    return swapped


def _swap(connection: Connection) -> bool:
    """The swap in one transaction (False: the old table is not empty)."""
    with connection.begin():
        connection.execute(text("SET LOCAL lock_timeout = '2s'"))
        connection.execute(text(f"LOCK TABLE {TIMELINE} IN ACCESS EXCLUSIVE MODE"))
        if not timeline_move_pending(connection):
            return True  # another mover swapped them in while this one waited for the lock
        if connection.execute(text(f"SELECT EXISTS (SELECT 1 FROM {LEGACY})")).scalar():
            return False
        for statement in (
            f"ALTER TABLE {TIMELINE} DETACH PARTITION {LEGACY}",
            f"DROP TABLE {LEGACY}",
            f"ALTER TABLE {TIMELINE} DETACH PARTITION {MONTHS_DURING_MOVE}",
            f"DROP TABLE {TIMELINE}",
            f"ALTER TABLE {MONTHS_DURING_MOVE} RENAME TO {TIMELINE}",
            f"ALTER SEQUENCE events_id_seq OWNED BY {TIMELINE}.id",
        ):
            connection.execute(text(statement))
    return True


@dataclass
class MoveRun:
    """What a run did: events moved per team, steps, and whether it finished (swapped in)."""

    moved: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    finished: bool = False
    stopped: bool = False


def move_timeline(
    engine: Engine,
    *,
    step_rows: int = STEP_ROWS,
    pause: Callable[[], bool] = lambda: False,
    on_step: Callable[[MoveStep], None] = lambda step: None,
) -> MoveRun:
    """Move every old event into the months, then swap them in. `pause()` runs between
    steps and returns True to stop (the worker's `stop.wait`); a stopped or killed run
    goes on where it was when run again."""
    run = MoveRun()
    busy = 0
    while True:
        step = move_step(engine, step_rows)
        run.steps += 1
        on_step(step)
        if step.team_id is None:
            if swap_in(engine):
                run.finished = True
                return run
        elif step.busy:
            busy += 1
            if busy >= BUSY_TRIES:
                return run
        else:
            busy = 0
            run.moved[step.team_id] = run.moved.get(step.team_id, 0) + step.moved
        if pause():
            run.stopped = True
            return run
