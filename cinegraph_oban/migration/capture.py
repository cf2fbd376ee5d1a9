"""The change capture: how `up` finishes while the application still writes to the legacy tables.

Before anything is exported or archived, a row trigger on each legacy table starts recording the
ids every write touches in a side table (`create_capture.sql.j2`). After the backfill, `catch_up`
archives those ids again from their rows as they are now, round after round, and verify leaves
out the ids still waiting; under the drop's exclusive lock the last of them are applied, checked
(`verify_ids`) and counted in the transaction that drops the tables, the trigger and the side
table. A writer waits only for that lock; it never gets an error before the tables are gone.

The capture also makes every stopped state convergent: whatever stopped a run, the trigger kept
recording, so a re-run applies what changed. Where it could not see everything (archival jobs of a
run made before the capture existed, a TRUNCATE), `mark_differences` compares every archival job
with its row and queues the ids that differ, and `catch_up` archives them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cinegraph_oban.migration.legacy import LEGACY_TABLES
from cinegraph_oban.migration.steps import MigrationBase, _crash_point
from cinegraph_oban.migration.summary import Finding, MigrationSummary

__all__ = ["CATCH_UP_BATCH", "CATCH_UP_ROUNDS", "CATCH_UP_SMALL", "Capture", "CaughtUp"]

#: Catch-up rounds before verify at most, and the round size (distinct ids) small enough to stop
#: at: what is left is applied under the drop's lock.
CATCH_UP_ROUNDS = 50
CATCH_UP_SMALL = 200
#: Captured writes taken per catch-up statement.
CATCH_UP_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """One round of catch_up on one table."""

    changes: int  # captured writes taken
    ids: list[int]  # the distinct legacy ids archived again
    removed: int  # archival jobs removed
    archived: int  # archival jobs written
    job_ids: list[int]  # their ids
    truncated: bool  # a TRUNCATE was among the writes: every row must be compared again


class Capture(MigrationBase):
    """Creating, applying and dropping the change capture."""

    def _create_capture(self, conn: psycopg.Connection[Any]) -> None:
        """The side table and the triggers, in one transaction that waits at most lock_timeout for
        the writers' transactions in flight (CREATE TRIGGER takes a lock that conflicts with
        them; the writers that come after wait behind it for as long)."""
        with conn.transaction():
            conn.execute(self._sql("lock_timeout"), {})
            for statement in self._statements("create_capture"):
                conn.execute(statement, {})

    def _catch_up(self, conn: psycopg.Connection[Any], table: str, total: int, now: Any) -> CaughtUp:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self._sql("catch_up", table=table), {"total": total, "now": now, "limit": CATCH_UP_BATCH})
            row = cur.fetchone()
        assert row is not None
        return CaughtUp(
            int(row["changes"]),
            list(row["id_list"] or ()),
            int(row["removed"]),
            int(row["archived"]),
            list(row["job_ids"] or ()),
            bool(row["truncated"]),
        )

    def _mark_differences(self, conn: psycopg.Connection[Any], table: str) -> int:
        row = conn.execute(self._sql("mark_differences", table=table), {}).fetchone()
        return int(row[0]) if row else 0

    def _catch_up_all(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        now: Any,
        archived: dict[str, int],
        *,
        compare: bool = False,
    ) -> None:
        """Apply the captured writes of both tables, round after round, until a round is small
        (what is left waits for the drop's lock). `compare` first queues every id whose archival
        jobs differ from its row (mark_differences); so does a TRUNCATE among the writes.
        `archived` (each table's archival jobs) is kept up to date."""
        if not self._analyzed and (compare or any(self._pending(conn, table) for table in LEGACY_TABLES)):
            # The first lookup of written ids' archival jobs: the planner must know that oban_jobs
            # now holds every archival job. Left with the statistics of before (often an empty
            # table) it scans oban_jobs for each round, and under the drop's lock. With nothing
            # written since the capture began, there is nothing to look up and no ANALYZE.
            conn.execute(self._sql("analyze_jobs"), {})
            self._analyzed = True
        if self._mergers is None:
            conn.execute(self._sql("catch_up_session"), {})
            indexes = conn.execute(self._sql("gin_indexes"), {}).fetchall()
            self._mergers = [str(index) for index, owned in indexes if owned]
        for table in LEGACY_TABLES:
            if compare:
                summary.recompared[table] = summary.recompared.get(table, 0) + self._mark_differences(conn, table)
            for round_number in range(1, CATCH_UP_ROUNDS + 1):
                self._merge_pending_lists(conn)
                done = self._catch_up(conn, table, summary.rows[table], now)
                archived[table] += done.archived - done.removed
                summary.caught_up[table] = summary.caught_up.get(table, 0) + len(done.ids)
                self.progress(f"catch-up {table}", summary.caught_up[table], summary.caught_up[table])
                _crash_point(f"catch_up:{table}:{round_number}")
                if done.truncated:
                    summary.recompared[table] = summary.recompared.get(table, 0) + self._mark_differences(conn, table)
                    continue
                if len(done.ids) < CATCH_UP_SMALL:
                    break
        self._merge_pending_lists(conn)  # what the drop's lookups will read

    def _merge_pending_lists(self, conn: psycopg.Connection[Any]) -> None:
        """Merge the GIN pending lists (the migrator owns the indexes): every lookup of an
        archival job reads them whole, so they are kept short between catch-up rounds."""
        for index in self._mergers or ():
            try:
                conn.execute(self._sql("merge_pending_list"), {"index": index})
            except psycopg.Error:
                return  # only keeps the lookups fast

    def _verify_ids(self, conn: psycopg.Connection[Any], table: str, done: CaughtUp) -> list[Finding]:
        """The rows of a catch-up round against the archival jobs it wrote (by primary key)."""
        if not done.ids:
            return []
        rows = conn.execute(self._sql("verify_ids", table=table), {"ids": done.ids, "job_ids": done.job_ids}).fetchall()
        return [Finding(table, kind, int(n), tuple(example or ())) for kind, n, example in rows]
