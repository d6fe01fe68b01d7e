"""The fold worker process (`python -m workers`): an RQ SimpleWorker plus the sweep and
retention's expiry (each its own thread).

SimpleWorker runs each job in this process (no fork per job), so the engine and its
connections live as long as the process. A thread runs the sweep every few seconds.
When Redis goes away RQ retries the connection (at most `FoldWorker.max_connection_wait_time`
apart), and if RQ's loop gives up the worker starts it again; nothing is lost meanwhile,
because the events wait in Postgres. Logs are JSON lines (service/logs.py), RQ's included.

RQ's own recovery, tuned for a fold job that is short and idempotent (docs/operations.md):
maintenance every `MAINTENANCE_INTERVAL_SECONDS` fails jobs a dead worker left in the
intermediate list or the started registry, and an idle worker heartbeats every
`WORKER_TTL_SECONDS - 15` seconds. The fold itself does not wait for either: a flag whose
job left the queue holds no wake-up back (service/fold_queue.py), so the next sweep queues
a new job.
"""

from __future__ import annotations

import logging
import threading
import time
from types import FrameType

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested

from service.logs import configure_logging
from service.settings import Settings
from store.retention import PASS_INTERVAL_SECONDS
from workers import runtime
from workers.sweep import expiry_round, months_ahead, move_round, sweep_round

log = logging.getLogger("workers")

WORKER_TTL_SECONDS = 30
MAINTENANCE_INTERVAL_SECONDS = 30


class FoldWorker(SimpleWorker):
    """RQ's SimpleWorker, reconnecting to Redis within 2 s once it is back (RQ's default
    backoff doubles up to 60 s, which would hold the fold long after an outage)."""

    max_connection_wait_time = 2.0
    stop_asked = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True  # RQ marks only a busy worker as stopping
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def run_sweeps(rt: runtime.Runtime, stop: threading.Event) -> None:
    failing = False
    while not stop.is_set():
        try:
            sweep_round(rt.engine, rt.fold_queue)
            if failing:
                log.info("sweep works again")
            failing = False
        except Exception as error:  # keep sweeping whatever one round hit
            if not failing:
                log.warning("sweep failed (%s); trying again every round", type(error).__name__)
            failing = True
        stop.wait(rt.settings.sweep_interval_seconds)


# How soon an unfinished or failed move of a pre-0012 table is taken up again.
MOVE_RETRY_SECONDS = 30.0


def run_expiry(rt: runtime.Runtime, stop: threading.Event) -> None:
    """The timeline's upkeep (docs/retention.md), at start and then every
    PASS_INTERVAL_SECONDS: this month's and the next month's partitions made ahead, the
    events of a table made before migration 0012 moved into the months, and retention."""
    while not stop.is_set():
        # Each part on its own: one failing does not skip the others.
        try:
            months_ahead(rt.engine)
        except Exception as error:
            log.warning("timeline upkeep: making months ahead failed (%s)", type(error).__name__)
        moved = True
        try:
            run = move_round(rt.engine, stop)
            moved = run is None or run.finished
        except Exception as error:
            log.warning("timeline upkeep: the move failed (%s); again soon", type(error).__name__)
            moved = False
        try:
            expiry_round(rt.engine, rt.settings.retention_days, stop)
        except Exception as error:  # a failed pass is tried again at the next interval
            log.warning("retention pass failed (%s); trying again later", type(error).__name__)
        # An unfinished move goes on soon; the rest waits for the next pass.
        stop.wait(PASS_INTERVAL_SECONDS if moved else MOVE_RETRY_SECONDS)


def main() -> None:
    configure_logging()
    settings = Settings.from_env()
    rt = runtime.Runtime.from_settings(settings)
    runtime.configure(rt)
    stop = threading.Event()
    threading.Thread(target=run_sweeps, args=(rt, stop), daemon=True, name="sweep").start()
    threading.Thread(target=run_expiry, args=(rt, stop), daemon=True, name="expiry").start()
    # RQ blocks on BLMOVE for longer than our short client timeouts: its own connection.
    rq_redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=15)
    log.info("fold worker started on queue %s", settings.fold_queue)
    try:
        while True:
            try:
                worker = FoldWorker(
                    [Queue(settings.fold_queue, connection=rq_redis)],
                    connection=rq_redis,
                    worker_ttl=WORKER_TTL_SECONDS,
                    maintenance_interval=MAINTENANCE_INTERVAL_SECONDS,
                )
                worker.work(logging_level="WARNING")
                if worker.stop_asked:
                    log.info("fold worker stopped on request")
                    return
                log.warning("rq's work loop quit; starting it again in 1s")
            except RedisError as error:
                log.warning("redis unavailable (%s); retrying in 1s", type(error).__name__)
            time.sleep(1)
    except StopRequested:  # a signal between two runs of RQ's loop
        log.info("fold worker stopped on request")
    finally:
        stop.set()


if __name__ == "__main__":
    main()
