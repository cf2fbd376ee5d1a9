"""`cinegraph-oban demo`: the main job, told as a story a new user can watch.

With a database URL it works inside a scratch schema (an Oban prefix) of that database and drops
it afterwards; without one it starts a throwaway local PostgreSQL and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from cinegraph_oban import engine
from cinegraph_oban.client import Oban
from cinegraph_oban.errors import DatabaseUnavailableError
from cinegraph_oban.job import Job
from cinegraph_oban.sample_data import import_args
from cinegraph_oban.schema import LATEST_VERSION, install
from cinegraph_oban.templates import render
from cinegraph_oban.throwaway import local_server
from cinegraph_oban.workers import TMDB_DETAILS_WORKER

__all__ = ["DemoResult", "run_demo"]

WORKER = TMDB_DETAILS_WORKER.name


@dataclass
class DemoResult:
    """What the demo did, for the summary and for tests."""

    where: str = ""
    prefix: str = "public"
    inserted: int = 0
    conflicts: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    next_up: list[Job] = field(default_factory=list)
    seconds: float = 0.0


@contextlib.contextmanager
def _database(database_url: str | None, console: Console) -> Iterator[tuple[psycopg.Connection[Any], str, str]]:
    """(connection, prefix, description): a scratch prefix of the given database, or a throwaway server."""
    if database_url:
        prefix = f"cinegraph_oban_demo_{uuid.uuid4().hex[:8]}"
        try:
            conn = psycopg.connect(database_url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to the database given by --database-url/DATABASE_URL: "
                f"{str(exc).strip().splitlines()[0]}"
            ) from exc
        console.print(
            f"Using the given database, inside a scratch schema [bold]{prefix}[/] that is dropped afterwards."
        )
        try:
            yield conn, prefix, f"database {conn.info.dbname!r} on {conn.info.host}, schema {prefix}"
        finally:
            conn.execute(render("demo/drop_schema.sql.j2", prefix=prefix).encode())
            conn.close()
        return
    console.print("No database configured: starting a throwaway local PostgreSQL ...")
    with local_server() as server:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(render("demo/create_database.sql.j2", database="cinegraph_demo").encode())
        with psycopg.connect(server.dsn("cinegraph_demo"), autocommit=True) as conn:
            yield conn, "public", f"throwaway PostgreSQL on 127.0.0.1:{server.port} (removed afterwards)"


def run_demo(database_url: str | None = None, *, jobs: int = 2_000, console: Console | None = None) -> DemoResult:
    """Install Oban, enqueue a realistic batch of import jobs, show what Oban claims next, clean up."""
    console = console or Console()
    result = DemoResult()
    started = time.perf_counter()
    with _database(database_url, console) as (conn, prefix, where):
        result.where, result.prefix = where, prefix
        install(conn, LATEST_VERSION, prefix)
        console.print(
            f"Installed the Oban schema at version {LATEST_VERSION} (as Oban.Migration.up/1 does) "
            f"under prefix {prefix!r}."
        )

        with Oban(conn, prefix=prefix) as oban:
            first = oban.insert(
                Job.new(
                    WORKER,
                    {"imdb_id": "tt0111161", "source": "canonical_import", "source_key": "1001_movies"},
                    meta={"import_type": "canonical", "source_list": "1001_movies"},
                )
            )
            again = oban.insert(
                Job.new(WORKER, {"imdb_id": "tt0111161", "source": "canonical_import", "source_key": "1001_movies"})
            )
            result.conflicts += int(again.conflict)
            console.print(
                f"insert: job {first.id} in queue {first.queue!r} (max_attempts {first.max_attempts}, from the "
                f"worker's own options); the same args again -> conflict={again.conflict}, job {again.id}."
            )
            batch = [
                Job.new(
                    WORKER,
                    args,
                    meta={"import_type": "canonical" if args.get("source") == "canonical_import" else "bulk"},
                    priority=0 if args.get("source") == "canonical_import" else 2,
                    schedule_in=3600 if n % 10 == 9 else None,
                    unique=False,
                )
                for n, args in enumerate(import_args(jobs))
            ]
            t0 = time.perf_counter()
            inserted = oban.insert_all(batch)
            elapsed = time.perf_counter() - t0
            result.inserted = len(inserted) + 1
            console.print(
                f"insert_all: {len(inserted):,} jobs in {elapsed:.2f} s ({len(inserted) / elapsed:,.0f} jobs/s), "
                f"ids {inserted[0].id}..{inserted[-1].id} in input order, one notification per queue."
            )

        rows = conn.execute(render("jobs/count_by_state.sql.j2", prefix=prefix).encode()).fetchall()
        result.by_state = {str(state): int(count) for state, count in rows}
        result.next_up = engine.peek_jobs(conn, "tmdb", 8, prefix=prefix)
        _show_next(console, result)
    result.seconds = time.perf_counter() - started
    console.print(
        f"[bold green]Done[/] in {result.seconds:.1f} s: {result.inserted:,} jobs written to {result.where}; "
        f"{sum(result.by_state.values()):,} rows by state {dict(Counter(result.by_state))}; "
        "everything the demo made is gone."
    )
    return result


def _show_next(console: Console, result: DemoResult) -> None:
    table = Table(title="What Oban's producer for queue 'tmdb' would claim next (priority, scheduled_at, id)")
    for column in ("id", "priority", "state", "scheduled_at", "args"):
        table.add_column(column)
    for job in result.next_up:
        table.add_row(str(job.id), str(job.priority), job.state, f"{job.scheduled_at:%H:%M:%S.%f}", job.args_json[:70])
    console.print(table)
