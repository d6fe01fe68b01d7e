"""The pipeline SPEC §8 compares against: one RQ job per event.

Its ceiling is how many no-op jobs one non-forking RQ worker runs per second here (a
real per-event job would also open a transaction). `python -m bench.rqbaseline URL
QUEUE N` enqueues N no-op jobs, then runs them with a SimpleWorker in burst mode and
prints the jobs per second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker

from bench.env import ROOT


def noop(n: int) -> int:
    """The job: nothing, so the figure is RQ's own cost per job."""
    return n


def run(redis_url: str, queue_name: str, jobs: int) -> dict[str, Any]:
    redis = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=redis)
    try:
        for n in range(jobs):
            queue.enqueue("bench.rqbaseline.noop", n, result_ttl=0)
        worker = SimpleWorker([queue], connection=redis)
        started = time.monotonic()
        worker.work(burst=True, logging_level="WARNING")
        seconds = time.monotonic() - started
        return {"jobs": jobs, "seconds": round(seconds, 2), "rate": round(jobs / seconds, 1)}
    finally:
        queue.delete(delete_jobs=True)
        redis.close()


def measure_rq_baseline(redis_url: str, queue_name: str, jobs: int) -> dict[str, Any]:
    """Run the baseline in its own process, as a worker would be."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.rqbaseline", redis_url, queue_name, str(jobs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
