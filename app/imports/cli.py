"""`flask events import --team ID PATH...`: bring a team's history in (SPEC §11, docs/import.md).

Prints a progress line on stderr (redrawn in place on a terminal, a plain line every
`PLAIN_EVERY_SECONDS` otherwise), the report file's path, and at the end a JSON summary
on stdout. Every refused line goes to the report (JSON lines: file, line, messageId,
status, code, message, errors), a file made only when a line is refused. Exit status: 0
when every line was stored or already stored, 1 when some lines were refused (the rest
are stored), 2 when it could not run.

After each committed batch the team's fold is requested (the same per-team flag as
ingest's waker, `service/fold_queue.py`), so the fold catches up in its usual batches while
the import goes on; if Redis is down, the worker's sweep finds the events.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import click
from flask import Flask
from flask.cli import AppGroup
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from app.imports.importer import ImportProgress, ImportUsageError, ReportedLine, find_sources, run_import
from app.resources import resources
from store.apikeys import team_exists

events = AppGroup("events", help="Import a team's events.")

PLAIN_EVERY_SECONDS = 5.0
TERMINAL_EVERY_SECONDS = 0.2


def _fail(code: str, message: str) -> NoReturn:
    click.echo(json.dumps({"message": message, "code": code}), err=True)
    raise click.exceptions.Exit(2)


class ProgressLine:
    """The progress display: redrawn in place on a terminal, a plain line now and then otherwise."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.terminal = stream.isatty()
        self.every = TERMINAL_EVERY_SECONDS if self.terminal else PLAIN_EVERY_SECONDS
        self.last = time.monotonic()

    def update(self, progress: ImportProgress, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        line = describe(progress)
        if self.terminal:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, progress: ImportProgress) -> None:
        self.update(progress, force=True)
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()


def describe(progress: ImportProgress) -> str:
    """`[####----] 42% read 120,000  stored 110,000  dup 9,000  rejected 12  31,000/s  ETA 0:12`"""
    seconds = max(progress.seconds, 1e-6)
    rate = progress.read / seconds
    parts = []
    total = progress.bytes_total
    if total:
        fraction = min(progress.bytes_done / total, 1.0)
        filled = int(fraction * 20)
        parts.append(f"[{'#' * filled}{'-' * (20 - filled)}] {fraction * 100:3.0f}%")
    parts.append(f"files {progress.files_done}/{progress.files}")
    parts.append(f"read {progress.read:,}")
    parts.append(f"stored {progress.stored:,}")
    parts.append(f"dup {progress.duplicates:,}")
    parts.append(f"rejected {progress.rejected:,}")
    parts.append(f"{rate:,.0f} events/s")
    if total and progress.bytes_done:
        left = seconds * (total - progress.bytes_done) / progress.bytes_done
        parts.append(f"ETA {int(left // 60)}:{int(left % 60):02d}")
    return "  ".join(parts)


class Report:
    """The report file, created on the first refused line: an import that refused nothing
    leaves no empty file behind."""

    def __init__(self, path: Path):
        self.path = path
        self.written = False
        self._file: IO[str] | None = None

    def write(self, line: ReportedLine) -> None:
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
            self.written = True
        self._file.write(json.dumps(line.as_json(), ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def summary(progress: ImportProgress, team_id: int, report_path: Path | None) -> dict[str, Any]:
    """The JSON printed at the end (`report`: null when no line was refused)."""
    seconds = progress.seconds
    nothing_new = progress.stored == 0 and progress.read > 0
    return {
        "team": str(team_id),
        "files": progress.files,
        "read": progress.read,
        "stored": progress.stored,
        "duplicates": progress.duplicates,
        "rejected": progress.rejected,
        "stored_by_type": dict(sorted(progress.stored_by_type.items())),
        "duplicates_by_type": dict(sorted(progress.duplicates_by_type.items())),
        "rejected_by_code": dict(sorted(progress.rejected_by_code.items())),
        "seconds": round(seconds, 2),
        "events_per_second": round(progress.read / seconds) if seconds > 0 else None,
        "report": str(report_path) if report_path is not None else None,
        "message": (
            "Nothing new: every event was already stored."
            if nothing_new
            else f"{progress.stored:,} events stored; the fold catches up in its usual batches."
        ),
    }


@events.command("import")
@click.option("--team", "team_id", type=click.IntRange(min=1), required=True, help="The team's id.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Where refused lines go (JSON lines); default import-report-<time>.jsonl here.",
)
@click.option(
    "--batch",
    "batch_events",
    type=click.IntRange(100, 1_000_000),
    default=20_000,
    show_default=True,
    help="Events per committed batch.",
)
@click.argument("paths", nargs=-1, required=True)
def events_import(team_id: int, report_path: Path | None, batch_events: int, paths: tuple[str, ...]) -> None:
    """Import JSON-lines files, Segment archive folders (recursively) or stdin (-) into a team."""
    res = resources()
    try:
        sources = find_sources(paths)
    except ImportUsageError as error:
        _fail("not_found", str(error))
    try:
        with res.engine.connect() as connection:
            if not team_exists(connection, team_id):
                _fail("team_not_found", f"No team with id {team_id}.")
    except DBAPIError:
        _fail("storage_unavailable", "The database is unavailable; nothing was imported.")
    if report_path is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report_path = Path(f"import-report-{stamp}.jsonl")
    display = ProgressLine(sys.stderr)
    click.echo(f"Refused lines, if any, are reported in {report_path}", err=True)
    redis_failed = False

    def wake(progress: ImportProgress) -> None:
        nonlocal redis_failed
        try:
            res.fold_queue.request_fold(team_id)
        except RedisError:
            if not redis_failed:
                click.echo("Redis is unavailable: the worker's sweep will fold the events.", err=True)
            redis_failed = True
        display.update(progress)

    report = Report(report_path)
    try:
        progress = run_import(
            res.imports,
            team_id,
            sources,
            report.write,
            wake,
            display.update,
            stdin=sys.stdin.buffer,
            batch_events=batch_events,
        )
    except DBAPIError as error:
        _fail(
            "storage_unavailable",
            f"The database failed ({type(error.orig).__name__}); the batches committed so far are "
            "stored. Run the same command again: what is stored already counts as duplicates.",
        )
    finally:
        report.close()
    display.finish(progress)
    click.echo(json.dumps(summary(progress, team_id, report.path if report.written else None), indent=2))
    if progress.rejected:
        raise click.exceptions.Exit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(events)
