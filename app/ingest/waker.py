"""Waking the fold off the request path: one background thread per web process.

A request that committed events marks its team dirty (`Waker.mark`: memory only, no
I/O) and answers. The process's waker thread takes the dirty teams at most every
`interval` seconds and calls `service.fold_queue.request_fold` for each (a per-team flag
naming the waiting fold job; the job clears it before it reads), so no wake-up is lost.
The mark happens after the commit, and the thread takes a team only after its mark, so
every committed event is followed by a `request_fold` for its team; marks that arrive
while a round runs go to the next round. Many requests of one team inside an interval
share one Redis round trip instead of paying one each.

Redis failing: the teams stay dirty, the thread backs off (`backoff` seconds) and tries
again; it never dies of it. The worker's periodic sweep covers whatever a process that
exits with dirty teams leaves behind (an exit flushes them too, best effort).

The thread starts lazily, on the first mark in a process (so after gunicorn's fork), and
is a daemon; a forked child starts its own, and each process flushes once at exit
(`service.per_process`). `inline=True` (the app's TESTING mode) calls `request_fold` in the request
instead, as a synchronous flush: tests that post and then run the queued fold jobs see
every event folded, with nothing to wait for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from service.per_process import PerProcess, start_daemon

log = logging.getLogger(__name__)

# A team marked dirty is woken at most this long afterwards (added to the fold's lag).
# Each round is one Redis round trip per dirty team (~1-4% of a busy web process). Tried:
# 50 ms. It did not move ingest's CPU per request beyond noise, but a fold job that
# finishes its backlog exits and the next one waits for this round: end to end with
# /v1/batch fell from ~6,500 to ~1,000 events/s steady (bin/bench).
WAKE_INTERVAL_SECONDS = 0.01
# After Redis fails, wait this long before trying again (a Redis that hangs would cost
# its connect timeout per attempt). The teams stay dirty meanwhile; the sweep covers too.
REDIS_BACKOFF_SECONDS = 1.0
# At process exit, how long a last flush may take.
EXIT_FLUSH_SECONDS = 2.0

WakeFn = Callable[[int], object]


@dataclass
class _Here:
    """A waker's state in one process: its dirty teams, its thread's signal and lock."""

    dirty: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    signal: threading.Event = field(default_factory=threading.Event)
    flushing: threading.Lock = field(default_factory=threading.Lock)  # one round at a time


class Waker:
    """Marks teams dirty and wakes their fold from a background thread (or inline)."""

    def __init__(
        self,
        wake: WakeFn,
        *,
        inline: bool = False,
        interval: float = WAKE_INTERVAL_SECONDS,
        backoff: float = REDIS_BACKOFF_SECONDS,
        on_failure: Callable[[int, BaseException], None] | None = None,
    ):
        self._wake = wake
        self.inline = inline
        self.interval = interval
        self.backoff = backoff
        self._on_failure = on_failure
        self._skip_until = 0.0  # inline mode's back-off after a failure
        self._here = PerProcess(self._start, at_exit=self._flush_at_exit)

    # --- the request side -------------------------------------------------------------

    def mark(self, team_id: int) -> None:
        """The team has committed events: make sure its fold is woken (after this call)."""
        if self.inline:
            self._wake_inline(team_id)
            return
        here = self._here.get()
        with here.lock:
            here.dirty.add(team_id)
        if not here.signal.is_set():  # set already: the coming round takes this team too
            here.signal.set()

    def _wake_inline(self, team_id: int) -> None:
        if time.monotonic() < self._skip_until:
            return
        try:
            self._wake(team_id)
        except (RedisError, OSError) as error:
            self._skip_until = time.monotonic() + self.backoff
            self._failed(team_id, error)

    # --- the thread side ----------------------------------------------------------------

    def _start(self) -> _Here:
        """This process's state, and its thread (on the first mark in the process)."""
        here = _Here()
        start_daemon(lambda: self._run(here), "fold-waker")
        return here

    def _run(self, here: _Here) -> None:
        while True:
            try:
                here.signal.wait()
                time.sleep(self.interval)  # let the marks of this interval gather
                here.signal.clear()
                if not self._flush(here):
                    time.sleep(self.backoff)
            except Exception:  # never die: a dead waker would leave every fold to the sweep
                log.exception("fold waker round failed")
                time.sleep(self.backoff)

    def flush(self) -> bool:
        """Wake the fold of every dirty team now; False if a wake failed (the rest stay dirty)."""
        here = self._here.made()
        return True if here is None else self._flush(here)

    def _flush(self, here: _Here) -> bool:
        with here.flushing:
            with here.lock:
                teams, here.dirty = here.dirty, set()
            ok = True
            for index, team_id in enumerate(sorted(teams)):
                try:
                    self._wake(team_id)
                except Exception as error:  # Redis down, or a bug: the team stays dirty
                    ok = False
                    self._failed(team_id, error)
                    left = sorted(teams)[index:]
                    with here.lock:
                        here.dirty.update(left)
                    here.signal.set()
                    break
            return ok

    def _flush_at_exit(self, here: _Here) -> None:
        """A worker that exits (gunicorn's graceful stop) wakes what it marked, best effort."""
        if not here.dirty:
            return
        done = threading.Thread(target=self._flush, args=(here,), daemon=True)
        done.start()
        done.join(EXIT_FLUSH_SECONDS)

    def pending(self) -> set[int]:
        """The teams marked but not yet woken (for tests and diagnostics)."""
        here = self._here.made()
        if here is None:
            return set()
        with here.lock:
            return set(here.dirty)

    def _failed(self, team_id: int, error: BaseException) -> None:
        log.warning("could not queue fold for team %s: %s", team_id, type(error).__name__)
        if self._on_failure is not None:
            self._on_failure(team_id, error)
