"""Testing helpers in Oban's vocabulary, for test suites that enqueue Oban jobs from Python.

    from cinegraph_oban.asyncio.testing import assert_enqueued, refute_enqueued, all_enqueued

    await assert_enqueued(conn, worker="Cinegraph.Workers.TMDbDetailsWorker", args={"tmdb_id": 278})
    await refute_enqueued(conn, worker="Cinegraph.Workers.TMDbDetailsWorker", meta={"import_type": "soft"})
    jobs = await all_enqueued(conn, queue="tmdb")

Like `Oban.Testing`, "enqueued" means a job in the `available` or `scheduled` state; args and
meta match by containment (the given pairs must be in the job's), worker names without
`Elixir.`. `conn` is a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession;
a sync connection is refused at once (ConnectionArgumentError), since a check that cannot run must
not pass. A failure in the database is raised as the library's error, never as psycopg's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cinegraph_oban.db.connections import to_async_psycopg
from cinegraph_oban.errors import translate_errors
from cinegraph_oban.meta.queries import jobs as job_query
from cinegraph_oban.meta.readers_async import read_jobs
from cinegraph_oban.model.job import Job

__all__ = ["ENQUEUED_STATES", "all_enqueued", "assert_enqueued", "refute_enqueued"]

ENQUEUED_STATES: tuple[str, ...] = ("available", "scheduled")


async def all_enqueued(
    conn: Any,
    *,
    worker: str | None = None,
    queue: str | None = None,
    args: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    states: Sequence[str] = ENQUEUED_STATES,
    prefix: str = "public",
) -> list[Job]:
    """Every enqueued job matching the filters, oldest first."""
    pg = await to_async_psycopg(conn)
    query = job_query(prefix).states(*states)
    if worker is not None:
        query = query.worker(worker)
    if queue is not None:
        query = query.queue(queue)
    if args:
        query = query.args_contains(args)
    if meta:
        query = query.meta_contains(meta)
    query = query.order_by(query.table.c.id)
    with translate_errors():
        return [Job.from_row(row) async for row in await read_jobs(pg, query)]


def _describe(filters: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None and k != "prefix")


async def assert_enqueued(conn: Any, **filters: Any) -> list[Job]:
    """Fail unless at least one enqueued job matches; returns the matches."""
    found = await all_enqueued(conn, **filters)
    if not found:
        others = (await all_enqueued(conn, prefix=filters.get("prefix", "public")))[:5]
        listed = "\n  ".join(f"{j.worker} queue={j.queue} args={j.args} meta={j.meta}" for j in others) or "(none)"
        raise AssertionError(f"expected a job enqueued with {_describe(filters)}; enqueued jobs include:\n  {listed}")
    return found


async def refute_enqueued(conn: Any, **filters: Any) -> None:
    """Fail if any enqueued job matches."""
    found = await all_enqueued(conn, **filters)
    if found:
        raise AssertionError(
            f"expected no job enqueued with {_describe(filters)}, found {len(found)}: "
            + ", ".join(f"#{j.id} args={j.args}" for j in found[:5])
        )
