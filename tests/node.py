"""Node packages the tests use, installed from their lockfiles as `bin/test` makes `.venv`.

Two folders hold an npm package with a lockfile: `segment-actions/` (our Actions
destination, Segment's runtime and Segment's Webhook destination) and `tests/browser/`
(`@segment/analytics-next` for the browser test). `npm ci` runs when a folder's
`node_modules` is missing or older than its lockfile: from the package registry, by the
lockfile, never at any other time. Without node and npm the tests that need them fail and
say what to install (`.ci/run` installs Debian's nodejs and npm where they are missing).

On a fresh clone `npm ci` takes most of a minute, mostly waiting on the disk and the
registry. So that the suite does not wait for it, a test module that needs a folder names
it in `NODE_PACKAGES`, and once the tests are collected `install_ahead` starts the stale
folders' `npm ci` in the background, one folder after the other, while the Python tests
run; `node_packages` then waits for that install (and runs it itself, failing with npm's
output, if it did not succeed). The tests run one at a time as before: only npm overlaps.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterable
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


NPM_CI = ("ci", "--no-audit", "--no-fund", "--prefer-offline")

# Installs started by `install_ahead`: set once each folder's `npm ci` has ended.
_ahead: dict[Path, threading.Event] = {}
_ahead_lock = threading.Lock()
_running: list[subprocess.Popen[bytes]] = []


def _stale(folder: Path) -> bool:
    installed = folder / "node_modules" / ".package-lock.json"
    lockfile = folder / "package-lock.json"
    return not installed.exists() or installed.stat().st_mtime < lockfile.stat().st_mtime


def _have_node() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install_ahead(folders: Iterable[Path]) -> None:
    """Start `npm ci` in the background for each of `folders` whose packages are stale, in
    order, one at a time. What npm says is not kept: if an install fails, `node_packages`
    runs it again in the foreground and the test fails with npm's output."""
    if not _have_node():
        return  # node_packages says what to install
    with _ahead_lock:
        stale = [folder for folder in dict.fromkeys(folders) if folder not in _ahead and _stale(folder)]
        for folder in stale:
            _ahead[folder] = threading.Event()
    if not stale:
        return

    def run() -> None:
        for folder in stale:
            try:
                with _ahead_lock:
                    process = subprocess.Popen(
                        ["npm", *NPM_CI], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                    _running.append(process)
                try:
                    process.wait(timeout=600)
                except subprocess.TimeoutExpired:  # node_packages installs again and reports
                    process.kill()
                    process.wait()
            except OSError:  # likewise
                pass
            finally:
                _ahead[folder].set()

    threading.Thread(target=run, daemon=True, name="npm-ci-ahead").start()


def stop_installs() -> None:
    """End the background installs still running (the session is over)."""
    with _ahead_lock:
        for process in _running:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def node_packages(folder: Path) -> Path:
    """`folder/node_modules`, installed by `npm ci` when missing or older than the lockfile
    (the install `install_ahead` started, if any, is waited for first)."""
    if not _have_node():
        pytest.fail(
            f"{folder.relative_to(ROOT)}/ needs node 20 and npm (Debian: apt-get install nodejs npm); "
            "bin/test then installs its packages from the lockfile",
            pytrace=False,
        )
    started = _ahead.get(folder)
    if started is not None:
        started.wait(timeout=900)
    if _stale(folder):
        npm(folder, *NPM_CI, what="npm ci (the node packages from the lockfile)")
    return folder / "node_modules"
