"""Which ids count as a person's identity.

Junk ids are what broken SDK integrations send when they have no id: the strings
`null`, `undefined`, `0`, `anonymous`, or an empty one. They would merge every visitor
of a team into one customer, so they are ignored as identities (the event is kept when
it has another, real id).
"""

from __future__ import annotations

JUNK_IDS = frozenset({"", "null", "undefined", "0", "anonymous", "none", "nil", "[object object]"})

# What is trimmed before comparing: ASCII whitespace, the same in Python and in SQL.
_SPACE = " \t\n\r\x0b\x0c"

# The same rule in SQL, for statements that pick a visitor's own (no userId) events.
SQL_IS_JUNK = (
    "lower(btrim({column}, E' \\t\\n\\r\\x0b\\x0c')) "
    "IN ('', 'null', 'undefined', '0', 'anonymous', 'none', 'nil', '[object object]')"
)


def usable_id(value: str | None) -> str | None:
    """The id if it identifies someone, else None."""
    if value is None or value.strip(_SPACE).lower() in JUNK_IDS:
        return None
    return value
