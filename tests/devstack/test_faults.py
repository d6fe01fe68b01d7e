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

from devstack.faults.report import RECOVERY_BOUND_SECONDS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_short_fault_suite_loses_nothing_and_stalls_nowhere() -> None:
    """Every fault: load acknowledged, nothing lost or folded twice, no unexpected 5xx, and
    the backlog emptied (within the suite's 60 s: no stall). How fast it emptied is the
    figure bin/faults reports against its 10 s bound (docs/operations.md), not this test's
    business: a row that failed only that bound (a loaded machine) does not fail the test."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [str(ROOT / "bin" / "faults"), "--short"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    rows = [line for line in done.stdout.splitlines() if line.endswith(" ok") or " FAIL" in line]
    assert len(rows) == 5, done.stdout + done.stderr
    slow = 0
    for row in rows:
        cells = row.split("  ")
        cells = [cell.strip() for cell in cells if cell.strip()]
        name, acked, lost, duplicated, errors = cells[0], int(cells[1]), cells[2], cells[3], cells[4]
        emptied_after, result = cells[-2], cells[-1]
        assert acked > 0, f"{name}: no load was acknowledged"
        assert (lost, duplicated, errors) == ("0", "0", "0"), row
        assert emptied_after.endswith("s") and emptied_after != "-", row  # the backlog emptied
        if result == "FAIL":  # no note: only the recovery bound was missed
            assert float(emptied_after.removesuffix("s")) > RECOVERY_BOUND_SECONDS, row
            slow += 1
        else:
            assert result == "ok", row
    assert done.returncode == (1 if slow else 0), done.stdout + done.stderr
