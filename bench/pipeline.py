"""Web and worker together: lag from 200 to visible, and the end-to-end steady rate.

Lag: the load generator posts at a steady rate and notes when each 200 came back; a
watcher asks Postgres every few milliseconds which of the team's events are still
unfolded (a read of the small partial index). An event answered 200 at time t is
committed before t, so the first look that starts after t and no longer lists it saw
it folded, i.e. visible in its customer's feed. Lag = that look's start - t; it is
over-stated by at most one look interval, which is reported.

End to end: the highest offered rate (events/s) at which, for the whole probe, the
generator got its rate answered and the team's unfolded backlog stopped growing, for
both shapes: single-event POSTs, and `/v1/batch` with 100 events a request. Probes
start from the lower of that shape's ingest peak and the fold rate measured earlier
and search up or down.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.env import BenchTeam, RunEnv, Web, busy_cores
from bench.fold import wait_until_folded
from bench.ingest import IngestSizes, events_per_request, post_spec, summary
from bench.load import percentile, run_load

LOOK_INTERVAL = 0.005


@dataclass
class Look:
    started: float
    unfolded: frozenset[str]


class Watcher:
    """Looks at the team's unfolded message ids until stopped (at most `limit` seconds)."""

    def __init__(self, url: str, team_id: int, limit: float):
        self.url = url
        self.team_id = team_id
        self.limit = limit
        self.looks: list[Look] = []
        self.backlog: list[tuple[float, int]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(10)

    def _run(self) -> None:
        end = time.monotonic() + self.limit
        with psycopg.connect(self.url, autocommit=True) as connection:
            statement = "SELECT message_id FROM events WHERE team_id = %s AND folded_at IS NULL"
            while not self.stop_event.is_set() and time.monotonic() < end:
                started = time.monotonic()
                rows = connection.execute(statement, (self.team_id,), prepare=True).fetchall()
                self.looks.append(Look(started, frozenset(row[0] for row in rows)))
                self.backlog.append((started, len(rows)))
                self.stop_event.wait(max(0.0, LOOK_INTERVAL - (time.monotonic() - started)))


class BacklogSampler(Watcher):
    """Counts the team's unfolded events every 250 ms."""

    def _run(self) -> None:
        end = time.monotonic() + self.limit
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self.stop_event.is_set() and time.monotonic() < end:
                started = time.monotonic()
                row = connection.execute(
                    "SELECT count(*) FROM events WHERE team_id = %s AND folded_at IS NULL", (self.team_id,)
                ).fetchone()
                self.backlog.append((started, int(row[0]) if row else 0))
                self.stop_event.wait(0.25)


def visible_lags(records: list[tuple[str, float]], looks: list[Look], message_prefix: str) -> list[float]:
    """For each 2xx, seconds until the first look after it no longer listed it unfolded."""
    starts = [look.started for look in looks]
    lags: list[float] = []
    for n, answered in records:
        message_id = f"{message_prefix}-{n}"
        index = bisect_right(starts, answered)
        while index < len(looks) and message_id in looks[index].unfolded:
            index += 1
        if index < len(looks):
            lags.append(looks[index].started - answered)
    return lags


def measure_lag(
    run: RunEnv, team: BenchTeam, web: Web, rate: float, seconds: float, sizes: IngestSizes
) -> dict[str, Any]:
    noise = busy_cores()
    prefix = f"lag-{run.run_id}"
    spec = post_spec(
        web.base, team, prefix, IngestSizes(seconds, sizes.concurrency, 1, sizes.users), rate=rate
    )
    spec.record = True
    with Watcher(run.database_url, team.id, limit=seconds + 30) as watcher:
        result = run_load(spec)
        wait_until_folded(run.database_url, team.id, timeout=20)
        time.sleep(3 * LOOK_INTERVAL)
    lags = visible_lags(result.records, watcher.looks, prefix)
    intervals = [b.started - a.started for a, b in zip(watcher.looks, watcher.looks[1:], strict=False)]
    return {
        "rate": rate,
        "achieved_rate": round(result.rate, 1),
        "statuses": result.statuses,
        "events": len(result.records),
        "seen": len(lags),
        "p50_ms": round(percentile(lags, 50) * 1000, 1),
        "p99_ms": round(percentile(lags, 99) * 1000, 1),
        "max_ms": round(max(lags, default=0) * 1000, 1),
        "look_interval_ms": round(percentile(intervals, 50) * 1000, 1),
        "ingest_p99_ms": round(result.percentile_ms(99), 2),
        "idle_busy_cores": noise,
    }


def slope(points: list[tuple[float, int]]) -> float:
    """Least-squares growth of the backlog, in events per second."""
    if len(points) < 2:
        return 0.0
    xs = [x for x, _ in points]
    ys = [float(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def probe(
    run: RunEnv,
    team: BenchTeam,
    web: Web,
    rate: float,
    seconds: float,
    sizes: IngestSizes,
    shape: str = "single",
) -> dict[str, Any]:
    """Offer `rate` events/s for `seconds`; steady if answered at rate and the backlog did not grow."""
    per = events_per_request(shape)
    load_sizes = IngestSizes(seconds, sizes.concurrency, sizes.processes, sizes.users)
    tag = f"e2e-{shape}-{run.run_id}-{int(rate)}"
    spec = post_spec(web.base, team, tag, load_sizes, rate=rate / per, shape=shape)
    with BacklogSampler(run.database_url, team.id, limit=seconds + 10) as sampler:
        result = run_load(spec)
    samples = sampler.backlog
    second_half = [(t, n) for t, n in samples if t >= samples[0][0] + seconds / 2] if samples else []
    growth = slope(second_half)
    final = samples[-1][1] if samples else 0
    answered = result.rate * per >= 0.97 * rate and set(result.statuses) <= {"200"}
    steady = answered and growth <= 0.03 * rate and final <= max(2000.0, 1.0 * rate)
    return {
        "offered": round(rate),
        "answered_rate": round(result.rate * per, 1),
        "statuses": result.statuses,
        "backlog_growth_per_s": round(growth, 1),
        "final_backlog": final,
        "ingest_p99_ms": round(result.percentile_ms(99), 2),
        "steady": steady,
    }


def measure_end_to_end(
    run: RunEnv,
    team: BenchTeam,
    web: Web,
    start_rate: float,
    seconds: float,
    probes: int,
    sizes: IngestSizes,
    shape: str = "single",
) -> dict[str, Any]:
    """The highest steady rate in events/s of one shape, found in at most `probes` probes."""
    noise = busy_cores()
    results: list[dict[str, Any]] = []
    rate = start_rate
    low, high = 0.0, float("inf")  # highest steady, lowest unsteady so far
    for _ in range(probes):
        outcome = probe(run, team, web, rate, seconds, sizes, shape)
        results.append(outcome)
        if outcome["steady"]:
            low = max(low, rate)
        else:
            high = min(high, rate)
        try:
            wait_until_folded(run.database_url, team.id, timeout=30)
        except TimeoutError:
            break
        if high == float("inf"):
            rate *= 1.25  # steady so far: offer more
        elif low == 0.0:
            rate *= 0.7  # nothing steady yet: offer less
        elif high - low < 0.08 * high:
            break
        else:
            rate = (low + high) / 2
    return {
        "shape": shape,
        "events_per_request": events_per_request(shape),
        "rate": round(low, 1),
        "probes": results,
        "probe_seconds": seconds,
        "idle_busy_cores": noise,
        "summary": summary_line(results),
    }


def summary_line(results: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['offered']}/s {'steady' if r['steady'] else 'growing'}" for r in results)


__all__ = ["measure_end_to_end", "measure_lag", "summary"]
