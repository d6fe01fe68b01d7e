"""Where the benchmarks run: servers, bench databases, and the processes under test.

The servers are the ones DATABASE_URL / REDIS_URL name, else embedded ones (SPEC §6)
under .local/bench/. The bench only ever touches its own databases (`tl_bench`, dropped
and made again on every run, and `tl_bench_feed`, which keeps the 10-million-event
dataset between runs) and its own Redis keys (a per-run queue name and key prefix).

The web and worker processes are started exactly as the Procfile starts them, by the
launcher bin/serve, bin/faults and the tests use too (devstack/stack.py): its `web` line
(gunicorn with the config module, so the same worker class and count) and its `worker`
line. The bare WSGI ceiling app is started from the same `web` line with only the app
swapped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis
from rq import Queue, Worker
from sqlalchemy import create_engine, make_url, text

from devstack.embedded import EmbeddedRedis, free_port
from devstack.stack import (
    NotReady,
    Services,
    launch,
    stack_env,
    stop_processes,
    wait_answering,
    web_command,
    worker_command,
)
from service.settings import Settings, sqlalchemy_url
from store.apikeys import create_team
from store.engine import make_engine
from store.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local" / "bench"


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL back in the libpq form that psycopg, psql and pgbench read."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def database_url(server_url: str, name: str) -> str:
    """The URL of database `name` on the server that `server_url` points at."""
    url = make_url(sqlalchemy_url(server_url)).set(database=name)
    return libpq_url(url.render_as_string(hide_password=False))


@dataclass
class Servers:
    """The Postgres server and Redis the bench uses, and what it started itself."""

    postgres_url: str
    redis_url: str
    embedded: list[EmbeddedRedis] = field(default_factory=list)

    @classmethod
    def start(cls, env: dict[str, str]) -> Servers:
        services = Services.start(env, LOCAL, lambda message: print(message, file=sys.stderr))
        embedded = [services.redis] if services.redis is not None else []
        return cls(libpq_url(sqlalchemy_url(services.database_url)), services.redis_url, embedded)

    def stop(self) -> None:
        for server in self.embedded:
            server.stop()

    def create_database(self, name: str, *, fresh: bool) -> tuple[str, bool]:
        """Make the database if missing (or again, when fresh); (its URL, whether it is new)."""
        admin = create_engine(sqlalchemy_url(self.postgres_url), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                if fresh:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                exists = connection.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if not exists:
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = database_url(self.postgres_url, name)
        upgrade(url)
        return url, not exists

    def drop_database(self, name: str) -> None:
        admin = create_engine(sqlalchemy_url(self.postgres_url), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@dataclass
class BenchTeam:
    id: int
    key: str  # an admin key: every scope, so one key serves ingest and reads


def make_team(url: str, name: str) -> BenchTeam:
    settings = Settings(database_url=sqlalchemy_url(url), redis_url="redis://unused")
    engine = make_engine(settings, pool_size=1)
    try:
        with engine.begin() as connection:
            team, admin = create_team(connection, name, datetime.now(UTC))
        return BenchTeam(team.id, admin.secret)
    finally:
        engine.dispose()


@dataclass
class RunEnv:
    """The environment every process of one bench run shares: its queue, its key prefix."""

    servers: Servers
    database_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. another gunicorn worker class
    temp_dirs: list[str] = field(default_factory=list)

    @property
    def fold_queue(self) -> str:
        return f"fold-bench-{self.run_id}"

    @property
    def redis_prefix(self) -> str:
        return f"tl-bench-{self.run_id}:"

    def process_env(
        self, database_url: str | None = None, *, team_budgets: bool = False, **extra: str
    ) -> dict[str, str]:
        """The environment of a process of the stack. The capacity phases measure the whole
        deployment through one team, so the per-team ingest budgets (docs/rate-limits.md)
        are off unless `team_budgets` (the isolation phase measures them)."""
        # The read phases offer one key far more than its per-key limit (100/s by
        # default, docs/operations.md): they measure the read path, not the 429.
        own = {"LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT), "API_RATE_LIMIT": "0"}
        if not team_budgets:
            own.update(
                INGEST_RATE_LIMIT="0",
                INGEST_REQUEST_LIMIT="0",
                INGEST_BYTE_LIMIT="0",
                INGEST_TEAM_CONCURRENCY="0",
            )
        return stack_env(
            os.environ,
            database_url=database_url or self.database_url,
            redis_url=self.servers.redis_url,
            fold_queue=self.fold_queue,
            redis_prefix=self.redis_prefix,
            metrics_dir=self._temp_dir(),
            more={**own, **self.extra_env, **extra},
        )

    def _temp_dir(self) -> str:
        made = tempfile.mkdtemp(prefix="tl-bench-prom-")
        self.temp_dirs.append(made)
        return made

    def cleanup(self) -> None:
        self.forget_redis_keys()
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    def redis(self) -> Redis:
        return Redis.from_url(self.servers.redis_url)

    def forget_redis_keys(self) -> None:
        """Delete this run's keys (its flags and its RQ queue); nobody else's."""
        client = self.redis()
        try:
            for pattern in (f"{self.redis_prefix}*", f"rq:*{self.fold_queue}*"):
                for key in client.scan_iter(match=pattern, count=500):
                    client.delete(key)
        finally:
            client.close()


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children_of(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


class Process:
    """A child process with a log file, stopped by a signal (then SIGKILL) by its own id."""

    stop_signal = signal.SIGTERM

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        LOCAL.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOCAL / f"{name}.log"
        self.log_path.write_bytes(b"")  # this run's output only
        self.popen = launch(argv, env, self.log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        stop_processes([self.popen], stop_signal=self.stop_signal, grace=15)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Web(Process):
    """gunicorn as the Procfile's web line starts it, serving `app_spec`."""

    stop_signal = signal.SIGQUIT  # gunicorn's quick shutdown: the load has stopped already

    def __init__(self, name: str, env: dict[str, str], app_spec: str | None = None):
        self.port = free_port()
        super().__init__(name, web_command(app_spec), {**env, "PORT": str(self.port)})
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str = "/healthz", seconds: float = 30) -> Web:
        """Until `path` answers 200 and gunicorn has a worker; RuntimeError, with the log's
        tail, if it exits first or does not answer within `seconds`."""
        try:
            wait_answering(
                self.base + path,
                {self.name: self.popen},
                seconds=seconds,
                ready=lambda: len(children_of(self.pid)) >= 1,
                pause=0.1,
            )
        except NotReady as error:
            raise RuntimeError(f"{error}:\n{self.tail()}") from None
        return self

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def peak_rss(self) -> list[float]:
        """Peak RSS of each gunicorn worker process, in MiB."""
        return [rss for pid in self.worker_pids() if (rss := peak_rss_mib(pid)) is not None]


class FoldWorker(Process):
    """The fold worker as the Procfile's worker line starts it."""

    def __init__(self, name: str, env: dict[str, str]):
        super().__init__(name, worker_command(), env)

    def wait_ready(self, redis: Redis, queue: str, seconds: float = 30) -> FoldWorker:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.tail()}")
            if any(worker.pid == self.pid for worker in Worker.all(queue=Queue(queue, connection=redis))):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not register with RQ within {seconds:.0f}s:\n{self.tail()}")

    def peak_rss(self) -> float | None:
        return peak_rss_mib(self.pid)

    def stop_now(self) -> None:
        """Stop mid-job: RQ's warm shutdown, then (a second signal, over 1 s later) its cold one.

        A fold job may run for minutes on a big backlog; the cold shutdown leaves its open
        batch to roll back, as a killed worker's would.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(1.2)
            except subprocess.TimeoutExpired:
                self.popen.send_signal(signal.SIGTERM)
        self.stop()


NOISE_SAMPLE = {"seconds": 0.5}  # the quick run samples for less


def busy_cores(seconds: float | None = None) -> float:
    """How many cores were busy (anyone's work) over `seconds`: the machine's noise."""
    seconds = NOISE_SAMPLE["seconds"] if seconds is None else seconds

    def sample() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    cores = os.cpu_count() or 1
    span = total1 - total0
    return round(cores * (1 - (idle1 - idle0) / span), 2) if span else 0.0
