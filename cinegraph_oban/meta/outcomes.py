# Generated from cinegraph_oban/meta/outcomes_async.py by tools/async_to_sync.py: do not edit.
# Edit the asyncio source and run `python tools/async_to_sync.py` (CI checks it is current).
"""Recording import outcomes on their jobs: one atomic merge into `meta`, never a replacement.

    record_failed_lookup(conn, job.id, FailedLookup.new("tt0111161", "canonical_import", title=...))
    record_skipped_import(conn, job.id, SkippedImport.new(278, title=..., criteria_failed={...}))

Each is one `UPDATE ... SET meta = coalesce(meta, '{}') || patch`, so keys given at enqueue
time (`import_type`, `source_list`, ...) survive and concurrent writers never lose each other's
keys. `conn` is a psycopg connection, a SQLAlchemy Connection or Session; the
update joins its transaction. An asyncio connection is refused at once (ConnectionArgumentError); a failure in
the database reaches the caller as the library's error (a row lock held past `lock_timeout`:
LockNotAcquiredError; no `oban_jobs` under the prefix: UnsupportedSchemaError).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb

from cinegraph_oban.db.connections import to_psycopg
from cinegraph_oban.errors import JobNotFoundError, translate_errors
from cinegraph_oban.meta.records import FailedLookup, SkippedImport
from cinegraph_oban.sql import builder

__all__ = ["merge_job_meta", "record_failed_lookup", "record_skipped_import"]


def merge_job_meta(conn: Any, job_id: int, patch: Mapping[str, Any], *, prefix: str = "public") -> dict[str, Any]:
    """Merge `patch` into job `job_id`'s meta atomically; returns the merged meta."""
    pg = to_psycopg(conn)
    with translate_errors():
        cur = pg.execute(
            builder.sql("meta/merge_meta", prefix=prefix),
            {"patch": Jsonb(dict(patch)), "id": job_id},
        )
        row = cur.fetchone()
    if row is None:
        raise JobNotFoundError(
            f"no job with id {job_id} in {prefix}.oban_jobs: nothing was recorded. The job may have "
            "been pruned by Oban's Pruner, or the id or --prefix is wrong"
        )
    merged: dict[str, Any] = row[0]
    return merged


def record_failed_lookup(conn: Any, job_id: int, record: FailedLookup, *, prefix: str = "public") -> dict[str, Any]:
    """Record that job `job_id` found no TMDb match; returns the job's merged meta."""
    return merge_job_meta(conn, job_id, record.to_meta(), prefix=prefix)


def record_skipped_import(conn: Any, job_id: int, record: SkippedImport, *, prefix: str = "public") -> dict[str, Any]:
    """Record that job `job_id` soft-imported a movie that failed the quality criteria."""
    return merge_job_meta(conn, job_id, record.to_meta(), prefix=prefix)
