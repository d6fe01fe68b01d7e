"""How store/feed.py sends its statements: `:name` parameters as Postgres's `$n`."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from store.feed import first_row, numbered


def test_numbered_writes_each_parameter_once_and_leaves_casts_alone() -> None:
    sql = "SELECT :b::text, x::int FROM t WHERE a = :a AND b = :b AND c > :a_2 - 1"
    statement, names = numbered(sql)
    assert names == ("b", "a", "a_2")
    assert statement == "SELECT $1::text, x::int FROM t WHERE a = $2 AND b = $1 AND c > $3 - 1"


def test_first_row_binds_by_name_and_leaves_the_connection_as_it_was(engine: Engine) -> None:
    with engine.connect() as connection:
        before = connection.connection.driver_connection.cursor_factory  # type: ignore[union-attr]
        row = first_row(
            connection,
            "SELECT :word::text AS word, :n::int + :n::int AS twice",
            {"n": 21, "word": "x", "z": 0},
        )
        assert row is not None and (row.word, row.twice) == ("x", 42)
        assert first_row(connection, "SELECT 1 WHERE :n::int < 0", {"n": 1}) is None
        assert connection.connection.driver_connection.cursor_factory is before  # type: ignore[union-attr]
        assert connection.exec_driver_sql("SELECT %(v)s::int", {"v": 7}).scalar_one() == 7


def test_a_failing_statement_is_sqlalchemys_error_and_restores_the_cursors(engine: Engine) -> None:
    with engine.connect() as connection:
        before = connection.connection.driver_connection.cursor_factory  # type: ignore[union-attr]
        with pytest.raises(DBAPIError):
            first_row(connection, "SELECT 1 / :zero::int", {"zero": 0})
        assert connection.connection.driver_connection.cursor_factory is before  # type: ignore[union-attr]
