"""SQL building blocks the read side shares: instants as the API writes them, prepared text,
trait keys as the fold compares them.

The profile and the feed are built as JSON by Postgres (`store/customers.py`,
`store/feed.py`): both write instants through `iso_sql`, and both bind their parameters
through `prepared`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sqlalchemy import TextClause, text


def normalised_key(key: str) -> str:
    """A trait key as compared, in SQL: lower case without spaces, `_`, `.` or `-`.

    So "First Name", "first_name" and "firstName" are one trait; a key made only of
    those characters is kept as it is. The fold keys traits by it (`workers/derived.py`);
    the read side finds `?include=` traits by it.
    """
    return f"""COALESCE(NULLIF(regexp_replace(lower({key}), '[[:space:]_.-]+', '', 'g'), ''),
                        {key})"""


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


@lru_cache(maxsize=512)
def prepared(sql: str) -> tuple[TextClause, tuple[str, ...]]:
    """The statement for `sql` and the parameters it binds, made once per shape of query.

    Parsing the page statement for its binds costs ~0.3 ms; there are a few dozen shapes.
    """
    return text(sql), tuple(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", sql)))
