"""Bytes on disk per event, beside the same events gzip'd as Segment's S3 archive keeps them.

The events are the real clients' (`bench/samples/real-events.jsonl`, written by
`python -m bench.samples.capture` from analytics.js in Chromium and Segment's Python SDK):
the sample's journey is replayed for `people` people (each its own userId, anonymousId
and messageIds, a minute apart), in a database of its own, as a running service takes
them: in `ROUNDS` rounds, each stored as ingest stores it, folded, and `VACUUM`ed (as
autovacuum does once a table has grown by a share of its rows), so that the space the
fold's update of each event leaves behind (its old version, and its entries in every
index: the update changes `customer_id` and `folded_at`, both indexed, so it is never a
HOT update) is reused by the next round's events as it is in service. Then every
relation is measured, less what the empty, migrated database held:
- after `VACUUM`: the row's figure, what the disk holds with the service running;
- after `VACUUM FULL`: the live rows alone, tables and indexes packed: the floor.
Each table's heap, TOAST (with its index) and every index are reported apart
(`by_relation`, printed by the phase), with how many raw payloads Postgres compressed.
The archive is the same events, one JSON object a line, gzip'd (level 6, as `gzip` and
Segment's archive write it).
"""

from __future__ import annotations

import gzip
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench.env import Servers, make_team
from schemas.segment import prepare_event
from service.settings import Settings, sqlalchemy_url
from store.engine import make_engine
from store.events import store_events
from workers.fold import fold_until_empty

SAMPLE = Path(__file__).with_name("samples") / "real-events.jsonl"
ROUNDS = 10

# Every relation of the schema's tables, named (table, relation): the heap as "heap",
# the TOAST table with its index as "toast", and each index by its name. A partition
# counts as its partitioned table (each month of `events` as `events`), a partition's
# index as the partitioned index it belongs to.
_RELATIONS = """
    WITH rel AS (
        SELECT t.oid, t.reltoastrelid,
               coalesce((SELECT relname FROM pg_class WHERE oid = pg_partition_root(t.oid)),
                        t.relname) AS table_name
        FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = current_schema() AND t.relkind = 'r'
    )
    SELECT table_name, relation, sum(bytes)::bigint AS bytes FROM (
        SELECT table_name, 'heap' AS relation, pg_relation_size(oid) AS bytes FROM rel
        UNION ALL
        SELECT table_name, 'toast', pg_total_relation_size(reltoastrelid) FROM rel
        WHERE reltoastrelid <> 0
        UNION ALL
        SELECT r.table_name,
               coalesce((SELECT relname FROM pg_class WHERE oid = pg_partition_root(i.oid)), i.relname),
               pg_relation_size(i.oid)
        FROM rel r JOIN pg_index x ON x.indrelid = r.oid JOIN pg_class i ON i.oid = x.indexrelid
    ) relations
    GROUP BY table_name, relation
"""

# How Postgres holds the raw payloads: the column's compression setting, and per method
# (NULL: stored as sent) how many and their average size on disk.
_RAW_SETTING = """
    SELECT CASE a.attcompression WHEN 'l' THEN 'lz4' WHEN 'p' THEN 'pglz' ELSE 'default' END AS compression,
           current_setting('default_toast_compression') AS server_default
    FROM pg_attribute a WHERE a.attrelid = 'events'::regclass AND a.attname = 'raw'
"""
_RAW_STORED = """
    SELECT coalesce(pg_column_compression(raw), 'none') AS method, count(*) AS n,
           round(avg(pg_column_size(raw)), 1) AS average
    FROM events GROUP BY 1 ORDER BY 1
"""

Sizes = dict[tuple[str, str], int]


def sample_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


def journeys(people: int) -> list[dict[str, Any]]:
    """The sample's journey once per person, ids and times made the person's own: random
    ids as the clients make them (a UUID per messageId and anonymousId), so the archive's
    gzip finds no more repetition than a real day's file would."""
    sample = sample_events()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rng = random.Random(25)
    events = []
    for person in range(people):
        anonymous = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user = f"user-{rng.getrandbits(40):010x}"
        for n, event in enumerate(sample):
            event = json.loads(json.dumps(event))
            at = start + timedelta(minutes=person, seconds=n, milliseconds=rng.randrange(1000))
            event["messageId"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if "userId" in event:
                event["userId"] = user
            if "previousId" in event:
                event["previousId"] = f"{user}-old"
            if "anonymousId" in event:
                event["anonymousId"] = anonymous
            if "groupId" in event:
                event["groupId"] = f"{event['groupId']}-{person % 50}"
            for key in ("timestamp", "sentAt", "originalTimestamp"):
                if key in event:
                    event[key] = at.isoformat().replace("+00:00", "Z")
            events.append(event)
    return events


def _sizes(engine: Engine) -> Sizes:
    with engine.connect() as connection:
        return {
            (row.table_name, row.relation): int(row.bytes) for row in connection.execute(text(_RELATIONS))
        }


def _vacuum(engine: Engine, full: bool) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM FULL" if full else "VACUUM"))


def per_event(empty: Sizes, vacuumed: Sizes, live: Sizes, events: int) -> dict[str, Any]:
    """Bytes per event of each relation and in all (what the load added to the empty
    database), after `VACUUM` and after `VACUUM FULL`, largest first; relations that hold
    less than half a byte an event are left out of `by_relation` but not of the totals."""

    def added(sizes: Sizes, key: tuple[str, str]) -> float:
        return (sizes.get(key, 0) - empty.get(key, 0)) / events

    keys = sorted(set(vacuumed) | set(live), key=lambda k: (-added(vacuumed, k), k))
    by_relation = [
        {
            "table": table,
            "relation": relation,
            "vacuumed": round(added(vacuumed, (table, relation)), 1),
            "live": round(added(live, (table, relation)), 1),
        }
        for table, relation in keys
        if max(abs(added(vacuumed, (table, relation))), abs(added(live, (table, relation)))) >= 0.5
    ]
    by_table: dict[str, dict[str, float]] = {}
    for table, relation in keys:
        row = by_table.setdefault(table, {"vacuumed": 0.0, "live": 0.0})
        row["vacuumed"] += added(vacuumed, (table, relation))
        row["live"] += added(live, (table, relation))
    return {
        "bytes_per_event_vacuumed": round(sum(added(vacuumed, k) for k in keys), 1),
        "bytes_per_event_live": round(sum(added(live, k) for k in keys), 1),
        "by_table": {
            table: {kind: round(value, 1) for kind, value in row.items()}
            for table, row in by_table.items()
            if max(abs(row["vacuumed"]), abs(row["live"])) >= 0.5
        },
        "by_relation": by_relation,
    }


def breakdown_lines(stored: dict[str, Any]) -> list[str]:
    """The bytes per event of each relation, as the phase prints them."""
    lines = [f"{'table':<18} {'relation':<36} {'VACUUM':>8} {'FULL':>8}"]
    for row in stored["by_relation"]:
        lines.append(
            f"{row['table']:<18} {row['relation']:<36} {row['vacuumed']:>8,.1f} {row['live']:>8,.1f}"
        )
    vacuumed, live = stored["bytes_per_event_vacuumed"], stored["bytes_per_event_live"]
    lines.append(f"{'all':<18} {'':<36} {vacuumed:>8,.1f} {live:>8,.1f}")
    raw = stored["raw"]
    held = ", ".join(f"{m['method']}: {m['events']:,} of {m['average']:,.0f} B" for m in raw["stored"])
    lines.append(
        f"events.raw compression {raw['compression']} (server default {raw['server_default']}); {held}"
    )
    return lines


def measure_storage(servers: Servers, database: str, people: int) -> dict[str, Any]:
    url, _ = servers.create_database(database, fresh=True)
    engine = make_engine(Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused"), pool_size=1)
    try:
        _vacuum(engine, full=True)
        empty = _sizes(engine)
        team = make_team(url, "bench storage")
        events = journeys(people)
        now = datetime.now(UTC)
        per_round = -(-len(events) // ROUNDS)
        for first in range(0, len(events), per_round):
            part = events[first : first + per_round]
            for start in range(0, len(part), 1000):
                store_events(
                    engine, team.id, [prepare_event(e, now) for e in part[start : start + 1000]], now
                )
            fold_until_empty(engine, team.id)
            _vacuum(engine, full=False)
        vacuumed = _sizes(engine)
        with engine.connect() as connection:
            setting = connection.execute(text(_RAW_SETTING)).one()
            raw_stored = [
                {"method": row.method, "events": int(row.n), "average": float(row.average)}
                for row in connection.execute(text(_RAW_STORED))
            ]
        _vacuum(engine, full=True)
        live = _sizes(engine)
        archive = len(gzip.compress("".join(json.dumps(e) + "\n" for e in events).encode(), compresslevel=6))
        raw = sum(len(json.dumps(e)) + 1 for e in events)
        count = len(events)
        stored = {
            "events": count,
            "sample_events": len(sample_events()),
            "rounds": ROUNDS,
            "raw_json_bytes_per_event": round(raw / count, 1),
            "gzip_bytes_per_event": round(archive / count, 1),
            **per_event(empty, vacuumed, live, count),
            "raw": {
                "compression": setting.compression,
                "server_default": setting.server_default,
                "stored": raw_stored,
            },
        }
        print("\n".join(f"[bench]   {line}" for line in breakdown_lines(stored)), file=sys.stderr, flush=True)
        return stored
    finally:
        engine.dispose()
        servers.drop_database(database)
