"""Retention's expiry as the worker processes run it: a pass at start, one worker at a time
(store/retention.py, docs/retention.md)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis
from rq import Queue
from sqlalchemy import Engine, text

from schemas.segment import prepare_event
from service.settings import Settings
from store.events import store_events
from store.retention import set_retention
from tests.workers.processes import StartWorker, wait_for_workers
from tests.workers.support import new_team
from workers.fold import fold_until_empty

OLD = datetime(1990, 1, 1, tzinfo=UTC)


def count(engine: Engine, statement: str, team: int) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(statement), {"t": team}).scalar_one())


def test_two_workers_expire_a_teams_old_events_once_and_keep_the_rest(
    engine: Engine, redis: Redis, settings: Settings, start_worker: StartWorker, tmp_path: Path
) -> None:
    team = new_team(engine)
    new_team(engine)  # keeps everything: no month can go, the team's retention is by rows
    with engine.begin() as connection:
        set_retention(connection, team, 30, None)
    now = datetime.now(UTC)
    old = [
        prepare_event(
            {"type": "identify", "userId": f"u{n % 7}", "messageId": f"old-{n}", "traits": {"n": n}},
            OLD + timedelta(minutes=n),
        )
        for n in range(300)
    ]
    recent = [
        prepare_event({"type": "track", "userId": f"u{n}", "event": "E", "messageId": f"new-{n}"}, now)
        for n in range(7)
    ]
    store_events(engine, team, old, OLD + timedelta(days=1))
    store_events(engine, team, recent, now)
    fold_until_empty(engine, team)
    queue = Queue(settings.fold_queue, connection=redis)
    start_worker("a", batch_size=100)
    start_worker("b", batch_size=100)
    wait_for_workers(redis, queue, 2)

    left = "SELECT count(*) FROM events WHERE team_id = :t AND event_time < now() - interval '30 days'"
    deadline = time.monotonic() + 60
    while count(engine, left, team) > 0:
        assert time.monotonic() < deadline, (
            f"{count(engine, left, team)} expired events still stored after 60 s"
        )
        time.sleep(0.1)

    assert count(engine, "SELECT count(*) FROM events WHERE team_id = :t", team) == len(recent)
    orphans = """SELECT count(*) FROM trait_history th WHERE th.team_id = :t AND NOT EXISTS (
                     SELECT 1 FROM events e WHERE e.team_id = th.team_id AND e.id = th.event_id)"""
    assert count(engine, orphans, team) == 0
    assert count(engine, "SELECT count(*) FROM customer_traits WHERE team_id = :t", team) == 7  # kept
    # The workers' logs say what their passes erased of this team: each event once in all.
    erased = 0
    for path in tmp_path.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("{") and "retention: " in line and "erased" in line:
                erased += int(json.loads(line).get("erased", {}).get(str(team), 0))
    assert erased == len(old)
