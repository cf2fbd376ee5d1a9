# Generated from cinegraph_oban/meta/readers_async.py by tools/async_to_sync.py: do not edit.
# Edit the asyncio source and run `python tools/async_to_sync.py` (CI checks it is current).
"""Reading jobs as rows and as import-outcome records, streamed (rows are fetched as they come).

    for lookup in read_failed_lookups(conn, failed_lookups(source="canonical_import")):
        ...

`conn` is a psycopg connection, a SQLAlchemy Connection or Session.
An asyncio connection is refused at once (ConnectionArgumentError): when the function is called, not
at the first row. The queries are `cinegraph_oban.meta.queries`' builders; a failure in the database
reaches the caller as the library's error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from cinegraph_oban.db.connections import to_psycopg
from cinegraph_oban.errors import translate_errors
from cinegraph_oban.meta.records import FailedLookup, SkippedImport

__all__ = ["read_failed_lookups", "read_jobs", "read_skipped_imports"]

T = TypeVar("T")


def read_jobs(conn: Any, query: JobQuery) -> Iterator[dict[str, Any]]:
    """Stream the rows a query selects, as dicts."""
    sql, params = query.compiled()
    return _stream(to_psycopg(conn), sql, params)


def _stream(pg: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with translate_errors(), pg.cursor(row_factory=dict_row) as cur:
        yield from cur.stream(sql.encode(), params)


def _records(make: Callable[[dict[str, Any]], T], rows: Iterator[dict[str, Any]]) -> Iterator[T]:
    for row in rows:
        yield make(row)


def read_failed_lookups(conn: Any, query: JobQuery | None = None, *, prefix: str = "public") -> Iterator[FailedLookup]:
    """Stream the failed lookups the query selects as records.

    Whoever finished the job: one this library recorded (or the migration archived) reads back
    exactly as recorded; one the Elixir worker finished holds only what that worker merged into
    meta, so each field meta lacks is taken from the job: `title`, `year`, `source`,
    `source_key`, `metadata` (and `imdb_id`) from its args, as enqueued; inserted_at from the job
    and updated_at from the time it was finished. A field neither says is None and named in the
    record's `unknown`. Meta wins over args where both say a thing (the worker's outcome is the
    newer word). Only a job that names no IMDb id at all is refused.
    """
    return _records(_failed_lookup, read_jobs(conn, query or failed_lookups(prefix=prefix)))


def read_skipped_imports(
    conn: Any, query: JobQuery | None = None, *, prefix: str = "public"
) -> Iterator[SkippedImport]:
    """Stream the soft imports the query selects as records.

    As `read_failed_lookups`: a job the Elixir worker completed takes inserted_at from the job,
    checked_at from when it completed and `tmdb_id` from its args if meta lacks it; `movie_title`,
    `reason` or `quality_criteria_failed` missing from meta are None and named in `unknown`.
    """
    return _records(_skipped_import, read_jobs(conn, query or quality_skipped_imports(prefix=prefix)))


# At the end, not the top: cinegraph_oban.meta.queries re-exports the sync readers from its own end,
# so whichever of the two is imported first, the other finds the names it needs defined.
from cinegraph_oban.meta.queries import (  # noqa: E402
    JobQuery,
    _failed_lookup,
    _skipped_import,
    failed_lookups,
    quality_skipped_imports,
)
