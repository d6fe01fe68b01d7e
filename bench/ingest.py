"""Ingest: single-event POSTs per second to /v1/segment, beside a bare WSGI app.

Both run under the Procfile's web line (same gunicorn config, worker class and count),
in the same run, driven by the same load generator with the same body. The app's peak
is found closed-loop; then its latency is measured open-loop at half that rate (SPEC:
p99 under 50 ms at half of the peak rate).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from bench.data import track_body
from bench.env import BenchTeam, RunEnv, Web, busy_cores
from bench.load import LoadResult, LoadSpec, run_load


@dataclass
class IngestSizes:
    seconds: float
    concurrency: int
    processes: int
    users: int = 1000


def basic_auth(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def post_spec(
    base: str, team: BenchTeam, run: str, sizes: IngestSizes, rate: float | None = None
) -> LoadSpec:
    return LoadSpec(
        url=base + "/v1/segment",
        headers=basic_auth(team.key),
        body_template=track_body(run),
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


def measure_bare(run: RunEnv, team: BenchTeam, sizes: IngestSizes) -> dict[str, Any]:
    noise = busy_cores()
    web = Web("bare", run.process_env(), app_spec="bench.bare:app").wait_ready()
    try:
        result = run_load(post_spec(web.base, team, f"bare-{run.run_id}", sizes))
        return {**summary(result), "idle_busy_cores": noise, "peak_rss_mib": web.peak_rss()}
    finally:
        web.stop()


def measure_app(run: RunEnv, team: BenchTeam, sizes: IngestSizes, web: Web) -> dict[str, Any]:
    """Peak (closed loop), then latency at half of it (open loop)."""
    noise = busy_cores()
    peak = run_load(post_spec(web.base, team, f"peak-{run.run_id}", sizes))
    half_rate = max(10.0, peak.rate / 2)
    half = run_load(post_spec(web.base, team, f"half-{run.run_id}", sizes, rate=half_rate))
    return {
        **summary(peak),
        "idle_busy_cores": noise,
        "half_peak": summary(half),
    }
