"""A read's snapshot, chosen by the read itself: no caller picks an isolation level.

A read that answers in one statement needs no transaction: the statement is its own
snapshot, and in autocommit it costs one round trip (no BEGIN, no ROLLBACK). A read of
several statements that must agree (the feed's page and the probe of where its scan
ended) runs them in one REPEATABLE READ, READ ONLY transaction.

What the caller did on the connection before decides nothing, with one exception:
- nothing, or statements in autocommit (a lookup of the customer, the profile): the read
  chooses as above;
- statements in a READ COMMITTED transaction (a plain connection's default): that
  transaction is ended (committed: the read side's connections only read) and the read
  chooses as above;
- a REPEATABLE READ or SERIALIZABLE transaction the caller holds (a test reading rows it
  has not committed): the read runs inside it, in its one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

_ONE_SNAPSHOT = ("REPEATABLE READ", "SERIALIZABLE")


@contextmanager
def snapshot(connection: Connection, *, several: bool) -> Iterator[Connection]:
    """The connection, in autocommit for one statement, or in one REPEATABLE READ
    transaction for `several`; left in autocommit afterwards (see the module's docstring)."""
    level = connection.get_execution_options().get("isolation_level") or connection.default_isolation_level
    if connection.in_transaction():
        if level in _ONE_SNAPSHOT:
            yield connection
            return
        connection.commit()  # READ COMMITTED's reads, or autocommit's marker (nothing on the server)
    if not several:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection
        return
    connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    try:
        with connection.begin():
            yield connection
    finally:
        connection.execution_options(isolation_level="AUTOCOMMIT", postgresql_readonly=False)
