"""Backlogs for the fair-share phase (bench/isolation.py): many unfolded events of distinct
customers, stored with the import's own path (`store.imports`, binary COPY, as `flask
events import` stores an archive).

Generating and preparing the events is most of the cost of a big backlog, so the rows
are made in chunks by two processes of their own and kept under .local/bench/backlog/,
keyed by the code that makes them (`backlog_key`).
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import data as bench_data
from bench.data import customer_journeys, prepared
from bench.env import LOCAL
from schemas import event_schemas, quick_load, trait_keys
from schemas import segment as schemas_segment
from service.settings import Settings, sqlalchemy_url
from store import imports as store_imports
from store.engine import make_engine
from store.imports import EVENT_COLUMNS, event_row, import_batches

CHUNK_EVENTS = 50_000  # generated, prepared and COPYed at a time (memory stays small)
STAGE_EVENTS = 1000  # rows handed to the import's writer at a time
COMMIT_EVENTS = 50_000  # events per import batch (one transaction)
CHUNK_CUSTOMER_EVENTS = 20  # events per customer in the backlog (the fold bench's mix)
CHUNKS_AHEAD = 3  # chunks made or read ahead of the COPY (memory: ~50 MB each)
BACKLOG_CACHE = LOCAL / "backlog"
TEAM, TYPE, RECEIVED = (EVENT_COLUMNS.index(name) for name in ("team_id", "type", "received_at"))
MADE_AT = datetime(2024, 3, 2, tzinfo=UTC)  # a chunk's receive time until stored (the events have timestamps)


def store_backlog(url: str, team_id: int, events: int, keep: int = 0) -> list[tuple[Any, ...]]:
    """Store `events` unfolded events of distinct customers with the import's binary COPY.

    Returns the first `keep` rows (to store again for another team: messageIds are
    unique per team, so the same rows make another team's backlog at no Python cost).
    """
    kept: list[tuple[Any, ...]] = []

    def rows() -> Iterator[list[tuple[Any, ...]]]:
        for chunk in backlog_chunks(events):
            if len(kept) < keep:
                kept.extend(chunk[: keep - len(kept)])
            yield chunk

    store_rows(url, team_id, rows())
    return kept


def store_rows(url: str, team_id: int, chunks: Iterable[list[tuple[Any, ...]]]) -> None:
    """Rows of `event_row`, for any team, into `events` as the import stores them (`import_batches`)."""
    settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
    engine = make_engine(settings, pool_size=1)
    received_at = datetime.now(UTC)
    try:
        with import_batches(engine, team_id, received_at, lambda _: None) as writer:
            pending = 0
            for chunk in chunks:
                for at in range(0, len(chunk), STAGE_EVENTS):
                    rows = [for_team(row, team_id, received_at) for row in chunk[at : at + STAGE_EVENTS]]
                    writer.stage(rows, [row[TYPE] for row in rows])
                    pending += len(rows)
                    if pending >= COMMIT_EVENTS:
                        writer.commit([], {}, {}, datetime.now(UTC))
                        pending = 0
            if pending:
                writer.commit([], {}, {}, datetime.now(UTC))
    finally:
        engine.dispose()


def for_team(row: tuple[Any, ...], team_id: int, received_at: datetime) -> tuple[Any, ...]:
    """A made row with this team's id and receive time (the rest is the same for any team)."""
    out = list(row)
    out[TEAM], out[RECEIVED] = team_id, received_at
    return tuple(out)


def backlog_chunks(events: int) -> Iterator[list[tuple[Any, ...]]]:
    """The backlog's rows (`event_row`, team and receive time to be set), CHUNK_EVENTS at a time.

    Generating and preparing the events (the Spec, as ingest and the import run it) is
    most of the cost of a big backlog, so each chunk is kept under .local/bench/backlog/
    once made, keyed by the code that makes it (the generator, the Spec, the row): a run
    after the first reads the chunks back. Chunks not made yet are made by two processes
    of their own while this one streams the earlier ones into the COPY.
    """
    key = backlog_key()
    BACKLOG_CACHE.mkdir(parents=True, exist_ok=True)
    for stale in BACKLOG_CACHE.glob("*.pickle"):
        if not stale.name.startswith(key):
            stale.unlink(missing_ok=True)
    context = multiprocessing.get_context("spawn")  # the import's writer thread is running
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        ahead: deque[Callable[[], list[tuple[Any, ...]]]] = deque()
        for start in range(0, events, CHUNK_EVENTS):
            size = min(CHUNK_EVENTS, events - start)
            path = BACKLOG_CACHE / f"{key}-{start // CHUNK_CUSTOMER_EVENTS}-{size}.pickle"
            if path.exists():
                ahead.append(functools.partial(read_chunk, path))
            else:
                ahead.append(pool.submit(make_chunk, size, start // CHUNK_CUSTOMER_EVENTS, path).result)
            if len(ahead) > CHUNKS_AHEAD:
                yield ahead.popleft()()
        while ahead:
            yield ahead.popleft()()


def backlog_key() -> str:
    """A digest of the code a chunk depends on: a change to any of it makes the chunks again."""
    digest = hashlib.sha256(f"{CHUNK_EVENTS}/{CHUNK_CUSTOMER_EVENTS}".encode())
    for module in (bench_data, schemas_segment, event_schemas, quick_load, trait_keys, store_imports):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:16]


def read_chunk(path: Path) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = pickle.loads(path.read_bytes())
    return rows


def make_chunk(size: int, first_customer: int, path: Path) -> list[tuple[Any, ...]]:
    """`size` events of customers numbered from `first_customer`, as import rows; kept at `path`."""
    per_customer = CHUNK_CUSTOMER_EVENTS
    journeys = customer_journeys(size, events_per_customer=per_customer, first_customer=first_customer)
    ready = prepared(journeys, MADE_AT)
    rows = [event_row(0, MADE_AT, event) for event in ready]
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
    partial.replace(path)
    return rows
