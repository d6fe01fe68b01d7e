"""A customer's timeline as it grows: the fold's notice of what it folded, and the reads
of a live stream (`GET /api/v1/customers/{id}/stream`, docs/read-api.md "Live").

The fold tells the web processes what it folded with Postgres's own `NOTIFY`, from the
batch's transaction: a notice is delivered when, and only when, the batch commits, to
every session that `LISTEN`s on `FOLDED_CHANNEL` (one per web process). Its payload is
`team customer:event customer:event ...` for the batch's events that landed on a
customer's timeline, at most `PAIRS_PER_NOTICE` pairs a notice (a payload must stay under
Postgres's 8,000 bytes).

A stream's position is an event's `(folded_at, id)`: the order in which events reached
the customer's timeline, not their event time (a late event dated last week is news to
an agent too). `folded_at` is the folding worker's clock, read once the team's fold lock
is held (workers/fold.py), so a team's batches are in that order. What the stream sends
is the feed item as the feed shows it (`store/answers/feed_item.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from store.answers.feed_item import FEED_ITEM_SQL
from store.fold.pending import PendingEvent
from store.snapshot import snapshot
from store.statements import prepared

FOLDED_CHANNEL = "timeline_folded"
# customer:event pairs of up to 19 digits each: 180 x 40 bytes stays under 8,000.
PAIRS_PER_NOTICE = 180
# Items a catch-up read returns at most; a stream reads again until it is caught up.
CATCH_UP_ITEMS = 200

# The batch's events by primary key, one probe per id (the fold's own way to read its
# batch, store/fold/derived.py `BATCH_EVENTS`): `id = ANY(:events)` was planned as a scan
# of the team's events, which took the fold from 19,600 to 4,100 events/s.
_BATCH = """
    unnest(CAST(:events AS bigint[])) AS x(wanted)
    CROSS JOIN LATERAL (SELECT * FROM events WHERE team_id = :team AND id = x.wanted LIMIT 1) AS events
"""
# The fold knows its events' times (the partition key): each probe reads one month.
_FOLDED_BATCH = """
    unnest(CAST(:events AS bigint[]), CAST(:times AS timestamptz[])) AS x(wanted, at)
    CROSS JOIN LATERAL (
        SELECT * FROM events WHERE team_id = :team AND id = x.wanted AND event_time = x.at LIMIT 1
    ) AS events
"""

_NOTIFY_SQL = f"""
    SELECT count(pg_notify('{FOLDED_CHANNEL}', notice)) FROM (
        SELECT :team || ' ' || string_agg(customer_id || ':' || id, ' ' ORDER BY id) AS notice
        FROM (
            SELECT customer_id, id, (row_number() OVER (ORDER BY id) - 1) / {PAIRS_PER_NOTICE} AS part
            FROM {_FOLDED_BATCH}
            WHERE customer_id IS NOT NULL
        ) folded
        GROUP BY part
    ) notices
"""


def notify_folded(connection: Connection, team_id: int, events: Sequence[PendingEvent]) -> None:
    """Tell the listening web processes, when this transaction commits, which of these
    (just folded) events are on which customer's timeline."""
    if not events:
        return
    statement, _ = prepared(_NOTIFY_SQL)
    connection.execute(
        statement,
        {"team": team_id, "events": [e.id for e in events], "times": [e.event_time for e in events]},
    )


# A position's instant as whole microseconds since the epoch, in integers: no float on the
# way, so a resumed stream starts exactly after the item it names.
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class StreamPosition:
    """Where a stream is: the last sent event's `(folded_at, id)`."""

    folded_at: datetime
    event_id: int

    def text(self) -> str:
        """As an SSE `id:` (and so the `Last-Event-ID` a client resumes with)."""
        return f"{(self.folded_at - _UNIX) // _MICROSECOND}-{self.event_id}"

    @classmethod
    def parse(cls, raw: str) -> StreamPosition | None:
        """A position from `text()`, or None for anything else."""
        micros, dash, event = raw.strip().partition("-")
        if not (dash and micros.isascii() and micros.isdigit() and event.isascii() and event.isdigit()):
            return None
        if len(micros) > 17 or len(event) > 19:
            return None
        return cls(_UNIX + int(micros) * _MICROSECOND, int(event))


@dataclass(frozen=True)
class StreamItem:
    customer_id: int
    position: StreamPosition
    item_json: str  # one feed item, as the feed shows it


_COLUMNS = f"customer_id, folded_at, id, {FEED_ITEM_SQL}::text AS item"

_BY_IDS_SQL = f"""
    SELECT {_COLUMNS} FROM {_BATCH}
    WHERE customer_id IS NOT NULL AND folded_at IS NOT NULL
    ORDER BY folded_at, id
"""

_SINCE_SQL = f"""
    SELECT {_COLUMNS} FROM events
    WHERE team_id = :team AND customer_id = :customer AND folded_at IS NOT NULL
      AND (folded_at, id) > (:folded_at, :event)
    ORDER BY folded_at, id
    LIMIT :limit
"""

_NEWEST_SQL = """
    SELECT folded_at, id FROM events
    WHERE team_id = :team AND customer_id = :customer AND folded_at IS NOT NULL
    ORDER BY folded_at DESC, id DESC
    LIMIT 1
"""

_EPOCH = StreamPosition(_UNIX, 0)


def _items(connection: Connection, sql: str, params: dict[str, object]) -> list[StreamItem]:
    statement, names = prepared(sql)
    with snapshot(connection, several=False):
        rows = connection.execute(statement, {name: params[name] for name in names}).all()
    return [StreamItem(row.customer_id, StreamPosition(row.folded_at, row.id), row.item) for row in rows]


def read_folded(connection: Connection, team_id: int, event_ids: Sequence[int]) -> list[StreamItem]:
    """The items of these (folded) events, each with the customer whose timeline it is on,
    in stream order: one statement by the events' primary key, for every stream of the
    process that a notice concerns."""
    return _items(connection, _BY_IDS_SQL, {"team": team_id, "events": list(event_ids)})


def read_since(
    connection: Connection, team_id: int, customer_id: int, after: StreamPosition, limit: int = CATCH_UP_ITEMS
) -> list[StreamItem]:
    """Up to `limit` items of the customer's timeline after `after`, in stream order: a
    resumed stream's catch-up (it reads the customer's timeline index, filtered)."""
    params = {
        "team": team_id,
        "customer": customer_id,
        "folded_at": after.folded_at,
        "event": after.event_id,
        "limit": limit,
    }
    return _items(connection, _SINCE_SQL, params)


def newest_position(connection: Connection, team_id: int, customer_id: int) -> StreamPosition:
    """Where a new stream starts: after the last event folded onto the customer so far."""
    statement, names = prepared(_NEWEST_SQL)
    params = {"team": team_id, "customer": customer_id}
    with snapshot(connection, several=False):
        row = connection.execute(statement, {name: params[name] for name in names}).first()
    return StreamPosition(row.folded_at, row.id) if row else _EPOCH
