"""What the tests share: the names they use, running `cinegraph-oban`, rows as Elixir Oban writes
them, and the legacy tables' sample content and snapshots.

`run_cli` runs the command line in this process through click's CliRunner: what nearly every
CLI test does, at no interpreter start-up per run. `run_script` runs the installed console
script as a real process, for the few tests where the process itself is the point: the entry
point starting, no traceback from a real interpreter. `run_forked` runs the command line in a
real process forked from a server that has imported the package, for a process killed part-way
(the crash switch SIGKILLs it) without an interpreter start-up each time. All return a
`CliResult` and run without DATABASE_URL or the migration's crash switch from the caller's
environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from cinegraph_oban import FailedLookup, Job, SkippedImport
from cinegraph_oban.migration.legacy import create_legacy_tables, insert_legacy_row
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables
from cinegraph_oban.migration.steps import CRASH_VARIABLE

if TYPE_CHECKING:
    from conftest import ObanDatabase

#: The Cinegraph worker every import job runs (named here as the tests spell it, not taken from
#: the library whose behaviour they check).
TMDB = "Cinegraph.Workers.TMDbDetailsWorker"

#: The installed console script (pyproject's [project.scripts]) beside this interpreter.
SCRIPT = Path(sys.executable).parent / "cinegraph-oban"
#: Variables of the caller's environment a run never sees unless the test gives them.
UNSET = ("DATABASE_URL", CRASH_VARIABLE)


@dataclass(frozen=True)
class CliResult:
    """How a run ended: its exit code (negative: killed by that signal) and what it printed."""

    exit_code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """SIGINT handled as a terminal's Ctrl-C finds it, for the block: Python's KeyboardInterrupt
    here, the default disposition in a process started here (which Python then turns into its
    own KeyboardInterrupt). A test run started in the background (`pytest &` in a script,
    `nohup`) inherits SIGINT ignored, and a Ctrl-C test would then wait in vain."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    """`cinegraph-oban ARGS` in this process, with `env` added to the environment and `cwd` as
    the working directory for the run. Standard input is empty; stdout and stderr are captured
    apart (click 8.2+). An exception the CLI lets through ends the run as it would end the
    process: exit code 1 and the traceback on stderr."""
    from cinegraph_oban.cli import main

    if CRASH_VARIABLE in (env or {}):
        raise ValueError(f"{CRASH_VARIABLE} kills the process it is set in: use run_script")
    full_env: dict[str, str | None] = dict.fromkeys(UNSET)
    full_env.update(env or {})
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(main, list(args), env=full_env, prog_name="cinegraph-oban")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    """A process's environment: the caller's now, without UNSET, with `env` added."""
    full = {k: v for k, v in os.environ.items() if k not in UNSET}
    full.update(env or {})
    return full


def forkserver() -> Any:
    """multiprocessing's forkserver context, its server importing the package (and this module)
    once: a process forked from it starts in milliseconds, where a spawned one imports it all
    again (about half a second of CPU). The first caller in a process starts the server; a
    module that needs more preloaded imports it in the child (slower, and still correct)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "cinegraph_oban.cli"])
    return context


def unique_inserts_in_transactions(dsn: str, isolation: str, keys: int, start: Any, out: Any, bound: float) -> None:
    """In a process of `forkserver()`'s: a unique job per key (`tmdb_id`, the default registry's
    uniqueness for the worker), each in a transaction of the caller's at `isolation`; puts
    (made, refused) on `out`."""
    from cinegraph_oban import IsolationLevelError, Oban

    client = Oban()
    made = refused = 0
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel[isolation]
        start.wait(bound)
        for key in range(keys):
            try:
                with conn.transaction():
                    job = client.insert(Job.new(TMDB, {"tmdb_id": key}), conn=conn)
                    made += not job.conflict
            except IsolationLevelError:
                refused += 1
    out.put((made, refused))


def _cli_in_child(args: list[str], env: dict[str, str], cwd: str | None, out: str, err: str) -> None:
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.environ.clear()  # the caller's environment now, not the forkserver's from when it started
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    from cinegraph_oban.cli import main

    code: Any = 0
    try:
        main.main(args=args, prog_name="cinegraph-oban")
    except SystemExit as exit:
        code = exit.code
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


def run_forked(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> CliResult:
    """`cinegraph-oban ARGS` in a process of its own, forked from `forkserver()`: what a killed
    run needs (the crash switch SIGKILLs that process) without an interpreter start-up."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cinegraph-oban-run-") as scratch:
        out, err = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        child = forkserver().Process(
            target=_cli_in_child, args=(list(args), _environment(env), None if cwd is None else str(cwd), out, err)
        )
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise AssertionError(f"cinegraph-oban {' '.join(args)}: still running after {timeout} s")
        return CliResult(child.exitcode, Path(out).read_text(), Path(err).read_text())


def run_script(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> CliResult:
    """`cinegraph-oban ARGS` as a real process of the installed console script."""
    done = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=_environment(env),
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


# Oban rows as Elixir writes them.


def oban_insert_reference(db: ObanDatabase, conn: psycopg.Connection[Any], job: Job) -> dict[str, Any]:
    """What Oban.insert/2 sends for a job: Ecto writes the non-nil fields of the Job struct
    (args, attempt 0, errors [], max_attempts, meta, priority, queue, state, tags, worker, and
    scheduled_at only when scheduled); inserted_at and scheduled_at otherwise take the defaults."""
    columns = ["args", "attempt", "errors", "max_attempts", "meta", "priority", "queue", "state", "tags", "worker"]
    values: list[Any] = [
        Jsonb(job.args),
        0,
        [],
        job.max_attempts,
        Jsonb(job.meta),
        job.priority,
        job.queue,
        job.state,
        list(job.tags),
        job.worker,
    ]
    if job.scheduled_at is not None:
        columns.append("scheduled_at")
        values.append(job.scheduled_at)
    placeholders = ", ".join(
        "%s::jsonb[]"
        if c == "errors"
        else f"%s::{psycopg.sql.Identifier(db.prefix).as_string()}.oban_job_state"
        if c == "state"
        else "%s"
        for c in columns
    )
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            f"INSERT INTO {db.table} ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *".encode(),
            values,
        )
        row = cur.fetchone()
    assert row is not None
    return row


def record_sample_outcomes(oban: ObanDatabase) -> None:
    """Three failed lookups (two sources) and one quality-filtered import, each recorded in its
    job's meta and run to its end state by Oban's own statements."""
    from cinegraph_oban import FailedLookup, Job, SkippedImport, record_failed_lookup, record_skipped_import
    from cinegraph_oban.oban import engine

    client = oban.client()
    worker = TMDB
    for n, source in enumerate(["canonical_import", "oscar_import", "canonical_import"]):
        job = client.insert(
            Job.new(worker, {"imdb_id": f"tt{n}", "source": source}, meta={"source_list": "x"}, unique=False)
        )
        record_failed_lookup(
            oban.conn, job.id or 0, FailedLookup.new(f"tt{n}", source, title=f"Film {n}", year=1990 + n)
        )
    soft = client.insert(Job.new(worker, {"tmdb_id": 278}, unique=False))
    record_skipped_import(
        oban.conn,
        soft.id or 0,
        SkippedImport.new(278, title="Shawshank", criteria_failed={"failed_criteria": ["votes"]}),
    )
    for job in engine.fetch_jobs(oban.conn, "tmdb", 10):
        if "imdb_id" in job.args:
            engine.cancel_job(oban.conn, job, "no_tmdb_match")
        else:
            engine.complete_job(oban.conn, job)


# The legacy tables and the migration.


def snapshot(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    """Both tables as PostgreSQL prints them (every column, types included), in id order."""
    out: dict[str, Any] = {}
    for table in ("failed_imdb_lookups", "skipped_imports"):
        rows = conn.execute(f'SELECT t::text FROM "{schema}".{table} AS t ORDER BY id'.encode()).fetchall()
        types = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f'"{schema}".{table}',),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass "
            "ORDER BY 1",
            (f'"{schema}".{table}',),
        ).fetchall()
        out[table] = {"rows": rows, "types": types, "indexes": indexes}
    return out


def setup_legacy(conn: psycopg.Connection[Any], db: ObanDatabase) -> None:
    conn.execute("CREATE SCHEMA legacy")
    create_legacy_tables(conn, "legacy")
    conn.execute("CREATE TABLE legacy.schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0))")


def sample_rows(conn: psycopg.Connection[Any], schema: str = "public", count: int = 40) -> None:
    for n in range(1, count + 1):
        failed = FailedLookup.new(
            f"tt{n:07d}",
            "canonical_import",
            title=f"Film {n}",
            year=1900 + n,
            source_key="1001_movies",
            metadata={"n": n},
        )
        json_null = n % 7 == 0  # every seventh holds the jsonb value null, not SQL NULL
        insert_legacy_row(
            conn, schema, with_id(replace(failed, metadata=None) if json_null else failed, n), json_null=json_null
        )
        criteria = None if n % 5 == 0 else {"failed_criteria": ["votes"]}
        insert_legacy_row(conn, schema, with_id(SkippedImport.new(n, title=f"Soft {n}", criteria_failed=criteria), n))
    conn.execute(f"SELECT setval('\"{schema}\".failed_imdb_lookups_id_seq', {count})".encode())
    conn.execute(f"SELECT setval('\"{schema}\".skipped_imports_id_seq', {count})".encode())


def with_id(row: Any, n: int) -> Any:
    return replace(row, id=n)


def migration(dsn: str, tmp_path: Path, **kwargs: Any) -> RemoveRedundantImportTables:
    return RemoveRedundantImportTables(
        dsn, export_dir=tmp_path / "export", batch_size=kwargs.pop("batch_size", 7), **kwargs
    )


def killed_session_gone(dsn: str, timeout: float = 30.0) -> None:
    """Wait until no session holds an advisory lock in `dsn`'s database: a migrator killed a moment ago holds the
    migration lock until its server process reads the closed connection (milliseconds, but a
    re-run started at once can be quicker)."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        # This database's locks only: another test run on the server holds its own.
        query = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        while conn.execute(query).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise AssertionError(f"an advisory lock is still held {timeout} s after the kill")
            time.sleep(0.05)
