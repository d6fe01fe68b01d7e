"""The fault suite (`bin/faults`): the stack under load while its processes die.

It starts the stack as the Procfile does (gunicorn + two `python -m workers`), against
embedded Postgres and Redis of its own when DATABASE_URL / REDIS_URL are unset, offers
load with known messageIds (loopback only, bounded in time; each batch is retried on a
connection error or a 5xx until it is acknowledged, as Segment does), and injects one
fault after another, each into its own team:

- worker SIGKILL mid-batch (while it holds the team's fold lock);
- worker SIGKILL just after it took a job (stopped in BLMOVE, served, then killed);
- Redis stopped, frozen (SIGSTOP) and flushed;
- a gunicorn worker SIGKILL;
- Postgres stopped and started, fast and immediate.

After each fault it waits until every stored event of the team is folded and prints a
row: acknowledged, lost (acknowledged but not stored and folded exactly once), duplicated,
5xx (503 during a Postgres outage is expected and counted apart), and the time from the
end of the fault to an empty backlog. It exits 1 on any loss, duplicate, unexpected 5xx
or a recovery slower than `RECOVERY_BOUND_SECONDS`. `--short` runs a subset in under a
minute (tests/devstack/test_faults.py). Faults that need to stop a server are skipped
when that server is not ours (its URL was given).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine, create_engine, make_url, text

from devstack.embedded import EmbeddedRedis, free_port
from store.apikeys import create_key, create_team
from store.engine import make_engine
from store.migrate import upgrade
from store.settings import Settings, sqlalchemy_url
from workers.fold import FOLD_LOCK_NAMESPACE

ROOT = Path(__file__).resolve().parent.parent
RECOVERY_BOUND_SECONDS = 10.0  # docs/operations.md
OUTAGE_SECONDS = 2.0  # how long a stopped or frozen server stays down (--short: 1 s)
FOLD_QUEUE = "fold"
PREFIX = "tl:"


STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"bin/faults [{time.monotonic() - STARTED:5.1f}s]: {message}", file=sys.stderr, flush=True)


# --- the servers ------------------------------------------------------------------------


class Postgres:
    """The embedded Postgres (ours: can be stopped) or a given server (not ours)."""

    def __init__(self, folder: Path):
        given = os.environ.get("DATABASE_URL")
        self.server: Any = None
        if given:
            server_url = given
        else:
            import pgserver

            self.server = pgserver.get_server(folder / "postgres", cleanup_mode="stop")
            server_url = self.server.get_uri()
        self.database = f"faults_{os.getpid()}"
        admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.database}"'))
        admin.dispose()
        self.server_url = server_url
        self.url = make_url(sqlalchemy_url(server_url)).set(database=self.database).render_as_string(False)

    @property
    def ours(self) -> bool:
        return self.server is not None

    def _pg_ctl(self, *args: str) -> None:
        import pgserver

        pgserver.pg_ctl(  # type: ignore[attr-defined]
            list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=30
        )

    def stop(self, mode: str) -> None:
        self._socket_dir = self.server._postmaster_info.socket_dir
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        from pgserver.utils import PostmasterInfo

        log = str(self.server.log)
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", log, "start")
        # pgserver stops the server it knows of at exit: tell it about this one.
        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(self.server.pgdata)

    def drop(self) -> None:
        admin = create_engine(sqlalchemy_url(self.server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        admin.dispose()


# --- the stack --------------------------------------------------------------------------


class Stack:
    """gunicorn and two fold workers, started as the Procfile starts them."""

    def __init__(
        self, folder: Path, database_url: str, redis_url: str, prefix: str, queue: str, web_workers: int
    ):
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "FOLD_QUEUE": queue,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(web_workers),
            "PYTHONUNBUFFERED": "1",
        }
        self.web = self._start(
            "web",
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-c",
                "python:app.gunicorn_config",
                "app:create_app()",
            ],
        )
        self.workers = {name: self._start_worker(name) for name in ("worker-a", "worker-b")}

    def _start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:
            return subprocess.Popen(argv, cwd=ROOT, env=env or self.env, stdout=log, stderr=log)

    def _start_worker(self, name: str) -> subprocess.Popen[bytes]:
        # application_name tells this worker's Postgres sessions apart (the mid-batch fault).
        url = self.env["DATABASE_URL"]
        url += ("&" if "?" in url else "?") + f"application_name={name}"
        return self._start(name, [sys.executable, "-m", "workers"], {**self.env, "DATABASE_URL": url})

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
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except Exception:
                time.sleep(0.2)
        raise SystemExit(f"bin/faults: the stack did not get ready; logs in {self.folder}")

    def stop(self) -> None:
        processes = [self.web, *self.workers.values()]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# --- the load ---------------------------------------------------------------------------


@dataclass
class Load:
    """Batches of track events with known messageIds, retried until acknowledged."""

    base: str
    key: str
    tag: str
    threads: int = 3
    rate_per_thread: float = 25.0  # requests per second
    batch: int = 10
    acked: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    errors_5xx: int = 0
    errors_503: int = 0
    refused: int = 0  # connection errors, retried
    _give_up: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, give_up_after: float = 30) -> None:
        self._stop.set()
        self._give_up = time.monotonic() + give_up_after
        for thread in self._threads:
            thread.join(give_up_after + 5)

    def _run(self, n: int) -> None:
        auth = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
        seq = 0
        while not self._stop.is_set():
            started = time.monotonic()
            ids = [f"{self.tag}-{n}-{seq}-{i}" for i in range(self.batch)]
            seq += 1
            events = [
                {
                    "type": "track",
                    "userId": f"{self.tag}-u{(seq * self.batch + i) % 40}",
                    "event": "Fault Load",
                    "messageId": mid,
                }
                for i, mid in enumerate(ids)
            ]
            with self._lock:
                self.sent.update(ids)
            body = json.dumps({"batch": events}).encode()
            while True:  # Segment retries until a 2xx
                status = self._post(body, auth)
                if 200 <= status < 300:
                    with self._lock:
                        self.acked.update(ids)
                    break
                with self._lock:
                    if status == 503:
                        self.errors_503 += 1
                    elif status >= 500:
                        self.errors_5xx += 1
                    elif status == 0:
                        self.refused += 1
                    else:
                        self.errors_5xx += 1  # a 4xx for a valid batch is as wrong
                if self._stop.is_set() and time.monotonic() > self._give_up:
                    return
                time.sleep(0.1)
            time.sleep(max(0.0, 1 / self.rate_per_thread - (time.monotonic() - started)))

    def _post(self, body: bytes, auth: str) -> int:
        request = urllib.request.Request(
            self.base + "/v1/batch",
            data=body,
            method="POST",
            headers={"Authorization": auth, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (OSError, urllib.error.URLError):
            return 0


# --- checks -----------------------------------------------------------------------------


def unfolded(engine: Engine, team_id: int) -> int | None:
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM events WHERE team_id = :t AND folded_at IS NULL"),
                    {"t": team_id},
                ).scalar_one()
            )
    except Exception:
        return None  # Postgres not back yet


def audit(engine: Engine, team_id: int, acked: set[str]) -> tuple[int, int]:
    """(lost, duplicated): acknowledged events not stored-and-folded once; extra copies."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT message_id, count(*) AS n, bool_and(customer_id IS NOT NULL) AS folded "
                "FROM events WHERE team_id = :t GROUP BY message_id"
            ),
            {"t": team_id},
        ).all()
        miscounted = connection.execute(
            text("""SELECT count(*) FROM customers c WHERE c.team_id = :t AND c.merged_into IS NULL
                    AND c.event_count <> (SELECT count(*) FROM events e
                                          WHERE e.team_id = :t AND e.customer_id = c.id)"""),
            {"t": team_id},
        ).scalar_one()
    stored = {row.message_id: row for row in rows}
    lost = sum(1 for mid in acked if mid not in stored or not stored[mid].folded)
    duplicated = sum(row.n - 1 for row in rows) + int(miscounted)
    return lost, duplicated


# --- the faults -------------------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    postgres: Postgres
    redis: EmbeddedRedis | None
    redis_url: str
    stack: Stack
    engine: Engine
    rq_redis: Redis
    prefix: str
    queue: str
    killed: list[str] = field(default_factory=list)  # workers to start again after the case

    def fold_lock_holder(self, team_id: int) -> str | None:
        with self.engine.connect() as connection:
            found = connection.execute(
                text("""SELECT a.application_name FROM pg_locks l
                        JOIN pg_stat_activity a ON a.pid = l.pid
                        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :ns AND l.objid = :t
                          AND a.datname = current_database()"""),
                {"ns": FOLD_LOCK_NAMESPACE, "t": team_id},
            ).scalar()
        return str(found) if found else None


Fault = Callable[[Run, int], None]


def kill_worker_mid_batch(run: Run, team_id: int) -> None:
    """Let a backlog build (both workers stopped), then SIGKILL the one inside a batch."""
    for process in run.stack.workers.values():
        process.send_signal(signal.SIGSTOP)
    time.sleep(1.5)
    for process in run.stack.workers.values():
        process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while (holder := run.fold_lock_holder(team_id)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no worker took a batch of the team within 10s")
        time.sleep(0.002)
    run.stack.workers[holder].kill()
    run.killed.append(holder)
    say(f"  killed {holder} inside a batch")


def idle_workers(run: Run) -> int:
    """Fold workers blocked in RQ's BLMOVE, waiting for a job."""
    clients = cast(list[dict[str, str]], run.rq_redis.client_list())  # redis-py types it as maybe-async
    return sum(1 for c in clients if c.get("cmd") == "blmove" and "b" in c.get("flags", ""))


def untaken_jobs(run: Run, team_id: int) -> set[str]:
    """The team's jobs in RQ's intermediate list (taken from the queue) not yet started."""
    queue = Queue(run.queue, connection=run.rq_redis)
    found = set()
    for job_id in queue.intermediate_queue.get_job_ids():
        if not run.rq_redis.exists(f"rq:job:{job_id}"):
            continue
        job = Job.fetch(job_id, connection=run.rq_redis)
        if job.args == (team_id,) and job.get_status() == "queued":
            found.add(job_id)
    return found


def kill_worker_after_taking_a_job(run: Run, team_id: int) -> None:
    """SIGSTOP worker-a while it waits in BLMOVE; once it was served a job (which then
    sits in RQ's intermediate list, unstarted), SIGKILL it."""
    doomed = run.stack.workers["worker-a"]
    for attempt in range(40):
        deadline = time.monotonic() + 3
        while idle_workers(run) < 2 and time.monotonic() < deadline:  # worker-a is waiting too
            time.sleep(0.005)
        doomed.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen = untaken_jobs(run, team_id)
            time.sleep(0.3)  # a running worker starts a job it took in milliseconds
            stranded = seen & untaken_jobs(run, team_id)
            if stranded:
                doomed.kill()
                run.killed.append("worker-a")
                say(f"  killed worker-a holding job {stranded.pop()} (attempt {attempt + 1})")
                return
        doomed.send_signal(signal.SIGCONT)
    raise RuntimeError("worker-a was never served a job while stopped")


def redis_stopped(run: Run, team_id: int) -> None:
    assert run.redis is not None and run.redis.process is not None
    run.redis.process.terminate()
    run.redis.process.wait(5)
    time.sleep(OUTAGE_SECONDS)
    run.redis.start()


def redis_frozen(run: Run, team_id: int) -> None:
    assert run.redis is not None and run.redis.process is not None
    run.redis.process.send_signal(signal.SIGSTOP)
    time.sleep(OUTAGE_SECONDS)
    run.redis.process.send_signal(signal.SIGCONT)


def redis_flushed(run: Run, team_id: int) -> None:
    run.rq_redis.flushall()


def kill_gunicorn_worker(run: Run, team_id: int) -> None:
    pids = run.stack.web_workers()
    os.kill(pids[0], signal.SIGKILL)


def postgres_stopped(mode: str) -> Fault:
    def fault(run: Run, team_id: int) -> None:
        run.postgres.stop(mode)
        time.sleep(OUTAGE_SECONDS)
        run.postgres.start()

    return fault


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault
    needs: str = ""  # "redis" / "postgres": a server of ours
    expects_503: bool = False
    rate: float = 25.0  # requests per second per load thread


CASES = [
    Case("worker SIGKILL mid-batch", kill_worker_mid_batch),
    Case("worker SIGKILL after taking a job", kill_worker_after_taking_a_job, rate=4.0),
    Case("redis stopped", redis_stopped, needs="redis"),
    Case("redis frozen", redis_frozen, needs="redis"),
    Case("redis flushed", redis_flushed, needs="redis"),
    Case("gunicorn worker SIGKILL", kill_gunicorn_worker),
    Case("postgres stopped (fast)", postgres_stopped("fast"), needs="postgres", expects_503=True),
    Case("postgres stopped (immediate)", postgres_stopped("immediate"), needs="postgres", expects_503=True),
]
SHORT = [
    "worker SIGKILL mid-batch",
    "worker SIGKILL after taking a job",
    "redis flushed",
    "gunicorn worker SIGKILL",
    "postgres stopped (immediate)",
]


@dataclass
class Row:
    name: str
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    errors_5xx: int = 0
    errors_503: int = 0
    recovery: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        if self.note.startswith("skipped"):
            return True
        return (
            not self.note
            and self.lost == 0
            and self.duplicated == 0
            and self.errors_5xx == 0
            and self.recovery is not None
            and self.recovery <= RECOVERY_BOUND_SECONDS
        )


def new_team(engine: Engine, name: str) -> tuple[int, str]:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        team, _ = create_team(connection, name, now)
        key = create_key(connection, team.id, "faults", ("ingest",), now)
    return team.id, key.secret


def run_case(run: Run, case: Case, warmup: float, tail: float) -> Row:
    row = Row(case.name)
    if case.needs == "redis" and run.redis is None:
        row.note = "skipped: REDIS_URL given, not our server"
        return row
    if case.needs == "postgres" and not run.postgres.ours:
        row.note = "skipped: DATABASE_URL given, not our server"
        return row
    team_id, key = new_team(run.engine, case.name)
    tag = f"f{team_id}"
    load = Load(run.stack.base, key, tag, rate_per_thread=case.rate).start()
    try:
        time.sleep(warmup)
        case.fault(run, team_id)
        fault_end = time.monotonic()
        time.sleep(tail)
    except Exception as error:
        row.note = f"fault not injected: {error}"
        fault_end = time.monotonic()
    finally:
        load.stop()
    row.acknowledged, row.errors_5xx = len(load.acked), load.errors_5xx
    row.errors_503 = load.errors_503
    if load.errors_503 and not case.expects_503:
        row.errors_5xx += load.errors_503
    deadline = fault_end + 60
    while True:
        left = unfolded(run.engine, team_id)
        if left == 0:
            row.recovery = time.monotonic() - fault_end
            break
        if time.monotonic() > deadline:
            row.note = row.note or f"stalled: {left} events unfolded after 60s"
            break
        time.sleep(0.05)
    row.lost, row.duplicated = audit(run.engine, team_id, load.acked)
    for name in run.killed:  # as a platform would, once the case is measured
        run.stack.restart_worker(name)
    run.killed.clear()
    if load.sent - load.acked:
        row.note = row.note or f"{len(load.sent - load.acked)} events never acknowledged"
    return row


def table(rows: list[Row]) -> str:
    head = ["fault", "acked", "lost", "dup", "5xx", "503 (expected)", "empty backlog after", "result"]
    lines = [head]
    for row in rows:
        recovered = f"{row.recovery:.1f}s" if row.recovery is not None else "-"
        lines.append(
            [
                row.name,
                str(row.acknowledged),
                str(row.lost),
                str(row.duplicated),
                str(row.errors_5xx),
                str(row.errors_503),
                recovered,
                ("ok" if row.ok else "FAIL") + (f" ({row.note})" if row.note else ""),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1])
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="a subset in under a minute (the tests' run)")
    parser.add_argument("--only", action="append", default=[], help="run only faults whose name has this")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # pgserver's platformdirs
    cases = [c for c in CASES if not args.short or c.name in SHORT]
    if args.only:
        cases = [c for c in cases if any(part in c.name for part in args.only)]
    warmup, tail = (0.8, 0.5) if args.short else (2.0, 1.0)
    global OUTAGE_SECONDS
    OUTAGE_SECONDS = 1.0 if args.short else 2.0

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # stop the stack and the servers on the way out

    signal.signal(signal.SIGTERM, interrupted)
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    say(f"logs and servers in {folder}")
    postgres = Postgres(folder)
    redis = None
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        redis = EmbeddedRedis(folder / "redis").start()
        redis_url = redis.url
    session = f"{os.getpid()}"
    prefix, queue = (PREFIX, FOLD_QUEUE) if redis else (f"faults-{session}:", f"faults-{session}")
    say("servers up; migrating")
    upgrade(postgres.url)
    say("starting the stack")
    settings = Settings.from_env({"DATABASE_URL": postgres.url, "REDIS_URL": redis_url})
    engine = make_engine(settings, pool_size=2)
    stack = Stack(folder, postgres.url, redis_url, prefix, queue, web_workers=1 if args.short else 2)
    rows: list[Row] = []
    try:
        stack.wait_ready()
        rq_redis = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        run = Run(folder, postgres, redis, redis_url, stack, engine, rq_redis, prefix, queue)
        for case in cases:
            say(f"{case.name} ...")
            rows.append(run_case(run, case, warmup, tail))
            say(
                f"  {rows[-1].acknowledged} acknowledged, recovered in "
                f"{rows[-1].recovery if rows[-1].recovery is None else round(rows[-1].recovery, 1)}s"
            )
    finally:
        say("stopping the stack")
        stack.stop()
        engine.dispose()
        say("stopping the servers")
        if redis is not None:
            redis.stop()
        try:
            if postgres.ours:
                postgres.stop("immediate")  # its data folder goes with the run's folder
            else:
                postgres.drop()
        except Exception as error:
            say(f"could not stop Postgres or drop the database: {type(error).__name__}")
    say("done")
    print(table(rows), flush=True)
    print(
        f"\nbound: every stored event folded within {RECOVERY_BOUND_SECONDS:.0f}s after the fault ends",
        flush=True,
    )
    failed = [row for row in rows if not row.ok]
    if failed:
        say(f"{len(failed)} faults failed; the stack's logs are in {folder}")
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
