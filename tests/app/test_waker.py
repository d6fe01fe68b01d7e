"""The fold waker (app/ingest/waker.py): every mark is followed by a request_fold, Redis may fail.

No timing assertions: the thread tests wait (bounded) for an outcome, never measure.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.ingest.waker import Waker
from service.fold_queue import FoldQueue

WAIT_SECONDS = 10.0


class Recorder:
    """A wake function that records the teams it was called for, and can fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.failing = False
        self.called = threading.Event()

    def __call__(self, team_id: int) -> None:
        if self.failing:
            self.called.set()
            raise RedisConnectionError("down")
        self.calls.append(team_id)
        self.called.set()


def test_inline_wakes_in_the_call() -> None:
    wake = Recorder()
    waker = Waker(wake, inline=True)
    waker.mark(7)
    assert wake.calls == [7]
    assert waker.pending() == set()


def test_inline_redis_failure_is_reported_and_backs_off() -> None:
    wake = Recorder()
    failures: list[int] = []
    waker = Waker(wake, inline=True, backoff=3600, on_failure=lambda team, error: failures.append(team))
    wake.failing = True
    waker.mark(1)  # does not raise
    wake.failing = False
    waker.mark(2)  # inside the back-off: skipped, the sweep covers it
    assert failures == [1]
    assert wake.calls == []


def test_flush_wakes_each_dirty_team_once() -> None:
    wake = Recorder()
    waker = Waker(wake, interval=3600)  # the thread would wait an hour: flush() does it
    for team in (3, 1, 3, 2, 1):
        waker.mark(team)
    assert waker.flush()
    assert sorted(wake.calls) == [1, 2, 3]
    assert waker.pending() == set()
    assert waker.flush()  # nothing marked since: nothing to do
    assert sorted(wake.calls) == [1, 2, 3]


def test_failed_flush_keeps_the_teams_dirty_for_the_next_round() -> None:
    wake = Recorder()
    failures: list[int] = []
    waker = Waker(wake, interval=3600, on_failure=lambda team, error: failures.append(team))
    waker.mark(1)
    waker.mark(2)
    wake.failing = True
    assert not waker.flush()
    assert waker.pending() == {1, 2}
    assert failures == [1]
    wake.failing = False
    assert waker.flush()
    assert sorted(wake.calls) == [1, 2]
    assert waker.pending() == set()


def test_the_thread_wakes_marked_teams() -> None:
    wake = Recorder()
    waker = Waker(wake, interval=0.001)
    waker.mark(5)
    assert wake.called.wait(WAIT_SECONDS)
    assert wake.calls[0] == 5


def test_the_thread_survives_redis_failures_and_retries() -> None:
    wake = Recorder()
    wake.failing = True
    waker = Waker(wake, interval=0.001, backoff=0.001)
    waker.mark(9)
    assert wake.called.wait(WAIT_SECONDS)  # it tried, and failed
    wake.called.clear()
    wake.failing = False
    assert wake.called.wait(WAIT_SECONDS)  # and tried again, on its own
    assert 9 in wake.calls


def test_the_thread_survives_an_unexpected_error() -> None:
    calls: list[int] = []
    done = threading.Event()

    def wake(team_id: int) -> Any:
        calls.append(team_id)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        done.set()

    waker = Waker(wake, interval=0.001, backoff=0.001)
    waker.mark(1)
    waker.mark(2)
    assert done.wait(WAIT_SECONDS) or waker.flush()
    waker.mark(3)
    assert done.wait(WAIT_SECONDS)


def test_a_real_redis_gets_the_flag_and_one_job(redis: Redis, fold_queue: FoldQueue) -> None:
    team_id = 10_000_001
    queue = fold_queue.queue
    redis.delete(fold_queue.flag_key(team_id))
    before = queue.count
    waker = Waker(fold_queue.request_fold, interval=3600)
    waker.mark(team_id)
    waker.mark(team_id)
    assert waker.flush()
    try:
        assert redis.exists(fold_queue.flag_key(team_id))
        assert queue.count == before + 1
    finally:
        for job in queue.jobs:
            if job.args == (team_id,):
                job.delete()
        redis.delete(fold_queue.flag_key(team_id))


@pytest.mark.parametrize("inline", [True, False])
def test_unreachable_redis_never_raises(inline: bool) -> None:
    from devstack.embedded import free_port

    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    waker = Waker(FoldQueue(redis, "q", "p:").request_fold, inline=inline, interval=3600)
    waker.mark(1)
    if not inline:
        assert not waker.flush()
        assert waker.pending() == {1}
        waker._here.get().dirty.clear()  # nothing left for the exit flush to try against a closed port
