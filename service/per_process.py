"""What each process makes for itself: made on first use, made again in a forked child,
flushed once when the process exits.

gunicorn forks its web processes from one arbiter, and a thread does not survive a fork:
a child that found its parent's background thread, its locks (held, maybe, by a thread
that is not there) or its Postgres connection would wait for ever or share a socket.
So the ingest lane's helpers (the fold waker, the ingest ledger, the group committer)
keep their per-process state in a `PerProcess`: the first `get()` in a process makes it
(and whatever thread it starts), and `os.register_at_fork` forgets it in the child, so
the child's first `get()` makes its own. No pid is compared per call: `get()` is an
attribute read and a `None` check, on the ingest hot path.

`at_exit` runs once per process, at interpreter exit (`atexit`), for a value made in
that process only: a child does not flush what its parent gathered, and a value is
never flushed twice. Forks outside `os.fork` (a C extension's own) are not seen; the
processes here come from gunicorn, RQ and multiprocessing, which all use `os.fork`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class PerProcess(Generic[T]):
    """A value each process makes for itself on first use; `at_exit(value)` once at exit."""

    def __init__(self, make: Callable[[], T], *, at_exit: Callable[[T], object] | None = None):
        self._make = make
        self._at_exit = at_exit
        self._value: T | None = None
        self._making = threading.Lock()
        self._exited = False
        _live.add(self)

    def get(self) -> T:
        """This process's value, made now if this process has none yet."""
        value = self._value
        if value is None:
            value = self._make_here()
        return value

    def made(self) -> T | None:
        """This process's value if it has made one (never makes it)."""
        return self._value

    def _make_here(self) -> T:
        with self._making:
            value = self._value
            if value is None:
                value = self._value = self._make()
            return value

    def _forget_in_child(self) -> None:
        # A lock some parent thread held at the fork would stay held here: a fresh one.
        self._making = threading.Lock()
        self._value = None
        self._exited = False

    def _exit(self) -> None:
        value = self._value
        if self._at_exit is None or value is None or self._exited:
            return
        self._exited = True
        try:
            self._at_exit(value)
        except Exception:  # one helper's failed flush must not skip the others'
            log.exception("flush at exit failed")


_on_stop: list[Callable[[], object]] = []


def when_stopping(callback: Callable[[], object]) -> None:
    """Run `callback` when this process is asked to stop gracefully (gunicorn's SIGTERM to
    a web process, app/serving/worker.py): for what would otherwise hold the stop up, such
    as live streams that never end by themselves."""
    _on_stop.append(callback)


def stopping() -> None:
    """This process is stopping: run what asked to be told (`when_stopping`), once each."""
    while _on_stop:
        callback = _on_stop.pop()
        try:
            callback()
        except Exception:
            log.exception("a stop callback failed")


def start_daemon(run: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread running `run` (for a `PerProcess`'s `make`: one per process)."""
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


_live: weakref.WeakSet[PerProcess[Any]] = weakref.WeakSet()


def _forked() -> None:
    for each in list(_live):
        each._forget_in_child()
    _on_stop.clear()  # the parent's: a child registers its own


@atexit.register
def _flush_at_exit() -> None:
    for each in list(_live):
        each._exit()


os.register_at_fork(after_in_child=_forked)
