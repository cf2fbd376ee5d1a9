"""The asyncio face of cinegraph-oban: `cinegraph_oban.asyncio` mirrors `cinegraph_oban` as
`redis.asyncio` mirrors `redis`, taking psycopg `AsyncConnection` and SQLAlchemy
`AsyncConnection` / `AsyncSession` where the sync face takes their sync kinds.

    from cinegraph_oban.asyncio import AsyncOban, record_failed_lookup, read_failed_lookups

    await record_failed_lookup(conn, job.id, FailedLookup.new("tt0111161", "canonical_import"))
    async for lookup in await read_failed_lookups(conn):
        ...

This is a namespace: the asyncio source of each pair lives beside its generated sync twin, in
the folder of its concern (`insert/client_async.py` beside `insert/client.py`, `oban/`, `meta/`,
`testing/`); tools/async_to_sync.py generates the sync modules (CI checks they are current): one
source, two faces, the same names and parameters. `cinegraph_oban.asyncio.migration` mirrors
`cinegraph_oban.migration`: the legacy-table functions as coroutines, and
`AsyncRemoveRedundantImportTables`, whose runs are the sync migration's own in a worker thread
(a cancelled task interrupts the run, as Ctrl-C does, and waits until it has stopped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cinegraph_oban.insert.client_async import AsyncOban
from cinegraph_oban.meta.outcomes_async import merge_job_meta, record_failed_lookup, record_skipped_import
from cinegraph_oban.oban import engine_async as engine
from cinegraph_oban.oban import health_async as health
from cinegraph_oban.oban import installation_async as installation
from cinegraph_oban.oban.installation_async import detect, install, migrated_version

if TYPE_CHECKING:
    from cinegraph_oban.asyncio import migration, testing
    from cinegraph_oban.meta.readers_async import read_failed_lookups, read_jobs, read_skipped_imports

# The readers (and the testing helpers, which use them) build their queries with SQLAlchemy,
# which takes a third of a second to import: loaded on first use (as in `cinegraph_oban`), so
# asyncio enqueueing code starts without it.
_READERS = frozenset({"read_failed_lookups", "read_jobs", "read_skipped_imports"})


def __getattr__(name: str) -> Any:
    if name in ("migration", "testing"):
        import importlib

        module = importlib.import_module(f"cinegraph_oban.asyncio.{name}")
        globals()[name] = module
        return module
    if name in _READERS:
        from cinegraph_oban.meta import readers_async as readers

        value = getattr(readers, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncOban",
    "detect",
    "engine",
    "health",
    "install",
    "installation",
    "merge_job_meta",
    "migrated_version",
    "migration",
    "read_failed_lookups",
    "read_jobs",
    "read_skipped_imports",
    "record_failed_lookup",
    "record_skipped_import",
    "testing",
]
