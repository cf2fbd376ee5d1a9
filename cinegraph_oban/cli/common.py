"""What every command shares: the command and group classes that print usage errors as one
line, `friendly_errors` and `fail`, the `--database-url`, `--prefix` and `--json` options, the
client a command works through, and the table, JSON and CSV output of the listing commands."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import psycopg
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cinegraph_oban.db.connections import connect, normalize_dsn
from cinegraph_oban.db.identifiers import check_prefix
from cinegraph_oban.errors import CinegraphObanError, DatabaseUrlError, first_line
from cinegraph_oban.insert.client import Oban
from cinegraph_oban.model.unique import DEFAULT_OBAN_VERSION, check_oban_version

F = TypeVar("F", bound=Callable[..., Any])


class _Console(Console):
    """rich's Console, but a reader that stopped reading (`| head`) is raised as BrokenPipeError,
    which `friendly_errors` ends quietly with exit 141 as for click's output (rich's own
    handling exits 1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def err_console() -> Console:
    """A console on stderr, made where it is used, as every console of the CLI is: it writes to
    the `sys.stderr` of that moment (click's CliRunner swaps it in tests) and reads the colour
    system and COLUMNS then, not once at import."""
    return _Console(stderr=True)


def out_console() -> Console:
    """A console on stdout, made where it is used (see `err_console`)."""
    return _Console()


def open_client(database_url: str, prefix: str, oban_version: str = DEFAULT_OBAN_VERSION) -> Oban:
    """A client on one autocommit connection of its own: a command runs one thing at a time,
    and reads through `oban.connection` what it wrote."""
    check_prefix(prefix)  # before connecting: a refused prefix leaves no connection open
    check_oban_version(oban_version)
    return Oban(connect(database_url, autocommit=True), prefix=prefix, owns_connection=True, oban_version=oban_version)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Turn every expected failure into one clear line and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CinegraphObanError as exc:
            fail(str(exc))
        except psycopg.Error as exc:
            fail(f"database error: {first_line(exc)}")
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:  # whoever read the output stopped (`| head`): stop quietly, as cat does
            with contextlib.suppress(OSError, ValueError):  # nothing more reaches the closed pipe at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a writer its reader left
        except OSError as exc:  # files: an unwritable or full export directory, a damaged archive
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}")
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


class Command(_UsageErrorsKnowTheCommand):
    """A command whose usage errors know the command."""


class Group(_UsageErrorsKnowTheCommand, click.Group):
    """A group whose commands are `Command`s and whose own usage errors know the group."""

    command_class = Command


class Cli(Group):
    """The command group, printing every usage error as one line instead of click's Usage block."""

    group_class = Group

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
            fail(_usage_line(exc), exc.exit_code)
        except click.ClickException as exc:
            fail(" ".join(exc.format_message().split()), exc.exit_code)
        except click.Abort:
            err_console().print()  # end the prompt's line
            fail("aborted; nothing was changed", 1)
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


def options_given(ctx: click.Context, options: dict[str, str]) -> list[str]:
    """Of `options` (parameter name -> flag), the flags the user gave (on the command line or
    through the environment) rather than left at their defaults."""
    return [
        flag for name, flag in options.items() if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    ]


def _compact(value: Any) -> str:
    """A cell's text: JSON for maps and lists (compact, as Elixir and psql show them), else str()."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


#: Longest text put in a table cell before rich cuts it to the column's width.
_CELL_LIMIT = 200


def emit(rows: list[dict[str, Any]], columns: list[str], output: str, title: str) -> None:
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
        out_console().print(table)
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


def output_format(as_json: bool, as_csv: bool = False) -> str:
    if as_json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together; pick one")
    return "json" if as_json else "csv" if as_csv else "table"
