"""Web and worker together: lag from 200 to visible, and the end-to-end steady rate.

Lag: the load generator posts at a steady rate and notes when each 200 came back; a
watcher asks Postgres every few milliseconds which of the team's events are still
unfolded (a read of the small partial index). An event answered 200 at time t is
committed before t, so the first look that starts after t and no longer lists it saw
it folded, i.e. visible in its customer's feed. Lag = that look's start - t; it is
over-stated by at most one look interval, which is reported.

End to end: the highest offered rate (events/s) at which, for the whole probe, the
generator got its rate answered and the team's unfolded backlog stopped growing, for
both shapes: single-event POSTs, and `/v1/batch` with 100 events a request. The first
probe offers 90% of the lower of that shape's ingest peak and the fold rate measured
earlier; `bench/search.py` then brackets and bisects, down as well as up, in a bounded
number of probes. Each probe also counts what the fold folded meanwhile: its rate
beside that ingest, reported beside its rate alone.
"""

from __future__ import annotations

import sys
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
from bench.search import Outcome, find_steady_rate, is_steady

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
                # Interned: a look repeats most of the last one's ids (one copy of each in memory).
                self.looks.append(Look(started, frozenset(sys.intern(row[0]) for row in rows)))
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


def lags_with_unseen(
    records: list[tuple[str, float]], looks: list[Look], message_prefix: str
) -> tuple[list[float], list[float]]:
    """(lags of the events seen folded, the waits so far of those never seen folded)."""
    starts = [look.started for look in looks]
    seen: list[float] = []
    unseen: list[float] = []
    end = looks[-1].started if looks else 0.0
    for n, answered in records:
        message_id = f"{message_prefix}-{n}"
        index = bisect_right(starts, answered)
        while index < len(looks) and message_id in looks[index].unfolded:
            index += 1
        if index < len(looks):
            seen.append(looks[index].started - answered)
        else:
            unseen.append(max(0.0, end - answered))
    return seen, unseen


def visible_lags(records: list[tuple[str, float]], looks: list[Look], message_prefix: str) -> list[float]:
    """For each 2xx, seconds until the first look after it no longer listed it unfolded."""
    return lags_with_unseen(records, looks, message_prefix)[0]


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


def unfolded_count(url: str, team_id: int) -> tuple[float, int]:
    """(when it was read, the team's unfolded events)."""
    with psycopg.connect(url, autocommit=True) as connection:
        started = time.monotonic()
        row = connection.execute(
            "SELECT count(*) FROM events WHERE team_id = %s AND folded_at IS NULL", (team_id,)
        ).fetchone()
    return started, int(row[0]) if row else 0


def probe(
    run: RunEnv,
    team: BenchTeam,
    web: Web,
    rate: float,
    seconds: float,
    sizes: IngestSizes,
    shape: str = "single",
) -> Outcome:
    """Offer `rate` events/s for `seconds`; steady if answered at rate and the backlog did not grow.

    The backlog may not be empty at the start (what an earlier, too high probe left that
    the bounded wait did not see folded): the probe judges its growth during the probe,
    not its size, and counts what the fold folded meanwhile (accepted events + backlog
    before - backlog after): the fold's rate beside this ingest.
    """
    per = events_per_request(shape)
    load_sizes = IngestSizes(seconds, sizes.concurrency, sizes.processes, sizes.users)
    tag = f"e2e-{shape}-{run.run_id}-{int(rate)}"
    spec = post_spec(web.base, team, tag, load_sizes, rate=rate / per, shape=shape)
    before_at, before = unfolded_count(run.database_url, team.id)
    with BacklogSampler(run.database_url, team.id, limit=seconds + 10) as sampler:
        result = run_load(spec)
    after_at, after = unfolded_count(run.database_url, team.id)
    samples = sampler.backlog
    second_half = [(t, n) for t, n in samples if t >= samples[0][0] + seconds / 2] if samples else []
    growth = slope(second_half)
    accepted = result.ok * per
    # Over the load's own span: the counts bracket it by well under a second.
    folded_rate = max(0.0, accepted + before - after) / max(result.elapsed, after_at - before_at - 1.0, 0.1)
    every_one = set(result.statuses) <= {"200"}
    steady = every_one and is_steady(rate, result.rate * per, growth, after - before, seconds)
    return Outcome(
        steady,
        folded_rate if not steady else None,
        {
            "offered": round(rate),
            "answered_rate": round(result.rate * per, 1),
            "statuses": result.statuses,
            "backlog_growth_per_s": round(growth, 1),
            "backlog_before": before,
            "final_backlog": after,
            "folded_rate": round(folded_rate, 1),
            "ingest_p99_ms": round(result.percentile_ms(99), 2),
            "steady": steady,
        },
    )


def discard_unfolded(url: str, team_id: int) -> int:
    """Delete the team's unfolded events (a worker folding some meanwhile keeps those); how many."""
    with psycopg.connect(url, autocommit=True) as connection:
        deleted = connection.execute(
            "DELETE FROM events WHERE team_id = %s AND folded_at IS NULL", (team_id,)
        ).rowcount
    return max(0, deleted)


def measure_end_to_end(
    run: RunEnv,
    team: BenchTeam,
    web: Web,
    start_rate: float,
    seconds: float,
    probes: int,
    sizes: IngestSizes,
    shape: str = "single",
    drain_seconds: float = 10.0,
    budget_seconds: float = 75.0,
) -> dict[str, Any]:
    """The highest steady rate in events/s of one shape, found in at most `probes` probes.

    Between probes the backlog an unsteady probe left is given at most `drain_seconds`
    to fold; what is left then is deleted, so that every probe starts from an empty
    backlog (a big backlog left by a too-high probe folded at ~500-1,000/s here, against
    ~11,000/s alone, while the team's statistics were stale: every later probe failed
    on it). Each run is bounded by probes x (seconds + drain_seconds + a few) and finds
    a rate. No probe starts once it might end after `budget_seconds` from the start.
    """
    noise = busy_cores()

    def offer(rate: float) -> Outcome:
        outcome = probe(run, team, web, rate, seconds, sizes, shape)
        try:
            outcome.details["drained_seconds"] = round(
                wait_until_folded(run.database_url, team.id, timeout=drain_seconds), 1
            )
        except TimeoutError:
            outcome.details["discarded"] = discard_unfolded(run.database_url, team.id)
        return outcome

    # A probe the web cannot answer ends up to 10 s after its span (the load generator's
    # bound for a stalled server): no new probe once the next one might end past the budget.
    ends = time.monotonic() + budget_seconds - seconds - 10

    search = find_steady_rate(offer, start_rate, probes, time_left=lambda: time.monotonic() < ends)
    results = [outcome.details for _, outcome in search.probes]
    steady = [r for r in results if r["steady"] and r["offered"] <= search.rate]
    growing = [r for r in results if not r["steady"]]
    return {
        "shape": shape,
        "events_per_request": events_per_request(shape),
        "rate": round(search.rate, 1),
        "converged": search.converged,
        "lowest_growing": round(search.unsteady, 1) if search.unsteady is not None else None,
        "probes": results,
        "probe_seconds": seconds,
        # The fold beside ingest: during the steady probe kept (it kept up with that
        # ingest), and during the lowest growing one (all it could do beside that ingest).
        "fold_beside_steady": max(steady, key=lambda r: r["offered"])["folded_rate"] if steady else None,
        "fold_beside_growing": min(growing, key=lambda r: r["offered"]) if growing else None,
        "idle_busy_cores": noise,
        "summary": search.summary,
    }


__all__ = ["measure_end_to_end", "measure_lag", "summary"]
