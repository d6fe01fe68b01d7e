"""Storing received events: durable, whole, once per (team, messageId, type)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import insert

from schemas.segment import PreparedEvent
from store.models import Event

_events = Event.__table__


@dataclass(frozen=True)
class StoreResult:
    """How many events were new and how many were already stored."""

    accepted: int
    duplicates: int


def insert_events(
    connection: Connection, team_id: int, events: Sequence[PreparedEvent], received_at: datetime
) -> StoreResult:
    """Insert events in the caller's transaction; duplicates are skipped, not errors."""
    if not events:
        return StoreResult(0, 0)
    rows = [
        {
            "team_id": team_id,
            "message_id": event.message_id,
            "type": event.type,
            "event_name": event.event_name,
            "user_id": event.user_id,
            "anonymous_id": event.anonymous_id,
            "group_id": event.group_id,
            "previous_id": event.previous_id,
            "event_time": event.event_time,
            "received_at": received_at,
            "tiebreak": event.tiebreak,
            "raw": event.raw,
        }
        for event in events
    ]
    statement = (
        insert(_events)
        .on_conflict_do_nothing(index_elements=["team_id", "message_id", "type"])
        .returning(_events.c.id)
    )
    inserted = len(connection.execute(statement, rows).all())
    return StoreResult(accepted=inserted, duplicates=len(rows) - inserted)


def store_events(
    engine: Engine, team_id: int, events: Sequence[PreparedEvent], received_at: datetime
) -> StoreResult:
    """Insert events and commit: when this returns, they are durable."""
    with engine.begin() as connection:
        return insert_events(connection, team_id, events, received_at)
