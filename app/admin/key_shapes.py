"""Keys and audit entries as the keys API and the CLI show them (never a key's secret,
but once, in the answer that made it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.keys import ApiKeyCreatedSchema, ApiKeyRotatedSchema, ApiKeySchema
from store.apikeys import NewKey, Rotation, key_status
from store.models import ApiKey, KeyAuditEntry


def key_fields(key: ApiKey, now: datetime) -> dict[str, Any]:
    """A key as the API and the CLI show it: never its secret."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "status": key_status(key, now),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "rotated_from_id": key.rotated_from_id,
    }


def created_key_json(made: NewKey, now: datetime) -> dict[str, Any]:
    """A new key with its secret: the one answer that shows it."""
    data: dict[str, Any] = ApiKeyCreatedSchema().dump({**key_fields(made.key, now), "key": made.secret})
    return data


def rotated_key_json(rotation: Rotation, now: datetime) -> dict[str, Any]:
    """The new key with its secret, and under `rotated_from` the old key, now expiring."""
    data: dict[str, Any] = ApiKeyRotatedSchema().dump(
        {
            **key_fields(rotation.new.key, now),
            "key": rotation.new.secret,
            "rotated_from": key_fields(rotation.old, now),
        }
    )
    return data


def key_json(key: ApiKey, now: datetime) -> dict[str, Any]:
    """A key as listed: never its secret."""
    data: dict[str, Any] = ApiKeySchema().dump(key_fields(key, now))
    return data


def audit_fields(entry: KeyAuditEntry) -> dict[str, Any]:
    """An audit entry's fields for KeyAuditEntrySchema; the actor is 'cli' or 'key'."""
    return {
        "id": entry.id,
        "at": entry.at,
        "action": entry.action,
        "key_id": entry.key_id,
        "actor": "cli" if entry.actor_key_id is None else "key",
        "actor_key_id": entry.actor_key_id,
        "detail": entry.detail,
    }
