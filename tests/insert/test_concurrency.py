"""One client shared by threads, asyncio tasks and processes: every id a call returns is a row in
the table, no call fails, and unique inserts make no duplicates (issue 15).

Each test is bounded: threads and tasks are joined with a timeout, so a hang fails the test
instead of stalling the suite. The figures are small enough for two cores and large enough to
interleave: on main before issue 15, `insert_all` from 8 threads on one connection lost 4,500
of 4,600 acknowledged jobs with batches of 100.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from cinegraph_oban import AsyncOban, ConnectionArgumentError, IsolationLevelError, Job, Oban, ValidationError
from cinegraph_oban.insert.client import COPY_THRESHOLD
from conftest import ObanDatabase
from tests.helpers import TMDB as WORKER
from tests.helpers import forkserver, unique_inserts_in_transactions

THREADS = 8
#: Seconds a whole concurrent run may take before the test fails as hung.
BOUND = 120


def plain(n: int) -> Job:
    return Job.new(WORKER, {"tmdb_id": n}, unique=False)


def unique(n: int) -> Job:
    """Unique on `tmdb_id` for 300 s: the default registry's options for this worker."""
    return Job.new(WORKER, {"tmdb_id": n})


def _run_threads(work: Callable[[int], list[int]]) -> list[int]:
    """`work(thread_index)` on THREADS threads at once; every id they return, in one list."""
    start = threading.Barrier(THREADS)

    def run(index: int) -> list[int]:
        start.wait(timeout=BOUND)
        return work(index)

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(run, index) for index in range(THREADS)]
        return [job_id for future in futures for job_id in future.result(timeout=BOUND)]


def _ops(kind: str) -> Callable[[Oban, int, Any], list[int]]:
    """What one thread does with the shared client: returns the ids it was given."""

    def small_batches(client: Oban, index: int, conn: Any) -> list[int]:
        ids: list[int] = []
        for batch in range(5):
            base = (index * 100 + batch) * 100
            ids += client.insert_all([plain(base + i) for i in range(100)], conn=conn).ids
        return ids

    def copy_batches(client: Oban, index: int, conn: Any) -> list[int]:
        ids: list[int] = []
        for batch in range(2):
            base = (index * 100 + batch) * 1_000
            ids += client.insert_all((plain(base + i) for i in range(COPY_THRESHOLD + 100)), conn=conn).ids
        return ids

    def single(client: Oban, index: int, conn: Any) -> list[int]:
        return [client.insert(plain(index * 1_000 + i), conn=conn).id or 0 for i in range(60)]

    def uniques(client: Oban, index: int, conn: Any) -> list[int]:
        # Every thread inserts the same 20 keys: 20 rows, the rest conflicts returning them.
        return [client.insert(unique(k), conn=conn).id or 0 for k in range(20)]

    def mixed(client: Oban, index: int, conn: Any) -> list[int]:
        ids = [client.insert(plain(10_000_000 + index * 100 + i), conn=conn).id or 0 for i in range(10)]
        ids += client.insert_all([plain(20_000_000 + index * 1_000 + i) for i in range(50)], conn=conn).ids
        ids += [client.insert(unique(k), conn=conn).id or 0 for k in range(10)]
        ids += client.insert_all([plain(30_000_000 + index * 1_000 + i) for i in range(COPY_THRESHOLD)], conn=conn).ids
        return ids

    return {"insert_all": small_batches, "copy": copy_batches, "insert": single, "unique": uniques, "mixed": mixed}[
        kind
    ]


def _expected_distinct(kind: str) -> int:
    return {
        "insert_all": THREADS * 500,
        "copy": THREADS * 2 * (COPY_THRESHOLD + 100),
        "insert": THREADS * 60,
        "unique": 20,
        "mixed": THREADS * (10 + 50 + COPY_THRESHOLD) + 10,
    }[kind]


def _assert_all_stored(oban: ObanDatabase, ids: list[int], kind: str) -> None:
    stored = {row[0] for row in oban.conn.execute(f"SELECT id FROM {oban.table}".encode(), {}).fetchall()}
    assert set(ids) == stored  # every acknowledged id is a row, and every row was acknowledged
    assert len(stored) == _expected_distinct(kind)
    if kind == "unique":
        assert len(ids) == THREADS * 20
        duplicates = oban.conn.execute(
            f"SELECT args->>'tmdb_id', count(*) FROM {oban.table} GROUP BY 1 HAVING count(*) > 1".encode(), {}
        ).fetchall()
        assert duplicates == []
    elif kind == "mixed":  # 10 unique keys per thread, shared by all: conflicts return the same ids
        assert len(ids) == THREADS * (10 + 50 + COPY_THRESHOLD + 10)
    else:
        assert len(ids) == len(set(ids))


KINDS = ["insert_all", "copy", "insert", "unique", "mixed"]


@contextlib.contextmanager
def _shared(mode: str, oban: ObanDatabase) -> Iterator[tuple[Oban, Any]]:
    """The client every thread shares, and the conn= each call passes (None: the client's own)."""
    if mode == "pool":
        with Oban.connect(oban.dsn, pool_size=4) as client:
            yield client, None
    elif mode == "one_connection":
        with contextlib.closing(psycopg.connect(oban.dsn, autocommit=True)) as conn:
            yield Oban(conn), None
    elif mode == "conn_argument":
        with contextlib.closing(psycopg.connect(oban.dsn, autocommit=True)) as conn:
            yield Oban(), conn
    else:  # a caller's pool
        with ConnectionPool(oban.dsn, min_size=2, max_size=4, kwargs={"autocommit": True}) as pool:
            yield Oban(pool=pool), None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["pool", "one_connection", "conn_argument", "caller_pool"])
def test_threads_sharing_a_client_lose_nothing(oban: ObanDatabase, mode: str, kind: str) -> None:
    with _shared(mode, oban) as (client, conn):
        ids = _run_threads(lambda index: _ops(kind)(client, index, conn))
    _assert_all_stored(oban, ids, kind)


def test_threads_sharing_a_connection_in_its_transaction_commit_together(oban: ObanDatabase) -> None:
    """conn= a non-autocommit connection shared by threads: all their work joins its one
    transaction, in savepoints that never nest another thread's, and the commit keeps all."""
    with contextlib.closing(psycopg.connect(oban.dsn)) as conn:
        client = Oban()
        ids = _run_threads(lambda index: _ops("mixed")(client, index, conn))
        assert oban.count() == 0  # nothing committed by us
        conn.commit()
    _assert_all_stored(oban, ids, "mixed")


# asyncio


async def _task_ops(client: AsyncOban, index: int, conn: Any) -> list[int]:
    ids = [(await client.insert(plain(10_000_000 + index * 100 + i), conn=conn)).id or 0 for i in range(20)]
    ids += (await client.insert_all([plain(20_000_000 + index * 1_000 + i) for i in range(50)], conn=conn)).ids
    ids += [(await client.insert(unique(k), conn=conn)).id or 0 for k in range(10)]
    ids += (
        await client.insert_all([plain(30_000_000 + index * 1_000 + i) for i in range(COPY_THRESHOLD)], conn=conn)
    ).ids
    return ids


async def _run_tasks(client: AsyncOban, conn: Any = None) -> list[int]:
    results = await asyncio.wait_for(
        asyncio.gather(*(_task_ops(client, index, conn) for index in range(THREADS))), BOUND
    )
    return [job_id for ids in results for job_id in ids]


@pytest.mark.parametrize("mode", ["pool", "one_connection", "conn_argument"])
def test_tasks_sharing_an_async_client_lose_nothing(oban: ObanDatabase, mode: str) -> None:
    async def main() -> list[int]:
        if mode == "pool":
            async with await AsyncOban.connect(oban.dsn, pool_size=4) as client:
                return await _run_tasks(client)
        conn = await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True)
        try:
            if mode == "one_connection":
                return await _run_tasks(AsyncOban(conn))
            return await _run_tasks(AsyncOban(), conn)
        finally:
            await conn.close()

    ids = asyncio.run(main())
    stored = {row[0] for row in oban.conn.execute(f"SELECT id FROM {oban.table}".encode(), {}).fetchall()}
    assert set(ids) == stored
    assert len(stored) == THREADS * (20 + 50 + COPY_THRESHOLD) + 10


# processes: unique inserts joining callers' transactions


@pytest.mark.parametrize("isolation", ["READ_COMMITTED", "REPEATABLE_READ", "SERIALIZABLE"])
def test_unique_inserts_from_processes_make_no_duplicates(oban: ObanDatabase, isolation: str) -> None:
    processes, keys = 4, 40
    # Processes forked from one server that has imported the package (tests.helpers.forkserver):
    # a spawned process would import it all again, 0.6 s of CPU each.
    context = forkserver()
    start = context.Barrier(processes)
    out = context.Queue()
    workers = [
        context.Process(target=unique_inserts_in_transactions, args=(oban.dsn, isolation, keys, start, out, BOUND))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=BOUND) for _ in workers]
    for worker in workers:
        worker.join(BOUND)
        assert worker.exitcode == 0
    rows = oban.count()
    duplicates = oban.conn.execute(
        f"SELECT count(*) - count(DISTINCT args->>'tmdb_id') FROM {oban.table}".encode(), {}
    ).fetchone()
    assert duplicates == (0,)
    if isolation == "READ_COMMITTED":
        assert rows == keys
        assert sum(made for made, _ in results) == keys
    else:  # refused at once, every time, with nothing written
        assert rows == 0
        assert results == [(0, keys)] * processes


def test_a_refused_unique_insert_leaves_the_callers_transaction_usable(oban: ObanDatabase) -> None:
    oban.conn.execute(b"CREATE TABLE mine (n int)", {})
    with psycopg.connect(oban.dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute(b"INSERT INTO mine VALUES (1)", {})
        with pytest.raises(IsolationLevelError, match="READ COMMITTED"):
            Oban().insert(unique(1), conn=conn)
        conn.execute(b"INSERT INTO mine VALUES (2)", {})
    assert oban.conn.execute(b"SELECT array_agg(n ORDER BY n) FROM mine", {}).fetchone() == ([1, 2],)
    assert oban.count() == 0


# savepoints inside the caller's transaction


def _evil(n: int) -> Job:
    return Job.new(WORKER, {"tmdb_id": n, "evil": True}, unique=False)


PATHS: dict[str, Callable[[Oban, Any], object]] = {
    "insert": lambda client, conn: client.insert(_evil(1), conn=conn),
    "unique": lambda client, conn: client.insert(Job.new(WORKER, {"tmdb_id": 1, "evil": True}), conn=conn),
    "insert_all": lambda client, conn: client.insert_all([plain(1), plain(2), _evil(3)], conn=conn),
    "copy": lambda client, conn: client.insert_all([plain(n) for n in range(COPY_THRESHOLD)] + [_evil(0)], conn=conn),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("autocommit", [False, True], ids=["implicit_transaction", "explicit_transaction"])
def test_a_failed_insert_leaves_the_callers_transaction_usable(oban: ObanDatabase, path: str, autocommit: bool) -> None:
    """The database refuses the job (a CHECK the test adds); the caller catches the library's
    error and goes on; its own rows before and after are committed, none of the batch is."""
    oban.conn.execute(f"ALTER TABLE {oban.table} ADD CONSTRAINT no_evil CHECK (args->'evil' IS NULL)".encode(), {})
    oban.conn.execute(b"CREATE TABLE mine (n int)", {})
    with (
        psycopg.connect(oban.dsn, autocommit=autocommit) as conn,
        conn.transaction() if autocommit else contextlib.nullcontext(),
    ):
        conn.execute(b"INSERT INTO mine VALUES (1)", {})
        with pytest.raises(ValidationError, match="no_evil"):
            PATHS[path](Oban(), conn)
        conn.execute(b"INSERT INTO mine VALUES (2)", {})
        kept = Oban().insert(plain(99), conn=conn)
    assert oban.conn.execute(b"SELECT array_agg(n ORDER BY n) FROM mine", {}).fetchone() == ([1, 2],)
    assert [row["id"] for row in oban.rows()] == [kept.id]


@pytest.mark.parametrize("path", ["insert", "unique", "insert_all", "copy"])
def test_a_failed_async_insert_leaves_the_callers_transaction_usable(oban: ObanDatabase, path: str) -> None:
    oban.conn.execute(f"ALTER TABLE {oban.table} ADD CONSTRAINT no_evil CHECK (args->'evil' IS NULL)".encode(), {})
    oban.conn.execute(b"CREATE TABLE mine (n int)", {})

    async def main() -> int | None:
        client = AsyncOban()
        async with await psycopg.AsyncConnection.connect(oban.dsn) as conn:
            await conn.execute(b"INSERT INTO mine VALUES (1)", {})
            with pytest.raises(ValidationError, match="no_evil"):
                if path == "insert":
                    await client.insert(_evil(1), conn=conn)
                elif path == "unique":
                    await client.insert(Job.new(WORKER, {"tmdb_id": 1, "evil": True}), conn=conn)
                elif path == "insert_all":
                    await client.insert_all([plain(1), _evil(2)], conn=conn)
                else:
                    await client.insert_all([plain(n) for n in range(COPY_THRESHOLD)] + [_evil(0)], conn=conn)
            await conn.execute(b"INSERT INTO mine VALUES (2)", {})
            return (await client.insert(plain(99), conn=conn)).id

    kept = asyncio.run(main())
    assert oban.conn.execute(b"SELECT array_agg(n ORDER BY n) FROM mine", {}).fetchone() == ([1, 2],)
    assert [row["id"] for row in oban.rows()] == [kept]


# the wrong kind of connection or pool


def test_the_wrong_kind_of_connection_is_refused_at_once(oban: ObanDatabase) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as aconn:
            with pytest.raises(ConnectionArgumentError, match="asyncio"):
                Oban(aconn)  # type: ignore[arg-type]
            with pytest.raises(ConnectionArgumentError, match="asyncio"):
                Oban(oban.conn).insert(plain(1), conn=aconn)
            with pytest.raises(ConnectionArgumentError, match="sync"):
                await AsyncOban().insert(plain(1), conn=oban.conn)
        with pytest.raises(ConnectionArgumentError, match="sync connection"):
            AsyncOban(oban.conn)  # type: ignore[arg-type]

    asyncio.run(main())
    with pytest.raises(ConnectionArgumentError, match="no connection"):
        Oban().insert(plain(1))
    assert oban.count() == 0


def test_a_callers_pool_in_transactions_is_refused_before_anything_is_written(oban: ObanDatabase) -> None:
    """A pooled connection that is not autocommit would be rolled back when it goes back."""
    with (
        ConnectionPool(oban.dsn, min_size=1, max_size=1) as pool,
        pytest.raises(ConnectionArgumentError, match="autocommit"),
    ):
        Oban(pool=pool).insert(plain(1))
    assert oban.count() == 0


def test_connect_refuses_a_pool_size_that_is_not_positive(oban: ObanDatabase) -> None:
    for size in (0, -1, True, 2.5):
        with pytest.raises(ConnectionArgumentError, match="pool_size"):
            Oban.connect(oban.dsn, pool_size=size)  # type: ignore[arg-type]
