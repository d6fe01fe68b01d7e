"""The stored events: ingest writes them (`store/events.py`), the fold folds them (`store/fold/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    PrimaryKeyConstraint,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class Event(Base):
    """A Segment event as received, and (once folded) the customer it belongs to.

    The stored events are also the timeline: the feed reads this table by
    (team_id, customer_id, event_time, tiebreak, id). Partitioned by event time, a
    partition a month (`store/partitions.py`, migration 0012): every unique key holds
    `event_time`, the partition key, as Postgres requires.
    """

    __tablename__ = "events"
    team_id: Mapped[int] = mapped_column(BigInteger)
    # Drawn from the sequence `events_id_seq` (Postgres 15 and 16 allow no identity
    # column on a partitioned table).
    id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    event_name: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    anonymous_id: Mapped[str | None] = mapped_column(Text)
    group_id: Mapped[str | None] = mapped_column(Text)
    previous_id: Mapped[str | None] = mapped_column(Text)
    event_time: Mapped[datetime] = mapped_column(TZ)
    received_at: Mapped[datetime] = mapped_column(TZ)
    # Order of events with the same event time: a hash of (type, messageId), so the
    # timeline order does not depend on arrival order.
    tiebreak: Mapped[int] = mapped_column(BigInteger)
    # Compressed with lz4 where the server has it (migration 0011; SQLAlchemy cannot
    # declare a column's compression). Postgres compresses only rows over ~2 KB, so most
    # payloads are stored as sent: docs/scaling.md, "Bytes per event".
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    folded_at: Mapped[datetime | None] = mapped_column(TZ)
    # 1 for every event in the months; 0 only for the events of a table made before
    # migration 0012 while they are moved (store/timeline_move.py). Ingest's duplicate
    # check asks for `layout = 0`, which no month can hold (`CHECK (layout = 1)`): after
    # the move, Postgres excludes every month when planning it.
    layout: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id", "event_time"),
        # Idempotency. A messageId that comes back with another type is another message:
        # Segment's own docs reuse one messageId across identify, screen and group samples.
        # The event time is the payload's, so a re-send meets its first delivery here.
        UniqueConstraint("team_id", "message_id", "type", "event_time"),
        Index("ix_events_feed", "team_id", "customer_id", "event_time", "tiebreak", "id"),
        Index(
            "ix_events_unfolded",
            "team_id",
            "id",
            postgresql_where=text("folded_at IS NULL"),
        ),
        # A group's calls, to derive it again when a delete erases some (few rows: group
        # calls are rare beside track and page).
        Index("ix_events_group_calls", "team_id", "group_id", postgresql_where=text("type = 'group'")),
        CheckConstraint("layout = 1", name="ck_events_layout"),
        {"postgresql_partition_by": "RANGE (event_time)"},
    )
