"""Migrations: one head, and the models match the migrated schema."""

from __future__ import annotations

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from store.migrate import alembic_config, is_current
from store.models import Base
from store.partitions import include_object


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"


def test_database_is_at_head_and_matches_the_models(engine: Engine) -> None:
    assert is_current(engine)
    with engine.connect() as connection, warnings.catch_warnings():
        # Expression indexes with an operator class (text_pattern_ops) cannot be compared;
        # alembic says so and skips them, which is what we want here.
        warnings.filterwarnings("ignore", "Expression #", UserWarning)
        context = MigrationContext.configure(connection, opts={"include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
