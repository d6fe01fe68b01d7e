"""Fair share (SPEC §13): what one team's load does to another team, on the Procfile's stack.

Three measurements, all over one web process (the Procfile's web line) and fold workers
started exactly as the Procfile starts them (`python -m workers`, so whatever queues the
worker listens to come with it):

- Flood: another team posts single events at a steady, modest rate (open loop) while
  nobody else sends (quiet), while one team floods refused events (each over the 32 KiB
  event cap), and while it floods accepted ones (`/v1/batch` x100, closed loop, as fast
  as it is answered); its p99 in each, beside the quiet one. One worker folds meanwhile,
  as on the stack. The accepted flood goes last: the fold of its backlog would otherwise
  still be running during the next round.
- Lag with one worker: a busy team's backlog (1,000,000 events with `bin/bench`) is
  stored with the import's own path (bench/backlog.py: `store.imports`, binary COPY, as `flask events
  import` stores an archive), a worker starts on it; after a window in which it folds
  alone, a quiet team posts a trickle of events over HTTP and a watcher looks every few
  milliseconds which of them are still unfolded (as the lag row does, bench/pipeline.py).
  The quiet team's lag is 200 -> folded; an event still unfolded when the watch ends
  counts with the time it had waited so far, and a p99 that lands on such an event is a
  lower bound (shown as "> x s"). The backlog need not be folded to the end: its size
  only has to outlast the windows.
- Lag with two workers and three busy neighbours: two more teams' backlogs are stored
  the same way, two workers start on all three, and the quiet team trickles again.

The busy team's fold rate, alone and while the quiet team trickles, is counted after
the windows from `folded_at` (set by the fold at the start of each batch), so nothing
reads the big backlog while it folds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from redis import Redis
from rq import Queue

from bench.backlog import store_backlog, store_rows
from bench.data import track_body
from bench.env import BenchTeam, FoldWorker, RunEnv, Web, busy_cores
from bench.fold import take_statistics
from bench.ingest import IngestSizes, basic_auth, post_spec
from bench.load import LoadResult, LoadSpec, run_load
from bench.pipeline import Watcher, lags_with_unseen
from schemas.segment import MAX_EVENT_BYTES
from service.fold_queue import flag_key, request_fold


@dataclass(frozen=True)
class IsolationSizes:
    backlog_events: int  # the busy neighbour's backlog
    neighbour_events: int  # each of the two more busy neighbours' (two-worker row)
    alone_seconds: float  # the busy team folds alone
    trickle_seconds: float  # the quiet team trickles
    trickle_rate: float  # events/s
    settle_seconds: float  # at most this long after the trickle for its last events
    flood_seconds: float
    other_rate: float  # the other team's events/s during the flood rounds
    flood_concurrency: int


# ---------------------------------------------------------------------------------------
# The quiet team's lag


def lag_figures(seen: list[float], unseen: list[float]) -> dict[str, Any]:
    """p50/p99 over every event; a percentile that lands on an unseen one is a lower bound."""
    marked = sorted([(lag, False) for lag in seen] + [(wait, True) for wait in unseen])

    def at(p: float) -> tuple[float, bool]:
        if not marked:
            return 0.0, False
        rank = max(0, min(len(marked) - 1, int(round(p / 100.0 * len(marked) + 0.5)) - 1))
        return marked[rank]

    p50, p50_bound = at(50)
    p99, p99_bound = at(99)
    return {
        "events": len(marked),
        "seen": len(seen),
        "unseen": len(unseen),
        "p50_ms": round(p50 * 1000, 1),
        "p50_is_lower_bound": p50_bound,
        "p99_ms": round(p99 * 1000, 1),
        "p99_is_lower_bound": p99_bound,
        "max_seen_ms": round(max(seen, default=0.0) * 1000, 1),
    }


def quiet_lag(
    run: RunEnv, quiet: BenchTeam, web: Web, tag: str, sizes: IsolationSizes, watcher: Watcher
) -> tuple[dict[str, Any], tuple[datetime, datetime]]:
    """The quiet team trickles over HTTP; its lag (200 -> folded); the trickle's wall-clock span.

    `watcher` looks at the quiet team's unfolded events meanwhile (the caller keeps it
    looking through the windows around, so each window pays for the same looks).
    """
    prefix = f"quiet-{tag}-{run.run_id}"
    spec = post_spec(
        web.base, quiet, prefix, IngestSizes(sizes.trickle_seconds, 4, 1), rate=sizes.trickle_rate
    )
    spec.record = True
    began = datetime.now(UTC)
    result = run_load(spec)
    ended, after = datetime.now(UTC), time.monotonic()
    deadline = after + sizes.settle_seconds
    while time.monotonic() < deadline:  # until a look after the trickle finds all of it folded
        last = watcher.looks[-1] if watcher.looks else None
        if last is not None and last.started > after:
            if not any(message_id.startswith(prefix) for message_id in last.unfolded):
                break
        time.sleep(0.05)
    time.sleep(0.02)
    seen, unseen = lags_with_unseen(result.records, list(watcher.looks), prefix)
    figures = lag_figures(seen, unseen)
    figures.update(
        rate=sizes.trickle_rate,
        seconds=sizes.trickle_seconds,
        statuses=result.statuses,
        ingest_p99_ms=round(result.percentile_ms(99), 2),
    )
    return figures, (began, ended)


def window(seconds: float) -> tuple[datetime, datetime]:
    """Wait `seconds`; the wall-clock span waited."""
    began = datetime.now(UTC)
    time.sleep(seconds)
    return began, datetime.now(UTC)


# ---------------------------------------------------------------------------------------
# Workers and folded counts


def start_workers(run: RunEnv, redis: Redis, count: int, name: str) -> list[FoldWorker]:
    workers = [FoldWorker(f"{name}-{n}", run.process_env()) for n in range(count)]
    for worker in workers:
        worker.wait_ready(redis, run.fold_queue)
    return workers


def forget_wakeups(run: RunEnv, redis: Redis, team_ids: list[int]) -> None:
    """An empty queue and no flags: what stopped workers left queued folds nothing next."""
    Queue(run.fold_queue, connection=redis).empty()  # type: ignore[no-untyped-call]
    for team_id in team_ids:
        redis.delete(flag_key(run.redis_prefix, team_id))


def wake(run: RunEnv, redis: Redis, team_ids: list[int]) -> None:
    for team_id in team_ids:
        request_fold(redis, run.fold_queue, run.redis_prefix, team_id)


def folded_in(url: str, team_id: int, windows: dict[str, tuple[datetime, datetime]]) -> dict[str, int]:
    """How many of the team's events the fold folded in each window (by their `folded_at`)."""
    out: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as connection:
        for name, (began, ended) in windows.items():
            row = connection.execute(
                "SELECT count(*) FROM events WHERE team_id = %s AND folded_at >= %s AND folded_at < %s",
                (team_id, began, ended),
            ).fetchone()
            out[name] = int(row[0]) if row else 0
    return out


def rate_in(counts: dict[str, int], windows: dict[str, tuple[datetime, datetime]], *names: str) -> float:
    """Events/s over the named windows together."""
    seconds = sum((windows[name][1] - windows[name][0]).total_seconds() for name in names)
    return round(sum(counts[name] for name in names) / seconds, 1) if seconds > 0 else 0.0


def unfolded_of(url: str, team_id: int) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM events WHERE team_id = %s AND folded_at IS NULL", (team_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def discard_unfolded(url: str, team_ids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DELETE FROM events WHERE team_id = ANY(%s) AND folded_at IS NULL", (team_ids,))


def stop_all(workers: list[FoldWorker]) -> None:
    for worker in workers:
        worker.stop_now()


# ---------------------------------------------------------------------------------------
# The phase


def measure_fair_share(
    run: RunEnv, web: Web, teams: dict[str, BenchTeam], sizes: IsolationSizes
) -> dict[str, Any]:
    """The lag rows (one worker; two workers and three busy neighbours) and the busy team's rate."""
    redis = run.redis()
    busy, quiet = teams["busy"], teams["quiet"]
    neighbours = [teams["busy_2"], teams["busy_3"]]
    out: dict[str, Any] = {"backlog_events": sizes.backlog_events, "neighbour_events": sizes.neighbour_events}
    workers: list[FoldWorker] = []
    try:
        started = time.monotonic()
        kept = store_backlog(run.database_url, busy.id, sizes.backlog_events, keep=sizes.neighbour_events)
        take_statistics(run.database_url)  # as bench/fold.py does: the same plans in both windows
        out["backlog_store_seconds"] = round(time.monotonic() - started, 1)

        # One worker: the busy team alone, the quiet team trickling beside it, alone again
        # (the two alone windows bracket the trickle, so a drift of the machine's load
        # weighs on both sides of the ratio).
        out["idle_busy_cores"] = busy_cores()
        workers = start_workers(run, redis, 1, "fair-worker")
        wake(run, redis, [busy.id])
        time.sleep(1.0)  # the fold is under way before the windows
        limit = 2 * sizes.alone_seconds + sizes.trickle_seconds + sizes.settle_seconds + 30
        windows: dict[str, tuple[datetime, datetime]] = {}
        with Watcher(run.database_url, quiet.id, limit=limit) as watcher:
            windows["alone_before"] = window(sizes.alone_seconds / 2)
            out["one_worker"], windows["beside_quiet"] = quiet_lag(run, quiet, web, "one", sizes, watcher)
            windows["alone_after"] = window(sizes.alone_seconds / 2)
        stop_all(workers)
        workers = []
        counts = folded_in(run.database_url, busy.id, windows)
        out["busy_rate"] = {
            "alone": rate_in(counts, windows, "alone_before", "alone_after"),
            "beside_quiet": rate_in(counts, windows, "beside_quiet"),
            "alone_before": rate_in(counts, windows, "alone_before"),
            "alone_after": rate_in(counts, windows, "alone_after"),
        }
        out["busy_left_after_one_worker"] = unfolded_of(run.database_url, busy.id)

        # Two workers, three busy neighbours.
        started = time.monotonic()
        for team in neighbours:
            store_rows(run.database_url, team.id, [kept])
        take_statistics(run.database_url)
        out["neighbours_store_seconds"] = round(time.monotonic() - started, 1)
        busy_ids = [busy.id] + [team.id for team in neighbours]
        discard_unfolded(run.database_url, [quiet.id])  # what the first trickle left: a fresh start
        forget_wakeups(run, redis, busy_ids + [quiet.id])
        workers = start_workers(run, redis, 2, "fair-worker2")
        wake(run, redis, busy_ids)
        time.sleep(1.0)
        limit = sizes.trickle_seconds + sizes.settle_seconds + 30
        with Watcher(run.database_url, quiet.id, limit=limit) as watcher:
            out["two_workers"], trickle = quiet_lag(run, quiet, web, "two", sizes, watcher)
        stop_all(workers)
        workers = []
        out["two_workers"]["busy_rates"] = [
            rate_in(folded_in(run.database_url, team_id, {"w": trickle}), {"w": trickle}, "w")
            for team_id in busy_ids
        ]
        out["busy_left_after_two_workers"] = [unfolded_of(run.database_url, team_id) for team_id in busy_ids]
    finally:
        # What is left of the backlogs stays unfolded (deleting ~a million rows would cost
        # more than the windows): no worker runs on this database after the phase, and
        # the next run makes the database again.
        stop_all(workers)
        forget_wakeups(run, redis, [busy.id, quiet.id] + [team.id for team in neighbours])
        redis.close()
    return out


def refused_body(run: str) -> str:
    """A track event just over the per-event cap (MAX_EVENT_BYTES): refused, whoever sends it."""
    event = json.loads(track_body(run))
    event["properties"]["padding"] = "x" * (MAX_EVENT_BYTES + 512)
    return json.dumps(event, separators=(",", ":"))


def flood_spec(web: Web, team: BenchTeam, run_id: str, kind: str, sizes: IsolationSizes) -> LoadSpec:
    seconds = sizes.flood_seconds + 1.5  # covers the other team's whole round
    shape = IngestSizes(seconds, sizes.flood_concurrency, 1)
    if kind == "accepted":
        return post_spec(web.base, team, f"flood-{run_id}", shape, shape="batch")
    return LoadSpec(
        url=web.base + "/v1/segment",
        headers={**basic_auth(team.key), "Connection": "keep-alive"},
        body_template=refused_body(f"refused-{run_id}"),
        concurrency=sizes.flood_concurrency,
        duration=seconds,
    )


def load_in_background(spec: LoadSpec) -> tuple[threading.Thread, list[LoadResult]]:
    """`run_load(spec)` on a thread; its result lands in the list."""
    box: list[LoadResult] = []
    thread = threading.Thread(target=lambda: box.append(run_load(spec)), name="bench-flood", daemon=True)
    thread.start()
    return thread, box


def flood_figures(flooded: LoadResult, per: int) -> dict[str, Any]:
    accepted = sum(n for status, n in flooded.statuses.items() if status.startswith("2"))
    return {
        "statuses": flooded.statuses,
        "accepted_events_per_second": round(accepted * per / flooded.elapsed, 1),
        "requests_per_second": round(flooded.sent / flooded.elapsed, 1),
    }


def measure_flood(
    run: RunEnv, web: Web, other: BenchTeam, flooder: BenchTeam, sizes: IsolationSizes
) -> dict[str, Any]:
    """The other team's ingest p99: quiet, beside a refused flood, beside an accepted one."""
    redis = run.redis()
    workers = start_workers(run, redis, 1, "flood-worker")
    out: dict[str, Any] = {"other_rate": sizes.other_rate, "idle_busy_cores": busy_cores()}
    try:
        for kind in ("quiet", "refused", "accepted"):
            shape = IngestSizes(sizes.flood_seconds, 8, 1)
            tag = f"other-{kind}-{run.run_id}"
            other_spec = post_spec(web.base, other, tag, shape, rate=sizes.other_rate)
            flood = None
            if kind != "quiet":
                flood = load_in_background(flood_spec(web, flooder, run.run_id, kind, sizes))
                time.sleep(0.5)  # the flood is on before the other team's first request
            result = run_load(other_spec)
            out[kind] = {
                "sent": result.sent,
                "statuses": result.statuses,
                "p50_ms": round(result.percentile_ms(50), 2),
                "p99_ms": round(result.percentile_ms(99), 2),
            }
            if flood is not None:
                thread, box = flood
                thread.join(sizes.flood_seconds + 60)
                if box:
                    out[kind]["flood"] = flood_figures(box[0], 100 if kind == "accepted" else 1)
    finally:
        stop_all(workers)
        discard_unfolded(run.database_url, [other.id, flooder.id])
        forget_wakeups(run, redis, [other.id, flooder.id])
        redis.close()
    return out


def measure_isolation(run: RunEnv, teams: dict[str, BenchTeam], sizes: IsolationSizes) -> dict[str, Any]:
    web = Web("isolation-web", run.process_env(team_budgets=True)).wait_ready("/readyz")
    try:
        flood = measure_flood(run, web, teams["other"], teams["flooder"], sizes)
        fair = measure_fair_share(run, web, teams, sizes)
    finally:
        web.stop()
    return {"flood": flood, "fair_share": fair}
