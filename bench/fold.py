"""Fold: events per second into timelines by one worker process, from a stored backlog.

The backlog is a realistic mix (`bench.data.customer_journeys`) stored unfolded with
COPY, then analysed (as autovacuum would have by the time a backlog built up by ingest
is folded). One worker process, started by the Procfile's worker line and registered
with RQ before the clock starts, is woken once (as ingest would wake it) and folds until
the team has no unfolded event left.

The ceiling, in the same run: the same events written with batched INSERTs into an
equivalent table (the events table's columns and indexes), 1,000 per transaction, each
transaction also upserting the batch's customers (count and last seen), from one
connection. That is what the fold would cost if it were only writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.data import BacklogEvent, copy_events, customer_journeys, prepared
from bench.env import BenchTeam, FoldWorker, RunEnv, busy_cores
from service.fold_queue import request_fold

CEILING_BATCH = 1000


def unfolded(url: str, team_id: int) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM events WHERE team_id = %s AND folded_at IS NULL", (team_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def wait_until_folded(url: str, team_id: int, timeout: float) -> float:
    """Seconds until the team has no unfolded event (polled; raises after timeout).

    Each look reads only the first unfolded event (`ORDER BY id LIMIT 1`, the first live
    entry of `ix_events_unfolded`), not how many are left: a count read every unfolded
    row, ~100 ms per look with 100,000 left, and ten looks a second took half a core
    from the fold it was timing on this 2-core machine. (`EXISTS` alone is no better: with
    statistics it becomes a sequential scan that walks the folded rows first.)
    """
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as connection:
        while True:
            row = connection.execute(
                "SELECT 1 FROM events WHERE team_id = %s AND folded_at IS NULL ORDER BY id LIMIT 1",
                (team_id,),
            ).fetchone()
            now = time.monotonic()
            if row is None:
                return now - started
            if now - started > timeout:
                raise TimeoutError(f"{unfolded(url, team_id)} events still unfolded after {timeout:.0f}s")
            time.sleep(0.05)


def take_statistics(url: str) -> None:
    """ANALYZE the bench database once the backlog is stored, before the clock starts.

    A backlog that ingest stored over time has been analysed by autovacuum by the time it
    is folded; one stored by a single COPY a second before the clock has not. Without
    statistics the planner takes the team for a few hundred rows and reads every unfolded
    row per batch (see docs/fold.md, "Speed on the embedded default"), and when
    autovacuum does analyse depends on the server (off on some, every minute on the
    embedded one): so the figure depended on the server and on the run.
    """
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("ANALYZE")


def measure_fold(
    run: RunEnv,
    team: BenchTeam,
    events: int,
    timeout: float,
    on_worker: Callable[[FoldWorker], Any] | None = None,
) -> dict[str, Any]:
    """Fold `events` stored events with one worker; also the batched-INSERT ceiling."""
    journeys = customer_journeys(events)
    received_at = datetime.now(UTC)
    ready = prepared(journeys, received_at)
    ceiling = measure_insert_ceiling(run.database_url, team.id, journeys, ready, received_at)

    redis = run.redis()
    # No sweep during the phase (its first look, at start, finds nothing yet): the worker
    # must not start on the backlog while it is being stored and analysed, before the clock.
    worker_env = run.process_env(SWEEP_INTERVAL_SECONDS="3600")
    worker = FoldWorker("fold-worker", worker_env).wait_ready(redis, run.fold_queue)
    try:
        noise = busy_cores()
        copy_events(run.database_url, team.id, ready, received_at)
        take_statistics(run.database_url)
        profile = on_worker(worker) if on_worker else None
        request_fold(redis, run.fold_queue, run.redis_prefix, team.id)
        seconds = wait_until_folded(run.database_url, team.id, timeout)
        rss = worker.peak_rss()
    finally:
        worker.stop()
        redis.close()
    return {
        "events": len(ready),
        "customers": len({event.customer for event in journeys}),
        "seconds": round(seconds, 2),
        "rate": round(len(ready) / seconds, 1),
        "idle_busy_cores": noise,
        "peak_rss_mib": rss,
        "ceiling": ceiling,
        "profile": profile,
    }


def measure_insert_ceiling(
    url: str, team_id: int, journeys: list[BacklogEvent], ready: list[Any], received_at: datetime
) -> dict[str, Any]:
    """Batched INSERT of the same events + customer upserts, 1,000 per transaction."""
    batches: list[tuple[Any, ...]] = []  # columns of one batch
    for start in range(0, len(ready), CEILING_BATCH):
        chunk = ready[start : start + CEILING_BATCH]
        owners = [journey.customer for journey in journeys[start : start + CEILING_BATCH]]
        counts: dict[int, int] = {}
        last: dict[int, datetime] = {}
        for owner, event in zip(owners, chunk, strict=True):
            counts[owner] = counts.get(owner, 0) + 1
            last[owner] = max(last.get(owner, event.event_time), event.event_time)
        batches.append(
            (
                [e.message_id for e in chunk],
                [e.type for e in chunk],
                [e.event_name for e in chunk],
                [e.user_id for e in chunk],
                [e.anonymous_id for e in chunk],
                [e.group_id for e in chunk],
                [e.event_time for e in chunk],
                [e.tiebreak for e in chunk],
                [json.dumps(e.raw, separators=(",", ":")) for e in chunk],
                owners,
                list(counts),
                list(counts.values()),
                [last[c] for c in counts],
            )
        )
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS ceiling_events, ceiling_customers")
        connection.execute("CREATE TABLE ceiling_events (LIKE events INCLUDING ALL)")
        connection.execute("CREATE TABLE ceiling_customers (LIKE customers INCLUDING ALL)")
    noise = busy_cores()
    with psycopg.connect(url) as connection:
        started = time.monotonic()
        for batch in batches:
            (mids, types, names, users, anons, groups, times, ties, raws, owners, ids, totals, lasts) = batch
            connection.execute(
                """
                INSERT INTO ceiling_events (team_id, message_id, type, event_name, user_id, anonymous_id,
                    group_id, event_time, received_at, tiebreak, raw, customer_id, folded_at)
                SELECT %(team)s, m, t, n, u, a, g, et, %(received)s, tb, r::jsonb, c, %(now)s
                FROM unnest(%(mids)s::text[], %(types)s::text[], %(names)s::text[], %(users)s::text[],
                            %(anons)s::text[], %(groups)s::text[], %(times)s::timestamptz[],
                            %(ties)s::bigint[], %(raws)s::text[], %(owners)s::bigint[])
                     AS x(m, t, n, u, a, g, et, tb, r, c)
                """,
                {
                    "team": team_id,
                    "received": received_at,
                    "now": datetime.now(UTC),
                    "mids": mids,
                    "types": types,
                    "names": names,
                    "users": users,
                    "anons": anons,
                    "groups": groups,
                    "times": times,
                    "ties": ties,
                    "raws": raws,
                    "owners": owners,
                },
            )
            connection.execute(
                """
                INSERT INTO ceiling_customers AS c (team_id, id, is_known, event_count, first_seen,
                    last_seen, created_at)
                SELECT %(team)s, id, true, n, seen, seen, %(now)s
                FROM unnest(%(ids)s::bigint[], %(counts)s::int[], %(lasts)s::timestamptz[]) AS x(id, n, seen)
                ON CONFLICT (team_id, id) DO UPDATE
                SET event_count = c.event_count + excluded.event_count,
                    last_seen = GREATEST(c.last_seen, excluded.last_seen)
                """,
                {"team": team_id, "now": datetime.now(UTC), "ids": ids, "counts": totals, "lasts": lasts},
            )
            connection.commit()
        seconds = time.monotonic() - started
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS ceiling_events, ceiling_customers")
    return {"rate": round(len(ready) / seconds, 1), "seconds": round(seconds, 2), "idle_busy_cores": noise}
