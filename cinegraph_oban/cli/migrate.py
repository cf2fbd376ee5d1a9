"""`cinegraph-oban migrate plan|up|down|status|verify` and `export`: RemoveRedundantImportTables,
which moves Cinegraph's legacy import tables into job meta."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.table import Table

from cinegraph_oban.cli.common import (
    Command,
    F,
    Group,
    database_url_option,
    err_console,
    fail,
    friendly_errors,
    json_option,
    out_console,
    prefix_option,
)
from cinegraph_oban.db.connections import connect
from cinegraph_oban.db.identifiers import check_identifier, check_prefix
from cinegraph_oban.migration.legacy import legacy_kinds


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
    from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables

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
    from cinegraph_oban.migration.steps import DEFAULT_VERSION

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

    tasks: dict[str, Any] = {}
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}", markup=False),  # rows/s, set at each update
        TimeElapsedColumn(),
        console=err_console(),
    )
    # Shown from the first update on (the per-table workers report from their threads): a run
    # that fails before any step, as on a refused URL, prints its error line and nothing else.
    guard = threading.Lock()
    closed = False

    def update(step: str, done: int, total: int) -> None:
        with guard:
            if closed:  # a worker reporting after the run ended (a second Ctrl-C): not shown
                return
            if not bars.live.is_started:
                bars.start()
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=max(total, 1), rate="")
        bars.update(tasks[step], completed=done, total=max(total, done, 1))
        # A task's speed changes only when it is updated: its text is made here, once.
        task = next(t for t in bars.tasks if t.id == tasks[step])
        speed = task.finished_speed or task.speed
        bars.update(tasks[step], rate=f"{speed:,.0f} rows/s" if speed else "")

    try:
        yield update
    finally:
        with guard:
            closed = True
            if bars.live.is_started:
                bars.stop()


def _print_summary(summary: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
        return
    for warning in summary.warnings:
        err_console().print(f"[yellow]warning:[/] {warning}")
    for notice in summary.notices:
        click.echo(f"notice: {notice}")
    table = Table(title=f"migrate {summary.action}")
    table.add_column("table")
    table.add_column("legacy rows")
    table.add_column("archival jobs")
    for name in sorted(set(summary.rows) | set(summary.archived)):
        table.add_row(name, str(summary.rows.get(name, "")), str(summary.archived.get(name, "")))
    out_console().print(table)
    if summary.export:
        click.echo(f"export: {summary.export}")
    if summary.lock_held_seconds is not None:
        click.echo(f"legacy tables locked for {summary.lock_held_seconds * 1000:.0f} ms")
    click.echo(f"done in {summary.seconds:.1f} s")


@click.group(cls=Group)
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
        fail("nothing was changed", 1)
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
        try:
            summary = migration.up()
        except KeyboardInterrupt:
            fail(
                "interrupted; nothing is half-written (each batch is one statement, the drop one transaction). "
                "`cinegraph-oban migrate up` finishes from here, applying whatever changed meanwhile; "
                "`cinegraph-oban migrate down` removes what this run wrote; `migrate status` shows where it stands",
                130,
            )
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
        fail("nothing was changed", 1)
    summary = _migration(database_url, prefix, schema, version, export_dir).down(from_export)
    _print_summary(summary, as_json)


def _export_where(export_dir: Path) -> str:
    """The export directory as shown to the user: absolute, and whether it is the default."""
    default = click.get_current_context().get_parameter_source("export_dir") == ParameterSource.DEFAULT
    return f"{export_dir.resolve()}" + (" (the default --export-dir)" if default else "")


@migrate.command("status")
@_migration_options
@friendly_errors
def migrate_status(database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool) -> None:
    """Where the migration stands: tables, archival jobs, the schema_migrations record, the export."""
    status = _migration(database_url, prefix, schema, version, export_dir).status()
    if as_json:
        click.echo(json.dumps({**status, "export_dir": str(export_dir)}, indent=2))
        return
    recorded = {
        True: f"recorded in {schema}.schema_migrations (version {version})",
        False: f"not recorded in {schema}.schema_migrations (version {version})",
        None: f"{schema}.schema_migrations does not exist",
    }[status["recorded"]]
    click.echo(f"RemoveRedundantImportTables: {status['state']}; {recorded}")
    table = Table(title=f"legacy tables under schema {schema!r}")
    table.add_column("table", no_wrap=True)
    for column in ("present as", "rows", "archival jobs", "last archived id", "writes to apply"):
        table.add_column(column, justify="right" if column != "present as" else "left")
    for name, entry in status["tables"].items():
        table.add_row(
            name,
            entry["present"],
            f"{entry['rows']:,}" if "rows" in entry else f"({entry.get('rows_at_drop', 0):,} at the drop)",
            f"{entry['archived_jobs']:,}",
            str(entry["last_archived_id"]) if entry["last_archived_id"] else "",
            f"{entry['pending_writes']:,}" if "pending_writes" in entry else "",
        )
    out_console().print(table)
    if status["change_capture"]:
        click.echo("change capture: on (the triggers of an unfinished `up` record every write to the legacy tables)")
    if status["export"]:
        click.echo(f"export: manifest found at {Path(status['export']).resolve()}")
    else:
        click.echo(f"export: no manifest.json in {_export_where(export_dir)}")
    click.echo(f"next: {status['next']}")


@migrate.command("verify")
@_migration_options
@friendly_errors
def migrate_verify(database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool) -> None:
    """Compare every legacy row with its archival job (read-only); exits 1 on any finding, and when
    the legacy tables are gone but no export is there to compare the archival jobs with. Archival
    jobs Oban's Pruner has deleted are reported as a notice, not a finding: the export holds them."""
    try:
        with _progress_bars(not as_json) as progress:
            summary = _migration(database_url, prefix, schema, version, export_dir, progress=progress).verify()
    except KeyboardInterrupt:
        fail("interrupted; verify changes nothing: run `cinegraph-oban migrate verify` again", 130)
    unverified = summary.unverified
    _print_summary(summary, as_json)
    if summary.findings:
        for finding in summary.findings:
            err_console().print(f"[red]finding:[/] {escape(str(finding))}", highlight=False, soft_wrap=True)
    if unverified:
        jobs_text = ", ".join(f"{n:,} for {name}" for name, n in unverified.items())
        fail(
            f"nothing verified the archival jobs ({jobs_text}): the legacy tables are gone and there is no export "
            f"in {_export_where(export_dir)}; pass --export-dir <the directory `migrate up` exported to>"
        )
    if summary.findings:
        sys.exit(1)
    if not as_json:
        click.echo("no findings")


@click.command("export", cls=Command)
@_migration_options
@click.option("--force", is_flag=True, help="Overwrite an export already in --export-dir.")
@friendly_errors
def export_command(
    database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool, force: bool
) -> None:
    """Export both legacy tables (compressed JSON Lines + manifest with SHA-256), changing nothing."""
    manifest_path = export_dir / "manifest.json"
    if manifest_path.exists() and not force:
        fail(
            f"{manifest_path} already exists (an earlier export); pass --force to overwrite it, or another --export-dir"
        )
    from cinegraph_oban.migration.legacy import LEGACY_TABLES

    check_prefix(prefix)
    check_identifier(schema, field="schema")
    with connect(database_url, autocommit=True) as conn:
        existing = legacy_kinds(conn, schema)
    tables = [name for name, kind in existing.items() if kind == "a table"]
    if not tables:
        fail(f"no legacy tables under schema {schema!r} ({', '.join(LEGACY_TABLES)}); nothing to export")
    if len(tables) < len(LEGACY_TABLES):
        missing = [t for t in LEGACY_TABLES if t not in tables]
        fail(
            f"only {', '.join(tables)} is a table under schema {schema!r} ({', '.join(missing)} is not); "
            "nothing to export"
        )
    created = not export_dir.exists()
    try:
        with _progress_bars(not as_json) as progress:
            manifest = _migration(database_url, prefix, schema, version, export_dir, progress=progress).export()
    except BaseException:
        if created:
            import shutil

            shutil.rmtree(export_dir, ignore_errors=True)
        raise
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        for table, entry in manifest["tables"].items():
            click.echo(
                f"{table}: {entry['rows']} rows -> {export_dir / entry['file']} (sha256 {entry['sha256'][:16]}...)"
            )
        click.echo(f"manifest: {manifest_path}")
