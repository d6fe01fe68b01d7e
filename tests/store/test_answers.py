"""An answer is declared once (store/answers/): one added `Field` reaches the SQL Postgres
builds the JSON with, the marshmallow schema and the OpenAPI component, in the same place."""

from __future__ import annotations

import dataclasses
import json

import pytest
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields
from sqlalchemy import Engine, text

from store.answers.customer_list_item import CUSTOMER_LIST_ITEM, CustomerSummarySchema
from store.answers.declared import Answer, Field
from store.answers.feed_item import FEED_ITEM, FeedItemSchema
from store.answers.group import GROUP, GROUP_MEMBER, GroupMemberSchema, GroupSchema
from store.answers.profile import PROFILE, ProfileSchema

# One events row, as the feed reads it.
_ROW = """
    SELECT ({item})::text AS item FROM (VALUES (
        CAST(7 AS bigint), 'track', 'Signed Up', timestamptz '2024-03-01T12:00:00Z',
        timestamptz '2024-03-01T12:00:01Z', 'm-1', 'u1', CAST(NULL AS text), CAST(NULL AS text),
        CAST(NULL AS text), CAST(42 AS bigint), CAST('{"properties": {"plan": "pro"}}' AS jsonb)
    )) AS e(id, type, event_name, event_time, received_at, message_id, user_id, anonymous_id,
            group_id, previous_id, tiebreak, raw)
"""


@pytest.mark.parametrize(
    ("schema", "answer"),
    [
        (FeedItemSchema, FEED_ITEM),
        (ProfileSchema, PROFILE),
        (CustomerSummarySchema, CUSTOMER_LIST_ITEM),
        (GroupMemberSchema, GROUP_MEMBER),
        (GroupSchema, GROUP),
    ],
)
def test_the_schemas_are_the_declarations_keys_in_order(schema: type, answer: Answer) -> None:
    assert list(schema().fields) == [field.name for field in answer.fields]


def test_a_group_member_is_a_customer_list_item_and_when_it_joined() -> None:
    assert GROUP_MEMBER.fields[:-1] == CUSTOMER_LIST_ITEM.fields
    assert GROUP_MEMBER.fields[-1].name == "joined_at"


def test_one_added_field_reaches_the_sql_the_schema_and_the_document(engine: Engine) -> None:
    # What a newcomer writes to add a key to every feed item: one line in FEED_ITEM.
    added = Field("tiebreak", "tiebreak::text", fields.String, "The order of events at one instant.")
    item = dataclasses.replace(FEED_ITEM, name="FeedItemWithTiebreak", fields=(*FEED_ITEM.fields, added))

    with engine.connect() as connection:
        built = json.loads(
            connection.execute(text(_ROW.replace("{item}", item.sql())), {"team": -1}).scalar_one()
        )
    assert built["tiebreak"] == "42"
    assert list(built) == [*(field.name for field in FEED_ITEM.fields), "tiebreak"]
    assert list(item.schema().fields) == list(built)

    spec = APISpec("t", "1", "3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.schema("FeedItemWithTiebreak", schema=item.schema)
    component = spec.to_dict()["components"]["schemas"]["FeedItemWithTiebreak"]
    assert component["properties"]["tiebreak"] == {
        "type": "string",
        "description": "The order of events at one instant.",
    }
    assert "tiebreak" in component["required"]


def test_a_keyword_key_is_its_json_key_on_the_wire() -> None:
    answer = Answer("Span", (Field("from", "1", fields.Integer, nullable=True),))
    assert answer.sql() == "json_build_object(\n    'from', 1\n)"
    assert answer.schema().dump({"from_": None}) == {"from": None}


def test_a_key_the_read_adds_is_documented_and_written_after_postgres_keys(engine: Engine) -> None:
    answer = Answer(
        "Paged",
        (
            Field("n", "41 + 1", fields.Integer),
            Field("next_cursor", None, fields.String, "The next page.", nullable=True),
        ),
    )
    assert "next_cursor" not in answer.sql()
    with engine.connect() as connection:
        built = connection.execute(text(f"SELECT ({answer.sql()})::text")).scalar_one()
    body = answer.completed(built, next_cursor="abc")
    assert json.loads(body) == {"n": 42, "next_cursor": "abc"}
    assert list(json.loads(answer.completed(built, next_cursor=None))) == ["n", "next_cursor"]
    assert answer.schema().dump({"n": 42, "next_cursor": None}) == {"n": 42, "next_cursor": None}
    with pytest.raises(ValueError):
        answer.completed(built)  # every key the read adds, always
    with pytest.raises(TypeError):
        Answer("Backwards", (Field("next_cursor", None, fields.String), Field("n", "1", fields.Integer)))
