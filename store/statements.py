"""SQL building blocks the read side shares: instants as the API writes them, prepared text,
trait keys as the fold compares them.

The profile and the feed are built as JSON by Postgres (`store/customers.py`,
`store/feed.py`): both write instants through `iso_sql` and show wide objects through
`shown_object_sql` / `object_cut_sql` (the caps of docs/read-api.md, "How wide an answer
is"). The profile and the live stream bind
their parameters through `prepared`; the feed page sends its statements with `$n`
placeholders (`store.feed.first_row`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from sqlalchemy import TextClause, text

from schemas.trait_keys import normalised_key_sql


def normalised_key(key: str) -> str:
    """A trait key as compared, in SQL: `schemas.trait_keys.normalised_key_sql`, the one rule
    (ASCII lower case without spaces, `_`, `.` or `-`; docs/fold.md, "Traits").

    The fold keys traits by it (`store/fold/derived.py`); the read side finds `?include=`
    traits by it.
    """
    return normalised_key_sql(key)


def iso_sql(column: str) -> str:
    """`schemas.fields.utc_iso(column)` in SQL: UTC with Z, microseconds only when not zero.

    The colons are quoted text in the format so that no `:name` appears in the statement
    outside its parameters (pgbench, which runs it in bench/, would take `:MI` for one).
    """
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN to_char({utc}, 'US') = '000000' "
        f"""THEN to_char({utc}, 'YYYY-MM-DD"T"HH24":"MI":"SS"Z"') """
        f"""ELSE to_char({utc}, 'YYYY-MM-DD"T"HH24":"MI":"SS.US"Z"') END"""
    )


def shown_value_sql(value: str, length: int) -> str:
    """A jsonb value as an answer shows it: a string over `length` characters cut to its
    first `length`; an object or array whose JSON text is over `length` characters, that
    text's first `length` characters (a string); anything else as it is."""
    return (
        f"CASE WHEN jsonb_typeof({value}) = 'string' AND length({value} #>> '{{}}') > {length} "
        f"THEN to_jsonb(left({value} #>> '{{}}', {length})) "
        f"WHEN jsonb_typeof({value}) IN ('object', 'array') AND length({value}::text) > {length} "
        f"THEN to_jsonb(left({value}::text, {length})) ELSE {value} END"
    )


def value_cut_sql(value: str, length: int) -> str:
    """Whether `shown_value_sql` cuts this value."""
    return (
        f"(CASE jsonb_typeof({value}) WHEN 'string' THEN length({value} #>> '{{}}') "
        f"WHEN 'object' THEN length({value}::text) WHEN 'array' THEN length({value}::text) "
        f"ELSE 0 END > {length})"
    )


def _fits_sql(value: str, keys: int, length: int) -> str:
    """Whether a jsonb object surely fits its caps, from its text's length alone (no
    expansion): an object of more than `keys` keys writes at least 8 characters a key
    (`"": 0, `), and a value's text is part of the object's. Most objects pass."""
    return f"(length({value}::text) < {min(8 * (keys + 1), length)})"


def shown_object_sql(value: str, keys: int, length: int) -> str:
    """A jsonb object (or NULL) as an answer shows it: its first `keys` keys in jsonb's own
    order (shorter keys first, then bytewise: the order its text has), each value through
    `shown_value_sql`. The whole object when nothing is over a cap; NULL stays NULL."""
    return f"""CASE WHEN {_fits_sql(value, keys, length)} THEN {value} ELSE (
               SELECT jsonb_object_agg(shown.key, {shown_value_sql("shown.value", length)})
               FROM (SELECT key, value FROM jsonb_each({value}) LIMIT {keys}) shown) END"""


def object_cut_sql(value: str, keys: int, length: int) -> str:
    """Whether `shown_object_sql` leaves something out of this object (a key or a value's tail)."""
    return f"""(NOT {_fits_sql(value, keys, length)} AND (
                (SELECT count(*) FROM jsonb_object_keys({value})) > {keys} OR EXISTS (
                SELECT 1 FROM (SELECT value FROM jsonb_each({value}) LIMIT {keys}) shown
                WHERE {value_cut_sql("shown.value", length)})))"""


@lru_cache(maxsize=512)
def prepared(sql: str) -> tuple[TextClause, tuple[str, ...]]:
    """The statement for `sql` and the parameters it binds, made once per shape of query.

    Parsing the page statement for its binds costs ~0.3 ms; there are a few dozen shapes.
    """
    return text(sql), tuple(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", sql)))
