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

The timeline will be partitioned by time. The steps are split so that only "which rows"
changes then: a step takes a *window* of the team's events (`expiry_window`: today a
range of the primary key, at most `step_rows` events; then a partition whose whole range
is expired) and erases what in it is expired (`erase_window`: today a DELETE of that
range, then a DETACH and DROP of the partition after the same trait-history and link
bookkeeping).
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
from store.fold.backlog import FOLD_LOCK_NAMESPACE
from store.fold.batch import Batch
from store.fold.erase import Link, event_links, keep_links
from store.fold.pending import PENDING_COLUMNS, PendingEvent
from store.fold_failures import forget_failures

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
    if not erased:
        return erased
    ids = sorted(event.id for event in erased)
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
    for event in erased:
        links |= event_links(event)
    keep_links(batch, links)
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
        locked = connection.execute(
            text(
                "SELECT pg_try_advisory_xact_lock(:ns, :key), set_config('lock_timeout', '1s', true), "
                "set_config('statement_timeout', '10s', true)"
            ),
            {"ns": FOLD_LOCK_NAMESPACE, "key": team_id % 2_147_483_647},
        ).scalar()
        if not locked:
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
    teams = teams_with_retention(connection, operator_days)
    connection.commit()
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
