"""How soon a running genuine Oban starts a job this library inserts (the insert notification).

    .venv/bin/python bench/genuine_pickup.py [--jobs 20]

Builds (or reuses) the genuine-Oban harness (tests/genuine_oban), makes an Oban V14 schema in a
scratch database, starts Oban 2.23.1 with one queue and the Stager polling only every 30 s, then
inserts jobs one at a time through `Oban.insert` and reads `attempted_at - inserted_at` of each.
Beside it, the reference: one row inserted by bare SQL, which no notification announces.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cinegraph_oban import Job, Oban
from tests.genuine import GenuineOban, Harness, build

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKER = "Harness.Workers.Completes"


def started_after(dsn: str, job_id: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT extract(epoch FROM attempted_at - inserted_at) FROM oban_jobs "
                "WHERE id = %(id)s AND attempted_at IS NOT NULL",
                {"id": job_id},
            ).fetchone()
            if row is not None:
                return float(row[0])
            time.sleep(0.01)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    jobs = parser.parse_args().jobs
    dbname = "bench_genuine_pickup"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {dbname}".encode(), {})
        admin.execute(f"CREATE DATABASE {dbname}".encode(), {})
    dsn = SERVER.rsplit("/", 1)[0] + "/" + dbname  # a URL: the harness hands it to Ecto's url:
    harness = Harness(build())
    genuine = GenuineOban(harness, dsn)
    try:
        genuine.migrate(14)
        genuine.start("runner", queues={"harness": 5}, stage_interval=30_000)
        time.sleep(0.5)
        ours = []
        with Oban.connect(dsn, pool_size=1) as oban:
            for n in range(jobs):
                job = oban.insert(Job.new(WORKER, {"n": n}, queue="harness"))
                assert job.id is not None
                ours.append(started_after(dsn, job.id, 40))
        with psycopg.connect(dsn, autocommit=True) as conn:
            bare_sql = "INSERT INTO oban_jobs (worker, queue, args) VALUES (%(w)s, 'harness', '{}') RETURNING id"
            row = conn.execute(bare_sql, {"w": WORKER}).fetchone()
        assert row is not None
        bare = started_after(dsn, row[0], 40)
    finally:
        genuine.close()
        harness.close()
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname}".encode(), {})
    print(f"genuine Oban {harness.oban_version}, Stager every 30 s; {jobs} jobs through Oban.insert:")
    print(f"  started after: min {min(ours):.3f} s, median {statistics.median(ours):.3f} s, max {max(ours):.3f} s")
    print(f"  one bare SQL row (no notification): started after {bare:.1f} s")


if __name__ == "__main__":
    main()
