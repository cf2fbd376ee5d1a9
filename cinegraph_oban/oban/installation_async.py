"""Installing Oban's schema as Elixir Oban does, and detecting what a database has.

`install` replays Oban's own Postgres migrations (`cinegraph_oban.oban.table.install_statements`)
and records the version as the table comment; `detect` reads the catalogs into an `ObanTable`.
`conn` is a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession.
A sync connection is refused at once (ConnectionArgumentError).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import dict_row

from cinegraph_oban.db.connections import to_async_psycopg
from cinegraph_oban.db.identifiers import check_prefix
from cinegraph_oban.errors import ConnectionArgumentError, translate_errors
from cinegraph_oban.oban.table import LATEST_VERSION, ObanTable, detect_sql, install_statements, table_from_catalog
from cinegraph_oban.sql import builder

__all__ = ["detect", "install", "migrated_version"]


async def migrated_version(conn: psycopg.AsyncConnection[Any], prefix: str = "public") -> int:
    """Oban's own reading of the version: the table comment, 0 when there is none."""
    conn = await to_async_psycopg(conn)
    cur = await conn.execute(builder.sql("oban/migrated_version"), {"prefix": prefix})
    row = await cur.fetchone()
    comment = row[0] if row else None
    return int(comment) if comment is not None and comment.strip().isdigit() else 0


async def install(
    conn: psycopg.AsyncConnection[Any],
    version: int = LATEST_VERSION,
    prefix: str = "public",
    *,
    legacy_tags: bool = False,
) -> int:
    """Bring the Oban schema under `prefix` up to `version`, as `Oban.Migration.up/1` does.

    Starts from the version already recorded (0 on an empty database). Each step commits on its
    own, as separate Ecto migrations would: PostgreSQL will not let a later step read an enum
    value (V09's `cancelled`) added earlier in the same transaction. Returns the version found.

    `prefix` is checked first (`identifiers.check_prefix`): nothing is created under a name
    PostgreSQL would not keep as given. A connection that is not autocommit is switched to
    autocommit for the install and back; one inside a transaction is refused, since the
    steps must commit on their own.
    """
    check_prefix(prefix)
    conn = await to_async_psycopg(conn)
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ConnectionArgumentError(
            "install() commits each Oban migration step on its own and cannot run inside a transaction: "
            "call it before opening one, or on an autocommit connection"
        )
    autocommit = conn.autocommit
    await conn.set_autocommit(True)
    try:
        with translate_errors():
            found = await migrated_version(conn, prefix)
            for statements in install_statements(version, prefix, legacy_tags=legacy_tags, from_version=found):
                async with conn.transaction():
                    for statement in statements:
                        await conn.execute(statement.encode(), {})
    finally:
        await conn.set_autocommit(autocommit)
    return found


async def detect(conn: psycopg.AsyncConnection[Any], prefix: str = "public") -> ObanTable:
    """Read the Oban installation under `prefix`, or say clearly why it cannot be used."""
    check_prefix(prefix)
    conn = await to_async_psycopg(conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(detect_sql(), {"prefix": prefix})
        row = await cur.fetchone()
    assert row is not None
    return table_from_catalog(row, prefix, conn.info.dbname)
