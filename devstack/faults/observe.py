"""What the fault suite reads of the stack: the team's backlog and audit in Postgres,
who holds a team's fold lock, and the fold workers' state in RQ."""

from __future__ import annotations

from typing import cast

from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine, text

from store.fold.backlog import FOLD_LOCK_NAMESPACE


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


def fold_lock_holder(engine: Engine, team_id: int) -> str | None:
    """The application_name of the worker holding the team's fold lock (inside a batch)."""
    with engine.connect() as connection:
        found = connection.execute(
            text("""SELECT a.application_name FROM pg_locks l
                    JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :ns AND l.objid = :t
                      AND a.datname = current_database()"""),
            {"ns": FOLD_LOCK_NAMESPACE, "t": team_id},
        ).scalar()
    return str(found) if found else None


def idle_workers(rq_redis: Redis) -> int:
    """Fold workers blocked in RQ's BLMOVE, waiting for a job."""
    clients = cast(list[dict[str, str]], rq_redis.client_list())  # redis-py types it as maybe-async
    return sum(1 for c in clients if c.get("cmd") == "blmove" and "b" in c.get("flags", ""))


def untaken_jobs(rq_redis: Redis, queue_name: str, team_id: int) -> set[str]:
    """The team's jobs in RQ's intermediate list (taken from the queue) not yet started."""
    queue = Queue(queue_name, connection=rq_redis)
    found = set()
    for job_id in queue.intermediate_queue.get_job_ids():
        if not rq_redis.exists(f"rq:job:{job_id}"):
            continue
        job = Job.fetch(job_id, connection=rq_redis)
        if job.args == (team_id,) and job.get_status() == "queued":
            found.add(job_id)
    return found
