"""Oban's own statements, reproduced so Python can play the Elixir side.

These are the queries Oban's Basic engine, Stager and Pruner run (see `oban-contract.md`):
claiming jobs, staging scheduled ones, recording outcomes and pruning. cinegraph-oban never runs
them against a production queue on its own; they exist so tests, the demo and the pytest plugin
can prove that rows written here are claimed and run exactly like Oban's own.

`conn` is a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession; the
statements join its transaction. A sync connection is refused at once (ConnectionArgumentError), and psycopg's
errors reach the caller as the library's (`cinegraph_oban.errors`).
"""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

from psycopg.rows import dict_row

from cinegraph_oban.db.connections import to_async_psycopg
from cinegraph_oban.errors import translate_errors
from cinegraph_oban.model.job import Job
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.sql import builder

__all__ = [
    "cancel_job",
    "complete_job",
    "discard_job",
    "error_job",
    "fetch_jobs",
    "format_error",
    "peek_jobs",
    "prune_jobs",
    "snooze_job",
    "stage_jobs",
]


async def _jobs(conn: Any, template: str, prefix: str, params: dict[str, Any]) -> list[Job]:
    pg = await to_async_psycopg(conn)
    with translate_errors():
        async with pg.cursor(row_factory=dict_row) as cur:
            await cur.execute(builder.sql(template, prefix=prefix), params)
            return [Job.from_row(row) for row in await cur.fetchall()]


async def _ids(conn: Any, template: str, prefix: str, params: dict[str, Any]) -> list[int]:
    pg = await to_async_psycopg(conn)
    with translate_errors():
        cur = await pg.execute(builder.sql(template, prefix=prefix), params)
        rows = await cur.fetchall()
    return sorted(row[0] for row in rows)


async def _update(conn: Any, template: str, prefix: str, params: dict[str, Any]) -> None:
    pg = await to_async_psycopg(conn)
    with translate_errors():
        await pg.execute(builder.sql(template, prefix=prefix), params)


async def fetch_jobs(
    conn: Any,
    queue: str,
    demand: int = 10,
    *,
    prefix: str = "public",
    node: str = "cinegraph-oban@localhost",
) -> list[Job]:
    """Claim up to `demand` available jobs of `queue`, exactly as Oban's producer does."""
    jobs = await _jobs(
        conn,
        "oban/engine/fetch_jobs",
        prefix,
        {"queue": queue, "demand": demand, "attempted_by": [node, str(uuid4())]},
    )
    return sorted(jobs, key=lambda j: (j.priority, j.scheduled_at or utc_now(), j.id or 0))


async def peek_jobs(conn: Any, queue: str, demand: int = 10, *, prefix: str = "public") -> list[Job]:
    """The jobs `fetch_jobs` would claim next, in its order, without claiming them."""
    return await _jobs(conn, "oban/engine/peek_jobs", prefix, {"queue": queue, "demand": demand})


async def stage_jobs(conn: Any, *, prefix: str = "public", limit: int = 5_000) -> list[int]:
    """Make due scheduled and retryable jobs available (Oban's Stager); returns their ids."""
    return await _ids(conn, "oban/engine/stage_jobs", prefix, {"limit": limit})


def format_error(attempt: int, message: str) -> str:
    """An `errors` element as Oban stores it: `{"at": ..Z, "attempt": n, "error": text}`."""
    at = utc_now().isoformat(timespec="microseconds") + "Z"
    return json.dumps({"at": at, "attempt": attempt, "error": message})


async def complete_job(conn: Any, job: Job, *, prefix: str = "public") -> None:
    await _update(conn, "oban/engine/complete_job", prefix, {"id": job.id})


async def error_job(conn: Any, job: Job, message: str, *, prefix: str = "public") -> None:
    """A failed attempt: retryable after Oban's default backoff when attempts remain, else discarded."""
    if job.attempt >= job.max_attempts:
        await discard_job(conn, job, message, prefix=prefix)
        return
    backoff = 15 + 2**job.attempt
    await _update(
        conn,
        "oban/engine/error_job",
        prefix,
        {"id": job.id, "backoff": backoff, "error": format_error(job.attempt, message)},
    )


async def discard_job(conn: Any, job: Job, message: str, *, prefix: str = "public") -> None:
    await _update(conn, "oban/engine/discard_job", prefix, {"id": job.id, "error": format_error(job.attempt, message)})


async def cancel_job(conn: Any, job: Job, message: str, *, prefix: str = "public") -> None:
    await _update(conn, "oban/engine/cancel_job", prefix, {"id": job.id, "error": format_error(job.attempt, message)})


async def snooze_job(conn: Any, job: Job, seconds: int, *, prefix: str = "public") -> None:
    await _update(conn, "oban/engine/snooze_job", prefix, {"id": job.id, "seconds": seconds})


async def prune_jobs(conn: Any, *, max_age: float = 60, prefix: str = "public", limit: int = 10_000) -> list[int]:
    """Delete finished jobs older than `max_age` seconds (Oban's Pruner); returns their ids."""
    return await _ids(conn, "oban/engine/prune_jobs", prefix, {"max_age": max_age, "limit": limit})
