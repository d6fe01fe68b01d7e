"""How events are stored on disk (migration 0011), and the bench's bytes-per-event row."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from bench.env import Servers, libpq_url
from bench.storage import breakdown_lines, measure_storage, per_event
from service.settings import sqlalchemy_url
from tests.workers.support import event, new_team, store_and_fold

LZ4_SUPPORTED = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
RAW_COMPRESSION = (
    "SELECT attcompression::text FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'raw'"
)


def test_raw_is_compressed_with_lz4_where_the_server_has_it(engine: Engine) -> None:
    with engine.connect() as connection:
        supported = connection.execute(text(LZ4_SUPPORTED)).scalar_one()
        setting = connection.execute(text(RAW_COMPRESSION)).scalar_one()
    assert setting == ("l" if supported else "")


def test_a_large_payload_is_compressed_with_the_columns_method(engine: Engine) -> None:
    """Postgres compresses a payload only in a row over ~2 KB: a large one is, with lz4
    where the server has it; a small one is stored as sent (what the bench measures)."""
    team = new_team(engine)
    padding = "Order Completed, product 12345, colour blue, size M; " * 80  # ~4 KB
    store_and_fold(
        engine,
        team,
        [
            event("track", "large", 1, userId="u1", event="Order Completed", properties={"note": padding}),
            event("track", "small", 2, userId="u1", event="Viewed"),
        ],
    )
    with engine.connect() as connection:
        supported = connection.execute(text(LZ4_SUPPORTED)).scalar_one()
        held = dict(
            connection.execute(
                text("SELECT message_id, pg_column_compression(raw) FROM events WHERE team_id = :t"),
                {"t": team},
            ).all()
        )
    assert held == {"large": "lz4" if supported else "pglz", "small": None}


def test_bytes_per_event_are_what_each_relation_gained_over_the_empty_database() -> None:
    empty = {("events", "heap"): 8192, ("events", "pk_events"): 8192, ("teams", "heap"): 8192}
    vacuumed = {
        ("events", "heap"): 8192 + 30_000,
        ("events", "pk_events"): 8192 + 4_000,
        ("events", "ix_new"): 1_000,
        ("teams", "heap"): 8192,
        ("events", "toast"): 10,
    }
    live = {**vacuumed, ("events", "heap"): 8192 + 20_000, ("events", "pk_events"): 8192 + 2_000}
    stored = per_event(empty, vacuumed, live, 10)
    assert stored["bytes_per_event_vacuumed"] == 3_501.0  # (30,000 + 4,000 + 1,000 + 10) / 10
    assert stored["bytes_per_event_live"] == 2_301.0
    assert stored["by_relation"] == [
        {"table": "events", "relation": "heap", "vacuumed": 3_000.0, "live": 2_000.0},
        {"table": "events", "relation": "pk_events", "vacuumed": 400.0, "live": 200.0},
        {"table": "events", "relation": "ix_new", "vacuumed": 100.0, "live": 100.0},
        {"table": "events", "relation": "toast", "vacuumed": 1.0, "live": 1.0},
    ]  # teams gained nothing: left out
    assert stored["by_table"] == {"events": {"vacuumed": 3_501.0, "live": 2_301.0}}
    stored["raw"] = {"compression": "lz4", "server_default": "pglz", "stored": []}
    lines = breakdown_lines(stored)
    assert lines[1].split() == ["events", "heap", "3,000.0", "2,000.0"]
    assert lines[-2].split() == ["all", "3,501.0", "2,301.0"]


def test_the_bench_measures_a_small_load(database_url: str) -> None:
    """The phase end to end on a few people: its totals are the sum of its relations."""
    people = 3
    servers = Servers(libpq_url(sqlalchemy_url(database_url)), "redis://unused")
    stored = measure_storage(servers, "tl_test_storage_bench", people)
    assert stored["events"] == people * stored["sample_events"]
    assert (
        stored["bytes_per_event_vacuumed"]
        >= stored["bytes_per_event_live"]
        > stored["raw_json_bytes_per_event"]
    )
    relations = stored["by_relation"]
    assert (relations[0]["table"], relations[0]["relation"]) == ("events", "heap")
    assert sum(r["live"] for r in relations) == pytest.approx(
        stored["bytes_per_event_live"], abs=len(relations)
    )
    assert sum(m["events"] for m in stored["raw"]["stored"]) == stored["events"]
