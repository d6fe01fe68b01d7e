"""Trait keys: the one rule that says which spellings are one key, and the bounds on the
trait names an event may carry (the fold makes index keys and profile columns of them).

`normalise_trait_key` and `normalised_key_sql` are the rule twice, in Python (ingest's
bounds, the tests' model) and in SQL (the fold, the read API's `include`): one module, so
that a change to one is made beside the other.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError

# Trait names become index keys when folded (a Postgres btree entry holds ~2.7 KB at most):
# a longer name would make the event impossible to fold.
MAX_TRAIT_NAME = 255
# The email and name traits (firstName + lastName make a name too) become the customer's
# indexed email and name columns: bounded so that even four-byte characters fit an entry.
MAX_PROFILE_TRAIT = 255
# Trait keys one event may carry, `traits` and `context.traits` together: the fold writes
# a customer (or group) trait and a `trait_history` row per key, so this bounds what one
# event makes it write. Amplitude's SDKs refuse more than 1,000 user properties a call,
# Mixpanel takes 255 properties an event, Segment's own source schema keeps 300 traits
# by default (docs/ingest.md has the references).
MAX_TRAIT_KEYS = 1_000
PROFILE_TRAITS = frozenset(("email", "name", "firstname", "lastname"))


# Trait-key normalisation, the one rule (docs/fold.md, "Traits"): ASCII letters lower-cased,
# ASCII whitespace, `_`, `.` and `-` removed; a key made only of those is kept as it is.
# Written here twice, in Python and as SQL, with nothing left to a locale: Python's
# Unicode `lower()` and Postgres's (the database's locale) disagree (`"EMAİL".lower()` is
# `emai̇l` in Python, `email` under glibc), and a key that passed the profile-trait bound
# here as not-`email` became the customer's indexed email in the fold (issue 22).
# `lower(... COLLATE "C")` folds ASCII only, and under the C collation `[[:space:]]` is
# ASCII whitespace only; tests/schemas/test_trait_keys.py holds the two to one answer
# over every code point.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_KEY_SEPARATORS = re.compile("[ \t\n\v\f\r_.-]+")


def normalise_trait_key(key: str) -> str:
    """A trait key as the fold compares it: `firstName` = `first_name` = `First Name`."""
    return _KEY_SEPARATORS.sub("", key.translate(_ASCII_LOWER)) or key


def normalised_key_sql(key: str) -> str:
    """`normalise_trait_key` in SQL, of the text expression `key`."""
    return f"""COALESCE(NULLIF(regexp_replace(lower(({key}) COLLATE "C"), '[[:space:]_.-]+', '', 'g'), ''),
                        {key})"""


def is_profile_trait(name: str) -> bool:
    """Whether the fold keeps this trait as the email or name (`normalise_trait_key`)."""
    return normalise_trait_key(name) in PROFILE_TRAITS


def check_trait_names(traits: dict[str, Any]) -> None:
    """Raise ValidationError if a trait name is longer than MAX_TRAIT_NAME, or an email or
    name trait (as the fold normalises its key) is a string longer than MAX_PROFILE_TRAIT."""
    for name, value in traits.items():
        if len(name) > MAX_TRAIT_NAME:
            raise ValidationError(
                f"Trait names may be at most {MAX_TRAIT_NAME} characters; {name[:30]!r}... has {len(name)}."
            )
        if type(value) is str and len(value) > MAX_PROFILE_TRAIT and is_profile_trait(name):
            raise ValidationError(
                f"The {name[:30]!r} trait may be at most {MAX_PROFILE_TRAIT} characters; it has {len(value)}."
            )


def context_traits(context: Any) -> Any:
    return context.get("traits") if type(context) is dict else None


def trait_key_count(traits: Any) -> int:
    """How many trait keys `traits` holds (0 unless an object)."""
    return len(traits) if type(traits) is dict else 0
