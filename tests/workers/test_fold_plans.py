"""The fold's plans on stale statistics: a team that grew since the last ANALYZE.

Stale statistics are normal for a team that just grew (an import, a burst): the planner
would take it for the few rows it had when `events`, `identities` and `customers` were
last analysed (none, for a new team's events), and then any index that starts with
`team_id` looks as cheap as the primary key. Migration 0009 keeps no statistics on
`team_id`, so every team is estimated at the default share of a table. The fold's
statements must still probe the primary keys once per id instead of reading the team.
Everything runs in one transaction that is rolled back, with ANALYZE inside it while the
team is small, then the team grows; the statements explained are the ones the fold runs,
captured as they run, under the batch's own settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, text

from store.fold.batch import Batch
from store.fold.pending import PENDING_COLUMNS, PendingEvent
from store.fold.resolve import Resolution
from store.live import notify_folded
from store.partitions import ensure_months, partition_for
from tests.store.test_feed_plan import describe, executed, nodes, plans_of

GROWN = 100_000  # customers the team gains after the ANALYZE, each with a userId and an anonymousId

SEED = """
INSERT INTO teams (id, name, created_at) OVERRIDING SYSTEM VALUE
SELECT :team + g, 'plans ' || g, now() FROM generate_series(0, 1) g;

-- Another team, analysed at its size; the team under test has ten customers then, and
-- no events yet (a new team).
INSERT INTO customers (team_id, id, is_known, event_count, created_at) OVERRIDING SYSTEM VALUE
SELECT :team + 1, g, true, 1, now() FROM generate_series(1, 50000) g
UNION ALL
SELECT :team, g, true, 1, now() FROM generate_series(1, 10) g;

INSERT INTO identities (team_id, kind, value, customer_id)
SELECT :team + 1, 'user', 'user-' || g, g FROM generate_series(1, 50000) g
UNION ALL
SELECT :team, 'user', 'user-' || g, g FROM generate_series(1, 10) g;

INSERT INTO events (team_id, message_id, type, user_id, event_time, received_at, tiebreak, raw)
SELECT :team + 1, 'm' || g, 'track', 'user-' || (g % 50000), now(), now(), g, '{}'::jsonb
FROM generate_series(1, 100000) g;

ANALYZE customers;
ANALYZE identities;
ANALYZE events;

-- The team grows, and nothing analyses it again.
INSERT INTO customers (team_id, id, is_known, event_count, created_at) OVERRIDING SYSTEM VALUE
SELECT :team, g, true, 1, now() FROM generate_series(11, :grown) g;

INSERT INTO identities (team_id, kind, value, customer_id)
SELECT :team, 'user', 'user-' || g, g FROM generate_series(11, :grown) g
UNION ALL
SELECT :team, 'anonymous', 'anon-' || g, g FROM generate_series(1, :grown) g;

INSERT INTO events (team_id, message_id, type, user_id, event_time, received_at, tiebreak, raw)
SELECT :team, 'm' || g, 'track', 'user-' || (g % :grown + 1), now(), now(), g, '{}'::jsonb
FROM generate_series(1, 2 * :grown) g;
"""


# The month the seeded events fall in: each probe must read its partition only.
MONTH = partition_for(datetime.now(UTC)).name


@pytest.fixture(scope="module")
def grown(engine: Engine) -> Iterator[tuple[Connection, int]]:
    """A connection inside the seeding transaction, and the team that grew."""
    ensure_months(engine, [datetime.now(UTC)])  # the month the SQL below writes
    with engine.connect() as connection:
        transaction = connection.begin()
        team = int(connection.execute(text("SELECT coalesce(max(id), 0) + 1000 FROM teams")).scalar_one())
        for statement in SEED.split(";\n"):
            if statement.strip():
                connection.execute(text(statement), {"team": team, "grown": GROWN})
        # The batch's own settings (store/fold/backlog.py `take_batch`), for this transaction.
        connection.execute(
            text(
                "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                "set_config('jit', 'off', true), set_config('enable_bitmapscan', 'off', true)"
            )
        )
        yield connection, team
        transaction.rollback()


def test_the_identity_lookup_probes_each_id_on_stale_statistics(grown: tuple[Connection, int]) -> None:
    connection, team = grown
    users = [f"user-{n}" for n in range(1, GROWN, GROWN // 500)]
    anons = [f"anon-{n}" for n in range(3, GROWN, GROWN // 500)]
    resolution = Resolution(Batch(connection, team), datetime.now(UTC))
    (plan,) = plans_of(connection, lambda c: resolution.load_identities(users, anons))
    assert len(resolution.user_customer) == len(users) and len(resolution.anon_customer) == len(anons)
    shape = describe(plan)
    assert "Seq Scan" not in shape and "Hash" not in shape, shape
    scans = {node["Relation Name"]: node for node in nodes(plan) if "Relation Name" in node}
    assert set(scans) == {"identities", "customers"}, shape
    # Each scan is a probe of its primary key by the whole key, never a read of the team.
    assert scans["identities"].get("Index Name") == "pk_identities", shape
    assert "value" in scans["identities"]["Index Cond"] and "kind" in scans["identities"]["Index Cond"], shape
    assert scans["customers"].get("Index Name") == "pk_customers", shape
    assert "id =" in scans["customers"]["Index Cond"].replace("(id =", "id ="), shape
    assert "Filter" not in scans["identities"] and "Filter" not in scans["customers"], shape


def test_pointing_a_batch_at_its_customers_probes_each_event_on_stale_statistics(
    grown: tuple[Connection, int],
) -> None:
    connection, team = grown
    rows = connection.execute(
        text(f"SELECT {PENDING_COLUMNS} FROM events WHERE team_id = :t AND id % 200 = 0 LIMIT 1000"),
        {"t": team},
    ).all()
    events = [PendingEvent(*row) for row in rows]
    resolution = Resolution(Batch(connection, team), datetime.now(UTC))
    resolution.user_customer = {e.user_id: 1 for e in events if e.user_id}
    probe, update = plans_of(connection, lambda c: resolution.assign(events), analyze=True)
    shape = describe(executed(probe))
    assert "Seq Scan" not in shape and "Hash" not in shape and "Merge" not in shape, shape
    probes = [n for n in nodes(executed(probe)) if n["Node Type"] == "Index Scan"]
    assert probes, shape
    for node in probes:  # by the whole primary key, in the events' month only
        assert node.get("Index Name") == f"pk_{MONTH}", shape
        assert "id =" in node["Index Cond"].replace("(id =", "id ="), shape
        assert "event_time =" in node["Index Cond"], shape
    # Then the month's rows by their addresses in it.
    shape = describe(update)
    assert shape.startswith(f"ModifyTable({MONTH})") and f"Tid Scan({MONTH})" in shape, shape
    assert "Seq Scan" not in shape and "Hash" not in shape and "Merge" not in shape, shape


def test_the_folded_notice_probes_each_event_on_stale_statistics(grown: tuple[Connection, int]) -> None:
    """The live streams' notice, sent from each batch's transaction (store/live.py; the
    listener's read of the items goes through the same `_BATCH`): by the primary key, once
    per event. As `id = ANY(:events)` it was a scan of the team's events: the fold went
    from 19,600 to 4,100 events/s (`bin/bench --only fold`)."""
    connection, team = grown
    events = [
        PendingEvent(*row)
        for row in connection.execute(
            text(f"SELECT {PENDING_COLUMNS} FROM events WHERE team_id = :t AND id % 200 = 0 LIMIT 1000"),
            {"t": team},
        )
    ]
    (plan,) = plans_of(connection, lambda c: notify_folded(c, team, events), analyze=True)
    ran = executed(plan)
    shape = describe(ran)
    assert "Seq Scan" not in shape and "Hash" not in shape and "Merge" not in shape, shape
    probes = [n for n in nodes(ran) if n.get("Relation Name", "").startswith("events")]
    assert probes, shape
    for node in probes:
        assert node.get("Index Name") == f"pk_{MONTH}", shape
        assert "id =" in node["Index Cond"].replace("(id =", "id ="), shape
