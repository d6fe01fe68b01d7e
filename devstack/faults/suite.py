"""The fault suite's run (`main`): servers, the stack, then each case in turn, each into
its own team, and the table."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine

import devstack.faults
from devstack.faults.cases import CASES, SHORT, Case, Run
from devstack.faults.load import Load
from devstack.faults.observe import audit, unfolded
from devstack.faults.processes import FaultStack
from devstack.faults.report import RECOVERY_BOUND_SECONDS, Row, say, table
from devstack.faults.servers import SuiteDatabase
from devstack.stack import Services
from service.settings import Settings
from store.apikeys import create_key, create_team
from store.engine import make_engine
from store.migrate import upgrade

FOLD_QUEUE = "fold"
PREFIX = "tl:"


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
    check = None
    if case.prepare is not None:
        try:
            check = case.prepare(run, team_id)
        except Exception as error:
            row.note = f"not prepared: {type(error).__name__}: {error}"
            return row
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
    if check is not None:
        lost, duplicated, note = check()
        row.lost, row.duplicated = row.lost + lost, row.duplicated + duplicated
        row.note = row.note or note
    for name in run.killed:  # as a platform would, once the case is measured
        run.stack.restart_worker(name)
    run.killed.clear()
    if load.sent - load.acked:
        row.note = row.note or f"{len(load.sent - load.acked)} events never acknowledged"
    return row


def main(argv: list[str] | None = None) -> int:
    overview = (devstack.faults.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="bin/faults", description=overview)
    parser.add_argument("--short", action="store_true", help="a subset in under a minute (the tests' run)")
    parser.add_argument("--only", action="append", default=[], help="run only faults whose name has this")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # pgserver's platformdirs
    cases = [c for c in CASES if not args.short or c.name in SHORT]
    if args.only:
        cases = [c for c in cases if any(part in c.name for part in args.only)]
    warmup, tail = (0.8, 0.5) if args.short else (2.0, 1.0)
    outage = 1.0 if args.short else 2.0

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # stop the stack and the servers on the way out

    signal.signal(signal.SIGTERM, interrupted)
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    say(f"logs and servers in {folder}")
    services = Services.start(os.environ, folder, say)
    postgres = SuiteDatabase(services)
    redis, redis_url = services.redis, services.redis_url
    session = f"{os.getpid()}"
    prefix, queue = (PREFIX, FOLD_QUEUE) if redis else (f"faults-{session}:", f"faults-{session}")
    say("servers up; migrating")
    upgrade(postgres.url)
    say("starting the stack")
    settings = Settings.from_env({"DATABASE_URL": postgres.url, "REDIS_URL": redis_url})
    engine = make_engine(settings, pool_size=2)
    stack = FaultStack(folder, postgres.url, redis_url, prefix, queue, web_workers=1 if args.short else 2)
    rows: list[Row] = []
    try:
        stack.wait_ready()
        rq_redis = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        run = Run(folder, postgres, redis, redis_url, stack, engine, rq_redis, prefix, queue, outage)
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
        services.stop()
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
