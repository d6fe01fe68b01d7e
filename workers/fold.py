"""The fold: stored events into customers, identities, traits, groups and timelines.

`fold_pending` takes one batch of a team's unfolded events in one transaction, under a
per-team advisory lock, so several workers can run at once without racing on the same
team's customers; a worker killed mid-batch rolls its transaction back and the events
stay unfolded for the next one. An event the fold cannot write (a value an index
refuses) is set aside with its error and the team's other events fold
(`workers/poison.py`).

A batch is taken by `store/fold/backlog.py` (the lock and the batch's events), then folded
in three steps, each in its own module of `store/fold/` (which holds the fold's SQL), all
through one `store.fold.batch.Batch`:
1. deletes erase the people they name and leave tombstones (`store/fold/erase.py`);
2. identity resolution points each event at its customer (`store/fold/resolve.py`);
3. derived state (traits, groups, memberships, counts) follows (`store/fold/derived.py`).
This module only orders them, in one transaction, and falls back to poison isolation.
Last, in the same transaction, it tells the web processes' live streams what it folded
(`store/live.py`: a `NOTIFY`, delivered only if the batch commits).

The result is a function of the *set* of events, not of their arrival order or batching
(the rules and why: docs/fold.md; the same rules as a reference model:
tests/workers/model.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from store.fold import derived
from store.fold.backlog import take_batch
from store.fold.batch import Batch
from store.fold.erase import apply_deletes
from store.fold.pending import PendingEvent
from store.fold.resolve import Resolution
from store.fold_failures import erase_set_aside
from store.live import notify_folded
from workers.poison import cannot_fold, describe, fold_isolating

log = logging.getLogger(__name__)


def fold_pending(engine: Engine, team_id: int, batch_size: int = 1000) -> int:
    """Fold one batch of the team's unfolded events; returns how many were taken.

    A batch that fails on its data (`workers.poison.cannot_fold`) is taken again and
    folded in halves, setting aside the events that cannot be folded; any other error
    (a lost connection) rolls back and propagates, and the batch is taken again later.
    """
    try:
        with engine.begin() as connection:
            events = take_batch(connection, team_id, batch_size)
            if events:
                fold_events(connection, team_id, events, datetime.now(UTC))
                notify_folded(connection, team_id, events)
            return len(events)
    except DBAPIError as error:
        if not cannot_fold(error):
            raise
        log.warning(
            "fold of team %s failed on its data (%s); isolating the events at fault",
            team_id,
            describe(error).message,
        )
    with engine.begin() as connection:
        events = take_batch(connection, team_id, batch_size)
        fold_isolating(connection, team_id, events, datetime.now(UTC), fold_events)
        notify_folded(connection, team_id, events)
        return len(events)


def fold_until_empty(engine: Engine, team_id: int, batch_size: int = 1000) -> int:
    """Fold batches until the team has no unfolded events; returns the total."""
    total = 0
    while True:
        taken = fold_pending(engine, team_id, batch_size)
        total += taken
        if taken < batch_size:
            return total


def fold_events(connection: Connection, team_id: int, events: Sequence[PendingEvent], now: datetime) -> None:
    """Fold events (locked, unfolded rows of one team) inside the caller's transaction."""
    batch = Batch(connection, team_id)
    erasure = apply_deletes(batch, list(events))
    if any(e.type == "delete" for e in events):
        erase_set_aside(batch)
    events = erasure.events
    identities = Resolution(batch, now)
    identities.recompute |= erasure.changed_customers
    if erasure.groups:
        derived.recompute_groups(batch, sorted(erasure.groups))
    # Events whose customer is not derived again from scratch: their effects are added.
    incremental: list[tuple[PendingEvent, int]] = []
    if events or erasure.loose_anonymous:
        assigned, gone = identities.resolve(events, erasure.loose_anonymous)
        customer_of = dict(assigned)
        incremental = [
            (e, c) for e in events if (c := customer_of[e.id]) is not None and c not in identities.recompute
        ]
        derived.update_traits(batch, incremental)
        derived.update_groups(batch, [e for e in events if e.type == "group"])
        derived.update_memberships(batch, incremental)
        if gone:
            identities.forget_anonymous(sorted(gone))
    recompute = {identities.find(c) for c in identities.recompute}
    for customer_id in sorted(recompute):
        derived.recompute_customer(batch, customer_id)
    survivors = {identities.find(c) for c in identities.parent}
    derived.update_customers(batch, incremental, recompute | survivors)
