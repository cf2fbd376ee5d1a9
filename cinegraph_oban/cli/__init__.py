"""The `cinegraph-oban` command line.

Every command takes `--database-url` (or `DATABASE_URL`) and `--prefix`; errors are printed as
one line on stderr with a non-zero exit, never as a traceback.

`main` is the group; each command group lives in a module of its own (`demo`, `schema`,
`enqueue`, `jobs`, `indexes`, `migrate`), on the machinery of `common`. No command runs SQL of
its own: each calls the library.
"""

from __future__ import annotations

import click

from cinegraph_oban import __version__
from cinegraph_oban.cli import demo, enqueue, indexes, jobs, migrate, schema
from cinegraph_oban.cli.common import Cli

__all__ = ["main"]


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cinegraph-oban")
def main() -> None:
    """Write Oban jobs from Python, record import outcomes in job meta, and retire Cinegraph's
    legacy import tables."""


for command in (
    demo.demo,
    schema.schema,
    enqueue.enqueue,
    jobs.jobs_command,
    jobs.failures,
    jobs.skipped,
    indexes.indexes,
    migrate.migrate,
    migrate.export_command,
):
    main.add_command(command)
