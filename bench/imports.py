"""Import: `flask events import` of a Segment archive, beside a plain COPY of the same rows.

The archive is the fold bench's realistic mix (`bench.data.customer_journeys`) written
in Segment's layout, `segment-logs/{source}/{received-day}/{file}.gz`, a few files.
The import runs as the operator would run it (a `flask events import` process), timed
from start to exit: reading, gunzipping, the Spec, COPY into staging and the
INSERT ... ON CONFLICT into `events`, the per-batch commits.

The ceiling, in the same run: the same rows, already prepared, COPYed straight into a
table like `events` (same columns and indexes), one transaction from one connection:
what storing them would cost with no reading, no validation and no dedupe.

Then the fold of the imported backlog: one worker process (registered before the clock
starts), woken once, until no event of the team is unfolded.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from rq import Queue

from bench.data import BacklogEvent, customer_journeys, event_rows, prepared
from bench.env import ROOT, BenchTeam, FoldWorker, RunEnv, busy_cores, make_team
from bench.fold import wait_until_folded
from service.fold_queue import flag_key, request_fold
from store.imports import EVENT_COLUMNS

FILES = 4
# Events in the archive, per mode of bin/bench.
IMPORT_EVENTS = {"full": 200_000, "quick": 3000}


def write_archive(root: Path, payloads: list[dict[str, Any]]) -> tuple[Path, int]:
    """Segment's archive layout under `root`; returns the folder and its size in bytes."""
    logs = root / "segment-logs" / "BenchSrc1"
    per = -(-len(payloads) // FILES)
    size = 0
    for n in range(FILES):
        day = logs / str(1709251200000 + 86_400_000 * (n // 2))
        day.mkdir(parents=True, exist_ok=True)
        path = day / f"{1709251200 + n * 3600}-part{n}.gz"
        chunk = payloads[n * per : (n + 1) * per]
        lines = b"".join(json.dumps(p, separators=(",", ":")).encode() + b"\n" for p in chunk)
        path.write_bytes(gzip.compress(lines, compresslevel=6))
        size += path.stat().st_size
    return root / "segment-logs", size


def measure_copy_ceiling(url: str, team_id: int, journeys: list[BacklogEvent]) -> dict[str, Any]:
    """COPY of the same rows, prepared beforehand, into a table like events."""
    received_at = datetime.now(UTC)
    ready = prepared(journeys, received_at)
    rows = list(event_rows(team_id, ready, received_at))
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS ceiling_import_events")
        connection.execute("CREATE TABLE ceiling_import_events (LIKE events INCLUDING ALL)")
    noise = busy_cores()
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        started = time.monotonic()
        with cursor.copy(f"COPY ceiling_import_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
        seconds = time.monotonic() - started
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP TABLE ceiling_import_events")
    return {"rows": len(rows), "seconds": round(seconds, 2), "rate": round(len(rows) / seconds, 1),
            "idle_busy_cores": noise}  # fmt: skip


def measure_import(run: RunEnv, events: int, timeout: float) -> dict[str, Any]:
    """Import `events` from an archive into a new team; the COPY ceiling; the fold of it."""
    team = make_team(run.database_url, "bench import")
    journeys = customer_journeys(events)
    payloads = [event.payload for event in journeys]
    folder = Path(tempfile.mkdtemp(prefix="tl-bench-import-"))
    try:
        archive, size = write_archive(folder, payloads)
        ceiling = measure_copy_ceiling(run.database_url, team.id, journeys)
        env = run.process_env()
        noise = busy_cores()
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app:create_app", "events", "import",
             "--team", str(team.id), "--report", str(folder / "report.jsonl"), str(archive)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"events import failed ({done.returncode}): {done.stderr[-2000:]}")
        summary = json.loads(done.stdout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result: dict[str, Any] = {
        "events": len(payloads),
        "archive_bytes": size,
        "stored": summary["stored"],
        "seconds": round(seconds, 2),
        "rate": round(summary["stored"] / seconds, 1),
        "rate_inside": summary["events_per_second"],
        "idle_busy_cores": noise,
        "ceiling": ceiling,
    }
    result["fold"] = measure_imported_fold(run, team, timeout)
    print(f"[bench] {describe(result)}", file=sys.stderr, flush=True)
    return result


def measure_imported_fold(run: RunEnv, team: BenchTeam, timeout: float) -> dict[str, Any]:
    """One worker folds the imported backlog; the import's own wake-ups are cleared first."""
    redis = run.redis()
    try:
        Queue(run.fold_queue, connection=redis).empty()  # type: ignore[no-untyped-call]
        redis.delete(flag_key(run.redis_prefix, team.id))
        with psycopg.connect(run.database_url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM events WHERE team_id = %s AND folded_at IS NULL", (team.id,)
            ).fetchone()
        backlog = int(row[0]) if row else 0
        worker = FoldWorker("import-fold-worker", run.process_env()).wait_ready(redis, run.fold_queue)
        try:
            request_fold(redis, run.fold_queue, run.redis_prefix, team.id)
            seconds = wait_until_folded(run.database_url, team.id, timeout)
        finally:
            worker.stop()
    finally:
        redis.close()
    return {"events": backlog, "seconds": round(seconds, 2), "rate": round(backlog / seconds, 1)}


def describe(result: dict[str, Any]) -> str:
    """One line for the bench's log: the import beside its COPY ceiling, and the fold."""
    share = 100.0 * result["rate"] / result["ceiling"]["rate"] if result["ceiling"]["rate"] else 0.0
    return (
        f"Import: {result['rate']:,.0f} events/s stored (>= 20,000/s), {share:.0f}% of a plain COPY "
        f"({result['ceiling']['rate']:,.0f}/s); fold of the backlog {result['fold']['rate']:,.0f}/s"
    )
