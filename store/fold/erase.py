"""Segment `delete`: erase a person, and keep tombstones so re-sent older events stay erased.

The rules (docs/fold.md, "Delete"), which make the result independent of whether the
delete arrives before, after or between the person's events:

- A delete of userId U, received at R and placed at time T (its event time, or R when
  that is absent or absurd: `delete_time`), tombstones U at (T, R); several deletes: the
  latest of each.
- An event with a usable userId V is *erased* when it is dated at or before V's tombstone
  time **or was received at or before its receipt** (for an alias, also by its
  previousId's tombstone): a delete erases what we hold, whatever its event time, and
  what arrives later dated at or before it. Erasing it spreads the tombstone to every id
  it carries: its anonymousId, and both ends of an alias. So the person's devices and
  aliased userIds are erased up to the same instants, whichever came first.
- An event with only an anonymousId A is erased when covered by A's tombstone. An
  anonymousId does not spread a tombstone: a device shared with another known person
  never erases that person's own (userId) events.
- Events after a tombstone (received after the delete and dated after it) stay, and
  start a new customer.

Spreading needs the links of events that were already folded (read from the events the
tombstone covers) and of events already erased (`tombstone_links`, kept so a second,
later delete reaches the same ids as the first).

A customer that held an erased userId is taken apart: its remaining events (not covered,
or of other userIds it had been merged with) are marked unfolded again and folded in
this same batch as if new, so the result is what folding the survivors alone would give.
A customer that only lost some anonymous events keeps its id and has its traits, trait
history, memberships, summaries and counts derived again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from store.fold.batch import Batch
from store.fold.identity import SQL_IS_JUNK, usable_id
from store.fold.pending import PENDING_COLUMNS, PendingEvent
from store.fold_failures import forget_failures

Key = tuple[str, str]  # ("user" | "anonymous", id)
Link = tuple[str, str, str]  # a userId, and an id ("user" | "anonymous", id) it was seen with

# A delete's own time counts when it is within these bounds of its receipt; outside them
# (a year-0001 timestamp, a clock a year ahead) it is placed at its receipt: a far-past
# time would let later re-sends of what it should erase back in, a far-future one would
# erase everything the person does until then. Thirty days back covers a delete queued
# at Segment (regulations take days); a day ahead covers clock skew.
DELETE_TIME_PAST = timedelta(days=30)
DELETE_TIME_FUTURE = timedelta(days=1)


def delete_time(event_time: datetime, received_at: datetime) -> datetime:
    """Where a delete is placed: its event time, or its receipt when that time is absurd."""
    # Differences, not sums: year 1 minus thirty days is no datetime.
    if -DELETE_TIME_FUTURE <= received_at - event_time <= DELETE_TIME_PAST:
        return event_time
    return received_at


@dataclass(frozen=True, order=True)
class Stamp:
    """A tombstone: what it erases is dated at or before `at` or received by `received`."""

    at: datetime
    received: datetime
    message_id: str  # of the delete that set `at` (a re-sent delete is recognised by it)

    def covers(self, event_time: datetime, received_at: datetime | None) -> bool:
        return event_time <= self.at or (received_at is not None and received_at <= self.received)

    def join(self, other: Stamp) -> Stamp:
        """Both tombstones at once: the later of each instant."""
        first = max((self.at, self.message_id), (other.at, other.message_id))
        return Stamp(first[0], max(self.received, other.received), first[1])


@dataclass
class Erasure:
    """What the rest of the batch's fold needs to know after deletes were applied."""

    events: list[PendingEvent]  # to fold: the batch's survivors plus reopened ones
    changed_customers: set[int] = field(default_factory=set)  # kept, but lost events
    groups: set[str] = field(default_factory=set)  # lost group calls: derive again
    # anonymousIds whose customer was taken apart or lost events: re-resolve, or forget
    # them when no event carries them any more.
    loose_anonymous: set[str] = field(default_factory=set)
    reopened: set[int] = field(default_factory=set)  # customers taken apart


def event_keys(event: PendingEvent) -> list[Key]:
    """The identities an event carries (an alias's previousId may be either kind)."""
    keys: list[Key] = []
    user = usable_id(event.user_id)
    if user:
        keys.append(("user", user))
    if anon := usable_id(event.anonymous_id):
        keys.append(("anonymous", anon))
    previous = usable_id(event.previous_id) if event.type == "alias" else None
    if previous and previous != user:  # a self-alias links nothing
        keys += [("user", previous), ("anonymous", previous)]
    return keys


def event_links(event: PendingEvent) -> set[Link]:
    """The links an erased event leaves behind for later deletes to follow."""
    user = usable_id(event.user_id)
    if user is None:
        return set()
    links: set[Link] = set()
    if anon := usable_id(event.anonymous_id):
        links.add((user, "anonymous", anon))
    if event.type == "alias" and (previous := usable_id(event.previous_id)) and previous != user:
        links |= {(user, "user", previous), (user, "anonymous", previous), (previous, "user", user)}
    return links


def keep_links(batch: Batch, links: set[Link]) -> None:
    """Keep the links of events being erased (by a delete, or by retention: store/retention.py),
    so a later delete of their userId still reaches the ids they carried."""
    if not links:
        return
    batch.sql(
        """
        INSERT INTO tombstone_links (team_id, user_id, kind, value)
        SELECT :team, u, k, v
        FROM unnest(CAST(:users AS text[]), CAST(:kinds AS text[]),
                    CAST(:values AS text[])) AS x(u, k, v)
        ON CONFLICT DO NOTHING
        """,
        users=[u for u, _, _ in links],
        kinds=[k for _, k, _ in links],
        values=[v for _, _, v in links],
    )


def apply_deletes(batch: Batch, events: list[PendingEvent], *, take_apart: bool = False) -> Erasure:
    """Apply the batch's deletes and the stored tombstones; returns what is left to fold.

    `take_apart`: a customer that only lost events is taken apart too, instead of being
    derived again here (its events are returned to fold as new): a delete whose batch
    failed on other people's data erases its person with statements that cannot fail on
    data, and what is left is folded again with poison isolation (`workers/fold.py`).
    """
    return _Eraser(batch, take_apart).run(events)


class _Eraser:
    def __init__(self, batch: Batch, take_apart: bool = False):
        self.batch = batch
        self.sql = batch.sql
        self.take_apart = take_apart
        self.tomb: dict[Key, Stamp] = {}
        self.loaded: set[Key] = set()
        self.changed: dict[Key, Stamp] = {}

    def load(self, keys: set[Key]) -> None:
        keys = keys - self.loaded
        if not keys:
            return
        self.loaded |= keys
        rows = self.sql(
            """
            SELECT kind, value, deleted_at, received_at, message_id FROM tombstones
            WHERE team_id = :team AND (kind, value) IN (
                SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])))
            """,
            kinds=[k for k, _ in keys],
            values=[v for _, v in keys],
        )
        for kind, value, deleted_at, received_at, message_id in rows:
            self.bump((str(kind), str(value)), Stamp(deleted_at, received_at, str(message_id)), changed=False)

    def bump(self, key: Key, stamp: Stamp, changed: bool = True) -> None:
        old = self.tomb.get(key)
        new = stamp if old is None else old.join(stamp)
        if new != old:
            self.tomb[key] = new
            if changed:
                self.changed[key] = new

    def covering(self, event: PendingEvent) -> Stamp | None:
        """The tombstone that erases a userId event, if any."""
        user = usable_id(event.user_id)
        if user is None:
            return None
        keys = [("user", user)]
        if event.type == "alias" and (previous := usable_id(event.previous_id)):
            keys.append(("user", previous))
        stamps = [
            s
            for k in keys
            if (s := self.tomb.get(k)) is not None and s.covers(event.event_time, event.received_at)
        ]
        if not stamps:
            return None
        reach = stamps[0]
        for stamp in stamps[1:]:
            reach = reach.join(stamp)
        return reach

    def run(self, events: list[PendingEvent]) -> Erasure:
        deletes = [e for e in events if e.type == "delete"]
        rest = [e for e in events if e.type != "delete"]
        if deletes:
            # The delete itself names the person: it is not kept (the tombstone is); nor is
            # the failure an earlier attempt recorded for it (`workers/poison.py`).
            ids = [d.id for d in deletes]
            self.sql("DELETE FROM events WHERE team_id = :team AND id = ANY(:ids)", ids=ids)
            forget_failures(self.batch, ids)
        requested: dict[Key, Stamp] = {}
        for delete in deletes:
            if user := usable_id(delete.user_id):
                received = delete.received_at or delete.event_time
                stamp = Stamp(delete_time(delete.event_time, received), received, delete.message_id)
                key = ("user", user)
                requested[key] = stamp.join(requested[key]) if key in requested else stamp
        self.load(set(requested) | {k for e in rest for k in event_keys(e)})
        if not self.tomb and not requested:
            return Erasure(rest)  # the common case: nobody in this batch was ever deleted
        for key, stamp in requested.items():
            self.bump(key, stamp)

        erased: set[int] = set()
        links: set[Link] = set()
        spread: dict[str, Stamp] = {}
        # The least fixed point: a tombstone that rises reaches further, also through
        # events already found erased at a lower one.
        while True:
            before = dict(self.tomb)
            for event in rest:
                if (reach := self.covering(event)) is None:
                    continue
                erased.add(event.id)
                links |= event_links(event)
                keys = event_keys(event)
                self.load(set(keys))
                for key in keys:
                    self.bump(key, reach)
            todo = {v: s for (kind, v), s in self.changed.items() if kind == "user" and spread.get(v) != s}
            if todo:
                spread.update(todo)
                found = self.stored_links(todo)
                links |= found
                self.load({(kind, value) for _, kind, value in found})
                for user, kind, value in found:
                    self.bump((kind, value), todo[user])
            if self.tomb == before:
                break
        for event in rest:
            anon = usable_id(event.anonymous_id)
            if usable_id(event.user_id) is None and anon is not None:
                anon_stamp = self.tomb.get(("anonymous", anon))
                if anon_stamp is not None and anon_stamp.covers(event.event_time, event.received_at):
                    erased.add(event.id)

        if erased:
            self.sql("DELETE FROM events WHERE team_id = :team AND id = ANY(:ids)", ids=sorted(erased))
        self.save(links)
        erasure = Erasure([e for e in rest if e.id not in erased])
        if self.changed:
            self.erase_stored(erasure)
        return erasure

    def stored_links(self, users: dict[str, Stamp]) -> set[Link]:
        """Links of the users' folded events their tombstones cover, and of erased ones.

        Read from the covered events themselves (by their customer: an event with a userId
        is on that userId's customer), not from `anonymous_claims`/`aliases`, which keep
        only the earliest time of a link and not when its events were received.
        """
        rows = self.sql(
            """
            WITH x AS (SELECT * FROM unnest(CAST(:users AS text[]), CAST(:times AS timestamptz[]),
                                            CAST(:received AS timestamptz[])) AS x(u, t, r)),
                 covered AS (
                    SELECT x.u, e.type, e.anonymous_id, e.previous_id
                    FROM x JOIN identities i ON i.team_id = :team AND i.kind = 'user' AND i.value = x.u
                    JOIN events e ON e.team_id = :team AND e.customer_id = i.customer_id AND e.user_id = x.u
                    WHERE e.event_time <= x.t OR e.received_at <= x.r)
            SELECT u, 'anonymous', anonymous_id FROM covered WHERE anonymous_id IS NOT NULL
            UNION
            SELECT u, 'user', previous_id FROM covered WHERE type = 'alias' AND previous_id <> u
            UNION
            SELECT u, 'anonymous', previous_id FROM covered WHERE type = 'alias' AND previous_id <> u
            UNION
            SELECT x.u, 'user', a.user_id FROM x
            JOIN aliases a ON a.team_id = :team AND a.previous_id = x.u AND a.user_id <> x.u
            JOIN identities i ON i.team_id = :team AND i.kind = 'user' AND i.value = a.user_id
            WHERE EXISTS (
                SELECT 1 FROM events e
                WHERE e.team_id = :team AND e.customer_id = i.customer_id AND e.type = 'alias'
                  AND e.user_id = a.user_id AND e.previous_id = x.u
                  AND (e.event_time <= x.t OR e.received_at <= x.r))
            UNION
            SELECT x.u, l.kind, l.value FROM x JOIN tombstone_links l
                ON l.team_id = :team AND l.user_id = x.u
            """,
            users=list(users),
            times=[s.at for s in users.values()],
            received=[s.received for s in users.values()],
        )
        return {
            (str(u), str(k), str(v)) for u, k, v in rows if usable_id(str(v)) is not None
        }  # junk: no link

    def save(self, links: set[Link]) -> None:
        if self.changed:
            self.sql(
                """
                INSERT INTO tombstones AS t (team_id, kind, value, deleted_at, received_at, message_id)
                SELECT :team, k, v, d, r, m
                FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[]), CAST(:times AS timestamptz[]),
                            CAST(:received AS timestamptz[]), CAST(:mids AS text[])) AS x(k, v, d, r, m)
                ON CONFLICT (team_id, kind, value) DO UPDATE
                SET deleted_at = GREATEST(t.deleted_at, excluded.deleted_at),
                    received_at = GREATEST(t.received_at, excluded.received_at),
                    message_id = CASE
                        WHEN (excluded.deleted_at, excluded.message_id) > (t.deleted_at, t.message_id)
                        THEN excluded.message_id ELSE t.message_id END
                """,
                kinds=[k for k, _ in self.changed],
                values=[v for _, v in self.changed],
                times=[s.at for s in self.changed.values()],
                received=[s.received for s in self.changed.values()],
                mids=[s.message_id for s in self.changed.values()],
            )
        keep_links(self.batch, links)

    def erase_stored(self, erasure: Erasure) -> None:
        """Erase folded events the new tombstones cover; reopen the customers of erased userIds."""
        keys = list(self.changed)
        holders = self.sql(
            """
            SELECT i.kind, i.value, i.customer_id FROM identities i
            WHERE i.team_id = :team AND (i.kind, i.value) IN (
                SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])))
            """,
            kinds=[k for k, _ in keys],
            values=[v for _, v in keys],
        )
        users = [(str(v), self.changed[("user", str(v))], int(c)) for k, v, c in holders if k == "user"]
        anons = [
            (str(v), self.changed[("anonymous", str(v))], int(c)) for k, v, c in holders if k == "anonymous"
        ]
        lost = self.sql(
            f"""
            WITH x AS (SELECT * FROM unnest(CAST(:users AS text[]), CAST(:utimes AS timestamptz[]),
                                            CAST(:ureceived AS timestamptz[]), CAST(:ucs AS bigint[]))
                                  AS x(u, t, r, c)),
                 y AS (SELECT * FROM unnest(CAST(:anons AS text[]), CAST(:atimes AS timestamptz[]),
                                            CAST(:areceived AS timestamptz[]), CAST(:acs AS bigint[]))
                                  AS y(a, t, r, c))
            DELETE FROM events e
            WHERE e.team_id = :team AND e.customer_id = ANY(:holders) AND (
                EXISTS (SELECT 1 FROM x WHERE e.customer_id = x.c AND e.user_id = x.u
                        AND (e.event_time <= x.t OR e.received_at <= x.r))
                OR EXISTS (SELECT 1 FROM y WHERE e.customer_id = y.c AND e.anonymous_id = y.a
                           AND (e.event_time <= y.t OR e.received_at <= y.r)
                           AND (e.user_id IS NULL OR {SQL_IS_JUNK.format(column="e.user_id")})))
            RETURNING e.customer_id, e.group_id, e.anonymous_id
            """,
            users=[u for u, _, _ in users],
            utimes=[s.at for _, s, _ in users],
            ureceived=[s.received for _, s, _ in users],
            ucs=[c for _, _, c in users],
            anons=[a for a, _, _ in anons],
            atimes=[s.at for _, s, _ in anons],
            areceived=[s.received for _, s, _ in anons],
            acs=[c for _, _, c in anons],
            holders=sorted({c for _, _, c in users + anons}),
        )
        erasure.groups |= {str(g) for _, g, _ in lost if g is not None}
        reopened = {c for _, _, c in users}
        if self.take_apart:
            reopened |= {int(c) for c, _, _ in lost} | {c for _, _, c in anons}
        erasure.changed_customers |= {int(c) for c, _, _ in lost} - reopened
        erasure.reopened |= reopened
        # Every anonymousId an erased event carried may have lost its last event.
        erasure.loose_anonymous |= {a for a, _, c in anons if c not in reopened}
        erasure.loose_anonymous |= {a for _, _, v in lost if (a := usable_id(v))}
        if reopened:
            erasure.events += self.reopen(sorted(reopened), erasure)

    def reopen(self, customers: list[int], erasure: Erasure) -> list[PendingEvent]:
        """Take customers apart: their events become unfolded, to be folded again now."""
        params = {"c": customers}
        identities = self.sql(
            "SELECT kind, value FROM identities WHERE team_id = :team AND customer_id = ANY(:c)", **params
        )
        users = [str(v) for k, v in identities if k == "user"]
        erasure.loose_anonymous |= {str(v) for k, v in identities if k == "anonymous"}
        rows = self.sql(
            f"""
            UPDATE events SET customer_id = NULL, folded_at = NULL
            WHERE team_id = :team AND customer_id = ANY(:c)
            RETURNING {PENDING_COLUMNS}
            """,
            **params,
        )
        for statement in (
            "DELETE FROM identities WHERE team_id = :team AND customer_id = ANY(:c)",
            "DELETE FROM customer_traits WHERE team_id = :team AND customer_id = ANY(:c)",
            "DELETE FROM memberships WHERE team_id = :team AND customer_id = ANY(:c)",
            "DELETE FROM trait_history WHERE team_id = :team AND customer_id = ANY(:c)",
            "DELETE FROM event_summaries WHERE team_id = :team AND customer_id = ANY(:c)",
            "DELETE FROM customers WHERE team_id = :team AND (id = ANY(:c) OR merged_into = ANY(:c))",
        ):
            self.sql(statement, **params)
        # Their links come back from the reopened events as they are folded again; the
        # anonymousIds they claimed are resolved again (or forgotten if nothing is left).
        claimed = self.sql(
            "DELETE FROM anonymous_claims WHERE team_id = :team AND user_id = ANY(:u) RETURNING anonymous_id",
            u=users,
        )
        erasure.loose_anonymous |= {str(a) for (a,) in claimed}
        self.sql("DELETE FROM aliases WHERE team_id = :team AND user_id = ANY(:u)", u=users)
        return [PendingEvent(*row) for row in rows]
