"""The fold's backlog: a team's unfolded events, taken in batches, and the teams that have some.

Unfolded events are those with `folded_at IS NULL`, read through the small partial index
on them. `take_batch` starts every fold transaction (`workers/fold.py`); the sweep
(`workers/sweep.py`) walks the index for the teams to wake.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from store.fold.pending import PENDING_COLUMNS, PendingEvent

FOLD_LOCK_NAMESPACE = 7_301


def try_team_step(connection: Connection, team_id: int, statement_timeout: str = "10s") -> bool:
    """Take the team's fold lock for this transaction without waiting (False: its fold
    holds it), and bound the transaction's waits: a maintenance step (expiry, a month's
    settling, the move into the months) that never interleaves with the team's fold."""
    return bool(
        connection.execute(
            text(
                "SELECT pg_try_advisory_xact_lock(:ns, :key), set_config('lock_timeout', '1s', true), "
                "set_config('statement_timeout', :timeout, true)"
            ),
            {"ns": FOLD_LOCK_NAMESPACE, "key": team_id % 2_147_483_647, "timeout": statement_timeout},
        ).scalar()
    )


def take_batch(connection: Connection, team_id: int, batch_size: int) -> list[PendingEvent]:
    """Lock the team for this transaction and take up to `batch_size` of its unfolded events."""
    # The team's lock, then settings for this transaction only: psycopg prepares a
    # statement after a few runs, and Postgres's generic plan cannot see how many ids
    # an array holds (measured 10-30x slower); JIT spends 20 ms compiling statements
    # that run in 2. And no bitmap scans: a backlog stored faster than autovacuum
    # analyses it (an import, a burst) is estimated at a few rows, so taking a batch
    # became a bitmap scan and a sort of the whole backlog, per batch (quadratic); the
    # partial index read in id order stops after the batch. Measured on the bench's
    # imported 200,000-event backlog: 2,014/s -> 8,508/s. (Hash and merge joins off as
    # well made the derived-state statement slower: 2,014/s; so they stay on.)
    connection.execute(
        text(
            "SELECT pg_advisory_xact_lock(:ns, :team), "
            "set_config('plan_cache_mode', 'force_custom_plan', true), set_config('jit', 'off', true), "
            "set_config('enable_bitmapscan', 'off', true)"
        ),
        {"ns": FOLD_LOCK_NAMESPACE, "team": team_id % 2_147_483_647},
    )
    rows = connection.execute(
        text(
            f"""
            SELECT {PENDING_COLUMNS}
            FROM events
            WHERE team_id = :team AND folded_at IS NULL
            ORDER BY id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
            """
        ),
        {"team": team_id, "limit": batch_size},
    ).all()
    return [PendingEvent(*row) for row in rows]


def teams_with_unfolded_events(engine: Engine) -> list[int]:
    """Teams that have unfolded events (a walk of the small partial index)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                """
                WITH RECURSIVE t AS (
                    (SELECT team_id FROM events WHERE folded_at IS NULL ORDER BY team_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT team_id FROM events
                            WHERE folded_at IS NULL AND team_id > t.team_id
                            ORDER BY team_id LIMIT 1)
                    FROM t WHERE t.team_id IS NOT NULL
                )
                SELECT team_id FROM t WHERE team_id IS NOT NULL
                """
            )
        ).all()
    return [int(row.team_id) for row in rows]
