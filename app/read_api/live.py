"""One subscription per web process to what the fold folded: the live streams' source.

The fold `NOTIFY`s from each batch's transaction which events landed on which customer's
timeline (`store/live.py`). Each web process holds one Postgres session that `LISTEN`s
(a `Listener`, made on the first stream and again in a forked child). For each notice it
reads, in one statement by primary key, the items of the events that land on customers
with a stream open in this process, and puts them in those streams' queues
(`Subscription`). So a notice costs a process one read, however many pages are open, and
one open page costs a queue put. A page that follows a whole team (the console's home,
`TeamSubscription`) is told only that the team has news (`NEWS`), with no read at all.

A notice can be lost only while the listening session is down (Postgres restarted, the
connection cut): when it is back, every open stream is told to catch up (`RESYNC`), and
reads what it missed from its position, so nothing is skipped or sent twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from typing import Final

import psycopg
from sqlalchemy import Engine

from service.per_process import PerProcess, start_daemon, when_stopping
from store.live import FOLDED_CHANNEL, StreamItem, read_folded

log = logging.getLogger(__name__)

RESYNC: Final = None  # what a stream's queue receives when notices may have been missed
END: Final = "end"  # ... when the process is stopping: the stream ends, its client resumes elsewhere
_RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0)
_STOP_LOOK_SECONDS = 1.0


class Subscription:
    """One open stream's share of the notices: the items folded onto its customer."""

    def __init__(self, team_id: int, customer_id: int):
        self.key = (team_id, customer_id)
        self.notices: queue.Queue[list[StreamItem] | str | None] = queue.Queue()


NEWS: Final = "news"  # ... a team subscription's word: one of the team's customers has a new event


class TeamSubscription:
    """An open page's share of the notices about a whole team (the console's home): a word
    (NEWS) that some customer of the team had events folded, never the items; the page
    reads what it shows itself."""

    def __init__(self, team_id: int):
        self.team_id = team_id
        self.notices: queue.Queue[str | None] = queue.Queue()


class Listener:
    """This process's one `LISTEN` session and the streams it feeds."""

    def __init__(self, conninfo: str, reads: Engine):
        self._conninfo = conninfo
        self._reads = reads
        self._lock = threading.Lock()
        self._streams: dict[tuple[int, int], set[Subscription]] = defaultdict(set)
        self._teams: dict[int, set[TeamSubscription]] = defaultdict(set)
        self.open = 0
        self.listening = threading.Event()
        self.stopped = False
        start_daemon(self._run, "timeline-live-listener")
        when_stopping(self.end_all)

    def subscribe(self, team_id: int, customer_id: int) -> Subscription:
        subscription = Subscription(team_id, customer_id)
        with self._lock:
            self._streams[subscription.key].add(subscription)
            self.open += 1
            if self.stopped:  # a request that reached a stopping process: resume elsewhere
                subscription.notices.put(END)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            streams = self._streams.get(subscription.key)
            if streams is not None and subscription in streams:
                streams.discard(subscription)
                self.open -= 1
                if not streams:
                    del self._streams[subscription.key]

    def subscribe_team(self, team_id: int) -> TeamSubscription:
        """A subscription to the news of every customer of the team (counted as a stream)."""
        subscription = TeamSubscription(team_id)
        with self._lock:
            self._teams[team_id].add(subscription)
            self.open += 1
            if self.stopped:  # a request that reached a stopping process: resume elsewhere
                subscription.notices.put(END)
        return subscription

    def unsubscribe_team(self, subscription: TeamSubscription) -> None:
        with self._lock:
            subscriptions = self._teams.get(subscription.team_id)
            if subscriptions is not None and subscription in subscriptions:
                subscriptions.discard(subscription)
                self.open -= 1
                if not subscriptions:
                    del self._teams[subscription.team_id]

    def deliver(self, payload: str) -> None:
        """Hand a notice's items (`team customer:event ...`) to the streams open on its customers."""
        team, _, pairs = payload.partition(" ")
        try:
            team_id = int(team)
            folded = [(int(c), int(e)) for c, _, e in (pair.partition(":") for pair in pairs.split())]
        except ValueError:
            log.warning("live: a notice that is not ours on %s was ignored", FOLDED_CHANNEL)
            return
        with self._lock:
            for team_subscription in self._teams.get(team_id, ()) if folded else ():
                team_subscription.notices.put(NEWS)
            wanted = [event for customer, event in folded if (team_id, customer) in self._streams]
        if not wanted:
            return
        try:
            with self._reads.connect() as connection:
                items = read_folded(connection, team_id, wanted)
        except Exception as error:  # the streams concerned read it themselves, later
            log.warning("live: reading folded items failed (%s); the streams catch up", type(error).__name__)
            self._resync({(team_id, customer) for customer, _ in folded})
            return
        by_customer: dict[int, list[StreamItem]] = defaultdict(list)
        for item in items:
            by_customer[item.customer_id].append(item)
        with self._lock:
            for customer, found in by_customer.items():
                for subscription in self._streams.get((team_id, customer), ()):
                    subscription.notices.put(found)

    def end_all(self) -> None:
        """End every open stream and stop listening (the process is stopping)."""
        with self._lock:
            self.stopped = True
            for streams in self._streams.values():
                for subscription in streams:
                    subscription.notices.put(END)
            for subscriptions in self._teams.values():
                for team_subscription in subscriptions:
                    team_subscription.notices.put(END)

    def _resync(self, keys: set[tuple[int, int]] | None = None) -> None:
        """Tell these streams (every one: None) to read what they may have missed; a team's
        subscriptions hear of every customer of the team concerned."""
        with self._lock:
            for key, streams in self._streams.items():
                if keys is None or key in keys:
                    for subscription in streams:
                        subscription.notices.put(RESYNC)
            teams = None if keys is None else {team for team, _ in keys}
            for team, subscriptions in self._teams.items():
                if teams is None or team in teams:
                    for team_subscription in subscriptions:
                        team_subscription.notices.put(RESYNC)

    def _run(self) -> None:
        failures = 0
        while not self.stopped:
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, application_name="timeline-live"
                ) as session:
                    session.execute(f"LISTEN {FOLDED_CHANNEL}")
                    # Whatever was folded while this session was not listening: read it.
                    self._resync()
                    self.listening.set()
                    failures = 0
                    while not self.stopped:  # a look at `stopped` a second, when nothing comes
                        for notice in session.notifies(timeout=_STOP_LOOK_SECONDS):
                            self.deliver(notice.payload)
                return  # the process is stopping: the session closes, nothing waits on it
            except Exception as error:  # the session is gone: listen again, streams catch up
                self.listening.clear()
                wait = _RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning(
                    "live: listening on Postgres failed (%s); again in %.1f s", type(error).__name__, wait
                )
                time.sleep(wait)


def libpq_conninfo(engine: Engine) -> str:
    """The engine's database as a libpq URL (psycopg's own, without SQLAlchemy's driver name)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def per_process_listener(reads: Engine) -> PerProcess[Listener]:
    """The listener each web process makes on its first stream (made again in a forked
    child); it reads items through `reads`, the process's read engine."""
    conninfo = libpq_conninfo(reads)
    return PerProcess(lambda: Listener(conninfo, reads))
