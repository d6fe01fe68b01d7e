"""The fold's wake-up flag (store/fold_queue.py): it
holds a wake-up back only while its job still waits in the RQ queue."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from store.fold_queue import Wake, clear_fold_flag, flag_key, jobs_waiting, request_fold, wake_fold
from store.settings import Settings


def team_jobs(queue: Queue, team_id: int) -> list[str]:
    return [job.id for job in queue.jobs if job.args == (team_id,)]


def test_one_waiting_job_per_team_and_a_taken_job_holds_none_back(redis: Redis, settings: Settings) -> None:
    team_id = 20_000_001
    queue = Queue(settings.fold_queue, connection=redis)
    redis.delete(flag_key(settings.redis_prefix, team_id))
    first = ""
    try:
        assert wake_fold(redis, settings.fold_queue, settings.redis_prefix, team_id) == (Wake.QUEUED, None)
        assert not request_fold(redis, settings.fold_queue, settings.redis_prefix, team_id)  # still waiting
        [first] = team_jobs(queue, team_id)

        # A worker takes it (RQ's BLMOVE into the intermediate list) and dies before starting it.
        redis.lrem(queue.key, 0, first)
        redis.rpush(queue.intermediate_queue_key, first)
        outcome, previous = wake_fold(redis, settings.fold_queue, settings.redis_prefix, team_id)
        assert (outcome, previous) == (Wake.REPLACED, first)
        [second] = team_jobs(queue, team_id)
        assert redis.get(flag_key(settings.redis_prefix, team_id)) == second.encode()

        # The old job, if it ever starts, leaves the newer job's flag alone; the newer clears it.
        clear_fold_flag(redis, settings.redis_prefix, team_id, first)
        assert redis.exists(flag_key(settings.redis_prefix, team_id))
        clear_fold_flag(redis, settings.redis_prefix, team_id, second)
        assert not redis.exists(flag_key(settings.redis_prefix, team_id))
    finally:
        for job in queue.jobs:
            if job.args == (team_id,):
                job.delete()
        redis.lrem(queue.intermediate_queue_key, 0, first)
        redis.delete(flag_key(settings.redis_prefix, team_id))


def test_a_successor_goes_behind_the_teams_already_waiting(redis: Redis, settings: Settings) -> None:
    """The turn's hand-over (workers/jobs.py): FIFO order is round robin between teams."""
    busy, quiet = 20_000_002, 20_000_003
    queue = Queue(f"{settings.fold_queue}-turns", connection=redis)
    try:
        assert not jobs_waiting(redis, queue.name)
        for team_id in (busy, quiet):
            wake_fold(redis, queue.name, settings.redis_prefix, team_id)
        assert jobs_waiting(redis, queue.name)
        # A worker takes the busy team's job; the job clears its flag; its turn ends.
        taken = queue.pop_job_id()
        clear_fold_flag(redis, settings.redis_prefix, busy, taken)
        assert wake_fold(redis, queue.name, settings.redis_prefix, busy)[0] is Wake.QUEUED
        assert [job.args for job in queue.jobs] == [(quiet,), (busy,)]
        # A second wake-up of the busy team (ingest, the sweep) does not jump the queue.
        assert wake_fold(redis, queue.name, settings.redis_prefix, busy) == (Wake.ALREADY_QUEUED, None)
        assert [job.args for job in queue.jobs] == [(quiet,), (busy,)]
    finally:
        queue.delete(delete_jobs=True)
        redis.delete(*(flag_key(settings.redis_prefix, team_id) for team_id in (busy, quiet)))
