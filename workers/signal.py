"""Waking the fold: at most one queued fold job per team, whatever the request rate.

An RQ enqueue costs more than validating an event (SPEC §8), so ingest does not enqueue
per event. It sets a per-team flag with SET NX; only the request that sets it enqueues.
The fold job clears the flag *before* it reads pending events, so an event committed
after that read sets the flag again and gets its own job: no wake-up is lost. The flag
expires by itself in case a worker dies holding it, and the periodic sweep catches
anything a lost or flushed queue dropped.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue

FLAG_TTL_SECONDS = 30
FOLD_JOB = "workers.jobs.fold_team"


def flag_key(prefix: str, team_id: int) -> str:
    return f"{prefix}fold-queued:{team_id}"


def request_fold(redis: Redis, queue_name: str, prefix: str, team_id: int) -> bool:
    """Make sure a fold job for the team is queued; True when this call queued it."""
    if not redis.set(flag_key(prefix, team_id), 1, nx=True, ex=FLAG_TTL_SECONDS):
        return False
    queue = Queue(queue_name, connection=redis)
    queue.enqueue(
        FOLD_JOB,
        team_id,
        job_timeout=600,
        result_ttl=0,
        failure_ttl=24 * 3600,
        description=f"fold team {team_id}",
    )
    return True


def clear_fold_flag(redis: Redis, prefix: str, team_id: int) -> None:
    """Called by the fold job before it reads: later events will queue a new job."""
    redis.delete(flag_key(prefix, team_id))
