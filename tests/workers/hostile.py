"""Hostile events for fold tests: values ingest refuses today, stored as old events were."""

from __future__ import annotations

import random
import string
from typing import Any

from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent
from tests.workers.support import event

# Over a btree entry's ~2.7 KB, and incompressible (Postgres compresses a long entry first).
HUGE = "".join(random.Random(12).choices(string.ascii_letters + string.digits, k=3_000)) + "@example.com"


def incompressible(length: int, seed: int) -> str:
    return "".join(random.Random(seed).choices(string.ascii_letters + string.digits, k=length))


def poisoned(message_id: str, minute: float, user: str, **traits: Any) -> PreparedEvent:
    """An identify whose traits ingest would refuse today, as stored before the bound."""
    made = event("identify", message_id, minute, userId=user, traits={"plan": "pro"})
    made.raw["traits"] = {"plan": "pro", **traits}
    return made


def failures(engine: Engine, team_id: int) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT e.message_id, f.sqlstate, f.message FROM fold_failures f "
                "JOIN events e ON e.team_id = f.team_id AND e.id = f.event_id "
                "WHERE f.team_id = :t ORDER BY f.event_id"
            ),
            {"t": team_id},
        ).all()
    return [(str(m), str(s), str(msg)) for m, s, msg in rows]
