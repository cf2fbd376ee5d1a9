"""How the `oban_jobs` table is doing: what `cinegraph-oban schema show` reports besides the schema.

Everything here is read-only and uses PostgreSQL's own statistics views; the GIN pending lists
are read through the `pgstattuple` extension when it is installed (this package never creates
extensions). Each finding that needs attention comes with what to do about it.

`conn` is a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession.
A sync connection is refused at once (ConnectionArgumentError).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from cinegraph_oban.db.connections import to_async_psycopg
from cinegraph_oban.db.identifiers import check_prefix
from cinegraph_oban.oban.health_model import (
    DEAD_ROWS_WARNING,
    DEAD_SHARE_WARNING,
    PENDING_BYTES_WARNING,
    WAIT_WARNING_SECONDS,
    GinIndexHealth,
    Health,
    QueueHealth,
    warnings_of,
)
from cinegraph_oban.oban.installation_async import detect
from cinegraph_oban.oban.table import ObanTable
from cinegraph_oban.sql import builder

__all__ = [
    "DEAD_ROWS_WARNING",
    "DEAD_SHARE_WARNING",
    "PENDING_BYTES_WARNING",
    "WAIT_WARNING_SECONDS",
    "GinIndexHealth",
    "Health",
    "QueueHealth",
    "health",
]


def _sql(name: str, **context: Any) -> bytes:
    return builder.sql(f"oban/health/{name}", **context)


async def health(
    conn: psycopg.AsyncConnection[Any], prefix: str = "public", *, schema: ObanTable | None = None
) -> Health:
    """Read the table's health; `warnings` names what needs attention and what to do.

    `schema` is the Oban schema already detected under `prefix`, if the caller has it.
    """
    check_prefix(prefix)
    conn = await to_async_psycopg(conn)
    schema = schema if schema is not None else await detect(conn, prefix)
    async with conn.cursor(row_factory=dict_row) as cur:
        counted = await conn.execute(builder.sql("oban/health/count_by_state", prefix=prefix), {})
        by_state = {str(state): int(n) for state, n in await counted.fetchall()}
        table = await (await cur.execute(_sql("table", prefix=prefix), {})).fetchone() or {}
        gin_rows = await (await cur.execute(_sql("gin_indexes", prefix=prefix), {})).fetchall()
        queues = [QueueHealth(**row) for row in await (await cur.execute(_sql("queues", prefix=prefix), {})).fetchall()]
        ext = await (await conn.execute(_sql("extension_schema"), {})).fetchone()
        gins = []
        for row in gin_rows:
            pages = tuples = None
            if ext is not None:
                try:
                    async with conn.transaction():  # a savepoint inside a caller's transaction
                        pending = await (
                            await cur.execute(
                                _sql("gin_pending", prefix=prefix, index=row["index"], extension_schema=ext[0]), {}
                            )
                        ).fetchone()
                except psycopg.errors.InsufficientPrivilege:
                    ext = None  # pgstatginindex needs pg_stat_scan_tables: report "not measured"
                else:
                    assert pending is not None
                    pages, tuples = int(pending["pending_pages"]), int(pending["pending_tuples"])
            gins.append(
                GinIndexHealth(
                    index=row["index"],
                    bytes=int(row["bytes"]),
                    fastupdate=row["fastupdate"],
                    pending_limit_kb=row["pending_limit_kb"],
                    pending_pages=pages,
                    pending_tuples=tuples,
                )
            )
    found = Health(
        prefix=prefix,
        version=schema.version,
        jobs_by_state=by_state,
        live_rows=int(table.get("live_rows") or 0),
        dead_rows=int(table.get("dead_rows") or 0),
        last_vacuum=table.get("last_vacuum"),
        last_analyze=table.get("last_analyze"),
        table_bytes=int(table.get("table_bytes") or 0),
        total_bytes=int(table.get("total_bytes") or 0),
        gin_indexes=gins,
        queues=queues,
        pending_lists_measured=ext is not None,
    )
    found.warnings.extend(warnings_of(found))
    return found
