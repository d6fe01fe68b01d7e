"""Waiting on Postgres under gevent: one watcher of the hub's own loop per wait.

psycopg picks `wait_poll` when gevent has patched `select`, and gevent's `select.poll`
builds a poll object, a watcher per file descriptor and a timer for the interval on
every wait: more CPU than libpq spends on a small statement (the ingest INSERT waits two
to four times, a read route ~9 times a request). `install()` puts `cooperative_wait` in
its place for every connection of the process (psycopg's `Connection.wait` calls
`psycopg.waiting.wait`); the gunicorn worker calls it once the app is loaded
(app/gunicorn_config.py `post_worker_init`). Outside gevent it does nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import psycopg.waiting
from psycopg.abc import RV, PQGen
from psycopg.waiting import Ready

_psycopg_wait: Callable[..., Any] | None = None  # psycopg's own choice, kept for timeouts


def gevent_patched() -> bool:
    """Whether gevent has patched this process's `select` (its gunicorn worker does)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("select"))


def install() -> bool:
    """Use `cooperative_wait` for psycopg in this process if gevent patched it; idempotent."""
    global _psycopg_wait
    if not gevent_patched():
        return False
    if psycopg.waiting.wait is not cooperative_wait:
        _psycopg_wait = psycopg.waiting.wait
        psycopg.waiting.wait = cooperative_wait
    return True


def cooperative_wait(gen: PQGen[RV], fileno: int, interval: float = 0.0, timeout: float | None = None) -> RV:
    """psycopg's `wait(gen, fileno, interval, timeout)`, on the gevent hub.

    psycopg's `Wait` and `Ready` values are libev's READ (1) and WRITE (2) bits, so what
    the generator waits for is what the watcher watches, and what it is told is ready
    (both, after a wait for either: libpq's reads and flushes are non-blocking, so a side
    that was not ready costs nothing). `interval` only wakes psycopg's own loops to
    notice signals; the hub needs no such wake. A wait with a `timeout` (psycopg's
    cancel and close paths) goes to psycopg's own function, which raises its timeout.
    """
    if timeout is not None and _psycopg_wait is not None:
        result: RV = _psycopg_wait(gen, fileno, interval=interval, timeout=timeout)
        return result
    from gevent import get_hub

    hub = get_hub()
    try:
        wait_for = next(gen)
        while True:
            hub.wait(hub.loop.io(fileno, int(wait_for)))
            wait_for = gen.send(Ready(int(wait_for)))
    except StopIteration as done:
        value: RV = done.value
        return value
