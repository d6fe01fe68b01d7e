"""events partitioned by event time, a partition a month (issue 25; docs/scaling.md, section 4)

Retention by `DELETE` costs in proportion to what it erases; with the timeline
partitioned by event time, expiring a month is dropping its partition
(`store/retention.py`). Postgres requires a partitioned table's unique keys to hold the
partition key, so idempotency becomes `(team_id, message_id, type, event_time)` and
the primary key `(team_id, id, event_time)`: a re-send carries its event time in its
payload and lands in the same partition (ingest checks the last day's partitions for an
event whose payload had no time: store/events.py). Postgres 15 and 16 allow no identity
column on a partitioned table: `id` is drawn from the sequence `events_id_seq`, which
carries on from the old one.

Two paths, both leaving the same tables once done:

- **No events yet** (a new install, the tests): `events` is made again, partitioned by
  month, with the bounding partitions and the current month.
- **Events stored** (a running service): nothing is rewritten here and ingest and reads
  go on. The old table gets a `layout` column (0, a catalog change) checked by a
  constraint validated without blocking writes, is renamed `events_legacy`, and becomes
  partition 0 of a new `events` partitioned by `layout`; partition 1 is
  `events_by_month`, the months, where every new event goes. Every statement that
  reads `events` reads both. The worker then moves the old events into the months in
  short steps (`store/timeline_move.py`; `flask timeline move` runs it in the
  foreground), and once the old table is empty swaps `events_by_month` in as `events`.
  Each step takes only brief locks: adding the column and the swap an exclusive lock
  of a moment, the validation a lock that lets ingest and reads go on.

Downgrade: offline, every event copied back into one table (the old unique key keeps the
first copy of an event stored in two months: a payload with no time of its own, re-sent
more than a day later).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from alembic import op
from sqlalchemy import Connection, text

from store.partitions import (
    AFTER,
    BEFORE,
    LEGACY,
    MONTHS_DURING_MOVE,
    TIMELINE,
    Partition,
    create_partition,
    partition_for,
)

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LZ4_SUPPORTED = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"

COLUMNS = """
    team_id bigint NOT NULL,
    id bigint NOT NULL DEFAULT nextval('events_id_seq'),
    message_id text NOT NULL,
    type text NOT NULL,
    event_name text,
    user_id text,
    anonymous_id text,
    group_id text,
    previous_id text,
    event_time timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    tiebreak bigint NOT NULL,
    raw jsonb NOT NULL,
    customer_id bigint,
    folded_at timestamptz,
    layout smallint NOT NULL DEFAULT 1
"""


def months_table_sql(name: str) -> list[str]:
    """The months' table (`events`, or `events_by_month` during a move) with the
    timeline's keys and indexes, named as the models name them."""
    return [
        f"CREATE TABLE {name} ({COLUMNS}) PARTITION BY RANGE (event_time)",
        f"ALTER TABLE {name} ALTER COLUMN team_id SET STATISTICS 0",
        f"ALTER TABLE {name} ADD CONSTRAINT ck_events_layout CHECK (layout = 1)",
        f"ALTER TABLE {name} ADD CONSTRAINT pk_events PRIMARY KEY (team_id, id, event_time)",
        f"ALTER TABLE {name} ADD CONSTRAINT uq_events_team_id_message_id_type_event_time "
        "UNIQUE (team_id, message_id, type, event_time)",
        f"CREATE INDEX ix_events_feed ON {name} (team_id, customer_id, event_time, tiebreak, id)",
        f"CREATE INDEX ix_events_unfolded ON {name} (team_id, id) WHERE folded_at IS NULL",
        f"CREATE INDEX ix_events_group_calls ON {name} (team_id, group_id) WHERE type = 'group'",
    ]


def compress_raw_with_lz4(connection: Connection, name: str) -> None:
    """Migration 0011's choice, on the months' table: each new month takes it up."""
    if connection.execute(text(LZ4_SUPPORTED)).scalar():
        connection.execute(text(f"ALTER TABLE {name} ALTER COLUMN raw SET COMPRESSION lz4"))


def first_partitions(connection: Connection) -> None:
    now = datetime.now(UTC)
    for partition in (
        Partition(BEFORE, None, datetime(2000, 1, 1, tzinfo=UTC)),
        Partition(AFTER, datetime(2100, 1, 1, tzinfo=UTC), None),
        partition_for(now),
    ):
        create_partition(connection, partition)


def upgrade() -> None:
    connection = op.get_bind()
    connection.execute(text("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"))
    if connection.execute(text("SELECT NOT EXISTS (SELECT 1 FROM events)")).scalar():
        new_install(connection)
    else:
        with op.get_context().autocommit_block():
            beside_stored_events(connection)


def new_install(connection: Connection) -> None:
    connection.execute(text("DROP TABLE events"))
    connection.execute(text("CREATE SEQUENCE events_id_seq AS bigint"))
    for statement in months_table_sql(TIMELINE):
        connection.execute(text(statement))
    connection.execute(text("ALTER SEQUENCE events_id_seq OWNED BY events.id"))
    compress_raw_with_lz4(connection, TIMELINE)
    first_partitions(connection)


@contextmanager
def _transaction(connection: Connection) -> Iterator[None]:
    """One step's own transaction inside alembic's autocommit block."""
    connection.execute(text("BEGIN"))
    try:
        yield
    except BaseException:
        connection.execute(text("ROLLBACK"))
        raise
    connection.execute(text("COMMIT"))


def beside_stored_events(connection: Connection) -> None:
    """Each step its own transaction (autocommit block), each safe to run again."""
    # 1. The layout column (a catalog change: no row is written) and its constraint, unchecked.
    with _transaction(connection):
        connection.execute(text("SET LOCAL lock_timeout = '4s'"))
        connection.execute(
            text("ALTER TABLE events ADD COLUMN IF NOT EXISTS layout smallint NOT NULL DEFAULT 0")
        )
        exists = connection.execute(
            text("SELECT 1 FROM pg_constraint WHERE conname = 'ck_events_legacy_layout'")
        ).first()
        if exists is None:
            connection.execute(
                text("ALTER TABLE events ADD CONSTRAINT ck_events_legacy_layout CHECK (layout = 0) NOT VALID")
            )
    # 2. Checked: reads the table under a lock that lets ingest and reads go on.
    with _transaction(connection):
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("ALTER TABLE events VALIDATE CONSTRAINT ck_events_legacy_layout"))
    # 3. The new `events`, the old one its partition 0: an exclusive lock of a moment.
    with _transaction(connection):
        connection.execute(text("SET LOCAL lock_timeout = '4s'"))
        connection.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
        next_id = connection.execute(text("SELECT coalesce(max(id), 0) + 1 FROM events")).scalar()
        sequence = connection.execute(text("SELECT pg_get_serial_sequence('events', 'id')")).scalar()
        seq_next = connection.execute(text(f"SELECT coalesce(last_value, 0) + 1 FROM {sequence}")).scalar()
        connection.execute(text(f"ALTER TABLE events RENAME TO {LEGACY}"))
        for old, new in (
            ("pk_events", "pk_events_legacy"),
            ("uq_events_team_id_message_id_type", "uq_events_legacy_team_id_message_id_type"),
        ):
            connection.execute(text(f"ALTER TABLE {LEGACY} RENAME CONSTRAINT {old} TO {new}"))
        for old in ("ix_events_feed", "ix_events_unfolded", "ix_events_group_calls"):
            new = old.replace("ix_events_", "ix_events_legacy_")
            connection.execute(text(f"ALTER INDEX {old} RENAME TO {new}"))
        connection.execute(text(f"ALTER TABLE {LEGACY} ALTER COLUMN id DROP IDENTITY"))
        connection.execute(text("CREATE SEQUENCE events_id_seq AS bigint"))
        connection.execute(
            text("SELECT setval('events_id_seq', :next, false)"),
            {"next": max(int(next_id or 1), int(seq_next or 1))},
        )
        connection.execute(text(f"CREATE TABLE {TIMELINE} ({COLUMNS}) PARTITION BY LIST (layout)"))
        connection.execute(text(f"ALTER TABLE {TIMELINE} ALTER COLUMN team_id SET STATISTICS 0"))
        connection.execute(text(f"ALTER TABLE {TIMELINE} ATTACH PARTITION {LEGACY} FOR VALUES IN (0)"))
        for statement in months_table_sql(MONTHS_DURING_MOVE):
            connection.execute(text(statement))
        compress_raw_with_lz4(connection, MONTHS_DURING_MOVE)
        compress_raw_with_lz4(connection, TIMELINE)
        connection.execute(
            text(f"ALTER TABLE {TIMELINE} ATTACH PARTITION {MONTHS_DURING_MOVE} FOR VALUES IN (1)")
        )
        first_partitions(connection)


FLAT_COLUMNS = (
    "team_id, id, message_id, type, event_name, user_id, anonymous_id, group_id, previous_id, "
    "event_time, received_at, tiebreak, raw, customer_id, folded_at"
)


def downgrade() -> None:
    """Offline: every event copied into one table again (an event stored twice in two
    months keeps its first copy). Refused while a move is under way."""
    connection = op.get_bind()
    if connection.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": LEGACY}).scalar():
        raise RuntimeError("finish the move first (flask timeline move), then downgrade")
    connection.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
    connection.execute(text("ALTER TABLE events RENAME TO events_by_month_old"))
    for name in ("pk_events", "uq_events_team_id_message_id_type_event_time"):
        connection.execute(text(f"ALTER TABLE events_by_month_old RENAME CONSTRAINT {name} TO {name}_old"))
    for name in ("ix_events_feed", "ix_events_unfolded", "ix_events_group_calls"):
        connection.execute(text(f"ALTER INDEX {name} RENAME TO {name}_old"))
    for statement in (
        """CREATE TABLE events (
            team_id bigint NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL,
            message_id text NOT NULL, type text NOT NULL, event_name text, user_id text,
            anonymous_id text, group_id text, previous_id text, event_time timestamptz NOT NULL,
            received_at timestamptz NOT NULL, tiebreak bigint NOT NULL, raw jsonb NOT NULL,
            customer_id bigint, folded_at timestamptz,
            CONSTRAINT pk_events PRIMARY KEY (team_id, id),
            CONSTRAINT uq_events_team_id_message_id_type UNIQUE (team_id, message_id, type))""",
        "ALTER TABLE events ALTER COLUMN team_id SET STATISTICS 0",
        f"""INSERT INTO events ({FLAT_COLUMNS}) SELECT {FLAT_COLUMNS} FROM events_by_month_old
            ORDER BY team_id, id ON CONFLICT DO NOTHING""",
        "SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM events), false)",
        "CREATE INDEX ix_events_feed ON events (team_id, customer_id, event_time, tiebreak, id)",
        "CREATE INDEX ix_events_unfolded ON events (team_id, id) WHERE folded_at IS NULL",
        "CREATE INDEX ix_events_group_calls ON events (team_id, group_id) WHERE type = 'group'",
        "DROP TABLE events_by_month_old",
    ):
        connection.execute(text(statement))
    # Made while the old sequence still held the name.
    sequence = connection.execute(text("SELECT pg_get_serial_sequence('events', 'id')")).scalar()
    if sequence != "public.events_id_seq":
        connection.execute(text(f"ALTER SEQUENCE {sequence} RENAME TO events_id_seq"))
