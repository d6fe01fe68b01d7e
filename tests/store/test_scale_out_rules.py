"""The schema stays distributable by team (docs/scaling.md, "Scale-out").

Citus distributes a table by one column and imposes three rules on what the schema may
say, each checked here against the migrated database and the code, so that a change
that would close the way to distributing by `team_id` fails here first:

- every primary key and unique constraint or index of a team-scoped table (one with a
  `team_id` column) leads with `team_id`: a shard can then check uniqueness alone;
- every foreign key between team-scoped tables carries `team_id` (composite), so that
  both rows sit on the same shard; a key to a reference table is fine;
- no `ON CONFLICT ... DO UPDATE` writes `now()` (or another volatile clock): Citus
  refuses volatile functions in the SET of an upsert on a distributed table (a value
  computed by the caller, or `excluded.*`, is what the code uses).
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[2]

# Reference tables: small, copied to every node, not distributed. A key is looked up by
# its digest before its team is known (the key names the team), so `api_keys` cannot be
# distributed by team; `teams` is the distribution key's own table.
REFERENCE_TABLES = frozenset({"teams", "api_keys"})

_TEAM_TABLES = """
    SELECT c.oid, c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
      AND c.relname <> ALL (:reference)
      AND EXISTS (SELECT 1 FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'team_id' AND NOT a.attisdropped)
"""
_REFERENCE = {"reference": sorted(REFERENCE_TABLES)}


def test_the_schema_has_team_scoped_tables(engine: Engine) -> None:
    """The checks below read real tables (a renamed column would make them vacuous)."""
    with engine.connect() as connection:
        names = {row.relname for row in connection.execute(text(_TEAM_TABLES), _REFERENCE)}
    assert {"events", "customers", "identities", "trait_history"} <= names


def test_every_unique_key_of_a_team_scoped_table_leads_with_team_id(engine: Engine) -> None:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"""
            WITH team_tables AS ({_TEAM_TABLES})
            SELECT t.relname AS table_name, i.relname AS index_name,
                   (SELECT a.attname FROM pg_attribute a
                    WHERE a.attrelid = t.oid AND a.attnum = x.indkey[0]) AS first_column
            FROM team_tables t
            JOIN pg_index x ON x.indrelid = t.oid AND x.indisunique
            JOIN pg_class i ON i.oid = x.indexrelid
            """),
            _REFERENCE,
        ).all()
    assert rows, "no unique index found on a team-scoped table"
    wrong = sorted(
        f"{r.table_name}.{r.index_name} leads with {r.first_column}"
        for r in rows
        if r.first_column != "team_id"
    )
    assert wrong == []


def test_every_foreign_key_between_team_scoped_tables_carries_team_id(engine: Engine) -> None:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"""
            WITH team_tables AS ({_TEAM_TABLES})
            SELECT k.conname, t.relname AS table_name, r.relname AS referenced,
                   ARRAY(SELECT a.attname FROM pg_attribute a
                         WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)) AS columns,
                   ARRAY(SELECT a.attname FROM pg_attribute a
                         WHERE a.attrelid = k.confrelid AND a.attnum = ANY (k.confkey)) AS referenced_columns
            FROM pg_constraint k
            JOIN team_tables t ON t.oid = k.conrelid
            JOIN pg_class r ON r.oid = k.confrelid
            WHERE k.contype = 'f'
            """),
            _REFERENCE,
        ).all()
    wrong = sorted(
        f"{r.table_name}.{r.conname} -> {r.referenced}{tuple(r.referenced_columns)}"
        for r in rows
        if r.referenced not in REFERENCE_TABLES
        and not ("team_id" in r.columns and "team_id" in r.referenced_columns)
    )
    assert wrong == []


_UPSERT = re.compile(r"ON\s+CONFLICT\b.*?\bDO\s+UPDATE\b(?P<set>.*?)(?:\"\"\"|RETURNING\b|;|\Z)", re.S | re.I)
_CLOCK = re.compile(
    r"\b(now\s*\(|current_timestamp\b|clock_timestamp\s*\(|statement_timestamp\s*\(|localtimestamp\b)", re.I
)


def upserts_writing_a_clock(source: str) -> list[str]:
    """The `DO UPDATE` clauses in `source` that write a volatile clock."""
    return [m.group("set").strip() for m in _UPSERT.finditer(source) if _CLOCK.search(m.group("set"))]


def test_the_upsert_scan_finds_a_clock_written_by_an_upsert() -> None:
    """The scan below can fail: it sees `now()` in an upsert's SET, and not elsewhere."""
    assert upserts_writing_a_clock('"""INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET at = now()"""')
    assert upserts_writing_a_clock("ON CONFLICT (a) DO UPDATE SET seen = CURRENT_TIMESTAMP RETURNING id")
    assert not upserts_writing_a_clock('"""ON CONFLICT (a) DO UPDATE SET at = excluded.at""" ; x = now()')


def test_no_upsert_writes_now() -> None:
    sources = [
        path
        for folder in ("store", "workers", "app")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "migrations" not in path.parts
    ]
    assert len(sources) > 20
    found = {
        str(path.relative_to(ROOT)): clauses
        for path in sources
        if (clauses := upserts_writing_a_clock(path.read_text()))
    }
    assert found == {}
