"""What ingest refused, kept and counted for the team's debugger (`store/rejections.py`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Integer,
    PrimaryKeyConstraint,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class IngestRejection(Base):
    """A refused event (or request) kept for the team's ingestion debugger.

    Bounded per team: `store/rejections.py` keeps the latest `MAX_KEPT` and stores at
    most a few per call, so a flood of junk is counted (`IngestCount`) rather than kept.
    `preview` is a truncated, key-free rendering of what was sent; `route` is the HTTP
    route or, for an import, the file (`line` its line number).

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written and read by
    store/rejections.py, in SQL.
    """

    __tablename__ = "ingest_rejections"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    at: Mapped[datetime] = mapped_column(TZ)
    source: Mapped[str] = mapped_column(Text)  # "http" | "import"
    route: Mapped[str] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(Text)
    preview: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id"),
        CheckConstraint("source IN ('http', 'import')", name="ck_ingest_rejections_source"),
    )


class IngestCount(Base):
    """Events accepted, duplicated and refused per team, hour, source, type and code.

    `code` is '' for accepted, duplicate and expired (older than the team's retention when it
    arrived: answered 200, not stored); `type` is a supported type, `other`, or
    `request` for a refusal of a whole request. Rows older than the summary's longest
    window are pruned as counts are added.
    """

    __tablename__ = "ingest_counts"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    hour: Mapped[datetime] = mapped_column(TZ)
    source: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "hour", "source", "type", "outcome", "code"),
        CheckConstraint(
            "outcome IN ('accepted', 'duplicate', 'refused', 'expired')", name="ck_ingest_counts_outcome"
        ),
    )
