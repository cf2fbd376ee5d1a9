"""The asyncio client: the same API as `Oban`, on psycopg's async connections.

    oban = await AsyncOban.connect("postgresql://postgres@127.0.0.1/cinegraph")
    job = await oban.insert(Job.new("Cinegraph.Workers.TMDbDetailsWorker", {"tmdb_id": 278}))
    await oban.insert_all(jobs)
    await oban.insert(job, conn=async_session)   # psycopg AsyncConnection, SQLAlchemy AsyncConnection/AsyncSession

It shares everything but the awaiting with the sync client: the statements (`statements.py`, from
the same SQL templates), the job model, schema parsing and `InsertedJobs`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from itertools import islice
from typing import Any

import psycopg
from psycopg import pq
from psycopg.copy import AsyncQueuedLibpqWriter
from psycopg.rows import dict_row

from cinegraph_oban import statements
from cinegraph_oban.client import (
    COPY_CHUNK,
    COPY_THRESHOLD,
    BulkInsert,
    InsertedJobs,
    _unique_result,
    check_small_batch,
)
from cinegraph_oban.connections import async_atomic, async_connect, to_async_psycopg
from cinegraph_oban.errors import UnsupportedSchemaError
from cinegraph_oban.job import Job
from cinegraph_oban.schema import ObanSchema, detect_sql, schema_from_catalog
from cinegraph_oban.workers import WorkerRegistry

__all__ = ["AsyncOban"]


async def _chunks(jobs: Iterable[Job] | AsyncIterable[Job], size: int) -> AsyncIterator[list[Job]]:
    """Jobs from a plain or an async iterable, `size` at a time."""
    if isinstance(jobs, AsyncIterable):
        chunk: list[Job] = []
        async for job in jobs:
            chunk.append(job)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    iterator = iter(jobs)
    while chunk := list(islice(iterator, size)):
        yield chunk


class AsyncOban:
    """A handle on one Oban installation, for asyncio code."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any] | None = None,
        *,
        prefix: str = "public",
        registry: WorkerRegistry | None = None,
        owns_connection: bool = False,
    ) -> None:
        self.prefix = prefix
        self.registry = registry
        self._conn = conn
        self._owns_connection = owns_connection
        self._schema: ObanSchema | None = None

    @classmethod
    async def connect(
        cls, dsn: str, *, prefix: str = "public", registry: WorkerRegistry | None = None, **kwargs: Any
    ) -> AsyncOban:
        conn = await async_connect(dsn, autocommit=True, **kwargs)
        return cls(conn, prefix=prefix, registry=registry, owns_connection=True)

    async def close(self) -> None:
        if self._owns_connection and self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> AsyncOban:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _resolve(self, conn: Any) -> psycopg.AsyncConnection[Any]:
        if conn is not None:
            return await to_async_psycopg(conn)
        if self._conn is None:
            raise UnsupportedSchemaError("this AsyncOban client has no connection of its own; pass conn=")
        return self._conn

    async def schema(self, conn: Any = None) -> ObanSchema:
        """The detected Oban schema, read once and cached."""
        if self._schema is None:
            pg = await self._resolve(conn)
            async with pg.cursor(row_factory=dict_row) as cur:
                await cur.execute(detect_sql(), {"prefix": self.prefix})
                row = await cur.fetchone()
            assert row is not None
            self._schema = schema_from_catalog(row, self.prefix, pg.info.dbname)
        return self._schema

    async def insert(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job with its notification (unique jobs: the existing one on a conflict)."""
        pg = await self._resolve(conn)
        schema = await self.schema(pg)
        schema.check_job(job)
        if job.unique is None:
            statement = statements.insert_statement(job, schema)
            async with pg.cursor() as cur:
                await cur.execute(statement.sql, statement.params)
                row = await cur.fetchone()
            assert row is not None
            return job.stored(row[0], row[1], row[2])
        lock, lookup = statements.unique_statements(job, schema)
        own_transaction = pg.autocommit and pg.info.transaction_status == pq.TransactionStatus.IDLE
        begin, commit = statements.transaction_sql()
        if own_transaction:  # the lookup then keeps its generic plan (jobs/unique_lock.sql.j2)
            lock = statements.own_transaction_lock(lock, lookup)
        try:
            async with pg.pipeline(), pg.cursor() as cur, pg.cursor(row_factory=dict_row) as found:
                if own_transaction:
                    await cur.execute(begin)
                await cur.execute(lock.sql, lock.params)
                await found.execute(lookup.sql, lookup.params)
                if own_transaction:
                    await cur.execute(commit)
                found_row = await found.fetchone()
        except BaseException:
            if own_transaction and pg.info.transaction_status != pq.TransactionStatus.IDLE:
                await pg.rollback()
            raise
        assert found_row is not None
        return _unique_result(job, lookup, found_row)

    async def insert_all(self, jobs: Iterable[Job] | AsyncIterable[Job], *, conn: Any = None) -> InsertedJobs:
        """Insert many jobs, all or nothing, in input order (as `Oban.insert_all`)."""
        pg = await self._resolve(conn)
        schema = await self.schema(pg)
        chunks = _chunks(jobs, COPY_THRESHOLD)
        first: list[Job] = await anext(chunks, [])
        if not first:
            return InsertedJobs([], [], [], [])
        if len(first) < COPY_THRESHOLD:
            statement = check_small_batch(schema, first)
            async with pg.cursor() as cur:
                await cur.execute(statement.sql, statement.params)
                rows = await cur.fetchall()
            return InsertedJobs.from_rows(first, rows)
        rest = _chunks(_after(first, chunks), COPY_CHUNK)
        return await self._copy_all(pg, schema, rest)

    async def _copy_all(
        self, pg: psycopg.AsyncConnection[Any], schema: ObanSchema, chunks: AsyncIterator[list[Job]]
    ) -> InsertedJobs:
        bulk = BulkInsert(schema)
        async with async_atomic(pg), pg.cursor() as cur:
            async for chunk in chunks:
                reserve = bulk.check(chunk)
                await cur.execute(reserve.sql, reserve.params)
                copy_sql, types, rows = bulk.copy(chunk, await cur.fetchall())
                async with cur.copy(copy_sql, writer=AsyncQueuedLibpqWriter(cur)) as copy:
                    copy.set_types(types)
                    for row in rows:
                        await copy.write_row(row)
            notify = bulk.notify()
            if notify is not None:
                await cur.execute(notify.sql, notify.params)
        return bulk.result()


async def _after(first: list[Job], chunks: AsyncIterator[list[Job]]) -> AsyncIterator[Job]:
    for job in first:
        yield job
    async for chunk in chunks:
        for job in chunk:
            yield job
