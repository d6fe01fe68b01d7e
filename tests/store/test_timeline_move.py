"""Moving a running service's events into the months (migration 0012's second path,
store/timeline_move.py): ingest and reads go on, and a move killed and run again loses
and duplicates nothing.

The database (`scratch`, its own) is made the way a service upgraded from 0011 has it:
events stored and folded at head, the schema taken back to 0011 (one table again) and
up to head with those events in it, so they are partition 0 (`events_legacy`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from schemas.segment import prepare_event
from store.events import store_events
from store.feed import read_feed_page
from store.migrate import alembic_config
from store.models import Base
from store.partitions import include_object
from store.timeline_move import move_timeline, timeline_move_pending
from tests.store.test_migration_0007 import scratch
from tests.workers.support import customer_of, new_team
from workers.fold import fold_until_empty

__all__ = ["scratch"]  # the fixture, shared with 0007's test

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2021, 11, 20, tzinfo=UTC)
ROW = "team_id, id, message_id, type, event_time, customer_id, folded_at"


def raw(kind: str, message_id: str, when: datetime, **fields: Any) -> dict[str, Any]:
    sent = {"type": kind, "messageId": message_id, "timestamp": when.isoformat(), **fields}
    if kind == "track":
        sent["event"] = "Viewed Invoice"
    return sent


def deliver(engine: Engine, team: int, raws: list[dict[str, Any]], received: datetime) -> int:
    events = [prepare_event(json.loads(json.dumps(r)), received) for r in raws]
    return store_events(engine, team, events, received).accepted


def history(n: int) -> list[dict[str, Any]]:
    """A person's anonymous visits, then her identify and tracks, over three months."""
    sent = [
        raw("page", f"p{i}", START + timedelta(days=i), anonymousId="phone", name="Pricing") for i in range(5)
    ]
    sent.append(
        raw(
            "identify",
            "id",
            START + timedelta(days=6),
            userId="ann",
            anonymousId="phone",
            traits={"plan": "pro"},
        )
    )
    sent += [raw("track", f"t{i}", START + timedelta(days=7 + 2 * i), userId="ann") for i in range(n)]
    return sent


def rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(f"SELECT {ROW} FROM events ORDER BY id"))]


def legacy_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM events WHERE layout = 0")).scalar_one())


def upgraded_with_events(url: str, engine: Engine) -> list[int]:
    teams = [new_team(engine), new_team(engine)]
    for team in teams:
        deliver(engine, team, history(30), START + timedelta(days=90))
        fold_until_empty(engine, team)
    command.downgrade(alembic_config(url), "0011")
    command.upgrade(alembic_config(url), "head")
    return teams


def test_a_move_killed_and_run_again_loses_and_duplicates_nothing_while_ingest_goes_on(
    scratch: tuple[str, Engine],
) -> None:
    url, engine = scratch
    teams = upgraded_with_events(url, engine)
    with engine.connect() as connection:
        assert timeline_move_pending(connection)
    before = rows(engine)
    assert legacy_count(engine) == len(before) == 2 * 36

    # While the old table holds them: a re-send is a duplicate; new events go to the months.
    received = START + timedelta(days=100)
    assert (
        deliver(engine, teams[0], [raw("track", "t3", START + timedelta(days=13), userId="ann")], received)
        == 0
    )
    assert deliver(engine, teams[0], [raw("track", "new-0", received, userId="ann")], received) == 1

    # The move in a process of its own, killed after a few steps; ingest goes on beside it.
    script = (
        "import sys, time\n"
        "from sqlalchemy import create_engine\n"
        "from store.timeline_move import move_timeline\n"
        "engine = create_engine(sys.argv[1])\n"
        "move_timeline(engine, step_rows=4, on_step=lambda s: print('step', s.moved, flush=True),\n"
        "              pause=lambda: time.sleep(0.05) or False)\n"
    )
    mover = subprocess.Popen(
        [sys.executable, "-c", script, url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    stop = threading.Event()
    ingested: list[int] = []

    def ingest() -> None:
        n = 1
        while not stop.is_set():
            at = received + timedelta(minutes=n)
            ingested.append(deliver(engine, teams[1], [raw("track", f"during-{n}", at, userId="ann")], at))
            n += 1

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        assert mover.stdout is not None
        for _ in range(5):
            assert mover.stdout.readline().startswith("step")
        mover.send_signal(signal.SIGKILL)
        mover.wait(timeout=30)
        mover.stdout.close()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert 0 < legacy_count(engine) < len(before)  # killed halfway

    after_kill = rows(engine)
    ids = [r[1] for r in after_kill]
    assert len(ids) == len(set(ids)) == len(before) + 1 + sum(ingested)
    assert [r for r in after_kill if r[1] in {b[1] for b in before}] == before  # each event once, as it was

    run = move_timeline(engine, step_rows=7)  # run again: goes on, then swaps the months in
    assert run.finished
    with engine.connect() as connection:
        assert not timeline_move_pending(connection)
        strategy = connection.execute(
            text("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'events'::regclass")
        ).scalar_one()
        assert strategy == "r"
        with warnings.catch_warnings():  # as tests/test_migrations.py: operator-class indexes
            warnings.filterwarnings("ignore", "Expression #", UserWarning)
            context = MigrationContext.configure(connection, opts={"include_object": include_object})
            diff = compare_metadata(context, Base.metadata)
    assert diff == []
    moved = rows(engine)
    assert [r for r in moved if r[1] in {b[1] for b in before}] == before
    assert len(moved) == len(after_kill)

    # After the swap: re-sends of moved events are duplicates, new ids follow the old ones,
    # the fold and the feed carry on with the moved events.
    later = received + timedelta(days=1)
    assert (
        deliver(engine, teams[0], [raw("track", "t3", START + timedelta(days=13), userId="ann")], later) == 0
    )
    assert (
        deliver(
            engine, teams[0], [raw("identify", "again", later, userId="ann", traits={"plan": "max"})], later
        )
        == 1
    )
    fold_until_empty(engine, teams[0])
    with engine.connect() as connection:
        newest = connection.execute(text("SELECT max(id) FROM events")).scalar_one()
    assert newest > max(b[1] for b in before)
    customer = customer_of(engine, teams[0], "user", "ann")
    assert customer == customer_of(engine, teams[0], "anonymous", "phone")
    with engine.connect() as connection:
        page = read_feed_page(connection, teams[0], customer, limit=100)
    assert page is not None
    assert len(json.loads(page.items_json)) == 36 + 2


def test_two_movers_at_once_neither_fails_and_each_event_moves_once(scratch: tuple[str, Engine]) -> None:
    """Two workers start together and both move: a step moves the rows it chose (and made
    the months of); what the other took meanwhile is simply not there any more."""
    url, engine = scratch
    upgraded_with_events(url, engine)
    before = rows(engine)
    errors: list[BaseException] = []
    runs: list[bool] = []

    def move() -> None:
        try:
            runs.append(move_timeline(engine, step_rows=3).finished)
        except BaseException as error:  # the test fails on it
            errors.append(error)

    movers = [threading.Thread(target=move) for _ in range(2)]
    for mover in movers:
        mover.start()
    for mover in movers:
        mover.join(timeout=120)
    assert errors == [] and runs == [True, True]
    with engine.connect() as connection:
        assert not timeline_move_pending(connection)
    assert rows(engine) == before
