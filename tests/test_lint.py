"""ruff over the code (B, E, F, I, UP, W) and mypy --strict over every package (see pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("app", "workers", "schemas", "store", "service", "devstack", "tests", "bench")


def test_ruff_finds_nothing() -> None:
    present = [folder for folder in FOLDERS if (ROOT / folder).is_dir()]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *present],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    # The packages are `[tool.mypy] files`, so a new package is checked once listed there.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
