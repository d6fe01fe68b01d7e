"""Teams, their API keys and the keys' audit trail (written by `store/apikeys/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class Team(Base):
    """A customer of ours: one Segment workspace's destination.

    Key management locks the team's row (`SELECT ... FOR UPDATE`), so two admins
    revoking keys at once cannot leave the team without an active admin key.
    """

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ)
    # How many days of the team's events are kept (NULL: the operator's RETENTION_DAYS, or
    # everything); the operator's value caps it (store/retention.py, docs/retention.md).
    retention_days: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("retention_days BETWEEN 1 AND 3650", name="ck_teams_retention_days"),)


class ApiKey(Base):
    """A team's API key, stored only as a digest of the secret.

    `expires_at` is set by a rotation (the end of the grace period), `revoked_at` by a
    revoke; `last_used_at` is written by the web processes about once a minute at most.
    """

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(Text, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(TZ)
    last_used_at: Mapped[datetime | None] = mapped_column(TZ)
    expires_at: Mapped[datetime | None] = mapped_column(TZ)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ)
    rotated_from_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_api_keys_team_id_created_at", "team_id", "created_at"),
        CheckConstraint(
            "cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'read', 'admin']::text[]",
            name="ck_api_keys_scopes",
        ),
    )


class KeyAuditEntry(Base):
    """One create, rotate or revoke of a key, kept for the team's admins.

    `actor_key_id` is the admin key that made the change; NULL means the CLI.
    """

    __tablename__ = "key_audit"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    key_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(Text)
    actor_key_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(TZ)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id"),
        CheckConstraint("action IN ('create', 'rotate', 'revoke')", name="ck_key_audit_action"),
    )
