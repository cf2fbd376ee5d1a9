"""Benchmarks: cinegraph-oban beside its references, measured in the same run.

    .venv/bin/python bench/run.py [--database-url URL] [--rows 100000] [--single 2000] [--repeat 5] [--record]

Every workload runs against an Oban V14 table created by the package's migration templates
(with Oban's GIN indexes on args and meta), in a scratch database `cinegraph_oban_bench` that is
dropped at the end. Variants are interleaved repeat by repeat, and the median is reported, so
background noise hits every variant alike. `--record` writes the table into bench/README.md with
the machine and the date.

The official Oban for Python (`oban` on PyPI) needs Python >= 3.12: it is installed into
`bench/.venv-obanpy` with a 3.12+ interpreter found on the PATH or in pyenv, and run against
its own schema (its `install_sql`, which is not Elixir Oban's: see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from cinegraph_oban import Job, Oban, install
from cinegraph_oban.insert import statements
from cinegraph_oban.migration.sample_data import import_args

HERE = Path(__file__).resolve().parent
WORKER = "Cinegraph.Workers.TMDbDetailsWorker"
BENCH_DB = "cinegraph_oban_bench"
OBANPY_DB = "cinegraph_oban_bench_obanpy"


def median_rate(samples: list[float]) -> float:
    return statistics.median(samples)


class Bench:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        info = psycopg.conninfo.conninfo_to_dict(admin_url)
        info["dbname"] = BENCH_DB
        self.url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
        info["dbname"] = OBANPY_DB
        self.obanpy_url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
        self.rows: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    def recreate(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def record(self, workload: str, variant: str, rate: float, unit: str, note: str = "") -> None:
        self.results.append({"workload": workload, "variant": variant, "rate": rate, "unit": unit, "note": note})
        shown = f"{rate:>10.2f}" if unit in ("x", "ms", "s") else f"{rate:>10,.0f}"
        print(f"  {workload:<38} {variant:<44} {shown} {unit} {note}", flush=True)


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE oban_jobs RESTART IDENTITY")
    conn.execute("CHECKPOINT")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# Workload 1: bulk insert


def bulk(bench: Bench, conn: psycopg.Connection[Any], rows: int, repeat: int) -> None:
    args = list(import_args(rows))
    oban = Oban(conn)

    def raw_copy() -> None:
        with conn.transaction(), conn.cursor() as cur:
            copy_sql = (
                "COPY oban_jobs (state, queue, worker, args, meta, tags, max_attempts, priority) "
                "FROM STDIN (FORMAT BINARY)"
            )
            with cur.copy(copy_sql) as copy:
                copy.set_types(["text", "text", "text", "jsonb", "jsonb", "text[]", "int4", "int4"])
                for a in args:
                    copy.write_row(("available", "tmdb", WORKER, Jsonb(a), Jsonb({}), [], 5, 0))

    prebuilt: list[Job] = []

    def build() -> None:
        prebuilt[:] = [Job.new(WORKER, a, unique=False) for a in args]

    def insert_all_prebuilt() -> None:
        oban.insert_all(prebuilt)

    def insert_all_end_to_end() -> None:
        oban.insert_all(Job.new(WORKER, a, unique=False) for a in args)

    variants: dict[str, Callable[[], None]] = {
        "raw binary COPY (psycopg, same rows)": raw_copy,
        "insert_all(jobs) (Jobs built beforehand)": insert_all_prebuilt,
        "insert_all(Job.new(...) for ...) end to end": insert_all_end_to_end,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        build()
        for name, fn in variants.items():
            reset(conn)
            samples[name].append(rows / timed(fn))
            count = conn.execute("SELECT count(*) FROM oban_jobs").fetchone()
            assert count == (rows,), count
    for name, values in samples.items():
        bench.record(f"insert_all, {rows:,} jobs", name, median_rate(values), "jobs/s")
    reference = median_rate(samples["raw binary COPY (psycopg, same rows)"])
    for name in list(variants)[1:]:
        bench.record(
            f"insert_all, {rows:,} jobs", f"ratio: {name} / raw COPY", median_rate(samples[name]) / reference, "x"
        )


# Workload 2: one at a time


def single(bench: Bench, conn: psycopg.Connection[Any], count: int, repeat: int) -> None:
    args = list(import_args(count, seed=7))
    oban = Oban(conn)
    bare_sql = (
        "INSERT INTO oban_jobs (state, queue, worker, args, meta, tags, max_attempts, priority) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )

    def bare() -> None:
        for a in args:
            conn.execute(bare_sql, ("available", "tmdb", WORKER, Jsonb(a), Jsonb({}), [], 5, 0))

    notify_sql = (
        "WITH i AS (" + bare_sql + " RETURNING id) "
        "SELECT id, pg_notify('public.oban_insert', '{\"queue\":\"tmdb\"}')::text FROM i"
    )

    def bare_notify() -> None:
        for a in args:
            conn.execute(notify_sql, ("available", "tmdb", WORKER, Jsonb(a), Jsonb({}), [], 5, 0)).fetchone()

    def ours() -> None:
        for a in args:
            oban.insert(Job.new(WORKER, a, unique=False))

    template = statements.insert_statement(Job.new(WORKER, args[0], unique=False), oban.schema())

    def ours_by_hand() -> None:
        for a in args:
            conn.execute(template.sql, {**template.params, "args": Jsonb(a)}).fetchone()

    bare_name = "bare psycopg INSERT, autocommit (no notify)"
    notify_name = "bare psycopg INSERT + pg_notify, one statement"
    ours_name = "Oban.insert (row + notify)"
    by_hand_name = "Oban.insert's statement sent by hand (no Job model)"
    variants = {bare_name: bare, notify_name: bare_notify, by_hand_name: ours_by_hand, ours_name: ours}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            reset(conn)
            samples[name].append(count / timed(fn))
    for name, values in samples.items():
        bench.record("insert one at a time", name, median_rate(values), "jobs/s")
    ours_rate = median_rate(samples[ours_name])
    bench.record(
        "insert one at a time", "ratio: Oban.insert / bare INSERT", ours_rate / median_rate(samples[bare_name]), "x"
    )
    bench.record(
        "insert one at a time",
        "ratio: Oban.insert / bare INSERT + pg_notify",
        ours_rate / median_rate(samples[notify_name]),
        "x",
    )
    bench.record(
        "insert one at a time",
        "ratio: Oban.insert's statement by hand / bare INSERT",
        median_rate(samples[by_hand_name]) / median_rate(samples[bare_name]),
        "x",
    )


# Workload 3: unique inserts into a full table


# Workload: one client shared by threads


def shared(bench: Bench, conn: psycopg.Connection[Any], count: int, repeat: int) -> None:
    """One `Oban.connect` client (a pool of 8) shared by 1, 4 and 8 threads, each inserting its
    share of `count` jobs one at a time from plain dicts, beside bare psycopg on a pool of the
    same size (each insert: take a connection, one INSERT with its pg_notify, give it back)."""
    args = list(import_args(count, seed=11))
    bare_sql = (
        "WITH i AS (INSERT INTO oban_jobs (state, queue, worker, args, meta, tags, max_attempts, priority) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id) "
        "SELECT id, pg_notify('public.oban_insert', '{\"queue\":\"tmdb\"}')::text FROM i"
    )
    size = 8
    with (
        Oban.connect(bench.url, pool_size=size) as oban,
        ConnectionPool(bench.url, min_size=size, max_size=size, kwargs={"autocommit": True}) as pool,
    ):
        assert oban.pool is not None
        oban.pool.wait()
        oban.pool.resize(size, size)
        oban.pool.wait()

        def ours(part: list[dict[str, Any]]) -> None:
            for a in part:
                oban.insert(Job.new(WORKER, a, unique=False))

        def bare(part: list[dict[str, Any]]) -> None:
            for a in part:
                with pool.connection() as pg:
                    pg.execute(bare_sql, ("available", "tmdb", WORKER, Jsonb(a), Jsonb({}), [], 5, 0)).fetchone()

        def threaded(fn: Callable[[list[dict[str, Any]]], None], threads: int) -> Callable[[], None]:
            parts = [args[i::threads] for i in range(threads)]

            def run() -> None:
                start = threading.Barrier(threads)

                def one(part: list[dict[str, Any]]) -> None:
                    start.wait()
                    fn(part)

                with ThreadPoolExecutor(threads) as executor:
                    for future in [executor.submit(one, part) for part in parts]:
                        future.result()

            return run

        for threads in (1, 4, 8):
            variants = {
                f"bare psycopg, ConnectionPool({size}), {threads} threads": threaded(bare, threads),
                f"shared Oban.connect(pool_size={size}), {threads} threads": threaded(ours, threads),
            }
            samples: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(repeat):
                for name, fn in variants.items():
                    reset(conn)
                    samples[name].append(count / timed(fn))
            for name, values in samples.items():
                bench.record("shared client, insert one at a time", name, median_rate(values), "jobs/s")
            bare_rate, ours_rate = (median_rate(samples[name]) for name in variants)
            bench.record(
                "shared client, insert one at a time",
                f"ratio: ours / bare, {threads} threads",
                ours_rate / bare_rate,
                "x",
            )


def oban_elixir_unique_insert(conn: psycopg.Connection[Any], job: Job) -> None:
    """The statements Elixir Oban's Basic engine sends for a unique insert, replayed from Python:
    try-lock, `LIMIT 1` lookup, insert, then the notification in a second statement."""
    assert job.unique is not None
    subset = {k: v for k, v in job.args.items() if k in job.unique.keys}
    with conn.transaction():
        conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (hash(json.dumps(subset, sort_keys=True)) % 2**31,))
        found = conn.execute(
            "SELECT id FROM oban_jobs WHERE state = ANY(%s::oban_job_state[]) "
            "AND inserted_at >= %s AND args @> %s LIMIT 1",
            (list(job.unique.states), datetime.now(UTC).replace(tzinfo=None), Jsonb(subset)),
        ).fetchone()
        if found is None:
            conn.execute(
                "INSERT INTO oban_jobs (state, queue, worker, args, meta, tags, max_attempts, priority) "
                "VALUES ('available', %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    job.queue,
                    job.worker,
                    Jsonb(job.args),
                    Jsonb(job.meta),
                    list(job.tags),
                    job.max_attempts,
                    job.priority,
                ),
            ).fetchone()
    conn.execute("SELECT pg_notify('public.oban_insert', %s)", (json.dumps({"queue": job.queue}),))


def unique(bench: Bench, conn: psycopg.Connection[Any], rows: int, count: int, repeat: int) -> None:
    oban = Oban(conn)
    reset(conn)
    oban.insert_all(Job.new(WORKER, a, unique=False) for a in import_args(rows, seed=11))
    fresh = iter(import_args(count * repeat * 8 + 5_000, seed=12345))
    block = max(count // 4, 1)
    label = f"insert into a table of {rows:,} jobs"

    def cycle(samples: dict[str, list[float]], client: Oban, elixir: bool, unique_first: bool) -> None:
        # Every GIN search also scans the index's pending list of not yet merged entries, which
        # autovacuum empties; each cycle starts from a vacuumed table, as autovacuum keeps it,
        # and the order alternates so the unique inserts meet short and longer pending lists.
        conn.execute("VACUUM ANALYZE oban_jobs")
        plain_jobs = [Job.new(WORKER, {**next(fresh), "n": 1}, unique=False) for _ in range(block)]
        unique_jobs = [Job.new(WORKER, next(fresh)) for _ in range(block)]
        runs = [
            ("no unique", lambda: [oban.insert(j) for j in plain_jobs]),
            ("unique", lambda: [client.insert(j) for j in unique_jobs]),
        ]
        for name, fn in reversed(runs) if unique_first else runs:
            samples[name].append(block / timed(fn))
        if elixir:  # a tenth of a block: at its rate a whole block would take most of the run
            few = max(block // 10, 1)
            elixir_jobs = [Job.new(WORKER, next(fresh)) for _ in range(few)]
            samples["elixir"].append(few / timed(lambda: [oban_elixir_unique_insert(conn, j) for j in elixir_jobs]))

    def ratio(samples: dict[str, list[float]]) -> float:
        return median_rate(samples["unique"]) / median_rate(samples["no unique"])

    # Twice the cycles of the other workloads: from cycle to cycle these rates vary by 10-15 %
    # on a 2-core machine; the Elixir replay runs in every other cycle.
    default: dict[str, list[float]] = {"no unique": [], "unique": [], "elixir": []}
    for n in range(repeat * 4):
        cycle(default, oban, elixir=n % 2 == 0, unique_first=n % 2 == 0)
    bench.record(label, "Oban.insert, no unique", median_rate(default["no unique"]), "jobs/s")
    bench.record(label, "Oban.insert, unique (TMDbDetailsWorker's keys)", median_rate(default["unique"]), "jobs/s")
    bench.record(label, "Elixir Oban's unique statements, replayed", median_rate(default["elixir"]), "jobs/s")
    bench.record(label, "ratio: unique / no unique", ratio(default), "x")

    # The same, with the lookup searching the GIN index for the whole containment (one entry per
    # key and value), as it does where the probe cannot be used.
    containment = Oban(conn)
    containment._table = replace(oban.table(), probe_columns=())
    contained: dict[str, list[float]] = {"no unique": [], "unique": [], "elixir": []}
    for n in range(repeat * 2):
        cycle(contained, containment, elixir=False, unique_first=n % 2 == 0)
    variant = "lookup by containment (no probe)"
    bench.record(label, f"{variant}: Oban.insert, no unique", median_rate(contained["no unique"]), "jobs/s")
    bench.record(label, f"{variant}: Oban.insert, unique", median_rate(contained["unique"]), "jobs/s")
    bench.record(label, f"{variant}: ratio unique / no unique", ratio(contained), "x")

    # Opt-in tuning of Oban's indexes, measured: a short GIN pending list (64 kB instead of the
    # 4 MB default), so every search scans little of it and inserts merge it more often.
    conn.execute("ALTER INDEX oban_jobs_args_index SET (gin_pending_list_limit = 64)")
    conn.execute("ALTER INDEX oban_jobs_meta_index SET (gin_pending_list_limit = 64)")
    tuned: dict[str, list[float]] = {"no unique": [], "unique": [], "elixir": []}
    for n in range(repeat * 2):
        cycle(tuned, oban, elixir=False, unique_first=n % 2 == 0)
    conn.execute("ALTER INDEX oban_jobs_args_index RESET (gin_pending_list_limit)")
    conn.execute("ALTER INDEX oban_jobs_meta_index RESET (gin_pending_list_limit)")
    tuned_label = "with gin_pending_list_limit=64kB"
    bench.record(label, f"{tuned_label}: Oban.insert, no unique", median_rate(tuned["no unique"]), "jobs/s")
    bench.record(label, f"{tuned_label}: Oban.insert, unique", median_rate(tuned["unique"]), "jobs/s")
    bench.record(label, f"{tuned_label}: ratio unique / no unique", ratio(tuned), "x")

    # How a GIN search slows down as the pending list fills (no VACUUM in between).
    conn.execute("VACUUM ANALYZE oban_jobs")
    schemas = {"probe": oban.schema(), "containment": replace(oban.schema(), probe_columns=())}

    def lookup_only(statement: statements.Statement) -> bytes:
        text = statement.sql.decode()
        return (text[: text.index("),\nconflicted")] + ") SELECT * FROM existing").encode()

    filled = 0
    for pending in (0, 1_000, 3_000):
        oban.insert_all([Job.new(WORKER, next(fresh), unique=False) for _ in range(pending - filled)])
        filled = pending
        jobs = [Job.new(WORKER, next(fresh)) for _ in range(100)]
        for name, schema in schemas.items():
            lookups = [statements.unique_statements(j, schema)[1] for j in jobs]
            started = time.perf_counter()
            for statement in lookups:
                conn.execute(lookup_only(statement), statement.params, prepare=True).fetchall()
            elapsed = time.perf_counter() - started
            bench.record(
                label,
                f"unique lookup alone ({name}), {pending:,} rows in the GIN pending list",
                100 / elapsed,
                "lookups/s",
            )
    _, lookup = statements.unique_statements(Job.new(WORKER, next(fresh)), oban.schema())
    plan = "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + lookup_only(lookup), lookup.params))
    uses = "oban_jobs_args_index" in plan and "Seq Scan" not in plan
    print("  unique lookup plan uses Oban's GIN index on args:", uses)
    bench.results.append(
        {"workload": label, "variant": "lookup plan", "rate": float(uses), "unit": "uses GIN", "note": plan}
    )


# Workload 4: the query builders on a large table


def queries(bench: Bench, conn: psycopg.Connection[Any], rows: int, repeat: int) -> None:
    """failed_lookups() and quality_skipped_imports() against the design document's `->>` form."""
    from cinegraph_oban.meta.queries import create_outcome_indexes, failed_lookups, jobs, quality_skipped_imports

    reset(conn)
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        copy_sql = (
            "COPY oban_jobs (state, queue, worker, args, meta, max_attempts, attempt, completed_at, cancelled_at) "
            "FROM STDIN (FORMAT BINARY)"
        )
        with cur.copy(copy_sql) as copy:
            copy.set_types(["text", "text", "text", "jsonb", "jsonb", "int4", "int4", "timestamp", "timestamp"])
            now = datetime.now(UTC).replace(tzinfo=None)
            for n, args in enumerate(import_args(rows, seed=3)):
                if n % 100 == 0:  # 1 %: no TMDb match, cancelled by the worker
                    meta = {"import_type": "canonical", "status": "failed", "failure_reason": "no_tmdb_match"}
                    meta |= {"imdb_id": args.get("imdb_id"), "source": args.get("source", "unknown")}
                    copy.write_row(("cancelled", "tmdb", WORKER, Jsonb(args), Jsonb(meta), 5, 1, None, now))
                elif n % 100 == 1:  # 1 %: soft imports
                    meta = {"status": "imported", "import_type": "soft", "tmdb_id": n, "reason": "quality_criteria"}
                    copy.write_row(("completed", "tmdb", WORKER, Jsonb(args), Jsonb(meta), 5, 1, now, None))
                else:
                    meta = {"status": "imported", "import_type": "full", "tmdb_id": n}
                    copy.write_row(("completed", "tmdb", WORKER, Jsonb(args), Jsonb(meta), 5, 1, now, None))
    conn.execute("VACUUM ANALYZE oban_jobs")
    print(f"  loaded {rows:,} jobs for the query benchmark in {time.perf_counter() - started:.0f} s", flush=True)
    label = f"queries on {rows:,} jobs (1 % failed lookups)"

    def run(text: str, params: dict[str, Any]) -> float:
        samples = []
        for _ in range(repeat * 4):
            started = time.perf_counter()
            conn.execute(text.encode(), params).fetchall()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    def variants(query: Any) -> dict[str, tuple[str, dict[str, Any]]]:
        text, params = query.compiled()
        count_sql = f"SELECT count(*) FROM ({text}) AS q"
        page = query.order_by(query.table.c.id.desc()).limit(100).compiled()
        return {"count": (count_sql, params), "newest 100": page, "all rows": (text, params)}

    cases = {
        "failed_lookups()": failed_lookups(),
        "document form (->>, state = discarded OR cancelled)": failed_lookups(form="document"),
        "meta filter only: meta @> failure_reason": jobs().meta(failure_reason="no_tmdb_match"),
        "meta filter only, document form": jobs().meta("document", failure_reason="no_tmdb_match"),
        "quality_skipped_imports()": quality_skipped_imports(),
        "quality_skipped_imports(), document form": quality_skipped_imports(form="document"),
    }
    timings: dict[tuple[str, str], float] = {}
    for name, query in cases.items():
        for shape, (text, params) in variants(query).items():
            timings[(name, shape)] = run(text, params)
            bench.record(label, f"{name}: {shape}", timings[(name, shape)], "ms")
    for shape in ("count", "newest 100", "all rows"):
        ratio = (
            timings[("document form (->>, state = discarded OR cancelled)", shape)]
            / timings[("failed_lookups()", shape)]
        )
        bench.record(label, f"speed-up of failed_lookups() over the document form: {shape}", ratio, "x")
    create_outcome_indexes(conn)
    conn.execute("ANALYZE oban_jobs")
    for name in ("failed_lookups()", "quality_skipped_imports()"):
        for shape, (text, params) in variants(cases[name]).items():
            bench.record(label, f"with `cinegraph-oban indexes create`: {name}: {shape}", run(text, params), "ms")
    create_outcome_indexes(conn, drop=True)


# Workload 5: the migration


def migrate(bench: Bench, conn: psycopg.Connection[Any], rows: int) -> None:
    """RemoveRedundantImportTables up (and down) with `rows` legacy rows, half in each table."""
    import tempfile

    from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables, create_legacy_tables
    from cinegraph_oban.sql import builder

    reset(conn)
    create_legacy_tables(conn)
    for statement in builder.statements("legacy/sample_rows", schema="public"):
        conn.execute(statement.encode(), {"rows": rows // 2})
    conn.execute("VACUUM ANALYZE")
    label = f"migrate up, {rows:,} legacy rows"
    with tempfile.TemporaryDirectory() as export_dir:
        migration = RemoveRedundantImportTables(bench.url, export_dir=export_dir)
        started = time.perf_counter()
        summary = migration.up()
        elapsed = time.perf_counter() - started
        bench.record(label, "whole migration (export, backfill, verify, drop)", elapsed, "s")
        bench.record(label, "rows per second", rows / elapsed, "rows/s")
        for step, seconds in summary.timings.items():
            bench.record(label, f"step: {step}", seconds, "s")
        bench.record(label, "exclusive lock on the legacy tables held", (summary.lock_held_seconds or 0) * 1000, "ms")
        started = time.perf_counter()
        migration.down()
        bench.record(label, "migrate down (restore from the archival jobs)", time.perf_counter() - started, "s")
    # Again, with the application still writing all along (before_after.writing: small
    # transactions on both legacy tables, as fast as one connection can, until they are gone).
    from before_after import writing

    conn.execute("DELETE FROM oban_jobs")
    conn.execute("VACUUM ANALYZE")
    label = f"migrate up, {rows:,} legacy rows, a live writer"
    with tempfile.TemporaryDirectory() as export_dir:
        stop, seen = threading.Event(), {}
        writer = threading.Thread(target=writing, args=(bench.url, stop, seen))
        writer.start()
        try:
            started = time.perf_counter()
            summary = RemoveRedundantImportTables(bench.url, export_dir=export_dir).up()
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            writer.join()
        bench.record(label, "whole migration (export, backfill, catch-up, verify, drop)", elapsed, "s")
        bench.record(label, "exclusive lock on the legacy tables held", (summary.lock_held_seconds or 0) * 1000, "ms")
        bench.record(label, "writer's commits during up", seen.get("commits", 0), "commits")
        bench.record(label, "writer's slowest transaction (its wait for the lock)", seen.get("slowest_ms", 0), "ms")


# Workload 6: the official Oban for Python


def find_python312() -> str | None:
    """A working Python >= 3.12: pyenv's installs first (its shims may point at nothing)."""
    candidates: list[str] = []
    pyenv = Path.home() / ".pyenv" / "versions"
    for pattern in ("3.13*", "3.12*"):
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob(pattern), reverse=True)]
    candidates += [found for name in ("python3.13", "python3.12") if (found := shutil.which(name))]
    for candidate in candidates:
        check = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode == 0 and check.stdout.strip() == "True":
            return candidate
    return None


def obanpy(bench: Bench, rows: int, count: int, repeat: int) -> None:
    venv = HERE / ".venv-obanpy"
    python = venv / "bin" / "python"
    if not python.exists():
        interpreter = find_python312()
        if interpreter is None:
            bench.record("official Oban for Python", "not run", 0, "", "no Python >= 3.12 found")
            return
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "oban"], capture_output=True, text=True, check=False
    )
    if install.returncode != 0:
        bench.record(
            "official Oban for Python", "not run", 0, "", f"pip install oban failed: {install.stderr.strip()[-200:]}"
        )
        return
    bench.recreate(OBANPY_DB)
    try:
        out = subprocess.run(
            [str(python), str(HERE / "obanpy_bench.py"), bench.obanpy_url, str(rows), str(count), str(repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        bench.drop(OBANPY_DB)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    bench.record(
        f"insert_all, {rows:,} jobs",
        f"oban {result['version']} enqueue_many (its own schema)",
        result["many"],
        "jobs/s",
    )
    bench.record("insert one at a time", f"oban {result['version']} enqueue (its own schema)", result["one"], "jobs/s")


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    rates = {(r["workload"], r["variant"]): r["rate"] for r in results}
    out: dict[str, float] = {}
    for (workload, variant), rate in rates.items():
        if variant.startswith("oban ") and rate:
            ours_name = (
                "insert_all(jobs) (Jobs built beforehand)"
                if "enqueue_many" in variant
                else "Oban.insert (row + notify)"
            )
            ours = rates.get((workload, ours_name))
            if ours:
                out[f"{workload}: ours / {variant}"] = ours / rate
    return out


def render_markdown(results: list[dict[str, Any]], info: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        f"Measured {info['date']} on {info['cpu']}, {info['memory']} RAM, {info['os']}; "
        f"PostgreSQL {info['postgres']} on 127.0.0.1 (fsync on), Python {info['python']}.",
        f"Command: `.venv/bin/python bench/run.py --rows {args.rows} --single {args.single} --repeat {args.repeat}`; "
        "medians of interleaved repeats.",
        "",
        "| workload | variant | rate |",
        "|---|---|---|",
    ]
    for r in results:
        if r["unit"] == "uses GIN":
            continue
        if r["unit"] == "x":
            rate = f"{r['rate']:.2f}x"
        elif r["unit"] in ("ms", "s"):
            rate = f"{r['rate']:,.1f} {r['unit']}"
        else:
            rate = f"{r['rate']:,.0f} {r['unit']}"
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['workload']} | {r['variant']}{note} | {rate} |")
    for name, value in ratios(results).items():
        lines.append(f"| comparison | {name} | {value:.1f}x |")
    plan = next((r for r in results if r["unit"] == "uses GIN"), None)
    if plan:
        lines += ["", "The unique lookup's plan on that table (`EXPLAIN`):", "", "```", plan["note"], "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-obanpy", action="store_true")
    parser.add_argument(
        "--only",
        choices=["bulk", "single", "shared", "unique", "queries", "migrate"],
        help="run one workload (not for --record)",
    )
    parser.add_argument("--legacy-rows", type=int, default=1_000_000, help="legacy rows for the migration workload")
    parser.add_argument("--query-rows", type=int, default=1_000_000, help="jobs in the table the queries run on")
    parser.add_argument("--record", action="store_true", help="write the results into bench/README.md")
    args = parser.parse_args()

    bench = Bench(args.database_url)
    bench.recreate(BENCH_DB)
    info = machine()
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        with psycopg.connect(bench.url, autocommit=True) as conn:
            info["postgres"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            install(conn, 14)
            print(f"bench database {BENCH_DB}: Oban V14 with GIN indexes; {info['cpu']}", flush=True)
            if args.only in (None, "bulk"):
                bulk(bench, conn, args.rows, args.repeat)
            if args.only in (None, "single"):
                single(bench, conn, args.single, args.repeat)
            if args.only in (None, "shared"):
                shared(bench, conn, args.single, args.repeat)
            if args.only in (None, "unique"):
                unique(bench, conn, args.rows, args.single, args.repeat)
            if args.only in (None, "queries"):
                queries(bench, conn, args.query_rows, args.repeat)
            if args.only in (None, "migrate"):
                migrate(bench, conn, args.legacy_rows)

    finally:
        bench.drop(BENCH_DB)
    if not args.skip_obanpy and args.only is None:
        obanpy(bench, args.rows, args.single, args.repeat)
    table = render_markdown(bench.results, info, args)
    print()
    print(table)
    if args.record:
        readme = HERE / "README.md"
        text = readme.read_text(encoding="utf-8")
        start, end = "<!-- results:start -->", "<!-- results:end -->"
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        readme.write_text(f"{before}{start}\n{table}\n{end}{after}", encoding="utf-8")
        print(f"\nrecorded in {readme}")
    sys.exit(0)


if __name__ == "__main__":
    main()
