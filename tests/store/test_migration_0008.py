"""Migration 0008 re-keys traits folded under the old, locale-dependent rule (issue 22).

Before it, Postgres's `lower()` made `EMAİL` (U+0130) the key `email`, so such a trait
was the customer's email. A database folded at head is made to look as the old rule
left it, taken back to 0007 and up again: the trait is keyed by the one rule and is no
longer the email; tombstones keep their delete's time as their receipt.
"""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, text

from store.migrate import alembic_config
from tests.store.test_migration_0007 import scratch
from tests.workers.support import event, new_team, store_and_fold

__all__ = ["scratch"]  # the fixture, shared with 0007's test

EMAIL = "EMA\u0130L"


def test_traits_keyed_by_the_old_rule_are_keyed_again(scratch: tuple[str, Engine]) -> None:
    url, engine = scratch
    team = new_team(engine)
    store_and_fold(
        engine,
        team,
        [
            event("identify", "m1", 1, userId="u1", traits={EMAIL: "long@x.test", "plan": "pro"}),
            event("group", "m2", 2, userId="u1", groupId="g1", traits={"N\u0130ME": "Initech"}),
            event("delete", "m3", 0, userId="gone"),
        ],
    )
    params = {"t": team, "k": EMAIL}
    with engine.begin() as connection:  # as the old rule left them
        connection.execute(
            text("UPDATE customer_traits SET key_norm = 'email' WHERE team_id = :t AND key = :k"), params
        )
        connection.execute(text("UPDATE customers SET email = 'long@x.test' WHERE team_id = :t"), params)
        connection.execute(
            text("UPDATE trait_history SET key_norm = 'email' WHERE team_id = :t AND key = :k"), params
        )
        connection.execute(text("UPDATE group_traits SET key_norm = 'nime' WHERE team_id = :t"), params)
    command.downgrade(alembic_config(url), "0007")
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        traits = connection.execute(
            text("SELECT key_norm, key FROM customer_traits WHERE team_id = :t ORDER BY key"), params
        ).all()
        assert [tuple(r) for r in traits] == [("ema\u0130l", EMAIL), ("plan", "plan")]
        assert connection.execute(text("SELECT email FROM customers WHERE team_id = :t"), params).all() == [
            (None,)
        ]
        history = connection.execute(
            text("SELECT key_norm FROM trait_history WHERE team_id = :t AND key = :k"), params
        ).scalar_one()
        assert history == "ema\u0130l"
        group = connection.execute(
            text("SELECT key_norm FROM group_traits WHERE team_id = :t"), params
        ).scalar_one()
        assert group == "n\u0130me"
        deleted_at, received_at = connection.execute(
            text("SELECT deleted_at, received_at FROM tombstones WHERE team_id = :t"), params
        ).one()
        assert received_at == deleted_at
