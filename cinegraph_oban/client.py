"""The synchronous client: enqueue Oban jobs from Python with psycopg 3.

    oban = Oban.connect("postgresql://postgres@127.0.0.1/cinegraph")   # owns a connection pool
    job = oban.insert(Job.new(worker="Cinegraph.Workers.TMDbDetailsWorker", args={...}))
    oban.insert_all(jobs)                      # all or nothing
    oban.insert(job, conn=caller_connection)   # inside the caller's own transaction

One client is meant to be shared by every thread of a process. Each operation takes a
connection of its own from the client's pool (psycopg_pool, autocommit) for its whole duration,
so a plain `insert` is one statement and one round trip. A client built on one connection
(`Oban(conn)`), and every `conn=` argument, serialize the operations made through this library
on that connection with a per-connection lock, so two threads never interleave one insert's
statements with another's. With `conn=` the work joins the caller's transaction, inside a
savepoint, and nothing is committed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from itertools import islice
from typing import Any

import psycopg
from psycopg import pq
from psycopg.copy import QueuedLibpqWriter
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from cinegraph_oban import prepared, statements
from cinegraph_oban.connections import atomic, cannot_connect, connect, connection_lock, normalize_dsn, to_psycopg
from cinegraph_oban.errors import (
    ConnectionArgumentError,
    DatabaseUnavailableError,
    IsolationLevelError,
    translate_errors,
)
from cinegraph_oban.identifiers import check_prefix
from cinegraph_oban.job import Job
from cinegraph_oban.schema import ObanSchema, detect
from cinegraph_oban.unique import DEFAULT_OBAN_VERSION, check_oban_version
from cinegraph_oban.workers import WorkerRegistry

__all__ = ["InsertedJobs", "Oban"]

#: Below this many jobs `insert_all` sends one `unnest` statement; from here on, binary COPY.
COPY_THRESHOLD = 500
#: Jobs per COPY chunk: bounds the memory a large, streamed insert_all holds beyond its result.
COPY_CHUNK = 10_000
#: Connections a client made by `connect` keeps at most (`pool_size=`).
DEFAULT_POOL_SIZE = 10
#: Seconds an operation waits for a free connection of the pool before giving up.
POOL_TIMEOUT = 30.0


def joins_transaction(pg: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when work on `pg` runs inside a transaction of the caller's (open now, or opened by
    psycopg's first statement on a non-autocommit connection): it then goes in a savepoint."""
    return not pg.autocommit or pg.info.transaction_status != pq.TransactionStatus.IDLE


@contextmanager
def joined_savepoint(pg: psycopg.Connection[Any]) -> Iterator[None]:
    """Inside the caller's transaction, a savepoint around one statement, pipelined with it
    (SAVEPOINT, the statement and RELEASE in two round trips): a failure rolls back ours only
    and leaves the caller's transaction usable. Outside one, a statement is atomic by itself."""
    if not joins_transaction(pg):
        yield
        return
    with pg.pipeline(), atomic(pg):
        yield


def check_isolation(level: str | None) -> None:
    """Refuse a unique insert inside a transaction above READ COMMITTED: its snapshot may predate
    the advisory lock, so two inserts could both see no match and both insert (issue 15 measured
    37 to 47 duplicates per 4,000 attempts under REPEATABLE READ)."""
    if level != "read committed":
        raise IsolationLevelError(
            f"a unique insert cannot join a {(level or 'unknown').upper()} transaction: its snapshot may "
            "predate the uniqueness lock and let a duplicate in; run it in a READ COMMITTED transaction "
            "(PostgreSQL's default), on an autocommit connection, or without conn="
        )


def pool_kwargs(connect_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments each pooled connection is made with: autocommit, and the caller's."""
    if connect_kwargs.get("autocommit") is False:
        raise ConnectionArgumentError(
            "the client's own connections run in autocommit (each insert is its own transaction); "
            "to insert inside a transaction, pass conn= your own connection"
        )
    return {**connect_kwargs, "autocommit": True}


def pool_exhausted(timeout: float, size: int) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"no connection of the pool was free within {timeout:g} s (pool_size={size}): "
        "raise pool_size, or check the database"
    )


def pool_not_autocommit() -> ConnectionArgumentError:
    # A pooled connection in a transaction of its own would be rolled back when it goes back
    # to the pool: acknowledged jobs lost. The client's own pools are made autocommit.
    return ConnectionArgumentError(
        "the pool's connections must be autocommit: make it with kwargs={'autocommit': True}, "
        "or pass your transaction's connection as conn="
    )


def check_pool_size(pool_size: object) -> int:
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ConnectionArgumentError(f"pool_size must be a positive integer, got {pool_size!r}")
    return pool_size


def _unique_result(job: Job, lookup: statements.Statement, row: dict[str, Any]) -> Job:
    """What a unique insert returns: the existing job on a conflict, else `job` as stored (with
    its own args and meta, as a plain `insert` returns it)."""
    statements.note_probed(lookup, row)
    if row["conflict"]:
        return Job.from_row(row, conflict=True)
    return job.stored(row["id"], row["inserted_at"], row["scheduled_at"])


class InsertedJobs(Sequence[Job]):
    """The jobs `insert_all` stored, in input order, each built with its id when asked for.

    Bulk inserts of 100,000 jobs rarely look at every job; building them lazily keeps the
    insert at the speed of COPY. `ids` is the plain list of ids.
    """

    __slots__ = ("_inserted_at", "_jobs", "_scheduled_at", "ids")

    def __init__(
        self,
        jobs: list[Job],
        ids: list[int],
        inserted_at: list[datetime],
        scheduled_at: list[datetime],
    ) -> None:
        self._jobs = jobs
        self.ids = ids
        self._inserted_at = inserted_at
        self._scheduled_at = scheduled_at

    @classmethod
    def from_rows(cls, jobs: list[Job], rows: list[tuple[Any, ...]]) -> InsertedJobs:
        """From the (id, inserted_at, scheduled_at) rows of the one-statement path."""
        return cls(jobs, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    def __len__(self) -> int:
        return len(self._jobs)

    def _job(self, index: int) -> Job:
        job = self._jobs[index]
        scheduled_at = job.scheduled_at if job.scheduled_at is not None else self._scheduled_at[index]
        return job.stored(self.ids[index], self._inserted_at[index], scheduled_at)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._job(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("InsertedJobs index out of range")
        return self._job(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, InsertedJobs | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<InsertedJobs: {len(self)} jobs, ids {self.ids[:1]}..{self.ids[-1:]}>"


class BulkInsert:
    """The bookkeeping of one streamed COPY insert_all, shared by the sync and async clients:
    checking each chunk against the schema, the COPY of a chunk with its reserved ids, the
    notifications, and the result."""

    def __init__(self, schema: ObanSchema) -> None:
        self.schema = schema
        self.jobs: list[Job] = []
        self.ids: list[int] = []
        self.nows: list[datetime] = []
        self.queues: dict[str, None] = {}

    def check(self, chunk: list[Job]) -> statements.Statement:
        """Raise if a job of the chunk does not fit; the statement that reserves its ids."""
        for index, job in enumerate(chunk, start=len(self.jobs)):
            self.schema.check_job(job, where=f"job #{index}")
            if job.state == "available":
                self.queues[job.queue] = None
        return statements.reserve_ids_statement(len(chunk), self.schema)

    def copy(
        self, chunk: list[Job], reserved: list[tuple[Any, ...]]
    ) -> tuple[bytes, list[str], Iterator[tuple[Any, ...]]]:
        """(COPY statement, column types, rows) for a chunk and its reserved (id, now) rows."""
        now = reserved[0][1]
        chunk_ids = [row[0] for row in reserved]
        scheduled = any(job.scheduled_at is not None for job in chunk)
        row_now = now if scheduled else None
        self.jobs.extend(chunk)
        self.ids.extend(chunk_ids)
        self.nows.extend([now] * len(chunk))
        rows = (statements.copy_row(job, job_id, row_now) for job, job_id in zip(chunk, chunk_ids, strict=True))
        return (
            statements.copy_statement(self.schema, scheduled=scheduled),
            statements.copy_types(self.schema, scheduled=scheduled),
            rows,
        )

    def notify(self) -> statements.Statement | None:
        return statements.notify_statement(self.queues, self.schema)

    def result(self) -> InsertedJobs:
        return InsertedJobs(self.jobs, self.ids, self.nows, self.nows)


def check_small_batch(schema: ObanSchema, jobs: list[Job]) -> statements.Statement:
    """Raise if a job does not fit; the one statement that inserts a small batch."""
    for index, job in enumerate(jobs):
        schema.check_job(job, where=f"job #{index}")
    return statements.insert_all_statement(jobs, schema)


class Oban:
    """A handle on one Oban installation (a database and a prefix), safe to share between threads.

    `Oban.connect(dsn)` owns a connection pool; `Oban(pool=pool)` uses a psycopg_pool
    `ConnectionPool` of the caller's (its connections must be autocommit); `Oban(conn)` one
    connection, whose operations are then serialized. `conn=` on any call uses that connection
    instead, joining its transaction.
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
            raise ConnectionArgumentError("Oban takes a connection or a pool, not both")
        if conn is not None:
            conn = to_psycopg(conn)
        if pool is not None and not isinstance(pool, ConnectionPool):
            raise ConnectionArgumentError(
                f"pool= takes a psycopg_pool.ConnectionPool, got {type(pool).__name__}"
                + ("; use AsyncOban for an AsyncConnectionPool" if "Async" in type(pool).__name__ else "")
            )
        self.prefix = check_prefix(prefix)
        #: The Oban version of the Elixir application ("2.22" or "2.23"): Oban's default unique
        #: states differ between them (2.23 counts `suspended` jobs as duplicates).
        self.oban_version = check_oban_version(oban_version)
        self.registry = registry
        self._conn = conn
        self._pool = pool
        self._owns_connection = owns_connection
        self._schema: ObanSchema | None = None

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
        first = connect(url, **kwargs)  # a clear one-line error for a wrong URL or a server that is down
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
                    "this Oban client draws connections from a pool; use `with oban.pool.connection() as conn:`"
                )
            raise ConnectionArgumentError("this Oban client has no connection of its own; pass conn=")
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

    # Schema

    def schema(self, conn: Any = None) -> ObanSchema:
        """The detected Oban schema, read once and cached."""
        if self._schema is None:
            with self._using(conn) as pg:
                return self._schema_on(pg)
        return self._schema

    def _schema_on(self, pg: psycopg.Connection[Any]) -> ObanSchema:
        if self._schema is None:
            self._schema = detect(pg, self.prefix)
        return self._schema

    def refresh_schema(self, conn: Any = None) -> ObanSchema:
        """Forget the cached schema (after migrating Oban) and read it again."""
        self._schema = None
        return self.schema(conn)

    # Inserting

    def insert(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job and send its notification; returns the stored job.

        A job with unique options returns the existing job, with `conflict=True`, when one
        matches (after applying its `replace` options).
        """
        job = job.validated()
        with self._using(conn) as pg:
            schema = self._schema_on(pg)
            schema.check_job(job)
            if job.unique is not None:
                return self._insert_unique(pg, job, schema)
            row = prepared.insert_row(pg, job, schema)
            if row is None:
                statement = statements.insert_statement(job, schema)
                with joined_savepoint(pg), pg.cursor() as cur:
                    cur.execute(statement.sql, statement.params)
                    row = cur.fetchone()
            assert row is not None
            return job.stored(row[0], row[1], row[2])

    def _insert_unique(self, pg: psycopg.Connection[Any], job: Job, schema: ObanSchema) -> Job:
        lock, lookup = statements.unique_statements(job, schema, self.oban_version)
        if prepared.applies(pg, pipeline=True):
            row = prepared.unique_row(pg, lock, lookup)
            if row is not None:
                return _unique_result(job, lookup, row)
        # Outside any transaction (an autocommit connection, not inside conn.transaction()) the
        # insert makes its own; inside one it joins it, in a savepoint, once the transaction is
        # known to be READ COMMITTED (check_isolation).
        own_transaction = not joins_transaction(pg)
        if own_transaction:  # the lookup then keeps its generic plan (jobs/unique_lock.sql.j2)
            lock = statements.own_transaction_lock(lock, lookup)
        # Lock and lookup (with BEGIN and COMMIT around them when the insert needs a transaction
        # of its own) go out in one pipeline, the lookup still a statement of its own so that its
        # snapshot is taken after the lock is granted. psycopg syncs the pipeline once more when
        # it ends: two round trips; three inside a transaction, whose isolation is read first.
        begin, commit = statements.transaction_sql()
        try:
            with (
                pg.pipeline(),
                nullcontext() if own_transaction else atomic(pg),
                pg.cursor() as cur,
                pg.cursor(row_factory=dict_row) as found,
            ):
                if own_transaction:
                    cur.execute(begin, {})
                else:
                    cur.execute(statements.isolation_sql(), {})
                    level = cur.fetchone()
                    check_isolation(level[0] if level else None)
                cur.execute(lock.sql, lock.params)
                found.execute(lookup.sql, lookup.params)
                if own_transaction:
                    cur.execute(commit, {})
                row = found.fetchone()
        except BaseException:
            if own_transaction and pg.info.transaction_status != pq.TransactionStatus.IDLE:
                pg.rollback()
            raise
        assert row is not None
        return _unique_result(job, lookup, row)

    def insert_all(self, jobs: Iterable[Job], *, conn: Any = None) -> InsertedJobs:
        """Insert many jobs, all or nothing; returns them with their ids, in input order.

        Unique options are ignored, as Oban's `insert_all` ignores them. Small batches go out as
        one statement; larger ones stream through binary COPY in chunks, so an iterator of jobs
        is never held in memory twice. Inside the caller's transaction either runs in a
        savepoint: a failure leaves that transaction usable. The result is a sequence of the
        stored jobs; `.ids` gives just their ids without building a Job for each.
        """
        iterator = (job.validated() for job in jobs)
        first = list(islice(iterator, COPY_THRESHOLD))
        if not first:
            return InsertedJobs([], [], [], [])
        with self._using(conn) as pg:
            schema = self._schema_on(pg)
            if len(first) < COPY_THRESHOLD:
                statement = check_small_batch(schema, first)
                with joined_savepoint(pg), pg.cursor() as cur:
                    cur.execute(statement.sql, statement.params)
                    rows = cur.fetchall()
                return InsertedJobs.from_rows(first, rows)
            return self._copy_all(pg, schema, first, iterator)

    def _copy_all(
        self,
        pg: psycopg.Connection[Any],
        schema: ObanSchema,
        first: list[Job],
        rest: Iterator[Job],
    ) -> InsertedJobs:
        bulk = BulkInsert(schema)
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
                chunk = list(islice(rest, COPY_CHUNK))
            notify = bulk.notify()
            if notify is not None:
                cur.execute(notify.sql, notify.params)
        return bulk.result()
