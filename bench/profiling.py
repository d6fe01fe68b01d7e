"""Where the time goes: py-spy attached to a running web or worker process.

py-spy samples a live process from outside (no code change, little overhead), so the
profile is of the very processes the figures come from. It is a bench tool, not a
dependency of the app: `--profile` installs it into this venv when it is missing.

Each profile is summarised as the functions the sampled thread spent most of its time
in (inclusive, so `commit` includes the wait for the WAL flush) and the leaf functions
it was in when sampled (self time). Idle samples are kept, so waiting (for a request,
for Postgres) shows up as such.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy program, installed into this venv on first use; None if impossible."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found:
        return found
    print("--profile: installing py-spy into this venv", file=sys.stderr)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "py-spy>=0.3.14"], capture_output=True
    )
    if installed.returncode != 0:
        return None
    return shutil.which("py-spy", path=str(Path(sys.executable).parent))


class Recording:
    """py-spy recording one process for a fixed time, in the background."""

    def __init__(
        self, pid: int, seconds: float, output: Path, *, thread: str | None = None, idle: bool = True
    ):
        self.output = output
        self.thread = thread
        self.error: str | None = None
        program = py_spy()
        self.popen: subprocess.Popen[bytes] | None = None
        if program is None:
            self.error = "py-spy is not available"
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            [
                program,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "250",
                "--format",
                "raw",
                *(["--idle"] if idle else []),
                "--threads",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        if self.popen is None:
            return {"error": self.error}
        try:
            _, stderr = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            return {"error": "py-spy did not finish"}
        if not self.output.exists():
            return {"error": stderr.decode(errors="replace").strip()[-300:] or "no profile written"}
        return summarize(self.output, thread=self.thread)


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    short = "/".join(Path(path).parts[-2:]) if path else ""
    return f"{match.group('function')} ({short})"


def summarize(path: Path, *, thread: str | None = None, top: int = 14) -> dict[str, Any]:
    """Top functions by inclusive and by self share of the samples."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ") or frames and frames[0].startswith("process "):
            head = [frame for frame in frames if frame.startswith(("thread ", "process "))]
            if thread is not None and not any(thread in frame for frame in head):
                continue
            frames = frames[len(head) :]
        count = int(count_text)
        total += count
        names = [_function(frame) for frame in frames]
        for name in set(names):
            inclusive[name] += count
        if names:
            leaf[names[-1]] += count
    if not total:
        return {"samples": 0, "file": str(path)}
    share: Callable[[int], float] = lambda n: round(100.0 * n / total, 1)  # noqa: E731
    return {
        "samples": total,
        "file": str(path),
        "inclusive_pct": [[name, share(n)] for name, n in inclusive.most_common(top)],
        "self_pct": [[name, share(n)] for name, n in leaf.most_common(top)],
    }
