"""The migration's asyncio face (`cinegraph_oban.asyncio.migration`) and `interrupt()`, against
real PostgreSQL: the same outcome as the sync migration, an event loop that keeps running, and a
cancelled task (or an interrupt from another thread) that stops the run, leaves nothing running
and loses nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cinegraph_oban import FailedLookup, MigrationInterruptedError, SkippedImport
from cinegraph_oban.asyncio import migration as face
from cinegraph_oban.migration import legacy
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables
from cinegraph_oban.migration.steps import APPLICATION_NAME
from conftest import ObanDatabase
from tests.helpers import migration, sample_rows, setup_legacy, snapshot, with_id

ROWS = 40


@pytest.fixture
def legacy_db(oban: ObanDatabase) -> ObanDatabase:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", ROWS)
    return oban


def async_migration(dsn: str, tmp_path: Path, **kwargs: Any) -> face.AsyncRemoveRedundantImportTables:
    return face.AsyncRemoveRedundantImportTables(
        dsn, schema="legacy", export_dir=tmp_path / "export", batch_size=kwargs.pop("batch_size", 7), **kwargs
    )


def migrator_sessions(conn: psycopg.Connection[Any], *, active: bool = False) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
        + (" AND state = 'active'" if active else ""),
        (APPLICATION_NAME,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def drop_waits_for_its_lock(conn: psycopg.Connection[Any], statement: str = "LOCK TABLE") -> bool:
    """Whether the migrator's LOCK TABLE of the drop (or another statement it runs) waits for a
    lock (behind the application's)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s "
        "AND wait_event_type = 'Lock' AND starts_with(query, %s)",
        (APPLICATION_NAME, statement),
    ).fetchone()
    return row == (1,)


def archival_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM oban_jobs WHERE meta ? 'legacy_table'").fetchone()
    assert row is not None
    return int(row[0])


def up_in_a_thread(m: RemoveRedundantImportTables, outcome: list[BaseException | None]) -> threading.Thread:
    """`m.up()` in a thread of its own, started; how it ended (None: it finished) goes on `outcome`."""

    def run() -> None:
        try:
            m.up()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_async_up_verify_status_and_down_as_the_sync_migration_does(legacy_db: ObanDatabase, tmp_path: Path) -> None:
    """up, verify, status and down awaited: the same rows, counts and states as the sync
    migration, while another task of the loop keeps running."""
    conn = legacy_db.conn
    before = snapshot(conn, "legacy")
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def run() -> tuple[Any, ...]:
        m = async_migration(legacy_db.dsn, tmp_path)
        beat = asyncio.create_task(heartbeat())
        started = ticks
        up = await m.up()
        ticked_during_up = ticks - started
        beat.cancel()
        status, verified = await m.status(), await m.verify()
        sync_verified = migration(legacy_db.dsn, tmp_path, schema="legacy").verify()
        down = await m.down()
        return m, up, ticked_during_up, status, (verified, sync_verified), down

    m, up, ticked, status, (verified, sync_verified), down = asyncio.run(run())
    assert up.archived == {"failed_imdb_lookups": ROWS, "skipped_imports": ROWS} and up.already_done is False
    # The loop was free while up ran (a blocked loop does not tick at all).
    assert ticked > 0
    assert status["state"] == "migrated"
    assert verified.action == "verify" and verified.findings == [] and verified.unverified == {}
    assert (verified.rows, verified.archived) == (sync_verified.rows, sync_verified.archived) != ({}, {})
    assert down.action == "down" and snapshot(conn, "legacy") == before
    # The plan is the sync migration's, rendered without a database.
    assert m.plan() == migration(legacy_db.dsn, tmp_path, schema="legacy").plan()


def test_a_cancelled_up_stops_its_sessions_before_the_task_ends_and_up_again_finishes(
    legacy_db: ObanDatabase, tmp_path: Path
) -> None:
    """Cancelled during the backfill: CancelledError only after the migrator's statements have
    stopped (none of its sessions is running a statement when the task ends), the legacy tables
    still there with every row; awaiting up again on the same object finishes the migration."""
    conn = legacy_db.conn
    before = snapshot(conn, "legacy")

    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        task: asyncio.Task[Any] | None = None

        def progress(step: str, done: int, total: int) -> None:
            if step.startswith("backfill") and done and task is not None:
                loop.call_soon_threadsafe(task.cancel)
                time.sleep(0.2)  # the cancel reaches the run mid-backfill, not after it

        m = async_migration(legacy_db.dsn, tmp_path, progress=progress)
        task = asyncio.create_task(m.up())
        with pytest.raises(asyncio.CancelledError):
            await task
        running = migrator_sessions(conn, active=True)
        archived_when_cancelled = archival_jobs(conn)
        m.migration.progress = lambda step, done, total: None
        summary = await m.up()
        assert summary.archived == {"failed_imdb_lookups": ROWS, "skipped_imports": ROWS}
        return running, archived_when_cancelled

    running, archived_when_cancelled = asyncio.run(run())
    assert running == 0
    # It stopped part-way: some batches stood, not all (2 * ROWS archival jobs in all).
    assert 0 < archived_when_cancelled < 2 * ROWS
    assert conn.execute("SELECT to_regclass('legacy.failed_imdb_lookups')").fetchone() == (None,)
    assert archival_jobs(conn) == 2 * ROWS
    # Nothing lost on the way: down gives back the tables as they were before the cancelled run.
    asyncio.run(async_migration(legacy_db.dsn, tmp_path).down())
    assert snapshot(conn, "legacy") == before


def test_a_cancelled_up_waiting_for_the_tables_lock_gives_up_without_dropping(
    legacy_db: ObanDatabase, tmp_path: Path
) -> None:
    """The drop waits for its lock behind the application's transaction (lock_timeout 60 s):
    the cancel stops the wait at once. The task ends while that transaction still holds its
    lock, and nothing was dropped."""
    conn = legacy_db.conn
    before = snapshot(conn, "legacy")
    holder = psycopg.connect(legacy_db.dsn)
    try:
        holder.execute("SELECT count(*) FROM legacy.skipped_imports")  # ACCESS SHARE, held until rollback

        async def run() -> bool:
            m = async_migration(legacy_db.dsn, tmp_path, lock_timeout_ms=60_000, retries=0)
            task = asyncio.create_task(m.up())
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            while conn.execute(waiting).fetchone() == (0,):
                assert not task.done(), task.result()
                await asyncio.sleep(0.02)
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Stopped by the cancel, not by the lock timeout (a run the cancel did not reach
            # would end only after 60 s, with LockNotAcquiredError).
            assert time.monotonic() - cancelled_at < 30
            return holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS

        assert asyncio.run(run())
        assert conn.execute("SELECT to_regclass('legacy.skipped_imports') IS NOT NULL").fetchone() == (True,)
        assert migrator_sessions(conn, active=True) == 0
    finally:
        holder.close()
    assert snapshot(conn, "legacy") == before


def test_interrupt_from_another_thread_stops_a_sync_run_which_then_runs_again(
    legacy_db: ObanDatabase, tmp_path: Path
) -> None:
    """`interrupt()` from another thread: the run raises MigrationInterruptedError in its own
    thread with its lock released; the same object then migrates to the end."""
    reached = threading.Event()

    def progress(step: str, done: int, total: int) -> None:
        if step.startswith("backfill") and done:
            reached.set()
            time.sleep(0.2)

    m = migration(legacy_db.dsn, tmp_path, schema="legacy", progress=progress)
    m.interrupt()  # no run in progress: nothing to stop, and nothing left to stop the next run
    assert m.status()["state"] == "pending"
    outcome: list[BaseException | None] = []
    thread = up_in_a_thread(m, outcome)
    assert reached.wait(60)
    m.interrupt()
    thread.join(60)
    assert not thread.is_alive() and isinstance(outcome[0], MigrationInterruptedError), outcome
    assert migrator_sessions(legacy_db.conn, active=True) == 0
    m.progress = lambda step, done, total: None
    assert m.up().archived == {"failed_imdb_lookups": ROWS, "skipped_imports": ROWS}


def test_interrupt_cancels_the_statement_a_sync_run_is_waiting_on(legacy_db: ObanDatabase, tmp_path: Path) -> None:
    """The drop waits for its lock behind the application's transaction: `interrupt()` cancels
    that wait, and the run ends in MigrationInterruptedError (the cancelled statement its
    cause) while the application still holds its lock; nothing was dropped. The next run, at
    once and waiting there too, is left alone by the first run's interrupt (which went on
    cancelling every half second until that run ended) and finishes once the lock is free."""
    conn = legacy_db.conn
    before = snapshot(conn, "legacy")
    m = migration(legacy_db.dsn, tmp_path, schema="legacy", lock_timeout_ms=60_000, retries=0)
    outcome: list[BaseException | None] = []

    def started_and_waiting(statement: str) -> threading.Thread:
        thread = up_in_a_thread(m, outcome)
        deadline = time.monotonic() + 60
        while not drop_waits_for_its_lock(conn, statement):
            assert thread.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.02)
        return thread

    with psycopg.connect(legacy_db.dsn) as holder:
        holder.execute("SELECT count(*) FROM legacy.failed_imdb_lookups")  # ACCESS SHARE until rollback
        first = started_and_waiting("LOCK TABLE")
        m.interrupt()
        first.join(30)  # well inside the 60 s lock_timeout: the cancel, not the timeout, ended it
        assert not first.is_alive()
        assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        [error] = outcome
        assert isinstance(error, MigrationInterruptedError), error
        assert isinstance(error.__cause__, psycopg.errors.QueryCanceled), repr(error.__cause__)
        assert snapshot(conn, "legacy") == before
        assert migrator_sessions(conn, active=True) == 0
        # The next run begins by setting its change capture up again, which waits for that lock too.
        second = started_and_waiting("")
        time.sleep(1.2)  # two more rounds of the first interrupt's cancelling, had it gone on
        assert second.is_alive(), outcome
        holder.rollback()
    second.join(60)
    assert outcome[1:] == [None]
    assert archival_jobs(conn) == 2 * ROWS


def test_a_run_cancelled_while_it_waits_its_turn_never_starts_and_leaves_the_first_alone(
    legacy_db: ObanDatabase, tmp_path: Path
) -> None:
    """Two runs of one object: the second waits until the first ends. Cancelled while it
    waits, it never starts, and the first (not interrupted) finishes."""

    running, release = threading.Event(), threading.Event()

    def progress(step: str, done: int, total: int) -> None:
        running.set()
        assert release.wait(60)  # the first run holds its turn until the second is cancelled

    async def run() -> Any:
        m = async_migration(legacy_db.dsn, tmp_path, progress=progress)
        first = asyncio.create_task(m.up())
        while not running.is_set():
            await asyncio.sleep(0.01)
        second = asyncio.create_task(m.status())
        await asyncio.sleep(0.05)
        second.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await second
        return await first

    summary = asyncio.run(run())
    assert summary.archived == {"failed_imdb_lookups": ROWS, "skipped_imports": ROWS}
    assert archival_jobs(legacy_db.conn) == 2 * ROWS


def test_the_legacy_table_functions_in_both_faces_make_the_same_tables(oban: ObanDatabase) -> None:
    """create_legacy_tables, insert_legacy_row and legacy_kinds awaited on an AsyncConnection
    make and read what their sync forms make and read."""
    conn = oban.conn
    rows = [
        with_id(FailedLookup.new("tt0000001", "canonical_import", title="Lost", metadata={"n": 1}), 1),
        with_id(SkippedImport.new(278, title="Soft", criteria_failed={"failed_criteria": ["votes"]}), 1),
    ]
    conn.execute("CREATE SCHEMA one")
    conn.execute("CREATE SCHEMA two")
    legacy.create_legacy_tables(conn, "one")
    for row in rows:
        legacy.insert_legacy_row(conn, "one", row)

    async def run() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as aconn:
            assert await face.legacy_kinds(aconn, "two") == {}
            await face.create_legacy_tables(aconn, "two")
            for row in rows:
                await face.insert_legacy_row(aconn, "two", row)
            return await face.legacy_kinds(aconn, "two")

    kinds = asyncio.run(run())
    assert kinds == legacy.legacy_kinds(conn, "one") == {"failed_imdb_lookups": "a table", "skipped_imports": "a table"}
    assert unqualified(snapshot(conn, "two"), "two") == unqualified(snapshot(conn, "one"), "one")
    assert len(snapshot(conn, "two")["failed_imdb_lookups"]["rows"]) == 1


def unqualified(tables: dict[str, Any], schema: str) -> str:
    """A snapshot with its schema's name taken out of the index names and definitions."""
    return repr(tables).replace(f"{schema}.", "<schema>.")
