"""The worker's connections (workers/runtime.py): configured by whoever builds the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine

from service.settings import Settings
from workers.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


def test_a_job_run_where_no_runtime_was_configured_fails_saying_so() -> None:
    """Not quietly built from the environment: the environment here has every URL."""
    run = "from workers.jobs import fold_team; fold_team(1)"
    done = subprocess.run(
        [sys.executable, "-c", run],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "RuntimeError: no worker runtime" in done.stderr


def test_the_runtime_holds_its_settings_fold_queue(settings: Settings, engine: Engine, redis: Redis) -> None:
    fold_queue = Runtime(settings, engine, redis).fold_queue
    assert (fold_queue.name, fold_queue.prefix) == (settings.fold_queue, settings.redis_prefix)
    assert fold_queue.redis is redis
