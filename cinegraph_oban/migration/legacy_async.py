"""Cinegraph's two legacy import tables: creating them as the original Ecto migrations did,
writing a row as the old worker did, and which of them a schema holds (their shape is in
`legacy_shape`).

`legacy_kinds(conn, schema)` names each of `failed_imdb_lookups` and `skipped_imports` that
exists under `schema` with what it is ("a table", "a view", ...); `cinegraph-oban schema install
--legacy-tables` refuses to create them over any of these, and `cinegraph-oban export` exports
only real tables.

`conn` is a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession. This is the asyncio
source; `legacy.py` (the sync face) is generated from it by tools/async_to_sync.py.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cinegraph_oban.db.connections import to_async_psycopg
from cinegraph_oban.meta.records import FailedLookup, SkippedImport
from cinegraph_oban.migration.legacy_shape import EXPECTED_COLUMNS, LEGACY_TABLES, RELATION_KINDS
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


async def create_legacy_tables(conn: psycopg.AsyncConnection[Any], schema: str = "public") -> None:
    """Create both legacy tables exactly as the original Ecto migrations did."""
    conn = await to_async_psycopg(conn)
    for table in LEGACY_TABLES:
        for statement in builder.statements(f"legacy/create_{table}", schema=schema):
            await conn.execute(statement.encode(), {})


async def relation_kind(conn: psycopg.AsyncConnection[Any], schema: str, name: str) -> str | None:
    """pg_class.relkind of `schema.name` ('r' for a table, 'v' for a view, ...), or None if absent."""
    conn = await to_async_psycopg(conn)
    cur = await conn.execute(builder.sql("migration/relation_kind"), {"schema": schema, "name": name})
    row = await cur.fetchone()
    return row[0] if row else None


async def insert_legacy_row(
    conn: psycopg.AsyncConnection[Any], schema: str, record: FailedLookup | SkippedImport, *, json_null: bool = False
) -> None:
    """Write one row the way the old worker did, id included. A None metadata/criteria_failed is
    SQL NULL, or the jsonb value null with `json_null=True`."""
    conn = await to_async_psycopg(conn)
    values = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "table"}
    for name in ("metadata", "criteria_failed"):
        if name in values and (values[name] is not None or json_null):
            values[name] = Jsonb(values[name])
    template = "legacy/insert_failed_lookup" if isinstance(record, FailedLookup) else "legacy/insert_skipped_import"
    await conn.execute(builder.sql(template, schema=schema), values)


async def legacy_kinds(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, str]:
    """The legacy names that exist under `schema`, in LEGACY_TABLES order, each with what it is
    ("a table", "a view", "a materialized view", "a foreign table", else "relkind X"). Reads the
    catalog only."""
    found: dict[str, str] = {}
    for table in LEGACY_TABLES:
        kind = await relation_kind(conn, schema, table)
        if kind:
            found[table] = RELATION_KINDS.get(kind, f"relkind {kind}")
    return found
