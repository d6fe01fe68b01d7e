"""The faults the suite injects, each into a running stack while its team's load runs,
and the cases that name them (`CASES`; `SHORT`: the subset of `bin/faults --short`)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine

from devstack.embedded import EmbeddedRedis
from devstack.faults.observe import fold_lock_holder, idle_workers, untaken_jobs
from devstack.faults.old_events import OldEventsMove
from devstack.faults.processes import FaultStack
from devstack.faults.report import say
from devstack.faults.servers import SuiteDatabase


@dataclass
class Run:
    """What a fault reaches: the servers, the stack, and the workers it killed."""

    folder: Path
    postgres: SuiteDatabase
    redis: EmbeddedRedis | None
    redis_url: str
    stack: FaultStack
    engine: Engine
    rq_redis: Redis
    prefix: str
    queue: str
    outage_seconds: float = 2.0  # how long a stopped or frozen server stays down
    killed: list[str] = field(default_factory=list)  # workers to start again after the case


Fault = Callable[[Run, int], None]
# What a case's preparation stored, checked once its team's backlog is empty: (lost, duplicated, note).
Check = Callable[[], tuple[int, int, str]]
# A case's preparation, before its team's load starts; it returns its check.
Prepare = Callable[[Run, int], Check]


def kill_worker_mid_batch(run: Run, team_id: int) -> None:
    """Let a backlog build (both workers stopped), then SIGKILL the one inside a batch."""
    for process in run.stack.workers.values():
        process.send_signal(signal.SIGSTOP)
    time.sleep(1.5)
    for process in run.stack.workers.values():
        process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while (holder := fold_lock_holder(run.engine, team_id)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no worker took a batch of the team within 10s")
        time.sleep(0.002)
    run.stack.workers[holder].kill()
    run.killed.append(holder)
    say(f"  killed {holder} inside a batch")


def kill_worker_after_taking_a_job(run: Run, team_id: int) -> None:
    """SIGSTOP worker-a while it waits in BLMOVE; once it was served a job (which then
    sits in RQ's intermediate list, unstarted), SIGKILL it."""
    doomed = run.stack.workers["worker-a"]
    for attempt in range(40):
        deadline = time.monotonic() + 3
        while idle_workers(run.rq_redis) < 2 and time.monotonic() < deadline:  # worker-a is waiting too
            time.sleep(0.005)
        doomed.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen = untaken_jobs(run.rq_redis, run.queue, team_id)
            time.sleep(0.3)  # a running worker starts a job it took in milliseconds
            stranded = seen & untaken_jobs(run.rq_redis, run.queue, team_id)
            if stranded:
                doomed.kill()
                run.killed.append("worker-a")
                say(f"  killed worker-a holding job {stranded.pop()} (attempt {attempt + 1})")
                return
        doomed.send_signal(signal.SIGCONT)
    raise RuntimeError("worker-a was never served a job while stopped")


def redis_stopped(run: Run, team_id: int) -> None:
    assert run.redis is not None and run.redis.process is not None
    run.redis.process.terminate()
    run.redis.process.wait(5)
    time.sleep(run.outage_seconds)
    run.redis.start()


def redis_frozen(run: Run, team_id: int) -> None:
    assert run.redis is not None and run.redis.process is not None
    run.redis.process.send_signal(signal.SIGSTOP)
    time.sleep(run.outage_seconds)
    run.redis.process.send_signal(signal.SIGCONT)


def redis_flushed(run: Run, team_id: int) -> None:
    run.rq_redis.flushall()


def kill_gunicorn_worker(run: Run, team_id: int) -> None:
    pids = run.stack.web_workers()
    os.kill(pids[0], signal.SIGKILL)


def postgres_stopped(mode: str) -> Fault:
    def fault(run: Run, team_id: int) -> None:
        run.postgres.stop(mode)
        time.sleep(run.outage_seconds)
        run.postgres.start()

    return fault


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault
    needs: str = ""  # "redis" / "postgres": a server of ours
    expects_503: bool = False
    rate: float = 25.0  # requests per second per load thread
    prepare: Prepare | None = None


OLD_EVENTS_MOVE = OldEventsMove()


CASES = [
    Case("worker SIGKILL mid-batch", kill_worker_mid_batch),
    Case("worker SIGKILL after taking a job", kill_worker_after_taking_a_job, rate=4.0),
    Case("redis stopped", redis_stopped, needs="redis"),
    Case("redis frozen", redis_frozen, needs="redis"),
    Case("redis flushed", redis_flushed, needs="redis"),
    Case("gunicorn worker SIGKILL", kill_gunicorn_worker),
    Case("postgres stopped (fast)", postgres_stopped("fast"), needs="postgres", expects_503=True),
    Case("postgres stopped (immediate)", postgres_stopped("immediate"), needs="postgres", expects_503=True),
    # Last: its downgrade and upgrade stop and start the whole stack.
    Case("timeline move: worker SIGKILL mid-move", OLD_EVENTS_MOVE.fault, prepare=OLD_EVENTS_MOVE.prepare),
]
SHORT = [
    "worker SIGKILL mid-batch",
    "worker SIGKILL after taking a job",
    "redis flushed",
    "gunicorn worker SIGKILL",
    "postgres stopped (immediate)",
]
