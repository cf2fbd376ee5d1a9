"""The asyncio client: the same API as `Oban`, on psycopg's async connections.

    oban = await AsyncOban.connect("postgresql://postgres@127.0.0.1/cinegraph")
    job = await oban.insert(Job.new("Cinegraph.Workers.TMDbDetailsWorker", {"tmdb_id": 278}))
    await oban.insert_all(jobs)
    await oban.insert(job, conn=async_session)   # psycopg AsyncConnection, SQLAlchemy AsyncConnection/AsyncSession

It shares everything but the awaiting with the sync client: the statements (`statements.py`, from
the same SQL templates), the job model, schema parsing and `InsertedJobs`, and the sharing model:
`AsyncOban.connect` owns an `AsyncConnectionPool` and each operation takes a connection for its
own duration, so one client serves every task of a process; a one-connection client and `conn=`
serialize the operations made through this library on that connection with an asyncio lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager, nullcontext
from itertools import islice
from typing import Any

import psycopg
from psycopg import pq
from psycopg.copy import AsyncQueuedLibpqWriter
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cinegraph_oban import statements
from cinegraph_oban.client import (
    COPY_CHUNK,
    COPY_THRESHOLD,
    DEFAULT_POOL_SIZE,
    POOL_TIMEOUT,
    BulkInsert,
    InsertedJobs,
    _unique_result,
    check_isolation,
    check_pool_size,
    check_small_batch,
    joins_transaction,
    pool_exhausted,
    pool_kwargs,
    pool_not_autocommit,
)
from cinegraph_oban.connections import (
    async_atomic,
    async_connect,
    async_connection_lock,
    cannot_connect,
    normalize_dsn,
    to_async_psycopg,
)
from cinegraph_oban.errors import ConnectionArgumentError, translate_errors
from cinegraph_oban.identifiers import check_prefix
from cinegraph_oban.job import Job
from cinegraph_oban.schema import ObanSchema, detect_sql, schema_from_catalog
from cinegraph_oban.unique import DEFAULT_OBAN_VERSION, check_oban_version
from cinegraph_oban.workers import WorkerRegistry

__all__ = ["AsyncOban"]


@asynccontextmanager
async def joined_savepoint(pg: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """`client.joined_savepoint` for asyncio connections."""
    if not joins_transaction(pg):
        yield
        return
    async with pg.pipeline(), async_atomic(pg):
        yield


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
    """A handle on one Oban installation, for asyncio code, safe to share between tasks."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any] | None = None,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        prefix: str = "public",
        registry: WorkerRegistry | None = None,
        owns_connection: bool = False,
        oban_version: str = DEFAULT_OBAN_VERSION,
    ) -> None:
        if conn is not None and pool is not None:
            raise ConnectionArgumentError("AsyncOban takes a connection or a pool, not both")
        if conn is not None and not isinstance(conn, psycopg.AsyncConnection):
            raise ConnectionArgumentError(
                f"AsyncOban takes a psycopg.AsyncConnection, got {type(conn).__name__}"
                + ("; use Oban for a sync connection" if isinstance(conn, psycopg.Connection) else "")
            )
        if pool is not None and not isinstance(pool, AsyncConnectionPool):
            raise ConnectionArgumentError(
                f"pool= takes a psycopg_pool.AsyncConnectionPool, got {type(pool).__name__}"
                + ("; use Oban for a sync ConnectionPool" if type(pool).__name__ == "ConnectionPool" else "")
            )
        self.prefix = check_prefix(prefix)
        self.oban_version = check_oban_version(oban_version)  # as Oban's: the unique defaults differ
        self.registry = registry
        self._conn = conn
        self._pool = pool
        self._owns_connection = owns_connection
        self._schema: ObanSchema | None = None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        prefix: str = "public",
        registry: WorkerRegistry | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        oban_version: str = DEFAULT_OBAN_VERSION,
        **connect_kwargs: Any,
    ) -> AsyncOban:
        """A client with a pool of up to `pool_size` autocommit connections (as `Oban.connect`)."""
        check_prefix(prefix)
        check_oban_version(oban_version)
        size = check_pool_size(pool_size)
        kwargs = pool_kwargs(connect_kwargs)
        url = normalize_dsn(dsn)
        first = await async_connect(url, **kwargs)  # a clear error for a wrong URL or a server down
        await first.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=size,
            kwargs=kwargs,
            open=False,
            timeout=POOL_TIMEOUT,
            name="cinegraph-oban",
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
        except PoolTimeout as exc:
            await pool.close()
            raise cannot_connect(url, exc) from exc
        return cls(pool=pool, prefix=prefix, registry=registry, owns_connection=True, oban_version=oban_version)

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None:
        """The connection pool the client's operations draw from (None for a one-connection client)."""
        return self._pool

    @property
    def connection(self) -> psycopg.AsyncConnection[Any]:
        """The one connection of a client built on a connection (`AsyncOban(conn)`)."""
        if self._conn is None:
            if self._pool is not None:
                raise ConnectionArgumentError(
                    "this AsyncOban client draws connections from a pool; "
                    "use `async with oban.pool.connection() as conn:`"
                )
            raise ConnectionArgumentError("this AsyncOban client has no connection of its own; pass conn=")
        return self._conn

    async def close(self) -> None:
        if not self._owns_connection:
            return
        if self._pool is not None:
            await self._pool.close()
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> AsyncOban:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _using(self, conn: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection one operation runs on, held for its whole duration (see `Oban._using`)."""
        with translate_errors():
            if conn is not None:
                pg = await to_async_psycopg(conn)
                async with async_connection_lock(pg):
                    yield pg
            elif self._pool is not None:
                try:
                    pg = await self._pool.getconn()
                except PoolTimeout as exc:
                    raise pool_exhausted(self._pool.timeout, self._pool.max_size) from exc
                try:
                    if not pg.autocommit:
                        raise pool_not_autocommit()
                    yield pg
                finally:
                    await self._pool.putconn(pg)
            else:
                pg = self.connection
                async with async_connection_lock(pg):
                    yield pg

    async def schema(self, conn: Any = None) -> ObanSchema:
        """The detected Oban schema, read once and cached."""
        if self._schema is None:
            async with self._using(conn) as pg:
                return await self._schema_on(pg)
        return self._schema

    async def _schema_on(self, pg: psycopg.AsyncConnection[Any]) -> ObanSchema:
        if self._schema is None:
            async with pg.cursor(row_factory=dict_row) as cur:
                await cur.execute(detect_sql(), {"prefix": self.prefix})
                row = await cur.fetchone()
            assert row is not None
            self._schema = schema_from_catalog(row, self.prefix, pg.info.dbname)
        return self._schema

    async def refresh_schema(self, conn: Any = None) -> ObanSchema:
        """Forget the cached schema (after migrating Oban) and read it again."""
        self._schema = None
        return await self.schema(conn)

    async def insert(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job with its notification (unique jobs: the existing one on a conflict)."""
        job = job.validated()
        async with self._using(conn) as pg:
            schema = await self._schema_on(pg)
            schema.check_job(job)
            if job.unique is None:
                statement = statements.insert_statement(job, schema)
                async with joined_savepoint(pg), pg.cursor() as cur:
                    await cur.execute(statement.sql, statement.params)
                    row = await cur.fetchone()
                assert row is not None
                return job.stored(row[0], row[1], row[2])
            return await self._insert_unique(pg, job, schema, own_transaction=not joins_transaction(pg))

    async def _insert_unique(
        self, pg: psycopg.AsyncConnection[Any], job: Job, schema: ObanSchema, *, own_transaction: bool
    ) -> Job:
        lock, lookup = statements.unique_statements(job, schema, self.oban_version)
        begin, commit = statements.transaction_sql()
        if own_transaction:  # the lookup then keeps its generic plan (jobs/unique_lock.sql.j2)
            lock = statements.own_transaction_lock(lock, lookup)
        try:
            async with (
                pg.pipeline(),
                nullcontext() if own_transaction else async_atomic(pg),
                pg.cursor() as cur,
                pg.cursor(row_factory=dict_row) as found,
            ):
                if own_transaction:
                    await cur.execute(begin, {})
                else:
                    await cur.execute(statements.isolation_sql(), {})
                    level = await cur.fetchone()
                    check_isolation(level[0] if level else None)
                await cur.execute(lock.sql, lock.params)
                await found.execute(lookup.sql, lookup.params)
                if own_transaction:
                    await cur.execute(commit, {})
                found_row = await found.fetchone()
        except BaseException:
            if own_transaction and pg.info.transaction_status != pq.TransactionStatus.IDLE:
                await pg.rollback()
            raise
        assert found_row is not None
        return _unique_result(job, lookup, found_row)

    async def insert_all(self, jobs: Iterable[Job] | AsyncIterable[Job], *, conn: Any = None) -> InsertedJobs:
        """Insert many jobs, all or nothing, in input order (as `Oban.insert_all`)."""
        chunks = _chunks(jobs, COPY_THRESHOLD)
        first: list[Job] = [job.validated() for job in await anext(chunks, [])]
        if not first:
            return InsertedJobs([], [], [], [])
        async with self._using(conn) as pg:
            schema = await self._schema_on(pg)
            if len(first) < COPY_THRESHOLD:
                statement = check_small_batch(schema, first)
                async with joined_savepoint(pg), pg.cursor() as cur:
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
            yield job.validated()
