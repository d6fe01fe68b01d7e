"""The stack under fault: gunicorn and two fold workers (worker-a, worker-b), launched as
the Procfile starts them (devstack/stack.py), each logging to its own file in the run's
folder. Each worker's Postgres sessions carry its name as application_name, so that the
mid-batch fault can tell which one holds a team's fold lock."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devstack.embedded import free_port
from devstack.stack import (
    NotReady,
    launch,
    stack_env,
    stop_processes,
    wait_answering,
    web_command,
    worker_command,
)

WORKERS = ("worker-a", "worker-b")


class FaultStack:
    """gunicorn and two fold workers on a free loopback port, started on creation (and
    stopped and started again by a case that must change the schema under it)."""

    def __init__(
        self, folder: Path, database_url: str, redis_url: str, prefix: str, queue: str, web_workers: int
    ):
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = stack_env(
            os.environ,
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=prefix,
            fold_queue=queue,
            port=self.port,
            web_workers=web_workers,
            more={"PYTHONUNBUFFERED": "1"},
        )
        self.start()

    def start(self) -> None:
        """Launch gunicorn and the workers (again, after `stop`: on the same port and logs)."""
        self.web = launch(web_command(), self.env, self.folder / "web.log")
        self.workers = {name: self._start_worker(name) for name in WORKERS}

    def _start_worker(self, name: str) -> subprocess.Popen[bytes]:
        url = self.env["DATABASE_URL"]
        url += ("&" if "?" in url else "?") + f"application_name={name}"
        return launch(worker_command(), {**self.env, "DATABASE_URL": url}, self.folder / f"{name}.log")

    def restart_worker(self, name: str) -> None:
        old = self.workers[name]
        if old.poll() is None:
            old.kill()
        old.wait()
        self.workers[name] = self._start_worker(name)

    def web_workers(self) -> list[int]:
        children = Path(f"/proc/{self.web.pid}/task/{self.web.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def wait_ready(self, seconds: float = 60) -> None:
        try:
            wait_answering(self.base + "/readyz", {"web": self.web, **self.workers}, seconds=seconds)
        except NotReady as error:
            raise SystemExit(
                f"bin/faults: the stack did not get ready ({error}); logs in {self.folder}"
            ) from None

    def stop(self) -> None:
        stop_processes([self.web, *self.workers.values()], grace=20)
