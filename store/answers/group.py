"""A group with one page of its members, declared once (SPEC §4).

`GROUP` and `GROUP_MEMBER` below are the declarations: each key's SQL expression,
response field and description. From them comes the one statement
`store.groups.read_group` runs (Postgres builds the group's JSON, its members included),
`GroupSchema`, `GroupMemberSchema` and so the OpenAPI components. To add a key to the
group, add one `Field` to `GROUP`; to a member, to `GROUP_MEMBER` (or, for every list of
customers, to `CUSTOMER_LIST_ITEM`).

The group's SQL is over `g`, the group's row (`group_id`, `name`, `first_seen`,
`last_seen`), `:team`, and `members`, the page of members `store.groups` reads
(`shown`: their JSON, in the order they joined). A member's is over a `customers` row `c`
and its `memberships` row `m`. `next_cursor` is the read's (the position of the page's
last member). tests/store/reference.py's `load_group` is an independent oracle of the
same answer, dumped through `GroupSchema`.
"""

from __future__ import annotations

from functools import partial

from marshmallow import fields

from schemas.fields import Instant
from store.answers.customer_list_item import CUSTOMER_LIST_ITEM
from store.answers.declared import Answer, Field
from store.statements import iso_sql

GROUP_MEMBER = Answer(
    "GroupMember",  # a customer in a group's members
    (
        *CUSTOMER_LIST_ITEM.fields,
        Field("joined_at", iso_sql("m.joined_at"), Instant, "Event time of the first group call."),
    ),
)

GROUP = Answer(
    "Group",  # a group, its traits, and one page of its members (by joined_at, oldest first)
    (
        Field("id", "g.group_id", fields.String, "The Segment groupId."),
        Field("name", "g.name", fields.String, nullable=True),
        Field(
            "traits",
            """COALESCE((
            SELECT json_object_agg(t.key, t.value ORDER BY t.key) FROM group_traits t
            WHERE t.team_id = :team AND t.group_id = g.group_id), '{}')""",
            partial(fields.Dict, keys=fields.String(), values=fields.Raw()),
            "Every trait, whole: the latest value per key.",
        ),
        Field("first_seen", iso_sql("g.first_seen"), Instant),
        Field("last_seen", iso_sql("g.last_seen"), Instant),
        Field(
            "member_count",
            "(SELECT count(*) FROM memberships m "
            "WHERE m.team_id = :team AND m.group_id = g.group_id AND m.active)",
            fields.Integer,
        ),
        Field("members", "members.shown", partial(fields.List, fields.Nested(GROUP_MEMBER.schema))),
        Field(
            "next_cursor",
            None,
            fields.String,
            "The next page of members; null at the end.",
            nullable=True,
        ),
    ),
)

GroupMemberSchema = GROUP_MEMBER.schema
GroupSchema = GROUP.schema
