"""Identity resolution: which customer each event of a batch belongs to (docs/fold.md).

The rules, which make the result a function of the set of events, not of their order:
- a userId is one customer; userIds are joined only by `alias`;
- an anonymousId belongs to the userId of its earliest claim (the earliest event, by
  event time then tiebreak, that carried both ids, or an alias from it); with no claim
  it is an anonymous customer of its own; a later-arriving earlier claim moves it.

Resolving decides in memory which customers merge and which visitors move, then writes
the batch's merges and moves with a fixed number of statements, whatever their number,
and points each event at its customer. What the customers then show (traits, groups,
counts) is derived state: `store/fold/derived.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from store.fold.batch import Batch
from store.fold.derived import move_derived
from store.fold.identity import SQL_IS_JUNK, usable_id
from store.fold.pending import PendingEvent

# The identities of a batch and their customers: one primary-key probe per id, whatever
# the statistics say. As `kind = ... AND value = ANY(...) OR ...` over a join, a team
# that grew since the last ANALYZE (estimated at a row or two) was read whole: the
# fold turns bitmap scans off, so the OR could only filter a scan of the team's
# identities, and the join to customers scanned the team's customers once per identity
# (EXPLAIN on 600,000 identities: 229 s for one lookup). A LATERAL subquery with LIMIT 1
# is never flattened into a join, so each id is one probe of each primary key
# (the same shape as the batch's events in store/fold/derived.py, `BATCH_EVENTS`).
IDENTITY_LOOKUP = """
    SELECT x.kind, x.value, i.customer_id, c.is_known
    FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[])) AS x(kind, value)
    CROSS JOIN LATERAL (
        SELECT customer_id FROM identities
        WHERE team_id = :team AND kind = x.kind AND value = x.value LIMIT 1) AS i
    CROSS JOIN LATERAL (
        SELECT is_known FROM customers WHERE team_id = :team AND id = i.customer_id LIMIT 1) AS c
"""


class Resolution:
    """One batch's identity resolution; `recompute` names customers to derive again."""

    def __init__(self, batch: Batch, now: datetime):
        self.batch = batch
        self.now = now
        self.user_customer: dict[str, int] = {}
        self.anon_customer: dict[str, int] = {}
        self.known: dict[int, bool] = {}
        self.recompute: set[int] = set()
        # Merges and moves decided while resolving, written at once by `flush_identity`.
        self.parent: dict[int, int] = {}  # a merged customer -> the one it joined
        self.moves: dict[str, tuple[int, int]] = {}  # anonymousId -> (from, to)

    def resolve(
        self, events: list[PendingEvent], loose_anonymous: set[str]
    ) -> tuple[list[tuple[int, int | None]], set[str]]:
        """Resolve and assign the batch's events: ((event id, customer id) pairs, the
        anonymousIds no event carries any more, to forget once derived state is written).

        `loose_anonymous`: anonymousIds a delete touched, kept while a folded event still
        carries one.
        """
        self.record_links(events)
        users = {u for e in events if (u := usable_id(e.user_id))}
        anons = {a for e in events if (a := usable_id(e.anonymous_id))}
        previous = {p for e in events if e.type == "alias" and (p := usable_id(e.previous_id))}
        loose = self.still_carried(loose_anonymous - anons)
        gone = loose_anonymous - anons - loose
        self.load_identities(users | previous, anons | previous | loose)
        visitors = anons | loose | {p for p in previous if p in self.anon_customer}
        owners = self.owners(visitors)
        self.resolve_users(users, owners)
        self.apply_aliases(users)
        self.resolve_anonymous(visitors, owners)
        self.flush_identity()
        self.recompute = {self.find(c) for c in self.recompute}
        return self.assign(events), gone

    def still_carried(self, anons: set[str]) -> set[str]:
        """Those anonymousIds that a folded event still carries as its anonymousId.

        Such an event is on the customer of its userId (found through the claim it made)
        or, with no userId, on the anonymousId's own customer. An alias's previousId
        alone does not make an identity.
        """
        if not anons:
            return set()
        rows = self.batch.sql(
            """
            SELECT x.a FROM unnest(CAST(:a AS text[])) AS x(a)
            WHERE EXISTS (
                SELECT 1 FROM anonymous_claims c
                JOIN identities i ON i.team_id = c.team_id AND i.kind = 'user' AND i.value = c.user_id
                JOIN events e ON e.team_id = c.team_id AND e.customer_id = i.customer_id
                             AND e.user_id = c.user_id AND e.anonymous_id = c.anonymous_id
                WHERE c.team_id = :team AND c.anonymous_id = x.a)
            OR EXISTS (
                SELECT 1 FROM identities i
                JOIN events e ON e.team_id = i.team_id AND e.customer_id = i.customer_id
                             AND e.anonymous_id = i.value
                WHERE i.team_id = :team AND i.kind = 'anonymous' AND i.value = x.a)
            """,
            a=sorted(anons),
        )
        return {str(a) for (a,) in rows}

    def forget_anonymous(self, anons: list[str]) -> None:
        """Drop anonymousIds no event carries any more, and visitors left with no id."""
        self.batch.sql(
            """
            WITH gone AS (
                DELETE FROM identities
                WHERE team_id = :team AND kind = 'anonymous' AND value = ANY(:a)
                RETURNING customer_id)
            DELETE FROM customers c USING gone
            WHERE c.team_id = :team AND NOT c.is_known
              AND (c.id = gone.customer_id OR c.merged_into = gone.customer_id)
            """,
            a=anons,
        )

    def record_links(self, events: list[PendingEvent]) -> None:
        """Store anonymous claims and aliases; the earliest (time, tiebreak) is kept."""
        claims: dict[tuple[str, str], tuple[datetime, int]] = {}
        aliases: dict[tuple[str, str], datetime] = {}
        for event in events:
            user = usable_id(event.user_id)
            if user is None:
                continue
            anon = usable_id(event.anonymous_id)
            linked = [anon] if anon else []
            if event.type == "alias":
                previous = usable_id(event.previous_id)
                if previous and previous != user:
                    linked.append(previous)
                    key = (previous, user)
                    aliases[key] = min(aliases.get(key, event.event_time), event.event_time)
            for anon_id in linked:
                key = (anon_id, user)
                stamp = (event.event_time, event.tiebreak)
                claims[key] = min(claims.get(key, stamp), stamp)
        if claims:
            self.batch.sql(
                """
                INSERT INTO anonymous_claims AS c (team_id, anonymous_id, user_id, first_at, first_tiebreak)
                SELECT :team, a, u, t, b
                FROM unnest(CAST(:anons AS text[]), CAST(:users AS text[]),
                            CAST(:times AS timestamptz[]), CAST(:ties AS bigint[])) AS x(a, u, t, b)
                ON CONFLICT (team_id, anonymous_id, user_id) DO UPDATE
                SET first_at = excluded.first_at, first_tiebreak = excluded.first_tiebreak
                WHERE (excluded.first_at, excluded.first_tiebreak) < (c.first_at, c.first_tiebreak)
                """,
                anons=[a for a, _ in claims],
                users=[u for _, u in claims],
                times=[t for t, _ in claims.values()],
                ties=[b for _, b in claims.values()],
            )
        if aliases:
            self.batch.sql(
                """
                INSERT INTO aliases AS a (team_id, previous_id, user_id, first_at)
                SELECT :team, p, u, t
                FROM unnest(CAST(:prev AS text[]), CAST(:users AS text[]),
                            CAST(:times AS timestamptz[])) AS x(p, u, t)
                ON CONFLICT (team_id, previous_id, user_id) DO UPDATE
                SET first_at = LEAST(a.first_at, excluded.first_at)
                """,
                prev=[p for p, _ in aliases],
                users=[u for _, u in aliases],
                times=list(aliases.values()),
            )

    def load_identities(self, users: Iterable[str], anons: Iterable[str]) -> None:
        user_ids, anon_ids = sorted(users), sorted(anons)
        rows = self.batch.sql(
            IDENTITY_LOOKUP,
            kinds=["user"] * len(user_ids) + ["anonymous"] * len(anon_ids),
            values=user_ids + anon_ids,
        )
        for kind, value, customer_id, is_known in rows:
            target = self.user_customer if kind == "user" else self.anon_customer
            customer = self.find(int(customer_id))
            target[str(value)] = customer
            self.known[customer] = self.known.get(customer, False) or bool(is_known)

    def create_customers(self, count: int, known: bool) -> list[int]:
        rows = self.batch.sql(
            """
            INSERT INTO customers (team_id, is_known, event_count, created_at)
            SELECT :team, :known, 0, :now FROM generate_series(1, :count)
            RETURNING id
            """,
            known=known,
            now=self.now,
            count=count,
        )
        ids = [int(row[0]) for row in rows]
        for customer_id in ids:
            self.known[customer_id] = known
        return ids

    def add_identities(self, kind: str, values: list[str], customers: list[int]) -> None:
        self.batch.sql(
            """
            INSERT INTO identities (team_id, kind, value, customer_id)
            SELECT :team, :kind, v, c
            FROM unnest(CAST(:values AS text[]), CAST(:customers AS bigint[])) AS x(v, c)
            """,
            kind=kind,
            values=values,
            customers=customers,
        )

    def owners(self, anons: set[str]) -> dict[str, str]:
        """The owner of each anonymousId: the userId of its earliest claim."""
        if not anons:
            return {}
        rows = self.batch.sql(
            """
            SELECT DISTINCT ON (anonymous_id) anonymous_id, user_id
            FROM anonymous_claims
            WHERE team_id = :team AND anonymous_id = ANY(:anons)
            ORDER BY anonymous_id, first_at, first_tiebreak, user_id
            """,
            anons=sorted(anons),
        )
        return {str(a): str(u) for a, u in rows}

    def resolve_users(self, users: set[str], owners: dict[str, str]) -> None:
        """Every userId gets a customer; a new one starts as its own.

        A new userId that owns a visitor's anonymous customer takes that customer over
        (the common first identify): same result as a new customer merged with it, without
        the merge, and the visitor's customer id stays valid.
        """
        new = sorted(u for u in users if u not in self.user_customer)
        if not new:
            return
        adopted: dict[str, int] = {}
        for anon, owner in sorted(owners.items()):
            current = self.anon_customer.get(anon)
            current = self.find(current) if current is not None else None
            if (
                owner in new
                and owner not in adopted
                and current is not None
                and not self.known.get(current, False)
                and current not in adopted.values()
            ):
                adopted[owner] = current
        if adopted:
            self.batch.sql(
                "UPDATE customers SET is_known = true WHERE team_id = :team AND id = ANY(:ids)",
                ids=sorted(adopted.values()),
            )
            for customer in adopted.values():
                self.known[customer] = True
        fresh = [u for u in new if u not in adopted]
        customers = self.create_customers(len(fresh), known=True) if fresh else []
        self.user_customer.update(zip(fresh, customers, strict=True))
        self.user_customer.update(adopted)
        self.add_identities("user", new, [self.user_customer[u] for u in new])

    def apply_aliases(self, users: set[str]) -> None:
        """Merge customers whose userIds an alias links, whichever arrived first."""
        rows = self.batch.sql(
            """
            SELECT previous_id, user_id FROM aliases
            WHERE team_id = :team AND (previous_id = ANY(:users) OR user_id = ANY(:users))
            """,
            users=sorted(users),
        )
        links = [(str(p), str(u)) for p, u in rows]
        missing = {x for link in links for x in link if x not in self.user_customer}
        if missing:
            self.load_identities(missing, [])
        for previous, user in links:
            a, b = self.user_customer.get(previous), self.user_customer.get(user)
            if a is not None and b is not None:
                self.merge(a, b)

    def resolve_anonymous(self, anons: set[str], owners: dict[str, str]) -> None:
        """Each anonymousId joins the customer of its owner (earliest claim), if any."""
        if not anons:
            return
        owner_users = {u for u in owners.values() if u not in self.user_customer}
        if owner_users:
            self.load_identities(owner_users, [])
        new_anon: list[str] = []
        new_anon_targets: list[int] = []
        orphans: list[str] = []
        for anon in sorted(anons):
            owner = owners.get(anon)
            target = self.user_customer.get(owner) if owner else None
            target = self.find(target) if target is not None else None
            current = self.anon_customer.get(anon)
            current = self.find(current) if current is not None else None
            if current is None:
                if target is None:
                    orphans.append(anon)
                else:
                    new_anon.append(anon)
                    new_anon_targets.append(target)
                    self.anon_customer[anon] = target
            elif target is not None and current != target:
                if not self.known.get(current, False):
                    self.merge(current, target)
                else:
                    self.move_anonymous(anon, current, target)
        if orphans:
            customers = self.create_customers(len(orphans), known=False)
            new_anon += orphans
            new_anon_targets += customers
            self.anon_customer.update(zip(orphans, customers, strict=True))
        if new_anon:
            self.add_identities("anonymous", new_anon, new_anon_targets)

    def assign(self, events: list[PendingEvent]) -> list[tuple[int, int | None]]:
        """Point each event at its customer and mark it folded."""
        assigned: list[tuple[int, int | None]] = []
        for event in events:
            user = usable_id(event.user_id)
            anon = usable_id(event.anonymous_id)
            customer = self.user_customer.get(user) if user else None
            if customer is None and anon:
                customer = self.anon_customer.get(anon)
            assigned.append((event.id, self.find(customer) if customer is not None else None))
        # Each event found by one primary-key probe and updated by its row address
        # (ctid): as a join on (team_id, id), a team that grew since the last ANALYZE
        # was merge-joined over all its events (measured: 177 ms for a batch of 1,000
        # on a team of 300,000, against 27 ms; it grows with the team). A row address
        # is a partition's: the probe (pruned to one month by the event time, the
        # partition key) says which, and each partition's rows are updated by their
        # addresses in it (an UPDATE of the parent scanned the other months for each).
        found = self.batch.sql(
            """
            SELECT p.rel::regclass::text, p.tid::text, x.c
            FROM unnest(CAST(:ids AS bigint[]), CAST(:times AS timestamptz[]),
                        CAST(:customers AS bigint[])) AS x(id, t, c)
            CROSS JOIN LATERAL (
                SELECT tableoid AS rel, ctid AS tid FROM events
                WHERE team_id = :team AND id = x.id AND event_time = x.t LIMIT 1) AS p
            """,
            ids=[eid for eid, _ in assigned],
            times=[event.event_time for event in events],
            customers=[cid for _, cid in assigned],
        )
        by_partition: dict[str, tuple[list[str], list[int | None]]] = {}
        for partition, tid, customer in found:
            tids, customers = by_partition.setdefault(str(partition), ([], []))
            tids.append(str(tid))
            customers.append(customer)
        for partition, (tids, customers) in sorted(by_partition.items()):
            self.batch.sql(
                f"""
                UPDATE {partition} e SET customer_id = x.c, folded_at = :now
                FROM unnest(CAST(:tids AS tid[]), CAST(:customers AS bigint[])) AS x(tid, c)
                WHERE e.ctid = x.tid
                """,
                now=self.now,
                tids=tids,
                customers=customers,
            )
        return assigned

    # -- merging and moving ----------------------------------------------------------
    #
    # Resolving only decides (in memory) which customers merge and which visitors move;
    # `flush_identity` then writes all of the batch's merges and moves with a fixed
    # number of statements, whatever their number.

    def find(self, customer: int) -> int:
        """The customer that `customer` has been merged into in this batch (or itself)."""
        while (parent := self.parent.get(customer)) is not None:
            customer = parent
        return customer

    def merge(self, a: int, b: int) -> int:
        """Join two customers; the known one, else the older id, survives."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        survivor, loser = (a, b) if (not self.known.get(a), a) <= (not self.known.get(b), b) else (b, a)
        self.parent[loser] = survivor
        self.known[survivor] = self.known.get(survivor, False) or self.known.get(loser, False)
        if loser in self.recompute:
            self.recompute.add(survivor)
        return survivor

    def move_anonymous(self, anon: str, current: int, target: int) -> None:
        """An earlier claim arrived late: the visitor's own events change customer."""
        self.moves[anon] = (current, target)
        self.anon_customer[anon] = target
        self.recompute.update((current, target))

    def flush_identity(self) -> None:
        """Write the batch's merges, then its moves."""
        losers = sorted(self.parent)
        if losers:
            self.write_merges(losers, [self.find(c) for c in losers])
        moves = [(a, self.find(f), self.find(t)) for a, (f, t) in sorted(self.moves.items())]
        moves = [(a, f, t) for a, f, t in moves if f != t]
        if moves:
            params = {
                "anons": [a for a, _, _ in moves],
                "froms": [f for _, f, _ in moves],
                "tos": [t for _, _, t in moves],
            }
            self.batch.sql(
                """
                UPDATE identities i SET customer_id = x.t
                FROM unnest(CAST(:anons AS text[]), CAST(:tos AS bigint[])) AS x(a, t)
                WHERE i.team_id = :team AND i.kind = 'anonymous' AND i.value = x.a
                """,
                **params,
            )
            self.batch.sql(
                f"""
                UPDATE events e SET customer_id = x.t
                FROM unnest(CAST(:anons AS text[]), CAST(:froms AS bigint[]),
                            CAST(:tos AS bigint[])) AS x(a, f, t)
                WHERE e.team_id = :team AND e.customer_id = x.f AND e.anonymous_id = x.a
                  AND (e.user_id IS NULL OR {SQL_IS_JUNK.format(column="e.user_id")})
                """,
                **params,
            )

    def write_merges(self, losers: list[int], survivors: list[int]) -> None:
        """Move each loser's identities, events, traits, memberships and counts to its survivor."""
        params = {"losers": losers, "survivors": survivors}
        pairs = "unnest(CAST(:losers AS bigint[]), CAST(:survivors AS bigint[])) AS m(l, s)"
        for table in ("identities", "events"):
            self.batch.sql(
                f"""
                UPDATE {table} t SET customer_id = m.s FROM {pairs}
                WHERE t.team_id = :team AND t.customer_id = m.l
                """,
                **params,
            )
        move_derived(self.batch, params, pairs)
        # The losers, and every customer that had been merged into one of them, now
        # resolve to the survivor in one step.
        self.batch.sql(
            f"""
            UPDATE customers c SET merged_into = m.s, event_count = 0, email = NULL, name = NULL
            FROM {pairs}
            WHERE c.team_id = :team AND c.id = m.l
            """,
            **params,
        )
        self.batch.sql(
            f"""
            UPDATE customers c SET merged_into = m.s FROM {pairs}
            WHERE c.team_id = :team AND c.merged_into = m.l
            """,
            **params,
        )
