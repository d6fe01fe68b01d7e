"""Fair turns in the fold: a quiet team's event is not held behind a neighbour's backlog.

Real `python -m workers` processes fold a busy team's 50,000-event backlog (stored with
the import's COPY path, store/imports.py); once the workers are busy with it, a quiet
team sends one event. It must be folded before half the backlog is: the fold serves
teams in turns of a batch (workers/jobs.py), so the quiet team waits one turn of its
neighbour, not the neighbour's whole backlog. What is compared is an order (the
neighbour's folded count, read in the same snapshot that first sees the quiet event
folded), never a duration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from redis import Redis
from rq import Queue, Worker
from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent
from service.fold_queue import FoldQueue
from service.settings import Settings
from store.imports import event_row, import_batches
from tests.workers.processes import StartWorker, wait_for_workers
from tests.workers.support import RECEIVED, event, new_team, store

pytestmark = pytest.mark.slow

BACKLOG = 50_000
BATCH = 1000


def import_backlog(engine: Engine, team_id: int, events: int) -> None:
    """`events` tracks of 5,000 people stored unfolded with the import's COPY, 10,000 a batch."""
    made: list[PreparedEvent] = [
        event("track", f"busy-{n}", n / 100, userId=f"user-{n % 5000}", anonymousId=f"anon-{n % 5000}")
        for n in range(events)
    ]
    with import_batches(engine, team_id, RECEIVED, lambda result: None) as writer:
        for start in range(0, len(made), 10_000):
            chunk = made[start : start + 10_000]
            writer.stage([event_row(team_id, RECEIVED, e) for e in chunk], [e.type for e in chunk])
            writer.commit([], {}, {}, datetime.now(UTC))


def folded(engine: Engine, team_id: int) -> int:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :t AND folded_at IS NOT NULL"), {"t": team_id}
        )
        return int(found.scalar_one())


def wait_busy(redis: Redis, queue: Queue, count: int, timeout: float = 60) -> None:
    """Until `count` workers are seen busy at once (folding, or waiting for the team's lock)."""
    deadline = time.monotonic() + timeout
    while sum(w.get_state() == "busy" for w in Worker.all(connection=redis, queue=queue)) < count:
        assert time.monotonic() < deadline, f"{count} workers were never busy at once"
        time.sleep(0.01)


def neighbour_folded_when_quiet_was(engine: Engine, quiet: int, busy: int, timeout: float = 300) -> int:
    """How many of the busy team's events were folded when the quiet team's event first
    was (both read in one snapshot)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while True:
            done, neighbour = connection.execute(
                text(
                    """
                    SELECT NOT EXISTS (SELECT 1 FROM events WHERE team_id = :q AND folded_at IS NULL),
                           (SELECT count(*) FROM events WHERE team_id = :b AND folded_at IS NOT NULL)
                    """
                ),
                {"q": quiet, "b": busy},
            ).one()
            connection.rollback()  # a new snapshot each look
            if done:
                return int(neighbour)
            assert time.monotonic() < deadline, "the quiet team's event was never folded"
            time.sleep(0.01)


@pytest.fixture
def busy(engine: Engine) -> Iterator[int]:
    """The neighbour's team. What is left of its backlog when the test ends is deleted, its
    workers stopped (`start_worker` is set up after this, so torn down before): the next
    test that folds in its own process would otherwise fold it, for seconds, unasked."""
    team_id = new_team(engine)
    yield team_id
    with engine.begin() as connection:
        left = text("DELETE FROM events WHERE team_id = :t AND folded_at IS NULL")
        connection.execute(left, {"t": team_id})


@pytest.mark.parametrize("workers", [1, 2])
def test_a_quiet_teams_event_is_folded_before_half_a_neighbours_backlog(
    engine: Engine, redis: Redis, settings: Settings, busy: int, start_worker: StartWorker, workers: int
) -> None:
    quiet = new_team(engine)
    queue = Queue(settings.fold_queue, connection=redis)
    for n in range(workers):
        start_worker(f"w{n}", batch_size=BATCH)
    wait_for_workers(redis, queue, workers)
    import_backlog(engine, busy, BACKLOG)
    fold_queue = FoldQueue.from_settings(redis, settings)
    fold_queue.request_fold(busy)  # as the import does
    # Every worker is busy with the neighbour (the sweep queues a second job for it while
    # the first folds) before the quiet team's event arrives.
    wait_busy(redis, queue, workers)
    assert folded(engine, busy) < BACKLOG // 4, "the backlog was half folded before the test began"

    store(engine, quiet, [event("identify", "quiet-1", 0, userId="quiet", traits={"plan": "pro"})])
    fold_queue.request_fold(quiet)  # as ingest's waker does

    neighbour = neighbour_folded_when_quiet_was(engine, quiet, busy)
    assert neighbour < BACKLOG // 2, (
        f"the quiet team's event was folded only after {neighbour} of the neighbour's {BACKLOG}"
    )
