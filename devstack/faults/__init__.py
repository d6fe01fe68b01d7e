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
- Postgres stopped and started, fast and immediate;
- a worker SIGKILLed while it moves events stored before migration 0012 into the months
  (`old_events`: the case stops the stack to take the schema back to 0011 and up again).

After each fault it waits until every stored event of the team is folded and prints a
row: acknowledged, lost (acknowledged but not stored and folded exactly once), duplicated,
5xx (503 during a Postgres outage is expected and counted apart), and the time from the
end of the fault to an empty backlog. It exits 1 on any loss, duplicate, unexpected 5xx
or a recovery slower than `RECOVERY_BOUND_SECONDS`. `--short` runs a subset in under a
minute (tests/devstack/test_faults.py). Faults that need to stop a server are skipped
when that server is not ours (its URL was given).

Its modules, by concern: `servers` (the suite's database, on our Postgres or a given
one), `processes` (the stack it runs), `load` (the traffic it offers), `observe` (what it
reads of Postgres and RQ), `cases` (the faults), `report` (the rows and the table) and
`suite` (the run, `main`); `old_events` is the timeline move's case (a preparation
before the load, and a check of the events it stored).
"""
