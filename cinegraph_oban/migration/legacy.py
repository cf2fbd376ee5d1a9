"""Cinegraph's two legacy import tables: their exact shape (as the original Ecto migrations made
them), creating them, writing a row as the old worker did, and which of them a schema holds.

`legacy_kinds(conn, schema)` names each of `failed_imdb_lookups` and `skipped_imports` that
exists under `schema` with what it is ("a table", "a view", ...); `cinegraph-oban schema install
--legacy-tables` refuses to create them over any of these, and `cinegraph-oban export` exports
only real tables.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cinegraph_oban.db.connections import to_psycopg
from cinegraph_oban.meta.records import FailedLookup, SkippedImport
from cinegraph_oban.sql import builder

__all__ = [
    "EXPECTED_COLUMNS",
    "LEGACY_TABLES",
    "RELATION_KINDS",
    "create_legacy_tables",
    "insert_legacy_row",
    "legacy_kinds",
    "relation_kind",
]


LEGACY_TABLES = ("failed_imdb_lookups", "skipped_imports")


#: column -> (type, NOT NULL, default), as the original Ecto migrations created them.
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "failed_imdb_lookups": {
        "id": ("bigint", True, "nextval('{seq}'::regclass)"),
        "imdb_id": ("character varying(255)", True, None),
        "title": ("character varying(255)", False, None),
        "year": ("integer", False, None),
        "source": ("character varying(255)", True, None),
        "source_key": ("character varying(255)", False, None),
        "reason": ("character varying(255)", True, None),
        "metadata": ("jsonb", False, "'{}'::jsonb"),
        "retry_count": ("integer", False, "0"),
        "last_retry_at": ("timestamp(0) without time zone", False, None),
        "inserted_at": ("timestamp(0) without time zone", True, None),
        "updated_at": ("timestamp(0) without time zone", True, None),
    },
    "skipped_imports": {
        "id": ("bigint", True, "nextval('{seq}'::regclass)"),
        "tmdb_id": ("integer", True, None),
        "title": ("character varying(255)", False, None),
        "reason": ("character varying(255)", False, None),
        "criteria_failed": ("jsonb", False, None),
        "checked_at": ("timestamp without time zone", False, "now()"),
        "inserted_at": ("timestamp without time zone", True, None),
    },
}


def create_legacy_tables(conn: psycopg.Connection[Any], schema: str = "public") -> None:
    """Create both legacy tables exactly as the original Ecto migrations did."""
    conn = to_psycopg(conn)
    for table in LEGACY_TABLES:
        for statement in builder.statements(f"legacy/create_{table}", schema=schema):
            conn.execute(statement.encode(), {})


def relation_kind(conn: psycopg.Connection[Any], schema: str, name: str) -> str | None:
    """pg_class.relkind of `schema.name` ('r' for a table, 'v' for a view, ...), or None if absent."""
    conn = to_psycopg(conn)
    row = conn.execute(builder.sql("migration/relation_kind"), {"schema": schema, "name": name}).fetchone()
    return row[0] if row else None


def insert_legacy_row(
    conn: psycopg.Connection[Any], schema: str, record: FailedLookup | SkippedImport, *, json_null: bool = False
) -> None:
    """Write one row the way the old worker did, id included. A None metadata/criteria_failed is
    SQL NULL, or the jsonb value null with `json_null=True`."""
    conn = to_psycopg(conn)
    values = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "table"}
    for name in ("metadata", "criteria_failed"):
        if name in values and (values[name] is not None or json_null):
            values[name] = Jsonb(values[name])
    template = "legacy/insert_failed_lookup" if isinstance(record, FailedLookup) else "legacy/insert_skipped_import"
    conn.execute(builder.sql(template, schema=schema), values)


#: pg_class.relkind -> what a user is told the name is.
RELATION_KINDS = {"r": "a table", "v": "a view", "m": "a materialized view", "p": "a table", "f": "a foreign table"}


def legacy_kinds(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """The legacy names that exist under `schema`, in LEGACY_TABLES order, each with what it is
    ("a table", "a view", "a materialized view", "a foreign table", else "relkind X"). Reads the
    catalog only."""
    found: dict[str, str] = {}
    for table in LEGACY_TABLES:
        kind = relation_kind(conn, schema, table)
        if kind:
            found[table] = RELATION_KINDS.get(kind, f"relkind {kind}")
    return found
