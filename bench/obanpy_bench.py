"""The same workloads through the official Oban for Python (`oban` on PyPI), run in its own venv.

    bench/.venv-obanpy/bin/python bench/obanpy_bench.py URL ROWS SINGLE REPEAT

Installs oban-py's own schema (its `install_sql`: not Elixir Oban's, see bench/README.md) into
the given database and prints one JSON line: {"version", "many", "one"} in jobs per second.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from importlib.metadata import version

import psycopg
from oban import Oban
from oban.job import Job
from oban.schema import install_sql


def _load_sample_data() -> object:
    # The sample data module alone: importing the cinegraph_oban package would need its
    # dependencies in this venv.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "cinegraph_oban" / "migration" / "sample_data.py"
    spec = importlib.util.spec_from_file_location("sample_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


import_args = _load_sample_data().import_args  # type: ignore[attr-defined]

WORKER = "Cinegraph.Workers.TMDbDetailsWorker"


async def run(url: str, rows: int, single: int, repeat: int) -> dict[str, object]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(install_sql())
    pool = await Oban.create_pool(url, min_size=1, max_size=2)
    oban = Oban(pool=pool)
    many_rates: list[float] = []
    one_rates: list[float] = []
    bulk_args = list(import_args(rows))
    one_args = list(import_args(single, seed=7))
    try:
        for _ in range(repeat if rows <= 10_000 else 1):
            async with pool.connection() as conn:
                await conn.execute("TRUNCATE oban_jobs")
            jobs = [Job(worker=WORKER, args=a, queue="tmdb", max_attempts=5) for a in bulk_args]
            started = time.perf_counter()
            await oban.enqueue_many(jobs)
            many_rates.append(rows / (time.perf_counter() - started))
        for _ in range(repeat):
            async with pool.connection() as conn:
                await conn.execute("TRUNCATE oban_jobs")
            started = time.perf_counter()
            for a in one_args:
                await oban.enqueue(Job(worker=WORKER, args=a, queue="tmdb", max_attempts=5))
            one_rates.append(single / (time.perf_counter() - started))
    finally:
        await pool.close()
    return {"version": version("oban"), "many": statistics.median(many_rates), "one": statistics.median(one_rates)}


if __name__ == "__main__":
    url, rows, single, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(run(url, rows, single, repeat))))
