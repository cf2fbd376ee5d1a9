"""`cinegraph-oban indexes create` and `indexes drop`: the opt-in partial indexes for `failures`
and `skipped`."""

from __future__ import annotations

import click

from cinegraph_oban.cli.common import Group, database_url_option, fail, friendly_errors, open_client, prefix_option


@click.group(cls=Group)
def indexes() -> None:
    """Opt-in partial indexes that make `failures` and `skipped` read a small index."""


@indexes.command("create")
@database_url_option(required=True)
@prefix_option
@friendly_errors
def indexes_create(database_url: str, prefix: str) -> None:
    """Build the indexes CONCURRENTLY (inserts go on meanwhile); those already there are kept."""
    from cinegraph_oban.meta.queries import OUTCOME_INDEXES, create_outcome_indexes, outcome_index_state

    with open_client(database_url, prefix) as oban:
        oban.schema()
        before = outcome_index_state(oban.connection, prefix)
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
        fail(
            f"{', '.join(invalid)} {'is' if len(invalid) == 1 else 'are'} INVALID and unused by PostgreSQL: run "
            "`cinegraph-oban indexes drop`, then `cinegraph-oban indexes create` again"
        )


@indexes.command("drop")
@database_url_option(required=True)
@prefix_option
@friendly_errors
def indexes_drop(database_url: str, prefix: str) -> None:
    """Drop the indexes CONCURRENTLY."""
    from cinegraph_oban.meta.queries import OUTCOME_INDEXES, create_outcome_indexes, outcome_index_state

    with open_client(database_url, prefix) as oban:
        before = outcome_index_state(oban.connection, prefix)
        create_outcome_indexes(oban.connection, prefix, drop=True)
    for name in OUTCOME_INDEXES:
        click.echo(f"{name}: {'dropped' if name in before else 'was not there'}")
