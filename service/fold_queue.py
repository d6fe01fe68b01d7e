"""Waking the fold: at most one *waiting* fold job per team, whatever the request rate.

An RQ enqueue costs more than validating an event (SPEC §8), so ingest does not enqueue
per event. A per-team flag names the team's fold job that waits in the RQ queue; a call
that finds the flag *and* that job still in the queue list does nothing, any other call
(no flag, or a flag whose job has left the queue) names a new job and enqueues it. The
check and the claim are one Lua script, one round trip, as the old SET NX was.

The flag cannot outlive its job: once the job leaves the queue (a worker took it), the
flag no longer holds anyone back. A worker SIGKILLed right after it took the job leaves
the job in RQ's intermediate list (RQ's own maintenance fails it there later, see
docs/operations.md); the next wake-up for the team, from ingest or from the sweep,
queues a new job at once instead of waiting for a TTL.

The job clears the flag before it reads pending events, and only if the flag still names
it (compare and delete): an event committed after that read finds no flag, or a flag
naming a newer job still waiting, and so is folded by a job that reads after it. No
wake-up is lost. Shared by the web side (app/) and the worker (workers/).

The same call queues a fold job's successor when its turn ends with events left
(workers/jobs.py): a new job goes to the back of the one FIFO queue, and a team has at
most one job waiting, so the queue serves the teams with a backlog round robin. A turn
ends only when another job waits (`jobs_waiting`): a team alone folds on in one job.

A process holds one `FoldQueue` (its Redis connection, the RQ queue's name and our keys'
prefix, from `Settings`): the web app's `resources().fold_queue`, the worker's
`runtime.current().fold_queue`.
"""

from __future__ import annotations

import enum
import uuid

from redis import Redis
from rq import Queue

from service.settings import Settings

FOLD_JOB = "workers.jobs.fold_team"
# Only key hygiene: the flag never blocks once its job has left the queue.
FLAG_TTL_SECONDS = 3600
# A fold job is one turn (workers/jobs.py); while no other job waits it folds on, for at
# most this long, then queues its successor. RQ's timeout sits above it, so a job only
# times out when a batch hangs (a rare batch, a delete re-deriving a 100,000-event
# customer, takes seconds).
FOLD_JOB_MAX_SECONDS = 60
FOLD_JOB_TIMEOUT_SECONDS = 180

# KEYS: flag, queue list. ARGV: new job id, ttl. Returns nil when the flagged job still
# waits in the queue; otherwise names the new job and returns the id it replaced ('').
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and redis.call('LPOS', KEYS[2], held) then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return held or ''
"""

# KEYS: flag. ARGV: the job's id. Deletes the flag only while it names that job.
_CLEAR = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Wake(enum.Enum):
    """What a wake-up found and did."""

    QUEUED = "queued"  # no flag: a new job is queued
    ALREADY_QUEUED = "already queued"  # the flagged job still waits in the queue
    REPLACED = "replaced"  # the flagged job had left the queue without clearing it: new job


def flag_key(prefix: str, team_id: int) -> str:
    return f"{prefix}fold-queued:{team_id}"


class FoldQueue:
    """The fold's RQ queue and our flags beside it, on one Redis connection."""

    def __init__(self, redis: Redis, queue_name: str, prefix: str):
        self.redis = redis
        self.name = queue_name
        self.prefix = prefix
        self.queue = Queue(queue_name, connection=redis)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> FoldQueue:
        return cls(redis, settings.fold_queue, settings.redis_prefix)

    def flag_key(self, team_id: int) -> str:
        """The team's flag: the id of its fold job that waits in the queue."""
        return flag_key(self.prefix, team_id)

    def wake(self, team_id: int) -> tuple[Wake, str | None]:
        """Make sure a fold job for the team waits in the queue; what happened, and the id
        of the job the flag named before (when this call replaced it)."""
        job_id = uuid.uuid4().hex
        held = self.redis.eval(_CLAIM, 2, self.flag_key(team_id), self.queue.key, job_id, FLAG_TTL_SECONDS)
        if held is None:
            return Wake.ALREADY_QUEUED, None
        self.queue.enqueue(
            FOLD_JOB,
            team_id,
            job_id=job_id,
            job_timeout=FOLD_JOB_TIMEOUT_SECONDS,
            result_ttl=0,
            failure_ttl=24 * 3600,
            description=f"fold team {team_id}",
        )
        previous = held.decode() if isinstance(held, bytes) else str(held)
        return (Wake.REPLACED, previous) if previous else (Wake.QUEUED, None)

    def request_fold(self, team_id: int) -> bool:
        """Make sure a fold job for the team waits in the queue; True when this call queued it."""
        outcome, _ = self.wake(team_id)
        return outcome is not Wake.ALREADY_QUEUED

    def jobs_waiting(self) -> bool:
        """Whether a fold job (of any team) waits in the queue: a turn ends only then."""
        return bool(self.redis.llen(self.queue.key))

    def clear_flag(self, team_id: int, job_id: str | None) -> None:
        """Called by the fold job before it reads: later events will queue a new job.

        With the job's id the flag goes only while it names this job (a newer waiting job
        keeps it); without one (a fold run outside RQ) it goes unconditionally.
        """
        if job_id is None:
            self.redis.delete(self.flag_key(team_id))
        else:
            self.redis.eval(_CLEAR, 1, self.flag_key(team_id), job_id)


def request_fold(redis: Redis, queue_name: str, prefix: str, team_id: int) -> bool:
    """`FoldQueue.request_fold` for a caller that holds no FoldQueue (bench/ scripts)."""
    return FoldQueue(redis, queue_name, prefix).request_fold(team_id)
