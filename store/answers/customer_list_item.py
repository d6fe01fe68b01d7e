"""A customer as a list shows it (search, a group's members), declared once (SPEC §4).

`CUSTOMER_LIST_ITEM` below is the declaration: each key's SQL expression over a
`customers` row `c`, its response field and its description. From it come the SQL
`store.customers.search_customers` and `store.groups.read_group` run (Postgres builds each
item's JSON, a page costs Python nothing per item), `CustomerSummarySchema` and so the
OpenAPI component `CustomerSummary`. To add a key to every customer of a list, add one
`Field` to it. tests/store/reference.py's `customer_list_item` is an independent oracle of
the same item, held to it by tests/store/test_answers.py.
"""

from __future__ import annotations

from functools import partial

from marshmallow import fields

from schemas.fields import Instant
from store.answers.declared import Answer, Field, page_schema
from store.statements import iso_sql

_STRINGS = partial(fields.List, fields.String())


def _identities_sql(kind: str) -> str:
    """The customer's ids of one kind (`= 'user'`, or `<> 'user'`), all of them, by value
    (one probe of ix_identities_customer)."""
    return f"""COALESCE((
            SELECT json_agg(i.value ORDER BY i.kind, i.value) FROM identities i
            WHERE i.team_id = c.team_id AND i.customer_id = c.id AND i.kind {kind}), '[]')"""


CUSTOMER_LIST_ITEM = Answer(
    "CustomerSummary",  # a customer in a list
    (
        Field("id", "c.id::text", fields.String),
        Field("user_ids", _identities_sql("= 'user'"), _STRINGS),
        Field("anonymous_ids", _identities_sql("<> 'user'"), _STRINGS),
        Field("email", "c.email", fields.String, nullable=True),
        Field("name", "c.name", fields.String, nullable=True),
        Field("first_seen", iso_sql("c.first_seen"), Instant, nullable=True),
        Field("last_seen", iso_sql("c.last_seen"), Instant, nullable=True),
        Field("event_count", "c.event_count", fields.Integer),
    ),
)

CustomerSummarySchema = CUSTOMER_LIST_ITEM.schema

# A page of customers (`GET /customers`): built as `{"data": [items...], "next_cursor": ...}`
# around Postgres's items.
CustomerListSchema = page_schema("CustomerList", CustomerSummarySchema)
