"""The synchronous client: enqueue Oban jobs from Python with psycopg 3.

    oban = Oban.connect("postgresql://postgres@127.0.0.1/cinegraph")
    job = oban.insert(Job.new(worker="Cinegraph.Workers.TMDbDetailsWorker", args={...}))
    oban.insert_all(jobs)                      # all or nothing
    oban.insert(job, conn=caller_connection)   # inside the caller's own transaction

The client's own connection runs in autocommit, so a plain `insert` is one statement and one
round trip. With `conn=` the work joins the caller's transaction and nothing is committed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

import psycopg
from psycopg import pq
from psycopg.copy import QueuedLibpqWriter
from psycopg.rows import dict_row

from cinegraph_oban import prepared, statements
from cinegraph_oban.connections import atomic, connect, to_psycopg
from cinegraph_oban.errors import UnsupportedSchemaError
from cinegraph_oban.job import Job
from cinegraph_oban.schema import ObanSchema, detect
from cinegraph_oban.workers import WorkerRegistry

__all__ = ["InsertedJobs", "Oban"]

#: Below this many jobs `insert_all` sends one `unnest` statement; from here on, binary COPY.
COPY_THRESHOLD = 500
#: Jobs per COPY chunk: bounds the memory a large, streamed insert_all holds beyond its result.
COPY_CHUNK = 10_000


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
    """A handle on one Oban installation (a database and a prefix)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any] | None = None,
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
    def connect(
        cls,
        dsn: str,
        *,
        prefix: str = "public",
        registry: WorkerRegistry | None = None,
        **connect_kwargs: Any,
    ) -> Oban:
        """Open a connection of our own (autocommit) to the database at `dsn` (a libpq URL or
        key=value string; `ecto://` and SQLAlchemy-style `postgresql+psycopg://` URLs are read too)."""
        conn = connect(dsn, autocommit=True, **connect_kwargs)
        return cls(conn, prefix=prefix, registry=registry, owns_connection=True)

    @property
    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise UnsupportedSchemaError("this Oban client has no connection of its own; pass conn=")
        return self._conn

    def close(self) -> None:
        if self._owns_connection and self._conn is not None:
            self._conn.close()

    def __enter__(self) -> Oban:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Schema

    def schema(self, conn: Any = None) -> ObanSchema:
        """The detected Oban schema, read once and cached."""
        if self._schema is None:
            self._schema = detect(self._resolve(conn), self.prefix)
        return self._schema

    def refresh_schema(self, conn: Any = None) -> ObanSchema:
        """Forget the cached schema (after migrating Oban) and read it again."""
        self._schema = None
        return self.schema(conn)

    def _resolve(self, conn: Any) -> psycopg.Connection[Any]:
        return self.connection if conn is None else to_psycopg(conn)

    # Inserting

    def insert(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job and send its notification; returns the stored job.

        A job with unique options returns the existing job, with `conflict=True`, when one
        matches (after applying its `replace` options).
        """
        pg = self._resolve(conn)
        schema = self.schema(pg)
        schema.check_job(job)
        if job.unique is None:
            row = prepared.insert_row(pg, job, schema)
            if row is None:
                statement = statements.insert_statement(job, schema)
                with pg.cursor() as cur:
                    cur.execute(statement.sql, statement.params)
                    row = cur.fetchone()
            assert row is not None
            return job.stored(row[0], row[1], row[2])
        return self._insert_unique(pg, job, schema)

    def _insert_unique(self, pg: psycopg.Connection[Any], job: Job, schema: ObanSchema) -> Job:
        lock, lookup = statements.unique_statements(job, schema)
        if prepared.applies(pg, pipeline=True):
            row = prepared.unique_row(pg, lock, lookup)
            if row is not None:
                return _unique_result(job, lookup, row)
        # Outside any transaction (an autocommit connection, not inside conn.transaction()) the
        # insert makes its own; inside one it joins it.
        own_transaction = pg.autocommit and pg.info.transaction_status == pq.TransactionStatus.IDLE
        if own_transaction:  # the lookup then keeps its generic plan (jobs/unique_lock.sql.j2)
            lock = statements.own_transaction_lock(lock, lookup)
        # Inside a transaction, or without prepared statements: lock and lookup (with BEGIN and
        # COMMIT around them when the insert needs a transaction of its own) go out in one
        # pipeline, the lookup still a statement of its own so that its snapshot is taken after
        # the lock is granted. psycopg syncs the pipeline once more when it ends: two round trips.
        begin, commit = statements.transaction_sql()
        try:
            with pg.pipeline(), pg.cursor() as cur, pg.cursor(row_factory=dict_row) as found:
                if own_transaction:
                    cur.execute(begin)
                cur.execute(lock.sql, lock.params)
                found.execute(lookup.sql, lookup.params)
                if own_transaction:
                    cur.execute(commit)
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
        is never held in memory twice. The result is a sequence of the stored jobs; `.ids`
        gives just their ids without building a Job for each.
        """
        pg = self._resolve(conn)
        schema = self.schema(pg)
        iterator = iter(jobs)
        first = list(islice(iterator, COPY_THRESHOLD))
        if not first:
            return InsertedJobs([], [], [], [])
        if len(first) < COPY_THRESHOLD:
            statement = check_small_batch(schema, first)
            with pg.cursor() as cur:
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
