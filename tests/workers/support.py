"""Helpers for fold tests: Segment events by hand, stored straight into Postgres, folded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent, prepare_event
from store.events import store_events
from workers.fold import fold_pending, fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 2, 0, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    """The instant `minutes` after T0, as Segment writes it."""
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(kind: str, message_id: str, minute: float, **fields: Any) -> PreparedEvent:
    """A valid Segment event of `kind` at T0 + minute; keyword names are the Spec's."""
    raw: dict[str, Any] = {"type": kind, "messageId": message_id, "timestamp": at(minute)}
    if kind == "track":
        raw["event"] = "Clicked"
    raw.update(fields)
    return prepare_event(raw, RECEIVED)


def new_team(engine: Engine) -> int:
    """A fresh team: every row the fold writes is scoped by it."""
    with engine.begin() as connection:
        return int(
            connection.execute(
                text("INSERT INTO teams (name, created_at) VALUES ('fold test', :now) RETURNING id"),
                {"now": datetime.now(UTC)},
            ).scalar_one()
        )


def store(engine: Engine, team_id: int, events: Sequence[PreparedEvent]) -> None:
    store_events(engine, team_id, events, RECEIVED)


def store_and_fold(engine: Engine, team_id: int, events: Sequence[PreparedEvent]) -> None:
    """Store the events as one delivery and fold everything pending."""
    store(engine, team_id, events)
    fold_until_empty(engine, team_id)


def fold_in_steps(
    engine: Engine, team_id: int, deliveries: Sequence[Sequence[PreparedEvent]], batch_size: int
) -> None:
    """Each delivery stored, then one batch folded; whatever is left is folded at the end."""
    for delivery in deliveries:
        store(engine, team_id, delivery)
        fold_pending(engine, team_id, batch_size)
    fold_until_empty(engine, team_id, batch_size)
