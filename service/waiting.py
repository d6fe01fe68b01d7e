"""Waiting on Postgres under gevent: one watcher of the hub's own loop per wait.

psycopg picks `wait_poll` when gevent has patched `select`, and gevent's `select.poll`
builds a poll object, a watcher per file descriptor and a timer for the interval on
every wait: more CPU than libpq spends on a small statement (the ingest INSERT waits two
to four times, a read route ~9 times a request). `install()` puts `cooperative_wait` in
its place for every connection of the process (psycopg's `Connection.wait` calls
`psycopg.waiting.wait`); the gunicorn worker calls it once the app is loaded
(app/serving/gunicorn_config.py `post_worker_init`). Outside gevent it does nothing.

A wait may also watch the client of the request the greenlet serves (`watch_client`,
which the read engine of app/resources.py sets up): if that client closes its socket
while Postgres is still working on one of the watched connections, the statement is
cancelled in Postgres instead of running on for nobody (docs/serving.md).
"""

from __future__ import annotations

import _socket
import logging
import socket
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.waiting
from psycopg.abc import RV, PQGen
from psycopg.waiting import Ready

log = logging.getLogger(__name__)

_psycopg_wait: Callable[..., Any] | None = None  # psycopg's own choice, kept for timeouts

_READ = 1  # libev's READ bit, psycopg's Wait.R
_CANCEL_SECONDS = 2.0  # bound on sending the cancel request itself


@dataclass
class ClientWatch:
    """The client socket of the request this greenlet serves, and the Postgres connections
    (by socket) whose running statement is cancelled if that client goes away."""

    client_fd: int
    connections: dict[int, psycopg.Connection[Any]] = field(default_factory=dict)
    gone: bool = False  # the client closed its socket; its statement was cancelled
    talking: bool = False  # the client sent bytes (a pipelined request): no EOF to watch for

    def add(self, connection: psycopg.Connection[Any]) -> None:
        """Watch `connection`'s statements for this client."""
        self.connections[connection.fileno()] = connection


_client_watch: ContextVar[ClientWatch | None] = ContextVar("timeline_client_watch", default=None)


def watch_client(client_fd: int) -> ClientWatch:
    """This greenlet's watch of the client on `client_fd` (made on first call); add the
    connections to watch to it, and call `unwatch_client` when the request ends."""
    watch = _client_watch.get()
    if watch is None or watch.client_fd != client_fd:
        watch = ClientWatch(client_fd)
        _client_watch.set(watch)
    return watch


def current_client_watch() -> ClientWatch | None:
    """This greenlet's watch, if its request reads under one."""
    return _client_watch.get()


def unwatch_client() -> ClientWatch | None:
    """End this greenlet's watch (the request is answered); the watch it had, if any."""
    watch = _client_watch.get()
    _client_watch.set(None)
    return watch


def client_closed(client_fd: int) -> bool:
    """Whether the peer of a readable socket closed it (EOF or reset), not just sent bytes.

    A peek on the raw descriptor: nothing is consumed, and the socket's blocking mode and
    gevent's own wrapper are left as they are.
    """
    try:
        peek = _socket.socket(fileno=client_fd)
    except OSError:
        return True  # the descriptor is no longer a socket: its client is gone
    try:
        return peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset, or the descriptor is no longer a connected socket
    finally:
        peek.detach()


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
    watch = _client_watch.get()
    watched = watch.connections.get(fileno) if watch is not None else None
    if watch is not None and watched is not None and not watch.talking and not watch.gone:
        return _wait_watching_client(gen, fileno, watch, watched)
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


def _wait_watching_client(
    gen: PQGen[RV], fileno: int, watch: ClientWatch, connection: psycopg.Connection[Any]
) -> RV:
    """`cooperative_wait`, also woken when the client's socket turns readable: on EOF the
    statement is cancelled in Postgres (psycopg's `cancel_safe`) and the wait goes on for
    Postgres's answer, which is the QueryCanceled error the caller then raises."""
    from gevent import get_hub
    from gevent.hub import Waiter

    hub = get_hub()
    try:
        wait_for = next(gen)
        while True:
            postgres = hub.loop.io(fileno, int(wait_for))
            client = None if watch.gone or watch.talking else hub.loop.io(watch.client_fd, _READ)
            waiter: Waiter[bool] = Waiter(hub)
            postgres.start(waiter.switch, True)
            if client is not None:
                client.start(waiter.switch, False)
            try:
                from_postgres = waiter.get()
            finally:
                postgres.stop()
                if client is not None:
                    client.stop()
            if from_postgres:
                wait_for = gen.send(Ready(int(wait_for)))
            elif client_closed(watch.client_fd):
                watch.gone = True
                log.info("client went away during a read: cancelling its statement")
                try:
                    connection.cancel_safe(timeout=_CANCEL_SECONDS)
                except Exception as error:  # the statement then ends at its own time bound
                    log.warning("could not cancel a statement: %s", type(error).__name__)
            else:
                watch.talking = True
    except StopIteration as done:
        value: RV = done.value
        return value
