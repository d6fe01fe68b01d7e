"""The timeline move's case (store/timeline_move.py, migration 0012): a database upgraded
from 0011 with its events in it, whose worker is killed in the middle of moving them
while the case's team keeps sending (its load: ingest, as in the other cases).

The old table is made as a running service has it: events stored and folded at head
(written in SQL, as the bench writes them: `OLD_EVENTS` in all, most of them the case's
own team's, so that the move and the fold of its new events take turns at its fold
lock), the schema taken back to 0011 and up to head again with those events in it, so
that they are partition 0 (`events_legacy`). The stack is stopped meanwhile (the
downgrade rebuilds `events`; a process reading it would fail, or hold it), then started
again: its workers start the move on their own (workers/__main__.py).

Every event the database held before the move is then found exactly once, as it was
(`Ledger`: a checksum of each event's id, team, message, time, customer and fold time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from alembic import command
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import ProgrammingError

from devstack.faults.report import say
from store.migrate import alembic_config, upgrade
from store.partitions import LEGACY, ensure_span

if TYPE_CHECKING:  # cases.py names this case
    from devstack.faults.cases import Check, Run

OLD_EVENTS = 80_000
OTHER_TEAMS = 2  # teams of old events besides the case's, moved after it
OTHER_TEAM_EVENTS = 15_000  # each
EVENTS_PER_CUSTOMER = 50
FIRST = datetime(2025, 1, 1, tzinfo=UTC)
SPACING = timedelta(minutes=4)  # the old events span about a year of months
# The move's pace is the worker's (~2-6k events/s here, STEP_ROWS per step and a pause
# between steps): a stall, not a slow machine, should fail the case.
MOVE_BOUND_SECONDS = 90.0

_CUSTOMERS = """
    INSERT INTO customers (team_id, is_known, first_seen, last_seen, event_count, created_at)
    SELECT :team, true, :first, :first, :per, now() FROM generate_series(1, :customers)
"""
_IDENTITIES = """
    INSERT INTO identities (team_id, kind, value, customer_id)
    SELECT team_id, 'user', 'old-' || id, id FROM customers WHERE team_id = :team
"""
# Each customer's events, folded: the team's customers are all old ones (its load has not begun).
_EVENTS = """
    INSERT INTO events (team_id, message_id, type, event_name, user_id, event_time, received_at,
                        tiebreak, raw, customer_id, folded_at)
    SELECT c.team_id, 'old-' || c.id || '-' || k, 'track', 'Old Event', 'old-' || c.id,
           :first + (row_number() OVER (ORDER BY c.id, k)) * :spacing, now(), hashtext(c.id || '-' || k),
           jsonb_build_object('type', 'track', 'event', 'Old Event', 'userId', 'old-' || c.id,
                              'messageId', 'old-' || c.id || '-' || k),
           c.id, now()
    FROM customers c CROSS JOIN generate_series(1, :per) k
    WHERE c.team_id = :team
"""
_LEDGER = """
    SELECT count(*), count(DISTINCT id),
           md5(string_agg(concat_ws(':', id, team_id, message_id, event_time, customer_id, folded_at),
                          ',' ORDER BY id))
    FROM events WHERE id <= :last
"""
# The worker whose session is running a step of the move: DELETE FROM events_legacy ... INSERT.
_MOVER = f"""
    SELECT application_name FROM pg_stat_activity
    WHERE datname = current_database() AND state = 'active' AND query LIKE '%DELETE FROM {LEGACY}%'
      AND pid <> pg_backend_pid()
"""


@dataclass(frozen=True)
class Ledger:
    """The events the database held before the move: how many, and their checksum."""

    last_id: int
    count: int
    checksum: str


def read_ledger(connection: Connection, last_id: int) -> tuple[int, int, str]:
    count, distinct, checksum = connection.execute(text(_LEDGER), {"last": last_id}).one()
    return int(count), int(distinct), str(checksum)


def old_table_left(engine: Engine) -> int | None:
    """Events still in the old table; None once it is gone (swapped out)."""
    with engine.connect() as connection:
        if not connection.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": LEGACY}).scalar():
            return None
        try:
            return int(connection.execute(text(f"SELECT count(*) FROM {LEGACY}")).scalar_one())
        except ProgrammingError as error:  # swapped out since the line above
            if getattr(error.orig, "sqlstate", None) != "42P01":
                raise
            return None


def mover(engine: Engine) -> str | None:
    with engine.connect() as connection:
        found = connection.execute(text(_MOVER)).scalar()
    return str(found) if found else None


def store_old_events(engine: Engine, team_id: int, events: int) -> None:
    customers = events // EVENTS_PER_CUSTOMER
    params = {
        "team": team_id,
        "customers": customers,
        "per": EVENTS_PER_CUSTOMER,
        "first": FIRST,
        "spacing": SPACING,
    }
    with engine.begin() as connection:
        for statement in (_CUSTOMERS, _IDENTITIES, _EVENTS):
            connection.execute(text(statement), params)


class OldEventsMove:
    """The case's preparation (`prepare`), its fault (`fault`) and what it checks."""

    def __init__(self) -> None:
        self.started_with = 0

    def prepare(self, run: Run, team_id: int) -> Check:
        started = time.monotonic()
        ensure_span(run.engine, FIRST, FIRST + SPACING * OLD_EVENTS)
        teams = [team_id]
        with run.engine.begin() as connection:
            for n in range(OTHER_TEAMS):
                teams.append(
                    connection.execute(
                        text("INSERT INTO teams (name, created_at) VALUES (:name, now()) RETURNING id"),
                        {"name": f"old events {n + 1}"},
                    ).scalar_one()
                )
        store_old_events(run.engine, team_id, OLD_EVENTS - OTHER_TEAMS * OTHER_TEAM_EVENTS)
        for other in teams[1:]:
            store_old_events(run.engine, other, OTHER_TEAM_EVENTS)
        say(f"  {OLD_EVENTS} events stored and folded for {len(teams)} teams; stopping the stack")
        run.stack.stop()
        command.downgrade(alembic_config(run.postgres.url), "0011")
        upgrade(run.postgres.url)
        with run.engine.connect() as connection:
            last_id = int(connection.execute(text("SELECT max(id) FROM events")).scalar_one())
            count, _, checksum = read_ledger(connection, last_id)
        self.started_with = old_table_left(run.engine) or 0
        ledger = Ledger(last_id, count, checksum)
        say(
            f"  at 0011 and back at head: {self.started_with} events in {LEGACY} "
            f"({time.monotonic() - started:.1f}s); starting the stack"
        )
        run.stack.start()
        run.stack.wait_ready()
        return lambda: self.check(run, ledger)

    def fault(self, run: Run, team_id: int) -> None:
        """SIGKILL the worker running a step of the move once some events moved, start it
        again, and wait for the move to finish (the old table swapped out)."""
        deadline = time.monotonic() + 20
        while True:
            left = old_table_left(run.engine)
            if left is None or left == 0:
                raise RuntimeError("the move finished before a worker could be killed inside it")
            if left < self.started_with and (name := mover(run.engine)) is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker was moving within 20s ({left} events left to move)")
            time.sleep(0.005)
        run.stack.workers[name].kill()
        run.stack.workers[name].wait()
        say(f"  killed {name} inside a step of the move, {left} of {self.started_with} events left")
        run.stack.restart_worker(name)
        started = time.monotonic()
        while (left_now := old_table_left(run.engine)) is not None:
            if time.monotonic() - started > MOVE_BOUND_SECONDS:
                bound = f"{MOVE_BOUND_SECONDS:.0f}s"
                raise RuntimeError(f"the move did not finish within {bound} of the restart ({left_now} left)")
            time.sleep(0.1)
        say(f"  the old table is swapped out, {time.monotonic() - started:.1f}s after the restart")

    def check(self, run: Run, ledger: Ledger) -> tuple[int, int, str]:
        """(lost, duplicated, note) among the events stored before the move."""
        with run.engine.connect() as connection:
            count, distinct, checksum = read_ledger(connection, ledger.last_id)
        lost, duplicated = ledger.count - distinct, count - distinct
        if not lost and not duplicated and checksum != ledger.checksum:
            return 0, 0, "old events changed in the move (checksum)"
        return lost, duplicated, ""
