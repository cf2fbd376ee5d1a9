"""`cinegraph-oban schema show` and `schema install`: the Oban schema, its health, and Cinegraph's
legacy tables for trying the migration on."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from cinegraph_oban.cli.common import (
    Group,
    database_url_option,
    fail,
    friendly_errors,
    json_option,
    open_client,
    options_given,
    out_console,
    prefix_option,
)
from cinegraph_oban.db.connections import connect
from cinegraph_oban.db.identifiers import check_identifier, check_prefix
from cinegraph_oban.migration.legacy import legacy_kinds
from cinegraph_oban.migration.sample_data import create_legacy_sample
from cinegraph_oban.oban.health import Health, health
from cinegraph_oban.oban.table import LATEST_VERSION, SUPPORTED_VERSIONS, install


@click.group(cls=Group)
def schema() -> None:
    """Show or install the Oban schema."""


@schema.command("show")
@database_url_option(required=True)
@prefix_option
@json_option
@friendly_errors
def schema_show(database_url: str, prefix: str, as_json: bool) -> None:
    """The detected Oban version, states, column types and indexes, and the table's health."""
    with open_client(database_url, prefix) as oban:
        found = oban.schema()
        checked = health(oban.connection, prefix, schema=found)
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
    console = out_console()
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
@click.option(
    "--legacy-tables",
    is_flag=True,
    help="Also create Cinegraph's failed_imdb_lookups and skipped_imports (as the original Ecto migrations made "
    "them) with sample rows, and schema_migrations: a scratch database to try `migrate` on.",
)
@click.option(
    "--legacy-rows",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    metavar="N",
    help="Sample rows in each legacy table (with --legacy-tables).",
)
@click.option("--schema", "legacy_schema", default="public", show_default=True, help="Schema of the legacy tables.")
@friendly_errors
def schema_install(
    database_url: str,
    prefix: str,
    version: int,
    legacy_tables: bool,
    legacy_rows: int,
    legacy_schema: str,
) -> None:
    """Create or upgrade the Oban schema, as Oban.Migration.up(version: N) does.

    With --legacy-tables, also Cinegraph's two legacy import tables with realistic rows, to try
    `cinegraph-oban migrate` on a scratch database.
    """
    ctx = click.get_current_context()
    if not legacy_tables:
        for option in options_given(ctx, {"legacy_rows": "--legacy-rows", "legacy_schema": "--schema"}):
            raise click.UsageError(f"{option} only applies with --legacy-tables", ctx=ctx)
    # Both names before connecting: a refused legacy schema must not leave an installed Oban behind.
    check_prefix(prefix)
    if legacy_tables:
        check_identifier(legacy_schema, field="schema")
    with connect(database_url, autocommit=True) as conn:
        if legacy_tables:
            existing = legacy_kinds(conn, legacy_schema)
            if existing:
                found_text = ", ".join(f"{t} ({kind})" for t, kind in existing.items())
                fail(
                    f"the legacy tables already exist under schema {legacy_schema!r}: {found_text}; nothing was "
                    "changed (drop them, or use another --schema)"
                )
        found = install(conn, version, prefix)
        if found > version:
            click.echo(
                f"Oban schema under {prefix!r} is already at version {found} (newer than {version}); nothing to do"
            )
        elif found == version:
            click.echo(f"Oban schema under {prefix!r} is already at version {found}; nothing to do")
        elif found == 0:
            click.echo(f"Oban schema under {prefix!r}: installed version {version}")
        else:
            click.echo(f"Oban schema under {prefix!r}: upgraded from version {found} to {version}")
        if legacy_tables:
            create_legacy_sample(conn, legacy_schema, legacy_rows)
            click.echo(
                f"legacy tables under {legacy_schema!r}: failed_imdb_lookups and skipped_imports with "
                f"{legacy_rows:,} rows each, and {legacy_schema}.schema_migrations; next: cinegraph-oban migrate plan"
                + ("" if legacy_schema == "public" else f" --schema {legacy_schema}")
                + ("" if prefix == "public" else f" --prefix {prefix}")
            )
