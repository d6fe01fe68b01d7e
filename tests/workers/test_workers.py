"""Fold worker processes (`python -m workers`): several at once, and one killed mid-batch.

These start real worker processes on the test session's database, Redis and queue, and
compare what they fold with a single in-process fold of the same events in another team
(and with the reference model): the result must be the same, event for event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent
from service.fold_queue import FoldQueue
from service.settings import Settings
from store.fold.backlog import FOLD_LOCK_NAMESPACE
from tests.workers.model import TeamState, expected_state
from tests.workers.processes import StartWorker, unfolded, wait_for_workers, wait_until_folded
from tests.workers.support import journeys, new_team, state, store, store_and_fold
from tests.workers.test_fold_properties import as_dict

pytestmark = pytest.mark.slow


def folded_alone(engine: Engine, events: list[PreparedEvent]) -> TeamState:
    """The same events folded by this process alone, in another team."""
    team = new_team(engine)
    store_and_fold(engine, team, events)
    return state(engine, team)


def test_two_workers_fold_a_backlog_exactly_as_one_does(
    engine: Engine, redis: Redis, settings: Settings, start_worker: StartWorker
) -> None:
    events = journeys(120)
    team = new_team(engine)
    queue = Queue(settings.fold_queue, connection=redis)
    start_worker("a", batch_size=40)
    start_worker("b", batch_size=40)
    wait_for_workers(redis, queue, 2)
    jobs: list[str] = []
    for n in range(0, len(events), 300):  # Segment keeps delivering while both fold
        store(engine, team, events[n : n + 300])
        for _ in range(2):
            jobs.append(queue.enqueue("workers.jobs.fold_team", team, result_ttl=120, job_timeout=120).id)
    wait_until_folded(engine, team)
    assert as_dict(state(engine, team)) == as_dict(folded_alone(engine, events))
    assert as_dict(state(engine, team)) == as_dict(expected_state(events))
    # Both processes really folded this team (each took jobs while the other held some).
    ran_by = {Job.fetch(job, connection=redis).worker_name for job in jobs}
    assert len(ran_by - {None}) == 2


def fold_lock_holder(engine: Engine, team_id: int) -> int | None:
    """The backend that holds the team's fold lock, i.e. is inside a batch transaction."""
    with engine.connect() as connection:
        pid = connection.execute(
            text(
                """
                SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE d.datname = current_database() AND l.locktype = 'advisory' AND l.granted
                  AND l.classid = :ns AND l.objid = :team AND l.objsubid = 2
                """
            ),
            {"ns": FOLD_LOCK_NAMESPACE, "team": team_id},
        ).scalar()
    return int(pid) if pid is not None else None


def backend_alive(engine: Engine, pid: int) -> bool:
    with engine.connect() as connection:
        return (
            connection.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first()
            is not None
        )


def test_a_worker_killed_mid_batch_loses_nothing_and_folds_nothing_twice(
    engine: Engine, redis: Redis, settings: Settings, start_worker: StartWorker
) -> None:
    events = journeys(400, seed=9)
    team = new_team(engine)
    store(engine, team, events)
    doomed = start_worker("doomed", batch_size=1500)  # its sweep finds the backlog itself
    deadline = time.monotonic() + 30
    while (holder := fold_lock_holder(engine, team)) is None:
        assert doomed.poll() is None and time.monotonic() < deadline, "the worker never started a batch"
        time.sleep(0.002)
    doomed.kill()  # SIGKILL while its batch transaction is open
    doomed.wait(timeout=5)
    deadline = time.monotonic() + 30
    while backend_alive(engine, holder):  # Postgres rolls the batch back when it sees the socket close
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert unfolded(engine, team) > 0

    # The worst case: the queued job and the wake-up flag are lost too. The sweep of a
    # restarted worker must find the team again.
    Queue(settings.fold_queue, connection=redis).empty()
    redis.delete(FoldQueue.from_settings(redis, settings).flag_key(team))
    start_worker("restarted", batch_size=1500)
    wait_until_folded(engine, team)

    after = state(engine, team)  # also asserts no dangling customer, identity or event
    assert as_dict(after) == as_dict(folded_alone(engine, events))
    assert as_dict(after) == as_dict(expected_state(events))
    with engine.connect() as connection:
        counts = connection.execute(
            text(
                """
                SELECT count(*) AS events, count(DISTINCT (message_id, type)) AS distinct_events,
                       (SELECT count(*) FROM customers c WHERE c.team_id = :t AND c.merged_into IS NULL
                          AND c.event_count <> (SELECT count(*) FROM events e
                                                WHERE e.team_id = :t AND e.customer_id = c.id)) AS miscounted
                FROM events WHERE team_id = :t
                """
            ),
            {"t": team},
        ).one()
    assert counts.events == counts.distinct_events  # every event once
    assert counts.miscounted == 0  # every customer's count matches its feed


# --- a worker killed right after it took a job ------------------------------------------------


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (Linux /proc), to tell its Redis clients."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def blocked_in_dequeue(redis: Redis, pid: int) -> bool:
    """Whether the worker process `pid` is blocked in RQ's BLMOVE, waiting for a job."""
    ports = local_ports(pid)
    return any(
        client.get("cmd") == "blmove"
        and "b" in client["flags"]
        and int(client["addr"].rsplit(":", 1)[1]) in ports
        for client in redis.client_list()
    )


def wait_blocked(redis: Redis, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not blocked_in_dequeue(redis, pid):
        assert time.monotonic() < deadline, "the worker never waited for a job"
        time.sleep(0.02)


def stop_while_blocked(
    redis: Redis, queue: Queue, worker: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """SIGSTOP the worker at a moment it is blocked in BLMOVE with nothing queued, as seen
    after the stop (its Redis client's state cannot change then, but for BLMOVE's own
    timeout). A job queued meanwhile (its sweep) or a BLMOVE that just ended: resume, retry."""
    deadline = time.monotonic() + timeout
    while True:
        wait_blocked(redis, worker.pid)
        worker.send_signal(signal.SIGSTOP)
        if queue.count == 0 and blocked_in_dequeue(redis, worker.pid):
            return
        worker.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, "the worker was never stopped while blocked"
        time.sleep(0.02)


def stranded_fold_job(redis: Redis, queue: Queue, team_id: int) -> Job | None:
    """The team's fold job taken from the queue (in RQ's intermediate list) but not started."""
    for job_id in queue.intermediate_queue.get_job_ids():
        job = Job.fetch(job_id, connection=redis) if redis.exists(f"rq:job:{job_id}") else None
        if job is not None and job.args == (team_id,) and job.get_status() == "queued":
            return job
    return None


def test_a_worker_killed_right_after_taking_a_job_stalls_nothing(
    engine: Engine, redis: Redis, settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    """The job stays in RQ's intermediate list and the team's flag stays set; a healthy
    worker must still fold the team's events, and it is the sweep that frees them.

    Deterministic by construction: the doomed worker is the only one blocked in BLMOVE
    when the job is queued, and Redis serves a blocked client on the push itself, so the
    stopped process takes the job whatever the machine's load. The 10 s recovery bound
    (docs/operations.md) is a figure `bin/faults` measures, not a wall-clock assertion here.
    """
    events = journeys(12, seed=3)
    queue = Queue(settings.fold_queue, connection=redis)
    fold_queue = FoldQueue.from_settings(redis, settings)
    # Its sweep runs once, as it starts: later rounds would queue other teams' folds.
    doomed = start_worker("doomed", batch_size=1000, SWEEP_INTERVAL_SECONDS="3600")
    for _attempt in range(5):
        stop_while_blocked(redis, queue, doomed)
        team = new_team(engine)
        store(engine, team, events)
        fold_queue.request_fold(team)
        deadline = time.monotonic() + 30
        while (stranded := stranded_fold_job(redis, queue, team)) is None and queue.count == 0:
            assert time.monotonic() < deadline, "the stopped worker never took the job"
            time.sleep(0.02)
        if stranded is not None:
            break
        # Its BLMOVE ended (RQ's 15 s dequeue timeout) before the push: the job waits in
        # the queue. Take it back, let the worker fold this team, and try with another.
        for job_id in queue.get_job_ids():
            queue.remove(job_id)
        redis.delete(fold_queue.flag_key(team))
        doomed.send_signal(signal.SIGCONT)
    assert stranded is not None, "the stopped worker never took the job in five attempts"
    doomed.kill()  # SIGKILL right after it took the job
    doomed.wait(timeout=5)
    assert queue.count == 0 and stranded.id in queue.intermediate_queue.get_job_ids()

    # RQ itself frees a job stuck in its intermediate list only after a minute; the sweep
    # sees that the flag names a job no longer queued and queues a new one.
    start_worker("healthy", batch_size=1000)
    wait_until_folded(engine, team, timeout=60)
    # Each round of the healthy worker's sweep is one JSON line saying what it did.
    lines = [json.loads(line) for line in (tmp_path / "worker-healthy.log").read_text().splitlines()]
    assert any(line.get("replaced") == [team] for line in lines if line["message"].startswith("sweep:"))
