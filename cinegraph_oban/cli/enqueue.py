"""`cinegraph-oban enqueue`: one job with its worker's unique options, or a JSON Lines file of
jobs as one bulk insert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cinegraph_oban.cli.common import (
    Command,
    database_url_option,
    friendly_errors,
    json_option,
    open_client,
    options_given,
    prefix_option,
)
from cinegraph_oban.errors import CinegraphObanError
from cinegraph_oban.model.job import Job
from cinegraph_oban.model.unique import DEFAULT_OBAN_VERSION


def _load_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@click.command(cls=Command)
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
        given = options_given(
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
        with open_client(database_url, prefix) as oban:
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
    with open_client(database_url, prefix, oban_version) as oban:
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
