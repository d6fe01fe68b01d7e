"""A reference model of the fold: what a team's state must be, as a function of its events.

This is the fold's contract (docs/fold.md) written as plain Python over the *set* of
events, with no order, no batches and no database. The property tests fold the same
events in many orders and batchings and compare the database against this model, so a
fold that is wrong the same way in every order is caught too.

`snapshot` reads the same normalised state back from the database, where customer ids
(which depend on arrival order) are replaced by the ids each customer holds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from schemas.segment import PreparedEvent
from schemas.trait_keys import normalise_trait_key
from store.fold.erase import DELETE_TIME_FUTURE, DELETE_TIME_PAST
from store.fold.identity import usable_id

CustomerKey = tuple[tuple[str, ...], tuple[str, ...]]  # (sorted userIds, sorted anonymousIds)
Traits = dict[str, tuple[str, Any]]  # normalised key -> (key as sent, value)
# group -> (joined at: the earliest joining call or None, seen at: the latest call, a
# member now: the latest (event time, tiebreak) call joins)
Memberships = dict[str, tuple[datetime | None, datetime, bool]]
# (messageId, normalised key) -> (key as sent, value): what each event set (trait history)
History = dict[tuple[str, str], tuple[str, Any]]
# (type, name or "") -> (count, first event time, last event time)
Summary = dict[tuple[str, str], tuple[int, datetime, datetime]]


@dataclass
class CustomerState:
    traits: Traits = field(default_factory=dict)
    memberships: Memberships = field(default_factory=dict)
    history: History = field(default_factory=dict)
    summary: Summary = field(default_factory=dict)
    feed: list[str] = field(default_factory=list)  # message ids by (event time, tiebreak)
    email: str | None = None
    name: str | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_count: int = 0


@dataclass
class GroupState:
    name: str | None
    traits: Traits
    first_seen: datetime
    last_seen: datetime


@dataclass
class TeamState:
    customers: dict[CustomerKey, CustomerState]
    groups: dict[str, GroupState]
    orphans: set[str]  # events with no usable id: stored, folded, on no timeline
    tombstones: dict[tuple[str, str], Tomb]


# An event's receipt: when ingest stored it. The tests give each event its own (the raw
# event's test-only "_received"; by default an hour after its event time, so an event
# sent after a delete is received after it), and store it with it, whatever order the
# fold then takes the events in: the fold's result is a function of the set of events
# with their times *and* receipts.
RECEIPT_LAG = timedelta(hours=1)


def received_of(event: PreparedEvent) -> datetime:
    """When the test's ingest received this event."""
    received = event.raw.get("_received")
    return datetime.fromisoformat(received) if isinstance(received, str) else event.event_time + RECEIPT_LAG


Tomb = tuple[datetime, datetime]  # (dated at or before, received by): what a tombstone erases


def placed_at(event: PreparedEvent) -> datetime:
    """A delete's time: its own, unless absent or absurd next to its receipt (then that)."""
    received = received_of(event)
    if -DELETE_TIME_FUTURE <= received - event.event_time <= DELETE_TIME_PAST:
        return event.event_time
    return received


def covers(tomb: Tomb | None, event: PreparedEvent) -> bool:
    return tomb is not None and (event.event_time <= tomb[0] or received_of(event) <= tomb[1])


def join(a: Tomb | None, b: Tomb) -> Tomb:
    return b if a is None else (max(a[0], b[0]), max(a[1], b[1]))


def norm_key(key: str) -> str:
    """firstName, first_name, First Name -> firstname: the one rule, `normalise_trait_key`."""
    return normalise_trait_key(key)


def _stamp(event: PreparedEvent) -> tuple[datetime, int]:
    return (event.event_time, event.tiebreak)


def _objects(event: PreparedEvent) -> list[tuple[int, dict[str, Any]]]:
    """Trait sources of an event with their priority (identify traits before context)."""
    found: list[tuple[int, dict[str, Any]]] = []
    traits = event.raw.get("traits")
    if event.type == "identify" and isinstance(traits, dict):
        found.append((1, traits))
    context = event.raw.get("context")
    if isinstance(context, dict) and isinstance(context.get("traits"), dict):
        found.append((2, context["traits"]))
    return found


def _latest_wins(candidates: Iterable[tuple[datetime, int, int, str, Any]]) -> Traits:
    """Per normalised key: latest (time, tiebreak), then lower priority number, then key."""
    best: dict[str, tuple[datetime, int, int, str, Any]] = {}
    for candidate in candidates:
        time, tiebreak, priority, key, _ = candidate
        norm = norm_key(key)
        current = best.get(norm)
        if current is None or (time, tiebreak, -priority, _neg(key)) > (
            current[0],
            current[1],
            -current[2],
            _neg(current[3]),
        ):
            best[norm] = candidate
    return {norm: (c[3], c[4]) for norm, c in best.items()}


def event_traits(event: PreparedEvent) -> dict[str, tuple[str, Any]]:
    """What one event sets, per normalised key: identify traits before context.traits,
    then the smaller key (byte order)."""
    found: dict[str, tuple[int, bytes, str, Any]] = {}
    for priority, obj in _objects(event):
        for key, value in obj.items():
            norm = norm_key(key)
            candidate = (priority, key.encode(), key, value)
            if norm not in found or candidate[:2] < found[norm][:2]:
                found[norm] = candidate
    return {norm: (c[2], c[3]) for norm, c in found.items()}


def company_call(event: PreparedEvent) -> tuple[str, bool] | None:
    """The company an identify names in `traits.company` and whether it joins it: an
    object's `id` (string or number; `remove: true` leaves), or a string (its name)."""
    traits = event.raw.get("traits")
    if event.type != "identify" or not isinstance(traits, dict):
        return None
    company = traits.get("company")
    if isinstance(company, str):
        return (company, True) if company else None
    if isinstance(company, dict):
        ident = company.get("id")
        if isinstance(ident, bool) or not isinstance(ident, str | int | float) or ident == "":
            return None
        return (ident if isinstance(ident, str) else json.dumps(ident), company.get("remove") is not True)
    return None


def memberships_of(events: list[PreparedEvent]) -> Memberships:
    """Per group: joined at the earliest joining call, seen at the latest call, and a
    member when the latest (event time, tiebreak) call joins."""
    calls: dict[str, list[tuple[datetime, int, bool]]] = defaultdict(list)
    for event in events:
        if event.type == "group" and event.group_id is not None:
            calls[event.group_id].append((event.event_time, event.tiebreak, True))
        elif (found := company_call(event)) is not None:
            calls[found[0]].append((event.event_time, event.tiebreak, found[1]))
    return {
        group: (
            min((t for t, _, joins in made if joins), default=None),
            max(t for t, _, _ in made),
            max(made)[2],
        )
        for group, made in calls.items()
    }


def summary_of(events: list[PreparedEvent]) -> Summary:
    """Per track event name and per page or screen name: count, first and last time."""
    found: Summary = {}
    for event in events:
        if event.type in ("track", "page", "screen"):
            key = (event.type, event.event_name or "")
            count, first, last = found.get(key, (0, event.event_time, event.event_time))
            found[key] = (count + 1, min(first, event.event_time), max(last, event.event_time))
    return found


def _neg(key: str) -> tuple[int, ...]:
    """An order key that sorts strings descending (so the smallest key wins a tie)."""
    return tuple(-b for b in key.encode()) + (1,)


def tombstones(events: list[PreparedEvent]) -> dict[tuple[str, str], Tomb]:
    """The least fixed point of the delete rules (docs/fold.md, "Delete")."""
    tomb: dict[tuple[str, str], Tomb] = {}
    for event in events:
        user = usable_id(event.user_id)
        if event.type == "delete" and user:
            key = ("user", user)
            tomb[key] = join(tomb.get(key), (placed_at(event), received_of(event)))
    changed = True
    while changed:
        changed = False
        for event in events:
            user = usable_id(event.user_id)
            if event.type == "delete" or user is None:
                continue
            previous = usable_id(event.previous_id) if event.type == "alias" else None
            previous = previous if previous != user else None  # a self-alias links nothing
            covering = [
                t
                for k in [("user", user)] + ([("user", previous)] if previous else [])
                if (t := tomb.get(k)) is not None and covers(t, event)
            ]
            if not covering:
                continue
            reach = covering[0]
            for t in covering[1:]:
                reach = join(reach, t)
            ids = [("user", user)]
            if (anon := usable_id(event.anonymous_id)) is not None:
                ids.append(("anonymous", anon))
            if previous:
                ids += [("user", previous), ("anonymous", previous)]
            for key in ids:
                joined = join(tomb.get(key), reach)
                if joined != tomb.get(key):
                    tomb[key] = joined
                    changed = True
    return tomb


def expected_state(events: list[PreparedEvent]) -> TeamState:
    """What the fold must produce from this set of events (duplicates count once)."""
    unique: dict[tuple[str, str], PreparedEvent] = {}
    for event in events:
        unique.setdefault((event.message_id, event.type), event)
    every = list(unique.values())
    tomb = tombstones(every)

    def erased(event: PreparedEvent) -> bool:
        if event.type == "delete":
            return True
        user = usable_id(event.user_id)
        if user is not None:
            previous = usable_id(event.previous_id) if event.type == "alias" else None
            return any(
                covers(tomb.get(("user", i)), event) for i in [user] + ([previous] if previous else [])
            )
        anon = usable_id(event.anonymous_id)
        return anon is not None and covers(tomb.get(("anonymous", anon)), event)

    kept = [e for e in every if not erased(e)]

    # Known customers: userIds, joined by alias only.
    users = {u for e in kept if (u := usable_id(e.user_id))}
    parent = {u: u for u in users}

    def find(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    claims: dict[tuple[str, str], tuple[datetime, int]] = {}
    for event in kept:
        user = usable_id(event.user_id)
        if user is None:
            continue
        linked = [a] if (a := usable_id(event.anonymous_id)) else []
        if event.type == "alias" and (previous := usable_id(event.previous_id)) and previous != user:
            linked.append(previous)
            if previous in users:
                parent[find(previous)] = find(user)
        for anon in linked:
            key = (anon, user)
            claims[key] = min(claims.get(key, _stamp(event)), _stamp(event))

    # An anonymousId belongs to the userId of its earliest claim, else to itself.
    owner: dict[str, str] = {}
    for (anon, user), _ in sorted(claims.items(), key=lambda kv: (kv[1], kv[0][1])):
        owner.setdefault(anon, user)
    anons = {a for e in kept if (a := usable_id(e.anonymous_id))}

    def person(event: PreparedEvent) -> tuple[str, str] | None:
        if (user := usable_id(event.user_id)) is not None:
            return ("known", find(user))
        if (anon := usable_id(event.anonymous_id)) is not None:
            return ("known", find(owner[anon])) if anon in owner else ("anonymous", anon)
        return None

    members: dict[tuple[str, str], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for user in users:
        members[("known", find(user))][0].add(user)
    for anon in anons:
        who = ("known", find(owner[anon])) if anon in owner else ("anonymous", anon)
        members[who][1].add(anon)

    by_person: dict[tuple[str, str], list[PreparedEvent]] = defaultdict(list)
    orphans: set[str] = set()
    for event in kept:
        if (owner_key := person(event)) is None:
            orphans.add(event.message_id)
        else:
            by_person[owner_key].append(event)

    customers: dict[CustomerKey, CustomerState] = {}
    for who, (user_ids, anon_ids) in members.items():
        own = sorted(by_person[who], key=_stamp)
        state = CustomerState(
            feed=[e.message_id for e in own],
            first_seen=own[0].event_time if own else None,
            last_seen=own[-1].event_time if own else None,
            event_count=len(own),
        )
        state.traits = _latest_wins(
            (e.event_time, e.tiebreak, priority, key, value)
            for e in own
            for priority, obj in _objects(e)
            for key, value in obj.items()
        )
        state.memberships = memberships_of(own)
        state.history = {(e.message_id, norm): set_ for e in own for norm, set_ in event_traits(e).items()}
        state.summary = summary_of(own)
        state.email, state.name = profile_fields(state.traits)
        customers[(tuple(sorted(user_ids)), tuple(sorted(anon_ids)))] = state

    groups: dict[str, GroupState] = {}
    group_events: dict[str, list[PreparedEvent]] = defaultdict(list)
    for event in kept:
        if event.type == "group" and event.group_id is not None:
            group_events[event.group_id].append(event)
    for group_id, calls in group_events.items():
        traits = _latest_wins(
            (e.event_time, e.tiebreak, 1, key, value)
            for e in calls
            if isinstance(e.raw.get("traits"), dict)
            for key, value in e.raw["traits"].items()
        )
        name = traits.get("name", (None, None))[1]
        groups[group_id] = GroupState(
            name=name if isinstance(name, str) else None,
            traits=traits,
            first_seen=min(e.event_time for e in calls),
            last_seen=max(e.event_time for e in calls),
        )
    return TeamState(customers=customers, groups=groups, orphans=orphans, tombstones=tomb)


def profile_fields(traits: Traits) -> tuple[str | None, str | None]:
    """Email and display name from the traits, as the profile shows them."""

    def text_of(norm: str) -> str | None:
        value = traits.get(norm, (None, None))[1]
        return value if isinstance(value, str) else None

    name = text_of("name")
    if name is None:
        parts = [p for p in (text_of("firstname"), text_of("lastname")) if p is not None]
        name = " ".join(parts).strip() or None
    return text_of("email"), name


def snapshot(connection: Connection, team_id: int) -> TeamState:
    """The team's folded state, normalised; asserts the fold's internal invariants too."""
    params = {"team": team_id}

    def rows(statement: str) -> list[Any]:
        return list(connection.execute(text(statement), params).all())

    unfolded = rows("SELECT message_id FROM events WHERE team_id = :team AND folded_at IS NULL")
    assert unfolded == [], f"events left unfolded: {unfolded}"
    live = {
        r.id: r
        for r in rows(
            "SELECT id, email, name, first_seen, last_seen, event_count FROM customers "
            "WHERE team_id = :team AND merged_into IS NULL"
        )
    }
    dangling = rows(
        "SELECT c.id FROM customers c "
        "LEFT JOIN customers s ON s.team_id = c.team_id AND s.id = c.merged_into "
        "WHERE c.team_id = :team AND c.merged_into IS NOT NULL "
        "AND (s.id IS NULL OR s.merged_into IS NOT NULL)"
    )
    assert dangling == [], f"merged-away customers that do not point at a live one: {dangling}"
    ids: dict[int, tuple[set[str], set[str]]] = {c: (set(), set()) for c in live}
    for row in rows("SELECT kind, value, customer_id FROM identities WHERE team_id = :team"):
        assert row.customer_id in live, f"identity {row.kind}:{row.value} points at a dead customer"
        ids[row.customer_id][0 if row.kind == "user" else 1].add(row.value)
    empty = [c for c, (u, a) in ids.items() if not u and not a]
    assert empty == [], f"live customers without identities: {empty}"
    key_of = {c: (tuple(sorted(u)), tuple(sorted(a))) for c, (u, a) in ids.items()}

    customers = {
        key_of[c]: CustomerState(
            email=r.email,
            name=r.name,
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            event_count=r.event_count,
        )
        for c, r in live.items()
    }
    orphans: set[str] = set()
    for row in rows(
        "SELECT message_id, customer_id FROM events WHERE team_id = :team ORDER BY event_time, tiebreak, id"
    ):
        if row.customer_id is None:
            orphans.add(row.message_id)
        else:
            assert row.customer_id in live, f"event {row.message_id} points at a dead customer"
            customers[key_of[row.customer_id]].feed.append(row.message_id)
    for row in rows("SELECT customer_id, key_norm, key, value FROM customer_traits WHERE team_id = :team"):
        assert row.customer_id in live, "traits of a dead customer"
        customers[key_of[row.customer_id]].traits[row.key_norm] = (row.key, row.value)
    for row in rows(
        "SELECT customer_id, group_id, joined_at, last_seen, active FROM memberships WHERE team_id = :team"
    ):
        assert row.customer_id in live, "membership of a dead customer"
        customers[key_of[row.customer_id]].memberships[row.group_id] = (
            row.joined_at,
            row.last_seen,
            row.active,
        )
    for row in rows(
        "SELECT h.customer_id, e.message_id, e.customer_id AS owner, h.key_norm, h.key, h.value, "
        "h.event_time = e.event_time AND h.tiebreak = e.tiebreak AS same_stamp "
        "FROM trait_history h LEFT JOIN events e ON e.team_id = h.team_id AND e.id = h.event_id "
        "WHERE h.team_id = :team"
    ):
        assert row.message_id is not None, "trait history of an erased event"
        assert row.owner == row.customer_id and row.same_stamp, "trait history not on its event's customer"
        customers[key_of[row.customer_id]].history[(row.message_id, row.key_norm)] = (row.key, row.value)
    for row in rows(
        "SELECT customer_id, type, name, event_count, first_at, last_at FROM event_summaries "
        "WHERE team_id = :team"
    ):
        assert row.customer_id in live, "event summary of a dead customer"
        customers[key_of[row.customer_id]].summary[(row.type, row.name)] = (
            row.event_count,
            row.first_at,
            row.last_at,
        )

    groups = {
        r.group_id: GroupState(name=r.name, traits={}, first_seen=r.first_seen, last_seen=r.last_seen)
        for r in rows("SELECT group_id, name, first_seen, last_seen FROM groups WHERE team_id = :team")
    }
    for row in rows("SELECT group_id, key_norm, key, value FROM group_traits WHERE team_id = :team"):
        groups[row.group_id].traits[row.key_norm] = (row.key, row.value)
    tombs = {
        (r.kind, r.value): (r.deleted_at, r.received_at)
        for r in rows("SELECT kind, value, deleted_at, received_at FROM tombstones WHERE team_id = :team")
    }
    return TeamState(customers=customers, groups=groups, orphans=orphans, tombstones=tombs)
