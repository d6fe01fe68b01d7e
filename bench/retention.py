"""Retention's expiry of a month, and another team's ingest while it runs.

The issue's target (25): expiring one month of a 10-million-event table in under 1 s of
Postgres time, ingest p99 unchanged while it runs. The timeline is partitioned by event
time, a partition a month (store/partitions.py), and the expiry (`store.retention.expire_pass`)
erases a month whose whole range is older than the longest retention in force by
settling what its events left behind (their trait history, set-aside errors and links,
in steps of `STEP_ROWS` events under each team's fold lock, `STEP_PAUSE_SECONDS` apart)
and then detaching the partition (`CONCURRENTLY`) and dropping it. A team whose own
retention is shorter than the longest keeps the row-by-row steps (`expire_step`).
Reported apart: (a) the month's detach and drop, the target's figure; (b) its settling;
(c) the row-by-row path for a team with a shorter retention; (d) another team's ingest
p99 while each runs, beside windows without.

The dataset, in a database of its own kept between runs (as bench/feed.py keeps
`tl_bench_feed`; `bin/bench --fresh` makes it again), made in SQL with the timeline's
indexes dropped during the load: `table_events` events of ten teams, ids in time
order (as ingest writes them), every one folded, one in four an identify with two
trait-history rows. Eleven of its twelve twelfths are the kept months, spread from the
first of the month eleven months before the build to the build. The twelfth, the month
before them (`expired_month`), is made again on every run (loaded into a table of its
own, indexed and attached, as a month of the service is), since the run drops it. The
operator's retention (`RETENTION_DAYS`, passed to the pass as `operator_days`, every
team's retention then) is chosen so that month is wholly expired and the next one is
not: one month, a twelfth of the table, is dropped. The team with a shorter retention
gets `short_expired` events expired by its own retention (in the kept months) and
`short_kept` after them, also made again every run.

Ingest: another team's single-event POSTs of current events, open loop at `rate`/s
(bench/load.py: latency from each request's due time), in windows of `window_seconds`,
alternating without and with the pass running: between two "with" windows the pass is
held at a step boundary (its `pause` waits), so a "without" window has no expiry in it.
The settle of a month is about 400 steps a quarter of a second apart (minutes at the
worker's pace): `settle_windows` windows of it are measured at that pace, the rest runs
with no pause and no load (no figure is taken then). The pass is held again as it is
about to detach the month (a hook on its engine), and the detach and drop run alone in
a window of their own; the shorter retention's steps follow in windows of theirs. As
bench/live.py does, each figure is the median of its windows' p99s, beside the same for
the windows without.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import event

from bench.data import track_body
from bench.env import BenchTeam, RunEnv, Servers, Web, make_team
from bench.feed import FILLER_RAW, load_in_halves, stored_version
from bench.ingest import basic_auth
from bench.load import LoadSpec, run_load
from bench.months import ensure_span, indexes_dropped, name_partition_indexes
from service.settings import Settings, sqlalchemy_url
from store.engine import make_engine
from store.partitions import partition_for
from store.retention import STEP_PAUSE_SECONDS, STEP_ROWS, expire_pass, set_retention

DATASET_VERSION = 1
TEAMS = 10  # the teams whose events fill the table
USERS = 50_000
KEPT_MONTHS = 11  # whole months before the build's own, kept
SHORTER_BY_DAYS = 60  # the shorter retention: this many days under the operator's
# The target's table: 10 million events; one month of it (a twelfth) is expired.
TARGET_EVENTS = 10_000_000
BEFORE_2000 = datetime(1999, 12, 31, tzinfo=UTC)

# Ids `low` to `high` of `teams` teams, spread evenly in time from `start` (`first_id`'s
# time) by `step_us` microseconds: the kept months, or the expired month.
LOAD_SQL = """
INSERT INTO {table} (team_id, id, message_id, type, event_name, user_id, anonymous_id,
                     event_time, received_at, tiebreak, raw, customer_id, folded_at)
SELECT %(first_team)s + g %% %(teams)s, g, 'ret-' || g, kind,
       CASE kind WHEN 'track' THEN 'Course Clicked' END,
       'u-' || (g %% %(users)s), 'a-' || (g %% %(users)s), at, at, hashint8(g), %(raw)s::jsonb,
       1000 + g %% %(users)s, at
FROM (
    SELECT g, CASE WHEN g %% 4 = 0 THEN 'identify' ELSE 'track' END AS kind,
           %(start)s::timestamptz + ((g - %(first_id)s) * %(step_us)s) * interval '1 microsecond' AS at
    FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS g
) s
"""

# What the fold's trait history holds for the identifies of those ids: two traits each.
TRAITS_SQL = """
INSERT INTO trait_history (team_id, event_id, key_norm, customer_id, key, value, event_time, tiebreak)
SELECT %(first_team)s + g %% %(teams)s, g, k, 1000 + g %% %(users)s, k,
       CASE k WHEN 'email' THEN to_jsonb('u-' || (g %% %(users)s) || '@example.com')
              ELSE to_jsonb('pro'::text) END,
       %(start)s::timestamptz + ((g - %(first_id)s) * %(step_us)s) * interval '1 microsecond', hashint8(g)
FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS g CROSS JOIN (VALUES ('email'), ('plan')) AS t(k)
WHERE g %% 4 = 0
"""

# The shorter retention's team: `count` folded events from `start`, `step_us` apart.
SHORT_SQL = """
INSERT INTO events (team_id, message_id, type, event_name, user_id, anonymous_id,
                    event_time, received_at, tiebreak, raw, customer_id, folded_at)
SELECT %(team)s, 'short-' || %(tag)s || '-' || g, 'track', 'Course Clicked', 'u-' || (g %% 500),
       'a-' || (g %% 500), at, at, hashint8(g), %(raw)s::jsonb, 1000 + g %% 500, at
FROM (SELECT g, %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond' AS at
      FROM generate_series(1, %(count)s::bigint) AS g) s
"""

_DATASET_COLUMNS = (
    "version int, table_events bigint, first_kept timestamptz, teams jsonb, built_seconds float8"
)


@dataclass
class RetentionSizes:
    table_events: int  # the whole table; a twelfth of it is the expired month
    short_expired: int  # the shorter retention's team: events it expires, row by row
    short_kept: int  # and its events it keeps (walked by the steps)
    rate: float  # the other team's single-event POSTs per second
    window_seconds: float
    settle_windows: int  # windows of the settle measured at the worker's pace


@dataclass
class RetentionDataset:
    url: str
    first_kept: datetime  # the first instant of the first kept month
    first_team: int
    short: int  # the team with a shorter retention
    other: BenchTeam  # the team posting beside the expiry
    built_seconds: float | None  # None: reused

    @property
    def expired_month(self) -> tuple[datetime, datetime]:
        start = partition_for(self.first_kept - timedelta(days=1)).lower
        assert start is not None
        return start, self.first_kept


def ensure_dataset(servers: Servers, name: str, sizes: RetentionSizes, fresh: bool) -> RetentionDataset:
    """The kept months (built once, reused while the size and version match; a dataset
    of another version is made again, never migrated, as bench/feed.py's)."""
    if not fresh and stored_version(servers, name) not in (None, DATASET_VERSION):
        fresh = True
    url, _ = servers.create_database(name, fresh=fresh)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS bench_dataset ({_DATASET_COLUMNS})")
        row = connection.execute(
            "SELECT version, table_events, first_kept, teams, built_seconds FROM bench_dataset"
        ).fetchone()
    if row is not None and row[:2] == (DATASET_VERSION, sizes.table_events):
        teams = row[3]
        other = BenchTeam(teams["other"][0], teams["other"][1])
        return RetentionDataset(url, row[2], teams["first"], teams["short"], other, None)
    if row is not None:
        url, _ = servers.create_database(name, fresh=True)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE TABLE bench_dataset ({_DATASET_COLUMNS})")
    started = time.monotonic()
    short = make_team(url, "bench retention shorter")
    other = make_team(url, "bench retention other")
    now = datetime.now(UTC)
    start = partition_for(now).lower
    assert start is not None
    for _ in range(KEPT_MONTHS):
        start = partition_for(start - timedelta(days=1)).lower
        assert start is not None
    first_team = _build_kept(url, sizes.table_events, start, now)
    built = time.monotonic() - started
    teams = {"first": first_team, "short": short.id, "other": [other.id, other.key]}
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO bench_dataset VALUES (%s, %s, %s, %s, %s)",
            (DATASET_VERSION, sizes.table_events, start, json.dumps(teams), built),
        )
    return RetentionDataset(url, start, first_team, short.id, other, built)


def month_events(table_events: int) -> int:
    return table_events // 12


def _params(first_team: int, start: datetime, end: datetime, first_id: int, last_id: int) -> dict[str, Any]:
    span_us = (end - start) // timedelta(microseconds=1)
    return {
        "first_team": first_team,
        "teams": TEAMS,
        "users": USERS,
        "raw": FILLER_RAW,
        "start": start,
        "first_id": first_id,
        "step_us": span_us // max(1, last_id - first_id + 1),
    }


def _build_kept(url: str, table_events: int, start: datetime, end: datetime) -> int:
    """The kept months: ids after the expired month's, from `start` to `end`."""
    with psycopg.connect(url, autocommit=True) as connection:
        first_team = int(
            connection.execute(
                "INSERT INTO teams (name, created_at) SELECT 'bench retention team ' || g, now() "
                "FROM generate_series(1, %s) g RETURNING id",
                (TEAMS,),
            ).fetchall()[0][0]
        )
    ensure_span(url, start, end)
    first_id = month_events(table_events) + 1
    params = _params(first_team, start, end, first_id, table_events)
    with indexes_dropped(url):
        load_in_halves(url, LOAD_SQL.format(table="events"), params, table_events, first_id)
    load_in_halves(url, TRAITS_SQL, params, table_events, first_id)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT setval('events_id_seq', %s)", (table_events,))
        # Rows months old have long been vacuumed by autovacuum.
        connection.execute("VACUUM (ANALYZE) events")
        connection.execute("VACUUM (ANALYZE) trait_history")
    return first_team


def _checkpoint(connection: psycopg.Connection[Any]) -> None:
    try:  # the load's dirty pages flushed now, not during the pass
        connection.execute("CHECKPOINT")
    except psycopg.Error:
        pass


def prepare_run(dataset: RetentionDataset, sizes: RetentionSizes, now: datetime) -> dict[str, Any]:
    """What each run expires, made again: the expired month (as a month of its own,
    attached), the shorter retention's team's events; the last run's leftovers gone.
    Returns the operator's retention that expires exactly that month, and the counts."""
    url = dataset.url
    start, end = dataset.expired_month
    name = partition_for(start).name
    count = month_events(sizes.table_events)
    teams = list(range(dataset.first_team, dataset.first_team + TEAMS))
    with psycopg.connect(url, autocommit=True) as connection:
        # The last run's: its month (if it stopped before dropping it), the other team's
        # posts, the shorter team's events, the links and trait history the expiry left.
        for (detached,) in connection.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhdetachpending"
        ).fetchall():
            connection.execute(f"ALTER TABLE events DETACH PARTITION {detached} FINALIZE")
        connection.execute(f"DROP TABLE IF EXISTS {name}")
        connection.execute("DELETE FROM events WHERE team_id = ANY(%s)", ([dataset.short, dataset.other.id],))
        connection.execute("DELETE FROM customers WHERE team_id = %s", (dataset.other.id,))
        connection.execute(
            "DELETE FROM trait_history WHERE team_id = ANY(%s) AND event_id BETWEEN 1 AND %s", (teams, count)
        )
        connection.execute("TRUNCATE tombstone_links")
        connection.execute("UPDATE teams SET retention_days = NULL")
        # The month in a table of its own, its indexes built as it is attached.
        connection.execute(
            f"CREATE TABLE {name} "
            "(LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMPRESSION)"
        )
        connection.execute(f"ALTER TABLE {name} ALTER COLUMN team_id SET STATISTICS 0")
    params = _params(dataset.first_team, start, end, 1, count)
    started = time.monotonic()
    load_in_halves(url, LOAD_SQL.format(table=name), params, count)
    load_in_halves(url, TRAITS_SQL, params, count)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '1GB'")
        lower, upper = start.isoformat(), end.isoformat()
        # Checked first, so ATTACH reads no row (as store.partitions.create_partition does).
        connection.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_range "
            f"CHECK (event_time >= '{lower}' AND event_time < '{upper}')"
        )
        connection.execute(
            f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ('{lower}') TO ('{upper}')"
        )
        connection.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")
        name_partition_indexes(
            connection,
            [
                str(n)
                for (n,) in connection.execute(
                    "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                    "WHERE x.indrelid = 'events'::regclass"
                ).fetchall()
            ],
        )
        connection.execute(f"VACUUM (ANALYZE) {name}")
        connection.execute("ANALYZE trait_history")
    month_seconds = time.monotonic() - started
    # The operator's retention: the expired month wholly before its bound, the next not.
    operator_days = (now - dataset.first_kept) // timedelta(days=1) - 1
    short_days = operator_days - SHORTER_BY_DAYS
    cutoff = now - timedelta(days=short_days)
    ensure_span(url, dataset.first_kept, now)
    # The bounding partition of times before 2000 is older than any retention: a pass
    # drops it too (the last run's did); made again, so every run drops the same months.
    ensure_span(url, BEFORE_2000, BEFORE_2000)
    with psycopg.connect(url, autocommit=True) as connection:
        # The shorter team: its expired events from the first kept month to a day before
        # its cutoff, its kept ones from a day after it to now.
        for tag, first, last, events in (
            ("expired", dataset.first_kept, cutoff - timedelta(days=1), sizes.short_expired),
            ("kept", cutoff + timedelta(days=1), now, sizes.short_kept),
        ):
            connection.execute(
                psycopg.ClientCursor(connection).mogrify(
                    SHORT_SQL,
                    {
                        "team": dataset.short,
                        "tag": tag,
                        "raw": FILLER_RAW,
                        "start": first,
                        "count": events,
                        "step_us": (last - first) // timedelta(microseconds=1) // max(1, events),
                    },
                )
            )
        _checkpoint(connection)
    settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
    setter = make_engine(settings, pool_size=1)
    try:
        with setter.begin() as connection:
            set_retention(connection, dataset.short, short_days, operator_days)
    finally:
        setter.dispose()
    return {
        "operator_days": operator_days,
        "short_days": short_days,
        "month": name,
        "month_events": count,
        "month_built_seconds": round(month_seconds, 1),
    }


@dataclass
class PassTimes:
    """What the row-by-row steps' transactions took, as the pass's engine saw them (the
    month's settle and drop are timed by the store itself: `MonthsExpiry`)."""

    steps: list[tuple[float, int]] = field(default_factory=list)  # (seconds, erased) of each step
    _began: float | None = None
    _erased: int = 0
    _step: bool = False

    def listen(self, engine: Any) -> None:
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        event.listen(engine, "after_cursor_execute", self._executed)

    def _begin(self, _connection: Any) -> None:
        self._began, self._erased, self._step = time.perf_counter(), 0, False

    def _end(self, _connection: Any) -> None:
        if self._began is not None:
            if self._step:
                self.steps.append((time.perf_counter() - self._began, self._erased))
            self._began = None

    def _executed(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        words = " ".join(statement.split())
        if words.startswith("SELECT id FROM events"):  # expiry_window: a row-by-row step
            self._step = True
        elif words.startswith("DELETE FROM events"):
            self._erased += max(0, int(cursor.rowcount))


class HeldPass:
    """The real `expire_pass` on a thread: its pause held while `running` is clear, or
    skipped while `fast` is set; held too as it is about to detach a month."""

    def __init__(self, url: str, operator_days: int, now: datetime, month: str) -> None:
        settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
        # As the worker's engine (workers/runtime.py): the pass holds one connection, the
        # month's settle, detach and drop take the other in turn (with one, each would open
        # a connection of its own, and the store's drop time would count it).
        self.engine = make_engine(settings, pool_size=2, name="bench-expiry")
        self.operator_days = operator_days
        self.now = now
        self.month = month
        self.times = PassTimes()
        self.times.listen(self.engine)
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        # Each partition's DETACH and DROP statements, timed one by one (seconds).
        self.statements: dict[str, dict[str, float]] = {}
        self._statement_began = 0.0
        self.running = threading.Event()
        self.holding = threading.Event()
        self.fast = threading.Event()
        self.at_detach = threading.Event()
        self.detach_go = threading.Event()
        self.hold_next = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bench-expiry", daemon=True)
        self.started = 0.0
        self.seconds = 0.0
        self.drop_wall = 0.0
        self.held_seconds = 0.0

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        detach = f"DETACH PARTITION {self.month} CONCURRENTLY"
        if detach in statement and not self.detach_go.is_set():  # the month measured: hold here
            self.fast.clear()
            self.at_detach.set()
            held = time.monotonic()
            self.detach_go.wait()
            self.drop_wall = time.monotonic()
            self.held_seconds = self.drop_wall - held  # inside the store's drop time: taken out
        self._statement_began = time.perf_counter()

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if "DETACH" in words or words[:2] == ["DROP", "TABLE"]:
            name = words[words.index("PARTITION") + 1] if "DETACH" in words else words[2]
            kind = "detach" if "DETACH" in words else "drop"
            seconds = time.perf_counter() - self._statement_began
            self.statements.setdefault(name, {})[kind] = round(seconds, 4)

    def _pause(self) -> bool:
        if self.hold_next.is_set():  # the month just dropped: hold before anything else runs
            self.hold_next.clear()
            self.drop_wall = time.monotonic() - self.drop_wall
            self.running.clear()
        elif not self.fast.is_set():
            time.sleep(STEP_PAUSE_SECONDS)
        if not self.running.is_set():
            self.holding.set()
            self.running.wait()
            self.holding.clear()
        return False

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self.result = expire_pass(self.engine, self.operator_days, self.now, pause=self._pause)
        except BaseException as error:  # noqa: BLE001 (reported by the caller)
            self.error = error
        finally:
            self.seconds = time.monotonic() - self.started

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def _waiting_at_detach(self) -> bool:
        return self.at_detach.is_set() and not self.detach_go.is_set()

    def hold(self) -> None:
        """Until the pass waits at a step boundary or at the detach (or has ended)."""
        self.running.clear()
        while self.thread.is_alive() and not self._waiting_at_detach() and not self.holding.wait(0.05):
            pass

    def fast_forward(self) -> None:
        """Run on with no pause (nothing is measured meanwhile) until the detach or the end."""
        if self._waiting_at_detach() or self.done():
            return
        self.fast.set()
        self.running.set()
        while self.thread.is_alive() and not self.at_detach.wait(0.05):
            pass
        self.running.clear()

    def release_detach(self) -> None:
        self.hold_next.set()
        self.running.set()
        self.detach_go.set()

    def done(self) -> bool:
        return self.thread.ident is not None and not self.thread.is_alive()

    def dispose(self) -> None:
        self.fast.set()
        self.detach_go.set()
        self.running.set()
        if self.thread.ident is not None:
            self.thread.join(600)
        self.engine.dispose()


def _window(
    web: Web, other: BenchTeam, tag: str, sizes: RetentionSizes, on_start: Any = None
) -> dict[str, Any]:
    """One window of the other team's POSTs; `on_start` runs as its load begins."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = track_body(tag).replace("2024-03-01T12:00:00.249Z", now).replace("2024-03-01T12:00:01.169Z", now)
    spec = LoadSpec(
        url=web.base + "/v1/segment",
        headers=basic_auth(other.key),
        body_template=body,
        concurrency=8,
        duration=sizes.window_seconds,
        rate=sizes.rate,
    )
    timer = None
    if on_start is not None:  # run_load's generators start 0.6 s after it is called
        timer = threading.Timer(0.6, on_start)
        timer.start()
    result = run_load(spec)
    if timer is not None:
        timer.join()
    return {"sent": result.sent, "ok": result.ok, "p99_ms": round(result.percentile_ms(99), 2)}


def _kind(windows: list[dict[str, Any]]) -> dict[str, Any]:
    p99s = [w["p99_ms"] for w in windows]
    return {
        "windows": len(windows),
        "sent": sum(w["sent"] for w in windows),
        "ok": sum(w["ok"] for w in windows),
        "window_p99_ms": p99s,
        "median_window_p99_ms": round(statistics.median(p99s), 2) if p99s else 0.0,
    }


def run_windows(
    web: Web, held: HeldPass, other: BenchTeam, run_id: str, sizes: RetentionSizes
) -> dict[str, Any]:
    """Windows without the pass, alternating with windows of each of its parts."""
    windows: dict[str, list[dict[str, Any]]] = {"without": [], "settle": [], "drop": [], "rows": []}
    count = 0

    def window(kind: str, on_start: Any = None) -> None:
        nonlocal count
        count += 1
        windows[kind].append(_window(web, other, f"ret-{run_id}-{count}", sizes, on_start))

    # The settle at the worker's pace.
    for n in range(sizes.settle_windows):
        window("without")
        window("settle", held.start if n == 0 else held.running.set)
        held.hold()
        if held.done() or held.at_detach.is_set():
            break
    if held.thread.ident is None:
        held.start()
    # The rest of it unmeasured, then the detach and drop alone in a window.
    held.fast_forward()
    if held.at_detach.is_set() and not held.detach_go.is_set():
        window("without")
        window("drop", held.release_detach)
        held.hold()
    # The shorter retention's row-by-row steps.
    while not held.done():
        window("without")
        window("rows", held.running.set)
        held.hold()
    return {kind: _kind(found) for kind, found in windows.items()}


def measure_retention(
    run: RunEnv, servers: Servers, database: str, sizes: RetentionSizes, fresh: bool = False
) -> dict[str, Any]:
    dataset = ensure_dataset(servers, database, sizes, fresh)
    now = datetime.now(UTC)
    prepared = prepare_run(dataset, sizes, now)
    env = run.process_env(database_url=dataset.url, RETENTION_DAYS=str(prepared["operator_days"]))
    web = Web("retention-web", env).wait_ready("/readyz")
    held = HeldPass(dataset.url, prepared["operator_days"], now, prepared["month"])
    try:
        ingest = run_windows(web, held, dataset.other, run.run_id, sizes)
    finally:
        held.dispose()
        web.stop()
    if held.error is not None:
        raise held.error
    return _summary(dataset, held, prepared, sizes, ingest)


def _summary(
    dataset: RetentionDataset,
    held: HeldPass,
    prepared: dict[str, Any],
    sizes: RetentionSizes,
    ingest: dict[str, Any],
) -> dict[str, Any]:
    done = held.result
    erased = sum(done.erased.values()) if done is not None else 0
    steps = held.times.steps
    erasing = [seconds for seconds, n in steps if n]
    walking = [seconds for seconds, n in steps if not n]
    return {
        "table_events": sizes.table_events,
        "target_events": TARGET_EVENTS,
        "built_seconds": round(dataset.built_seconds, 1) if dataset.built_seconds else None,
        "reused": dataset.built_seconds is None,
        "operator_days": prepared["operator_days"],
        "month": prepared["month"],
        "month_events": prepared["month_events"],
        "month_built_seconds": prepared["month_built_seconds"],
        "months_dropped": list(done.months) if done is not None else [],
        # The month's expiry from its DETACH to its DROP committed, as the store runs them
        # (the commit is most of it: that is where Postgres unlinks the month's files and
        # forgets its buffers); `drop_statements`: each month's DETACH and DROP statements
        # alone, before their commits. `drop_seconds`: the store's own figure
        # (`MonthsExpiry.drop_seconds`) for every month the pass dropped, less the time the
        # bench held it before the detach.
        "month_drop_seconds": round(held.drop_wall, 3),
        "drop_statements": held.statements,
        "drop_seconds": round(done.month_seconds - held.held_seconds, 3) if done is not None else None,
        "settle_seconds": round(done.settle_seconds, 3) if done is not None else None,
        "step_rows": STEP_ROWS,
        "pause_seconds": STEP_PAUSE_SECONDS,
        "short_days": prepared["short_days"],
        "short_expired": sizes.short_expired,
        "short_kept": sizes.short_kept,
        "erased": erased,
        "steps": done.steps if done is not None else 0,
        "erasing_steps": len(erasing),
        "erasing_seconds": round(sum(erasing), 3),
        "walking_seconds": round(sum(walking), 3),
        "erasing_step_max_ms": round(max(erasing, default=0.0) * 1000, 1),
        "erased_per_second": round(erased / sum(erasing), 1) if erasing else 0.0,
        "pass_wall_seconds": round(held.seconds, 1),
        "ingest_rate": sizes.rate,
        "ingest_without": ingest["without"],
        "ingest_with_settle": ingest["settle"],
        "ingest_with_drop": ingest["drop"],
        "ingest_with_rows": ingest["rows"],
    }
