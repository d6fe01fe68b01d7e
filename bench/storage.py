"""Bytes on disk per event, beside the same events gzip'd as Segment's S3 archive keeps them.

The events are the real clients' (`bench/samples/real-events.jsonl`, written by
`python -m bench.samples.capture` from analytics.js in Chromium and Segment's Python SDK):
the sample's journey is replayed for `people` people (each its own userId, anonymousId
and messageIds, a minute apart), stored as ingest stores them and folded, in a database
of its own. Then every table is vacuumed and the bytes of every table, its TOAST and its
indexes are summed, less what the empty, migrated database held:
- after `VACUUM`: what the disk holds right after the load (the fold's update of each
  event leaves its old version behind, free for the next inserts to reuse);
- after `VACUUM FULL`: the live rows only, what the load settles to once that free space
  is reused: the row's figure.
The archive is the same events, one JSON object a line, gzip'd (level 6, as `gzip` and
Segment's archive write it).
"""

from __future__ import annotations

import gzip
import json
import random
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

_SIZES = """
    SELECT c.relname, pg_total_relation_size(c.oid) AS bytes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'r'
"""


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


def _sizes(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {row.relname: int(row.bytes) for row in connection.execute(text(_SIZES))}


def _vacuum(engine: Engine, full: bool) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (FULL, ANALYZE)" if full else "VACUUM (ANALYZE)"))


def measure_storage(servers: Servers, database: str, people: int) -> dict[str, Any]:
    url, _ = servers.create_database(database, fresh=True)
    engine = make_engine(Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused"), pool_size=1)
    try:
        _vacuum(engine, full=True)
        empty = _sizes(engine)
        team = make_team(url, "bench storage")
        events = journeys(people)
        now = datetime.now(UTC)
        for start in range(0, len(events), 1000):
            prepared = [prepare_event(event, now) for event in events[start : start + 1000]]
            store_events(engine, team.id, prepared, now)
        fold_until_empty(engine, team.id)
        _vacuum(engine, full=False)
        loaded = _sizes(engine)
        _vacuum(engine, full=True)
        settled = _sizes(engine)
        archive = len(gzip.compress("".join(json.dumps(e) + "\n" for e in events).encode(), compresslevel=6))
        raw = sum(len(json.dumps(e)) + 1 for e in events)
        count = len(events)

        def per_event(sizes: dict[str, int]) -> float:
            return sum(sizes[name] - empty.get(name, 0) for name in sizes) / count

        by_table = {
            name: round((settled[name] - empty.get(name, 0)) / count, 1)
            for name in sorted(settled, key=lambda n: settled[n] - empty.get(n, 0), reverse=True)
            if settled[name] > empty.get(name, 0)
        }
        return {
            "events": count,
            "sample_events": len(sample_events()),
            "raw_json_bytes_per_event": round(raw / count, 1),
            "gzip_bytes_per_event": round(archive / count, 1),
            "bytes_per_event_vacuumed": round(per_event(loaded), 1),
            "bytes_per_event_live": round(per_event(settled), 1),
            "by_table": by_table,
        }
    finally:
        engine.dispose()
        servers.drop_database(database)
