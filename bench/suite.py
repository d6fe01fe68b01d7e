"""The whole suite, in an order that keeps each figure's neighbours quiet.

1. servers, the bench databases, the 10M-event feed dataset (kept between runs; so is
   the retention phase's 10M-event table);
2. ingest: the bare WSGI ceiling and the app, single events and batches of 100
   (peak, then half of the single-event peak);
3. slow clients: behaved clients' latency while 200 connections trickle at 1 byte/s;
4. fold: a stored backlog by one worker, and the batched-INSERT ceiling;
5. web + worker together: lag at a steady 500 events/s, then the end-to-end rate of
   both shapes;
6. feed reads over HTTP and the same SQL in Postgres;
7. the import beside a plain COPY; the one-RQ-job-per-event baseline;
8. fair share (bench/isolation.py): another team's ingest p99 while one team floods,
   a quiet team's lag while a neighbour's 1-million-event backlog folds (one worker;
   two workers and three busy neighbours), the busy team's fold rate beside it;
peak RSS of every process measured.

Every load loop is bounded in time; the whole run is meant to fit in 10 minutes
(the first run, which builds the feed dataset, included).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
from redis import Redis
from rq import Queue

from bench import feed as feed_bench
from bench.console import measure_console
from bench.env import (
    LOCAL,
    NOISE_SAMPLE,
    ROOT,
    BenchTeam,
    FoldWorker,
    RunEnv,
    Servers,
    Web,
    busy_cores,
    make_team,
)
from bench.fold import measure_fold
from bench.imports import IMPORT_EVENTS, measure_import
from bench.ingest import IngestSizes, measure_ingest, post_spec
from bench.isolation import IsolationSizes, measure_isolation
from bench.live import LiveSizes, measure_live
from bench.load import run_load
from bench.pipeline import measure_end_to_end, measure_lag
from bench.profiling import Recording
from bench.retention import RetentionSizes, measure_retention
from bench.rqbaseline import measure_rq_baseline
from bench.slow import SlowSizes, measure_slow_clients
from bench.storage import measure_storage


@dataclass(frozen=True)
class Sizes:
    ingest_seconds: float
    ingest_rounds: int
    ingest_concurrency: int
    ingest_processes: int
    fold_events: int
    lag_rate: float
    lag_seconds: float
    e2e_seconds: float
    e2e_probes: int
    e2e_drain_seconds: float
    e2e_budget_seconds: float
    feed_events: int
    feed_customer_events: int
    feed_depth: int
    feed_seconds: float
    rq_jobs: int
    profile_seconds: float
    slow_seconds: float
    slow_rounds: int
    isolation: IsolationSizes
    live: LiveSizes
    storage_people: int
    retention: RetentionSizes


FULL = Sizes(
    ingest_seconds=5,
    ingest_rounds=3,
    # Enough connections to saturate either server (bench/ingest.py says why 64).
    ingest_concurrency=64,
    ingest_processes=2,
    fold_events=100_000,
    lag_rate=500,
    lag_seconds=20,
    e2e_seconds=8,
    e2e_probes=5,
    e2e_drain_seconds=10,
    e2e_budget_seconds=75,
    feed_events=10_000_000,
    feed_customer_events=100_000,
    feed_depth=10_000,
    feed_seconds=5,
    rq_jobs=3000,
    profile_seconds=8,
    slow_seconds=6,
    slow_rounds=2,
    isolation=IsolationSizes(
        backlog_events=1_000_000,
        neighbour_events=250_000,
        alone_seconds=6,
        trickle_seconds=12,
        trickle_rate=25,
        settle_seconds=3,
        flood_seconds=4,
        other_rate=200,
        flood_concurrency=16,
    ),
    # The figures: 1,000 open customer pages (a stream each) on one process, 500
    # events/s flowing to those customers.
    live=LiveSizes(customers=1000, streams=1000, rate=500, seconds=8, rounds=2),
    storage_people=2000,  # x 14 events of the real clients' sample
    # A month (833,333 events) of a 10,000,000-event table expired, beside 200 POSTs/s;
    # a team with a shorter retention expires 20,000 of its 40,000 events row by row.
    retention=RetentionSizes(
        table_events=10_000_000,
        short_expired=20_000,
        short_kept=20_000,
        rate=200,
        window_seconds=3,
        settle_windows=3,
    ),
)

QUICK = Sizes(
    ingest_seconds=1,
    ingest_rounds=1,
    ingest_concurrency=8,
    ingest_processes=1,
    fold_events=3000,
    lag_rate=500,
    lag_seconds=1,
    e2e_seconds=1,
    e2e_probes=2,
    e2e_drain_seconds=5,
    e2e_budget_seconds=20,
    feed_events=20_000,
    feed_customer_events=2_000,
    feed_depth=1_000,
    feed_seconds=1,
    rq_jobs=50,
    profile_seconds=2,
    slow_seconds=1,
    slow_rounds=1,
    isolation=IsolationSizes(
        backlog_events=20_000,
        neighbour_events=5_000,
        alone_seconds=1,
        trickle_seconds=1,
        trickle_rate=20,
        settle_seconds=1,
        flood_seconds=1,
        other_rate=100,
        flood_concurrency=4,
    ),
    live=LiveSizes(customers=8, streams=8, rate=40, seconds=1, rounds=1),
    storage_people=20,
    retention=RetentionSizes(
        table_events=24_000,
        short_expired=3000,
        short_kept=2000,
        rate=50,
        window_seconds=0.5,
        settle_windows=1,
    ),
)


PHASES = (
    "ingest",
    "slow",
    "fold",
    "pipeline",
    "feed",
    "rq",
    "imports",
    "isolation",
    "live",
    "storage",
    "retention",
)


@dataclass
class Options:
    quick: bool = False
    fresh: bool = False
    profile: bool = False
    database_prefix: str = "tl_bench"
    drop_databases: bool = False  # the smoke test cleans up after itself
    only: tuple[str, ...] = PHASES
    env: dict[str, str] = field(default_factory=dict)  # for the processes under test


@contextmanager
def phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    print(f"[bench] {name}...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - started, 1)
        print(f"[bench] {name}: {timings[name]}s", file=sys.stderr, flush=True)


def machine(servers: Servers, env: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kib = 0
    with psycopg.connect(servers.postgres_url, autocommit=True) as connection:
        postgres = connection.execute("SHOW server_version").fetchone()
        commit = connection.execute("SHOW synchronous_commit").fetchone()
    redis = Redis.from_url(servers.redis_url)
    try:
        info = cast(dict[str, object], redis.info("server"))  # redis-py types it as maybe-async
        redis_version = str(info.get("redis_version"))
    finally:
        redis.close()
    gunicorn = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app.serving.gunicorn_config as c; print(c.workers, c.worker_class, c.threads)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, **env},
    ).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": postgres[0] if postgres else None,
        "synchronous_commit": commit[0] if commit else None,
        "redis": redis_version,
        "gunicorn": {"workers": gunicorn[0], "worker_class": gunicorn[1], "threads": gunicorn[2]}
        if len(gunicorn) == 3
        else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def discard_unfolded(url: str, redis: Redis, queue: str, team_id: int) -> None:
    """Forget a phase's unfolded events and queued folds, so the next phase starts clean."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DELETE FROM events WHERE team_id = %s AND folded_at IS NULL", (team_id,))
    Queue(queue, connection=redis).empty()  # type: ignore[no-untyped-call]


def run_suite(options: Options) -> dict[str, Any]:
    sizes = QUICK if options.quick else FULL
    NOISE_SAMPLE["seconds"] = 0.1 if options.quick else 0.5
    started = time.monotonic()
    timings: dict[str, float] = {}
    details: dict[str, Any] = {}
    servers = Servers.start(dict(os.environ))
    run: RunEnv | None = None
    processes: list[Web | FoldWorker] = []
    write_db = options.database_prefix
    feed_db = f"{options.database_prefix}_feed"
    retention_db = f"{options.database_prefix}_retention"  # kept between runs, as the feed's
    try:
        meta: dict[str, Any] = {
            "mode": "quick" if options.quick else "full",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(servers, options.env),
            "sizes": asdict(sizes),
            "phases": list(options.only),
            "env": options.env,
        }
        with phase("setup", timings):
            write_url, _ = servers.create_database(write_db, fresh=True)
            run = RunEnv(servers, write_url, extra_env=options.env)
            redis = run.redis()
            teams = {
                name: make_team(write_url, f"bench {name}")
                for name in ("ingest", "slow", "fold", "lag", "e2e", "e2e_batch")
            }
            live_team = make_team(write_url, "bench live")
            isolation_teams = {
                name: make_team(write_url, f"bench {name}")
                for name in ("busy", "busy_2", "busy_3", "quiet", "other", "flooder")
            }
        dataset = None
        if "feed" in options.only:
            with phase("feed dataset", timings):
                dataset = feed_bench.ensure_dataset(
                    servers, feed_db, sizes.feed_events, sizes.feed_customer_events, options.fresh
                )
                details["feed_dataset"] = {
                    "events": dataset.events,
                    "customer_events": dataset.customer_events,
                    "built_seconds": round(dataset.built_seconds, 1) if dataset.built_seconds else None,
                    "reused": dataset.built_seconds is None,
                }
        shape = IngestSizes(
            sizes.ingest_seconds, sizes.ingest_concurrency, sizes.ingest_processes, rounds=sizes.ingest_rounds
        )
        web: Web | None = None
        if {"ingest", "pipeline", "slow"} & set(options.only):
            web = Web("web", run.process_env()).wait_ready("/readyz")
            processes.append(web)
        if "ingest" in options.only and web is not None:
            with phase("ingest: the app beside the bare WSGI ceiling", timings):
                both = measure_ingest(run, teams["ingest"], shape, web)
                details["ingest_bare"], details["ingest"] = both["bare"], both["app"]
                details["ingest_bare_batch"], details["ingest_batch"] = both["bare_batch"], both["batch"]
                if both["few"]:
                    details["ingest_few"] = both["few"]
                if options.profile:
                    details["ingest"]["profile"] = profile_ingest(run, teams["ingest"], web, sizes)
                discard_unfolded(write_url, redis, run.fold_queue, teams["ingest"].id)
        if "slow" in options.only and web is not None:
            with phase("slow clients: 200 trickling beside behaved ones", timings):
                slow_sizes = SlowSizes(sizes.slow_seconds, sizes.slow_rounds)
                details["slow_clients"] = measure_slow_clients(web, teams["slow"], run.run_id, slow_sizes)
                discard_unfolded(write_url, redis, run.fold_queue, teams["slow"].id)
        if "fold" in options.only:
            with phase("fold", timings):
                details["fold"] = measure_fold_phase(run, teams["fold"], sizes, options.profile)
        if "pipeline" in options.only and web is not None:
            with phase("lag and end to end (web + worker)", timings):
                worker = FoldWorker("worker", run.process_env()).wait_ready(redis, run.fold_queue)
                processes.append(worker)
                details["lag"] = measure_lag(run, teams["lag"], web, sizes.lag_rate, sizes.lag_seconds, shape)
                for key, team_name, ingest_key, shape_name in (
                    ("end_to_end", "e2e", "ingest", "single"),
                    ("end_to_end_batch", "e2e_batch", "ingest_batch", "batch"),
                ):
                    known = [details[ingest_key]["events_rate"]] if ingest_key in details else []
                    known += [details["fold"]["rate"]] if "fold" in details else []
                    start_rate = 0.9 * min(known) if known else 3000.0
                    details[key] = measure_end_to_end(
                        run,
                        teams[team_name],
                        web,
                        start_rate,
                        sizes.e2e_seconds,
                        sizes.e2e_probes,
                        shape,
                        shape_name,
                        sizes.e2e_drain_seconds,
                        sizes.e2e_budget_seconds,
                    )
                details["memory"] = {"worker_peak_rss_mib": round(worker.peak_rss() or 0, 1)}
        if web is not None:
            details.setdefault("memory", {})["web_peak_rss_mib"] = [round(x, 1) for x in web.peak_rss()]
        if "ingest_bare" in details:
            bare_rss = details["ingest_bare"].pop("peak_rss_mib")
            details["memory"]["bare_web_peak_rss_mib"] = [round(x, 1) for x in bare_rss]
        if "fold" in details:
            details.setdefault("memory", {})["fold_worker_peak_rss_mib"] = details["fold"].get("peak_rss_mib")
        for process in processes:
            process.stop()
        processes.clear()
        if dataset is not None:
            with phase("feed reads", timings):
                details["feed"] = measure_feed(run, dataset, sizes)
        if "imports" in options.only:
            with phase("import: flask events import beside a plain COPY; the fold of it", timings):
                events = IMPORT_EVENTS["quick" if options.quick else "full"]
                details["import"] = measure_import(run, events, 600)
        if "isolation" in options.only:
            with phase("fair share: a flood beside another team; a quiet team beside big backlogs", timings):
                details["isolation"] = measure_isolation(run, isolation_teams, sizes.isolation)
        if "live" in options.only:
            with phase("live streams: an event to the open customer pages; what open pages cost", timings):
                details["live"] = measure_live(run, live_team, sizes.live)
        if "storage" in options.only:
            with phase("bytes on disk per real event, beside its gzip'd archive", timings):
                details["storage"] = measure_storage(
                    servers, f"{options.database_prefix}_storage", sizes.storage_people
                )
        if "retention" in options.only:
            with phase("retention: dropping a month, a shorter retention row by row; ingest beside", timings):
                details["retention"] = measure_retention(
                    run, servers, retention_db, sizes.retention, options.fresh
                )
        if "rq" in options.only:
            with phase("one RQ job per event (baseline)", timings):
                details["rq_per_event"] = measure_rq_baseline(
                    servers.redis_url, f"{run.fold_queue}-baseline", sizes.rq_jobs
                )
        meta["seconds"] = round(time.monotonic() - started, 1)
        meta["phase_seconds"] = timings
        meta["busy_cores_at_end"] = busy_cores()
        redis.close()
        return {"meta": meta, "details": details}
    finally:
        for process in processes:
            process.stop()
        if run is not None:
            run.cleanup()
        if options.drop_databases:
            servers.drop_database(write_db)
            servers.drop_database(feed_db)
            servers.drop_database(retention_db)
        servers.stop()


def measure_fold_phase(run: RunEnv, team: BenchTeam, sizes: Sizes, profile: bool) -> dict[str, Any]:
    on_worker = None
    if profile:

        def on_worker(worker: FoldWorker) -> Recording:
            output = LOCAL / "profiles" / "fold.txt"
            return Recording(worker.pid, sizes.profile_seconds, output, thread="MainThread")

    result = measure_fold(run, team, sizes.fold_events, 240, on_worker)
    recording = result.pop("profile")
    if isinstance(recording, Recording):
        result["profile"] = recording.finish()
    return result


def profile_ingest(run: RunEnv, team: BenchTeam, web: Web, sizes: Sizes) -> dict[str, Any]:
    """Closed-loop load again while py-spy samples one web worker (figures not kept)."""
    pid = web.worker_pids()[0]
    recording = Recording(pid, sizes.profile_seconds, LOCAL / "profiles" / "ingest.txt")
    shape = IngestSizes(sizes.profile_seconds + 1, sizes.ingest_concurrency, sizes.ingest_processes)
    run_load(post_spec(web.base, team, f"profile-{run.run_id}", shape))
    return recording.finish()


def measure_feed(run: RunEnv, dataset: feed_bench.FeedDataset, sizes: Sizes) -> dict[str, Any]:
    web = Web("feed-web", run.process_env(database_url=dataset.url)).wait_ready("/readyz")
    try:
        path = f"/api/v1/customers/{dataset.customer_id}/feed"
        key = dataset.team.key
        deep = feed_bench.deep_cursor(web.base, path, key, sizes.feed_depth)
        out: dict[str, Any] = {"depth": sizes.feed_depth}
        pages = {"first_page": path, "deep_page": f"{path}?cursor={deep}"}
        statements = feed_bench.feed_statements(dataset.url, run.servers.redis_url, list(pages.values()), key)
        for (name, url_path), statement in zip(pages.items(), statements, strict=True):
            http = feed_bench.http_latency(web.base, url_path, key, sizes.feed_seconds)
            sql = feed_bench.pgbench_latency(dataset.url, statement.sql, sizes.feed_seconds)
            out[name] = {
                "http": asdict(http),
                "sql": asdict(sql),
                "statement": statement.sql,
                "statements_per_request": statement.statements_per_request,
                "plan": feed_bench.plan_check(dataset.url, statement.sql),
            }
            plan = out[name]["plan"]
            verdict = "holds" if plan["holds"] else "FAILS: " + "; ".join(plan["problems"])
            if name != "first_page":  # a deep page may cross into an older month: reported only
                verdict = f"reported ({verdict})"
            print(f"[bench] feed {name} plan: {verdict} ({plan['shape']})", file=sys.stderr, flush=True)
        out["console"] = measure_console(web.base, dataset, sizes.feed_seconds, out["first_page"])
        out["web_peak_rss_mib"] = [round(x, 1) for x in web.peak_rss()]
    finally:
        web.stop()
    # The HTTP floor: the same GET, same client, answered by the bare WSGI app.
    bare = Web("feed-bare", run.process_env(), app_spec="bench.bare:app").wait_ready()
    try:
        floor = feed_bench.http_latency(bare.base, path, key, sizes.feed_seconds)
        out["http_floor"] = asdict(floor)
    finally:
        bare.stop()
    return out
