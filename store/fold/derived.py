"""Derived state: what a folded customer or group shows, from the events assigned to it.

Once identity resolution (`store/fold/resolve.py`) has pointed every event of a batch at
its customer, these set-based statements bring up to date what the read side shows:
traits and group traits (per normalised key, the latest (event time, tiebreak) wins),
the trait history (what each event set, for the feed's `changes`), groups, memberships
(from group calls and identifies' `traits.company`: joined at the earliest joining call,
seen at the latest, ended by a later `remove: true`), per-name event summaries and each
customer's counts, first and last seen, email and name. A customer whose history
changed under it (a late earlier claim, a delete) is derived again from its events.
"""

from __future__ import annotations

from datetime import datetime

from store.fold.batch import Batch
from store.fold.pending import PENDING_COLUMNS, PendingEvent
from store.statements import normalised_key


def latest_wins(owner: str, alias: str) -> str:
    """The upsert of a trait row (`alias` the table, `owner` its customer or group column):
    a later (event time, tiebreak) replaces the key's value, an earlier one never does."""
    return f"""ON CONFLICT (team_id, {owner}, key_norm) DO UPDATE
    SET key = excluded.key, value = excluded.value,
        event_time = excluded.event_time, tiebreak = excluded.tiebreak
    WHERE (excluded.event_time, excluded.tiebreak) > ({alias}.event_time, {alias}.tiebreak)"""


def trait_candidates() -> str:
    """The trait candidates of an event `e` (key, value, priority, norm), as a LATERAL join:
    identify traits first (priority 1), then context.traits (2)."""
    return f"""
    CROSS JOIN LATERAL (
        SELECT kv.key, kv.value, src.priority,
               {normalised_key("kv.key")} AS norm
        FROM (VALUES (1, CASE WHEN e.type = 'identify' THEN e.raw -> 'traits' END),
                     (2, e.raw -> 'context' -> 'traits')) AS src(priority, obj)
        CROSS JOIN LATERAL jsonb_each(
            CASE WHEN jsonb_typeof(src.obj) = 'object' THEN src.obj ELSE '{{}}'::jsonb END) kv
    ) t"""


def upsert_traits(customer: str, source: str) -> str:
    """Customer traits from the events of `source` (`e`), each on the customer `customer`.

    Trait candidates of events: identify traits first, then context.traits; per customer
    and normalised key the latest (event time, tiebreak) wins, then the smaller key.
    """
    return f"""
    INSERT INTO customer_traits AS ct (team_id, customer_id, key_norm, key, value, event_time, tiebreak)
    SELECT DISTINCT ON ({customer}, t.norm)
           e.team_id, {customer}, t.norm, t.key, t.value, e.event_time, e.tiebreak
    FROM {source}
    {trait_candidates()}
    ORDER BY {customer}, t.norm, e.event_time DESC, e.tiebreak DESC, t.priority, t.key COLLATE "C"
    {latest_wins("customer_id", "ct")}
    """


def upsert_history(customer: str, source: str) -> str:
    """Trait history from the events of `source` (`e`): per event and normalised key, what
    it set (the same tie rule inside one event as `upsert_traits`). A re-folded event's
    rows follow it to its customer."""
    return f"""
    INSERT INTO trait_history AS th
        (team_id, event_id, key_norm, customer_id, key, value, event_time, tiebreak)
    SELECT DISTINCT ON (e.id, t.norm)
           e.team_id, e.id, t.norm, {customer}, t.key, t.value, e.event_time, e.tiebreak
    FROM {source}
    {trait_candidates()}
    ORDER BY e.id, t.norm, t.priority, t.key COLLATE "C"
    ON CONFLICT (team_id, event_id, key_norm) DO UPDATE SET customer_id = excluded.customer_id
    """


def upsert_summaries(customer: str, source: str) -> str:
    """Per-name counts, first and last event time of the track, page and screen events of
    `source` (`e`), added to what the customers already have."""
    return f"""
    INSERT INTO event_summaries AS s (team_id, customer_id, type, name, event_count, first_at, last_at)
    SELECT e.team_id, {customer}, e.type, COALESCE(e.event_name, ''), count(*),
           min(e.event_time), max(e.event_time)
    FROM {source}
    WHERE e.type IN ('track', 'page', 'screen')
    GROUP BY e.team_id, {customer}, e.type, COALESCE(e.event_name, '')
    ON CONFLICT (team_id, customer_id, type, name) DO UPDATE
    SET event_count = s.event_count + excluded.event_count,
        first_at = LEAST(s.first_at, excluded.first_at),
        last_at = GREATEST(s.last_at, excluded.last_at)
    """


# The company an identify names in `traits.company` (Intercom's and Zendesk's
# convention): an object's `id` (a string or a number), or a string (the company's
# name, used as its id); NULL when none. `COMPANY_LEAVES`: the object says `remove: true`.
_COMPANY = "(e.raw -> 'traits' -> 'company')"
COMPANY_ID = f"""CASE WHEN e.type = 'identify' THEN CASE jsonb_typeof({_COMPANY})
        WHEN 'string' THEN NULLIF({_COMPANY} #>> '{{}}', '')
        WHEN 'object' THEN CASE WHEN jsonb_typeof({_COMPANY} -> 'id') IN ('string', 'number')
                           THEN NULLIF({_COMPANY} ->> 'id', '') END
    END END"""
COMPANY_LEAVES = f"""COALESCE(jsonb_typeof({_COMPANY}) = 'object'
                              AND {_COMPANY} -> 'remove' = 'true'::jsonb, false)"""


# The batch's events by primary key, with the customer each was just assigned to:
# one primary-key probe per id. The LATERAL ... LIMIT 1 keeps it so: as a plain join,
# a table not yet analysed (a new database) made a hash join over all the team's
# events look cheaper (measured 5x slower). Not `id = ANY(:ids)` either: in a nested
# loop that rescans the array for every row. The event time (the partition key) comes
# along, so each probe reads one month's primary key, not every month's.
BATCH_EVENTS = """
    unnest(CAST(:ids AS bigint[]), CAST(:times AS timestamptz[]), CAST(:customers AS bigint[]))
        AS x(id, event_time, customer_id)
    CROSS JOIN LATERAL (
        SELECT * FROM events
        WHERE team_id = :team AND id = x.id AND event_time = x.event_time LIMIT 1) AS e
"""


def update_traits(batch: Batch, events: list[tuple[PendingEvent, int]]) -> None:
    """Traits, trait history and per-name event summaries of the batch's events, on the
    customers they were assigned: one statement that reads the batch's events once (three
    passes over them cost ~15% of the fold's throughput)."""
    if not events:
        return
    batch.sql(
        f"""
        WITH e AS MATERIALIZED (SELECT x.customer_id AS owner, e.* FROM {BATCH_EVENTS}),
        traits AS ({upsert_traits("e.owner", "e")}),
        history AS ({upsert_history("e.owner", "e")})
        {upsert_summaries("e.owner", "e")}
        """,
        ids=[e.id for e, _ in events],
        times=[e.event_time for e, _ in events],
        customers=[c for _, c in events],
    )


def update_groups(batch: Batch, calls: list[PendingEvent]) -> None:
    """Group traits (latest per key) and the group rows, from group calls."""
    calls = [e for e in calls if e.group_id is not None]
    if not calls:
        return
    seen: dict[str, tuple[datetime, datetime]] = {}
    for call in calls:
        assert call.group_id is not None
        first, last = seen.get(call.group_id, (call.event_time, call.event_time))
        seen[call.group_id] = (min(first, call.event_time), max(last, call.event_time))
    groups = sorted(seen)
    batch.sql(
        """
        INSERT INTO groups AS g (team_id, group_id, first_seen, last_seen)
        SELECT :team, x.g, x.f, x.l
        FROM unnest(CAST(:groups AS text[]), CAST(:firsts AS timestamptz[]),
                    CAST(:lasts AS timestamptz[])) AS x(g, f, l)
        ON CONFLICT (team_id, group_id) DO UPDATE
        SET first_seen = LEAST(g.first_seen, excluded.first_seen),
            last_seen = GREATEST(g.last_seen, excluded.last_seen)
        """,
        groups=groups,
        firsts=[seen[g][0] for g in groups],
        lasts=[seen[g][1] for g in groups],
    )
    batch.sql(
        f"""
        INSERT INTO group_traits AS gt (team_id, group_id, key_norm, key, value, event_time, tiebreak)
        SELECT DISTINCT ON (e.group_id, t.norm)
               e.team_id, e.group_id, t.norm, t.key, t.value, e.event_time, e.tiebreak
        FROM unnest(CAST(:ids AS bigint[]), CAST(:times AS timestamptz[])) AS x(id, event_time)
        CROSS JOIN LATERAL (
            SELECT * FROM events
            WHERE team_id = :team AND id = x.id AND event_time = x.event_time LIMIT 1) AS e
        CROSS JOIN LATERAL (
            SELECT kv.key, kv.value,
                   {normalised_key("kv.key")} AS norm
            FROM jsonb_each(CASE WHEN jsonb_typeof(e.raw -> 'traits') = 'object'
                            THEN e.raw -> 'traits' ELSE '{{}}'::jsonb END) kv
        ) t
        WHERE e.group_id IS NOT NULL
        ORDER BY e.group_id, t.norm, e.event_time DESC, e.tiebreak DESC, t.key COLLATE "C"
        {latest_wins("group_id", "gt")}
        """,
        ids=[e.id for e in calls],
        times=[e.event_time for e in calls],
    )
    batch.sql(
        """
        UPDATE groups g SET name = (
            SELECT CASE WHEN jsonb_typeof(value) = 'string' THEN value #>> '{}' END
            FROM group_traits t
            WHERE t.team_id = g.team_id AND t.group_id = g.group_id AND t.key_norm = 'name')
        WHERE g.team_id = :team AND g.group_id = ANY(:groups)
        """,
        groups=groups,
    )


def recompute_groups(batch: Batch, group_ids: list[str]) -> None:
    """Derive groups again from their folded group calls (after a delete erased some).

    Unfolded calls do not count yet: they are taken with their own batch (and may be
    erased by a tombstone then); reopened ones are added back by this batch.
    """
    params = {"g": group_ids}
    calls = """
        FROM events WHERE team_id = :team AND type = 'group' AND group_id = ANY(:g)
          AND folded_at IS NOT NULL
          AND NOT EXISTS (  -- a call the fold set aside (workers/poison.py) counts for nothing
              SELECT 1 FROM fold_failures f WHERE f.team_id = events.team_id AND f.event_id = events.id)
    """
    batch.sql("DELETE FROM group_traits WHERE team_id = :team AND group_id = ANY(:g)", **params)
    batch.sql("DELETE FROM groups WHERE team_id = :team AND group_id = ANY(:g)", **params)
    rows = batch.sql(f"SELECT {PENDING_COLUMNS} {calls}", **params)
    update_groups(batch, [PendingEvent(*row) for row in rows])


def reset_group(batch: Batch, group: str) -> list[PendingEvent]:
    """Delete a group and its traits; its folded calls (not set aside), by id, for the
    caller to derive it again from one at a time (`workers/poison.py`, when deriving it
    from all of them at once failed on one's data)."""
    batch.sql("DELETE FROM group_traits WHERE team_id = :team AND group_id = :g", g=group)
    batch.sql("DELETE FROM groups WHERE team_id = :team AND group_id = :g", g=group)
    rows = batch.sql(
        f"""SELECT {PENDING_COLUMNS} FROM events
            WHERE team_id = :team AND type = 'group' AND group_id = :g AND folded_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM fold_failures f WHERE f.team_id = events.team_id
                              AND f.event_id = events.id)
            ORDER BY id""",
        g=group,
    )
    return [PendingEvent(*row) for row in rows]


# A membership's state: the latest (event time, tiebreak) joining or leaving call wins, so
# a late older call never undoes a newer one; joined_at is the earliest joining call.
MEMBERSHIP_WINS = """ON CONFLICT (team_id, customer_id, group_id) DO UPDATE
    SET joined_at = LEAST(ms.joined_at, excluded.joined_at),
        last_seen = GREATEST(ms.last_seen, excluded.last_seen),
        active = CASE WHEN ms.state_at IS NULL
                        OR (excluded.state_at, excluded.state_tiebreak) > (ms.state_at, ms.state_tiebreak)
                      THEN excluded.active ELSE ms.active END,
        state_tiebreak = CASE WHEN ms.state_at IS NULL
                        OR (excluded.state_at, excluded.state_tiebreak) > (ms.state_at, ms.state_tiebreak)
                      THEN excluded.state_tiebreak ELSE ms.state_tiebreak END,
        state_at = CASE WHEN ms.state_at IS NULL
                        OR (excluded.state_at, excluded.state_tiebreak) > (ms.state_at, ms.state_tiebreak)
                      THEN excluded.state_at ELSE ms.state_at END"""


def membership_calls(source: str) -> str:
    """The joining and leaving calls of the events of `source` (`e`): group calls join
    their group; an identify with `traits.company` joins it, or leaves it with `remove: true`."""
    return _MEMBERSHIP_CALLS.replace("{source}", source)


_MEMBERSHIP_CALLS = f"""
    SELECT e.id, COALESCE(CASE WHEN e.type = 'group' THEN e.group_id END, {COMPANY_ID}) AS group_id,
           e.event_time, e.tiebreak, NOT (e.type = 'identify' AND {COMPANY_LEAVES}) AS joins
    FROM {{source}}
    WHERE e.type IN ('group', 'identify')
"""


def update_memberships(batch: Batch, events: list[tuple[PendingEvent, int]]) -> None:
    """Memberships from the batch's group calls and company identifies: joined at the first
    joining call, seen at the last call, member or not as the latest call says."""
    calls: list[tuple[int, str, datetime, int, bool]] = [
        (customer, event.group_id, event.event_time, event.tiebreak, True)
        for event, customer in events
        if event.type == "group" and event.group_id is not None
    ]
    identifies = [(e, c) for e, c in events if e.type == "identify"]
    if identifies:
        customer_of = {e.id: c for e, c in identifies}
        rows = batch.sql(
            f"SELECT * FROM ({membership_calls(BATCH_EVENTS)}) calls WHERE group_id IS NOT NULL",
            ids=[e.id for e, _ in identifies],
            times=[e.event_time for e, _ in identifies],
            customers=[c for _, c in identifies],
        )
        calls += [(customer_of[int(i)], str(g), t, int(b), bool(j)) for i, g, t, b, j in rows]
    state: dict[tuple[int, str], tuple[datetime | None, datetime, tuple[datetime, int], bool]] = {}
    for customer, group, time, tiebreak, joins in calls:
        key = (customer, group)
        joined, last, stamp, active = state.get(key, (None, time, (time, tiebreak), joins))
        if joins:
            joined = time if joined is None else min(joined, time)
        if (time, tiebreak) >= stamp:
            stamp, active = (time, tiebreak), joins
        state[key] = (joined, max(last, time), stamp, active)
    if not state:
        return
    values = list(state.values())
    batch.sql(
        f"""
        INSERT INTO memberships AS ms
            (team_id, customer_id, group_id, joined_at, last_seen, active, state_at, state_tiebreak)
        SELECT :team, x.c, x.g, x.f, x.l, x.a, x.st, x.sb
        FROM unnest(CAST(:customers AS bigint[]), CAST(:groups AS text[]),
                    CAST(:firsts AS timestamptz[]), CAST(:lasts AS timestamptz[]),
                    CAST(:actives AS boolean[]), CAST(:stamps AS timestamptz[]),
                    CAST(:ties AS bigint[])) AS x(c, g, f, l, a, st, sb)
        {MEMBERSHIP_WINS}
        """,
        customers=[c for c, _ in state],
        groups=[g for _, g in state],
        firsts=[v[0] for v in values],
        lasts=[v[1] for v in values],
        actives=[v[3] for v in values],
        stamps=[v[2][0] for v in values],
        ties=[v[2][1] for v in values],
    )


def update_customers(batch: Batch, events: list[tuple[PendingEvent, int]], others: set[int]) -> None:
    """Counts, first and last seen, email and name of the customers the batch touched.

    One UPDATE per customer per batch (a customer row carries indexes on last_seen,
    email and name, so every update writes them: fewer updates, less bloat).
    """
    stats: dict[int, tuple[datetime | None, datetime | None, int]] = dict.fromkeys(others, (None, None, 0))
    for event, customer in events:
        first, last, n = stats.get(customer) or (None, None, 0)
        first = event.event_time if first is None else min(first, event.event_time)
        last = event.event_time if last is None else max(last, event.event_time)
        stats[customer] = (first, last, n + 1)
    if not stats:
        return
    # Driven by the array of customers, traits read by primary key per customer.
    trait = """(SELECT t.value #>> '{{}}' FROM customer_traits t
                WHERE t.team_id = c.team_id AND t.customer_id = c.id AND t.key_norm = '{key}'
                  AND jsonb_typeof(t.value) = 'string')"""
    batch.sql(
        f"""
        UPDATE customers c SET
            first_seen = LEAST(c.first_seen, x.f),
            last_seen = GREATEST(c.last_seen, x.l),
            event_count = c.event_count + x.n,
            email = {trait.format(key="email")},
            name = COALESCE({trait.format(key="name")}, NULLIF(btrim(concat_ws(' ',
                {trait.format(key="firstname")}, {trait.format(key="lastname")})), ''))
        FROM unnest(CAST(:customers AS bigint[]), CAST(:firsts AS timestamptz[]),
                    CAST(:lasts AS timestamptz[]), CAST(:counts AS integer[])) AS x(c, f, l, n)
        WHERE c.team_id = :team AND c.id = x.c
        """,
        customers=list(stats),
        firsts=[f for f, _, _ in stats.values()],
        lasts=[last for _, last, _ in stats.values()],
        counts=[n for _, _, n in stats.values()],
    )


def recompute_customer(batch: Batch, customer_id: int) -> None:
    """Derive a customer's traits, trait history, memberships, summaries and counts again
    from its events."""
    params = {"c": customer_id}
    for table in ("customer_traits", "trait_history", "memberships", "event_summaries"):
        batch.sql(f"DELETE FROM {table} WHERE team_id = :team AND customer_id = :c", **params)
    source = "(SELECT * FROM events WHERE team_id = :team AND customer_id = :c) AS e"
    batch.sql(upsert_traits("e.customer_id", source), **params)
    batch.sql(upsert_history("e.customer_id", source), **params)
    batch.sql(upsert_summaries("e.customer_id", source), **params)
    batch.sql(
        f"""
        INSERT INTO memberships (team_id, customer_id, group_id, joined_at, last_seen, active,
                                 state_at, state_tiebreak)
        SELECT :team, :c, group_id, min(event_time) FILTER (WHERE joins), max(event_time),
               (array_agg(joins ORDER BY event_time DESC, tiebreak DESC))[1],
               (array_agg(event_time ORDER BY event_time DESC, tiebreak DESC))[1],
               (array_agg(tiebreak ORDER BY event_time DESC, tiebreak DESC))[1]
        FROM ({membership_calls(source)}) calls
        WHERE group_id IS NOT NULL
        GROUP BY group_id
        """,
        **params,
    )
    batch.sql(
        """
        UPDATE customers c SET first_seen = s.first_seen, last_seen = s.last_seen, event_count = s.n
        FROM (SELECT min(event_time) AS first_seen, max(event_time) AS last_seen, count(*) AS n
              FROM events WHERE team_id = :team AND customer_id = :c) s
        WHERE c.team_id = :team AND c.id = :c
        """,
        **params,
    )


def move_derived(batch: Batch, params: dict[str, list[int]], pairs: str) -> None:
    """Merged customers' traits, memberships and counts onto their survivors.

    `pairs` is the (loser `m.l`, survivor `m.s`) relation of `params`, as
    `store/fold/resolve.py` writes merges. Traits: the latest per normalised key wins.
    """
    batch.sql(
        f"""
        INSERT INTO customer_traits AS ct
            (team_id, customer_id, key_norm, key, value, event_time, tiebreak)
        SELECT DISTINCT ON (m.s, t.key_norm)
               t.team_id, m.s, t.key_norm, t.key, t.value, t.event_time, t.tiebreak
        FROM customer_traits t JOIN {pairs} ON t.customer_id = m.l
        WHERE t.team_id = :team AND t.customer_id = ANY(:losers)
        ORDER BY m.s, t.key_norm, t.event_time DESC, t.tiebreak DESC
        {latest_wins("customer_id", "ct")}
        """,
        **params,
    )
    latest = "ORDER BY t.state_at DESC NULLS LAST, t.state_tiebreak DESC NULLS LAST"
    batch.sql(
        f"""
        INSERT INTO memberships AS ms
            (team_id, customer_id, group_id, joined_at, last_seen, active, state_at, state_tiebreak)
        SELECT :team, m.s, t.group_id, min(t.joined_at), max(t.last_seen),
               (array_agg(t.active {latest}))[1], (array_agg(t.state_at {latest}))[1],
               (array_agg(t.state_tiebreak {latest}))[1]
        FROM memberships t JOIN {pairs} ON t.customer_id = m.l
        WHERE t.team_id = :team AND t.customer_id = ANY(:losers)
        GROUP BY m.s, t.group_id
        {MEMBERSHIP_WINS}
        """,
        **params,
    )
    batch.sql(
        f"""
        INSERT INTO event_summaries AS s (team_id, customer_id, type, name, event_count, first_at, last_at)
        SELECT :team, m.s, t.type, t.name, sum(t.event_count), min(t.first_at), max(t.last_at)
        FROM event_summaries t JOIN {pairs} ON t.customer_id = m.l
        WHERE t.team_id = :team AND t.customer_id = ANY(:losers)
        GROUP BY m.s, t.type, t.name
        ON CONFLICT (team_id, customer_id, type, name) DO UPDATE
        SET event_count = s.event_count + excluded.event_count,
            first_at = LEAST(s.first_at, excluded.first_at),
            last_at = GREATEST(s.last_at, excluded.last_at)
        """,
        **params,
    )
    batch.sql(
        f"""
        UPDATE trait_history t SET customer_id = m.s FROM {pairs}
        WHERE t.team_id = :team AND t.customer_id = m.l
        """,
        **params,
    )
    for table in ("customer_traits", "memberships", "event_summaries"):
        batch.sql(f"DELETE FROM {table} WHERE team_id = :team AND customer_id = ANY(:losers)", **params)
    batch.sql(
        f"""
        UPDATE customers c SET
            is_known = c.is_known OR x.known,
            first_seen = LEAST(c.first_seen, x.first_seen),
            last_seen = GREATEST(c.last_seen, x.last_seen),
            event_count = c.event_count + x.n
        FROM (
            SELECT m.s, bool_or(l.is_known) AS known, min(l.first_seen) AS first_seen,
                   max(l.last_seen) AS last_seen, sum(l.event_count) AS n
            FROM customers l JOIN {pairs} ON l.id = m.l
            WHERE l.team_id = :team AND l.id = ANY(:losers)
            GROUP BY m.s
        ) x
        WHERE c.team_id = :team AND c.id = x.s
        """,
        **params,
    )
