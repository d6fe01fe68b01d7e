"""Retention's expiry as it is today (row by row), and another team's ingest while it runs.

The issue's target: expiring one month of a 10-million-event table in under 1 s of
Postgres time, ingest p99 unchanged while it runs. Today's expiry (`store/retention.py`)
is a DELETE of the team's expired rows in steps of `STEP_ROWS` events by primary key,
0.25 s apart; the time-partitioned timeline that would make a month a partition to drop
is not built. This phase measures what today's expiry costs, so the gap is on the record.

The dataset, in a database of its own, made in SQL (`INSERT ... SELECT generate_series`):
`table_events` events spanning 360 days, ids in time order (as ingest writes them), every
one folded (customer and `folded_at` set), one in four an identify with two trait-history
rows. The oldest twelfth, 330 to 360 days old (one month of the table), is one team's,
whose retention is set to 330 days (`store.retention.set_retention`); that team also has
the `tail_events` events right after it (kept), the rest of the table is other teams' (no
retention). So the pass erases one month of the table and walks the team's unexpired
events too, as today's pass walks a team's whole primary key. The team's rows are
contiguous in the heap, as one team's year would be: the best case for a row-by-row
DELETE (a team's rows among other teams' are scattered over many more pages).

The pass is the real `expire_pass` (its lock, its steps, its pause), on a thread. Its
Postgres time is the time inside its transactions (each step is one), timed by
SQLAlchemy's begin/commit events on its own engine: the pauses are not in it. Each
transaction's erased rows (the DELETE's row count) split it into erasing steps and
walking ones, so the cost of a month of a 10-million-event table is extrapolated from
both: 833,333 events erased at the erasing steps' cost per event, and the other
9,166,667 walked at the walking steps' cost per event (the table here is smaller: its
indexes a level shallower, its pages more often cached; the extrapolation flatters it).

Ingest: another team's single-event POSTs, open loop at `rate`/s (bench/load.py: latency
from each request's due time), in windows of `window_seconds`, alternating without and
with the pass running: between two "with" windows the pass is held at a step boundary
(its `pause` waits), so every "without" window has no expiry in it. As bench/live.py
does, the figure is the median of the windows' p99s beside the same for the windows
without; the last "with" window may end before the pass does.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import event

from bench.env import RunEnv, Servers, Web, make_team
from bench.feed import FILLER_RAW
from bench.ingest import IngestSizes, post_spec
from bench.load import run_load
from service.settings import Settings, sqlalchemy_url
from store.engine import make_engine
from store.retention import STEP_PAUSE_SECONDS, STEP_ROWS, expire_pass, set_retention

SPAN_DAYS = 360
RETENTION_DAYS = 330  # the oldest month of the table (30 of its 360 days) is expired
FILLER_TEAMS = 9
USERS = 50_000
# The target's table: 10 million events, a year of them; one month of it is expired.
TARGET_EVENTS = 10_000_000
TARGET_MONTH = TARGET_EVENTS // 12

# g <= :month: the retained team's expired month, 331 to 360 days old. Above it, the rest
# of the year, 0 to 329 days old: its first :tail rows the retained team's (right after
# its month, as one team's year would be), the others the filler teams'.
LOAD_SQL = """
INSERT INTO events (team_id, id, message_id, type, event_name, user_id, anonymous_id,
                    event_time, received_at, tiebreak, raw, customer_id, folded_at)
SELECT team, g, 'ret-' || g, kind, CASE kind WHEN 'track' THEN 'Course Clicked' END,
       'u-' || (g %% %(users)s), 'a-' || (g %% %(users)s), at, at, hashint8(g),
       %(raw)s::jsonb || jsonb_build_object('type', kind, 'messageId', 'ret-' || g,
                                            'userId', 'u-' || (g %% %(users)s), 'timestamp', at),
       1000 + g %% %(users)s, at
FROM (
    SELECT g,
           CASE WHEN g <= %(month)s + %(tail)s THEN %(team)s
                ELSE %(first_filler)s + g %% %(fillers)s END AS team,
           CASE WHEN g %% 4 = 0 THEN 'identify' ELSE 'track' END AS kind,
           CASE WHEN g <= %(month)s
                THEN %(now)s::timestamptz - interval '360 days'
                     + (g * (29 * 86400.0 / %(month)s)) * interval '1 second'
                ELSE %(now)s::timestamptz - interval '329 days'
                     + ((g - %(month)s) * (329 * 86400.0 / (%(events)s - %(month)s))) * interval '1 second'
           END AS at
    FROM generate_series(1, %(events)s::bigint) AS g
) s
"""

TRAITS_SQL = """
INSERT INTO trait_history (team_id, event_id, key_norm, customer_id, key, value, event_time, tiebreak)
SELECT e.team_id, e.id, k, e.customer_id, k,
       CASE k WHEN 'email' THEN to_jsonb(e.user_id || '@example.com') ELSE to_jsonb('pro'::text) END,
       e.event_time, e.tiebreak
FROM events e CROSS JOIN (VALUES ('email'), ('plan')) AS t(k)
WHERE e.type = 'identify'
"""


@dataclass
class RetentionSizes:
    table_events: int  # the whole table; a twelfth of it is the expired month
    tail_events: int  # the retained team's unexpired events, walked by the pass
    rate: float  # the other team's single-event POSTs per second
    window_seconds: float


@dataclass
class PassTimes:
    """What the pass's transactions took, as its engine's events saw them."""

    steps: list[tuple[float, int]] = field(default_factory=list)  # (seconds, erased) of each step
    other_seconds: float = 0.0  # the pass's own transactions: its lock, the teams to expire
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
            seconds = time.perf_counter() - self._began
            if self._step:
                self.steps.append((seconds, self._erased))
            else:
                self.other_seconds += seconds
            self._began = None

    def _executed(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        words = " ".join(statement.split())
        if words.startswith("SELECT id FROM events"):  # expiry_window: this is a step
            self._step = True
        elif words.startswith("DELETE FROM events"):
            self._erased += max(0, int(cursor.rowcount))


def build(url: str, team_id: int, sizes: RetentionSizes, now: datetime) -> dict[str, int]:
    """The table (see the module docstring); the retained team's expired and kept events."""
    month = sizes.table_events // 12
    with psycopg.connect(url, autocommit=True) as connection:
        first_filler = connection.execute(
            "INSERT INTO teams (name, created_at) SELECT 'bench retention filler ' || g, now() "
            "FROM generate_series(1, %s) g RETURNING id",
            (FILLER_TEAMS,),
        ).fetchall()[0][0]
        params = {
            "team": team_id,
            "first_filler": first_filler,
            "fillers": FILLER_TEAMS,
            "month": month,
            "tail": sizes.tail_events,
            "events": sizes.table_events,
            "users": USERS,
            "now": now,
            "raw": FILLER_RAW,
        }
        connection.execute(psycopg.ClientCursor(connection).mogrify(LOAD_SQL, params).encode())
        connection.execute(TRAITS_SQL)
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT max(id) FROM events))"
        )
        # Rows months old have long been vacuumed by autovacuum.
        connection.execute("VACUUM (ANALYZE) events")
        connection.execute("VACUUM (ANALYZE) trait_history")
        try:  # the load's dirty pages flushed now, not during the pass
            connection.execute("CHECKPOINT")
        except psycopg.Error:
            pass
        expired, kept = connection.execute(
            "SELECT count(*) FILTER (WHERE event_time < %(cut)s), "
            "count(*) FILTER (WHERE event_time >= %(cut)s) FROM events WHERE team_id = %(team)s",
            {"team": team_id, "cut": now - timedelta(days=RETENTION_DAYS)},
        ).fetchone()  # type: ignore[misc]
    return {"expired": int(expired), "kept": int(kept)}


class HeldPass:
    """The real `expire_pass` on a thread, its pause held while `running` is clear."""

    def __init__(self, url: str) -> None:
        settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
        self.engine = make_engine(settings, pool_size=1, name="bench-expiry")
        self.times = PassTimes()
        self.times.listen(self.engine)
        self.running = threading.Event()
        self.holding = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.steps_paused = 0
        self.thread = threading.Thread(target=self._run, name="bench-expiry", daemon=True)
        self.started = 0.0
        self.seconds = 0.0

    def _pause(self) -> bool:
        self.steps_paused += 1
        time.sleep(STEP_PAUSE_SECONDS)
        if not self.running.is_set():
            self.holding.set()
            self.running.wait()
            self.holding.clear()
        return False

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self.result = expire_pass(self.engine, None, datetime.now(UTC), pause=self._pause)
        except BaseException as error:  # noqa: BLE001 (reported by the caller)
            self.error = error
        finally:
            self.seconds = time.monotonic() - self.started

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def hold(self) -> None:
        """Until the pass waits at a step boundary (or has ended)."""
        self.running.clear()
        while self.thread.is_alive() and not self.holding.wait(0.05):
            pass

    def done(self) -> bool:
        return self.thread.ident is not None and not self.thread.is_alive()

    def dispose(self) -> None:
        self.running.set()
        if self.thread.ident is not None:
            self.thread.join(120)
        self.engine.dispose()


def _window(web: Web, other: Any, tag: str, sizes: RetentionSizes, on_start: Any = None) -> dict[str, Any]:
    shape = IngestSizes(sizes.window_seconds, 8, 1)
    spec = post_spec(web.base, other, tag, shape, rate=sizes.rate)
    timer = None
    if on_start is not None:  # run_load's generators start 0.6 s after it is called
        timer = threading.Timer(0.6, on_start)
        timer.start()
    result = run_load(spec)
    if timer is not None:
        timer.join()
    return {
        "sent": result.sent,
        "ok": result.ok,
        "p99_ms": round(result.percentile_ms(99), 2),
    }


def _kind(windows: list[dict[str, Any]]) -> dict[str, Any]:
    p99s = [w["p99_ms"] for w in windows]
    return {
        "windows": len(windows),
        "sent": sum(w["sent"] for w in windows),
        "ok": sum(w["ok"] for w in windows),
        "window_p99_ms": p99s,
        "median_window_p99_ms": round(statistics.median(p99s), 2) if p99s else 0.0,
    }


def measure_retention(run: RunEnv, servers: Servers, database: str, sizes: RetentionSizes) -> dict[str, Any]:
    url, _ = servers.create_database(database, fresh=True)
    try:
        team = make_team(url, "bench retention")
        other = make_team(url, "bench retention other")
        now = datetime.now(UTC)
        started = time.monotonic()
        counts = build(url, team.id, sizes, now)
        built = time.monotonic() - started
        settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
        setter = make_engine(settings, pool_size=1)
        with setter.begin() as connection:
            set_retention(connection, team.id, RETENTION_DAYS, None)
        setter.dispose()
        web = Web("retention-web", run.process_env(database_url=url)).wait_ready("/readyz")
        held = HeldPass(url)
        with_pass: list[dict[str, Any]] = []
        without: list[dict[str, Any]] = []
        try:
            n = 0
            while not held.done() or len(without) <= len(with_pass):
                n += 1
                if len(without) <= len(with_pass):
                    without.append(_window(web, other, f"ret-{run.run_id}-{n}", sizes))
                else:
                    start = held.running.set if with_pass else held.start
                    with_pass.append(_window(web, other, f"ret-{run.run_id}-{n}", sizes, start))
                    held.hold()
        finally:
            held.dispose()
            web.stop()
        if held.error is not None:
            raise held.error
        return _summary(held, counts, built, sizes, with_pass, without)
    finally:
        servers.drop_database(database)


def _summary(
    held: HeldPass,
    counts: dict[str, int],
    built: float,
    sizes: RetentionSizes,
    with_pass: list[dict[str, Any]],
    without: list[dict[str, Any]],
) -> dict[str, Any]:
    done = held.result
    erased = sum(done.erased.values()) if done is not None else 0
    steps = held.times.steps
    erasing = [seconds for seconds, n in steps if n]
    walking = [seconds for seconds, n in steps if not n]
    erase_seconds, walk_seconds = sum(erasing), sum(walking)
    erase_cost = erase_seconds / erased if erased else 0.0
    walk_cost = walk_seconds / counts["kept"] if counts["kept"] else 0.0
    erasing_month, walking_rest = TARGET_MONTH * erase_cost, (TARGET_EVENTS - TARGET_MONTH) * walk_cost
    return {
        "table_events": sizes.table_events,
        "expired_events": counts["expired"],
        "kept_events": counts["kept"],
        "built_seconds": round(built, 1),
        "step_rows": STEP_ROWS,
        "pause_seconds": STEP_PAUSE_SECONDS,
        "erased": erased,
        "steps": done.steps if done is not None else 0,
        "erasing_steps": len(erasing),
        "postgres_seconds": round(erase_seconds + walk_seconds, 3),
        "pass_other_seconds": round(held.times.other_seconds, 3),
        "erasing_seconds": round(erase_seconds, 3),
        "walking_seconds": round(walk_seconds, 3),
        "erasing_step_max_ms": round(max(erasing, default=0.0) * 1000, 1),
        "erased_per_second": round(erased / erase_seconds, 1) if erase_seconds else 0.0,
        "walk_ms_per_1000_kept": round(walk_cost * 1_000_000, 3),
        "pass_wall_seconds": round(held.seconds, 1),
        "target_events": TARGET_EVENTS,
        "target_month_events": TARGET_MONTH,
        "extrapolated_seconds": round(erasing_month + walking_rest, 2),
        "extrapolated_erasing_seconds": round(erasing_month, 2),
        "extrapolated_walking_seconds": round(walking_rest, 2),
        "ingest_rate": sizes.rate,
        "ingest_with_pass": _kind(with_pass),
        "ingest_without": _kind(without),
    }
