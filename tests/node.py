"""Node packages the tests use, installed from their lockfiles as `bin/test` makes `.venv`.

Two folders hold an npm package with a lockfile: `segment-actions/` (our Actions
destination, Segment's runtime and Segment's Webhook destination) and `tests/browser/`
(`@segment/analytics-next` for the browser test). `npm ci` runs when a folder's
`node_modules` is missing or older than its lockfile: from the package registry, by the
lockfile, never at any other time. Without node and npm the tests that need them fail and
say what to install (`.ci/run` installs Debian's nodejs and npm where they are missing).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def npm(folder: Path, *args: str, what: str, timeout: float = 600) -> str:
    """Run `npm ARGS` in `folder`: what it printed (both streams); the test fails if npm does."""
    done = subprocess.run(
        ["npm", *args], cwd=folder, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        where = folder.relative_to(ROOT)
        pytest.fail(f"{what} failed in {where}/:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def node_packages(folder: Path) -> Path:
    """`folder/node_modules`, installed by `npm ci` when missing or older than the lockfile."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(
            f"{folder.relative_to(ROOT)}/ needs node 20 and npm (Debian: apt-get install nodejs npm); "
            "bin/test then installs its packages from the lockfile",
            pytrace=False,
        )
    installed = folder / "node_modules" / ".package-lock.json"
    lockfile = folder / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lockfile.stat().st_mtime:
        npm(folder, "ci", "--no-audit", "--no-fund", what="npm ci (the node packages from the lockfile)")
    return folder / "node_modules"
