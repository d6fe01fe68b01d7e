"""Feed reads at scale: 10 million events in the table, 100,000 for one customer.

The dataset is made in SQL (`INSERT ... SELECT generate_series`, the fastest load
Postgres has), with the events table's indexes dropped during the load and built
afterwards, then kept in its own database (`tl_bench_feed`) so later runs reuse it.
The customer's events are spread through the table (every hundredth row), as events
that arrived over months would be, so a page reads scattered heap pages as in real life.
They end when the dataset is built and span `SPAN` (80 days), so all of them are in the
console's 90-day activity chart (app/console/chart.py); a dataset whose events ended
more than `STALE` ago (some would have left that window) is built again. 80 days are
three or four months of the timeline (a partition a month: store/partitions.py), so
the first page's plan has older months to leave unread (`plan_check`).

Each page is read over HTTP (the feed route, through gunicorn) and, as the ceiling, the
very same SQL statement that `store.feed.read_feed_page` sends, run straight in
Postgres by pgbench (libpq, prepared), one client, one after another. That statement's
plan is recorded (EXPLAIN ANALYZE) and checked: the first page reads the newest month's
`ix_events_feed` in order and no older month (`plan_check`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import event

from bench.env import BenchTeam, Servers, database_url, make_team
from bench.load import LoadSpec, percentile, run_load
from bench.months import ensure_span, indexes_dropped
from service.settings import Settings, sqlalchemy_url

# 2: the events end at the build, not in 2024; 3: `events` partitioned by month (migration
# 0012). A database of another version is made again before it is migrated: migrating
# 10 million stored events would move them into the months (store/timeline_move.py).
DATASET_VERSION = 3
SPAN = timedelta(days=80)
STALE = timedelta(days=10)
FILLER_TEAMS = 49

# Customer events carry a realistic payload; the other rows a fixed one (they are only
# there to make the table and its indexes as big as 10 million events make them).
FILLER_RAW = json.dumps(
    {
        "type": "track",
        "event": "Course Clicked",
        "properties": {"title": "Intro to Analytics"},
        "context": {
            "library": {"name": "analytics.js", "version": "2.11.1"},
            "page": {
                "path": "/academy/",
                "title": "Analytics Academy",
                "url": "https://segment.com/academy/",
            },
            "ip": "108.0.78.21",
        },
    }
)

LOAD_SQL = """
INSERT INTO events (team_id, id, message_id, type, event_name, user_id, anonymous_id,
                    event_time, received_at, tiebreak, raw, customer_id, folded_at)
SELECT
    CASE WHEN mine THEN %(team)s ELSE %(first_filler)s + (g %% %(fillers)s) END,
    g,
    'feed-' || g,
    kind,
    CASE kind WHEN 'track' THEN 'Course Clicked' WHEN 'page' THEN 'Academy' END,
    CASE WHEN mine THEN 'feed-user' ELSE 'u-' || (g %% 200003) END,
    'anon-' || (g %% 200003),
    at, at, hashint8(g),
    CASE WHEN NOT mine THEN %(filler_raw)s::jsonb
         WHEN kind = 'identify' THEN jsonb_build_object(
            'type', kind, 'messageId', 'feed-' || g, 'userId', 'feed-user',
            'traits', jsonb_build_object('email', 'feed-user@example.com', 'plan', 'pro', 'seen', g),
            'timestamp', at, 'context', %(context)s::jsonb)
         ELSE jsonb_build_object(
            'type', kind, 'messageId', 'feed-' || g, 'userId', 'feed-user',
            'event', 'Course Clicked', 'name', 'Academy',
            'properties', jsonb_build_object('title', 'Intro to Analytics', 'n', g),
            'timestamp', at, 'context', %(context)s::jsonb)
    END,
    CASE WHEN mine THEN %(customer)s ELSE %(customer)s + 1 + (g %% 200003) END,
    at
FROM (
    SELECT g, g %% %(stride)s = 0 AS mine,
           (ARRAY['track', 'track', 'page', 'identify'])[1 + (g / %(stride)s) %% 4] AS kind,
           %(end)s::timestamptz - ((%(events)s - g) * %(step_us)s) * interval '1 microsecond' AS at
    FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS g
) s
"""


_DATASET_COLUMNS = (
    "version int, events bigint, customer_events bigint, team_id bigint, team_key text, "
    "customer_id bigint, built_seconds float8, events_end timestamptz"
)


@dataclass
class FeedDataset:
    url: str
    team: BenchTeam
    customer_id: int
    events: int
    customer_events: int
    built_seconds: float | None  # None: reused from an earlier run


def ensure_dataset(
    servers: Servers, name: str, events: int, customer_events: int, fresh: bool
) -> FeedDataset:
    """The feed database with `events` events, `customer_events` of them one customer's."""
    if not fresh and stored_version(servers, name) not in (None, DATASET_VERSION):
        fresh = True  # an older dataset: made again, not migrated
    url, _ = servers.create_database(name, fresh=fresh)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS bench_dataset ({_DATASET_COLUMNS})")
        row = connection.execute(
            # (events_end through to_jsonb: a version 1 table has no such column)
            "SELECT version, events, customer_events, team_id, team_key, customer_id, "
            "(to_jsonb(d) ->> 'events_end')::timestamptz FROM bench_dataset d"
        ).fetchone()
    if (
        row is not None
        and row[:3] == (DATASET_VERSION, events, customer_events)
        and row[6] is not None
        and datetime.now(UTC) - row[6] < STALE
    ):
        return FeedDataset(url, BenchTeam(row[3], row[4]), row[5], events, customer_events, None)
    if row is not None:  # another size, or too old for the chart's window: start over
        url, _ = servers.create_database(name, fresh=True)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE TABLE bench_dataset ({_DATASET_COLUMNS})")
    started = time.monotonic()
    team = make_team(url, "bench feed team")
    end = datetime.now(UTC)
    customer_id = _build(url, team.id, events, customer_events, end)
    built = time.monotonic() - started
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO bench_dataset VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (DATASET_VERSION, events, customer_events, team.id, team.key, customer_id, built, end),
        )
    return FeedDataset(url, team, customer_id, events, customer_events, built)


def stored_version(servers: Servers, name: str) -> int | None:
    """The version of the dataset kept in database `name`, read before any migration
    runs on it (None: no such database, or no dataset in it)."""
    try:
        with psycopg.connect(database_url(servers.postgres_url, name), autocommit=True) as connection:
            if connection.execute("SELECT to_regclass('bench_dataset')").fetchone() == (None,):
                return None
            row = connection.execute("SELECT version FROM bench_dataset").fetchone()
    except psycopg.OperationalError:  # no such database yet
        return None
    return None if row is None else int(row[0])


def _build(url: str, team_id: int, events: int, customer_events: int, end: datetime) -> int:
    stride = max(1, events // customer_events)
    with psycopg.connect(url, autocommit=True) as connection:
        first_filler = connection.execute(
            "INSERT INTO teams (name, created_at) SELECT 'bench filler ' || g, now() "
            "FROM generate_series(1, %s) g RETURNING id",
            (FILLER_TEAMS,),
        ).fetchall()[0][0]
        customer_id = connection.execute(
            "INSERT INTO customers (team_id, is_known, email, name, event_count, created_at, first_seen, "
            "last_seen) VALUES (%s, true, 'feed-user@example.com', 'Feed User', %s, now(), "
            "%s, %s) RETURNING id",
            (team_id, customer_events, end - SPAN, end),
        ).fetchone()[0]  # type: ignore[index]
        connection.execute(
            "INSERT INTO identities (team_id, kind, value, customer_id) VALUES (%s, 'user', 'feed-user', %s)",
            (team_id, customer_id),
        )
    ensure_span(url, end - SPAN, end)  # the months the load writes
    params: dict[str, Any] = {
        "team": team_id,
        "first_filler": first_filler,
        "fillers": FILLER_TEAMS,
        "customer": customer_id,
        "stride": stride,
        "end": end,
        "events": events,
        "step_us": SPAN // timedelta(microseconds=1) // events,
        "filler_raw": FILLER_RAW,
        "context": json.dumps({"page": {"url": "https://segment.com/academy/", "title": "Academy"}}),
    }
    # The events table's keys and indexes dropped for the load and built after: much faster.
    with indexes_dropped(url):
        load_in_halves(url, LOAD_SQL, params, events)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT setval('events_id_seq', %s)", (events,))  # ids 1..events
        # Rows weeks old have long been vacuumed by autovacuum: their pages all-visible, so
        # an index-only scan (the activity chart's day counts) reads no heap for them.
        connection.execute("VACUUM (ANALYZE) events")
        try:  # flush the load's dirty pages now, not during the next figures
            connection.execute("CHECKPOINT")
        except psycopg.Error:
            pass  # needs superuser or pg_checkpoint; the next checkpoint comes by itself
    return int(customer_id)


def load_in_halves(url: str, statement: str, params: dict[str, Any], last: int, first: int = 1) -> None:
    """`statement` (ids `%(low)s` to `%(high)s`) for ids `first` to `last`, two loaders at
    once, one per half: the load is CPU-bound and this machine has two cores."""
    middle = (first + last) // 2
    halves = [(first, middle), (middle + 1, last)]
    loaders = []
    for low, high in halves:
        connection = psycopg.connect(url, autocommit=True)
        loaders.append(connection)
        connection.pgconn.send_query_params(
            psycopg.ClientCursor(connection)
            .mogrify(statement, {**params, "low": low, "high": high})
            .encode(),
            None,
        )
    for connection in loaders:
        while True:
            result = connection.pgconn.get_result()
            if result is None:
                break
            if result.error_message:
                raise RuntimeError(result.error_message.decode())
        connection.close()


@dataclass
class FeedStatement:
    sql: str  # literal SQL, as psql or pgbench would send it
    statements_per_request: int


def feed_statements(url: str, redis_url: str, paths: list[str], key: str) -> list[FeedStatement]:
    """The exact SQL the feed route sends for each path, with its parameters in place.

    The route runs in this process (Flask's test client) with every statement it sends
    captured; the one that reads `events` is the feed query.
    """
    from app import create_app

    settings = Settings(database_url=sqlalchemy_url(url), redis_url=redis_url)
    app = create_app({"TESTING": True, "SETTINGS": settings})
    engine = app.extensions["timeline"].reads.engine  # the read budget's engine (docs/serving.md)
    found: list[FeedStatement] = []
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        for path in paths:
            client.get(path, headers=headers)  # warm: the key lookup is cached after this
            captured: list[tuple[str, Any]] = []

            def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
                captured.append((statement, parameters))  # noqa: B023 (removed below)

            event.listen(engine, "before_cursor_execute", capture)
            response = client.get(path, headers=headers)
            event.remove(engine, "before_cursor_execute", capture)
            if response.status_code != 200:
                raise RuntimeError(f"feed route answered {response.status_code}: {response.get_data()!r}")
            feed = [(s, p) for s, p in captured if " FROM events " in " ".join(s.split()) + " "]
            statement, parameters = feed[-1]
            with psycopg.connect(url) as connection:
                literal = _literal(connection, statement, parameters)
            found.append(FeedStatement(" ".join(literal.split()), len(captured)))
    finally:
        app.extensions["timeline"].dispose()
        app.extensions["timeline"].redis.close()
    return found


def _literal(connection: psycopg.Connection[Any], statement: str, parameters: Any) -> str:
    """The statement with its parameters written in: `$n` placeholders (store/feed.py
    sends its statements so) or psycopg's `%(name)s`."""
    if isinstance(parameters, tuple):
        return re.sub(
            r"\$(\d+)",
            lambda found: sql.Literal(parameters[int(found.group(1)) - 1]).as_string(connection),
            statement,
        )
    return psycopg.ClientCursor(connection).mogrify(statement, parameters)


def deep_cursor(base: str, path: str, key: str, depth: int) -> str:
    """The API's own cursor to the page `depth` items into the feed (paged over HTTP)."""
    cursor: str | None = None
    read = 0
    while read < depth:
        limit = min(200, depth - read)
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        request = urllib.request.Request(base + path + query, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            page = json.loads(response.read())
        read += len(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            raise RuntimeError(f"the feed ended after {read} items, before {depth}")
    assert cursor is not None
    return cursor


def pgbench_binary() -> str | None:
    """pgbench from the pgserver wheel (always there), else from PATH."""
    try:
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    return shutil.which("pgbench")


@dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float


def pgbench_latency(url: str, sql: str, seconds: float) -> Latency:
    """One client sending `sql` back to back for `seconds`; per-query latency."""
    binary = pgbench_binary()
    if binary is None:
        return _psycopg_latency(url, sql, seconds)
    with tempfile.TemporaryDirectory(prefix="tl-bench-pgbench-") as folder:
        script = Path(folder) / "feed.sql"
        script.write_text(sql.rstrip(";") + ";\n")
        subprocess.run(
            [
                binary,
                "-n",
                "-M",
                "prepared",
                "-c",
                "1",
                "-T",
                str(max(1, round(seconds))),
                "-f",
                str(script),
                "-l",
                "--log-prefix",
                str(Path(folder) / "log"),
                url,
            ],
            check=True,
            capture_output=True,
            cwd=folder,
            timeout=seconds + 60,
        )
        latencies = [
            int(line.split()[2]) for log in Path(folder).glob("log*") for line in log.read_text().splitlines()
        ]
    return Latency(len(latencies), percentile(latencies, 50) / 1000, percentile(latencies, 99) / 1000)


def _psycopg_latency(url: str, sql: str, seconds: float) -> Latency:
    latencies: list[int] = []
    with psycopg.connect(url, prepare_threshold=0) as connection:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            connection.execute(sql).fetchall()
            latencies.append(int((time.perf_counter() - start) * 1e6))
    return Latency(len(latencies), percentile(latencies, 50) / 1000, percentile(latencies, 99) / 1000)


def http_latency(base: str, path: str, key: str, seconds: float) -> Latency:
    """One client reading `path` over HTTP back to back for `seconds`."""
    result = run_load(
        LoadSpec(
            url=base + path,
            method="GET",
            headers={"Authorization": f"Bearer {key}"},
            concurrency=1,
            duration=seconds,
        )
    )
    bad = {status: n for status, n in result.statuses.items() if not status.startswith("2")}
    if bad or not result.ok:
        raise RuntimeError(f"feed reads failed: {result.statuses}")
    return Latency(result.ok, result.percentile_ms(50), result.percentile_ms(99))


# Scans of the timeline's months in a plan.
_SCANS = ("Index Scan", "Index Only Scan", "Seq Scan", "Bitmap Heap Scan", "Bitmap Index Scan")


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def plan_check(url: str, statement: str) -> dict[str, Any]:
    """The feed statement's plan as it runs (EXPLAIN ANALYZE) and whether it reads only
    what a first page needs: the timeline's months newest first (an ordered Append),
    each through its `ix_events_feed`, no Sort, and rows from one month only; the older
    months "never executed" (Postgres stops the Append once the LIMIT is met) or pruned.
    A month with none of the customer's events (the bounding `events_from_2100`, a month
    made ahead) may be probed on the way: one index probe, no row. (A dataset built in a
    month's first hour has fewer than a page of the customer's events in its newest
    month: its first page rightly reads two, and the check says so.)
    """
    with psycopg.connect(url, autocommit=True) as connection:
        raw = connection.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement).fetchone()[0]  # type: ignore[index]
        months = [
            str(name)
            for (name,) in connection.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass"
            ).fetchall()
        ]
    top = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    nodes = _nodes(top["Plan"])
    scans = [n for n in nodes if n["Node Type"] in _SCANS and str(n.get("Relation Name", "")) in months]
    sorts = [n["Node Type"] for n in nodes if "Sort" in n["Node Type"]]
    appends = [n["Node Type"] for n in nodes if n["Node Type"] in ("Append", "Merge Append")]
    executed = [n for n in scans if n.get("Actual Loops", 0) > 0]
    with_rows = [n["Relation Name"] for n in executed if n.get("Actual Rows", 0) > 0]
    other_indexes = sorted(
        {f"{n['Node Type']}({n.get('Index Name', '')})" for n in scans}
        - {
            f"{n['Node Type']}({n.get('Index Name', '')})"
            for n in scans
            if str(n.get("Index Name", "")).startswith("ix_events_feed_")
        }
    )
    problems = []
    if sorts:
        problems.append(f"sorts ({', '.join(sorted(set(sorts)))})")
    if other_indexes:
        problems.append(f"reads months otherwise than by ix_events_feed: {', '.join(other_indexes)}")
    if len(with_rows) != 1:
        problems.append(f"rows from {len(with_rows)} months ({', '.join(with_rows) or 'none'}), not 1")
    if not scans:
        problems.append("no scan of a month found")
    return {
        "holds": not problems,
        "problems": problems,
        "months": len(months),
        "months_in_plan": len(scans),
        "months_pruned": len(months) - len(scans),
        "months_executed": [
            {"month": n["Relation Name"], "index": n.get("Index Name"), "rows": n.get("Actual Rows")}
            for n in executed
        ],
        "months_never_executed": len(scans) - len(executed),
        "rows_from": with_rows,
        "append": appends,
        "shape": " > ".join(
            f"{n['Node Type']}({n.get('Index Name') or n.get('Relation Name') or ''})"
            for n in nodes
            if n not in scans or n in executed
        ),
        "execution_ms": round(float(top.get("Execution Time", 0.0)), 3),
        "plan": top["Plan"],
    }
