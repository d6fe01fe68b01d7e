"""The Procfile stack, launched: how bin/serve, bin/faults, bin/bench and the tests start it.

All four run the same processes the same way, so that what they exercise is what a
platform runs:

- the commands are the Procfile's own lines (`web`: gunicorn with `app.serving.gunicorn_config`;
  `worker`: `python -m workers`), with their programs taken from this venv;
- the servers are the ones DATABASE_URL / REDIS_URL name, else embedded ones started
  under a folder of the caller's (`Services`);
- the environment is the caller's with the stack's settings on top (`stack_env`);
- each process starts from the project folder, its output to a log file or inherited
  (`launch`); the stack is ready once a URL answers 200, and not if a process exits
  first (`wait_answering`); it stops with a signal, then SIGKILL after a grace period
  (`stop_processes`).

What differs between the callers is a parameter: which servers and folders, how many
workers, which readiness URL, how long to wait, which stop signal. bin/serve's
supervision and the fault suite's injections stay with them.
"""

from __future__ import annotations

import http.client
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.embedded import EmbeddedRedis, embedded_postgres

ROOT = Path(__file__).resolve().parent.parent


# --- the commands -----------------------------------------------------------------------


def procfile_command(kind: str) -> list[str]:
    """The Procfile's command for a process type, with its programs from this venv."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            argv = shlex.split(command)
            bin_dir = Path(sys.executable).parent
            if argv[0] == "python":
                argv[0] = sys.executable
            elif (bin_dir / argv[0]).exists():
                argv[0] = str(bin_dir / argv[0])
            return argv
    raise RuntimeError(f"the Procfile has no {kind!r} line")


def web_command(app_spec: str | None = None) -> list[str]:
    """The Procfile's `web` line; `app_spec` swaps the WSGI app it serves (the bench's ceiling)."""
    argv = procfile_command("web")
    if app_spec:
        argv[-1] = app_spec
    return argv


def worker_command() -> list[str]:
    """The Procfile's `worker` line: one fold worker."""
    return procfile_command("worker")


# --- the servers and the environment ----------------------------------------------------


@dataclass
class Services:
    """The Postgres and Redis of a stack: the ones the environment names, else embedded
    ones under `folder` (ours: a caller may stop and start them)."""

    database_url: str
    redis_url: str
    postgres: Any = None  # the embedded pgserver server; None when DATABASE_URL was given
    redis: EmbeddedRedis | None = None  # the embedded redis-server; None when REDIS_URL was given

    @classmethod
    def start(cls, env: Mapping[str, str], folder: Path, say: Callable[[str], None] = print) -> Services:
        database_url = env.get("DATABASE_URL") or ""
        redis_url = env.get("REDIS_URL") or ""
        postgres = redis = None
        if not database_url:
            say(f"DATABASE_URL unset: starting embedded Postgres in {folder / 'postgres'}")
            postgres = embedded_postgres(folder / "postgres")
            database_url = str(postgres.get_uri())
        if not redis_url:
            say("REDIS_URL unset: starting embedded Redis")
            redis = EmbeddedRedis(folder / "redis").start()
            redis_url = redis.url
        return cls(database_url, redis_url, postgres, redis)

    def stop(self) -> None:
        """Stop the embedded Redis; an embedded Postgres stops when this process exits."""
        if self.redis is not None:
            self.redis.stop()


def stack_env(
    base: Mapping[str, str | None],
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    fold_queue: str | None = None,
    redis_prefix: str | None = None,
    port: int | None = None,
    web_workers: int | None = None,
    metrics_dir: str | Path | None = None,
    more: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """The environment of a process of the stack: `base` with the settings given on top
    (each under its environment name, docs/operations.md) and then `more`, where None
    removes a variable."""
    named = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "FOLD_QUEUE": fold_queue,
        "REDIS_PREFIX": redis_prefix,
        "PORT": None if port is None else str(port),
        "WEB_CONCURRENCY": None if web_workers is None else str(web_workers),
        "PROMETHEUS_MULTIPROC_DIR": None if metrics_dir is None else str(metrics_dir),
    }
    merged: dict[str, str | None] = {
        **base,
        **{name: value for name, value in named.items() if value is not None},
        **(more or {}),
    }
    return {name: value for name, value in merged.items() if value is not None}


# --- the processes ----------------------------------------------------------------------


def launch(argv: list[str], env: Mapping[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start one process of the stack from the project folder; its output (both streams)
    is appended to `log`, or goes where this process's goes."""
    if log is None:
        return subprocess.Popen(argv, cwd=ROOT, env=env)
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def exit_status(code: int) -> str:
    """A child's exit status in words: 'exit status 3' or 'killed by SIGKILL'."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class NotReady(Exception):
    """The stack did not get ready: a process exited during start-up, or time ran out."""


def wait_answering(
    url: str,
    processes: Mapping[str, subprocess.Popen[bytes]],
    *,
    seconds: float,
    ready: Callable[[], bool] = lambda: True,
    pause: float = 0.2,
) -> None:
    """Until GET `url` answers 200 and `ready()` holds; NotReady, saying why, if one of
    `processes` (by name) exits first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        for name, process in processes.items():
            code = process.poll()
            if code is not None:
                raise NotReady(f"{name} exited during start-up with {exit_status(code)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200 and ready():
                    return
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, an error status
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"{url} did not answer 200 within {seconds:.0f}s")
        time.sleep(pause)


def stop_processes(
    processes: Iterable[subprocess.Popen[bytes]], *, stop_signal: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """Send `stop_signal` to each running process (continuing it first, should a fault have
    stopped it), then give each up to `grace` seconds to exit before SIGKILL."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.send_signal(stop_signal)
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
