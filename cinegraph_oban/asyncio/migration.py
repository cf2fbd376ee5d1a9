"""The migration for asyncio callers: `cinegraph_oban.asyncio.migration` mirrors
`cinegraph_oban.migration`.

    from cinegraph_oban.asyncio.migration import AsyncRemoveRedundantImportTables

    migration = AsyncRemoveRedundantImportTables(database_url, export_dir="export")
    summary = await migration.up()

`AsyncRemoveRedundantImportTables` takes the same parameters as `RemoveRedundantImportTables`
and has the same methods, as coroutines (`plan()`, which reads nothing, stays a plain method).
Each run is the sync migration's own, in a worker thread: the migration is a long job of
several sessions at once (both tables are exported, backfilled and verified in parallel, a
merger per GIN index beside them) whose work is done by PostgreSQL, so a thread costs the event
loop nothing, and one implementation of every step keeps both faces the same. The event loop
is never blocked: other tasks run while it does.

Cancelling the awaiting task stops the run as Ctrl-C stops the command line's (it calls the
migration's `interrupt()`): the statements running are cancelled, none of its steps' statements
is sent after, transactions roll back and the migration lock is released; only then is
`CancelledError` raised, so nothing of the run is left running. What it
had committed stands (each backfill batch, the export), as after Ctrl-C: awaiting `up()` again
finishes from there. `progress(step, done, total)`, when given, is called from the worker thread.

`create_legacy_tables`, `insert_legacy_row` and `legacy_kinds` are the coroutine twins of their
sync forms (`migration/legacy_async.py`), taking a psycopg AsyncConnection or SQLAlchemy
AsyncConnection / AsyncSession.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cinegraph_oban.migration.legacy_async import create_legacy_tables, insert_legacy_row, legacy_kinds
from cinegraph_oban.migration.legacy_shape import EXPECTED_COLUMNS, LEGACY_TABLES
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables
from cinegraph_oban.migration.steps import CANCEL_AGAIN_SECONDS, DEFAULT_VERSION, Progress
from cinegraph_oban.migration.summary import Finding, MigrationSummary

__all__ = [
    "DEFAULT_VERSION",
    "EXPECTED_COLUMNS",
    "LEGACY_TABLES",
    "AsyncRemoveRedundantImportTables",
    "Finding",
    "MigrationSummary",
    "create_legacy_tables",
    "insert_legacy_row",
    "legacy_kinds",
]

T = TypeVar("T")


class _NotStarted(Exception):
    """A run cancelled before its turn came."""


class AsyncRemoveRedundantImportTables:
    """`RemoveRedundantImportTables` for asyncio: the same parameters, its methods as coroutines."""

    def __init__(
        self,
        database_url: str,
        *,
        prefix: str = "public",
        schema: str = "public",
        version: int = DEFAULT_VERSION,
        batch_size: int = 50_000,
        export_dir: str | Path = "cinegraph-oban-export",
        compat_views: bool = False,
        audit_log: bool = False,
        lock_timeout_ms: int = 2_000,
        retries: int = 5,
        progress: Progress | None = None,
    ) -> None:
        #: The sync migration every run is made by (its settings, and `ran` after `up`).
        self.migration = RemoveRedundantImportTables(
            database_url,
            prefix=prefix,
            schema=schema,
            version=version,
            batch_size=batch_size,
            export_dir=export_dir,
            compat_views=compat_views,
            audit_log=audit_log,
            lock_timeout_ms=lock_timeout_ms,
            retries=retries,
            progress=progress,
        )
        self._one_at_a_time = threading.Lock()

    def plan(self) -> list[tuple[str, list[str]]]:
        """Every statement `up` may run, step by step (reads nothing: not a coroutine)."""
        return self.migration.plan()

    async def status(self) -> dict[str, Any]:
        return await self._run(self.migration.status)

    async def up(self) -> MigrationSummary:
        return await self._run(self.migration.up)

    async def down(self, from_export: str | Path | None = None) -> MigrationSummary:
        return await self._run(self.migration.down, from_export)

    async def verify(self, *, recent_seconds: int = 7 * 86_400) -> MigrationSummary:
        return await self._run(self.migration.verify, recent_seconds=recent_seconds)

    async def export(self, rows: dict[str, int] | None = None) -> dict[str, Any]:
        return await self._run(self.migration.export, rows)

    async def _run(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`method(*args, **kwargs)` in a worker thread; cancelled: interrupted, and waited for.

        One run at a time per object, from any event loop (a second waits in its thread until
        the first ends): the sync migration keeps the state of its run on itself. Two objects on
        one database are kept apart by the migration's advisory lock, as two processes are."""
        started, cancelled = threading.Event(), threading.Event()

        def call() -> T:
            with self._one_at_a_time:
                if cancelled.is_set():  # cancelled while it waited its turn: never started
                    raise _NotStarted
                started.set()
                return method(*args, **kwargs)

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, call))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled.set()
            await self._wind_down(future, started)
            raise

    async def _wind_down(self, future: asyncio.Future[Any], started: threading.Event) -> None:
        """Interrupt the run and wait until its thread has ended (its lock released), however
        often this task is cancelled again meanwhile. `interrupt()` runs off the event loop (it
        takes a lock the run's thread holds while cancelling), and again each half second until
        the run has begun and so can be interrupted."""
        while not future.done():
            try:
                if started.is_set():
                    await asyncio.to_thread(self.migration.interrupt)
                await asyncio.wait({future}, timeout=CANCEL_AGAIN_SECONDS)
            except asyncio.CancelledError:
                continue  # cancelled again: the run is still stopping; wait for it all the same
        if not future.cancelled():
            future.exception()  # MigrationInterruptedError (or what the run ended in): retrieved, not logged
