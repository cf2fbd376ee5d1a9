# Generated from cinegraph_oban/insert/client_async.py by tools/async_to_sync.py: do not edit.
# Edit the asyncio source and run `python tools/async_to_sync.py` (CI checks it is current).
"""The client: enqueue Oban jobs from Python with psycopg 3.

    oban = Oban.connect("postgresql://postgres@127.0.0.1/cinegraph")   # owns a connection pool
    job = oban.insert(Job.new("Cinegraph.Workers.TMDbDetailsWorker", {"tmdb_id": 278}))
    oban.insert_all(jobs)                      # all or nothing
    oban.insert(job, conn=caller_connection)   # inside the caller's own transaction

Generated from the asyncio source, `cinegraph_oban/insert/client_async.py`, by
tools/async_to_sync.py. What an insert means apart from any connection is
`insertion.py`'s, the statements are `statements.py`'s, the job row's encoding `row.py`'s, and
the libpq fast path `prepared.py`'s; this module only sends them.

One client is meant to be shared by every thread of a process. Each operation takes a connection
of its own from the client's pool (psycopg_pool, autocommit) for its whole duration, so a plain
`insert` is one statement and one round trip. A client built on one connection
(`Oban(conn)`), and every `conn=` argument, serialize the operations made through this
library on that connection with a per-connection lock, so two threads never interleave one
insert's statements with another's. With `conn=` the work joins the caller's transaction, inside
a savepoint, and nothing is committed here. `conn=` takes a psycopg connection, a SQLAlchemy Connection or Session.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from itertools import islice
from typing import Any

import psycopg
from psycopg import pq
from psycopg.copy import QueuedLibpqWriter
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from cinegraph_oban.db.connections import (
    atomic,
    cannot_connect,
    connect,
    connection_lock,
    normalize_dsn,
    to_psycopg,
)
from cinegraph_oban.db.identifiers import check_prefix
from cinegraph_oban.errors import ConnectionArgumentError, translate_errors
from cinegraph_oban.insert import prepared, statements
from cinegraph_oban.insert.insertion import (
    COPY_CHUNK,
    COPY_THRESHOLD,
    DEFAULT_POOL_SIZE,
    POOL_TIMEOUT,
    BulkInsert,
    ClientMemory,
    InsertedJobs,
    behind_transaction_pooler,
    check_isolation,
    check_pool,
    check_pool_size,
    check_small_batch,
    joins_transaction,
    pool_exhausted,
    pool_kwargs,
    pool_not_autocommit,
    unique_result,
)
from cinegraph_oban.model.job import Job
from cinegraph_oban.model.unique import DEFAULT_OBAN_VERSION, check_oban_version
from cinegraph_oban.model.workers import WorkerRegistry
from cinegraph_oban.oban.installation import detect
from cinegraph_oban.oban.table import ObanTable

__all__ = ["COPY_CHUNK", "COPY_THRESHOLD", "DEFAULT_POOL_SIZE", "POOL_TIMEOUT", "InsertedJobs", "Oban"]


def pipelined(pg: psycopg.Connection[Any]) -> Any:
    """psycopg's pipeline on `pg`, or none `behind_transaction_pooler` (its `prepare_threshold`
    None): PgBouncer 1.18 in transaction mode was seen to hold a
    server session, idle on the server's side, for a pipeline's client until its
    query_wait_timeout, the other clients left waiting (tests/db/test_pooler.py, two suites
    at once). There the statements go one at a time, a round trip each."""
    return nullcontext() if behind_transaction_pooler(pg) else pg.pipeline()


@contextmanager
def joined_savepoint(pg: psycopg.Connection[Any]) -> Iterator[None]:
    """Inside the caller's transaction, a savepoint around one statement, pipelined with it
    (SAVEPOINT, the statement and RELEASE in two round trips; see `pipelined`): a failure rolls
    back ours only and leaves the caller's transaction usable. Outside one, a statement is
    atomic by itself."""
    if not joins_transaction(pg):
        yield
        return
    with pipelined(pg), atomic(pg):
        yield


def _chunks(jobs: Iterable[Job], first: int, size: int) -> Iterator[list[Job]]:
    """The jobs, validated as they are taken: `first` of them, then `size` at a time (from an
    iterable, or in the asyncio face also from an async iterable)."""
    iterator = (job.validated() for job in jobs)
    chunk = list(islice(iterator, first))
    while chunk:
        yield chunk
        chunk = list(islice(iterator, size))


class Oban:
    """A handle on one Oban installation (a database and a prefix), safe to share between threads.

    `Oban.connect(dsn)` owns a connection pool; `Oban(pool=pool)` uses a psycopg_pool
    `ConnectionPool` of the caller's (its connections must be autocommit); `Oban(conn)`
    one connection, whose operations are then serialized. `conn=` on any call uses that
    connection instead, joining its transaction.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any] | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        prefix: str = "public",
        registry: WorkerRegistry | None = None,
        owns_connection: bool = False,
        oban_version: str = DEFAULT_OBAN_VERSION,
    ) -> None:
        if conn is not None and pool is not None:
            raise ConnectionArgumentError(f"{Oban.__name__} takes a connection or a pool, not both")
        if conn is not None:
            conn = to_psycopg(conn)  # a SQLAlchemy Connection or Session too
        check_pool(pool, ConnectionPool, Oban.__name__)
        self.prefix = check_prefix(prefix)
        #: The Oban version of the Elixir application ("2.22" or "2.23"): Oban's default unique
        #: states differ between them (2.23 counts `suspended` jobs as duplicates).
        self.oban_version = check_oban_version(oban_version)
        self.registry = registry
        self._conn = conn
        self._pool = pool
        self._owns_connection = owns_connection
        self._table: ObanTable | None = None
        self._memory = ClientMemory()

    @classmethod
    def connect(
        cls,
        dsn: str,
        *,
        prefix: str = "public",
        registry: WorkerRegistry | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        oban_version: str = DEFAULT_OBAN_VERSION,
        **connect_kwargs: Any,
    ) -> Oban:
        """A client with a pool of up to `pool_size` autocommit connections to the database at
        `dsn` (a libpq URL or key=value string; `ecto://` and SQLAlchemy-style
        `postgresql+psycopg://` URLs are read too). Other keyword arguments go to each
        `psycopg.connect` (e.g. `prepare_threshold=None` behind a transaction pooler). The
        first connection is made here, so a wrong URL or a server that is down fails at once."""
        check_prefix(prefix)
        check_oban_version(oban_version)
        size = check_pool_size(pool_size)
        kwargs = pool_kwargs(connect_kwargs)
        url = normalize_dsn(dsn)
        first = connect(url, **kwargs)  # a clear one-line error for a wrong URL or a server down
        first.close()
        pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=1, max_size=size, kwargs=kwargs, open=False, timeout=POOL_TIMEOUT, name="cinegraph-oban"
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT)
        except PoolTimeout as exc:
            pool.close()
            raise cannot_connect(url, exc) from exc
        return cls(pool=pool, prefix=prefix, registry=registry, owns_connection=True, oban_version=oban_version)

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """The connection pool the client's operations draw from (None for a one-connection client)."""
        return self._pool

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The one connection of a client built on a connection (`Oban(conn)`)."""
        if self._conn is None:
            if self._pool is not None:
                raise ConnectionArgumentError(
                    f"this {Oban.__name__} client draws connections from a pool; "
                    "use `with oban.pool.connection() as conn:`"
                )
            raise ConnectionArgumentError(f"this {Oban.__name__} client has no connection of its own; pass conn=")
        return self._conn

    def close(self) -> None:
        if not self._owns_connection:
            return
        if self._pool is not None:
            self._pool.close()
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> Oban:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _using(self, conn: Any) -> Iterator[psycopg.Connection[Any]]:
        """The connection one operation runs on, held for its whole duration, psycopg errors
        from it raised as the library's."""
        with translate_errors():
            if conn is not None:
                pg = to_psycopg(conn)
                with connection_lock(pg):
                    yield pg
            elif self._pool is not None:
                try:
                    pg = self._pool.getconn()
                except PoolTimeout as exc:
                    raise pool_exhausted(self._pool.timeout, self._pool.max_size) from exc
                try:
                    if not pg.autocommit:
                        raise pool_not_autocommit()
                    yield pg
                finally:
                    self._pool.putconn(pg)
            else:
                pg = self.connection
                with connection_lock(pg):
                    yield pg

    # The Oban table

    def table(self, conn: Any = None) -> ObanTable:
        """What the Oban table under `prefix` is (its version, states, columns), detected once and cached."""
        if self._table is None:
            with self._using(conn) as pg:
                return self._table_on(pg)
        return self._table

    def _table_on(self, pg: psycopg.Connection[Any]) -> ObanTable:
        if self._table is None:
            self._table = detect(pg, self.prefix)
        return self._table

    def refresh_table(self, conn: Any = None) -> ObanTable:
        """Forget the cached table (after migrating Oban) and detect it again."""
        self._table = None
        return self.table(conn)

    #: The earlier names of `table` and `refresh_table`.
    schema = table
    refresh_schema = refresh_table

    # Inserting

    def insert(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job and send its notification; returns the stored job.

        A job with unique options returns the existing job, with `conflict=True`, when one
        matches (after applying its `replace` options).
        """
        job = job.validated()
        with self._using(conn) as pg:
            table = self._table_on(pg)
            table.check_job(job)
            if job.unique is not None:
                return self._insert_unique(pg, job, table)
            row = prepared.insert_row(pg, job, table)
            if row is None:
                statement = statements.insert_statement(job, table)
                with joined_savepoint(pg), pg.cursor() as cur:
                    cur.execute(statement.sql, statement.params)
                    row = cur.fetchone()
            assert row is not None
            return job.stored(row[0], row[1], row[2])

    def _insert_unique(self, pg: psycopg.Connection[Any], job: Job, table: ObanTable) -> Job:
        lock, lookup = statements.unique_statements(job, table, self.oban_version, self._memory.unselective)
        if prepared.applies(pg, pipeline=True):
            found = prepared.unique_row(pg, lock, lookup, self._memory)
            if found is not None:
                return unique_result(job, lookup, found, self._memory)
        # Outside any transaction (an autocommit connection, not inside conn.transaction()) the
        # insert makes its own; inside one it joins it, in a savepoint, once the transaction is
        # known to be READ COMMITTED (check_isolation).
        own_transaction = not joins_transaction(pg)
        if own_transaction:  # the lookup then keeps its generic plan (insert/unique_lock.sql.j2)
            lock = statements.own_transaction_lock(lock, lookup)
        # Lock and lookup (with BEGIN and COMMIT around them when the insert needs a transaction
        # of its own) go out in one pipeline, the lookup still a statement of its own so that its
        # snapshot is taken after the lock is granted. psycopg syncs the pipeline once more when
        # it ends: two round trips; three inside a transaction, whose isolation is read first.
        begin, commit = statements.transaction_sql()
        try:
            with (
                pipelined(pg),
                nullcontext() if own_transaction else atomic(pg),
                pg.cursor() as cur,
                pg.cursor(row_factory=dict_row) as looked_up,
            ):
                if own_transaction:
                    cur.execute(begin, {})
                else:
                    cur.execute(statements.isolation_sql(), {})
                    level = cur.fetchone()
                    check_isolation(level[0] if level else None)
                cur.execute(lock.sql, lock.params)
                looked_up.execute(lookup.sql, lookup.params)
                if own_transaction:
                    cur.execute(commit, {})
                row = looked_up.fetchone()
        except BaseException:
            if own_transaction and pg.info.transaction_status != pq.TransactionStatus.IDLE:
                pg.rollback()
            raise
        assert row is not None
        return unique_result(job, lookup, row, self._memory)

    def insert_all(self, jobs: Iterable[Job], *, conn: Any = None) -> InsertedJobs:
        """Insert many jobs, all or nothing; returns them with their ids, in input order.

        Unique options are ignored, as Oban's `insert_all` ignores them. Small batches go out as
        one statement; larger ones stream through binary COPY in chunks, so an iterator of jobs
        is never held in memory twice. Inside the caller's transaction either runs in a
        savepoint: a failure leaves that transaction usable. The result is a sequence of the
        stored jobs; `.ids` gives just their ids without building a Job for each.
        """
        chunks = _chunks(jobs, COPY_THRESHOLD, COPY_CHUNK)
        first: list[Job] = next(chunks, [])
        if not first:
            return InsertedJobs([], [], [], [])
        with self._using(conn) as pg:
            table = self._table_on(pg)
            if len(first) < COPY_THRESHOLD:
                statement = check_small_batch(table, first)
                with joined_savepoint(pg), pg.cursor() as cur:
                    cur.execute(statement.sql, statement.params)
                    rows = cur.fetchall()
                return InsertedJobs.from_rows(first, rows)
            return self._copy_all(pg, table, first, chunks)

    def _copy_all(
        self,
        pg: psycopg.Connection[Any],
        table: ObanTable,
        first: list[Job],
        rest: Iterator[list[Job]],
    ) -> InsertedJobs:
        bulk = BulkInsert(table)
        chunk = first
        with atomic(pg), pg.cursor() as cur:
            while chunk:
                reserve = bulk.check(chunk)
                cur.execute(reserve.sql, reserve.params)
                copy_sql, types, rows = bulk.copy(chunk, cur.fetchall())
                # The queued writer sends from a thread of its own, so building the next rows
                # overlaps with the server indexing the previous ones.
                with cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
                chunk = next(rest, [])
            notify = bulk.notify()
            if notify is not None:
                cur.execute(notify.sql, notify.params)
        return bulk.result()
