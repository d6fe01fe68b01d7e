"""The timeline's months for the bench's bulk loads (`events` is partitioned by event
time, a partition a month: store/partitions.py).

A phase that writes `events` in SQL (INSERT ... SELECT, COPY) makes the months first
(`ensure_span`), as ingest and the import do for what they write: there is no default
partition, so a row of a missing month is refused.

The big datasets (bench/feed.py, bench/retention.py) load with the timeline's keys and
indexes dropped and build them after (much faster than keeping them up to date row by
row). On a partitioned table both cascade: dropping the parent's index drops every
month's, and adding it back builds one per month, which Postgres names after the
columns (`events_y2026m12_pkey`). `indexes_dropped` names them again as a month made
by the service has them (`pk_events_y2026m12`, `ix_events_feed_y2026m12`:
`store.partitions.create_partition`), so the plans and the sizes read the same names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from service.settings import Settings, sqlalchemy_url
from store.engine import make_engine
from store.partitions import ensure_span as store_ensure_span
from store.partitions import known_partitions


def ensure_span(url: str, first: datetime, last: datetime) -> None:
    """Make every month from `first`'s to `last`'s (the store's own `ensure_span`)."""
    settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
    engine = make_engine(settings, pool_size=1, name="bench-months")
    try:
        known_partitions.forget()  # a bench database may have been made again since
        store_ensure_span(engine, first, last)
    finally:
        engine.dispose()


# Each partition's index and the partitioned index it belongs to.
_PARTITION_INDEXES = """
    SELECT child.relname AS child, parent.relname AS parent, t.relname AS partition
    FROM pg_inherits i
    JOIN pg_class child ON child.oid = i.inhrelid
    JOIN pg_class parent ON parent.oid = i.inhparent
    JOIN pg_index x ON x.indexrelid = child.oid
    JOIN pg_class t ON t.oid = x.indrelid
    WHERE parent.relname = ANY(%s)
"""


def name_partition_indexes(connection: psycopg.Connection[Any], parents: list[str]) -> list[str]:
    """Name each month's index after the timeline's, as `create_partition` does; the names."""
    named = []
    for child, parent, partition in connection.execute(_PARTITION_INDEXES, (parents,)).fetchall():
        wanted = f"{parent}_{str(partition).removeprefix('events_')}"
        if child != wanted:
            connection.execute(f'ALTER INDEX "{child}" RENAME TO "{wanted}"')
        named.append(wanted)
    return sorted(named)


@contextmanager
def indexes_dropped(url: str) -> Iterator[None]:
    """`events` without its keys and indexes inside the block; built again after it (with
    every month's index named as the service names it)."""
    with psycopg.connect(url, autocommit=True) as connection:
        constraints = connection.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'events'::regclass AND contype IN ('p', 'u')"
        ).fetchall()
        indexes = connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = 'events' AND indexname <> ALL(%s)",
            ([name for name, _ in constraints],),
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')  # a partitioned index: every month's goes
        for name, _ in constraints:
            connection.execute(f'ALTER TABLE events DROP CONSTRAINT "{name}"')
    yield
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '1GB'")
        for name, definition in constraints:
            connection.execute(f'ALTER TABLE events ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            # pg_indexes gives a partitioned index as `ON ONLY events`: the parent's alone,
            # left invalid with no month's index under it. Built on every month instead.
            connection.execute(definition.replace(" ON ONLY ", " ON ", 1))
        name_partition_indexes(connection, [name for name, _ in constraints + indexes])
        invalid = connection.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid AND indrelid = ANY("
            "SELECT 'events'::regclass UNION ALL SELECT inhrelid FROM pg_inherits "
            "WHERE inhparent = 'events'::regclass)"
        ).fetchall()
        if invalid:
            raise RuntimeError(f"timeline indexes left invalid: {', '.join(name for (name,) in invalid)}")


def timeline_indexes(url: str) -> list[str]:
    """The timeline's indexes and every month's, by name (what `indexes_dropped` left)."""
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid "
            "JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relname = 'events' OR t.oid IN (SELECT inhrelid FROM pg_inherits "
            "WHERE inhparent = 'events'::regclass) ORDER BY 1"
        ).fetchall()
    return [str(name) for (name,) in rows]
