"""Apply migrations: the Procfile's `release` step (`python -m store.migrate`)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from service.settings import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "store" / "migrations"))
    if database_url:
        config.attributes["database_url"] = sqlalchemy_url(database_url)
    return config


def upgrade(database_url: str | None = None) -> None:
    """Bring the database to the newest migration."""
    command.upgrade(alembic_config(database_url), "head")


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (for /readyz)."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == heads


if __name__ == "__main__":
    upgrade(os.environ.get("DATABASE_URL"))
