"""gunicorn settings (`gunicorn -c python:app.serving.gunicorn_config "app:create_app()"`).

One gevent worker per core by default (`app.serving.worker.FrontDoorWorker`, docs/serving.md):
each connection is a greenlet, so slow or many clients cannot hold the process, and
connections are kept alive between requests. Each request commits its events before it
answers, and the process holds its own connection pool (made after the fork).
"""

from __future__ import annotations

import os
import tempfile

from service.logs import logging_config

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "app.serving.worker.FrontDoorWorker")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))  # gthread only
# Connection slots per worker (greenlets; docs/serving.md has the measured memory per idle
# connection). Past 90% of them each new connection closes the oldest idle one; with every
# slot busy in a request, a new connection gets a JSON 503 with Retry-After (app/serving/worker.py).
# Lowered to what the process's file descriptor limit allows.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "10000"))
# Idle kept-alive connections are closed after this many seconds (docs/serving.md); a
# proxy in front should close its idle upstream connections sooner than this.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "30"))
timeout = 30  # a worker whose loop is blocked this long is restarted by the arbiter
graceful_timeout = 20
# gunicorn's defaults, named: past them a request gets a JSON 414 or 431 (app/serving/worker.py).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = None  # no request lines: a query string could carry a key
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
logconfig_dict = logging_config()  # JSON lines, for gunicorn and the app alike
# SCRIPT_NAME and X-Forwarded-Proto are trusted only from the proxies in FORWARDED_ALLOW_IPS,
# none by default (gunicorn's own default trusts loopback): a 308's Location stays our path.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")
preload_app = False  # each worker builds its own engine: no pool shared across a fork

# The workers' environment, which their Settings are read from (gunicorn's own mechanism;
# this file writes nothing): the rate limiter divides by WEB_CONCURRENCY, and /metrics adds
# up every worker's counters in PROMETHEUS_MULTIPROC_DIR.
raw_env = [
    f"WEB_CONCURRENCY={workers}",
    "PROMETHEUS_MULTIPROC_DIR="
    + (os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="prometheus-")),
]


def post_worker_init(worker: object) -> None:
    """The app is loaded: under gevent, psycopg waits on the hub (service/waiting.py)."""
    from service.waiting import install

    install()


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call]


def worker_exit(server: object, worker: object) -> None:
    """Write the key uses this worker kept in memory (docs/keys.md)."""
    timeline = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("timeline")
    if timeline is not None:
        timeline.keys.flush_last_used()
