"""HTTP ingest's debugger ledger outside TESTING: memory on the request path, a thread writes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app.ingest.ledger import IngestLedger
from store.rejections import CountKey, Refusal, hour_of
from tests.conftest import TeamKeys


def kept(engine: Engine, team_id: int) -> tuple[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT count(*) FROM ingest_rejections WHERE team_id = :t"), {"t": team_id}
        ).scalar_one()
        counted = connection.execute(
            text("SELECT coalesce(sum(count), 0) FROM ingest_counts WHERE team_id = :t"), {"t": team_id}
        ).scalar_one()
    return int(rows), int(counted)


def test_noting_writes_nothing_at_once_and_the_thread_writes_it_soon_after(
    engine: Engine, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = IngestLedger(engine, inline=False)
    # The thread's flush waits at this gate until the caller's side is checked: it flushes a
    # second after the first add, and a loaded machine can take that long between the adds
    # and the look (which then saw some or all of them written).
    gate = threading.Event()
    flush = ledger._flush

    def gated_flush(here: Any) -> None:
        gate.wait(30)
        flush(here)

    monkeypatch.setattr(ledger, "_flush", gated_flush)
    now = datetime.now(UTC)
    refusal = Refusal(now, "http", "/v1/track", 400, "invalid_event", "m", "mid", "track", "{}")
    for _ in range(250):
        ledger.add(team.id, refusal, CountKey(hour_of(now), "http", "track", "refused", "invalid_event"))
    ledger.add(team.id, None, CountKey(hour_of(now), "http", "track", "accepted"), 7)
    assert kept(engine, team.id) == (0, 0)  # nothing on the caller's path
    gate.set()
    deadline = time.monotonic() + 10
    while kept(engine, team.id) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kept(engine, team.id) == (100, 257)  # at most 100 pending per team; all counted
    assert ledger.pending == {}
