"""The sweep: find teams with stored-but-unfolded events and queue their fold.

This is what makes a lost queue harmless: after a Redis outage, flush or restart, and
after a worker died mid-batch, the events are still unfolded in Postgres and the next
sweep queues them again.
"""

from __future__ import annotations

import logging

from redis import Redis
from sqlalchemy import Engine, text

from store.settings import Settings
from workers.signal import request_fold

log = logging.getLogger(__name__)


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


def sweep(engine: Engine, redis: Redis, settings: Settings) -> list[int]:
    """Queue a fold for every team with unfolded events; returns those teams."""
    teams = teams_with_unfolded_events(engine)
    for team_id in teams:
        request_fold(redis, settings.fold_queue, settings.redis_prefix, team_id)
    if teams:
        log.info("sweep queued folds for %d teams", len(teams))
    return teams
