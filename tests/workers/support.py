"""Helpers for fold tests: Segment events by hand, stored straight into Postgres, folded."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from schemas.segment import PreparedEvent, prepare_event
from store.events import store_events
from tests.workers.model import TeamState, received_of, snapshot
from workers.fold import fold_pending, fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 2, 0, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    """The instant `minutes` after T0, as Segment writes it."""
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(
    kind: str, message_id: str, minute: float | None, received: float | None = None, **fields: Any
) -> PreparedEvent:
    """A valid Segment event of `kind` at T0 + minute (None: no timestamp); keyword names
    are the Spec's. `received`: when ingest receives it, in minutes after T0 (by default
    an hour after its event time: `model.received_of`)."""
    raw: dict[str, Any] = {"type": kind, "messageId": message_id}
    if minute is not None:
        raw["timestamp"] = at(minute)
    if kind == "track":
        raw["event"] = "Clicked"
    raw.update(fields)
    if received is not None:
        raw["_received"] = (T0 + timedelta(minutes=received)).isoformat()
    elif minute is None:
        raw["_received"] = RECEIVED.isoformat()
    receipt = datetime.fromisoformat(raw["_received"]) if "_received" in raw else RECEIVED
    return prepare_event(raw, receipt)


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
    """Store each event with its own receipt (`model.received_of`)."""
    by_receipt: dict[datetime, list[PreparedEvent]] = {}
    for e in events:
        by_receipt.setdefault(received_of(e), []).append(e)
    for receipt, some in by_receipt.items():
        store_events(engine, team_id, some, receipt)


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


def state(engine: Engine, team_id: int) -> TeamState:
    """The team's folded state as agents see it, keyed by each customer's ids."""
    with engine.connect() as connection:
        return snapshot(connection, team_id)


def deliver(engine: Engine, team_id: int, *deliveries: Sequence[PreparedEvent]) -> TeamState:
    """Each delivery stored then folded, in order; the resulting state."""
    for delivery in deliveries:
        store_and_fold(engine, team_id, delivery)
    return state(engine, team_id)


def customer_of(engine: Engine, team_id: int, kind: str, value: str) -> int | None:
    """The customer id an identity resolves to (what the lookup API answers)."""
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT customer_id FROM identities WHERE team_id = :t AND kind = :k AND value = :v"),
            {"t": team_id, "k": kind, "v": value},
        ).scalar()
    return int(found) if found is not None else None


def journeys(customers: int, seed: int = 4) -> list[PreparedEvent]:
    """A realistic, shuffled backlog: visitors browse, identify, join companies, alias,
    share devices, re-send, and a few ask to be deleted; many events arrive late."""
    rng = random.Random(seed)
    made: list[PreparedEvent] = []
    for c in range(customers):
        anon, user, minute = f"anon-{c}", f"user-{c}", rng.uniform(0, 600)
        steps = rng.randint(4, 30)
        for n in range(steps):
            minute += rng.uniform(0.1, 5)
            mid = f"c{c}-{n}"
            if n < 3 or c % 5 == 0:
                made.append(event("page", mid, minute, anonymousId=anon, name="Pricing"))
            elif n == 3:
                traits = {
                    "email": f"{user}@example.com",
                    "firstName": "Ada",
                    "plan": rng.choice(["free", "pro"]),
                }
                made.append(event("identify", mid, minute, userId=user, anonymousId=anon, traits=traits))
            elif n == 4 and c % 3 == 0:
                traits = {"name": f"Company {c % 7}", "seats": str(n)}
                made.append(event("group", mid, minute, userId=user, groupId=f"g{c % 7}", traits=traits))
            elif n == 5 and c % 11 == 0:
                made.append(event("alias", mid, minute, userId=user, previousId=f"user-{c - 1}"))
            elif n == 6 and c % 13 == 0:  # a second person on this device
                made.append(event("identify", mid, minute, userId=f"user-{c + 1}", anonymousId=anon))
            elif n == 7 and c % 17 == 0:
                made.append(event("delete", mid, minute, userId=user))
            else:
                context = {"traits": {"plan": "pro"}} if n % 9 == 0 else {}
                made.append(event("track", mid, minute, userId=user, anonymousId=anon, context=context))
    resent = rng.sample(made, len(made) // 20)
    arrival = made + resent
    rng.shuffle(arrival)
    return arrival
