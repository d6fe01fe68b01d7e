"""psycopg under gevent waits on the hub (service/waiting.py), in a real patched process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from sqlalchemy import make_url

from tests.servers import ROOT

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent, psycopg, psycopg.waiting
    from service.waiting import cooperative_wait, install

    url = sys.argv[1]
    installed = install()
    marks = []
    # The slow statement waits on a lock this connection holds until `quick` has run: no
    # pause decides the order (a loaded machine could have finished a timed statement first).
    holder = psycopg.connect(url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(424242, 1)")

    def slow():
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SELECT pg_advisory_lock(424242, 1)")
            marks.append("slow done")

    def quick():
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 424242 "
            "AND objid = 1 AND NOT granted"
        )
        while not holder.execute(waiting).fetchone()[0]:  # until the slow statement waits
            gevent.sleep(0.01)
        marks.append("quick ran")  # while the slow statement is still waiting
        holder.execute("SELECT pg_advisory_unlock(424242, 1)")

    def cancelled():
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SET statement_timeout = '100ms'")
            try:
                connection.execute("SELECT pg_sleep(5)")
            except psycopg.errors.QueryCanceled:
                return "QueryCanceled"
            return "not cancelled"

    def rows():
        with psycopg.connect(url) as connection:
            return connection.execute("SELECT count(*) FROM generate_series(1, 3000)").fetchone()[0]

    jobs = [gevent.spawn(slow), gevent.spawn(quick), gevent.spawn(cancelled), gevent.spawn(rows)]
    gevent.joinall(jobs, timeout=20)
    print(json.dumps({
        "installed": installed,
        "wait_is_ours": psycopg.waiting.wait is cooperative_wait,
        "marks": marks,
        "cancelled": jobs[2].value,
        "count": jobs[3].value,
    }))
    """
)


def test_under_gevent_psycopg_waits_on_the_hub_and_other_greenlets_run(database_url: str) -> None:
    libpq_url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, libpq_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["installed"] and outcome["wait_is_ours"]
    assert outcome["marks"] == ["quick ran", "slow done"], done.stderr[-3000:]  # the wait yielded
    assert outcome["cancelled"] == "QueryCanceled"  # an error Postgres answers still comes back
    assert outcome["count"] == 3000


def test_outside_gevent_nothing_is_installed() -> None:
    from service.waiting import install

    assert install() is False


WATCH_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, socket, sys
    import gevent, psycopg
    from service.waiting import install, unwatch_client, watch_client

    url = sys.argv[1]
    install()

    backends = {}

    def read(name, client_fd, leave):
        # A read's statement, watched for a client: `leave` closes the client's far end.
        with psycopg.connect(url, autocommit=True) as connection:
            backends[name] = connection.info.backend_pid
            watch = watch_client(client_fd)
            watch.add(connection)
            gevent.spawn_later(0.2, leave)
            try:
                connection.execute("SELECT pg_sleep(30)")
                outcome = "finished"
            except psycopg.errors.QueryCanceled:
                outcome = "cancelled"
            unwatch_client()
            return outcome, watch.gone, watch.talking

    gone_near, gone_far = socket.socketpair()
    talk_near, talk_far = socket.socketpair()

    def cancel_from_outside():
        # The talking read's statement only, once it runs (a loaded machine may start it
        # late, and the other read's statement must be cancelled by its own watch alone).
        with psycopg.connect(url, autocommit=True) as other:
            while other.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = %s "
                "AND state = 'active' AND query = 'SELECT pg_sleep(30)'",
                (backends["talking"],),
            ).fetchone() is None:
                gevent.sleep(0.02)

    def talk():
        talk_far.sendall(b"GET / HTTP/1.1")  # bytes, not EOF: the watch stops, nothing is cancelled
        gevent.spawn_later(0.3, cancel_from_outside)

    left = gevent.spawn(read, "left", gone_near.fileno(), gone_far.close)
    talking = gevent.spawn(read, "talking", talk_near.fileno(), talk)
    gevent.joinall([left, talking], timeout=20)
    print(json.dumps({"left": left.value, "talking": talking.value}))
    """
)


def test_a_watched_statement_is_cancelled_when_its_client_closes_and_only_then(database_url: str) -> None:
    libpq_url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", WATCH_SCRIPT, libpq_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["left"] == ["cancelled", True, False]  # EOF: cancelled in Postgres by the wait
    # Bytes from a client that stays are not a leaving: the wait stops watching it, and the
    # statement ran on until the test cancelled it from outside.
    assert outcome["talking"] == ["cancelled", False, True]
