"""A customer's profile, and a group membership on it, each declared once (SPEC §4).

`PROFILE` and `GROUP_MEMBERSHIP` below are the declarations: each key's SQL expression,
response field and description. From them come the SQL `store.customers.read_profile`
runs (Postgres builds the profile's JSON in one statement, for `/customers/{id}` and
`/customers/lookup` alike), `ProfileSchema`, `GroupMembershipSchema` and so the OpenAPI
components. To add a key to the profile, add one `Field` to `PROFILE`. Its `presence` is
declared in `store/answers/presence.py` (the rule of "active now"), as of `:now`.

The profile's SQL is over a `customers` row `c` and the lateral reads of its lists
(`user_ids`, `anonymous_ids`, `traits`, `groups`: each `shown`, its first `cap` items,
and `cut`, whether there were more; `store.customers._profile_sql`). A membership's is
over a `memberships` row `m`. tests/store/reference.py's `load_profile` is an
independent oracle of the same answer, dumped through `ProfileSchema`.
"""

from __future__ import annotations

from functools import partial

from marshmallow import fields, validate

from schemas.api import PROFILE_GROUPS, PROFILE_IDS, PROFILE_TRAITS, SHOWN_KEYS, SHOWN_VALUE
from schemas.fields import Instant
from store.answers.declared import Answer, Field, page_schema
from store.answers.presence import PRESENCE
from store.statements import iso_sql, shown_value_sql, value_cut_sql

_JSON_OBJECT = partial(fields.Dict, keys=fields.String(), values=fields.Raw())
_STRINGS = partial(fields.List, fields.String())

# A group's traits as a membership shows them: its first SHOWN_KEYS by normalised key.
_GROUP_TRAITS = """SELECT gt.key, gt.value FROM group_traits gt
                 WHERE gt.team_id = m.team_id AND gt.group_id = m.group_id
                 ORDER BY gt.key_norm"""

GROUP_MEMBERSHIP = Answer(
    "GroupMembership",  # a group on a customer's profile
    (
        Field("id", "m.group_id", fields.String, "The Segment groupId."),
        Field(
            "name",
            "(SELECT g.name FROM groups g WHERE g.team_id = m.team_id AND g.group_id = m.group_id)",
            fields.String,
            nullable=True,
        ),
        Field(
            "traits",
            f"""COALESCE((
            SELECT jsonb_object_agg(shown.key, {shown_value_sql("shown.value", SHOWN_VALUE)})
            FROM ({_GROUP_TRAITS} LIMIT {SHOWN_KEYS}) shown), '{{}}')""",
            _JSON_OBJECT,
        ),
        Field("joined_at", iso_sql("m.joined_at"), Instant, "Event time of the first group call."),
        Field(
            "truncated",
            f"""to_json(array_remove(ARRAY[CASE WHEN (
            SELECT count(*) > {SHOWN_KEYS}
                   OR COALESCE(bool_or({value_cut_sql("shown.value", SHOWN_VALUE)}), false)
            FROM ({_GROUP_TRAITS} LIMIT {SHOWN_KEYS + 1}) shown) THEN 'traits' END], NULL))""",
            _STRINGS,
            f'["traits"] when the group has more than {SHOWN_KEYS} traits or a value over '
            f"{SHOWN_VALUE} characters (cut); `GET /groups/{{id}}` has them all. Else [].",
        ),
    ),
)

PROFILE = Answer(
    "Profile",  # a customer's profile: ids, traits and groups
    (
        Field("id", "c.id::text", fields.String),
        Field("user_ids", "COALESCE(user_ids.shown, '[]')", _STRINGS),
        Field("anonymous_ids", "COALESCE(anonymous_ids.shown, '[]')", _STRINGS),
        Field("email", "c.email", fields.String, nullable=True),
        Field("name", "c.name", fields.String, nullable=True),
        Field(
            "traits",
            "COALESCE(traits.shown, '{}')",
            _JSON_OBJECT,
            f"At most {PROFILE_TRAITS} traits (the first by normalised key), each value "
            f"cut at {SHOWN_VALUE} characters; `GET /customers/{{id}}/traits` pages them all, whole.",
        ),
        Field(
            "groups",
            "COALESCE(groups.shown, '[]')",
            partial(fields.List, fields.Nested(GROUP_MEMBERSHIP.schema)),
            f"At most {PROFILE_GROUPS} memberships (the first by groupId), by joined_at; "
            "`GET /customers/{id}/groups` pages them all.",
        ),
        Field("first_seen", iso_sql("c.first_seen"), Instant, nullable=True),
        Field("last_seen", iso_sql("c.last_seen"), Instant, nullable=True),
        Field("event_count", "c.event_count", fields.Integer),
        Field(
            "truncated",
            """to_json(array_remove(ARRAY[
                CASE WHEN user_ids.cut THEN 'user_ids' END,
                CASE WHEN anonymous_ids.cut THEN 'anonymous_ids' END,
                CASE WHEN traits.cut THEN 'traits' END,
                CASE WHEN groups.cut THEN 'groups' END
            ], NULL))""",
            partial(
                fields.List,
                fields.String(validate=validate.OneOf(("user_ids", "anonymous_ids", "traits", "groups"))),
            ),
            "The lists this profile shows only in part: `user_ids` and `anonymous_ids` "
            f"show at most {PROFILE_IDS} each (all: `/external_ids`), `traits` and `groups` as above. "
            "[] when the profile is whole.",
        ),
        Field("presence", PRESENCE, description="Active now, and where, as of the read."),
    ),
)

GroupMembershipSchema = GROUP_MEMBERSHIP.schema
ProfileSchema = PROFILE.schema


# A page of a customer's memberships (`GET /customers/{id}/groups`).
MembershipListSchema = page_schema("MembershipList", GroupMembershipSchema, "null at the end.")
