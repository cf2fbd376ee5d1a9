"""The `cinegraph-oban` command line.

Every command takes `--database-url` (or `DATABASE_URL`) and `--prefix`; errors are printed as
one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import psycopg
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cinegraph_oban import __version__
from cinegraph_oban.client import Oban
from cinegraph_oban.connections import connect, normalize_dsn
from cinegraph_oban.errors import CinegraphObanError, DatabaseUrlError, first_line
from cinegraph_oban.health import Health, health
from cinegraph_oban.identifiers import check_identifier, check_prefix
from cinegraph_oban.job import Job
from cinegraph_oban.schema import LATEST_VERSION, SUPPORTED_VERSIONS, install
from cinegraph_oban.unique import DEFAULT_OBAN_VERSION, check_oban_version

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)


def _client(database_url: str, prefix: str, oban_version: str = DEFAULT_OBAN_VERSION) -> Oban:
    """A client on one autocommit connection of its own: a command runs one thing at a time,
    and reads through `oban.connection` what it wrote."""
    check_prefix(prefix)  # before connecting: a refused prefix leaves no connection open
    check_oban_version(oban_version)
    return Oban(connect(database_url, autocommit=True), prefix=prefix, owns_connection=True, oban_version=oban_version)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
            _fail(f"database error: {first_line(exc)}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as exc:  # files: an unwritable or full export directory, a damaged archive
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            _fail(f"{exc.strerror or exc}{where}")
        return None

    return wrapper  # type: ignore[return-value]


def _usage_line(exc: click.UsageError) -> str:
    """A usage error as one line: the message and where the help is."""
    message = " ".join(exc.format_message().split())
    path = exc.ctx.command_path if exc.ctx is not None else "cinegraph-oban"
    return f"{message} (see {path} --help)"


class _UsageErrorsKnowTheCommand(click.Command):
    """Usage errors raised while parsing carry the command's context (for the `see ... --help` hint)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            raise


class _Command(_UsageErrorsKnowTheCommand):
    """A command whose usage errors know the command."""


class _Group(_UsageErrorsKnowTheCommand, click.Group):
    """A group whose commands are `_Command`s and whose own usage errors know the group."""

    command_class = _Command


class _Cli(_Group):
    """The command group, printing every usage error as one line instead of click's Usage block."""

    group_class = _Group

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            _fail(_usage_line(exc), exc.exit_code)
        except click.ClickException as exc:
            _fail(" ".join(exc.format_message().split()), exc.exit_code)
        except click.Abort:
            err_console.print()  # end the prompt's line
            _fail("aborted; nothing was changed", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _database_url(required: bool) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None or not value.strip():
            if required:
                raise click.UsageError("no database given: pass --database-url or set DATABASE_URL", ctx=ctx)
            return None
        try:
            return normalize_dsn(value)
        except DatabaseUrlError as exc:
            raise click.UsageError(str(exc), ctx=ctx) from None

    return callback


def database_url_option(required: bool) -> Callable[[F], F]:
    """`--database-url URL`, or DATABASE_URL; Ecto and SQLAlchemy URLs are read as PostgreSQL's own."""
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        metavar="URL",
        callback=_database_url(required),
        help="PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1/cinegraph; ecto://, postgres:// and "
        "postgresql+psycopg:// URLs and libpq key=value work too."
        + ("" if required else " Without one, a throwaway local PostgreSQL is started."),
    )


prefix_option = click.option("--prefix", default="public", show_default=True, help="The Oban prefix (a schema).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
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
    with _client(database_url, prefix) as oban:
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
        for option in _options_given(ctx, {"legacy_rows": "--legacy-rows", "legacy_schema": "--schema"}):
            raise click.UsageError(f"{option} only applies with --legacy-tables", ctx=ctx)
    # Both names before connecting: a refused legacy schema must not leave an installed Oban behind.
    check_prefix(prefix)
    if legacy_tables:
        check_identifier(legacy_schema, field="schema")
    with connect(database_url, autocommit=True) as conn:
        if legacy_tables:
            existing = _legacy_kinds(conn, legacy_schema)
            if existing:
                found_text = ", ".join(f"{t} ({kind})" for t, kind in existing.items())
                _fail(
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
            _create_legacy_sample(conn, legacy_schema, legacy_rows)
            click.echo(
                f"legacy tables under {legacy_schema!r}: failed_imdb_lookups and skipped_imports with "
                f"{legacy_rows:,} rows each, and {legacy_schema}.schema_migrations; next: cinegraph-oban migrate plan"
                + ("" if legacy_schema == "public" else f" --schema {legacy_schema}")
                + ("" if prefix == "public" else f" --prefix {prefix}")
            )


def _options_given(ctx: click.Context, options: dict[str, str]) -> list[str]:
    """Of `options` (parameter name -> flag), the flags the user gave (on the command line or
    through the environment) rather than left at their defaults."""
    return [
        flag for name, flag in options.items() if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    ]


_RELATION_KINDS = {"r": "a table", "v": "a view", "m": "a materialized view", "p": "a table", "f": "a foreign table"}


def _legacy_kinds(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """The legacy names that exist under `schema`, with what each is."""
    from cinegraph_oban.migration import LEGACY_TABLES, relation_kind

    found: dict[str, str] = {}
    for table in LEGACY_TABLES:
        kind = relation_kind(conn, schema, table)
        if kind:
            found[table] = _RELATION_KINDS.get(kind, f"relkind {kind}")
    return found


def _create_legacy_sample(conn: psycopg.Connection[Any], schema: str, rows: int) -> None:
    """Both legacy tables as the Ecto migrations made them, `rows` sample rows each, and schema_migrations."""
    from cinegraph_oban.migration import create_legacy_tables
    from cinegraph_oban.templates import render, render_statements

    with conn.transaction():
        conn.execute(render("legacy/create_schema.sql.j2", schema=schema).encode(), {})
        create_legacy_tables(conn, schema)
        for statement in render_statements("legacy/sample_rows.sql.j2", schema=schema):
            conn.execute(statement.encode(), {"rows": rows})
        conn.execute(render("demo/create_schema_migrations.sql.j2", schema=schema).encode(), {})


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
    help="JSON Lines file, one job per line: {worker, args, meta, queue, priority, ...}; inserted all or nothing "
    "as one bulk insert, like Oban's insert_all: uniqueness is NOT applied. Not with --worker, --args, --meta.",
)
@click.option(
    "--oban-version",
    default=DEFAULT_OBAN_VERSION,
    show_default=True,
    envvar="CINEGRAPH_OBAN_VERSION",
    help="The Oban your Elixir application runs: its default unique states apply (2.23.1 and later "
    "count a suspended job as a duplicate).",
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
    oban_version: str,
    as_json: bool,
) -> None:
    """Enqueue one job (the worker's unique options apply), or a JSON Lines file of jobs (a bulk
    insert: no uniqueness, like Oban's insert_all)."""
    if jobs_file is not None:
        ctx = click.get_current_context()
        given = _options_given(
            ctx,
            {
                "worker": "--worker",
                "args_text": "--args",
                "meta_text": "--meta",
                "queue": "--queue",
                "priority": "--priority",
                "schedule_in": "--schedule-in",
            },
        )
        if given:
            raise click.UsageError(
                f"--file cannot be combined with {', '.join(given)}: each line of the file gives its own job",
                ctx=ctx,
            )
        jobs = _read_jobs_file(jobs_file)
        with _client(database_url, prefix) as oban:
            inserted = oban.insert_all(jobs)
        summary = {
            "inserted": len(inserted),
            "first_id": inserted[0].id if inserted else None,
            "unique_applied": False,
        }
        if as_json:
            click.echo(json.dumps(summary))
        else:
            click.echo(
                f"inserted {len(inserted)} jobs from {jobs_file} as one bulk insert "
                "(uniqueness is not applied to --file, as with Oban's insert_all)"
            )
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
    with _client(database_url, prefix, oban_version) as oban:
        stored = oban.insert(job)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": stored.id,
                    "worker": stored.worker,
                    "state": stored.state,
                    "queue": stored.queue,
                    "conflict": stored.conflict,
                }
            )
        )
    else:
        note = " (an existing unique job)" if stored.conflict else ""
        resolved = f" (resolved from {worker!r})" if stored.worker != worker else ""
        click.echo(f"job {stored.id} {stored.state} in queue {stored.queue!r}: {stored.worker}{resolved}{note}")


_JOB_KEYS = {"worker", "args", "meta", "queue", "priority", "max_attempts", "tags", "schedule_in", "scheduled_at"}
#: How many bad lines of a --file are reported one by one.
_MAX_REPORTED_LINES = 20


def _read_jobs_file(path: Path) -> Iterator[Job]:
    """The jobs of a JSON Lines file, streamed. After the first bad line nothing more is yielded,
    the rest is still read, and every bad line is reported at the end (CinegraphObanError), so
    the all-or-nothing insert rolls back and inserts nothing."""
    problems: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                job = _job_from_line(line)
            except CinegraphObanError as exc:
                problems.append(f"{path}:{number}: {' '.join(str(exc).split())}")
                continue
            if not problems:
                yield job
    if problems:
        shown = problems[:_MAX_REPORTED_LINES]
        more = len(problems) - len(shown)
        lines = "\n  ".join(shown) + (f"\n  and {more} more" if more else "")
        raise CinegraphObanError(
            f"{path}: {len(problems)} bad line{'s' if len(problems) != 1 else ''}; nothing was inserted\n  {lines}"
        )


def _job_from_line(line: str) -> Job:
    try:
        spec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CinegraphObanError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(spec, dict) or "worker" not in spec:
        raise CinegraphObanError("each line must be a JSON object with a 'worker'")
    unknown = sorted(set(spec) - _JOB_KEYS)
    if unknown:
        raise CinegraphObanError(f"unknown keys {unknown}; known: {sorted(_JOB_KEYS)}")
    if isinstance(spec.get("scheduled_at"), str):
        try:
            spec["scheduled_at"] = datetime.fromisoformat(spec["scheduled_at"])
        except ValueError as exc:
            raise CinegraphObanError(f"scheduled_at {spec['scheduled_at']!r} is not an ISO date/time") from exc
    try:
        return Job.new(**spec)
    except CinegraphObanError:
        raise
    except (TypeError, ValueError) as exc:
        raise CinegraphObanError(f"not a valid job: {exc}") from exc


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
        raise click.BadParameter(
            f"{value!r} is neither an ISO date/time nor a duration like 7d, 12h or 30m", param_hint="--since"
        ) from exc


def _compact(value: Any) -> str:
    """A cell's text: JSON for maps and lists (compact, as Elixir and psql show them), else str()."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


#: Longest text put in a table cell before rich cuts it to the column's width.
_CELL_LIMIT = 200


def _emit(rows: list[dict[str, Any]], columns: list[str], output: str, title: str) -> None:
    if output == "json":
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
    elif output == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list | tuple) else v
                    for k, v in row.items()
                }
            )
    else:
        from rich import box
        from rich.text import Text

        texts = [[_cell_text(row.get(column)) for column in columns] for row in rows]
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        for index, column in enumerate(columns):
            natural = max([len(column), *(len(cells[index]) for cells in texts)])
            # Short columns (ids, states, counts) keep their width; long ones give way, cut with "…".
            table.add_column(column, overflow="ellipsis", no_wrap=natural <= _SHORT_COLUMN)
        for cells in texts:
            table.add_row(*(Text(text, overflow="ellipsis", no_wrap=True) for text in cells))
        Console().print(table)
        click.echo(f"{len(rows)} rows")


#: Columns no wider than this are never narrowed in a table.
_SHORT_COLUMN = 12
_ISO_FRACTION = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def _cell_text(value: Any) -> str:
    """A table cell: compact JSON for maps and lists, timestamps to the second, long text cut."""
    if value is None:
        return ""
    text = _compact(value)
    if isinstance(value, str):
        match = _ISO_FRACTION.match(text)
        if match:
            text = f"{match[1]} {match[2]}{match[3] or ''}"
    if len(text) > _CELL_LIMIT:
        text = text[: _CELL_LIMIT - 1] + "…"
    return text


def _output_format(as_json: bool, as_csv: bool = False) -> str:
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together; pick one")
    return "json" if as_json else "csv" if as_csv else "table"


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

    output = _output_format(as_json, as_csv)
    query = failed_lookups(
        prefix=prefix, states=states or ("discarded", "cancelled"), source=source, since=_parse_since(since)
    )
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with _client(database_url, prefix) as oban:
        oban.schema()
        rows = [_record_row(r) for r in read_failed_lookups(oban.connection, query)]
    columns = [
        "imdb_id",
        "title",
        "year",
        "source",
        "source_key",
        "reason",
        "retry_count",
        "inserted_at",
        "id",
        "unknown",
    ]
    _emit(rows, columns, output, "Failed IMDb lookups (no TMDb match)")


@main.command()
@_output_options
@friendly_errors
def skipped(database_url: str, prefix: str, since: str | None, limit: int, as_json: bool, as_csv: bool) -> None:
    """Movies soft-imported for failing the quality criteria (what skipped_imports held), newest first."""
    from cinegraph_oban.queries import quality_skipped_imports, read_skipped_imports

    output = _output_format(as_json, as_csv)
    query = quality_skipped_imports(prefix=prefix, since=_parse_since(since))
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with _client(database_url, prefix) as oban:
        oban.schema()
        rows = [_record_row(r) for r in read_skipped_imports(oban.connection, query)]
    columns = ["tmdb_id", "title", "reason", "criteria_failed", "checked_at", "inserted_at", "id"]
    _emit(rows, columns, output, "Quality-filtered (soft) imports")


def _record_row(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    row = asdict(record)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@main.group()
def indexes() -> None:
    """Opt-in partial indexes that make `failures` and `skipped` read a small index."""


def _outcome_index_state(conn: psycopg.Connection[Any], prefix: str) -> dict[str, bool]:
    """The opt-in indexes that exist under `prefix`, each with whether it is valid."""
    from cinegraph_oban.queries import OUTCOME_INDEXES
    from cinegraph_oban.templates import render

    rows = conn.execute(
        render("indexes/outcome_index_state.sql.j2").encode(), {"prefix": prefix, "names": list(OUTCOME_INDEXES)}
    ).fetchall()
    return {str(name): bool(valid) for name, valid in rows}


@indexes.command("create")
@database_url_option(required=True)
@prefix_option
@friendly_errors
def indexes_create(database_url: str, prefix: str) -> None:
    """Build the indexes CONCURRENTLY (inserts go on meanwhile); those already there are kept."""
    from cinegraph_oban.queries import OUTCOME_INDEXES, create_outcome_indexes

    with _client(database_url, prefix) as oban:
        oban.schema()
        before = _outcome_index_state(oban.connection, prefix)
        create_outcome_indexes(oban.connection, prefix)
    invalid = [name for name, valid in before.items() if not valid]
    for name in OUTCOME_INDEXES:
        if name not in before:
            click.echo(f"{name}: created on {prefix}.oban_jobs")
        elif before[name]:
            click.echo(f"{name}: already there on {prefix}.oban_jobs")
        else:
            click.echo(f"{name}: already there but INVALID (an earlier build failed half-way)")
    if invalid:
        _fail(
            f"{', '.join(invalid)} {'is' if len(invalid) == 1 else 'are'} INVALID and unused by PostgreSQL: run "
            "`cinegraph-oban indexes drop`, then `cinegraph-oban indexes create` again"
        )


@indexes.command("drop")
@database_url_option(required=True)
@prefix_option
@friendly_errors
def indexes_drop(database_url: str, prefix: str) -> None:
    """Drop the indexes CONCURRENTLY."""
    from cinegraph_oban.queries import OUTCOME_INDEXES, create_outcome_indexes

    with _client(database_url, prefix) as oban:
        before = _outcome_index_state(oban.connection, prefix)
        create_outcome_indexes(oban.connection, prefix, drop=True)
    for name in OUTCOME_INDEXES:
        click.echo(f"{name}: {'dropped' if name in before else 'was not there'}")


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
    for column in ("present as", "rows", "archival jobs", "last archived id"):
        table.add_column(column, justify="right" if column != "present as" else "left")
    for name, entry in status["tables"].items():
        table.add_row(
            name,
            entry["present"],
            f"{entry['rows']:,}" if "rows" in entry else "",
            f"{entry['archived_jobs']:,}",
            str(entry["last_archived_id"]) if entry["last_archived_id"] else "",
        )
    Console().print(table)
    if status["export"]:
        click.echo(f"export: manifest found at {Path(status['export']).resolve()}")
    else:
        click.echo(f"export: no manifest.json in {_export_where(export_dir)}")


@migrate.command("verify")
@_migration_options
@friendly_errors
def migrate_verify(database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool) -> None:
    """Compare every legacy row with its archival job (read-only); exits 1 on any finding, and when
    the legacy tables are gone but no export is there to compare the archival jobs with. Archival
    jobs Oban's Pruner has deleted are reported as a notice, not a finding: the export holds them."""
    migration = _migration(database_url, prefix, schema, version, export_dir)
    summary = migration.verify()
    unverified = summary.unverified
    _print_summary(summary, as_json)
    if summary.findings:
        for finding in summary.findings:
            err_console.print(f"[red]finding:[/] {escape(str(finding))}", highlight=False, soft_wrap=True)
    if unverified:
        jobs_text = ", ".join(f"{n:,} for {name}" for name, n in unverified.items())
        _fail(
            f"nothing verified the archival jobs ({jobs_text}): the legacy tables are gone and there is no export "
            f"in {_export_where(export_dir)}; pass --export-dir <the directory `migrate up` exported to>"
        )
    if summary.findings:
        sys.exit(1)
    if not as_json:
        click.echo("no findings")


@main.command("export")
@_migration_options
@click.option("--force", is_flag=True, help="Overwrite an export already in --export-dir.")
@friendly_errors
def export_command(
    database_url: str, prefix: str, schema: str, version: int, export_dir: Path, as_json: bool, force: bool
) -> None:
    """Export both legacy tables (compressed JSON Lines + manifest with SHA-256), changing nothing."""
    manifest_path = export_dir / "manifest.json"
    if manifest_path.exists() and not force:
        _fail(
            f"{manifest_path} already exists (an earlier export); pass --force to overwrite it, or another --export-dir"
        )
    from cinegraph_oban.migration import LEGACY_TABLES

    check_prefix(prefix)
    check_identifier(schema, field="schema")
    with connect(database_url, autocommit=True) as conn:
        existing = _legacy_kinds(conn, schema)
    tables = [name for name, kind in existing.items() if kind == "a table"]
    if not tables:
        _fail(f"no legacy tables under schema {schema!r} ({', '.join(LEGACY_TABLES)}); nothing to export")
    if len(tables) < len(LEGACY_TABLES):
        missing = [t for t in LEGACY_TABLES if t not in tables]
        _fail(
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


@main.command("jobs")
@database_url_option(required=True)
@prefix_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
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
    as_csv: bool,
    worker: str | None,
    states: tuple[str, ...],
    queue: str | None,
    meta_pairs: tuple[str, ...],
    limit: int,
) -> None:
    """List jobs by worker, state, queue and meta (containment, served by Oban's GIN index)."""
    from cinegraph_oban.queries import jobs, read_jobs

    output = _output_format(as_json, as_csv)
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
    with _client(database_url, prefix) as oban:
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
        output,
        "Jobs",
    )
