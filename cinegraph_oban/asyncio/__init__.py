"""The asyncio face of cinegraph-oban: `cinegraph_oban.asyncio` mirrors `cinegraph_oban` as
`redis.asyncio` mirrors `redis`, taking psycopg `AsyncConnection` and SQLAlchemy
`AsyncConnection` / `AsyncSession` where the sync face takes their sync kinds.

    from cinegraph_oban.asyncio import AsyncOban, record_failed_lookup, read_failed_lookups

    await record_failed_lookup(conn, job.id, FailedLookup.new("tt0111161", "canonical_import"))
    async for lookup in await read_failed_lookups(conn):
        ...

The modules here (engine, health, installation, outcomes, readers, testing) are the source of their sync twins in
`cinegraph_oban`, which tools/async_to_sync.py generates (CI checks they are current): one
source, two faces, the same names and parameters.
"""

from __future__ import annotations

from cinegraph_oban.async_client import AsyncOban
from cinegraph_oban.asyncio import engine, health, installation, testing
from cinegraph_oban.asyncio.outcomes import merge_job_meta, record_failed_lookup, record_skipped_import
from cinegraph_oban.asyncio.readers import read_failed_lookups, read_jobs, read_skipped_imports

__all__ = [
    "AsyncOban",
    "engine",
    "health",
    "installation",
    "merge_job_meta",
    "read_failed_lookups",
    "read_jobs",
    "read_skipped_imports",
    "record_failed_lookup",
    "record_skipped_import",
    "testing",
]
