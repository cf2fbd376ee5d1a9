"""What an insert means, apart from any connection: shared by both faces of the client.

The checks made before anything is sent, the bookkeeping of a streamed COPY, what a unique
insert's result row means, the result of `insert_all`, and what one client learns as it runs
(`ClientMemory`). The statements themselves are `statements.py`'s and the job row's encoding is
`row.py`'s; the clients (`asyncio/client.py`, and `client.py` generated from it) only send them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq

from cinegraph_oban.errors import ConnectionArgumentError, DatabaseUnavailableError, IsolationLevelError
from cinegraph_oban.insert import statements
from cinegraph_oban.model.job import Job
from cinegraph_oban.oban.table import ObanTable

__all__ = [
    "COPY_CHUNK",
    "COPY_THRESHOLD",
    "DEFAULT_POOL_SIZE",
    "POOL_TIMEOUT",
    "BulkInsert",
    "ClientMemory",
    "InsertedJobs",
    "behind_transaction_pooler",
    "check_isolation",
    "check_pool",
    "check_pool_size",
    "check_small_batch",
    "joins_transaction",
    "pool_exhausted",
    "pool_kwargs",
    "pool_not_autocommit",
    "prepared_session",
    "unique_result",
]


class ClientMemory:
    """What one client learns as it runs, kept on the client rather than in module globals (so
    two clients, or two tests, never see each other's):

    - `unselective`: the (prefix, worker, field, key) whose unique probes found more than
      `statements.PROBE_CANDIDATES` candidates; the client no longer probes with them;
    - `columns`: per prepared lookup, where its result's columns are.

    What a server session has prepared belongs to the connection, not to a client: every client
    using a connection shares it (`prepared_session`).
    """

    __slots__ = ("columns", "unselective")

    def __init__(self) -> None:
        self.unselective: set[tuple[str, str, str, str]] = set()
        self.columns: dict[str, tuple[int, int, int, int, int]] = {}


class PreparedSession:
    """What one server session has prepared: a new backend behind the same connection object
    (a reconnect) has prepared nothing."""

    __slots__ = ("names", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.names: set[str] = set()


_PREPARED: weakref.WeakKeyDictionary[Any, PreparedSession] = weakref.WeakKeyDictionary()
_PREPARED_GUARD = threading.Lock()


def prepared_session(pg: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> PreparedSession:
    """What the server session behind `pg` has prepared (prepared.py), for every client that
    uses `pg`: a second client on the same connection does not prepare the same statements
    again. Forgotten with the connection object."""
    pid = pg.pgconn.backend_pid
    with _PREPARED_GUARD:
        session = _PREPARED.get(pg)
        if session is None or session.pid != pid:
            session = _PREPARED[pg] = PreparedSession(pid)
        return session


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


def behind_transaction_pooler(pg: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True where the caller made `pg` with `prepare_threshold=None`, which is how psycopg is told
    a transaction pooler (PgBouncer's pool_mode = transaction) sits in between: neither a
    statement prepared in one transaction nor a pipeline (`client.pipelined`) can count on one
    server session there."""
    return pg.prepare_threshold is None


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


def check_pool(pool: object, expected: type, client: str) -> None:
    """Refuse a `pool=` that is not a psycopg_pool pool of the `client`'s kind, naming the
    client that takes it when it is the other kind."""
    if pool is None or isinstance(pool, expected):
        return
    name = type(pool).__name__
    other = ("AsyncOban" if "Async" in name else "Oban") if name.endswith("ConnectionPool") else None
    hint = f"; use {other} for a psycopg_pool.{name}" if other is not None and other != client else ""
    raise ConnectionArgumentError(f"pool= takes a psycopg_pool.{expected.__name__}, got {type(pool).__name__}{hint}")


def check_pool_size(pool_size: object) -> int:
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ConnectionArgumentError(f"pool_size must be a positive integer, got {pool_size!r}")
    return pool_size


def unique_result(job: Job, lookup: statements.Statement, row: dict[str, Any], memory: ClientMemory) -> Job:
    """What a unique insert returns: the existing job on a conflict, else `job` as stored (with
    its own args and meta, as a plain `insert` returns it)."""
    statements.note_probed(lookup, row, memory.unselective)
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

    def __init__(self, table: ObanTable) -> None:
        self.table = table
        self.jobs: list[Job] = []
        self.ids: list[int] = []
        self.nows: list[datetime] = []
        self.queues: dict[str, None] = {}

    def check(self, chunk: list[Job]) -> statements.Statement:
        """Raise if a job of the chunk does not fit; the statement that reserves its ids."""
        for index, job in enumerate(chunk, start=len(self.jobs)):
            self.table.check_job(job, where=f"job #{index}")
            if job.state == "available":
                self.queues[job.queue] = None
        return statements.reserve_ids_statement(len(chunk), self.table)

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
            statements.copy_statement(self.table, scheduled=scheduled),
            statements.copy_types(self.table, scheduled=scheduled),
            rows,
        )

    def notify(self) -> statements.Statement | None:
        return statements.notify_statement(self.queues, self.table)

    def result(self) -> InsertedJobs:
        return InsertedJobs(self.jobs, self.ids, self.nows, self.nows)


def check_small_batch(table: ObanTable, jobs: list[Job]) -> statements.Statement:
    """Raise if a job does not fit; the one statement that inserts a small batch."""
    for index, job in enumerate(jobs):
        table.check_job(job, where=f"job #{index}")
    return statements.insert_all_statement(jobs, table)
