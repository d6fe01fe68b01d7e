"""Retention: how long a team's events are kept, and their expiry (docs/retention.md).

The rule, in one place (`effective_days`): the operator's `RETENTION_DAYS` is a ceiling,
and a team may set a shorter retention of its own, never a longer one. Neither set: every
event is kept. An event is *expired* when its event time is before `now - retention`.

Three uses:

- **Setting it** (`read_retention`, `set_retention`, `retention_problem`): the admin API
  (`PUT /api/v1/team/retention`) and `flask teams retention` share them.
- **At ingest** (`RetentionCache`, `split_expired`): an event that arrives already expired
  is answered 200 and not stored; the ingestion debugger counts it as `expired`. A
  `delete` never expires: it must erase the person whatever its date.
- **Expiry** (`expire_pass`, run by the worker: `workers/sweep.py`): the team's expired
  events leave the timeline with their raw payloads and the trait history they carried;
  what the profile says now (ids, current traits, groups, first seen, counts and
  summaries) stays. It runs in bounded steps, each its own short transaction, under the
  team's fold lock taken without waiting (`FOLD_LOCK_NAMESPACE`: the fold and expiry
  never interleave on a team; ingest never takes that lock), with a pause between steps.
  One worker expires at a time (a session advisory lock); another skips the pass.

Two ways to erase, by who shares the months (the timeline is partitioned by event time,
a partition a month: store/partitions.py):

- **By month** (`expire_months`): the longest retention in force (every team has one:
  the operator's, or all teams' own) erases a whole month once all of it is older than
  that retention: the month's trait history, set-aside errors and links are settled in
  bounded steps (`settle_step`), then its partition is detached (`CONCURRENTLY`: ingest
  and reads go on) and dropped. A team at that longest retention keeps an expired event
  until the end of its month's expiry: at most a month longer (docs/retention.md).
- **By rows** (`expire_step`): a team whose retention is shorter than the longest (or any
  team's when some team keeps everything) gets the steps: a window of at most
  `step_rows` of its events by primary key (`expiry_window`), whose expired events are
  deleted (`erase_window`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, text

from schemas.segment import PreparedEvent
from service.settings import MAX_RETENTION_DAYS
from store.fold.backlog import try_team_step
from store.fold.batch import Batch
from store.fold.erase import Link, event_links, keep_links
from store.fold.pending import PENDING_COLUMNS, PendingEvent
from store.fold_failures import forget_failures
from store.partitions import (
    BEFORE,
    EVENT_COLUMNS,
    ensure_months,
    existing_partitions,
    known_partitions,
    months_table,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_RETENTION_DAYS",
    "RetentionCache",
    "RetentionSetting",
    "effective_days",
    "expire_pass",
    "expire_step",
]

# One expiry step reads at most this many of a team's events (a window of its primary
# key), in one transaction that locks only what it erases. Measured (docs/retention.md):
# 5,000 expired events a step took ~250 ms (the DELETE's heap and WAL writes, and the
# links' inserts), holding the team's fold lock that long; 2,000 keep it near 100 ms.
STEP_ROWS = 2000
# The pause between two steps, so expiry takes a bounded share of Postgres whatever the backlog.
STEP_PAUSE_SECONDS = 0.25
# How often a worker starts a pass over every team with a retention (retention is in days).
PASS_INTERVAL_SECONDS = 3600.0
# A step that finds the team's fold running waits a pause and tries again, this many times,
# then leaves the team to the next pass.
BUSY_TRIES = 50
# Advisory lock namespace of the expiry pass (the fold's is 7_301): one worker at a time.
EXPIRY_LOCK_NAMESPACE = 7_302
# How long a web process trusts what it read of a team's retention (ingest's check).
CACHE_SECONDS = 5.0


# --- the rule ----------------------------------------------------------------------------------


def effective_days(team_days: int | None, operator_days: int | None) -> int | None:
    """The retention that applies: the shorter of the team's and the operator's (None: no bound)."""
    if team_days is None:
        return operator_days
    if operator_days is None:
        return team_days
    return min(team_days, operator_days)


def cutoff_of(days: int | None, now: datetime) -> datetime | None:
    """Events dated before this instant are expired (None: nothing expires)."""
    return None if days is None else now - timedelta(days=days)


def retention_problem(days: int | None, operator_days: int | None) -> str | None:
    """What is wrong with a team's retention setting, or None (API and CLI alike)."""
    if days is None:
        return None
    if days < 1:
        return "Must be at least 1 day; send null to keep events as long as the operator does."
    if operator_days is not None and days > operator_days:
        return (
            f"Must be at most {operator_days} days: this service keeps events at most "
            f"{operator_days} days (its operator's RETENTION_DAYS); a team may only shorten that."
        )
    if days > MAX_RETENTION_DAYS:
        return f"Must be at most {MAX_RETENTION_DAYS} days; send null to keep every event."
    return None


class RetentionRefused(ValueError):
    """A retention setting that `retention_problem` refuses, or a team that does not exist."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RetentionSetting:
    """A team's retention as the API shows it: its own, the operator's, and what applies."""

    team_days: int | None
    operator_days: int | None

    @property
    def effective(self) -> int | None:
        return effective_days(self.team_days, self.operator_days)


def read_retention(
    connection: Connection, team_id: int, operator_days: int | None
) -> RetentionSetting | None:
    """The team's retention setting (None: no such team)."""
    row = connection.execute(
        text("SELECT retention_days FROM teams WHERE id = :team"), {"team": team_id}
    ).first()
    return None if row is None else RetentionSetting(row.retention_days, operator_days)


def set_retention(
    connection: Connection, team_id: int, days: int | None, operator_days: int | None
) -> RetentionSetting:
    """Set the team's own retention (None: the operator's), in the caller's transaction."""
    problem = retention_problem(days, operator_days)
    if problem is not None:
        raise RetentionRefused("invalid_retention", problem)
    row = connection.execute(
        text("UPDATE teams SET retention_days = :days WHERE id = :team RETURNING retention_days"),
        {"team": team_id, "days": days},
    ).first()
    if row is None:
        raise RetentionRefused("team_not_found", f"No team with id {team_id}.")
    log.info("team %d: retention set to %s days", team_id, days, extra={"team_id": team_id})
    return RetentionSetting(row.retention_days, operator_days)


# --- at ingest ---------------------------------------------------------------------------------


class RetentionCache:
    """Team -> its own retention, read from Postgres at most every `ttl` seconds per process.

    Ingest asks it for each request's cutoff; a setting changed elsewhere applies here within
    `ttl`, and at once in the process that changed it (`forget`). One load at a time: the
    requests in flight wait for it instead of each reading the team (as the key cache does).
    """

    def __init__(self, engine: Engine, operator_days: int | None, ttl: float = CACHE_SECONDS):
        self.engine = engine
        self.operator_days = operator_days
        self.ttl = ttl
        self._entries: dict[int, tuple[float, int | None]] = {}
        self._loading = threading.Lock()

    def days(self, team_id: int) -> int | None:
        """The team's effective retention in days (None: keep everything)."""
        cached = self._fresh(team_id)
        if cached is None:
            with self._loading:
                cached = self._fresh(team_id)
                if cached is None:
                    with self.engine.connect() as connection:
                        found = read_retention(connection, team_id, self.operator_days)
                    cached = (time.monotonic(), None if found is None else found.team_days)
                    if len(self._entries) > 100_000:  # bounded whatever the teams
                        self._entries.clear()
                    self._entries[team_id] = cached
        return effective_days(cached[1], self.operator_days)

    def cutoff(self, team_id: int, now: datetime) -> datetime | None:
        """Events of the team dated before this are expired on arrival (None: none are)."""
        return cutoff_of(self.days(team_id), now)

    def forget(self, team_id: int) -> None:
        """This process changed the team's setting: read it again on next use."""
        self._entries.pop(team_id, None)

    def _fresh(self, team_id: int) -> tuple[float, int | None] | None:
        cached = self._entries.get(team_id)
        if cached is not None and 0 <= time.monotonic() - cached[0] < self.ttl:
            return cached
        return None


def split_expired(
    events: Sequence[PreparedEvent], cutoff: datetime | None
) -> tuple[list[PreparedEvent], list[PreparedEvent]]:
    """(to store, expired): an event dated before `cutoff` is expired, except a `delete`."""
    if cutoff is None:
        return list(events), []
    kept: list[PreparedEvent] = []
    expired: list[PreparedEvent] = []
    for event in events:
        (expired if event.type != "delete" and event.event_time < cutoff else kept).append(event)
    return kept, expired


# --- expiry ------------------------------------------------------------------------------------


def longest_retention(connection: Connection, operator_days: int | None) -> int | None:
    """The longest retention in force over every team (None: some team keeps everything)."""
    row = connection.execute(
        text(
            """
            SELECT bool_or(days IS NULL) AS forever, max(days) AS longest FROM (
                SELECT CASE WHEN CAST(:op AS integer) IS NULL THEN retention_days
                            ELSE least(coalesce(retention_days, :op), :op) END AS days
                FROM teams) t
            """
        ),
        {"op": operator_days},
    ).one()
    if row.forever or row.longest is None:
        return None
    return int(row.longest)


def teams_with_retention(connection: Connection, operator_days: int | None) -> list[tuple[int, int]]:
    """(team, effective days) of every team whose events expire, by team id."""
    rows = connection.execute(
        text(
            """
            SELECT id, CASE WHEN CAST(:op AS integer) IS NULL THEN retention_days
                            ELSE least(coalesce(retention_days, :op), :op) END AS days
            FROM teams
            WHERE retention_days IS NOT NULL OR CAST(:op AS integer) IS NOT NULL
            ORDER BY id
            """
        ),
        {"op": operator_days},
    ).all()
    return [(int(row.id), int(row.days)) for row in rows]


@dataclass(frozen=True)
class Window:
    """A part of a team's timeline an expiry step looks at: events with `after < id <= last`
    (`last` None: to the end of the team's events)."""

    after: int
    last: int | None


def expiry_window(batch: Batch, after: int, step_rows: int) -> Window:
    """The next window of the team's events after id `after`: at most `step_rows` of them.

    Found on the primary key alone (`(team_id, id)`, an index-only walk of `step_rows`
    entries): no scan of the team, whatever its size or its events' times.
    """
    rows = batch.sql(
        "SELECT id FROM events WHERE team_id = :team AND id > :after ORDER BY id OFFSET :skip LIMIT 1",
        after=after,
        skip=step_rows - 1,
    )
    return Window(after, int(rows[0][0]) if rows else None)


def erase_window(batch: Batch, window: Window, cutoff: datetime) -> list[PendingEvent]:
    """Erase the window's expired events: the rows (their raw payloads with them), the
    trait history they set, their set-aside errors; keep the links they made for later
    deletes. Events not folded yet stay until they are. Returns the erased events."""
    upper = "" if window.last is None else "AND id <= :last"
    erased = [
        PendingEvent(*row)
        for row in batch.sql(
            f"""
            DELETE FROM events
            WHERE team_id = :team AND id > :after {upper}
              AND event_time < :cutoff AND folded_at IS NOT NULL
            RETURNING {PENDING_COLUMNS}
            """,
            after=window.after,
            last=window.last,
            cutoff=cutoff,
        )
    ]
    if erased:
        forget_history_and_failures(batch, erased)
    return erased


@dataclass(frozen=True)
class ExpiryStep:
    """What one step did: the window it looked at and how many events it erased
    (`busy`: the team's fold held its lock, nothing was done)."""

    window: Window
    erased: int
    busy: bool = False


def expire_step(
    connection: Connection, team_id: int, cutoff: datetime, after: int, step_rows: int = STEP_ROWS
) -> ExpiryStep:
    """One bounded step of a team's expiry, in its own transaction on `connection`."""
    with connection.begin():
        if not try_team_step(connection, team_id):
            return ExpiryStep(Window(after, after), 0, busy=True)
        batch = Batch(connection, team_id)
        window = expiry_window(batch, after, step_rows)
        erased = erase_window(batch, window, cutoff)
    return ExpiryStep(window, len(erased))


@dataclass
class ExpiryPass:
    """What a pass did: per team, events erased and steps taken; teams left busy."""

    erased: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    busy_teams: list[int] = field(default_factory=list)
    stopped: bool = False
    # Months dropped whole, and the Postgres time it took: detaching and dropping them,
    # and settling what their events left behind (trait history, links) before that.
    months: list[str] = field(default_factory=list)
    month_seconds: float = 0.0
    settle_seconds: float = 0.0


def expire_pass(
    engine: Engine,
    operator_days: int | None,
    now: datetime,
    *,
    step_rows: int = STEP_ROWS,
    pause: Callable[[], bool] = lambda: False,
) -> ExpiryPass | None:
    """Expire every team's events older than its retention, step by step.

    `pause()` runs between steps and returns True to stop (the worker's `stop.wait`).
    None: another worker holds the pass lock (it is expiring now).
    """
    with engine.connect() as connection:
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:ns, 0)"), {"ns": EXPIRY_LOCK_NAMESPACE}
        ).scalar()
        connection.commit()
        if not got:
            return None
        try:
            return _expire_teams(connection, operator_days, now, step_rows, pause)
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:ns, 0)"), {"ns": EXPIRY_LOCK_NAMESPACE})
            connection.commit()


def _expire_teams(
    connection: Connection,
    operator_days: int | None,
    now: datetime,
    step_rows: int,
    pause: Callable[[], bool],
) -> ExpiryPass:
    done = ExpiryPass()
    longest = longest_retention(connection, operator_days)
    teams = teams_with_retention(connection, operator_days)
    connection.commit()
    if longest is not None:
        months = expire_months(connection.engine, now - timedelta(days=longest), step_rows, pause)
        done.months = months.dropped
        done.month_seconds = months.drop_seconds
        done.settle_seconds = months.settle_seconds
        if months.stopped:
            done.stopped = True
            return done
        # A team at the longest retention is expired with its months.
        teams = [(team_id, days) for team_id, days in teams if days < longest]
    for team_id, days in teams:
        cutoff = now - timedelta(days=days)
        after, busy = 0, 0
        while True:
            step = expire_step(connection, team_id, cutoff, after, step_rows)
            done.steps += 1
            if step.busy:
                busy += 1
                if busy >= BUSY_TRIES:
                    done.busy_teams.append(team_id)
                    break
            else:
                busy = 0
                if step.erased:
                    done.erased[team_id] = done.erased.get(team_id, 0) + step.erased
                if step.window.last is None:
                    break
                after = step.window.last
            if pause():
                done.stopped = True
                return done
    return done


# --- by month ----------------------------------------------------------------------------------


@dataclass
class MonthsExpiry:
    """What `expire_months` did: the months dropped, the Postgres time of detaching and
    dropping them, that of settling their events' leftovers, and months left for later
    (events not folded yet, or a team's fold that stayed busy)."""

    dropped: list[str] = field(default_factory=list)
    drop_seconds: float = 0.0
    settle_seconds: float = 0.0
    left: list[str] = field(default_factory=list)
    stopped: bool = False


def expire_months(
    engine: Engine,
    bound: datetime,
    step_rows: int = STEP_ROWS,
    pause: Callable[[], bool] = lambda: False,
) -> MonthsExpiry:
    """Drop every month wholly before `bound` (every team's events in it are expired)."""
    done = MonthsExpiry()
    with engine.connect() as connection:
        months = [p for p in existing_partitions(connection) if p.upper is not None and p.upper <= bound]
        pending = finalize_detached(connection)
    for name in pending:  # a detach interrupted last time: finish it, then drop
        drop_detached(engine, name)
    for month in months:
        if month.name == BEFORE and _empty(engine, month.name):
            continue  # the bounding partition of absurd times stays while it holds nothing
        settled = settle_month(engine, month.name, step_rows, pause)
        done.settle_seconds += settled.seconds
        if settled.stopped:
            done.stopped = True
            return done
        if not settled.complete:
            done.left.append(month.name)
            continue
        done.drop_seconds += detach_and_drop(engine, month.name)
        done.dropped.append(month.name)
        if pause():
            done.stopped = True
            return done
    return done


def _empty(engine: Engine, name: str) -> bool:
    with engine.connect() as connection:
        return not connection.execute(text(f"SELECT EXISTS (SELECT 1 FROM {name})")).scalar()


@dataclass
class Settled:
    seconds: float = 0.0
    complete: bool = True
    stopped: bool = False


def settle_month(engine: Engine, name: str, step_rows: int, pause: Callable[[], bool]) -> Settled:
    """Before a month is dropped: its events' trait history and set-aside errors are
    erased and their links kept (as `erase_window` does for the rows it deletes), team by
    team in steps of at most `step_rows` events under the team's fold lock. Incomplete
    when an event of the month is not folded yet (the profile must learn it first)."""
    done = Settled()
    with engine.connect() as connection:
        if connection.execute(text(f"SELECT EXISTS (SELECT 1 FROM {name} WHERE folded_at IS NULL)")).scalar():
            done.complete = False
            return done
        teams = [int(t) for (t,) in connection.execute(text(_TEAMS_IN.format(name=name)))]
        connection.commit()
        for team_id in teams:
            after, busy = 0, 0
            while True:
                started = time.perf_counter()
                step = settle_step(connection, name, team_id, after, step_rows)
                done.seconds += time.perf_counter() - started
                if step is None:  # the team's fold holds its lock
                    busy += 1
                    if busy >= BUSY_TRIES:
                        done.complete = False
                        break
                elif step == after:
                    break
                else:
                    after, busy = step, 0
                if pause():
                    done.stopped = True
                    return done
    return done


# The teams with events in a month, by a skip scan of its primary key (one probe a team).
_TEAMS_IN = """
    WITH RECURSIVE t(team_id) AS (
        (SELECT team_id FROM {name} ORDER BY team_id LIMIT 1)
        UNION ALL
        SELECT (SELECT team_id FROM {name} WHERE team_id > t.team_id ORDER BY team_id LIMIT 1)
        FROM t WHERE t.team_id IS NOT NULL
    )
    SELECT team_id FROM t WHERE team_id IS NOT NULL
"""


def settle_step(connection: Connection, name: str, team_id: int, after: int, step_rows: int) -> int | None:
    """One step of `settle_month` in its own transaction: the last event id it settled
    (`after` itself: none left), or None when the team's fold held its lock."""
    with connection.begin():
        if not try_team_step(connection, team_id):
            return None
        batch = Batch(connection, team_id)
        events = [
            PendingEvent(*row)
            for row in batch.sql(
                f"SELECT {PENDING_COLUMNS} FROM {name} WHERE team_id = :team AND id > :after "
                "ORDER BY id LIMIT :rows",
                after=after,
                rows=step_rows,
            )
        ]
        if not events:
            return after
        forget_history_and_failures(batch, events)
        return events[-1].id


def forget_history_and_failures(batch: Batch, events: list[PendingEvent]) -> None:
    """What erased events leave behind: their trait history and set-aside errors go,
    the links they made are kept for later deletes."""
    ids = sorted(event.id for event in events)
    # The range bounds the walk of trait_history's primary key whatever the planner
    # makes of the array.
    batch.sql(
        """
        DELETE FROM trait_history
        WHERE team_id = :team AND event_id BETWEEN :first AND :final AND event_id = ANY(:ids)
        """,
        first=ids[0],
        final=ids[-1],
        ids=ids,
    )
    forget_failures(batch, ids)
    links: set[Link] = set()
    for event in events:
        links |= event_links(event)
    keep_links(batch, links)


def detach_and_drop(engine: Engine, name: str) -> float:
    """Detach the month without blocking ingest or reads, drop it; the Postgres time it took."""
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        parent = months_table(connection)
        # A detach that runs no transaction block: its bound is the session's, put back
        # before the connection goes back to the pool (the fold's own has none).
        connection.execute(text("SET statement_timeout = '60s'"))
        try:
            connection.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {name} CONCURRENTLY"))
        finally:
            connection.execute(text("RESET statement_timeout"))
    seconds = time.perf_counter() - started
    return seconds + drop_detached(engine, name)


def drop_detached(engine: Engine, name: str) -> float:
    """Drop a detached month. An event stored in it after it was settled and not folded
    (a `delete` dated that month, which never expires) is written back first, to a new
    partition of its month, and folded as usual."""
    started = time.perf_counter()
    with engine.begin() as connection:
        late = connection.execute(
            text(f"SELECT event_time FROM {name} WHERE folded_at IS NULL LIMIT 1")
        ).first()
    if late is not None:
        known_partitions.forget()
        ensure_months(engine, [late.event_time])
        with engine.begin() as connection:
            connection.execute(
                text(
                    f"INSERT INTO events ({EVENT_COLUMNS}, layout) "
                    f"SELECT {EVENT_COLUMNS}, layout FROM {name} "
                    "WHERE folded_at IS NULL ON CONFLICT DO NOTHING"
                )
            )
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {name}"))
    known_partitions.forget()
    log.info("retention: month %s dropped", name)
    return time.perf_counter() - started


def finalize_detached(connection: Connection) -> list[str]:
    """Months whose detach was interrupted (a killed worker): finish it; their names."""
    rows = connection.execute(
        text(
            """
            SELECT c.relname, p.relname AS parent FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
            WHERE i.inhdetachpending
            """
        )
    ).all()
    connection.commit()
    names = []
    for row in rows:
        connection.execute(text(f"ALTER TABLE {row.parent} DETACH PARTITION {row.relname} FINALIZE"))
        connection.commit()
        names.append(str(row.relname))
    return names
