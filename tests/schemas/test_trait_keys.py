"""Trait-key normalisation is one rule: Python (ingest's bounds) and Postgres (the fold's
keys) give the same answer for every key, whatever the database's locale (issue 22).

The keys that matter most are those one character away from a profile trait (`email`,
`name`, `firstName`, `lastName`): those reach the customer's indexed email and name
columns, so ingest bounds their values; a key the two sides normalised differently
(`EMAİL`, U+0130) passed the bound and then failed the fold on the index.
"""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from schemas.trait_keys import PROFILE_TRAITS, normalise_trait_key, normalised_key_sql

# Keys made of a profile trait with one character inserted, replacing a letter, or alone.
# (ASCII letters only around the character: lower() of them is the same on both sides.)
TEMPLATES = [("EMA", "L"), ("e", "mail"), ("", "name"), ("first", "Name"), ("last", "name"), ("", "")]


def sql_norms(engine: Engine, keys: list[str]) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    f"SELECT {normalised_key_sql('k')} "
                    "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS x(k, n) ORDER BY n"
                ),
                {"keys": keys},
            ).scalars()
        )


def test_every_code_point_in_a_profile_trait_key_normalises_alike_in_python_and_postgres(
    engine: Engine,
) -> None:
    # Every code point Postgres text holds (no NUL, no surrogates). Postgres answers only
    # where its rule changed the character (it lower-cased or removed it); Python must
    # change exactly those, the same way.
    storable = [c for c in range(1, sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    for prefix, suffix in TEMPLATES:
        with engine.connect() as connection:
            changed: dict[int, str] = dict(
                connection.execute(
                    text(
                        f"""
                        SELECT c, {normalised_key_sql("k")} FROM (
                            SELECT c, :prefix || chr(c) || :suffix AS k
                            FROM generate_series(1, {sys.maxunicode}) AS c
                            WHERE c NOT BETWEEN 55296 AND 57343) keys
                        WHERE {normalised_key_sql("k")} <> lower(:prefix) || chr(c) || lower(:suffix)
                        """
                    ),
                    {"prefix": prefix, "suffix": suffix},
                ).all()
            )
        python = {
            c: norm
            for c in storable
            if (norm := normalise_trait_key(prefix + chr(c) + suffix))
            != prefix.lower() + chr(c) + suffix.lower()
        }
        assert changed == python, (prefix, suffix)
    # The recipe of issue 22: not the email on either side.
    assert normalise_trait_key("EMA\u0130L") not in PROFILE_TRAITS
    assert sql_norms(engine, ["EMA\u0130L"]) == [normalise_trait_key("EMA\u0130L")]


@settings(max_examples=30, deadline=None)
@given(
    keys=st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")), min_size=1)
)
def test_any_key_normalises_alike_in_python_and_postgres(engine: Engine, keys: list[str]) -> None:
    assert sql_norms(engine, keys) == [normalise_trait_key(k) for k in keys]


def test_the_rule_joins_the_spellings_it_promises() -> None:
    spellings = ["firstName", "first_name", "First Name", "first-name", "FIRST.NAME", " first\tname "]
    assert {normalise_trait_key(k) for k in spellings} == {"firstname"}
    assert normalise_trait_key("__") == "__"  # a key made only of separators is kept as it is
