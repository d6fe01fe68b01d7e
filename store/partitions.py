"""The timeline's partitions: `events` is partitioned by event time, a partition a month.

Why by `event_time` and by month (docs/scaling.md, section 4): retention is by event time,
so expiring a month is dropping its partition, not deleting its rows; the feed reads a
customer's newest events first and stops in the newest partition; and a re-send carries
its event time in its payload, so it lands in the partition of the first delivery,
where the unique key `(team_id, message_id, type, event_time)` refuses it.

- **Months, created when needed.** A partition holds `[first of the month, first of the
  next)` in UTC and is named `events_y2026m12`. Ingest and import make sure the months
  of what they write exist before writing (`ensure_months`, a process's cache of the
  partitions it has seen: no read when they are known); the worker makes the current and
  next month ahead of time. Two bounding partitions take absurd times: `events_before_2000`
  (year 1 and the rest before 2000) and `events_from_2100` (year 9999). There is no
  default partition: Postgres would scan it whenever a month is attached.
- **Attached, not created in place.** `CREATE TABLE ... PARTITION OF` locks the whole
  timeline against ingest and reads while it runs; a table made `LIKE` the timeline and
  then `ATTACH`ed takes only a lock that lets them go on (Postgres's own advice).
  One process makes a month at a time (an advisory lock), and its indexes are named after
  the timeline's: `ix_events_feed_y2026m12`.
- **Where they hang.** After migration 0012 `events` itself is partitioned by month. While
  an older database's events are being moved (`store/timeline_move.py`), `events` is
  partitioned by `layout` instead: 0 is the table as it was (`events_legacy`), 1 is
  `events_by_month`, the months. Every partition of the months carries `CHECK (layout =
  1)`, so a statement that asks for `layout = 0` reads no month at all, during the move
  or after it (Postgres excludes them when planning).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

# The months' table: `events` once the timeline is moved (or made new), `events_by_month`
# while an older table's events are being moved into it.
TIMELINE = "events"
MONTHS_DURING_MOVE = "events_by_month"
LEGACY = "events_legacy"
# Times outside these years go to the two bounding partitions.
FIRST_YEAR = 2000
END_YEAR = 2100
BEFORE = "events_before_2000"
AFTER = "events_from_2100"
# Every column of an event row but `layout` (which month or partition 0 holds it), for
# copying rows between partitions (the move into the months; expiry's write-back).
EVENT_COLUMNS = (
    "team_id, id, message_id, type, event_name, user_id, anonymous_id, group_id, previous_id, "
    "event_time, received_at, tiebreak, raw, customer_id, folded_at"
)
# Advisory lock namespace of making a partition (the fold's is 7_301, expiry's 7_302).
PARTITION_LOCK_NAMESPACE = 7_303
# A month partition's name, and what the expiry reads back from it.
_MONTH_NAME = re.compile(r"^events_y(\d{4})m(\d{2})$")


@dataclass(frozen=True)
class Partition:
    """One partition of the timeline: events with `lower <= event_time < upper`
    (None: unbounded)."""

    name: str
    lower: datetime | None
    upper: datetime | None

    def bound_sql(self) -> str:
        lower = "MINVALUE" if self.lower is None else f"'{self.lower.isoformat()}'"
        upper = "MAXVALUE" if self.upper is None else f"'{self.upper.isoformat()}'"
        return f"FROM ({lower}) TO ({upper})"


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def _next_month(start: datetime) -> datetime:
    return _month_start(start.year + start.month // 12, start.month % 12 + 1)


def partition_for(event_time: datetime) -> Partition:
    """The partition an event of this time belongs to."""
    at = event_time.astimezone(UTC)
    if at.year < FIRST_YEAR:
        return Partition(BEFORE, None, _month_start(FIRST_YEAR, 1))
    if at.year >= END_YEAR:
        return Partition(AFTER, _month_start(END_YEAR, 1), None)
    start = _month_start(at.year, at.month)
    return Partition(f"events_y{at.year:04d}m{at.month:02d}", start, _next_month(start))


def month_of_name(name: str) -> Partition | None:
    """The month partition a table name stands for (None: not a month's name)."""
    found = _MONTH_NAME.match(name)
    if found is None:
        return None
    year, month = int(found.group(1)), int(found.group(2))
    if not (FIRST_YEAR <= year < END_YEAR and 1 <= month <= 12):
        return None
    return partition_for(_month_start(year, month))


def is_partition_name(name: str) -> bool:
    """Whether a table is one of the timeline's partitions (alembic compares the parent
    with the models, not each partition: store/migrations/env.py, tests/test_migrations.py)."""
    return name in (BEFORE, AFTER, LEGACY, MONTHS_DURING_MOVE) or month_of_name(name) is not None


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's filter: the partitions are the migrations' and the worker's, not the models'."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


def months_table(connection: Connection) -> str:
    """The table the months hang from: `events`, or `events_by_month` during a move."""
    strategy = connection.execute(
        text("SELECT p.partstrat FROM pg_partitioned_table p WHERE p.partrelid = to_regclass(:name)"),
        {"name": TIMELINE},
    ).scalar()
    return MONTHS_DURING_MOVE if strategy == "l" else TIMELINE


def existing_partitions(connection: Connection) -> list[Partition]:
    """The timeline's partitions by time, oldest first (the bounding ones included)."""
    parent = months_table(connection)
    rows = connection.execute(
        text(
            """
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(:parent) AND c.relkind = 'r'
            """
        ),
        {"parent": parent},
    ).all()
    found: list[Partition] = []
    for (name,) in rows:
        if name == BEFORE:
            found.append(Partition(BEFORE, None, _month_start(FIRST_YEAR, 1)))
        elif name == AFTER:
            found.append(Partition(AFTER, _month_start(END_YEAR, 1), None))
        elif (month := month_of_name(name)) is not None:
            found.append(month)
    return sorted(found, key=lambda p: p.lower or datetime.min.replace(tzinfo=UTC))


def create_partition(connection: Connection, partition: Partition) -> bool:
    """Make the partition if it is missing, in the caller's transaction; True if made.

    A table `LIKE` the months' table, its range checked by a constraint (so `ATTACH` need
    not read it), attached, and its indexes named after the timeline's.
    """
    # Bounded waits: a write that needs a new month fails (and is retried by its sender)
    # rather than queueing behind a detach that waits for a long read to end.
    connection.execute(
        text("SELECT set_config('lock_timeout', '5s', true), pg_advisory_xact_lock(:ns, 0)"),
        {"ns": PARTITION_LOCK_NAMESPACE},
    )
    if connection.execute(text("SELECT to_regclass(:name)"), {"name": partition.name}).scalar():
        return False
    parent = months_table(connection)
    name = partition.name
    checks = []
    if partition.lower is not None:
        checks.append(f"event_time >= '{partition.lower.isoformat()}'")
    if partition.upper is not None:
        checks.append(f"event_time < '{partition.upper.isoformat()}'")
    like = f"LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMPRESSION"
    connection.execute(text(f"CREATE TABLE {name} ({like})"))
    # As every team-scoped table (migration 0009): no statistics on team_id.
    connection.execute(text(f"ALTER TABLE {name} ALTER COLUMN team_id SET STATISTICS 0"))
    connection.execute(text(f"ALTER TABLE {name} ADD CONSTRAINT {name}_range CHECK ({' AND '.join(checks)})"))
    bound = partition.bound_sql()
    connection.execute(text(f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES {bound}"))
    # The range constraint did its work (ATTACH read no row); the partition's own bound says the same.
    connection.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range"))
    suffix = name.removeprefix("events_")
    indexes = connection.execute(
        text(
            """
            SELECT child.relname AS child, parent.relname AS parent
            FROM pg_inherits i
            JOIN pg_class child ON child.oid = i.inhrelid
            JOIN pg_class parent ON parent.oid = i.inhparent
            JOIN pg_index x ON x.indexrelid = child.oid
            WHERE x.indrelid = to_regclass(:name)
            """
        ),
        {"name": name},
    ).all()
    for index in indexes:
        base = index.parent.replace("events_by_month", "events")
        connection.execute(text(f'ALTER INDEX "{index.child}" RENAME TO "{base}_{suffix}"'))
    log.info("timeline: partition %s made", name)
    return True


class KnownPartitions:
    """The partitions a process knows exist: ingest asks before each write, and reads
    Postgres only for a month it has not seen (then makes it if it is missing)."""

    def __init__(self) -> None:
        self._names: dict[str, set[str]] = {}  # by database
        self._lock = threading.Lock()

    def ensure(self, engine: Engine, times: Iterable[datetime]) -> None:
        names = self._names.setdefault(str(engine.url), set())
        # By (year, month) first: a request's events mostly share one or two, and this
        # runs for every write.
        months = {(utc.year, utc.month): utc for utc in (at.astimezone(UTC) for at in times)}
        wanted = {partition_for(at) for at in months.values()}
        missing = [p for p in wanted if p.name not in names]
        if not missing:
            return
        with self._lock, engine.begin() as connection:
            for partition in sorted(missing, key=lambda p: p.name):
                if partition.name not in names:
                    create_partition(connection, partition)
                    names.add(partition.name)

    def forget(self) -> None:
        """A partition was dropped (expiry) or a write found one missing: read again."""
        with self._lock:
            self._names.clear()


known_partitions = KnownPartitions()


def ensure_months(engine: Engine, times: Iterable[datetime]) -> None:
    """Make sure the partitions for these event times exist (ingest, import, the worker)."""
    known_partitions.ensure(engine, times)


def months_between(first: datetime, last: datetime) -> list[datetime]:
    """The first instant of every month from `first`'s to `last`'s, UTC."""
    start = partition_for(first).lower or _month_start(FIRST_YEAR, 1)
    end = last.astimezone(UTC)
    months = []
    while start <= end and start.year < END_YEAR:
        months.append(start)
        start = _next_month(start)
    return months


def ensure_span(engine: Engine, first: datetime, last: datetime) -> None:
    """Make sure every month from `first` to `last` has its partition (the worker's months
    ahead; a bulk load that writes `events` in SQL: the bench, the plan tests)."""
    ensure_months(engine, [first, last, *months_between(first, last)])


def is_missing_partition(error: BaseException) -> bool:
    """Whether a write failed because its event's month is gone (dropped by expiry after
    this process last looked); then what the process knew is forgotten, so the caller
    makes the month again (`ensure_months`) and writes again."""
    missing = "no partition of relation" in str(error)
    if missing:
        known_partitions.forget()
    return missing
