"""RQ jobs: thin wrappers that open the worker's connections around the fold.

A fold job is one **turn** of its team (docs/fold.md, "Turns"): it folds batches for at
most `Settings.fold_turn_seconds` (at least one batch; by default exactly one), and if
the team still has unfolded events it queues its successor, which goes to the back of
the FIFO queue. Every team with a backlog has at most one job waiting (the flag,
store/fold_queue.py), so the queue serves the teams round robin: a team's fresh event
waits at most one turn of each busy team ahead of it, whatever their backlogs, and a
job is short next to RQ's job timeout.
"""

from __future__ import annotations

import logging
import time

from rq import get_current_job

from store.fold_queue import clear_fold_flag, wake_fold
from workers import runtime
from workers.fold import fold_pending

log = logging.getLogger(__name__)


def fold_team(team_id: int) -> int:
    """Fold one turn of a team's unfolded events; returns how many were folded."""
    rt = runtime.current()
    job = get_current_job()
    # Clear the flag before reading: an event committed after this point queues a new job.
    clear_fold_flag(rt.redis, rt.settings.redis_prefix, team_id, job.id if job else None)
    batch_size = rt.settings.fold_batch_size
    turn_ends = time.monotonic() + rt.settings.fold_turn_seconds
    total = 0
    while True:
        taken = fold_pending(rt.engine, team_id, batch_size)
        total += taken
        if taken < batch_size:
            return total
        if time.monotonic() >= turn_ends:
            # A full batch: more may wait. The successor goes to the back of the queue
            # (or the team's job queued meanwhile by a wake-up already waits there).
            outcome, _ = wake_fold(rt.redis, rt.settings.fold_queue, rt.settings.redis_prefix, team_id)
            log.debug(
                "fold of team %d: turn over after %d events; successor %s",
                team_id,
                total,
                outcome.value,
                extra={"team_id": team_id, "events": total},
            )
            return total
