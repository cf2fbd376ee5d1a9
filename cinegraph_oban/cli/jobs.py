"""`cinegraph-oban jobs`, `failures` and `skipped`: jobs and the import outcomes in their meta,
as a table, JSON or CSV."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from cinegraph_oban.cli.common import (
    Command,
    F,
    database_url_option,
    emit,
    friendly_errors,
    json_option,
    open_client,
    output_format,
    prefix_option,
)


def _parse_since(value: str | None) -> datetime | None:
    """An ISO date/time, or a duration back from now such as 7d, 12h, 30m."""
    if value is None:
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if value[:-1].isdigit() and value[-1:] in units:
        from cinegraph_oban.model.timestamps import utc_now

        return utc_now() - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is neither an ISO date/time nor a duration like 7d, 12h or 30m", param_hint="--since"
        ) from exc


def _output_options(func: F) -> F:
    func = click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")(func)
    func = json_option(func)
    func = click.option("--limit", type=int, default=100, show_default=True, help="At most this many rows (0: all).")(
        func
    )
    func = click.option("--since", help="Jobs inserted since an ISO time or a duration back from now (7d, 12h).")(func)
    func = prefix_option(func)
    return database_url_option(required=True)(func)


@click.command(cls=Command)
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
    from cinegraph_oban.meta.queries import failed_lookups, read_failed_lookups

    output = output_format(as_json, as_csv)
    query = failed_lookups(
        prefix=prefix, states=states or ("discarded", "cancelled"), source=source, since=_parse_since(since)
    )
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with open_client(database_url, prefix) as oban:
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
    emit(rows, columns, output, "Failed IMDb lookups (no TMDb match)")


@click.command(cls=Command)
@_output_options
@friendly_errors
def skipped(database_url: str, prefix: str, since: str | None, limit: int, as_json: bool, as_csv: bool) -> None:
    """Movies soft-imported for failing the quality criteria (what skipped_imports held), newest first."""
    from cinegraph_oban.meta.queries import quality_skipped_imports, read_skipped_imports

    output = output_format(as_json, as_csv)
    query = quality_skipped_imports(prefix=prefix, since=_parse_since(since))
    query = query.order_by(query.table.c.id.desc()).limit(limit or None)
    with open_client(database_url, prefix) as oban:
        oban.schema()
        rows = [_record_row(r) for r in read_skipped_imports(oban.connection, query)]
    columns = ["tmdb_id", "title", "reason", "criteria_failed", "checked_at", "inserted_at", "id"]
    emit(rows, columns, output, "Quality-filtered (soft) imports")


def _record_row(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    row = asdict(record)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@click.command("jobs", cls=Command)
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
    from cinegraph_oban.meta.queries import jobs, read_jobs

    output = output_format(as_json, as_csv)
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
    with open_client(database_url, prefix) as oban:
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
    emit(
        shown,
        ["id", "state", "queue", "worker", "args", "meta", "attempt", "inserted_at"],
        output,
        "Jobs",
    )
