"""The fold worker process (`python -m workers`): an RQ SimpleWorker plus the sweep.

SimpleWorker runs each job in this process (no fork per job), so the engine and its
connections live as long as the process. A thread runs the sweep every few seconds.
When Redis goes away the worker waits and starts again; nothing is lost meanwhile,
because the events wait in Postgres.
"""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker

from store.engine import make_engine, make_redis
from store.settings import Settings
from workers import runtime
from workers.sweep import sweep

log = logging.getLogger("workers")


def run_sweeps(rt: runtime.Runtime, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            sweep(rt.engine, rt.redis, rt.settings)
        except Exception as error:  # keep sweeping whatever one round hit
            log.warning("sweep failed: %s", type(error).__name__)
        stop.wait(rt.settings.sweep_interval_seconds)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    rt = runtime.Runtime(settings, make_engine(settings, pool_size=2), make_redis(settings))
    runtime.configure(rt)
    stop = threading.Event()
    threading.Thread(target=run_sweeps, args=(rt, stop), daemon=True, name="sweep").start()
    # RQ blocks on BLPOP for longer than our short client timeouts: its own connection.
    rq_redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=15)
    try:
        while True:
            try:
                worker = SimpleWorker([Queue(settings.fold_queue, connection=rq_redis)], connection=rq_redis)
                worker.work(logging_level="WARNING")
                return
            except RedisError as error:
                log.warning("redis unavailable (%s); retrying in 1s", type(error).__name__)
                time.sleep(1)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
