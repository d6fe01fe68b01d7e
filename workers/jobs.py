"""RQ jobs: thin wrappers that open the worker's connections around the fold."""

from __future__ import annotations

from workers import runtime
from workers.fold import fold_until_empty
from workers.signal import clear_fold_flag


def fold_team(team_id: int) -> int:
    """Fold every unfolded event of a team, in batches; returns how many."""
    rt = runtime.current()
    # Clear the flag before reading: an event committed after this point queues a new job.
    clear_fold_flag(rt.redis, rt.settings.redis_prefix, team_id)
    return fold_until_empty(rt.engine, team_id, rt.settings.fold_batch_size)
