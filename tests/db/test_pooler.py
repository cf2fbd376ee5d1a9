"""Through a real PgBouncer: what a production connection pooler changes (tests/pgbouncer.py).

In transaction mode each transaction runs on whichever server session is free. The client
works through it as the README says (with `prepare_threshold=None`); the migration, which needs
one session throughout, refuses it before it changes anything, and runs through a pooler in
session mode."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cinegraph_oban import DatabaseError, FailedLookup, Job, Oban, SessionRequiredError, record_failed_lookup
from cinegraph_oban.asyncio import AsyncOban
from cinegraph_oban.asyncio import record_failed_lookup as async_record_failed_lookup
from cinegraph_oban.asyncio.migration import AsyncRemoveRedundantImportTables
from cinegraph_oban.db.connections import through_transaction_pooler
from cinegraph_oban.errors import translated
from conftest import ObanDatabase
from tests.helpers import migration, run_cli, sample_rows, setup_legacy, snapshot
from tests.pgbouncer import POOL_SIZES, PgBouncer

WORKER = "Cinegraph.Workers.TMDbDetailsWorker"


def test_a_url_through_a_transaction_pooler_is_told_from_a_direct_one_and_a_session_pool(
    oban: ObanDatabase, pgbouncer: PgBouncer
) -> None:
    dbname = oban.conn.info.dbname
    urls = {
        "direct": oban.dsn,
        "session": pgbouncer.url(dbname, mode="session"),
        "transaction": pgbouncer.url(dbname),
        "statement": pgbouncer.url(dbname, mode="statement"),
    }
    seen = {}
    for name, url in urls.items():
        with psycopg.connect(url, autocommit=True) as conn:
            seen[name] = {through_transaction_pooler(conn, url) for _ in range(10)}
    assert seen == {"direct": {False}, "session": {False}, "transaction": {True}, "statement": {True}}


def test_the_client_through_a_transaction_pooler_loses_nothing(
    oban: ObanDatabase, pgbouncer: PgBouncer, listener: psycopg.Connection[Any]
) -> None:
    """Threads sharing one client over more connections than the pooler has server sessions:
    every unique insert once (its repeat a conflict), every bulk row, every meta merge kept
    with the meta given at enqueue time, and one insert notification per new available job."""
    listener.execute('LISTEN "public.oban_insert"')
    url = pgbouncer.url(oban.conn.info.dbname)
    threads, per_thread = 4, 20
    errors: list[BaseException] = []
    pids: set[int] = set()
    ids: dict[int, int] = {}
    guard = threading.Lock()
    with Oban.connect(url, pool_size=threads, prepare_threshold=None) as client:

        def work(t: int) -> None:
            try:
                with psycopg.connect(url, autocommit=True, prepare_threshold=None) as own:
                    for n in range(per_thread):
                        key = t * 1000 + n
                        job = client.insert(Job.new(WORKER, {"tmdb_id": key}, meta={"source_list": "1001_movies"}))
                        again = client.insert(Job.new(WORKER, {"tmdb_id": key}))
                        assert (again.id, again.conflict, job.conflict) == (job.id, True, False)
                        assert job.id is not None
                        record_failed_lookup(own, job.id, FailedLookup.new(f"tt{key:07d}", "canonical_import"))
                        row = own.execute("SELECT pg_backend_pid()").fetchone()
                        with guard:
                            ids[key] = job.id
                            pids.add(row[0] if row else 0)
                    client.insert_all(
                        [Job.new("Cinegraph.Workers.Bulk", {"t": t, "i": i}, queue="bulk") for i in range(50)]
                    )
            except BaseException as error:  # reported below, with the thread's traceback
                errors.append(error)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    assert not errors, errors
    # Eight client connections open at once (the client's four, each thread's own) were served
    # by at most the pooler's two server sessions: they shared them, transaction by transaction.
    assert len(pids) <= POOL_SIZES["transaction"] < 2 * threads

    rows = oban.rows()
    tmdb = [r for r in rows if r["worker"] == WORKER]
    assert sorted(r["args"]["tmdb_id"] for r in tmdb) == sorted(ids)
    assert {r["id"] for r in tmdb} == set(ids.values())
    for r in tmdb:
        assert r["meta"]["source_list"] == "1001_movies"  # kept: merged, not replaced
        assert r["meta"]["failure_reason"] == "no_tmdb_match"
        assert r["meta"]["imdb_id"] == f"tt{r['args']['tmdb_id']:07d}"
    bulk = [(r["args"]["t"], r["args"]["i"]) for r in rows if r["worker"] == "Cinegraph.Workers.Bulk"]
    assert sorted(bulk) == [(t, i) for t in range(threads) for i in range(50)]

    payloads = [json.loads(n.payload) for n in listener.notifies(timeout=0.5, stop_after=10_000)]
    assert sum(1 for p in payloads if p == {"queue": "tmdb"}) == threads * per_thread
    assert {p["queue"] for p in payloads} == {"tmdb", "bulk"}


def test_the_asyncio_client_through_a_transaction_pooler_loses_nothing(
    oban: ObanDatabase, pgbouncer: PgBouncer, listener: psycopg.Connection[Any]
) -> None:
    """The asyncio face of the test above: tasks sharing one AsyncOban over more connections than
    the pooler has server sessions."""
    listener.execute('LISTEN "public.oban_insert"')
    url = pgbouncer.url(oban.conn.info.dbname)
    tasks, per_task = 4, 20

    async def run() -> dict[int, int]:
        ids: dict[int, int] = {}
        async with await AsyncOban.connect(url, pool_size=tasks, prepare_threshold=None) as client:

            async def work(t: int) -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None) as own:
                    for n in range(per_task):
                        key = t * 1000 + n
                        job = await client.insert(
                            Job.new(WORKER, {"tmdb_id": key}, meta={"source_list": "1001_movies"})
                        )
                        again = await client.insert(Job.new(WORKER, {"tmdb_id": key}))
                        assert (again.id, again.conflict, job.conflict) == (job.id, True, False)
                        assert job.id is not None
                        await async_record_failed_lookup(
                            own, job.id, FailedLookup.new(f"tt{key:07d}", "canonical_import")
                        )
                        ids[key] = job.id
                    await client.insert_all(
                        [Job.new("Cinegraph.Workers.Bulk", {"t": t, "i": i}, queue="bulk") for i in range(50)]
                    )

            await asyncio.gather(*(work(t) for t in range(tasks)))
        return ids

    ids = asyncio.run(run())
    rows = oban.rows()
    tmdb = [r for r in rows if r["worker"] == WORKER]
    assert {r["id"]: r["args"]["tmdb_id"] for r in tmdb} == {job_id: key for key, job_id in ids.items()}
    assert all(
        r["meta"]["source_list"] == "1001_movies" and r["meta"]["failure_reason"] == "no_tmdb_match" for r in tmdb
    )
    bulk = [(r["args"]["t"], r["args"]["i"]) for r in rows if r["worker"] == "Cinegraph.Workers.Bulk"]
    assert sorted(bulk) == [(t, i) for t in range(tasks) for i in range(50)]
    payloads = [json.loads(n.payload) for n in listener.notifies(timeout=0.5, stop_after=10_000)]
    assert sum(1 for p in payloads if p == {"queue": "tmdb"}) == tasks * per_task
    assert {p["queue"] for p in payloads} == {"tmdb", "bulk"}


def test_a_prepared_statement_gone_is_reported_with_what_to_do_behind_a_pooler(oban: ObanDatabase) -> None:
    """What a client with prepared statements gets behind a transaction pooler: a statement it
    prepared is not on the session its next transaction runs on. The server's own error for a
    missing prepared statement says to connect with prepare_threshold=None there."""
    with pytest.raises(psycopg.errors.InvalidSqlStatementName) as raised:
        oban.conn.execute("EXECUTE cinegraph_oban_gone")
    error = translated(raised.value)
    assert isinstance(error, DatabaseError) and error.sqlstate == "26000"
    assert "prepare_threshold=None" in str(error) and "transaction pooler" in str(error)


def _state(oban: ObanDatabase) -> dict[str, Any]:
    """Everything a migration run could have changed, read on a direct connection."""
    conn = oban.conn
    return {
        "tables": snapshot(conn, "legacy"),
        "jobs": conn.execute("SELECT count(*) FROM oban_jobs").fetchone(),
        "recorded": conn.execute("SELECT count(*) FROM legacy.schema_migrations").fetchone(),
        "triggers": conn.execute(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'legacy' AND NOT t.tgisinternal"
        ).fetchone(),
        "relations": conn.execute(
            "SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        ).fetchone(),
        "advisory_locks": conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone(),
    }


def test_the_migration_refuses_a_transaction_pooler_having_changed_nothing(
    oban: ObanDatabase, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """Through PgBouncer in transaction mode the migration lock would be left on a server
    session another client is given next (every later run refused as "already running", or a
    second migrator let in), and the bulk sessions' settings with it. Every entry refuses it,
    saying what to use instead, before anything is written; through a pooler in session mode
    the migration runs, and rolls back."""
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 12)
    before = _state(oban)
    pooled = pgbouncer.url(oban.conn.info.dbname)
    export = tmp_path / "export"

    def refused(run: Any) -> None:
        with pytest.raises(SessionRequiredError, match="transaction pooler") as raised:
            run(migration(pooled, tmp_path, schema="legacy"))
        assert "connects to PostgreSQL directly" in str(raised.value)

    refused(lambda m: m.up())
    refused(lambda m: m.status())
    refused(lambda m: m.verify())
    refused(lambda m: m.export())
    refused(lambda m: m.down())
    with pytest.raises(SessionRequiredError, match="statement"):
        migration(pgbouncer.url(oban.conn.info.dbname, mode="statement"), tmp_path, schema="legacy").up()
    through_asyncio = AsyncRemoveRedundantImportTables(pooled, schema="legacy", export_dir=export)
    with pytest.raises(SessionRequiredError, match="transaction pooler"):
        asyncio.run(through_asyncio.up())
    for command in (["migrate", "up", "--yes"], ["migrate", "verify"], ["migrate", "status"]):
        result = run_cli(*command, "--database-url", pooled, "--schema", "legacy", "--export-dir", str(export))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr  # one line
        assert "transaction pooler" in result.stderr
    assert _state(oban) == before
    assert not export.exists()

    through_session_pool = migration(pgbouncer.url(oban.conn.info.dbname, mode="session"), tmp_path, schema="legacy")
    summary = through_session_pool.up()
    assert summary.archived == {"failed_imdb_lookups": 12, "skipped_imports": 12}
    through_session_pool.down()
    assert _state(oban) == before
