"""Backfill: every legacy row becomes one archival job, both tables at once in set-based batches,
with Oban's GIN pending lists merged meanwhile; the per-table workers it and export run on.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import psycopg

from cinegraph_oban.errors import (
    first_line,
)
from cinegraph_oban.migration.legacy import LEGACY_TABLES
from cinegraph_oban.migration.steps import MigrationBase, _crash_point
from cinegraph_oban.migration.summary import Backfilled, MigrationSummary

__all__ = ["MERGE_INTERVAL_SECONDS", "Backfill"]


#: How often the backfill's mergers merge the GIN pending lists (sooner when a table is done).
MERGE_INTERVAL_SECONDS = 0.2


class Backfill(MigrationBase):
    """The backfill, and running work per table in parallel."""

    def _backfill(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        total: int,
        now: datetime,
        *,
        batch: int,
        start: Backfilled | None = None,
    ) -> Backfilled:
        """Archive the rows after the last archived one; returns how far it got."""
        if start is None:
            start = self._archived(conn, table)
            self._resumed_from[table] = start.archived  # archival jobs of earlier runs
        archived, last_id, last_job_id = start
        batches = 0
        while not self._stop.is_set():
            row = conn.execute(
                self._sql("backfill", table=table),
                {"after": last_id, "batch": batch, "total": total, "now": now},
            ).fetchone()
            assert row is not None
            count, batch_last, batch_last_job = int(row[0]), row[1], row[2]
            if count == 0:
                return Backfilled(archived, last_id, last_job_id)
            archived += count
            last_id, last_job_id = int(batch_last), int(batch_last_job)
            batches += 1
            self.progress(f"backfill {table}", archived, total)
            _crash_point(f"backfill:{table}:{batches}")
        raise KeyboardInterrupt  # stopped by an interrupt in the main thread; the batches so far stand

    def _backfill_all(
        self, conn: psycopg.Connection[Any], summary: MigrationSummary, now: datetime
    ) -> dict[str, Backfilled]:
        """Both tables at once, a connection each, with a merger per GIN index of oban_jobs.

        Every archival job adds a few dozen entries to Oban's GIN indexes. They wait in each
        index's pending list until someone merges the list into the index, and only one session
        can merge a list at a time. Left to the inserts, whichever backfill statement finds a list
        over its limit merges all of it while its table waits, and merges whatever is still there
        when the backfill ends only when the application next inserts: that insert's job waits
        for it. So, when the migrator owns the indexes (gin_clean_pending_list needs the owner,
        as VACUUM does), one more connection per index merges its list over and over while both
        tables are backfilled (their sessions merge only past 256 MB, a backstop), and once more
        at the end. A migrator that is not the owner leaves the merging to the inserts (64 MB)
        and gets a warning.
        """
        indexes = conn.execute(self._sql("gin_indexes"), {}).fetchall()
        mergers = [str(index) for index, owned in indexes if owned]
        refused = [str(index) for index, owned in indexes if not owned]
        if refused:
            summary.warnings.append(
                f"could not merge the GIN pending lists of {', '.join(refused)} (only their owner can): Oban's "
                f"unique checks and meta queries read them until the next VACUUM; run `VACUUM {self.prefix}.oban_jobs` "
                "as the table's owner"
            )
        running = set(LEGACY_TABLES)
        finished = threading.Condition()

        def backfill(bulk: psycopg.Connection[Any], table: str) -> Backfilled:
            if mergers and not refused:
                bulk.execute(self._sql("pending_list_limit"), {})
            return self._backfill(bulk, table, summary.rows[table], now, batch=self.batch_size)

        def backfill_ended(key: str) -> None:
            with finished:
                running.discard(key)
                finished.notify_all()

        def merge(bulk: psycopg.Connection[Any], index: str) -> None:
            # Merging only keeps the lists short: a merge that fails is reported, not fatal.
            while True:
                with finished:
                    if self._stop.is_set():  # interrupted: the backfill stopped too
                        return
                    last = not running
                try:
                    bulk.execute(self._sql("merge_pending_list"), {"index": index})
                except psycopg.Error as exc:
                    if self._stop.is_set():
                        return
                    summary.warnings.append(
                        f"could not merge the GIN pending list of {index} ({first_line(exc)}); "
                        f"the backfill's inserts merged it instead. Run `VACUUM {self.prefix}.oban_jobs` afterwards"
                    )
                    return
                if last:
                    return
                with finished:
                    finished.wait(MERGE_INTERVAL_SECONDS)

        results = self._in_parallel(
            [*LEGACY_TABLES, *mergers],
            lambda bulk, key: backfill(bulk, key) if key in LEGACY_TABLES else merge(bulk, key),
            done=lambda key: backfill_ended(key) if key in LEGACY_TABLES else None,
        )
        for table in LEGACY_TABLES:
            summary.archived[table] = results[table].archived
        return {table: results[table] for table in LEGACY_TABLES}
