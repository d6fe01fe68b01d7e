"""An unfolded event as the fold sees it: ids, time, receipt and order, not the payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The columns of `events` a PendingEvent is read from, in its field order.
PENDING_COLUMNS = (
    "id, type, message_id, user_id, anonymous_id, previous_id, event_time, tiebreak, group_id, received_at"
)


@dataclass(frozen=True)
class PendingEvent:
    id: int
    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    previous_id: str | None
    event_time: datetime
    tiebreak: int
    group_id: str | None = None
    received_at: datetime | None = None  # when ingest stored it (a delete erases by it too)
