"""The `cinegraph-oban` command line.

Every command takes `--database-url` (or `DATABASE_URL`) and `--prefix`; errors are printed as
one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cinegraph_oban import __version__
from cinegraph_oban.client import Oban
from cinegraph_oban.errors import CinegraphObanError
from cinegraph_oban.health import Health, health
from cinegraph_oban.job import Job
from cinegraph_oban.schema import LATEST_VERSION, SUPPORTED_VERSIONS, install

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Turn every expected failure into one clear line and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CinegraphObanError as exc:
            _fail(str(exc))
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"database error: {first}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        return None

    return wrapper  # type: ignore[return-value]


def database_url_option(required: bool) -> Callable[[F], F]:
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        required=required,
        help="PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1/cinegraph (or set DATABASE_URL).",
    )


prefix_option = click.option("--prefix", default="public", show_default=True, help="The Oban prefix (a schema).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cinegraph-oban")
def main() -> None:
    """Write Oban jobs from Python, record import outcomes in job meta, and retire Cinegraph's
    legacy import tables."""


@main.command()
@database_url_option(required=False)
@click.option("--jobs", default=2_000, show_default=True, help="How many import jobs to enqueue.")
@friendly_errors
def demo(database_url: str | None, jobs: int) -> None:
    """Enqueue a realistic batch of import jobs and show what Oban would run next.

    Without a database it starts a throwaway local PostgreSQL; with one it works in a scratch
    schema that it drops afterwards.
    """
    from cinegraph_oban.demo import run_demo

    run_demo(database_url, jobs=jobs)


@main.group()
def schema() -> None:
    """Show or install the Oban schema."""


@schema.command("show")
@database_url_option(required=True)
@prefix_option
@json_option
@friendly_errors
def schema_show(database_url: str, prefix: str, as_json: bool) -> None:
    """The detected Oban version, states, column types and indexes, and the table's health."""
    with Oban.connect(database_url, prefix=prefix) as oban:
        found = oban.schema()
        checked = health(oban.connection, prefix)
    info = {
        "prefix": found.prefix,
        "version": found.version,
        "states": list(found.states),
        "tags_type": found.tags_type,
        "errors_type": found.errors_type,
        "notify_trigger": found.has_notify_trigger,
        "max_priority": found.max_priority,
        "indexes": list(found.indexes),
        "check_constraints": list(found.check_constraints),
        "jobs": sum(checked.jobs_by_state.values()),
    }
    if as_json:
        click.echo(json.dumps({**info, "health": checked.to_dict()}, indent=2))
        return
    console = Console()
    table = Table(title=f"Oban schema under prefix {prefix!r}", show_header=False)
    for key, value in info.items():
        table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    console.print(table)
    console.print(_health_table(checked))
    if not checked.pending_lists_measured:
        console.print("GIN pending lists: not measured (CREATE EXTENSION pgstattuple to see them)")
    for warning in checked.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if not checked.warnings:
        console.print("no warnings")


def _health_table(h: Health) -> Table:
    table = Table(title=f"{h.prefix}.oban_jobs health", show_header=False)
    table.add_row("jobs by state", ", ".join(f"{state} {n:,}" for state, n in h.jobs_by_state.items()) or "none")
    table.add_row("live / dead row versions", f"{h.live_rows:,} / {h.dead_rows:,}")
    table.add_row("last vacuum / analyze", f"{h.last_vacuum or 'never'} / {h.last_analyze or 'never'}")
    table.add_row("size (table / with indexes)", f"{h.table_bytes / 2**20:,.1f} MiB / {h.total_bytes / 2**20:,.1f} MiB")
    for gin in h.gin_indexes:
        pending = (
            f"{gin.pending_tuples:,} rows in {gin.pending_pages:,} pages pending"
            if gin.pending_pages is not None
            else "pending list not measured"
        )
        limit = f", gin_pending_list_limit {gin.pending_limit_kb} kB" if gin.pending_limit_kb is not None else ""
        table.add_row(gin.index, f"{gin.bytes / 2**20:,.1f} MiB, fastupdate {gin.fastupdate}{limit}, {pending}")
    for queue in h.queues:
        table.add_row(
            f"queue {queue.queue}", f"{queue.available:,} available, oldest waiting {queue.oldest_wait_seconds:,.0f} s"
        )
    return table


@schema.command("install")
@database_url_option(required=True)
@prefix_option
@click.option(
    "--version",
    "version",
    type=click.IntRange(SUPPORTED_VERSIONS[0], LATEST_VERSION),
    default=LATEST_VERSION,
    show_default=True,
    help="Oban schema version to migrate up to.",
)
@friendly_errors
def schema_install(database_url: str, prefix: str, version: int) -> None:
    """Create or upgrade the Oban schema, as Oban.Migration.up(version: N) does."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = install(conn, version, prefix)
    click.echo(f"Oban schema under {prefix!r}: version {found} -> {version}")


def _load_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@main.command()
@database_url_option(required=True)
@prefix_option
@click.option("--worker", help="Elixir worker module, e.g. Cinegraph.Workers.TMDbDetailsWorker.")
@click.option("--args", "args_text", default="{}", help="Job args as a JSON object.")
@click.option("--meta", "meta_text", default="{}", help="Job meta as a JSON object.")
@click.option("--queue", default=None, help="Queue (default: the worker's own, else 'default').")
@click.option("--priority", type=int, default=None)
@click.option("--schedule-in", type=float, default=None, help="Seconds from now.")
@click.option(
    "--file",
    "jobs_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON Lines file, one job per line: {worker, args, meta, queue, priority, ...}; inserted all or nothing.",
)
@json_option
@friendly_errors
def enqueue(
    database_url: str,
    prefix: str,
    worker: str | None,
    args_text: str,
    meta_text: str,
    queue: str | None,
    priority: int | None,
    schedule_in: float | None,
    jobs_file: Path | None,
    as_json: bool,
) -> None:
    """Enqueue one job, or a JSON Lines file of jobs."""
    if jobs_file is not None:
        jobs = list(_read_jobs_file(jobs_file))
        with Oban.connect(database_url, prefix=prefix) as oban:
            inserted = oban.insert_all(jobs)
        summary = {"inserted": len(inserted), "first_id": inserted[0].id if inserted else None}
        click.echo(json.dumps(summary) if as_json else f"inserted {len(inserted)} jobs from {jobs_file}")
        return
    if not worker:
        raise click.UsageError("give --worker (and --args), or --file with JSON Lines")
    job = Job.new(
        worker,
        _load_json_object(args_text, "--args"),
        meta=_load_json_object(meta_text, "--meta"),
        queue=queue,
        priority=priority,
        schedule_in=schedule_in,
    )
    with Oban.connect(database_url, prefix=prefix) as oban:
        stored = oban.insert(job)
    if as_json:
        click.echo(
            json.dumps({"id": stored.id, "state": stored.state, "queue": stored.queue, "conflict": stored.conflict})
        )
    else:
        note = " (an existing unique job)" if stored.conflict else ""
        click.echo(f"job {stored.id} {stored.state} in queue {stored.queue!r}{note}")


_JOB_KEYS = {"worker", "args", "meta", "queue", "priority", "max_attempts", "tags", "schedule_in", "scheduled_at"}


def _read_jobs_file(path: Path) -> Iterator[Job]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                spec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CinegraphObanError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); nothing was inserted"
                ) from exc
            if not isinstance(spec, dict) or "worker" not in spec:
                raise CinegraphObanError(
                    f"{where}: each line must be a JSON object with a 'worker'; nothing was inserted"
                )
            unknown = sorted(set(spec) - _JOB_KEYS)
            if unknown:
                raise CinegraphObanError(
                    f"{where}: unknown keys {unknown}; known: {sorted(_JOB_KEYS)}; nothing was inserted"
                )
            if isinstance(spec.get("scheduled_at"), str):
                spec["scheduled_at"] = datetime.fromisoformat(spec["scheduled_at"])
            try:
                yield Job.new(**spec)
            except CinegraphObanError as exc:
                raise CinegraphObanError(f"{where}: {exc}; nothing was inserted") from exc


def _parse_since(value: str | None) -> datetime | None:
    """An ISO date/time, or a duration back from now such as 7d, 12h, 30m."""
    if value is None:
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if value[:-1].isdigit() and value[-1:] in units:
        from cinegraph_oban.timestamps import utc_now

        return utc_now() - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is neither an ISO date/time nor a duration like 7d, 12h or 30m") from exc


def _emit(rows: list[dict[str, Any]], columns: list[str], output: str, title: str) -> None:
    if output == "json":
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
    elif output == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v for k, v in row.items()}
            )
    else:
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c))[:60] for c in columns))
        Console().print(table)
        click.echo(f"{len(rows)} rows")


def _output_options(func: F) -> F:
    func = click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")(func)
    func = json_option(func)
    func = click.option("--limit", type=int, default=100, show_default=True, help="At most this many rows (0: all).")(
        func
    )
    func = click.option("--since", help="Jobs inserted since an ISO time or a duration back from now (7d, 12h).")(func)
    func = prefix_option(func)
    return database_url_option(required=True)(func)


@main.command()
@_output_options
@click.option("--source", help="Only this source, e.g. canonical_import, oscar_import, festival_import.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["discarded", "cancelled", "retryable"]),
    help="Job states to include (default: discarded and cancelled).",
)
@friendly_errors
def failures(
    database_url: str,
    prefix: str,
    since: str | None,
    limit: int,
    as_json: bool,
    as_csv: bool,
    source: str | None,
    states: tuple[str, ...],
) -> None:
    """IMDb ids TMDb had no match for (what failed_imdb_lookups held), newest first."""
    from cinegraph_oban.queries import failed_lookups, read_failed_lookups

    query = failed_lookups(
        prefix=prefix, states=states or ("discarded", "cancelled"), source=source, since=_parse_since(since)
    )
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with Oban.connect(database_url, prefix=prefix) as oban:
        oban.schema()
        rows = [_record_row(r) for r in read_failed_lookups(oban.connection, query)]
    columns = ["imdb_id", "title", "year", "source", "source_key", "reason", "retry_count", "inserted_at", "id"]
    _emit(rows, columns, "json" if as_json else "csv" if as_csv else "table", "Failed IMDb lookups (no TMDb match)")


@main.command()
@_output_options
@friendly_errors
def skipped(database_url: str, prefix: str, since: str | None, limit: int, as_json: bool, as_csv: bool) -> None:
    """Movies soft-imported for failing the quality criteria (what skipped_imports held), newest first."""
    from cinegraph_oban.queries import quality_skipped_imports, read_skipped_imports

    query = quality_skipped_imports(prefix=prefix, since=_parse_since(since))
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with Oban.connect(database_url, prefix=prefix) as oban:
        oban.schema()
        rows = [_record_row(r) for r in read_skipped_imports(oban.connection, query)]
    columns = ["tmdb_id", "title", "reason", "criteria_failed", "checked_at", "inserted_at", "id"]
    _emit(rows, columns, "json" if as_json else "csv" if as_csv else "table", "Quality-filtered (soft) imports")


def _record_row(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    row = asdict(record)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@main.group()
def indexes() -> None:
    """Opt-in partial indexes that make `failures` and `skipped` read a small index."""


@indexes.command("create")
@database_url_option(required=True)
@prefix_option
@friendly_errors
def indexes_create(database_url: str, prefix: str) -> None:
    """Build the indexes CONCURRENTLY (inserts go on meanwhile)."""
    from cinegraph_oban.queries import OUTCOME_INDEXES, create_outcome_indexes

    with Oban.connect(database_url, prefix=prefix) as oban:
        oban.schema()
        create_outcome_indexes(oban.connection, prefix)
    click.echo(f"created {', '.join(OUTCOME_INDEXES)} on {prefix}.oban_jobs")


@indexes.command("drop")
@database_url_option(required=True)
@prefix_option
@friendly_errors
def indexes_drop(database_url: str, prefix: str) -> None:
    """Drop the indexes CONCURRENTLY."""
    from cinegraph_oban.queries import OUTCOME_INDEXES, create_outcome_indexes

    with Oban.connect(database_url, prefix=prefix) as oban:
        create_outcome_indexes(oban.connection, prefix, drop=True)
    click.echo(f"dropped {', '.join(OUTCOME_INDEXES)} from {prefix}.oban_jobs")


def _migration(
    database_url: str,
    prefix: str,
    schema: str,
    version: int,
    export_dir: Path,
    *,
    compat_views: bool = False,
    audit_log: bool = False,
    batch_size: int = 50_000,
    progress: Any = None,
) -> Any:
    from cinegraph_oban.migration import RemoveRedundantImportTables

    return RemoveRedundantImportTables(
        database_url,
        prefix=prefix,
        schema=schema,
        version=version,
        export_dir=export_dir,
        compat_views=compat_views,
        audit_log=audit_log,
        batch_size=batch_size,
        progress=progress,
    )


def _migration_options(func: F) -> F:
    from cinegraph_oban.migration import DEFAULT_VERSION

    func = json_option(func)
    func = click.option(
        "--export-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("cinegraph-oban-export"),
        show_default=True,
        help="Where the export archive (JSON Lines + manifest) is written.",
    )(func)
    func = click.option(
        "--version",
        "version",
        type=int,
        default=DEFAULT_VERSION,
        show_default=True,
        help="Ecto migration version recorded in schema_migrations.",
    )(func)
    func = click.option("--schema", default="public", show_default=True, help="Schema of the legacy tables.")(func)
    func = prefix_option(func)
    return database_url_option(required=True)(func)


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[Any]:
    """A rich progress bar per step, with rows/s; nothing when printing JSON."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    class RowsPerSecond(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "")

    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        console=err_console,
    ) as bars:

        def update(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=max(total, 1))
            bars.update(tasks[step], completed=done, total=max(total, done, 1))

        yield update


def _print_summary(summary: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
        return
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    for notice in summary.notices:
        click.echo(f"notice: {notice}")
    table = Table(title=f"migrate {summary.action}")
    table.add_column("table")
    table.add_column("legacy rows")
    table.add_column("archival jobs")
    for name in sorted(set(summary.rows) | set(summary.archived)):
        table.add_row(name, str(summary.rows.get(name, "")), str(summary.archived.get(name, "")))
    Console().print(table)
    if summary.export:
        click.echo(f"export: {summary.export}")
    if summary.lock_held_seconds is not None:
        click.echo(f"legacy tables locked for {summary.lock_held_seconds * 1000:.0f} ms")
    click.echo(f"done in {summary.seconds:.1f} s")


@main.group()
def migrate() -> None:
    """RemoveRedundantImportTables: move failed_imdb_lookups and skipped_imports into job meta."""


@migrate.command("plan")
@_migration_options
@click.option("--compat-views", is_flag=True, help="Also create read-only views with the old tables' names.")
@click.option("--audit-log", is_flag=True, help="Also keep every row in an import_audit_log table.")
@friendly_errors
def migrate_plan(
    database_url: str,
    prefix: str,
    schema: str,
    version: int,
    export_dir: Path,
    as_json: bool,
    compat_views: bool,
    audit_log: bool,
) -> None:
    """Print every SQL statement `up` would run, without touching the database."""
    steps = _migration(
        database_url, prefix, schema, version, export_dir, compat_views=compat_views, audit_log=audit_log
    ).plan()
    if as_json:
        click.echo(json.dumps([{"step": name, "statements": statements} for name, statements in steps], indent=2))
        return
    for name, statements in steps:
        click.echo(f"-- {name}")
        for statement in statements:
            click.echo(statement)
        click.echo()


@migrate.command("up")
@_migration_options
@click.option(
    "--compat-views", is_flag=True, help="Create read-only views with the old tables' names over the job meta."
)
@click.option("--audit-log", is_flag=True, help="Also keep every row durably in an import_audit_log table.")
@click.option("--batch-size", type=click.IntRange(1), default=50_000, show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask before dropping the tables.")
@friendly_errors
def migrate_up(
    database_url: str,
    prefix: str,
    schema: str,
    version: int,
    export_dir: Path,
    as_json: bool,
    compat_views: bool,
    audit_log: bool,
    batch_size: int,
    yes: bool,
) -> None:
    """Export, backfill into Oban job meta, verify, drop the legacy tables and record the migration."""
    if not yes and not click.confirm(
        f"This drops {schema}.failed_imdb_lookups and {schema}.skipped_imports after exporting them to "
        f"{export_dir} and verifying every row. Go on?",
        err=True,
    ):
        _fail("nothing was changed", 1)
    with _progress_bars(not as_json) as progress:
        migration = _migration(
            database_url,
            prefix,
            schema,
            version,
            export_dir,
            compat_views=compat_views,
            audit_log=audit_log,
            batch_size=batch_size,
            progress=progress,
        )
        summary = migration.up()
    _print_summary(summary, as_json)


@migrate.command("down")
@_migration_options
@click.option(
    "--from-export",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Restore from this export directory instead of the archival jobs (when the Pruner removed some).",
)
@click.option("--yes", is_flag=True, help="Do not ask before restoring.")
@friendly_errors
def migrate_down(
    database_url: str,
    prefix: str,
    schema: str,
    version: int,
    export_dir: Path,
    as_json: bool,
    from_export: Path | None,
    yes: bool,
) -> None:
    """Recreate both tables exactly and restore every row; remove the archival jobs."""
    if not yes and not click.confirm(
        f"This recreates {schema}.failed_imdb_lookups and {schema}.skipped_imports and deletes the "
        "archival jobs. Go on?",
        err=True,
    ):
        _fail("nothing was changed", 1)
    summary = _migration(database_url, prefix, schema, version, export_dir).down(from_export)
    _print_summary(summary, as_json)


@migrate.command("status")
@_migration_options
@friendly_errors
def migrate_status(database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool) -> None:
    """Where the migration stands: tables, archival jobs, the schema_migrations record."""
    status = _migration(database_url, prefix, schema, version, export_dir).status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(
        f"state: {status['state']}; recorded in schema_migrations: {status['recorded']}; export: {status['export']}"
    )
    for name, entry in status["tables"].items():
        click.echo(f"  {name}: {entry}")


@migrate.command("verify")
@_migration_options
@friendly_errors
def migrate_verify(database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool) -> None:
    """Compare every legacy row with its archival job (read-only); exits 1 on any finding."""
    summary = _migration(database_url, prefix, schema, version, export_dir).verify()
    _print_summary(summary, as_json)
    if summary.findings:
        for finding in summary.findings:
            err_console.print(f"[red]finding:[/] {finding}")
        sys.exit(1)


@main.command("export")
@_migration_options
@friendly_errors
def export_command(database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool) -> None:
    """Export both legacy tables (compressed JSON Lines + manifest with SHA-256), changing nothing."""
    with _progress_bars(not as_json) as progress:
        manifest = _migration(database_url, prefix, schema, version, export_dir, progress=progress).export()
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        for table, entry in manifest["tables"].items():
            click.echo(
                f"{table}: {entry['rows']} rows -> {export_dir / entry['file']} (sha256 {entry['sha256'][:16]}...)"
            )


@main.command("jobs")
@database_url_option(required=True)
@prefix_option
@json_option
@click.option("--worker", help="Worker module (an Elixir. prefix is dropped).")
@click.option("--state", "states", multiple=True, help="Job state; repeat for several.")
@click.option("--queue", help="Queue name.")
@click.option("--meta", "meta_pairs", multiple=True, help="key=value that meta must contain; repeat for several.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many rows, newest first (0: all).")
@friendly_errors
def jobs_command(
    database_url: str,
    prefix: str,
    as_json: bool,
    worker: str | None,
    states: tuple[str, ...],
    queue: str | None,
    meta_pairs: tuple[str, ...],
    limit: int,
) -> None:
    """List jobs by worker, state, queue and meta (containment, served by Oban's GIN index)."""
    from cinegraph_oban.queries import jobs, read_jobs

    query = jobs(prefix)
    if worker:
        query = query.worker(worker)
    if states:
        try:
            query = query.states(*states)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--state") from exc
    if queue:
        query = query.queue(queue)
    pairs: dict[str, str] = {}
    for pair in meta_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--meta")
        pairs[key] = value
    if pairs:
        query = query.meta_contains(pairs)
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with Oban.connect(database_url, prefix=prefix) as oban:
        oban.schema()
        rows = list(read_jobs(oban.connection, query))
    shown = [
        {
            "id": r["id"],
            "state": r["state"],
            "queue": r["queue"],
            "worker": r["worker"],
            "args": r["args"],
            "meta": r["meta"],
            "attempt": r["attempt"],
            "inserted_at": r["inserted_at"].isoformat(),
        }
        for r in rows
    ]
    _emit(
        shown,
        ["id", "state", "queue", "worker", "args", "meta", "attempt", "inserted_at"],
        "json" if as_json else "table",
        "Jobs",
    )
