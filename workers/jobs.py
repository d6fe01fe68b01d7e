"""RQ jobs: thin wrappers that open the worker's connections around the fold.

A fold job folds its team's unfolded events in batches until none are left, or for at
most `FOLD_JOB_TIMEOUT_SECONDS`; then it queues its successor and returns. A job is
therefore short next to RQ's job timeout, and a team with a endless stream of events
takes turns with the other teams instead of holding a worker.
"""

from __future__ import annotations

import logging
import time

from rq import get_current_job

from store.fold_queue import FOLD_JOB_TIMEOUT_SECONDS, clear_fold_flag, wake_fold
from workers import runtime
from workers.fold import fold_pending

log = logging.getLogger(__name__)


def fold_team(team_id: int) -> int:
    """Fold every unfolded event of a team, in batches; returns how many."""
    rt = runtime.current()
    job = get_current_job()
    # Clear the flag before reading: an event committed after this point queues a new job.
    clear_fold_flag(rt.redis, rt.settings.redis_prefix, team_id, job.id if job else None)
    batch_size = rt.settings.fold_batch_size
    deadline = time.monotonic() + FOLD_JOB_TIMEOUT_SECONDS
    total = 0
    while True:
        taken = fold_pending(rt.engine, team_id, batch_size)
        total += taken
        if taken < batch_size:
            return total
        if time.monotonic() > deadline:
            outcome, _ = wake_fold(rt.redis, rt.settings.fold_queue, rt.settings.redis_prefix, team_id)
            log.info(
                "fold of team %d paused after %d events; successor %s",
                team_id,
                total,
                outcome.value,
                extra={"team_id": team_id, "events": total},
            )
            return total
