"""gunicorn as the Procfile starts it, on a free loopback port, for the tests that need real
processes and sockets (tests/app/test_front_door.py, test_keys_processes.py, test_ingest_http.py,
test_console_browser.py, tests/docs/test_segment_destination_doc.py).

    with GunicornServer(folder, {"LOG_LEVEL": "debug"}) as server:
        requests.get(f"{server.url}/healthz")

The environment is the test process's own (DATABASE_URL, REDIS_URL, FOLD_QUEUE and
REDIS_PREFIX are set there by the session fixtures) with HOST, PORT, two workers and a
Prometheus folder, then the test's own changes on top (None removes a variable). All the
processes' output goes to one log file in `folder`. They are launched, waited for and stopped
by the launcher bin/serve, bin/faults and bin/bench use (devstack/stack.py).

Beside it, raw-socket helpers for the tests that speak HTTP/1.1 themselves (`connect`,
`exchange`, `read_answer`, `assert_envelope`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

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

ROOT = Path(__file__).resolve().parents[1]


class GunicornServer:
    """gunicorn (the Procfile's `web` line) and `fold_workers` fold workers (its `worker`
    line), started on entering once /healthz answers 200, stopped on leaving. Subclass it
    to add readers."""

    def __init__(
        self,
        folder: Path,
        env: Mapping[str, str | None] = {},  # noqa: B006 (read, never changed)
        *,
        fold_workers: int = 0,
        ready_seconds: float = 20.0,
        log_name: str = "gunicorn.log",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / log_name
        self.env = stack_env(
            os.environ, port=self.port, web_workers=2, metrics_dir=folder, more={"HOST": "127.0.0.1", **env}
        )
        self.commands = [web_command(), *(worker_command() for _ in range(fold_workers))]
        self.ready_seconds = ready_seconds
        self.processes: list[subprocess.Popen[bytes]] = []

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_logged(self, text: str, count: int = 1, seconds: float = 30.0) -> str:
        """The log, once `text` occurs in it at least `count` times: a test that reads the log
        waits for the line written last, never a fixed pause. A test failure, with the log's
        tail, if it is not there within `seconds` (a bound only against hanging)."""
        deadline = time.monotonic() + seconds
        while (log := self.log_text()).count(text) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"not logged within {seconds:.0f} s: {text!r}:\n{log[-3000:]}")
            time.sleep(0.02)
        return log

    def __enter__(self) -> Self:
        self.log_path.write_bytes(b"")
        for command in self.commands:
            self.processes.append(launch(command, self.env, self.log_path))
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self) -> None:
        """Until gunicorn answers /healthz with 200; a test failure, with the log's tail, if it
        exits first or does not answer within `ready_seconds`."""
        try:
            wait_answering(
                f"{self.url}/healthz", {"gunicorn": self.processes[0]}, seconds=self.ready_seconds, pause=0.1
            )
        except NotReady as error:
            pytest.fail(f"{error}:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to each process, then up to 10 s for each to exit before SIGKILL; first,
        until no web worker is still booting (`wait_workers_booted`)."""
        if self.processes and self.processes[0].poll() is None:
            self.wait_workers_booted()
        stop_processes(self.processes, grace=10)
        self.processes = []

    def wait_workers_booted(self, seconds: float = 10.0) -> None:
        """Until every web worker has its own signal handlers. gunicorn forks a worker with
        the master's, and a SIGTERM the master forwards before the worker set up its own is
        lost: that worker serves on, and the stop waits out its whole grace and SIGKILLs.
        A test that restarts workers stops the server while their replacements boot. A
        worker's handlers are set once it no longer catches SIGHUP (the master's reload,
        which a worker leaves at its default). `seconds` only bounds a hung boot: the stop
        goes ahead after it, as before."""
        deadline = time.monotonic() + seconds
        while any(_catches_sighup(pid) for pid in web_workers(self)) and time.monotonic() < deadline:
            time.sleep(0.02)


def web_workers(server: GunicornServer) -> set[int]:
    """The pids of the gunicorn master's live children (its web workers), from /proc."""
    master = server.processes[0].pid
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == master and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def _catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (its caught signals' mask in /proc);
    False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGHUP - 1)))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket, buffer: bytearray) -> Answer | None:
    """One HTTP/1.1 response from `sock` (bytes past it stay in `buffer`); None if closed first."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    buffer[:] = rest[length:]
    return Answer(int(lines[0].split()[1]), headers, rest[:length])


def connect(server: GunicornServer, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(server: GunicornServer, request: bytes) -> Answer | None:
    with connect(server) as sock:
        sock.sendall(request)
        return read_answer(sock, bytearray())


def assert_envelope(answer: Answer | None, status: int, code: str) -> dict[str, Any]:
    assert answer is not None, "the server closed without answering"
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    assert body["message"] and isinstance(body["errors"], dict)
    return body
