"""Fold worker processes (`python -m workers`) for tests, and waiting on what they fold.

The `start_worker` fixture (tests/workers/conftest.py) starts real worker processes on
the test session's database, Redis and queue; every one is stopped when the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from redis import Redis
from rq import Queue, Worker
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[2]
StartWorker = Callable[..., subprocess.Popen[bytes]]


def worker_processes(logs: Path) -> Iterator[StartWorker]:
    """Yield a function that starts a worker process (its output in `logs`); stop them all after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, batch_size: int, **extra_env: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,  # DATABASE_URL, REDIS_URL, FOLD_QUEUE, REDIS_PREFIX of this session
            "FOLD_BATCH_SIZE": str(batch_size),
            "SWEEP_INTERVAL_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        log = (logs / f"worker-{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def unfolded(engine: Engine, team_id: int) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM events WHERE team_id = :t AND folded_at IS NULL"), {"t": team_id}
            ).scalar_one()
        )


def wait_until_folded(engine: Engine, team_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (left := unfolded(engine, team_id)) > 0:
        assert time.monotonic() < deadline, f"{left} events still unfolded after {timeout}s"
        time.sleep(0.05)


def wait_for_workers(redis: Redis, queue: Queue, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(Worker.all(connection=redis, queue=queue)) < count:
        assert time.monotonic() < deadline, "worker processes did not start"
        time.sleep(0.05)
