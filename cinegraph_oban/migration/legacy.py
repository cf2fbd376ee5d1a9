"""Which of Cinegraph's legacy import tables a schema holds, and as what.

`legacy_kinds(conn, schema)` names each of `failed_imdb_lookups` and `skipped_imports` that
exists under `schema` with what it is ("a table", "a view", ...); `cinegraph-oban schema install
--legacy-tables` refuses to create them over any of these, and `cinegraph-oban export` exports
only real tables.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["RELATION_KINDS", "legacy_kinds"]

#: pg_class.relkind -> what a user is told the name is.
RELATION_KINDS = {"r": "a table", "v": "a view", "m": "a materialized view", "p": "a table", "f": "a foreign table"}


def legacy_kinds(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """The legacy names that exist under `schema`, in LEGACY_TABLES order, each with what it is
    ("a table", "a view", "a materialized view", "a foreign table", else "relkind X"). Reads the
    catalog only."""
    from cinegraph_oban.migration.remove_tables import LEGACY_TABLES, relation_kind

    found: dict[str, str] = {}
    for table in LEGACY_TABLES:
        kind = relation_kind(conn, schema, table)
        if kind:
            found[table] = RELATION_KINDS.get(kind, f"relkind {kind}")
    return found
