"""`GET /api/v1/me`: the calling key and its team, so a client can test pasted credentials.

Segment's Actions framework calls such a route when a customer pastes a key into the
destination's settings ("test connection"). Any scope may call it; it shows the key's
name, scopes and status, never its secret.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, jsonify
from sqlalchemy import select

from app.auth import identify_caller
from app.edges import not_found
from app.resources import resources
from schemas.api import MeSchema
from store.apikeys import find_key, key_status
from store.models import Team

bp = Blueprint("me", __name__, url_prefix="/api/v1")

_me = MeSchema()


@bp.get("/me")
def me() -> Response:
    """The calling key: its team, name, scopes and status.
    ---
    get:
      operationId: getMe
      summary: The calling key and its team
      description: >
        What a destination calls to test credentials a customer pasted: the key's team
        (id, name) and the key (id, name, scopes, status: `active`, or `expiring` while a
        rotated key is in its grace period). Any scope may call it.
      tags: [meta]
      x-key: any
      responses:
        200:
          description: The key and its team.
          content:
            application/json:
              schema: MeSchema
    """
    key = identify_caller()
    with resources().engine.connect() as connection:
        stored = find_key(connection, key.team_id, key.key_id)
        team_name = connection.execute(select(Team.name).where(Team.id == key.team_id)).scalar()
    if stored is None or team_name is None:
        raise not_found("key")  # deleted between the cache and now
    return jsonify(
        _me.dump(
            {
                "team": {"id": str(key.team_id), "name": team_name},
                "key": {
                    "id": str(stored.id),
                    "name": stored.name,
                    "scopes": list(stored.scopes),
                    "status": key_status(stored, datetime.now(UTC)),
                },
            }
        )
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
