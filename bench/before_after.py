"""Two revisions side by side in one run (issue 17: "no speed lost").

    .venv/bin/python bench/before_after.py REV [--pairs 7] [--jobs 50000]    the readers
    .venv/bin/python bench/before_after.py REV --inserts [--pairs 5]         the insert paths
    .venv/bin/python bench/before_after.py REV --migrate [--legacy-rows N] [--writer]   migrate up
    .venv/bin/python bench/before_after.py REV --plugin [--pairs 3]          the pytest plugin

Checks REV out into a temporary git worktree and alternates runs at REV and at the working tree,
`--pairs` times, each run in a fresh interpreter, then prints both and their ratio.

- The readers: a scratch database with `--jobs` cancelled TMDbDetailsWorker jobs holding a failed
  lookup in meta; `read_failed_lookups` over all of them (5 runs each, medians).
- `--inserts`: each run on an emptied table, from plain data (the Job built in the timing):
  2,000 single inserts on one autocommit connection, sync and asyncio; 1,000 unique inserts
  (TMDbDetailsWorker's own unique options), sync and asyncio; 20 insert_all of 100 (unnest);
  one insert_all of 100,000 (COPY).

- `--migrate`: each run on fresh legacy tables of `--legacy-rows` rows (half in each), made by
  the working tree: `migrate up` in a fresh interpreter of the revision, its whole time and the
  time it held the exclusive lock; `--writer` also runs the working tree with, in this process,
  an application committing small transactions to the legacy tables all along (inserts,
  updates, deletes), and reports its commits and its slowest transaction (the wait for the
  drop's lock). REV runs with no writer: a revision without the change capture cannot finish
  with one.

- `--plugin`: a user's test suite of 30 tests taking `oban_database` (20 of the default layout
  inserting a job, 10 of version 11 under `jobs` with 50 legacy rows each), run by pytest in a
  fresh interpreter of the revision (no xdist): its whole time.

Needs the PostgreSQL on 127.0.0.1:5432 (or BENCH_DSN's server).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
CHILD = r"""
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
import psycopg
from cinegraph_oban import read_failed_lookups
times = []
with psycopg.connect(sys.argv[2]) as conn:
    for _ in range(5):
        start = time.perf_counter()
        count = sum(1 for _ in read_failed_lookups(conn))
        times.append(time.perf_counter() - start)
print(count, statistics.median(times))
"""

INSERTS = r"""
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
import psycopg
from cinegraph_oban import AsyncOban, Job, Oban
W = "Cinegraph.Workers.TMDbDetailsWorker"
dsn = sys.argv[2]
def data(n, tag):
    return [({"imdb_id": f"tt{tag}{i}", "source": "canonical_import"}, {"import_type": "canonical"}) for i in range(n)]
def plain(args, meta):
    return Job.new(W, args, meta=meta, unique=False)
def unique(args, meta):
    return Job.new(W, args, meta=meta)
def timed(run):
    start = time.perf_counter(); run(); return time.perf_counter() - start
results = {}
with psycopg.connect(dsn, autocommit=True) as conn:
    oban = Oban(conn); oban.schema()
    rows = data(2000, "s")
    results["single (sync) 2,000"] = timed(lambda: [oban.insert(plain(a, m)) for a, m in rows])
    rows = data(1000, "u")
    results["unique (sync) 1,000"] = timed(lambda: [oban.insert(unique(a, m)) for a, m in rows])
    rows = data(2000, "b")
    batches = [rows[i:i + 100] for i in range(0, 2000, 100)]
    results["insert_all 20 x 100"] = timed(lambda: [oban.insert_all([plain(a, m) for a, m in b]) for b in batches])
    rows = data(100_000, "c")
    results["insert_all 100,000 (COPY)"] = timed(lambda: oban.insert_all(plain(a, m) for a, m in rows))
async def go():
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        oban = AsyncOban(conn); await oban.schema()
        rows = data(2000, "as")
        start = time.perf_counter()
        for a, m in rows:
            await oban.insert(plain(a, m))
        results["single (asyncio) 2,000"] = time.perf_counter() - start
        rows = data(1000, "au")
        start = time.perf_counter()
        for a, m in rows:
            await oban.insert(unique(a, m))
        results["unique (asyncio) 1,000"] = time.perf_counter() - start
asyncio.run(go())
for name, seconds in results.items():
    print(f"{name}\t{seconds}")
"""


MIGRATE = r"""
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from cinegraph_oban.migration import RemoveRedundantImportTables
with tempfile.TemporaryDirectory() as export_dir:
    start = time.perf_counter()
    summary = RemoveRedundantImportTables(sys.argv[2], export_dir=export_dir).up()
    out = {"up": time.perf_counter() - start, "lock_ms": (summary.lock_held_seconds or 0) * 1000}
    print(json.dumps({**out, **{f"  {step}": seconds for step, seconds in summary.timings.items()}}))
"""


def legacy(dsn: str, rows: int) -> None:
    """Fresh Oban and legacy tables, `rows` legacy rows half in each (made by the working tree)."""
    import psycopg

    from cinegraph_oban.migration.legacy import create_legacy_tables
    from cinegraph_oban.oban.table import install
    from cinegraph_oban.sql import builder

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE", {})
        conn.execute("CREATE SCHEMA public", {})
        install(conn, 14)
        create_legacy_tables(conn)
        for statement in builder.statements("legacy/sample_rows", schema="public"):
            conn.execute(statement.encode(), {"rows": rows // 2})
        conn.execute(builder.sql("legacy/create_schema_migrations", schema="public"), {})
        conn.execute("VACUUM ANALYZE", {})


def writing(dsn: str, stop: Any, out: dict[str, float]) -> None:
    """The application: small transactions on the legacy tables until they are gone."""
    import random
    import time

    import psycopg

    rng = random.Random(1)
    commits, slowest = 0, 0.0
    with psycopg.connect(dsn, autocommit=True) as conn:
        top = conn.execute("SELECT max(id) FROM failed_imdb_lookups", {}).fetchone()[0] or 1  # type: ignore[index]
        while not stop.is_set():
            started = time.perf_counter()
            try:
                with conn.transaction():
                    choice = rng.random()
                    if choice < 0.4:
                        conn.execute(
                            "UPDATE failed_imdb_lookups SET retry_count = retry_count + 1, last_retry_at = now() "
                            "WHERE id = %(id)s",
                            {"id": rng.randrange(1, top)},
                        )
                    elif choice < 0.7:
                        conn.execute(
                            "INSERT INTO skipped_imports (tmdb_id, title, inserted_at) VALUES (%(t)s, 'live', now())",
                            {"t": rng.randrange(10**6)},
                        )
                    elif choice < 0.9:
                        conn.execute(
                            "INSERT INTO failed_imdb_lookups (imdb_id, source, reason, inserted_at, updated_at) "
                            "VALUES ('tt1', 'canonical_import', 'no_tmdb_match', now(), now())",
                            {},
                        )
                    else:
                        conn.execute("DELETE FROM skipped_imports WHERE id = %(id)s", {"id": rng.randrange(1, top)})
            except psycopg.errors.UndefinedTable:  # the drop committed while it waited for the lock
                slowest = max(slowest, time.perf_counter() - started)
                break
            slowest = max(slowest, time.perf_counter() - started)
            commits += 1
    out.update({"commits": commits, "slowest_ms": slowest * 1000})


def run_migrate(checkout: Path, dsn: str, rows: int, writer: bool) -> dict[str, float]:
    import threading

    legacy(dsn, rows)
    stop, seen = threading.Event(), {}
    thread = threading.Thread(target=writing, args=(dsn, stop, seen)) if writer else None
    if thread:
        thread.start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", MIGRATE, str(checkout), dsn], capture_output=True, text=True, check=True
        )
    finally:
        stop.set()
        if thread:
            thread.join()
    return {**json.loads(out.stdout.strip().splitlines()[-1]), **seen}


def migrate(options: argparse.Namespace, worktree: Path, dsn: str) -> None:
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    for _ in range(options.pairs):
        # A revision without the change capture cannot finish with a writer (verify finds the
        # writes): with --writer, REV runs with no writer, the working tree with and without.
        before.append(run_migrate(worktree, dsn, options.legacy_rows, False))
        after.append(run_migrate(ROOT, dsn, options.legacy_rows, False))
        if options.writer:
            live = run_migrate(ROOT, dsn, options.legacy_rows, True)
            after[-1].update({f"{name} (writer)": value for name, value in live.items()})
    writer = "working tree also with a live writer" if options.writer else "no writer"
    print(f"migrate up, {options.legacy_rows:,} legacy rows, {writer}, {options.pairs} alternating pairs (medians)")
    print(f"  {'':22} {options.rev[:12]:>12} {'working tree':>12}")
    for name in after[0]:
        if name not in before[0]:
            print(f"  {name:22} {'':>12} {statistics.median(r[name] for r in after):12.1f}")
            continue
        b = statistics.median(r[name] for r in before)
        a = statistics.median(r[name] for r in after)
        print(f"  {name:22} {b:12.1f} {a:12.1f}  after/before {a / b:.2f}")


def fill(dsn: str, jobs: int) -> None:
    import psycopg

    from cinegraph_oban import FailedLookup, Job, Oban
    from cinegraph_oban.oban.table import install

    with psycopg.connect(dsn, autocommit=True) as conn:
        install(conn, 14)
        meta = FailedLookup.new("tt0111161", "canonical_import", title="T").to_meta()
        worker = "Cinegraph.Workers.TMDbDetailsWorker"
        with Oban(conn) as oban:
            oban.insert_all([Job.new(worker, {"imdb_id": f"tt{n}"}, meta=meta, unique=False) for n in range(jobs)])
        conn.execute("UPDATE oban_jobs SET state = 'cancelled', cancelled_at = now(), attempt = 1", {})
        conn.execute("VACUUM ANALYZE oban_jobs", {})


def run(checkout: Path, dsn: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(checkout), dsn], capture_output=True, text=True, check=True)
    count, seconds = out.stdout.split()
    return int(count), float(seconds)


def run_inserts(checkout: Path, dsn: str) -> dict[str, float]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE oban_jobs", {})
        conn.execute("VACUUM ANALYZE oban_jobs", {})
    command = [sys.executable, "-c", INSERTS, str(checkout), dsn]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return {name: float(seconds) for name, seconds in (line.split("\t") for line in out.stdout.splitlines())}


def inserts(options: argparse.Namespace, worktree: Path, dsn: str) -> None:
    import psycopg

    from cinegraph_oban.oban.table import install

    with psycopg.connect(dsn, autocommit=True) as conn:
        install(conn, 14)
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    for _ in range(options.pairs):
        before.append(run_inserts(worktree, dsn))
        after.append(run_inserts(ROOT, dsn))
    print(f"insert paths, {options.pairs} alternating pairs, seconds (medians), after/before per pair")
    print(f"  {'':28} {options.rev[:12]:>12} {'working tree':>12}  ratio (min..max)")
    for name in before[0]:
        b = statistics.median(run[name] for run in before)
        a = statistics.median(run[name] for run in after)
        ratios = sorted(x[name] / y[name] for x, y in zip(after, before, strict=True))
        print(f"  {name:28} {b:12.3f} {a:12.3f}  {statistics.median(ratios):.2f} ({ratios[0]:.2f}..{ratios[-1]:.2f})")


USER_SUITE = """
import pytest
from cinegraph_oban import Job

@pytest.mark.parametrize("n", range(20))
def test_default_layout(oban_database, n):
    oban_database.oban.insert(Job.new("MyApp.Workers.Mailer", {"n": n}))
    assert oban_database.conn.execute("SELECT count(*) FROM oban_jobs").fetchone() == (1,)

@pytest.mark.parametrize("n", range(10))
@pytest.mark.oban(version=11, prefix="jobs", legacy_tables=True, legacy_rows=50)
def test_legacy_layout(oban_database, n):
    assert oban_database.conn.execute("SELECT count(*) FROM failed_imdb_lookups").fetchone() == (50,)
"""

PYTEST = """
import sys, time
sys.path.insert(0, sys.argv[1])
import pytest
started = time.perf_counter()
options = ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--cinegraph-oban-dsn=" + sys.argv[3]]
code = pytest.main([*options, sys.argv[2]])
elapsed = time.perf_counter() - started
import cinegraph_oban.testing.pytest_plugin as plugin
print(plugin.__file__)
print(elapsed)
sys.exit(code)
"""


def plugin(options: argparse.Namespace, worktree: Path) -> None:
    before: list[float] = []
    after: list[float] = []
    with tempfile.TemporaryDirectory() as project:
        (Path(project) / "test_user_suite.py").write_text(USER_SUITE)
        for _ in range(options.pairs):
            for checkout, times in ((worktree, before), (ROOT, after)):
                command = [sys.executable, "-c", PYTEST, str(checkout), project, SERVER]
                out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=project)
                *_, loaded, seconds = out.stdout.strip().splitlines()
                assert loaded.startswith(str(checkout)), f"the plugin came from {loaded}, not {checkout}"
                times.append(float(seconds))
    b, a = statistics.median(before), statistics.median(after)
    print(f"a user's suite of 30 oban_database tests, {options.pairs} alternating pairs (medians), seconds")
    print(f"  {options.rev[:12]:>12} {b:8.2f}\n  {'working tree':>12} {a:8.2f}  after/before {a / b:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--inserts", action="store_true", help="the insert paths instead of the readers")
    parser.add_argument("--migrate", action="store_true", help="migrate up instead of the readers")
    parser.add_argument("--legacy-rows", type=int, default=200_000)
    parser.add_argument("--writer", action="store_true", help="with --migrate: an application writing all along")
    parser.add_argument("--plugin", action="store_true", help="a user's suite of oban_database tests")
    options = parser.parse_args()
    import psycopg

    dbname = f"bench_before_after_{os.getpid()}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {dbname}".encode(), {})
    dsn = psycopg.conninfo.make_conninfo(SERVER, dbname=dbname)
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "before"
        add = ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(worktree), options.rev]
        subprocess.run(add, check=True)
        try:
            if options.inserts:
                inserts(options, worktree, dsn)
                return
            if options.migrate:
                migrate(options, worktree, dsn)
                return
            if options.plugin:
                plugin(options, worktree)
                return
            fill(dsn, options.jobs)
            before, after = [], []
            for _ in range(options.pairs):
                before.append(run(worktree, dsn)[1])
                after.append(run(ROOT, dsn)[1])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=True)
            with psycopg.connect(SERVER, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {dbname}".encode(), {})
    ratios = sorted(a / b for a, b in zip(after, before, strict=True))
    print(f"read_failed_lookups, {options.jobs:,} jobs, {options.pairs} alternating pairs (medians of 5 runs each)")
    for name, times in ((options.rev, before), ("working tree", after)):
        median = statistics.median(times)
        print(f"  {name}: median {median:.3f} s  ({options.jobs / median:,.0f}/s)")
    print(f"  after/before per pair: median {statistics.median(ratios):.2f} (from {ratios[0]:.2f} to {ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
