"""The readers at two revisions, side by side in one run (issue 17: "no speed lost").

    .venv/bin/python bench/before_after.py REV [--pairs 7] [--jobs 50000]

Checks REV out into a temporary git worktree, fills a scratch database with `--jobs` cancelled
TMDbDetailsWorker jobs holding a failed lookup in meta, then alternates: `read_failed_lookups`
over all of them at REV, then at the working tree, `--pairs` times (5 runs each, medians), and
prints both and their ratio. Needs the PostgreSQL on 127.0.0.1:5432 (or BENCH_DSN's server).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
CHILD = r"""
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
import psycopg
from cinegraph_oban.queries import read_failed_lookups
times = []
with psycopg.connect(sys.argv[2]) as conn:
    for _ in range(5):
        start = time.perf_counter()
        count = sum(1 for _ in read_failed_lookups(conn))
        times.append(time.perf_counter() - start)
print(count, statistics.median(times))
"""


def fill(dsn: str, jobs: int) -> None:
    import psycopg

    from cinegraph_oban import FailedLookup, Job, Oban
    from cinegraph_oban.schema import install

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=50_000)
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
