"""The sweep: find teams with stored-but-unfolded events and queue their fold.

This is what makes a lost queue harmless: after a Redis outage, flush or restart, and
after a worker died mid-batch or right after it took a job, the events are still
unfolded in Postgres and the next sweep queues them again (a flag whose job left the
queue holds nobody back: service/fold_queue.py). Each round logs what it found and did:
the teams it queued, those already queued, and those whose flagged job had left the
queue without starting (a worker died holding it, or was just taking it).

Beside it, every `PASS_INTERVAL_SECONDS`, the worker expires events older than their
team's retention (`expiry_round`; its steps and their bounds: `store/retention.py`).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from service.fold_queue import FoldQueue, Wake
from store.fold.backlog import teams_with_unfolded_events
from store.partitions import ensure_span
from store.retention import STEP_PAUSE_SECONDS, STEP_ROWS, ExpiryPass, expire_pass
from store.timeline_move import STEP_PAUSE_SECONDS as MOVE_PAUSE_SECONDS
from store.timeline_move import MoveRun, move_timeline, timeline_move_pending

log = logging.getLogger(__name__)


def sweep(engine: Engine, fold_queue: FoldQueue) -> list[int]:
    """Wake the fold of every team with unfolded events; returns those teams."""
    return [team for teams in sweep_round(engine, fold_queue).values() for team in teams]


def sweep_round(engine: Engine, fold_queue: FoldQueue) -> dict[Wake, list[int]]:
    """Wake the fold of every team with unfolded events; the teams by what was done."""
    done: dict[Wake, list[int]] = {outcome: [] for outcome in Wake}
    for team_id in teams_with_unfolded_events(engine):
        outcome, previous = fold_queue.wake(team_id)
        done[outcome].append(team_id)
        if outcome is Wake.REPLACED:
            log.warning(
                "team %d: its fold job %s left the queue but never started (its worker died, "
                "or was just taking it); queued a new one",
                team_id,
                previous,
                extra={"team_id": team_id, "job_id": previous},
            )
    if any(done.values()):
        log.info(
            "sweep: %d teams with unfolded events; queued %d, already queued %d, replaced %d",
            sum(len(teams) for teams in done.values()),
            len(done[Wake.QUEUED]),
            len(done[Wake.ALREADY_QUEUED]),
            len(done[Wake.REPLACED]),
            extra={outcome.name.lower(): teams for outcome, teams in done.items()},
        )
    return done


def expiry_round(
    engine: Engine,
    operator_days: int | None,
    stop: threading.Event,
    *,
    step_rows: int = STEP_ROWS,
    pause_seconds: float = STEP_PAUSE_SECONDS,
) -> ExpiryPass | None:
    """One pass of retention over every team that has one, paused between its steps (and
    stopped early when `stop` is set); None when another worker is running the pass."""
    done = expire_pass(
        engine,
        operator_days,
        datetime.now(UTC),
        step_rows=step_rows,
        pause=lambda: stop.wait(pause_seconds),
    )
    if done is None:
        log.info("retention: another worker is expiring events; skipped")
    elif done.erased or done.busy_teams or done.months:
        log.info(
            "retention: dropped %d months (%.3f s to detach and drop, %.3f s to settle); "
            "erased %d expired events of %d teams in %d steps%s",
            len(done.months),
            done.month_seconds,
            done.settle_seconds,
            sum(done.erased.values()),
            len(done.erased),
            done.steps,
            f"; teams whose fold stayed busy, left to the next pass: {done.busy_teams}"
            if done.busy_teams
            else "",
            extra={"erased": done.erased, "busy_teams": done.busy_teams, "months": done.months},
        )
    return done


def months_ahead(engine: Engine, now: datetime | None = None) -> None:
    """This month's partition and the next one's, made before ingest needs them."""
    now = now or datetime.now(UTC)
    ensure_span(engine, now, now + timedelta(days=32))


def move_round(
    engine: Engine, stop: threading.Event, pause_seconds: float = MOVE_PAUSE_SECONDS
) -> MoveRun | None:
    """Move the events stored before migration 0012 into the months, if any are left
    (store/timeline_move.py); None when there is nothing to move."""
    with engine.connect() as connection:
        if not timeline_move_pending(connection):
            return None
    log.info("timeline: moving the events stored before its months")
    run = move_timeline(engine, pause=lambda: stop.wait(pause_seconds))
    log.info(
        "timeline: moved %d events of %d teams in %d steps%s",
        sum(run.moved.values()),
        len(run.moved),
        run.steps,
        "; done" if run.finished else "; left for the next pass",
    )
    return run
