"""Importing a team's history: JSON lines from files, Segment archive folders or stdin (SPEC §11).

Segment's S3 and GCS destinations write `segment-logs/{source-id}/{received-day}/*.gz`:
gzipped, newline-separated JSON, one event per line (docs/import.md). `find_sources`
walks folders of those (and `.json`, `.jsonl`, gzipped or not: gzip is recognised by
its magic bytes, whatever the name), in a stable order; `-` is standard input.

Every line goes through `prepare_line`, the same steps and Spec as HTTP ingest (strict
JSON, depth, NUL and lone surrogates replaced, 32 KiB, `prepare_event`), and the valid
events are stored in batches by `store/imports.py`. Lines are read one at a time with a
bounded `readline`, and a batch is committed every `BATCH_EVENTS` events (or
`BATCH_BYTES`): memory stays constant whatever the size of the archive. A bad line is
reported (file, line, messageId, reason) and the run goes on.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine

from app.errors import ApiError
from app.ingest.body import parse_json
from schemas.batch import Scan, prepare_one
from schemas.rejections import bounded_message, message_id_of, preview_of, preview_of_text, type_label
from schemas.segment import MAX_EVENT_BYTES, EventRejected, PreparedEvent
from store.imports import BatchResult, event_row, import_batches
from store.rejections import MAX_PER_CALL, CountKey, Refusal, hour_of

BATCH_EVENTS = 20_000
BATCH_BYTES = 32 * 1024 * 1024
# Rows are handed to the writer thread in chunks of at most this many events or bytes.
CHUNK_EVENTS = 1000
CHUNK_BYTES = 1024 * 1024
# A line longer than this is refused without being held in memory whole (an event is at
# most 32 KiB; ingest refuses a request over 500 KiB before parsing it).
MAX_LINE_BYTES = 500 * 1024
ARCHIVE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".gz")
STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1024 * 1024


class ImportUsageError(Exception):
    """The arguments name nothing we can read."""


@dataclass(frozen=True)
class Source:
    """One file to read (or stdin), with its size when known (for the ETA)."""

    name: str
    path: Path | None
    size: int | None


def find_sources(paths: Sequence[str]) -> list[Source]:
    """Every file the arguments name: files as given, folders walked (sorted), `-` stdin."""
    found: list[Source] = []
    for given in paths:
        if given == STDIN:
            found.append(Source(STDIN, None, None))
            continue
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and name.lower().endswith(ARCHIVE_SUFFIXES):
                        file = Path(root) / name
                        found.append(Source(str(file), file, file.stat().st_size))
        elif path.is_file():
            found.append(Source(str(path), path, path.stat().st_size))
        else:
            raise ImportUsageError(f"{given}: no such file or folder.")
    return found


class SourceBroken(Exception):
    """A file that cannot be read further (broken gzip, I/O error) after `line` lines."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class LineReader:
    """The lines of one source, bounded in length; `consumed` is how far into the file it is."""

    def __init__(self, source: Source, stdin: IO[bytes] | None = None):
        self.source = source
        if source.path is None:
            raw: IO[bytes] = stdin or sys.stdin.buffer
        else:
            raw = open(source.path, "rb")  # noqa: SIM115 - closed by close()
        self.raw = raw
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
        self.stream: IO[bytes] = (
            gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
            if buffered.peek(2)[:2] == _GZIP_MAGIC
            else buffered
        )
        self.number = 0

    @property
    def consumed(self) -> int:
        try:
            return self.raw.tell() if self.source.path is not None else 0
        except (OSError, ValueError):
            return 0

    def lines(self) -> Iterator[tuple[int, bytes | None]]:
        """(line number, bytes) per line; bytes None for a line over MAX_LINE_BYTES."""
        readline = self.stream.readline
        try:
            while True:
                line = readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                self.number += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while True:  # skip the rest of the line in bounded reads
                        rest = readline(_READ_CHUNK)
                        if not rest or rest.endswith(b"\n"):
                            break
                    yield self.number, None
                    continue
                yield self.number, line
        except (EOFError, OSError, zlib.error) as error:
            reason = "the gzip stream is truncated" if isinstance(error, EOFError) else str(error)
            raise SourceBroken(self.number, f"Cannot read further: {reason}.") from None

    def close(self) -> None:
        if self.source.path is not None:
            self.stream.close()
            self.raw.close()


def prepare_line(line: bytes, received_at: datetime) -> tuple[Any, PreparedEvent]:
    """One line as ingest would take it as one event: (decoded item, prepared event).

    The same steps and rules as HTTP ingest for each event (`schemas/batch.py`, which the
    ingest view calls too); the one place an import calls the Spec. Raises LineRefused.
    """
    scan = Scan.of_bytes(line)
    try:
        item = parse_json(line, scan)
    except ApiError as error:
        raise LineRefused(None, EventRejected(error.status, error.code, error.message)) from None
    try:
        return item, prepare_one(item, received_at, scan=scan, archived=True)
    except EventRejected as error:
        raise LineRefused(item, error) from None


class LineRefused(Exception):
    """A line that is not a storable event: the decoded item (if any) and why."""

    def __init__(self, item: Any, error: EventRejected):
        super().__init__(error.message)
        self.item = item
        self.error = error


@dataclass
class ImportProgress:
    """Counts so far, for the progress display and the final summary."""

    files: int = 0
    files_done: int = 0
    bytes_total: int | None = 0
    bytes_done: int = 0
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    started: float = field(default_factory=time.monotonic)
    stored_by_type: Counter[str] = field(default_factory=Counter)
    duplicates_by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_code: Counter[str] = field(default_factory=Counter)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class ReportedLine:
    """One refused line, as the report file has it."""

    file: str
    line: int
    message_id: str | None
    status: int
    code: str
    message: str
    errors: dict[str, list[str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "messageId": self.message_id,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "errors": self.errors,
        }


def run_import(
    engine: Engine,
    team_id: int,
    sources: Sequence[Source],
    report: Callable[[ReportedLine], None],
    on_batch: Callable[[ImportProgress], None],
    on_progress: Callable[[ImportProgress], None],
    *,
    stdin: IO[bytes] | None = None,
    batch_events: int = BATCH_EVENTS,
) -> ImportProgress:
    """Import `sources` into the team's events; returns the final counts.

    `report` gets every refused line; `on_batch` runs after each commit (wake the fold);
    `on_progress` is called often (every few thousand lines) and decides what to show.
    """
    received_at = datetime.now(UTC)
    progress = ImportProgress(files=len(sources))
    sizes = [source.size for source in sources]
    progress.bytes_total = None if any(size is None for size in sizes) else sum(s or 0 for s in sizes)

    def committed(result: BatchResult) -> None:  # on the writer's thread
        progress.stored += sum(result.accepted.values())
        progress.duplicates += sum(result.duplicates.values())
        progress.stored_by_type.update(result.accepted)
        progress.duplicates_by_type.update(result.duplicates)
        on_batch(progress)

    with import_batches(engine, team_id, received_at, committed) as batches:
        refusals: deque[Refusal] = deque(maxlen=MAX_PER_CALL)
        counts: dict[CountKey, int] = {}
        rows: list[tuple[Any, ...]] = []
        types: list[str] = []
        # The batch's dedupe keys: a later line with one is a duplicate, left out here, so
        # the batch's rows are unique and the first line of a key is the one stored.
        keys: set[tuple[str, str]] = set()
        repeated: Counter[str] = Counter()
        staged_events = staged_bytes = chunk_bytes = 0
        done_bytes = 0

        def stage() -> None:
            nonlocal rows, types, chunk_bytes
            if rows:
                batches.stage(rows, types)
                rows, types = [], []
                chunk_bytes = 0

        def commit() -> None:
            nonlocal staged_events, staged_bytes, counts, keys, repeated
            stage()
            batches.commit(list(refusals), counts, repeated, datetime.now(UTC))
            refusals.clear()
            counts = {}
            keys, repeated = set(), Counter()
            staged_events = staged_bytes = 0

        def refuse(source: Source, number: int, item: Any, error: EventRejected, text: str) -> None:
            now = datetime.now(UTC)
            message_id = message_id_of(item)
            kind = type_label(item)
            progress.rejected += 1
            progress.rejected_by_code[error.code] += 1
            report(
                ReportedLine(
                    source.name, number, message_id, error.status, error.code, error.message, error.errors
                )
            )
            refusals.append(
                Refusal(
                    at=now,
                    source="import",
                    route=source.name,
                    line=number,
                    status=error.status,
                    code=error.code,
                    message=bounded_message(error.message),
                    message_id=message_id,
                    type=kind if kind != "other" else None,
                    preview=preview_of(item) if item is not None else preview_of_text(text),
                )
            )
            key = CountKey(hour_of(now), "import", kind, "refused", error.code)
            counts[key] = counts.get(key, 0) + 1

        for source in sources:
            reader = LineReader(source, stdin)
            try:
                for number, line in reader.lines():
                    progress.read += 1
                    if line is None:
                        refuse(
                            source,
                            number,
                            None,
                            EventRejected(
                                413,
                                "event_too_large",
                                f"The line is longer than {MAX_LINE_BYTES // 1024} KiB; an event may be "
                                f"at most {MAX_EVENT_BYTES // 1024} KiB.",
                            ),
                            "",
                        )
                        continue
                    if line.isspace():  # no copy of the line, unlike strip()
                        progress.read -= 1  # blank lines are not events
                        continue
                    try:
                        _, event = prepare_line(line, received_at)
                    except LineRefused as refused:
                        refuse(source, number, refused.item, refused.error, line.decode("utf-8", "replace"))
                        continue
                    staged_events += 1
                    staged_bytes += len(line)
                    chunk_bytes += len(line)
                    key = (event.message_id, event.type)
                    if key in keys:
                        repeated[event.type] += 1
                    else:
                        keys.add(key)
                        rows.append(event_row(team_id, received_at, event))
                        types.append(event.type)
                    if len(rows) >= CHUNK_EVENTS or chunk_bytes >= CHUNK_BYTES:  # into the open COPY
                        stage()
                        progress.bytes_done = done_bytes + reader.consumed
                        on_progress(progress)
                    if staged_events >= batch_events or staged_bytes >= BATCH_BYTES:
                        commit()
            except SourceBroken as broken:
                refuse(
                    source,
                    broken.line + 1,
                    None,
                    EventRejected(400, "invalid_gzip", f"{source.name}: {broken.message}"),
                    "",
                )
            finally:
                reader.close()
            done_bytes += source.size or 0
            progress.bytes_done = done_bytes
            progress.files_done += 1
            on_progress(progress)
        commit()
    return progress
