"""Groups (Segment `group` calls): a company's traits and its member customers (SPEC §4).

The group is built by Postgres as `store/answers/group.py` declares it (`GROUP`) and passed
through, with the `next_cursor` the read adds; `GroupSchema` is its OpenAPI component,
named in full in the docstring below (the Segment `group` call has a `GroupSchema` too).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response

from app.auth import authenticate
from app.edges import load_query, not_found
from app.resources import resources
from schemas.api import MAX_QUERY_TEXT, GroupArgs
from schemas.cursors import encode_cursor
from store.answers.group import GROUP
from store.groups import read_group

bp = Blueprint("groups", __name__, url_prefix="/api/v1")

_group_args = GroupArgs()


# `path:` so that a groupId with a slash in it (Segment allows any string) is reachable.
@bp.get("/groups/<path:group_id>")
def group(group_id: str) -> Response:
    """A group, its traits and its members.
    ---
    get:
      operationId: getGroup
      summary: A group with its traits and members
      description: >
        The group's traits (latest value per key wins) and one page of its member
        customers, in the order they joined (earliest group call first). Page the members
        with `limit` and `cursor`.
      tags: [groups]
      x-key: read
      parameters:
        - in: path
          name: group_id
          required: true
          description: The Segment groupId, URL-encoded.
          schema: {type: string, minLength: 1, maxLength: 255}
        - in: query
          schema: GroupArgs
      responses:
        200:
          description: The group and one page of members.
          content:
            application/json:
              schema: store.answers.declared.GroupSchema
        400: BadRequest
        404: NotFound
    """
    key = authenticate("read")
    args = load_query(_group_args)
    if "\x00" in group_id or len(group_id) > MAX_QUERY_TEXT:
        raise not_found("group")  # no stored groupId looks like this
    cursor = args.get("cursor")
    with resources().reads.connect(key.team_id) as connection:
        found = read_group(
            connection,
            key.team_id,
            group_id,
            limit=args["limit"],
            after=cursor.position if cursor else None,
        )
    if found is None:
        raise not_found("group")
    body, next_position = found
    next_cursor = encode_cursor("members", next_position, "asc") if next_position else None
    return Response(GROUP.completed(body, next_cursor=next_cursor) + "\n", mimetype="application/json")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
