"""`cinegraph-oban demo`: the whole story on a throwaway or scratch database."""

from __future__ import annotations

import click

from cinegraph_oban.cli.common import Command, database_url_option, friendly_errors, out_console


@click.command(cls=Command)
@database_url_option(required=False)
@click.option("--jobs", default=2_000, show_default=True, help="How many import jobs to enqueue.")
@friendly_errors
def demo(database_url: str | None, jobs: int) -> None:
    """Enqueue a realistic batch of import jobs and show what Oban would run next.

    Without a database it starts a throwaway local PostgreSQL; with one it works in a scratch
    schema that it drops afterwards.
    """
    from cinegraph_oban.demo import run_demo

    run_demo(database_url, jobs=jobs, console=out_console())
