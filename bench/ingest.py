"""Ingest, the two shapes clients send, each beside a bare WSGI app.

- single: one event per `POST /v1/segment`, over kept-alive connections (as Segment's
  delivery sends them);
- batch: `POST /v1/batch` with 100 events a request (as the SDKs flush).

App and bare app run under the Procfile's web line (same gunicorn config, worker class
and count), in the same run, driven by the same load generator with the same body, over
connections kept alive as long as the server keeps them. On a shared, noisy machine a
minute-long drift in other people's load would favour whichever ran second, so they
alternate in short rounds (bare, app, bare batch, app batch, ...) and each figure is
the median round. The app's single-event peak is closed-loop; then its latency is
measured open-loop at half that rate (SPEC: p99 under 50 ms at half of the peak rate).

Beside the rates, the CPU each request cost the web processes (and the Postgres
backends serving them): unlike a rate, that hardly moves with the machine's noise, so
it says what the ratio would be on a quiet machine and where the time goes.

The peak is taken with 64 connections (`bin/bench`; 8 with `--quick`), for both apps.
The bare app is CPU-bound with a handful of connections; the product's requests each
wait for their commit (~1 ms), and group commit turns concurrency into fewer commits:
with 16 connections a process had ~3-5 requests per commit and was latency-bound
(CPU to spare), with 64 ~15-17. A peak is the rate at saturation, so it is measured
where both saturate; one round each with 16 connections is reported beside it
(`ingest_few`), so the dependence is on the record.
"""

from __future__ import annotations

import base64
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.data import BATCH_EVENTS, batch_body, track_body
from bench.env import BenchTeam, RunEnv, Web, busy_cores
from bench.load import LoadResult, LoadSpec, percentile, run_load

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class IngestSizes:
    seconds: float
    concurrency: int
    processes: int
    users: int = 1000
    rounds: int = 1


def basic_auth(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


SHAPES = ("single", "batch")
# The connections of the reported low-concurrency round (see the module docstring).
FEW_CONNECTIONS = 16


def events_per_request(shape: str) -> int:
    return BATCH_EVENTS if shape == "batch" else 1


def post_spec(
    base: str,
    team: BenchTeam,
    run: str,
    sizes: IngestSizes,
    rate: float | None = None,
    shape: str = "single",
) -> LoadSpec:
    """The load of one shape; `rate` is in requests per second (None: closed loop)."""
    batch = shape == "batch"
    return LoadSpec(
        url=base + ("/v1/batch" if batch else "/v1/segment"),
        headers=basic_auth(team.key),
        body_template=batch_body(run) if batch else track_body(run),
        concurrency=sizes.concurrency,
        duration=sizes.seconds,
        rate=rate,
        processes=sizes.processes,
        users=sizes.users,
    )


def summary(result: LoadResult) -> dict[str, Any]:
    return {
        "rate": round(result.rate, 1),
        "ok": result.ok,
        "statuses": result.statuses,
        "p50_ms": round(result.percentile_ms(50), 2),
        "p99_ms": round(result.percentile_ms(99), 2),
        "seconds": round(result.elapsed, 2),
        "generator_cpu_cores": round(result.cpu_share, 2),
        "offered_rate": result.offered_rate,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def backend_pids(url: str) -> list[int]:
    """The Postgres backends connected to this database (the web's pool), if local."""
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows if Path(f"/proc/{row[0]}").exists()]


@dataclass
class Measured:
    result: LoadResult
    web_cpu_ms: float  # per answered request
    postgres_cpu_ms: float


def measure(web: Web, spec: LoadSpec, database_url: str) -> Measured:
    workers = web.worker_pids()
    backends = backend_pids(database_url)
    web0, pg0 = cpu_seconds(workers), cpu_seconds(backends)
    result = run_load(spec)
    web1, pg1 = cpu_seconds(workers), cpu_seconds(backends)
    per = 1000.0 / result.ok if result.ok else 0.0
    return Measured(result, (web1 - web0) * per, (pg1 - pg0) * per)


def merged(rounds: list[Measured]) -> dict[str, Any]:
    """The median round's rate; latency percentiles over every round's requests."""
    middle = sorted(rounds, key=lambda m: m.result.rate)[len(rounds) // 2]
    latencies = [lat for m in rounds for lat in m.result.latencies_us]
    statuses: dict[str, int] = {}
    for m in rounds:
        for status, count in m.result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        **summary(middle.result),
        "p50_ms": round(percentile(latencies, 50) / 1000, 2),
        "p99_ms": round(percentile(latencies, 99) / 1000, 2),
        "ok": sum(m.result.ok for m in rounds),
        "statuses": statuses,
        "round_rates": [round(m.result.rate, 1) for m in rounds],
        "web_cpu_ms_per_request": round(statistics.median(m.web_cpu_ms for m in rounds), 3),
        "postgres_cpu_ms_per_request": round(statistics.median(m.postgres_cpu_ms for m in rounds), 3),
    }


def with_events(figures: dict[str, Any], shape: str) -> dict[str, Any]:
    """Per-request figures plus events/s (a batch request carries 100 events)."""
    per = events_per_request(shape)
    return {
        **figures,
        "shape": shape,
        "events_per_request": per,
        "events_rate": round(figures["rate"] * per, 1),
    }


def measure_ingest(run: RunEnv, team: BenchTeam, sizes: IngestSizes, web: Web) -> dict[str, dict[str, Any]]:
    """The bare ceiling and the app, alternating, for both shapes; then the app at half its peak."""
    noise = busy_cores()
    bare_web = Web("bare", run.process_env(), app_spec="bench.bare:app").wait_ready()
    rounds: dict[tuple[str, str], list[Measured]] = {}
    try:
        warm = IngestSizes(0.5, sizes.concurrency, 1, sizes.users)
        for target in (bare_web, web):  # connections, pools, prepared statements
            for shape in SHAPES:
                run_load(post_spec(target.base, team, f"warm-{run.run_id}-{target.name}", warm, shape=shape))
        for index in range(sizes.rounds):
            for shape in SHAPES:
                for target in (bare_web, web):
                    tag = f"{target.name}-{shape}-{run.run_id}-{index}"
                    spec = post_spec(target.base, team, tag, sizes, shape=shape)
                    rounds.setdefault((target.name, shape), []).append(
                        measure(target, spec, run.database_url)
                    )
        few = None
        if sizes.concurrency > FEW_CONNECTIONS:
            few_sizes = IngestSizes(sizes.seconds, FEW_CONNECTIONS, sizes.processes, sizes.users)
            few = {}
            for target in (bare_web, web):
                spec = post_spec(target.base, team, f"few-{target.name}-{run.run_id}", few_sizes)
                measured = measure(target, spec, run.database_url)
                few[target.name] = {
                    **summary(measured.result),
                    "web_cpu_ms_per_request": round(measured.web_cpu_ms, 3),
                }
        bare_rss = bare_web.peak_rss()
    finally:
        bare_web.stop()
    app_summary = merged(rounds[(web.name, "single")])
    half_rate = max(10.0, app_summary["rate"] / 2)
    half_sizes = IngestSizes(sizes.seconds * 1.5, sizes.concurrency, sizes.processes, sizes.users)
    half = run_load(post_spec(web.base, team, f"half-{run.run_id}", half_sizes, rate=half_rate))
    return {
        "bare": {
            **with_events(merged(rounds[(bare_web.name, "single")]), "single"),
            "idle_busy_cores": noise,
            "peak_rss_mib": bare_rss,
        },
        "app": {
            **with_events(app_summary, "single"),
            "idle_busy_cores": noise,
            "half_peak": summary(half),
            "connections": sizes.concurrency,
        },
        "bare_batch": {
            **with_events(merged(rounds[(bare_web.name, "batch")]), "batch"),
            "idle_busy_cores": noise,
        },
        "batch": {**with_events(merged(rounds[(web.name, "batch")]), "batch"), "idle_busy_cores": noise},
        "few": {"connections": FEW_CONNECTIONS, "bare": few["bare"], "app": few[web.name]} if few else {},
    }
