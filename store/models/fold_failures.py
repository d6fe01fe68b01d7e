"""Events the fold set aside, with their error (`store/fold_failures.py`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    PrimaryKeyConstraint,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class FoldFailure(Base):
    """An event the fold could not fold, set aside with its error so the team's others fold.

    The event itself is marked folded (`folded_at`, no customer): the batch selection, the
    sweep and the backlog skip it. No foreign key to `events`: bulk loads drop and rebuild
    its primary key (bench/); whoever erases a set-aside event removes its row too.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by store/fold_failures.py
    alone (for workers/poison.py, store/fold/erase.py and a retry), read there and by
    store/fold/derived.py, in SQL.
    """

    __tablename__ = "fold_failures"
    team_id: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(BigInteger)
    error_class: Mapped[str] = mapped_column(Text)  # the driver's exception class
    sqlstate: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(TZ)

    __table_args__ = (PrimaryKeyConstraint("team_id", "event_id"),)


# Profile API state (SPEC §4; migration 0007)
