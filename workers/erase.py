"""Segment `delete`: erase a person, and keep tombstones so re-sent older events stay erased.

The rules (docs/fold.md, "Delete"), which make the result independent of whether the
delete arrives before, after or between the person's events:

- A delete of userId U at time T tombstones U at T (several deletes: the latest counts).
- An event with a usable userId V is *erased* when its time is at or before V's tombstone
  (for an alias, also before its previousId's). Erasing it spreads the tombstone to every
  id it carries: its anonymousId, and both ends of an alias. So the person's devices and
  aliased userIds are erased up to the same instant, whichever came first.
- An event with only an anonymousId A is erased when at or before A's tombstone. An
  anonymousId does not spread a tombstone: a device shared with another known person
  never erases that person's own (userId) events.
- Events after a tombstone stay, and start a new customer.

Spreading needs the links of events that were already folded (`anonymous_claims`,
`aliases`) and of events already erased (`tombstone_links`, kept so a second, later
delete reaches the same ids as the first).

A customer that held an erased userId is taken apart: its remaining events (dated after
the tombstones, or of other userIds it had been merged with) are marked unfolded again
and folded in this same batch as if new, so the result is what folding the survivors
alone would give. A customer that only lost some anonymous events keeps its id and has
its traits, trait history, memberships, summaries and counts derived again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workers.batch import Batch
from workers.identity import SQL_IS_JUNK, usable_id
from workers.pending import PENDING_COLUMNS, PendingEvent

Key = tuple[str, str]  # ("user" | "anonymous", id)
Stamp = tuple[datetime, str]  # (deleted_at, messageId of the delete that set it)
Link = tuple[str, str, str]  # a userId, and an id ("user" | "anonymous", id) it was seen with


@dataclass
class Erasure:
    """What the rest of the batch's fold needs to know after deletes were applied."""

    events: list[PendingEvent]  # to fold: the batch's survivors plus reopened ones
    changed_customers: set[int] = field(default_factory=set)  # kept, but lost events
    groups: set[str] = field(default_factory=set)  # lost group calls: derive again
    # anonymousIds whose customer was taken apart or lost events: re-resolve, or forget
    # them when no event carries them any more.
    loose_anonymous: set[str] = field(default_factory=set)


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


def apply_deletes(batch: Batch, events: list[PendingEvent]) -> Erasure:
    """Apply the batch's deletes and the stored tombstones; returns what is left to fold."""
    return _Eraser(batch).run(events)


class _Eraser:
    def __init__(self, batch: Batch):
        self.sql = batch.sql
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
            SELECT kind, value, deleted_at, message_id FROM tombstones
            WHERE team_id = :team AND (kind, value) IN (
                SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])))
            """,
            kinds=[k for k, _ in keys],
            values=[v for _, v in keys],
        )
        for kind, value, deleted_at, message_id in rows:
            self.bump((str(kind), str(value)), (deleted_at, str(message_id)), changed=False)

    def bump(self, key: Key, stamp: Stamp, changed: bool = True) -> None:
        if key not in self.tomb or stamp > self.tomb[key]:
            self.tomb[key] = stamp
            if changed:
                self.changed[key] = stamp

    def covering(self, event: PendingEvent) -> Stamp | None:
        """The tombstone that erases a userId event, if any."""
        user = usable_id(event.user_id)
        if user is None:
            return None
        keys = [("user", user)]
        if event.type == "alias" and (previous := usable_id(event.previous_id)):
            keys.append(("user", previous))
        stamps = [s for k in keys if (s := self.tomb.get(k)) is not None and event.event_time <= s[0]]
        return max(stamps) if stamps else None

    def run(self, events: list[PendingEvent]) -> Erasure:
        deletes = [e for e in events if e.type == "delete"]
        rest = [e for e in events if e.type != "delete"]
        if deletes:
            # The delete itself names the person: it is not kept (the tombstone is).
            self.sql(
                "DELETE FROM events WHERE team_id = :team AND id = ANY(:ids)", ids=[d.id for d in deletes]
            )
        requested: dict[Key, Stamp] = {}
        for delete in deletes:
            if user := usable_id(delete.user_id):
                stamp = (delete.event_time, delete.message_id)
                requested[("user", user)] = max(requested.get(("user", user), stamp), stamp)
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
                if anon_stamp is not None and event.event_time <= anon_stamp[0]:
                    erased.add(event.id)

        if erased:
            self.sql("DELETE FROM events WHERE team_id = :team AND id = ANY(:ids)", ids=sorted(erased))
        self.save(links)
        erasure = Erasure([e for e in rest if e.id not in erased])
        if self.changed:
            self.erase_stored(erasure)
        return erasure

    def stored_links(self, users: dict[str, Stamp]) -> set[Link]:
        """Links of the users' events at or before their tombstones, folded or erased."""
        rows = self.sql(
            """
            WITH x AS (SELECT * FROM unnest(CAST(:users AS text[]), CAST(:times AS timestamptz[])) AS x(u, t))
            SELECT x.u, 'anonymous', c.anonymous_id FROM x JOIN anonymous_claims c
                ON c.team_id = :team AND c.user_id = x.u AND c.first_at <= x.t
            UNION
            SELECT x.u, 'user', a.previous_id FROM x JOIN aliases a
                ON a.team_id = :team AND a.user_id = x.u AND a.first_at <= x.t
            UNION
            SELECT x.u, 'user', a.user_id FROM x JOIN aliases a
                ON a.team_id = :team AND a.previous_id = x.u AND a.first_at <= x.t
            UNION
            SELECT x.u, l.kind, l.value FROM x JOIN tombstone_links l
                ON l.team_id = :team AND l.user_id = x.u
            """,
            users=list(users),
            times=[s[0] for s in users.values()],
        )
        return {(str(u), str(k), str(v)) for u, k, v in rows}

    def save(self, links: set[Link]) -> None:
        if self.changed:
            self.sql(
                """
                INSERT INTO tombstones AS t (team_id, kind, value, deleted_at, message_id)
                SELECT :team, k, v, d, m
                FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[]),
                            CAST(:times AS timestamptz[]), CAST(:mids AS text[])) AS x(k, v, d, m)
                ON CONFLICT (team_id, kind, value) DO UPDATE
                SET deleted_at = excluded.deleted_at, message_id = excluded.message_id
                WHERE (excluded.deleted_at, excluded.message_id) > (t.deleted_at, t.message_id)
                """,
                kinds=[k for k, _ in self.changed],
                values=[v for _, v in self.changed],
                times=[s[0] for s in self.changed.values()],
                mids=[s[1] for s in self.changed.values()],
            )
        if links:
            self.sql(
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
        users = [(str(v), self.changed[("user", str(v))][0], int(c)) for k, v, c in holders if k == "user"]
        anons = [
            (str(v), self.changed[("anonymous", str(v))][0], int(c))
            for k, v, c in holders
            if k == "anonymous"
        ]
        lost = self.sql(
            f"""
            WITH x AS (SELECT * FROM unnest(CAST(:users AS text[]), CAST(:utimes AS timestamptz[]),
                                            CAST(:ucs AS bigint[])) AS x(u, t, c)),
                 y AS (SELECT * FROM unnest(CAST(:anons AS text[]), CAST(:atimes AS timestamptz[]),
                                            CAST(:acs AS bigint[])) AS y(a, t, c))
            DELETE FROM events e
            WHERE e.team_id = :team AND e.customer_id = ANY(:holders) AND (
                EXISTS (SELECT 1 FROM x WHERE e.customer_id = x.c AND e.user_id = x.u AND e.event_time <= x.t)
                OR EXISTS (SELECT 1 FROM y WHERE e.customer_id = y.c AND e.anonymous_id = y.a
                           AND e.event_time <= y.t
                           AND (e.user_id IS NULL OR {SQL_IS_JUNK.format(column="e.user_id")})))
            RETURNING e.customer_id, e.group_id, e.anonymous_id
            """,
            users=[u for u, _, _ in users],
            utimes=[t for _, t, _ in users],
            ucs=[c for _, _, c in users],
            anons=[a for a, _, _ in anons],
            atimes=[t for _, t, _ in anons],
            acs=[c for _, _, c in anons],
            holders=sorted({c for _, _, c in users + anons}),
        )
        erasure.groups |= {str(g) for _, g, _ in lost if g is not None}
        reopened = {c for _, _, c in users}
        erasure.changed_customers |= {int(c) for c, _, _ in lost} - reopened
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
