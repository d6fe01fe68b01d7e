"""One team's statements inside a fold transaction: the fold's and the eraser's one helper.

Every statement of a batch is scoped to its team (`:team` is always bound), and its
rows come back as plain tuples of whatever the driver made (Any: a column's type is the
statement's, which the caller unpacks and converts), or none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

Row = tuple[Any, ...]


class Batch:
    """The connection (in the caller's transaction) and the team a batch folds."""

    def __init__(self, connection: Connection, team_id: int):
        self.connection = connection
        self.team = team_id

    def sql(self, statement: str, **params: object) -> list[Row]:
        """Run `statement` with `:team` and `params` bound; its rows, or [] when it returns none."""
        result = self.connection.execute(text(statement), {"team": self.team, **params})
        return [tuple(row) for row in result] if result.returns_rows else []
