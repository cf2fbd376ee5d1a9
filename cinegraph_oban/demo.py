"""`cinegraph-oban demo`: the design document's whole story, told on realistic data.

With a database URL it works inside a scratch schema of that database (the Oban prefix and the
legacy tables both live there) and drops it afterwards; without one it starts a throwaway local
PostgreSQL and removes it afterwards. The story: install Oban V14 and the two legacy tables with
realistic rows, enqueue import jobs, run them the way the new worker code does (outcomes merged
into job meta), plan and run the migration with progress bars, query failed lookups and soft
imports next to the design document's SQL, roll back, and check the tables came back identical.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cinegraph_oban.db.connections import connect
from cinegraph_oban.insert.client import Oban
from cinegraph_oban.meta.outcomes import record_failed_lookup, record_skipped_import
from cinegraph_oban.meta.queries import (
    failed_lookups,
    quality_skipped_imports,
    read_failed_lookups,
    read_skipped_imports,
)
from cinegraph_oban.meta.records import FailedLookup, SkippedImport
from cinegraph_oban.migration.legacy import create_legacy_tables, insert_legacy_row
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables
from cinegraph_oban.migration.sample_data import import_args
from cinegraph_oban.model.job import Job
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.model.workers import TMDB_DETAILS_WORKER
from cinegraph_oban.oban import engine
from cinegraph_oban.oban.table import LATEST_VERSION, install
from cinegraph_oban.sql import builder

__all__ = ["DemoResult", "run_demo"]

WORKER = TMDB_DETAILS_WORKER.name


@dataclass
class DemoResult:
    """What the demo did and proved, for the summary and for tests."""

    where: str = ""
    prefix: str = "public"
    inserted: int = 0
    conflicts: int = 0
    legacy_rows: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    by_state: dict[str, int] = field(default_factory=dict)
    next_up: list[Job] = field(default_factory=list)
    migrated: dict[str, int] = field(default_factory=dict)
    failures_found: int = 0
    soft_found: int = 0
    forms_agree: bool = False
    restored_identical: bool = False
    seconds: float = 0.0


@contextlib.contextmanager
def _database(database_url: str | None, console: Console) -> Iterator[tuple[psycopg.Connection[Any], str, str, str]]:
    """(connection, schema, URL, description): a scratch schema of the given database, or a throwaway server."""
    if database_url:
        schema = f"cinegraph_oban_demo_{uuid.uuid4().hex[:8]}"
        conn = connect(database_url, autocommit=True)  # one line, without the password, on failure
        console.print(
            f"Using the given database, inside a scratch schema [bold]{schema}[/] that is dropped afterwards."
        )
        try:
            yield conn, schema, database_url, f"database {conn.info.dbname!r} on {conn.info.host}, schema {schema}"
        finally:
            conn.execute(builder.sql("database/drop_schema", prefix=schema), {})
            conn.close()
        return
    console.print("No database configured: starting a throwaway local PostgreSQL ...")
    from cinegraph_oban.db.throwaway import local_server

    with local_server() as server:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(builder.sql("database/create_database", database="cinegraph_demo"), {})
        url = server.dsn("cinegraph_demo")
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn, "public", url, f"a throwaway PostgreSQL on 127.0.0.1:{server.port} (removed afterwards)"


def _snapshot(conn: psycopg.Connection[Any], schema: str) -> list[Any]:
    return [
        conn.execute(builder.sql("demo/table_rows", schema=schema, table=t), {}).fetchall()
        for t in ("failed_imdb_lookups", "skipped_imports")
    ]


def _legacy_content(conn: psycopg.Connection[Any], schema: str, rows: int) -> dict[str, int]:
    """Realistic rows as the old worker wrote them: lookups with no TMDb match, soft imports."""
    failed = skipped = 0
    for n, args in enumerate(import_args(rows, seed=2025), start=1):
        stamp = utc_now().replace(microsecond=0)
        if "imdb_id" in args:
            failed += 1
            record = FailedLookup(
                id=failed,
                imdb_id=args["imdb_id"],
                title=args["title"],
                year=args["year"],
                source=args["source"],
                source_key=args["source_key"],
                reason="no_tmdb_match",
                metadata=args["metadata"],
                retry_count=n % 3,
                inserted_at=stamp,
                updated_at=stamp,
            )
            insert_legacy_row(conn, schema, record)
        else:
            skipped += 1
            analysis = {"tmdb_id": args["tmdb_id"], "failed_criteria": ["votes", "popularity"][: 1 + n % 2]}
            analysis["missing_data"] = {"poster": n % 2 == 0, "votes": True, "popularity": False, "release_date": False}
            record_s = SkippedImport(
                id=skipped,
                tmdb_id=args["tmdb_id"],
                title=f"Movie {args['tmdb_id']}",
                criteria_failed=analysis,
                checked_at=utc_now(),
                inserted_at=utc_now(),
            )
            insert_legacy_row(conn, schema, record_s)
    for table in ("failed_imdb_lookups", "skipped_imports"):
        conn.execute(builder.sql("demo/reset_sequence", schema=schema, table=table), {})
    return {"failed_imdb_lookups": failed, "skipped_imports": skipped}


def run_demo(database_url: str | None = None, *, jobs: int = 2_000, console: Console | None = None) -> DemoResult:
    """Tell the whole story; everything the demo makes is removed at the end."""
    console = console or Console()
    result = DemoResult()
    started = time.perf_counter()
    with _database(database_url, console) as (conn, schema, url, where), tempfile.TemporaryDirectory() as export_dir:
        result.where, result.prefix = where, schema
        install(conn, LATEST_VERSION, schema)
        create_legacy_tables(conn, schema)
        conn.execute(builder.sql("legacy/create_schema_migrations", schema=schema), {})
        result.legacy_rows = _legacy_content(conn, schema, 3_000)
        console.rule("1. Oban V14 and the two legacy tables")
        console.print(
            f"Installed the Oban schema at version {LATEST_VERSION} (as Oban.Migration.up/1 does) and the legacy "
            f"tables with {result.legacy_rows['failed_imdb_lookups']:,} failed lookups and "
            f"{result.legacy_rows['skipped_imports']:,} skipped imports, written as the old worker wrote them."
        )

        console.rule("2. Enqueue import jobs from Python")
        with Oban(conn, prefix=schema) as oban:
            args0 = {"imdb_id": "tt0111161", "source": "canonical_import", "source_key": "1001_movies"}
            first = oban.insert(Job.new(WORKER, args0, meta={"import_type": "canonical", "source_list": "1001_movies"}))
            again = oban.insert(Job.new(WORKER, args0))
            result.conflicts += int(again.conflict)
            console.print(
                f"insert: job {first.id} in queue {first.queue!r} with max_attempts {first.max_attempts} (the worker's "
                f"own options); the same args again -> conflict={again.conflict}, job {again.id}."
            )
            batch = [
                Job.new(
                    WORKER,
                    args,
                    meta={"import_type": "canonical", "source_list": "1001_movies"}
                    if args.get("source") == "canonical_import"
                    else {},
                    priority=0 if args.get("source") == "canonical_import" else 2,
                    schedule_in=3600 if n % 10 == 9 else None,
                    unique=False,
                )
                for n, args in enumerate(import_args(jobs, seed=77))
            ]
            t0 = time.perf_counter()
            inserted = oban.insert_all(batch)
            elapsed = time.perf_counter() - t0
            result.inserted = len(inserted) + 1
            console.print(
                f"insert_all: {len(inserted):,} jobs in {elapsed:.2f} s ({len(inserted) / elapsed:,.0f} jobs/s), ids "
                f"{inserted.ids[0]}..{inserted.ids[-1]} in input order, one notification per queue, all or nothing."
            )
        result.next_up = engine.peek_jobs(conn, "tmdb", 5, prefix=schema)
        _show_next(console, result)

        console.rule("3. The worker runs them and records outcomes in meta (merged, never replaced)")
        result.outcomes = _run_worker(conn, schema)
        console.print(
            f"{result.outcomes['no_tmdb_match']:,} lookups found no TMDb match (cancelled, meta merged), "
            f"{result.outcomes['soft']:,} soft imports and {result.outcomes['full']:,} full imports (completed)."
        )

        console.rule("4. The migration: RemoveRedundantImportTables")
        migration = RemoveRedundantImportTables(url, prefix=schema, schema=schema, export_dir=Path(export_dir))
        steps = migration.plan()
        console.print(
            f"migrate plan: {sum(len(s) for _, s in steps)} statements in {len(steps)} steps: "
            + "; ".join(name for name, _ in steps)
        )
        before = _snapshot(conn, schema)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bars:
            tasks: dict[str, Any] = {}

            def progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bars.add_task(step, total=max(total, 1))
                bars.update(tasks[step], completed=done, total=max(total, done, 1))

            migration.progress = progress
            summary = migration.up()
        result.migrated = summary.archived
        console.print(
            f"migrate up: exported, archived {sum(summary.archived.values()):,} rows as Oban jobs, verified every row, "
            f"dropped both tables (locked for {(summary.lock_held_seconds or 0) * 1000:.0f} ms) and recorded version "
            f"{migration.version} in schema_migrations."
        )

        console.rule("5. The questions the old debug scripts answered, now from job meta")
        result.failures_found = len(list(read_failed_lookups(conn, failed_lookups(prefix=schema))))
        result.soft_found = len(list(read_skipped_imports(conn, quality_skipped_imports(prefix=schema))))
        document = _count(conn, failed_lookups(prefix=schema, form="document"))
        containment = _count(conn, failed_lookups(prefix=schema))
        result.forms_agree = document == containment == result.failures_found
        table = Table(title="failed lookups: the design document's form next to the default")
        table.add_column("form")
        table.add_column("WHERE")
        table.add_column("jobs")
        table.add_row("document (->>)", failed_lookups(prefix=schema, form="document").where_sql(), str(document))
        table.add_row("default (@>, GIN index)", failed_lookups(prefix=schema).where_sql(), str(containment))
        console.print(table)
        console.print(f"failures: {result.failures_found:,} (archived + new); soft imports: {result.soft_found:,}.")

        console.rule("6. Roll back")
        migration.progress = lambda step, done, total: None
        migration.down()
        result.restored_identical = _snapshot(conn, schema) == before
        console.print(
            f"migrate down: both tables recreated and refilled; identical to before: {result.restored_identical}."
        )
    result.seconds = time.perf_counter() - started
    console.rule("Proven")
    console.print(
        f"[bold green]Done[/] in {result.seconds:.1f} s on {result.where}: {result.inserted:,} jobs enqueued "
        "from Python "
        f"(unique conflict detected: {result.conflicts == 1}); outcomes merged into meta; "
        f"{sum(result.migrated.values()):,} legacy rows migrated into job meta and verified; the document's query and "
        f"the GIN-served one agree: {result.forms_agree}; rollback identical: {result.restored_identical}. "
        "Everything the demo made is gone."
    )
    return result


def _count(conn: psycopg.Connection[Any], query: Any) -> int:
    from cinegraph_oban.meta.queries import read_jobs

    return sum(1 for _ in read_jobs(conn, query))


def _run_worker(conn: psycopg.Connection[Any], prefix: str) -> dict[str, int]:
    """Claim every available job with Oban's own fetch and finish it as the new worker code does."""
    counts = {"no_tmdb_match": 0, "soft": 0, "full": 0}
    while claimed := engine.fetch_jobs(conn, "tmdb", 500, prefix=prefix):
        for job in claimed:
            assert job.id is not None
            if "imdb_id" in job.args and job.id % 4 == 0:
                a = job.args
                record = FailedLookup.new(
                    a["imdb_id"],
                    a.get("source", "unknown"),
                    title=a.get("title"),
                    year=a.get("year"),
                    source_key=a.get("source_key"),
                    metadata=a.get("metadata"),
                )
                record_failed_lookup(conn, job.id, record, prefix=prefix)
                engine.cancel_job(conn, job, "no_tmdb_match", prefix=prefix)
                counts["no_tmdb_match"] += 1
            elif "tmdb_id" in job.args and job.id % 3 == 0:
                record_skipped_import(
                    conn,
                    job.id,
                    SkippedImport.new(
                        job.args["tmdb_id"], title="A soft import", criteria_failed={"failed_criteria": ["votes"]}
                    ),
                    prefix=prefix,
                )
                engine.complete_job(conn, job, prefix=prefix)
                counts["soft"] += 1
            else:
                engine.complete_job(conn, job, prefix=prefix)
                counts["full"] += 1
    return counts


def _show_next(console: Console, result: DemoResult) -> None:
    table = Table(title="What Oban's producer for queue 'tmdb' would claim next (priority, scheduled_at, id)")
    for column in ("id", "priority", "state", "args"):
        table.add_column(column)
    for job in result.next_up:
        table.add_row(str(job.id), str(job.priority), job.state, job.args_json[:60])
    console.print(table)
