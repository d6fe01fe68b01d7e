"""Whether the database is at the newest migration, answered without importing alembic.

/readyz asks it in every web process. Importing alembic (any of its modules) sets up its
autogenerate plugins, which each web worker logged as seven INFO lines, and alembic's
MigrationContext logs two more per check: a migration tool has no business in a web
process. The newest revisions are read from the migration files themselves (each declares
`revision` and `down_revision`, which alembic reads the same way), the database's from
the `alembic_version` table. `store/migrate.py` (alembic) applies migrations.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, text

VERSIONS = Path(__file__).resolve().parent / "migrations" / "versions"


def _declared(path: Path) -> dict[str, object]:
    """A migration file's top-level `revision` and `down_revision` literals."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            continue
        if name in ("revision", "down_revision"):
            found[name] = ast.literal_eval(value)
    return found


@cache
def head_revisions(versions: Path = VERSIONS) -> frozenset[str]:
    """The revisions no other migration revises: the heads alembic upgrades to."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        declared = _declared(path)
        if "revision" not in declared:
            continue
        revisions.add(str(declared["revision"]))
        down = declared.get("down_revision")
        if isinstance(down, (tuple, list)):
            revised.update(str(each) for each in down)
        elif down:
            revised.add(str(down))
    return frozenset(revisions - revised)


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (for /readyz)."""
    with engine.connect() as connection:
        if connection.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
            return False
        current = set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return current == head_revisions()
