"""The Postgres schema, one module per area; `Base.metadata` holds every table.

Importing this package imports every module, so the metadata is whole wherever
`store.models` is imported: alembic's environment (`store/migrations/env.py`) and
`tests/test_migrations.py` compare it with the database. Classes that no code names are
declared here for that metadata alone (docs/architecture.md, "Who owns each table").
"""

from store.models.base import Base
from store.models.customers import (
    Alias,
    AnonymousClaim,
    Customer,
    CustomerIdentity,
    CustomerTrait,
    EventSummary,
    TraitHistory,
)
from store.models.erasure import Tombstone, TombstoneLink
from store.models.events import Event
from store.models.fold_failures import FoldFailure
from store.models.groups import Group, GroupTrait, Membership
from store.models.ingest import IngestCount, IngestRejection
from store.models.keys import ApiKey, KeyAuditEntry, Team

__all__ = [
    "Alias",
    "AnonymousClaim",
    "ApiKey",
    "Base",
    "Customer",
    "CustomerIdentity",
    "CustomerTrait",
    "Event",
    "EventSummary",
    "FoldFailure",
    "Group",
    "GroupTrait",
    "IngestCount",
    "IngestRejection",
    "KeyAuditEntry",
    "Membership",
    "Team",
    "Tombstone",
    "TombstoneLink",
    "TraitHistory",
]
