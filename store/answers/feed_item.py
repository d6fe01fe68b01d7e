"""A feed item: one entry of a customer's timeline, declared once (SPEC §4).

`FEED_ITEM` below is the one declaration: each key's SQL expression over an `events` row
(and `:team`), its response field and its description. From it come the SQL the feed runs
(`feed_item_sql`: Postgres builds each item's JSON text, passed through as it is, so a
page costs Python nothing per item), the marshmallow schema (`FeedItemSchema`) and so the
OpenAPI component `FeedItem`. To add a key to every feed item, add one `Field` to it.

`capped`: as the feed shows an item (at most SHOWN_KEYS keys of properties and traits,
values cut at SHOWN_VALUE characters, `truncated` naming what was left out); else whole
(`GET .../feed/{event_id}`). tests/store/reference.py's `feed_item` is an independent
oracle of the same item in Python, held to it by tests/app/test_customers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from marshmallow import fields, validate

from schemas.api import FEED_TYPES, SHOWN_KEYS, SHOWN_VALUE
from schemas.fields import Instant
from store.answers.declared import Answer, Field, page_schema
from store.statements import iso_sql, object_cut_sql, shown_object_sql, shown_value_sql, value_cut_sql

_JSON_OBJECT = partial(fields.Dict, keys=fields.String(), values=fields.Raw())


def _string_sql(value: str) -> str:
    """A jsonb value when a JSON string: itself when a JSON string, else SQL NULL (JSON null)."""
    return f"CASE WHEN jsonb_typeof({value}) = 'string' THEN {value} END"


def _object_sql(value: str) -> str:
    """A jsonb value when a JSON object: itself when a JSON object, else SQL NULL."""
    return f"CASE WHEN jsonb_typeof({value}) = 'object' THEN {value} END"


_PROPERTIES = _object_sql("(raw -> 'properties')")
_TRAITS = _object_sql("(raw -> 'traits')")


def _shown(value: str, capped: bool) -> str:
    return shown_object_sql(value, SHOWN_KEYS, SHOWN_VALUE) if capped else value


def _cut(value: str) -> str:
    return object_cut_sql(value, SHOWN_KEYS, SHOWN_VALUE)


# The company an identify names in `traits.company` (an object with an id, or a string),
# when it leaves it (`remove: true`, Intercom's convention): its name, else its id.
_COMPANY = "(raw -> 'traits' -> 'company')"
_LEAVES_COMPANY = (
    f"(jsonb_typeof({_COMPANY}) = 'object' AND {_COMPANY} -> 'remove' = 'true'::jsonb "
    f"AND jsonb_typeof({_COMPANY} -> 'id') IN ('string', 'number') AND {_COMPANY} ->> 'id' <> '')"
)
_COMPANY_LABEL = (
    f"CASE WHEN jsonb_typeof({_COMPANY} -> 'name') = 'string' THEN {_COMPANY} ->> 'name' "
    f"ELSE {_COMPANY} ->> 'id' END"
)
_GROUP_LABEL = (
    "CASE WHEN jsonb_typeof(raw -> 'traits' -> 'name') = 'string' "
    "THEN raw -> 'traits' ->> 'name' ELSE raw ->> 'groupId' END"
)

# What happened, in an agent's words. A label is the JSON value's text (`->>`: a string as
# it is, a number as JSON writes it); ingest makes every groupId and userId one of the two.
_SUMMARY = f"""CASE type
        WHEN 'track' THEN COALESCE(event_name, '')
        WHEN 'page' THEN CASE WHEN event_name <> '' THEN 'Viewed page ' || event_name ELSE 'Viewed a page' END
        WHEN 'screen' THEN
            CASE WHEN event_name <> '' THEN 'Viewed screen ' || event_name ELSE 'Viewed a screen' END
        WHEN 'identify' THEN CASE WHEN {_LEAVES_COMPANY}
            THEN 'Left group ' || ({_COMPANY_LABEL}) ELSE 'Traits updated' END
        WHEN 'group' THEN concat('Joined group ', {_GROUP_LABEL})
        WHEN 'alias' THEN concat('Identified as ', raw ->> 'userId')
        ELSE type END"""


def _page_sql(key: str) -> str:
    """A page's `key` (url, title, path, referrer): context.page's, else, for a page call,
    its properties' (server-side `page` calls carry them there)."""
    page = _string_sql(f"(raw -> 'context' -> 'page' -> '{key}')")
    properties = _string_sql(f"(raw -> 'properties' -> '{key}')")
    return f"COALESCE({page}, CASE WHEN type = 'page' THEN {properties} END)"


FEED_CONTEXT = Answer(
    "FeedContext",  # what the event's `context` says about where it happened; null where it does not say
    (
        Field(
            "page_url",
            _page_sql("url"),
            fields.String,
            "context.page.url, else a page's properties.url.",
            nullable=True,
        ),
        Field("page_title", _page_sql("title"), fields.String, "Likewise `title`.", nullable=True),
        Field("page_path", _page_sql("path"), fields.String, "Likewise `path`.", nullable=True),
        Field("page_referrer", _page_sql("referrer"), fields.String, "Likewise `referrer`.", nullable=True),
        Field("user_agent", _string_sql("(raw -> 'context' -> 'userAgent')"), fields.String, nullable=True),
        Field("ip", _string_sql("(raw -> 'context' -> 'ip')"), fields.String, nullable=True),
        Field(
            "locale",
            _string_sql("(raw -> 'context' -> 'locale')"),
            fields.String,
            "The language the customer's device or browser uses, e.g. `en-US`: the one to answer in.",
            nullable=True,
        ),
        Field(
            "library",
            _object_sql("(raw -> 'context' -> 'library')"),
            _JSON_OBJECT,
            "The sending library, e.g. {name, version}.",
            nullable=True,
        ),
    ),
)


def _change_value(column: str) -> Callable[[bool], str]:
    return lambda capped: shown_value_sql(column, SHOWN_VALUE) if capped else column


# One trait an identify changed (over `h`, its trait_history row, and `p`, the customer's
# value just before it by event time).
TRAIT_CHANGE = Answer(
    "TraitChange",
    (
        Field("trait", "h.key", fields.String, "The key as the identify spelled it."),
        Field("from", _change_value("p.value"), fields.Raw, "null for a first value.", nullable=True),
        Field("to", _change_value("h.value"), fields.Raw, nullable=True),
    ),
)


# What an identify changed: each trait the event set (trait_history, written by the fold)
# against the customer's value just before it by (event time, tiebreak), one probe of
# ix_trait_history_previous per trait, in the primary key's order (normalised key, so no
# sort); only traits whose value differs (a first value has `from` null). Order-independent:
# it reads the stored events' history, not their arrival. Capped (the feed's items), it
# examines the event's first SHOWN_KEYS traits only, each value cut as `shown_value_sql`.
def _changes_sql(capped: bool) -> str:
    shown = "LIMIT " + str(SHOWN_KEYS) if capped else ""
    return f"""CASE WHEN type = 'identify' THEN COALESCE((
        SELECT json_agg({TRAIT_CHANGE.sql(capped)} ORDER BY h.key_norm)
        FROM (
            SELECT set_here.* FROM trait_history set_here
            WHERE set_here.team_id = :team AND set_here.event_id = id
            ORDER BY set_here.key_norm {shown}
        ) h
        LEFT JOIN LATERAL (
            SELECT q.value FROM trait_history q
            WHERE q.team_id = h.team_id AND q.customer_id = h.customer_id AND q.key_norm = h.key_norm
              AND (q.event_time, q.tiebreak) < (h.event_time, h.tiebreak)
            ORDER BY q.event_time DESC, q.tiebreak DESC
            LIMIT 1
        ) p ON true
        WHERE p.value IS NULL OR p.value <> h.value
    ), '[]') END"""


# Whether capped changes leave something out: the event set more traits than it examines,
# or a value it shows as `to` was cut (a `from` is the `to` of an earlier item, marked there).
_CHANGES_CUT_SQL = f"""(SELECT count(*) > {SHOWN_KEYS}
               OR COALESCE(bool_or({value_cut_sql("set_here.value", SHOWN_VALUE)}), false)
        FROM (
            SELECT value FROM trait_history
            WHERE team_id = :team AND event_id = id ORDER BY key_norm LIMIT {SHOWN_KEYS + 1}
        ) set_here)"""


# An identify whose traits and context.traits are short together (written, under 8
# characters a key for SHOWN_KEYS + 1 keys, and under SHOWN_VALUE) surely set at most
# SHOWN_KEYS traits, none with a long value: its changes are whole without reading them.
_SETS_FEW_TRAITS = (
    "(length(COALESCE(raw -> 'traits', '{}')::text)"
    " + length(COALESCE(raw -> 'context' -> 'traits', '{}')::text)"
    f" < {min(8 * (SHOWN_KEYS + 1), SHOWN_VALUE)})"
)


def _truncated_sql(capped: bool) -> str:
    if not capped:
        return "'[]'::json"
    return f"""to_json(array_remove(ARRAY[
        CASE WHEN type NOT IN ('identify', 'group', 'alias') AND {_cut(_PROPERTIES)} THEN 'properties' END,
        CASE WHEN type IN ('identify', 'group') AND {_cut(_TRAITS)} THEN 'traits' END,
        CASE WHEN type = 'identify' AND CASE WHEN {_SETS_FEW_TRAITS} THEN false ELSE {_CHANGES_CUT_SQL} END
            THEN 'changes' END
    ], NULL))"""


# One entry of a timeline. Every key is always present; null where it does not apply.
FEED_ITEM = Answer(
    "FeedItem",
    (
        Field("id", "id::text", fields.String),
        Field("type", "type", partial(fields.String, validate=validate.OneOf(FEED_TYPES))),
        Field("summary", _SUMMARY, fields.String, "A one-line label for agents."),
        Field(
            "event",
            "CASE WHEN type = 'track' THEN event_name END",
            fields.String,
            "Track event name.",
            nullable=True,
        ),
        Field(
            "name",
            "CASE WHEN type IN ('page', 'screen') THEN event_name END",
            fields.String,
            "Page or screen name.",
            nullable=True,
        ),
        Field("timestamp", iso_sql("event_time"), Instant, "Event time: the feed's order."),
        Field("received_at", iso_sql("received_at"), Instant),
        Field("message_id", "message_id", fields.String),
        Field("user_id", "user_id", fields.String, nullable=True),
        Field("anonymous_id", "anonymous_id", fields.String, nullable=True),
        Field(
            "properties",
            lambda capped: (
                f"CASE WHEN type NOT IN ('identify', 'group', 'alias') "
                f"THEN COALESCE({_shown(_PROPERTIES, capped)}, '{{}}'::jsonb) END"
            ),
            _JSON_OBJECT,
            "track, page and screen: the event's properties.",
            nullable=True,
        ),
        Field(
            "traits",
            lambda capped: (
                f"CASE WHEN type IN ('identify', 'group') "
                f"THEN COALESCE({_shown(_TRAITS, capped)}, '{{}}'::jsonb) END"
            ),
            _JSON_OBJECT,
            "identify and group: the traits the call carried.",
            nullable=True,
        ),
        Field("group_id", "CASE WHEN type = 'group' THEN group_id END", fields.String, nullable=True),
        Field(
            "previous_id",
            "CASE WHEN type = 'alias' THEN previous_id END",
            fields.String,
            "alias only.",
            nullable=True,
        ),
        Field(
            "changes",
            _changes_sql,
            partial(fields.List, fields.Nested(TRAIT_CHANGE.schema)),
            "identify only: each trait it set whose value differs from the customer's "
            "value just before it by event time (a first value has `from` null).",
            nullable=True,
        ),
        Field("context", FEED_CONTEXT),
        Field(
            "truncated",
            _truncated_sql,
            partial(fields.List, fields.String(validate=validate.OneOf(("properties", "traits", "changes")))),
            f"What this item shows only in part: `properties` and `traits` show at most "
            f"{SHOWN_KEYS} keys, each value cut at {SHOWN_VALUE} characters; `changes` examines the "
            f"first {SHOWN_KEYS} traits the identify set. `GET /customers/{{id}}/feed/{{item id}}` "
            "answers the item whole. [] when nothing was cut.",
        ),
    ),
)

FeedItemSchema = FEED_ITEM.schema
FeedContextSchema = FEED_CONTEXT.schema
TraitChangeSchema = TRAIT_CHANGE.schema


def feed_item_sql(capped: bool) -> str:
    """The SQL expression of one feed item's JSON, over an `events` row (and `:team`)."""
    return FEED_ITEM.sql(capped)


# The feed's items: capped.
FEED_ITEM_SQL = feed_item_sql(capped=True)


# A page of the feed: built as `{"data": [items...], "next_cursor": ...}` around Postgres's items.
FeedPageSchema = page_schema(
    "FeedPage", FeedItemSchema, "null at the end. A page may be short, even empty, yet have one."
)
