"""RQ jobs: thin wrappers that open the worker's connections around the fold.

A fold job is one **turn** of its team (docs/fold.md, "Turns"): it folds a batch, then
another while `Settings.fold_turn_seconds` have not passed, and after that only while no
other fold job waits in the queue (one LLEN a batch). When its turn is over and the team
still has unfolded events, it queues its successor, which goes to the back of the FIFO
queue. Every team has at most one job waiting (the flag, service/fold_queue.py), so the
queue serves the teams round robin: a team's fresh event waits at most one turn of each
busy team ahead of it, whatever their backlogs. A team alone is not slowed by turns (no
RQ job per batch); its job still hands over after `FOLD_JOB_MAX_SECONDS`, far below
RQ's job timeout.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from rq import get_current_job

from service.fold_queue import FOLD_JOB_MAX_SECONDS
from workers import runtime
from workers.fold import fold_pending

log = logging.getLogger(__name__)


def fold_team(team_id: int) -> int:
    """Fold one turn of a team's unfolded events; returns how many were folded."""
    rt = runtime.current()
    job = get_current_job()
    # Clear the flag before reading: an event committed after this point queues a new job.
    rt.fold_queue.clear_flag(team_id, job.id if job else None)
    batch_size = rt.settings.fold_batch_size
    started = time.monotonic()
    total = 0
    while True:
        taken = fold_pending(rt.engine, team_id, batch_size)
        total += taken
        if taken < batch_size:
            return total
        if turn_over(time.monotonic() - started):
            # A full batch: more may wait. The successor goes to the back of the queue
            # (or the team's job queued meanwhile by a wake-up already waits there).
            outcome, _ = rt.fold_queue.wake(team_id)
            log.debug(
                "fold of team %d: turn over after %d events; successor %s",
                team_id,
                total,
                outcome.value,
                extra={"team_id": team_id, "events": total},
            )
            return total


def turn_over(elapsed: float) -> bool:
    """Whether a turn that has run `elapsed` seconds ends after this batch."""
    rt = runtime.current()
    if elapsed < rt.settings.fold_turn_seconds:
        return False
    if elapsed >= FOLD_JOB_MAX_SECONDS:
        return True
    try:
        return rt.fold_queue.jobs_waiting()
    except RedisError:  # nobody can queue meanwhile; the successor is queued at the bound
        return False
