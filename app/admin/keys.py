"""Key management for team admins: create, list, rotate, revoke, audit (SPEC §5).

Every route needs a key with the `admin` scope and sees only its own team's keys:
another team's key id answers 404, like one that does not exist. No answer carries a
secret except the 201 of create and rotate, which shows the new key once.

The YAML after `---` in each docstring is the view's OpenAPI operation (`app/openapi.py`
collects it): schema names are classes of `schemas/keys.py`, and `ErrorSchema` and the
shared responses (`BadRequest`, `Unauthorized`, ...) come from `schemas/api.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from flask import Blueprint, Flask, Response, jsonify
from marshmallow import Schema
from sqlalchemy import Connection

from app import edges
from app.admin.key_shapes import audit_fields, created_key_json, key_fields, rotated_key_json
from app.auth import AUTH_CHALLENGE, authenticate
from app.errors import ApiError
from app.resources import resources
from schemas.cursors import LastId, encode_cursor
from schemas.keys import (
    ApiKeyCreateRequestSchema,
    ApiKeyListSchema,
    ApiKeyRotateRequestSchema,
    KeyAuditListSchema,
)
from store.apikeys import (
    ActingKeyExpiring,
    ActingKeyRefused,
    KeyManagementError,
    KeyNotFound,
    create_key,
    list_audit,
    list_keys,
    revoke_key,
    rotate_key,
)

bp = Blueprint("keys", __name__, url_prefix="/api/v1")

MAX_BODY_BYTES = 16 * 1024


def _key_id(raw: str) -> int:
    """The key id in the path (ASCII digits); anything else is a key we do not have."""
    return edges.path_id(raw, "key", "use an id from GET /api/v1/keys.")


def _body(schema: Schema, *, empty_means: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body loaded through `schema`, or a 4xx that says what to fix."""
    return edges.load_body(schema, max_bytes=MAX_BODY_BYTES, empty_means=empty_means)


def _as_api_error(error: KeyManagementError, actor_key_id: int) -> ApiError:
    if isinstance(error, ActingKeyRefused):
        # Postgres says the acting key cannot act: refuse it in this process at once too.
        resources().keys.forget_key(actor_key_id)
        if isinstance(error, ActingKeyExpiring):
            return ApiError(403, error.code, error.message)
        return ApiError(401, error.code, error.message, headers=AUTH_CHALLENGE)
    status = 404 if isinstance(error, KeyNotFound) else 409
    return ApiError(status, error.code, error.message)


class _Listed(Protocol):
    @property
    def id(self) -> int: ...


_Row = TypeVar("_Row", bound=_Listed)
_Row_co = TypeVar("_Row_co", bound=_Listed, covariant=True)


class _ListRead(Protocol[_Row_co]):
    """`store.apikeys.list_keys`, `list_audit`: a team's rows, newest id first."""

    def __call__(
        self, connection: Connection, team_id: int, *, limit: int | None = ..., before_id: int | None = ...
    ) -> Sequence[_Row_co]: ...


def _newest_first_page(
    cursor_kind: str,
    read: _ListRead[_Row],
    fields: Callable[[_Row, datetime], dict[str, Any]],
    schema: Schema,
) -> Response:
    """One page of a list of the admin's team, newest id first: `read` asked for one row more
    than `?limit` (to know if a page follows), from before `?cursor` (a `cursor_kind` cursor:
    the last id shown); each row shown as `fields(row, now)`."""
    actor = authenticate("admin")
    limit = edges.query_limit()
    before_id = edges.query_cursor_id(cursor_kind)
    now = datetime.now(UTC)
    with resources().engine.connect() as connection:
        rows = read(connection, actor.team_id, limit=limit + 1, before_id=before_id)
    page = rows[:limit]
    next_cursor = encode_cursor(cursor_kind, LastId(page[-1].id)) if len(rows) > limit else None
    return jsonify(schema.dump({"data": [fields(row, now) for row in page], "next_cursor": next_cursor}))


# --- routes ----------------------------------------------------------------------------


@bp.post("/keys")
def create_api_key() -> tuple[Response, int]:
    """Create a key. The answer shows its secret, once.
    ---
    post:
      operationId: createApiKey
      summary: Create an API key
      description: Needs an admin key. The secret (`key`) is in this answer only; store it now.
      tags: [keys]
      x-key: admin
      requestBody:
        required: true
        content:
          application/json:
            schema: ApiKeyCreateRequestSchema
      responses:
        201:
          description: The new key, with its secret.
          content:
            application/json:
              schema: ApiKeyCreatedSchema
        400: BadRequest
        413: PayloadTooLarge
    """
    actor = authenticate("admin")
    body = _body(ApiKeyCreateRequestSchema())
    now = datetime.now(UTC)
    try:
        with resources().engine.begin() as connection:
            made = create_key(
                connection, actor.team_id, body["name"], body["scopes"], now, actor_key_id=actor.key_id
            )
    except KeyManagementError as error:
        raise _as_api_error(error, actor.key_id) from None
    return jsonify(created_key_json(made, now)), 201


@bp.get("/keys")
def list_api_keys() -> Response:
    """The team's keys, newest first; never a secret.
    ---
    get:
      operationId: listApiKeys
      summary: List the team's API keys
      description: Needs an admin key. Revoked and expired keys are listed too, with their status.
      tags: [keys]
      x-key: admin
      parameters:
        - Limit
        - Cursor
      responses:
        200:
          description: A page of keys.
          content:
            application/json:
              schema: ApiKeyListSchema
        400: BadRequest
    """
    return _newest_first_page("k", list_keys, key_fields, ApiKeyListSchema())


@bp.post("/keys/<key_id>/rotate")
def rotate_api_key(key_id: str) -> tuple[Response, int]:
    """A new key with the same name and scopes; the old one works through its grace period.
    ---
    post:
      operationId: rotateApiKey
      summary: Rotate an API key
      description: >
        Needs an admin key. Segment keeps sending the old key until the new one is pasted
        into it, and does not retry a 401, so the old key keeps working for
        `grace_seconds` (default 86400; 0 cuts it at once; at most 30 days).
        Only an active key can be rotated.
      tags: [keys]
      x-key: admin
      parameters:
        - {name: key_id, in: path, required: true, schema: {type: string}, description: The key's id}
      requestBody:
        required: false
        content:
          application/json:
            schema: ApiKeyRotateRequestSchema
      responses:
        201:
          description: The new key with its secret, and the old key with its expires_at.
          content:
            application/json:
              schema: ApiKeyRotatedSchema
        400: BadRequest
        413: PayloadTooLarge
        404: NotFound
        409:
          description: The key is already expiring, expired or revoked.
          content:
            application/json:
              schema: ErrorSchema
    """
    actor = authenticate("admin")
    wanted = _key_id(key_id)
    body = _body(ApiKeyRotateRequestSchema(), empty_means={})
    now = datetime.now(UTC)
    try:
        with resources().engine.begin() as connection:
            rotation = rotate_key(
                connection,
                actor.team_id,
                wanted,
                now,
                grace=timedelta(seconds=body["grace_seconds"]),
                actor_key_id=actor.key_id,
            )
    except KeyManagementError as error:
        raise _as_api_error(error, actor.key_id) from None
    resources().keys.forget_key(wanted)  # this process sees the new expiry at once
    return jsonify(rotated_key_json(rotation, now)), 201


@bp.delete("/keys/<key_id>")
def revoke_api_key(key_id: str) -> Response:
    """Revoke a key at once.
    ---
    delete:
      operationId: revokeApiKey
      summary: Revoke an API key
      description: >
        Needs an admin key. Every web process refuses the key within a second.
        Revoking a revoked key changes nothing. The team's last active admin key
        cannot be revoked (409): rotate it instead.
      tags: [keys]
      x-key: admin
      parameters:
        - {name: key_id, in: path, required: true, schema: {type: string}, description: The key's id}
      responses:
        204:
          description: Revoked.
        404: NotFound
        409:
          description: It is the team's last active admin key.
          content:
            application/json:
              schema: ErrorSchema
    """
    actor = authenticate("admin")
    wanted = _key_id(key_id)
    now = datetime.now(UTC)
    try:
        with resources().engine.begin() as connection:
            revoke_key(connection, actor.team_id, wanted, now, actor_key_id=actor.key_id)
    except KeyManagementError as error:
        raise _as_api_error(error, actor.key_id) from None
    resources().keys.forget_key(wanted)  # this process refuses it at once
    return Response(status=204)


@bp.get("/keys/audit")
def key_audit() -> Response:
    """Every create, rotate and revoke of the team's keys, newest first.
    ---
    get:
      operationId: listKeyAudit
      summary: The key audit list
      description: Needs an admin key. Who (an admin key's id, or the CLI), when, and what.
      tags: [keys]
      x-key: admin
      parameters:
        - Limit
        - Cursor
      responses:
        200:
          description: A page of audit entries.
          content:
            application/json:
              schema: KeyAuditListSchema
        400: BadRequest
    """
    return _newest_first_page("a", list_audit, lambda entry, _now: audit_fields(entry), KeyAuditListSchema())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
