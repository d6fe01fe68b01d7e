"""`bin/faults --short`: the stack under load while its processes die loses nothing,
folds nothing twice, answers no unexpected 5xx and never stalls (docs/operations.md).

It runs the real command against embedded servers of its own (the session's URLs are
removed from its environment, so it may stop and start them).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_short_fault_suite_loses_nothing_and_stalls_nowhere() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [str(ROOT / "bin" / "faults"), "--short"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.endswith(" ok") or " FAIL" in line]
    assert len(rows) == 5, done.stdout
    for row in rows:
        cells = row.split("  ")
        cells = [cell.strip() for cell in cells if cell.strip()]
        name, acked, lost, duplicated, errors = cells[0], int(cells[1]), cells[2], cells[3], cells[4]
        assert acked > 0, f"{name}: no load was acknowledged"
        assert (lost, duplicated, errors) == ("0", "0", "0"), row
        assert cells[-1] == "ok", row
