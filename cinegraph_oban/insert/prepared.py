# Generated from cinegraph_oban/insert/prepared_async.py by tools/async_to_sync.py: do not edit.
# Edit the asyncio source and run `python tools/async_to_sync.py` (CI checks it is current).
"""Statements prepared once per session, sent straight through libpq: the single insert and the
one-round-trip unique insert, for both faces of the client (this asyncio source, and
`cinegraph_oban/insert/prepared.py` generated from it).

Both run only on a connection in autocommit mode with no transaction open (the client's own
connection, or a caller's autocommit connection outside `conn.transaction()`), whose psycopg
`prepare_threshold` is not None (None says a transaction pooler sits in between, and prepared
statements would not survive it). Each statement is prepared the first time a session needs it,
and again when something dropped it (`DISCARD ALL`): the failed run did nothing, because a
statement that does not exist never starts, and its transaction is rolled back.

They go to libpq through psycopg's `pq` wrapper and psycopg's own non-blocking generators,
driven by the connection's own `wait` (so Ctrl-C still cancels them):
in a single insert psycopg's cursor layer costs more client time than all the rest (measured
in bench/README.md). The single insert sends its values in text form and
gets its id and times back in binary form, which no session setting changes. The unique insert
sends BEGIN, its lock, its lookup and COMMIT in one libpq pipeline with a single Sync (psycopg's
own pipeline syncs once more when it ends: a second round trip), values in text form, and its
text results are loaded by a psycopg `Transformer`, as psycopg loads them.

What a session has prepared is remembered per connection (`insertion.prepared_session`), for
every client using it; where a lookup's result columns are, in the client's `ClientMemory`.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.json import Jsonb

from cinegraph_oban.insert import row
from cinegraph_oban.insert.insertion import ClientMemory, behind_transaction_pooler, prepared_session
from cinegraph_oban.insert.statements import (
    Prepared,
    Statement,
    deallocate_sql,
    insert_payload,
    insert_sql,
    own_transaction_lock,
    prepared,
    rollback_sql,
    transaction_sql,
)
from cinegraph_oban.model.job import Job
from cinegraph_oban.oban.table import ObanTable

__all__ = ["applies", "insert_row", "unique_row"]

#: The psycopg releases (major, minor) whose internals this module drives, and is tested with:
#: `psycopg.generators` and `errors.error_from_result` are not public API. pyproject.toml caps
#: psycopg below the next minor release; any other release here takes the cursor path.
TESTED_PSYCOPG: tuple[tuple[int, int], ...] = ((3, 3),)


def _tested(version: str) -> bool:
    parts = version.split(".")
    return (
        len(parts) >= 2
        and parts[0].isdigit()
        and parts[1].isdigit()
        and (int(parts[0]), int(parts[1])) in TESTED_PSYCOPG
    )


try:  # psycopg's non-blocking execution, as its cursors use it
    from psycopg.errors import error_from_result
    from psycopg.generators import execute as _execute_gen
    from psycopg.generators import fetch_many as _fetch_many_gen
    from psycopg.generators import send as _send_gen
except ImportError:  # pragma: no cover - a psycopg without them takes the cursor path
    _execute_gen = None
if not _tested(psycopg.__version__):  # pragma: no cover - exercised by a test that reloads the module
    _execute_gen = None

#: libpq 14+ (psycopg's binary package bundles a newer one).
_PIPELINE_SUPPORTED = psycopg.Pipeline.is_supported()


def applies(pg: psycopg.Connection[Any], *, pipeline: bool = False) -> bool:
    """True when `pg` may run prepared statements in transactions of their own, with text in
    UTF-8 (what these paths send; a session in another client_encoding takes the cursor path);
    with `pipeline`, also in a libpq pipeline (the unique insert)."""
    pgconn = pg.pgconn
    return (
        _execute_gen is not None
        and pg.autocommit
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
        and not behind_transaction_pooler(pg)
        and not pgconn.pipeline_status
        and pgconn.parameter_status(b"client_encoding") == b"UTF8"
        and (_PIPELINE_SUPPORTED or not pipeline)
    )


def _prepare(pg: psycopg.Connection[Any], names: set[str], statement: Prepared) -> None:
    """Prepare `statement` in this session unless it is among `names` (what it has prepared)."""
    if statement.name not in names:
        with contextlib.suppress(pg_errors.DuplicatePreparedStatement):  # by another client on pg
            pg.execute(statement.prepare, prepare=False)
        names.add(statement.name)


#: Errors after which a prepared statement is made again and the work retried once: the session
#: lost it (DISCARD ALL, DEALLOCATE), or what it was planned on changed (the Oban schema dropped
#: and installed again: "cache lookup failed for type", "cached plan must not change result
#: type"). The work runs in a transaction of its own, which the error rolled back: nothing to undo.
_STALE = (pg_errors.InvalidSqlStatementName, pg_errors.InternalError, pg_errors.FeatureNotSupported)


def _forget(pg: psycopg.Connection[Any], names: set[str], needed: tuple[Prepared, ...]) -> None:
    """Drop `needed` from this session (those it still has) and from what we know it has."""
    for statement in needed:
        if statement.name in names:
            with contextlib.suppress(pg_errors.InvalidSqlStatementName):
                pg.execute(deallocate_sql(statement.name), prepare=False)
            names.discard(statement.name)


def _with_prepared(pg: psycopg.Connection[Any], needed: tuple[Prepared, ...], run: Callable[[], Any]) -> Any:
    """`run()` once the `needed` statements are prepared in this session; once more after
    preparing them anew if they were stale (see `_STALE`)."""
    names = prepared_session(pg).names
    for attempt in (1, 2):
        for statement in needed:
            _prepare(pg, names, statement)
        try:
            return run()
        except _STALE:
            _forget(pg, names, needed)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def unique_row(
    pg: psycopg.Connection[Any], lock: Statement, lookup: Statement, memory: ClientMemory
) -> dict[str, Any] | None:
    """A unique insert in one round trip: BEGIN, the prepared lock, the prepared lookup and
    COMMIT in one libpq pipeline, with one Sync after them.

    The lookup is a statement of its own, so it takes its snapshot after the lock is granted;
    the explicit BEGIN makes the transaction READ COMMITTED whatever
    default_transaction_isolation says. If a statement fails, the server skips the rest up to
    the Sync and the transaction is rolled back here before the error is raised. None, with
    nothing sent, when `applies` no longer holds once the connection is ours (another thread
    began a transaction or a pipeline on it since): the caller then takes its cursor path,
    which joins an open transaction as inside any transaction.
    """
    needed = prepared(own_transaction_lock(lock, lookup).sql), prepared(lookup.sql)
    lock_values = [_text(pg, lock.params[name]) for name in needed[0].params]
    lookup_values = [_text(pg, lookup.params[name]) for name in needed[1].params]
    names = needed[0].name.encode(), needed[1].name.encode()
    begin, commit = transaction_sql()

    def run() -> dict[str, Any] | None:
        pgconn = pg.pgconn
        read: list[pq.abc.PGresult] = []
        with pg.lock:
            if not applies(pg, pipeline=True):  # what it checked may have changed since
                return None
            pgconn.enter_pipeline_mode()
            try:
                pgconn.send_query_params(begin, None)
                pgconn.send_query_prepared(names[0], lock_values)
                pgconn.send_query_prepared(names[1], lookup_values)
                pgconn.send_query_params(commit, None)
                pgconn.pipeline_sync()
                pg.wait(_pipeline_results(pgconn, read))
            finally:
                _end_pipeline(pg, complete=len(read) == _PIPELINE_RESULTS)
        for result in read:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise error_from_result(result, encoding=pg.info.encoding)
        return _unique_result_row(pg, needed[1].name, read[2], memory)

    found: dict[str, Any] | None = _with_prepared(pg, needed, run)
    return found


#: BEGIN, lock, lookup, COMMIT and the Sync.
_PIPELINE_RESULTS = 5


def _pipeline_results(pgconn: pq.abc.PGconn, read: list[pq.abc.PGresult]) -> Generator[Any, Any, None]:
    """Read into `read` the last result of each query sent in the pipeline and the Sync's,
    without blocking: psycopg's own generators, as its pipeline uses them. (psycopg's wait, on
    Ctrl-C, cancels the query and runs this to its end before raising.)"""
    yield from _send_gen(pgconn)
    while len(read) < _PIPELINE_RESULTS:
        read.append((yield from _fetch_many_gen(pgconn))[-1])


def _end_pipeline(pg: psycopg.Connection[Any], complete: bool) -> None:
    """Leave pipeline mode and roll back a transaction left open (by a failed statement). A
    pipeline not sent or read to its end (interrupted, connection lost) leaves the session in a
    state nobody knows: the connection is closed. Never raises over the error in flight."""
    pgconn = pg.pgconn
    try:
        if not complete:
            raise psycopg.OperationalError("unique insert interrupted mid-pipeline")
        pgconn.exit_pipeline_mode()
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:  # left by a failed statement
            pgconn.send_query(rollback_sql())
            pg.wait(_execute_gen(pgconn))
    except Exception:
        pg.close()


def _unique_result_row(
    pg: psycopg.Connection[Any], name: str, result: pq.abc.PGresult, memory: ClientMemory
) -> dict[str, Any]:
    """The lookup's row: all of it for a conflict (the existing job), else only what a new job
    needs from the database (`conflict`, `id`, `inserted_at`, `scheduled_at`, and `probed` when
    the lookup probed), loaded as psycopg loads them."""
    transformer = Transformer(pg)  # one per result: it reads DateStyle and the encoding when made
    # Where `conflict`, `id`, `inserted_at`, `scheduled_at` and `probed` (-1: none) are in the
    # lookup's result, found once per lookup.
    columns = memory.columns.get(name)
    if columns is None:
        names = [result.fname(i) for i in range(result.nfields)]
        conflict, id_, inserted_at, scheduled_at = (
            names.index(column) for column in (b"conflict", b"id", b"inserted_at", b"scheduled_at")
        )
        probed = names.index(b"probed") if b"probed" in names else -1
        columns = memory.columns[name] = (conflict, id_, inserted_at, scheduled_at, probed)
    if result.get_value(0, columns[0]) == b"t":
        transformer.set_pgresult(result)
        row = transformer.load_row(0, tuple)
        assert row is not None
        return {(result.fname(i) or b"").decode(): value for i, value in enumerate(row)}
    loaded = [
        transformer.get_loader(result.ftype(i), pq.Format.TEXT).load(result.get_value(0, i) or b"")
        for i in columns[1:]
        if i >= 0
    ]
    found = {"conflict": False, "id": loaded[0], "inserted_at": loaded[1], "scheduled_at": loaded[2]}
    if columns[4] >= 0:
        found["probed"] = loaded[3]
    return found


def _text(pg: psycopg.Connection[Any], value: Any) -> bytes | None:
    """A parameter's value in text form, which PostgreSQL reads with the type the prepared
    statement gives that parameter; psycopg's own dumper for anything not listed here."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, Jsonb):  # row.json_param: already encoded JSON text
        return str(value.obj).encode()
    if isinstance(value, datetime):  # as naive UTC: a timestamp parameter ignores an offset
        return row.timestamp_text(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return row.text_array(value)
    return bytes(Transformer(pg).get_dumper(value, PyFormat.TEXT).dump(value) or b"")


_PG_EPOCH = datetime(2000, 1, 1)
_INT8 = struct.Struct("!q")


def _timestamp(data: bytes) -> datetime:
    """A `timestamp` in PostgreSQL's binary form: microseconds since 2000-01-01."""
    return _PG_EPOCH + timedelta(microseconds=_INT8.unpack(data)[0])


def job_values(job: Job, table: ObanTable) -> list[bytes | None]:
    """The text-format values of `statements.insert_statement(job, schema)`, in the order of its
    prepared form: the job row's (`row.texts`), then the notification's channel and payload."""
    values = row.texts(job)
    if not table.notifies_itself:
        values += (table.channel.encode(), insert_payload(job.queue).encode())
    return values


def insert_row(pg: psycopg.Connection[Any], job: Job, table: ObanTable) -> tuple[int, datetime, datetime] | None:
    """(id, inserted_at, scheduled_at) of `job` inserted with its notification through libpq;
    None when this path does not apply (see `applies`): the caller then uses a cursor.

    Every line here runs between the caller and the server for each job, so it does only what
    it must: values straight from the job in text form, the three columns back in binary form
    (measured in bench/README.md).
    """
    if not applies(pg):
        return None
    statement = _insert_prepared(table.prefix, job.scheduled_at is not None, not table.notifies_itself)
    values = job_values(job, table)
    name = statement.name.encode()
    pgconn = pg.pgconn

    def run() -> tuple[int, datetime, datetime]:
        with pg.lock:
            pgconn.send_query_prepared(name, values, result_format=pq.Format.BINARY)
            result = (pg.wait(_execute_gen(pgconn)))[-1]
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise error_from_result(result, encoding=pg.info.encoding)
        id_, inserted_at, scheduled_at = result.get_value(0, 0), result.get_value(0, 1), result.get_value(0, 2)
        assert id_ is not None and inserted_at is not None and scheduled_at is not None
        return _INT8.unpack(id_)[0], _timestamp(inserted_at), _timestamp(scheduled_at)

    inserted: tuple[int, datetime, datetime] = _with_prepared(pg, (statement,), run)
    return inserted


@cache
def _insert_prepared(prefix: str, scheduled: bool, notify: bool) -> Prepared:
    statement = prepared(insert_sql(prefix, scheduled, notify))
    expected = [column.name for column in row.columns(scheduled=scheduled)]
    expected += ["channel", "payload"] if notify else []
    if list(statement.params) != expected:
        raise AssertionError(f"insert/insert_job.sql.j2 takes {statement.params}, job_values gives {expected}")
    return statement
