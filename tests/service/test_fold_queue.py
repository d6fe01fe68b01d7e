"""The fold's wake-up flag (service/fold_queue.py): it
holds a wake-up back only while its job still waits in the RQ queue."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from service.fold_queue import FoldQueue, Wake


def team_jobs(queue: Queue, team_id: int) -> list[str]:
    return [job.id for job in queue.jobs if job.args == (team_id,)]


def test_one_waiting_job_per_team_and_a_taken_job_holds_none_back(
    redis: Redis, fold_queue: FoldQueue
) -> None:
    team_id = 20_000_001
    queue = fold_queue.queue
    redis.delete(fold_queue.flag_key(team_id))
    first = ""
    try:
        assert fold_queue.wake(team_id) == (Wake.QUEUED, None)
        assert not fold_queue.request_fold(team_id)  # still waiting
        [first] = team_jobs(queue, team_id)

        # A worker takes it (RQ's BLMOVE into the intermediate list) and dies before starting it.
        redis.lrem(queue.key, 0, first)
        redis.rpush(queue.intermediate_queue_key, first)
        outcome, previous = fold_queue.wake(team_id)
        assert (outcome, previous) == (Wake.REPLACED, first)
        [second] = team_jobs(queue, team_id)
        assert redis.get(fold_queue.flag_key(team_id)) == second.encode()

        # The old job, if it ever starts, leaves the newer job's flag alone; the newer clears it.
        fold_queue.clear_flag(team_id, first)
        assert redis.exists(fold_queue.flag_key(team_id))
        fold_queue.clear_flag(team_id, second)
        assert not redis.exists(fold_queue.flag_key(team_id))
    finally:
        for job in queue.jobs:
            if job.args == (team_id,):
                job.delete()
        redis.lrem(queue.intermediate_queue_key, 0, first)
        redis.delete(fold_queue.flag_key(team_id))


def test_a_successor_goes_behind_the_teams_already_waiting(redis: Redis, fold_queue: FoldQueue) -> None:
    """The turn's hand-over (workers/jobs.py): FIFO order is round robin between teams."""
    busy, quiet = 20_000_002, 20_000_003
    turns = FoldQueue(redis, f"{fold_queue.name}-turns", fold_queue.prefix)
    queue = turns.queue
    try:
        assert not turns.jobs_waiting()
        for team_id in (busy, quiet):
            turns.wake(team_id)
        assert turns.jobs_waiting()
        # A worker takes the busy team's job; the job clears its flag; its turn ends.
        taken = queue.pop_job_id()
        turns.clear_flag(busy, taken)
        assert turns.wake(busy)[0] is Wake.QUEUED
        assert [job.args for job in queue.jobs] == [(quiet,), (busy,)]
        # A second wake-up of the busy team (ingest, the sweep) does not jump the queue.
        assert turns.wake(busy) == (Wake.ALREADY_QUEUED, None)
        assert [job.args for job in queue.jobs] == [(quiet,), (busy,)]
    finally:
        queue.delete(delete_jobs=True)
        redis.delete(*(turns.flag_key(team_id) for team_id in (busy, quiet)))
