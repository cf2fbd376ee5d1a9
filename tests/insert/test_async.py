"""AsyncOban: the same behaviour as the sync client, on async connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from cinegraph_oban import AsyncOban, Job, Oban, UnsupportedSchemaError, ValidationError
from cinegraph_oban.insert import client as client_module
from conftest import ObanDatabase
from tests.helpers import TMDB


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_insert_writes_the_same_row_as_the_sync_client(oban_any: ObanDatabase) -> None:
    job = Job.new(
        TMDB, {"imdb_id": "tt1", "source": "oscar_import"}, meta={"import_type": "canonical"}, tags=["A"], unique=False
    )

    async def go() -> Job:
        async with await AsyncOban.connect(oban_any.dsn, prefix=oban_any.prefix) as oban:
            return await oban.insert(job)

    stored = run(go())
    synced = Oban(oban_any.conn, prefix=oban_any.prefix).insert(job)
    a, b = oban_any.rows(f"id = {stored.id}")[0], oban_any.rows(f"id = {synced.id}")[0]
    for row in (a, b):
        for column in ("id", "inserted_at", "scheduled_at"):
            row.pop(column)
    assert a == b
    assert stored.queue == "tmdb" and stored.max_attempts == 5


def test_unique_and_schema_errors(oban_any: ObanDatabase) -> None:
    async def go() -> tuple[Job, Job]:
        async with await AsyncOban.connect(oban_any.dsn, prefix=oban_any.prefix) as oban:
            first = await oban.insert(Job.new(TMDB, {"imdb_id": "tt9", "source": "x"}))
            again = await oban.insert(Job.new(TMDB, {"imdb_id": "tt9", "source": "y"}))
            if oban_any.version < 14:
                with pytest.raises(UnsupportedSchemaError):
                    await oban.insert(Job.new(TMDB, {"n": 1}, state="suspended", unique=False))
            return first, again

    first, again = run(go())
    assert again.conflict and again.id == first.id and oban_any.count() == 1


async def agen(n: int) -> AsyncIterator[Job]:
    for i in range(n):
        yield Job.new(TMDB, {"tmdb_id": i}, queue="tmdb" if i % 2 else "imports", unique=False)


@pytest.mark.parametrize("size", [7, client_module.COPY_THRESHOLD + 3])
def test_insert_all_lists_and_async_iterables_in_order(oban: ObanDatabase, size: int) -> None:
    async def go() -> tuple[Any, Any]:
        async with await AsyncOban.connect(oban.dsn) as client:
            from_list = await client.insert_all([Job.new(TMDB, {"tmdb_id": i}, unique=False) for i in range(size)])
            from_agen = await client.insert_all(agen(size))
            return from_list, from_agen

    from_list, from_agen = run(go())
    assert [j.args["tmdb_id"] for j in from_list] == list(range(size)) == [j.args["tmdb_id"] for j in from_agen]
    assert from_list.ids == sorted(from_list.ids) and oban.count() == 2 * size


def test_all_or_nothing_and_the_callers_transaction(oban: ObanDatabase) -> None:
    bad = Job.new(TMDB, {"n": -1}, unique=False)
    object.__setattr__(bad, "queue", "")

    async def go() -> None:
        conn = await psycopg.AsyncConnection.connect(oban.dsn)
        client = AsyncOban()
        async with conn:
            kept = await client.insert(Job.new(TMDB, {"n": 0}, unique=False), conn=conn)
            with pytest.raises(ValidationError, match="queue_length"):
                await client.insert_all(
                    [*[Job.new(TMDB, {"n": i}, unique=False) for i in range(1, 600)], bad], conn=conn
                )
            await conn.commit()
            assert kept.id is not None
            await client.insert(Job.new(TMDB, {"n": 99}, unique=False), conn=conn)
            await conn.rollback()

    run(go())
    assert [r["args"] for r in oban.rows()] == [{"n": 0}]


def test_sqlalchemy_async_connection_and_session(oban: ObanDatabase) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def go() -> None:
        engine = create_async_engine(oban.dsn.replace("postgresql://", "postgresql+psycopg://"))
        client = AsyncOban()
        async with engine.connect() as conn:
            await client.insert(Job.new(TMDB, {"n": 1}, unique=False), conn=conn)
            await conn.rollback()
        async with engine.connect() as conn:
            await client.insert_all([Job.new(TMDB, {"n": 2}, unique=False)], conn=conn)
            await conn.commit()
        async with AsyncSession(engine) as session:
            await client.insert(Job.new(TMDB, {"n": 3}, unique=False), conn=session)
            await session.commit()
        await engine.dispose()

    run(go())
    assert sorted(r["args"]["n"] for r in oban.rows()) == [2, 3]


def test_validation_still_happens_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError):
        Job.new("Mailer")


def test_async_connect_reads_an_ecto_url(oban: ObanDatabase) -> None:
    async def go() -> int:
        client = await AsyncOban.connect("ecto" + oban.dsn[oban.dsn.index("://") :])
        try:
            return (await client.insert(Job.new("MyApp.Mailer", {"to": "a@b.c"}))).id or 0
        finally:
            await client.close()

    assert asyncio.run(go()) == 1 and oban.count() == 1


# The libpq fast path (prepared.py, generated from asyncio/prepared.py) serves asyncio too.

_PREPARED = (
    "SELECT name, statement LIKE '%%candidates%%' FROM pg_prepared_statements "
    "WHERE name LIKE 'cinegraph_oban_%%' ORDER BY statement LIKE '%%candidates%%'"
)


def test_async_inserts_prepare_once_per_session_and_survive_discard_all(oban: ObanDatabase) -> None:
    async def go() -> tuple[list[Any], list[Any], list[Job]]:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as conn:
            client = AsyncOban(conn)
            plain = [await client.insert(Job.new(TMDB, {"n": n}, unique=False)) for n in range(3)]
            unique = [await client.insert(Job.new(TMDB, {"imdb_id": "tt1", "source_key": "k"})) for _ in range(3)]
            made = await (await conn.execute(_PREPARED, {})).fetchall()
            await conn.execute("DISCARD ALL", {})
            after = [
                await client.insert(Job.new(TMDB, {"n": 9}, unique=False)),
                await client.insert(Job.new(TMDB, {"imdb_id": "tt2", "source_key": "k"})),
            ]
            remade = await (await conn.execute(_PREPARED, {})).fetchall()
            return made, remade, plain + unique + after

    made, remade, jobs = run(go())
    # The insert, the unique lock and the lookup: prepared through libpq, not by psycopg's cursor.
    assert [is_lookup for _, is_lookup in made] == [False, False, True] == [is_lookup for _, is_lookup in remade]
    assert [j.conflict for j in jobs] == [False, False, False, False, True, True, False, False]
    assert oban.count() == 6
    stored = {row["id"]: row for row in oban.rows()}
    for job in jobs:
        assert (stored[job.id]["inserted_at"], stored[job.id]["args"]) == (job.inserted_at, job.args)


def test_a_task_cancelled_in_the_fast_unique_insert_leaves_the_connection_usable(
    oban: ObanDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup of a unique insert on the libpq pipeline, stuck behind another session's lock,
    its task cancelled: psycopg cancels the query and reads the pipeline to its end, the
    transaction is rolled back, nothing is written, and the same connection goes on."""
    from cinegraph_oban.insert import prepared_async as prepared

    ended: list[bool] = []
    real_end = prepared._end_pipeline

    async def end_pipeline(pg: Any, complete: bool) -> None:
        ended.append(complete)
        await real_end(pg, complete)

    monkeypatch.setattr(prepared, "_end_pipeline", end_pipeline)
    shape = {"source_key": "k"}

    async def go() -> tuple[Any, Job]:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as conn:
            client = AsyncOban(conn)
            await client.insert(Job.new(TMDB, {"imdb_id": "tt-warm", **shape}))  # prepared: the next one pipelines
            ended.clear()
            holder = await psycopg.AsyncConnection.connect(oban.dsn)
            await holder.execute(f"LOCK TABLE {oban.table} IN ACCESS EXCLUSIVE MODE".encode(), {})
            task = asyncio.create_task(client.insert(Job.new(TMDB, {"imdb_id": "tt-held", **shape})))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await holder.rollback()
            await holder.close()
            state = (conn.closed, conn.info.transaction_status, conn.pgconn.pipeline_status)
            return state, await client.insert(Job.new(TMDB, {"imdb_id": "tt-held", **shape}))

    state, inserted = run(go())
    assert ended == [True, True], "the cancelled pipeline was read to its end, then the insert after it"
    assert state == (False, psycopg.pq.TransactionStatus.IDLE, psycopg.pq.PipelineStatus.OFF)
    assert not inserted.conflict and oban.count() == 2


def test_clients_sharing_a_connection_prepare_each_statement_once(oban: ObanDatabase) -> None:
    """What a session has prepared belongs to the connection: a second client on it (one per
    request, say) sends no PREPARE again, so the server logs no duplicate-statement errors."""
    prepares: list[str] = []

    class Counting(psycopg.Connection[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            if bytes(query).startswith(b"PREPARE"):
                prepares.append(bytes(query)[:40].decode())
            return super().execute(query, *args, **kwargs)

    with Counting.connect(oban.dsn, autocommit=True) as conn:
        for n in range(3):
            client = Oban(conn)
            client.insert(Job.new(TMDB, {"n": n}, unique=False))
            client.insert(Job.new(TMDB, {"imdb_id": f"tt{n}", "source_key": "k"}))
    assert len(prepares) == 3, prepares  # the insert, the unique lock and its lookup, once each
    assert oban.count() == 6
