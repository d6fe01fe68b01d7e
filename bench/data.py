"""What the benchmarks send and store: realistic Segment events, made fast.

- `track_body`: the single-event POST of the ingest figures, a Segment track call as
  analytics.js sends it (about 600 bytes), with a fresh messageId per request.
- `batch_body`: a `/v1/batch` of 100 such events, as the SDKs send them.
- `customer_journeys`: a fold backlog: customers who browse anonymously, identify,
  join a company, track actions, some alias; their events interleaved by time as they
  would arrive, so a batch of 1,000 holds many customers and every type.
- `copy_events`: those events into `events` with COPY, stored exactly as ingest stores
  them (the columns come from `schemas.segment.prepare_event`), their months made first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.months import ensure_span
from schemas.segment import PreparedEvent, prepare_event
from store.imports import EVENT_COLUMNS

CONTEXT = {
    "library": {"name": "analytics.js", "version": "2.11.1"},
    "page": {
        "path": "/academy/",
        "referrer": "",
        "search": "",
        "title": "Analytics Academy",
        "url": "https://segment.com/academy/",
    },
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_0) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/46.0.2490.86 Safari/537.36",
    "ip": "108.0.78.21",
}


def track_body(run: str) -> str:
    """A single track event; "{n}" is the request's number, "{u}" its user's."""
    event = {
        "type": "track",
        "event": "Course Clicked",
        "userId": "user-{u}",
        "anonymousId": "anon-{u}",
        "messageId": f"{run}-" + "{n}",
        "timestamp": "2024-03-01T12:00:00.249Z",
        "properties": {"title": "Intro to Analytics", "course": 7, "plan": "pro"},
        "context": CONTEXT,
        "integrations": {},
        "sentAt": "2024-03-01T12:00:01.169Z",
    }
    return json.dumps(event, separators=(",", ":"))


BATCH_EVENTS = 100  # analytics-python and analytics-node flush at 100 events (their default)


def batch_body(run: str, size: int = BATCH_EVENTS) -> str:
    """A `/v1/batch` of `size` track events with messageIds "{run}-{n}-{i}", as an SDK flushes."""
    events = []
    for index in range(size):
        event = json.loads(track_body(run))  # its "{n}" and "{u}" are inside strings
        event["messageId"] = f"{run}-{{n}}-{index}"
        events.append(event)
    return json.dumps({"batch": events, "sentAt": "2024-03-01T12:00:01.169Z"}, separators=(",", ":"))


@dataclass(frozen=True)
class BacklogEvent:
    """One generated event: the customer it is meant for and the Segment payload."""

    customer: int
    payload: dict[str, Any]


def customer_journeys(
    total: int, *, seed: int = 7, events_per_customer: int = 20, first_customer: int = 0
) -> list[BacklogEvent]:
    """About `total` events of total/events_per_customer customers, in arrival order.

    Customers are numbered from `first_customer`: a large backlog is made of several
    calls with disjoint customers (and so disjoint messageIds), each small in memory.
    """
    rng = random.Random(seed)
    customers = max(1, total // events_per_customer)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    span = timedelta(hours=6).total_seconds()
    groups = max(1, customers // 20)
    made: list[tuple[datetime, BacklogEvent]] = []
    per = [events_per_customer] * customers
    for i in range(total - events_per_customer * customers):
        per[i % customers] += 1
    for customer, count in enumerate(per, start=first_customer):
        anon = f"anon-{customer}"
        user = f"user-{customer}" if customer % 10 < 7 else None  # 70% identify
        at = start + timedelta(seconds=rng.random() * span)
        for step in range(count):
            at += timedelta(seconds=1 + rng.random() * 30)
            base: dict[str, Any] = {
                "messageId": f"bk-{customer}-{step}",
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "anonymousId": anon,
                "context": CONTEXT,
            }
            if user is None or step < 3:
                event = {**base, "type": "page", "name": "Academy", "properties": {"path": "/academy/"}}
            elif step == 3:
                traits: dict[str, Any] = {
                    "email": f"{user}@example.com",
                    "firstName": "Ada",
                    "lastName": f"L{customer}",
                }
                event = {**base, "type": "identify", "userId": user, "traits": traits}
            elif step == 4:
                group = customer % groups
                traits = {"name": f"Company {group}", "industry": "Software", "employees": 42}
                event = {**base, "type": "group", "userId": user, "groupId": f"g-{group}", "traits": traits}
            elif step == 5 and customer % 50 == 0:
                event = {**base, "type": "alias", "userId": user, "previousId": f"old-{customer}"}
            elif step % 4 == 0:
                event = {**base, "type": "page", "userId": user, "name": "Pricing", "properties": {}}
            else:
                event = {
                    **base,
                    "type": "track",
                    "userId": user,
                    "event": "Course Clicked",
                    "properties": {"title": "Intro to Analytics", "step": step},
                }
            made.append((at, BacklogEvent(customer, event)))
    made.sort(key=lambda pair: pair[0])
    return [event for _, event in made]


def prepared(events: Sequence[BacklogEvent], received_at: datetime) -> list[PreparedEvent]:
    """The events as ingest prepares them (validated, messageId, event time)."""
    return [prepare_event(dict(event.payload), received_at) for event in events]


def event_rows(
    team_id: int, events: Sequence[PreparedEvent], received_at: datetime
) -> Iterator[tuple[Any, ...]]:
    for event in events:
        yield (
            team_id,
            event.message_id,
            event.type,
            event.event_name,
            event.user_id,
            event.anonymous_id,
            event.group_id,
            event.previous_id,
            event.event_time,
            received_at,
            event.tiebreak,
            json.dumps(event.raw, separators=(",", ":")),
        )


def copy_events(url: str, team_id: int, events: Sequence[PreparedEvent], received_at: datetime) -> None:
    """Store events unfolded, with COPY, in one transaction (their months made first)."""
    if events:
        times = [event.event_time for event in events]
        ensure_span(url, min(times), max(times))
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in event_rows(team_id, events, received_at):
                copy.write_row(row)
