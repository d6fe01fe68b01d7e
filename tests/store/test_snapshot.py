"""A read chooses its own snapshot (store/snapshot.py), whatever its caller did before."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from store.snapshot import snapshot


def _state(connection: Connection) -> tuple[str, str, bool]:
    """(isolation, read only, whether two statements share one transaction)."""
    isolation = connection.execute(text("SHOW transaction_isolation")).scalar_one()
    read_only = connection.execute(text("SHOW transaction_read_only")).scalar_one()
    first = connection.execute(text("SELECT statement_timestamp(), transaction_timestamp()")).one()
    second = connection.execute(text("SELECT transaction_timestamp()")).scalar_one()
    return isolation, read_only, first[1] == second


def test_several_statements_share_one_read_only_repeatable_read_transaction(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # the caller's READ COMMITTED statement
        with snapshot(connection, several=True):
            assert _state(connection) == ("repeatable read", "on", True)


def test_one_statement_runs_in_autocommit(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        with snapshot(connection, several=False):
            assert _state(connection) == ("read committed", "off", False)
        # left in autocommit: the caller's next statement begins no transaction either
        assert connection.get_execution_options()["isolation_level"] == "AUTOCOMMIT"


def test_a_callers_repeatable_read_transaction_is_kept(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        began = connection.execute(text("SELECT transaction_timestamp()")).scalar_one()
        for several in (False, True):
            with snapshot(connection, several=several):
                assert _state(connection)[::2] == ("repeatable read", True)
                same = connection.execute(text("SELECT transaction_timestamp()")).scalar_one()
                assert same == began, "the caller's own transaction"
        connection.rollback()
