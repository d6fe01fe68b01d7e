"""Fixtures of the fold tests that run worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.workers.processes import StartWorker, worker_processes


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[StartWorker]:
    """Start `python -m workers` processes on this session's database, Redis and queue
    (`settings` puts them in the environment); every one is stopped when the test ends."""
    yield from worker_processes(tmp_path)
