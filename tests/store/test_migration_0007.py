"""Migration 0007 derives the profile API's state from events folded before it existed.

A database folded at head is taken back to 0006 (the new state dropped) and up again:
the backfill must give what the fold gives, which is the reference model's state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, make_url, text

from service.settings import sqlalchemy_url
from store.migrate import alembic_config, upgrade
from tests.workers.model import expected_state, snapshot
from tests.workers.support import event, new_team, store_and_fold

EVENTS = [
    event("page", "m0", 0, anonymousId="a1", name="Home"),
    event(
        "identify", "m1", 1, userId="u1", anonymousId="a1", traits={"plan": "free", "company": {"id": "c1"}}
    ),
    event("identify", "m2", 2, userId="u1", traits={"plan": "pro", "company": {"id": "c1", "remove": True}}),
    event("group", "m3", 3, userId="u1", groupId="g1", traits={"name": "G"}),
    event("track", "m4", 4, userId="u1", event="Paid", context={"traits": {"email": "u1@x.test"}}),
    event("identify", "m5", 5, userId="u2", traits={"company": "Globex"}),
    event("alias", "m6", 6, userId="u2", previousId="u1"),
]


@pytest.fixture
def scratch(database_url: str) -> Iterator[tuple[str, Engine]]:
    """A database of its own: the migration runs over every team."""
    name = f"tl_0007_{uuid.uuid4().hex[:8]}"
    server = make_url(sqlalchemy_url(database_url))
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_backfill_gives_what_the_fold_gives(scratch: tuple[str, Engine]) -> None:
    url, engine = scratch
    team = new_team(engine)
    store_and_fold(engine, team, EVENTS)
    with engine.connect() as connection:
        folded = asdict(snapshot(connection, team))
    assert folded == asdict(expected_state(EVENTS))
    command.downgrade(alembic_config(url), "0006")
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        assert asdict(snapshot(connection, team)) == folded
