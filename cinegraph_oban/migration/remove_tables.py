"""RemoveRedundantImportTables: retire `failed_imdb_lookups` and `skipped_imports` without losing a row.

`up`, in order, each step safe to re-run after a crash at any point:

1. preflight (read-only): the Oban schema; each legacy table's exact shape (a different shape is
   refused with a precise diff); row counts; a warning when a table was written to recently.
2. export: both tables streamed to `<export_dir>/<table>.jsonl.gz` (the JSON PostgreSQL writes
   for each row) with `manifest.json` (row counts, SHA-256), written atomically.
3. backfill: set-based batches, in id order, each one statement: every legacy row becomes one
   archival `Cinegraph.Workers.TMDbDetailsWorker` job in a final state whose meta holds the row
   (the meta contract). A re-run resumes after the highest legacy id archived. `oban_jobs` only
   ever sees INSERTs.
4. verify: every legacy row against the row its archival job maps back to, whole rows compared;
   any difference stops the migration before anything is dropped.
5. drop: one short transaction with a `lock_timeout` (retried): lock the legacy tables, archive
   rows written since, check the counts, drop both tables, optionally create the compat views
   and audit log, and record the Ecto migration in `schema_migrations` under Ecto's own lock.

`down` recreates both tables exactly as the original Ecto migrations made them and restores
every row from the archival jobs (or from an export, when Oban's Pruner has removed jobs),
resets the id sequences, removes the archival jobs and the `schema_migrations` row.

A session-level advisory lock lets only one migrator run at a time.

The parts live beside this module: `legacy` (the tables), `steps` (`UP_STEPS`, rendering,
reading state), `export`, `backfill`, `verify`, `summary`.

`UP_STEPS` lists the steps of `up` with every statement each may run; `plan()` (`migrate plan`)
is rendered from it, and `up` refuses to render a statement its running step does not list.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from cinegraph_oban.db.connections import normalize_dsn
from cinegraph_oban.db.identifiers import check_identifier, check_prefix
from cinegraph_oban.errors import (
    LockNotAcquiredError,
    UnsupportedSchemaError,
    VerificationError,
)
from cinegraph_oban.migration.backfill import Backfill
from cinegraph_oban.migration.capture import Capture, CaughtUp
from cinegraph_oban.migration.export import chunks
from cinegraph_oban.migration.legacy import (
    EXPECTED_COLUMNS,
    LEGACY_TABLES,
    create_legacy_tables,
    insert_legacy_row,
)
from cinegraph_oban.migration.steps import (
    DEFAULT_VERSION,
    Progress,
    Step,
    _crash_point,
    one_run,
)
from cinegraph_oban.migration.summary import Finding, MigrationSummary
from cinegraph_oban.migration.verify import Verify
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.model.workers import TMDB_DETAILS_WORKER
from cinegraph_oban.oban.table import detect
from cinegraph_oban.sql import builder

__all__ = [
    "DEFAULT_VERSION",
    "EXPECTED_COLUMNS",
    "LEGACY_TABLES",
    "Finding",
    "MigrationSummary",
    "RemoveRedundantImportTables",
    "create_legacy_tables",
    "insert_legacy_row",
]


T = TypeVar("T")
RECENT_WRITE = timedelta(minutes=15)


class RemoveRedundantImportTables(Capture, Backfill, Verify):
    """The migration, bound to one database, Oban prefix and schema of the legacy tables."""

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
        self.database_url = normalize_dsn(database_url)
        self.prefix = check_prefix(prefix)  # before anything touches the database
        self.schema = check_identifier(schema, field="schema")
        self.version = version
        self.batch_size = batch_size
        self.export_dir = Path(export_dir)
        self.compat_views = compat_views
        self.audit_log = audit_log
        self.lock_timeout_ms = lock_timeout_ms
        self.retries = retries
        self.progress = progress or (lambda step, done, total: None)
        self.worker = TMDB_DETAILS_WORKER.name
        self._stop = threading.Event()
        self._interrupted = threading.Event()
        self._sessions = weakref.WeakSet()
        self._idle = []
        self._sessions_lock = threading.Lock()
        self._session_checked = False
        self._session_check_lock = threading.Lock()
        self._depth = 0
        self._cancelling = 0
        self._runs = 0
        #: The step of `up` running now (None outside `up`), and the (step, template) pairs
        #: rendered in `up` so far.
        self._step: Step | None = None
        self._resumed_from: dict[str, int] = {}
        self._mergers: list[str] | None = None
        self._analyzed = False
        self._recorded_empty: dict[str, bool] = {}
        self.ran: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def _session(self, *, up: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A connection holding the migration lock (for `up`, its lock and unlock steps)."""
        conn = self._connect()
        try:
            with self._running("lock") if up else contextlib.nullcontext():
                locked = conn.execute(self._sql("migration_lock"), {}).fetchone()
            if not locked or not locked[0]:
                raise LockNotAcquiredError(
                    "another RemoveRedundantImportTables migrator is running on this database (its advisory "
                    "lock is held); wait for it to finish, or find it in pg_locks (locktype = 'advisory')"
                )
            try:
                yield conn
            finally:
                with self._sessions_lock:
                    self._sessions.discard(conn)  # interrupt() cancels no statement on it after this
                with self._running("unlock") if up else contextlib.nullcontext(), contextlib.suppress(psycopg.Error):
                    conn.execute(self._sql("migration_unlock"), {})
        finally:
            conn.close()

    @one_run
    def status(self) -> dict[str, Any]:
        """Where the migration stands and which command gets out of it (read-only: the migration
        lock is only tried, to see whether a migrator is running, and released at once).

        `state` is one of: `running` (another migrator holds the lock), `pending` (nothing done
        yet), `unfinished` (a run of `up` stopped part-way: archival jobs or the change capture
        are there), `migrated`, `inconsistent`; `next` says what to run.
        """
        with self._connect() as conn:
            detect(conn, self.prefix)
            locked = conn.execute(self._sql("migration_lock"), {}).fetchone()
            running = not (locked and locked[0])
            if not running:
                conn.execute(self._sql("migration_unlock"), {})
            out: dict[str, Any] = {"version": self.version, "recorded": self._recorded(conn), "tables": {}}
            kinds = {table: self._kind(conn, table) for table in LEGACY_TABLES}
            captured = all(k == "r" for k in kinds.values()) and self._capture_present(conn)
            out["change_capture"] = captured
            for table in LEGACY_TABLES:
                kind = kinds[table]
                archived, last_id, _ = self._archived(conn, table)
                entry: dict[str, Any] = {
                    "present": {"r": "table", "v": "compat view"}.get(kind or "", "absent"),
                    "archived_jobs": archived,
                    "last_archived_id": last_id,
                }
                if kind == "r":
                    entry["rows"] = self._stats(conn, table)["rows"]
                    if captured:
                        entry["pending_writes"] = self._pending(conn, table)
                else:
                    entry["rows_at_drop"] = self._expected_rows(conn, table, None)[0]
                out["tables"][table] = entry
        manifest = self.export_dir / "manifest.json"
        out["export"] = str(manifest) if manifest.exists() else None
        tables = out["tables"].values()
        if running:
            out["state"] = "running"
            out["next"] = "another migrator is running (it holds the migration lock): wait for it, or stop it"
        elif all(t["present"] == "table" for t in tables):
            if captured or any(t["archived_jobs"] for t in tables):
                out["state"] = "unfinished"
                out["next"] = (
                    "a run of `migrate up` stopped part-way: `cinegraph-oban migrate up` finishes it (it applies "
                    "whatever changed since), `cinegraph-oban migrate down` removes what it wrote"
                )
            else:
                out["state"] = "pending"
                out["next"] = "`cinegraph-oban migrate up`"
        elif all(t["present"] != "table" for t in tables) and out["recorded"] is not False:
            out["state"] = "migrated"
            pruned = [
                name
                for name, t in out["tables"].items()
                if t["archived_jobs"] < t["rows_at_drop"] or not t["archived_jobs"]
            ]
            out["next"] = (
                "nothing; to roll back: `cinegraph-oban migrate down`"
                if not pruned
                else f"nothing; to roll back: archival jobs of {', '.join(pruned)} are gone (pruned) or were never "
                f"there, so `cinegraph-oban migrate down --from-export {self.export_dir}` (down without it refuses "
                "unless the table was empty)"
            )
        else:
            out["state"] = "inconsistent"
            out["next"] = (
                "not a state `up` or `down` leaves: restore the missing legacy table from the export by hand (see "
                "docs/production-migration.md), then run `migrate status` again"
            )
        return out

    def _preflight(self, conn: psycopg.Connection[Any], summary: MigrationSummary) -> None:
        oban = self._detect(conn)
        _crash_point("preflight")
        missing_states = {"discarded", "completed"} - set(oban.states)
        if missing_states:
            raise UnsupportedSchemaError(f"{self.prefix}.oban_job_state lacks {sorted(missing_states)}")
        problems: list[str] = []
        for table in LEGACY_TABLES:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(self._sql("legacy_columns"), {"schema": self.schema, "table": table})
                found = {r["name"]: (r["type"], r["not_null"], r["default_value"]) for r in cur.fetchall()}
            seq = f"{table}_id_seq" if self.schema == "public" else f"{self.schema}.{table}_id_seq"
            expected = {
                name: (typ, notnull, default.replace("{seq}", seq) if default else None)
                for name, (typ, notnull, default) in EXPECTED_COLUMNS[table].items()
            }
            for name in expected.keys() - found.keys():
                problems.append(f"{table}.{name}: missing (expected {expected[name][0]})")
            for name in found.keys() - expected.keys():
                problems.append(f"{table}.{name}: unexpected column of type {found[name][0]}")
            for name in expected.keys() & found.keys():
                if found[name][:2] != expected[name][:2]:
                    problems.append(
                        f"{table}.{name}: {found[name][0]}{' NOT NULL' if found[name][1] else ''}, expected "
                        f"{expected[name][0]}{' NOT NULL' if expected[name][1] else ''}"
                    )
            stats = self._stats(conn, table)
            summary.rows[table] = int(stats["rows"])
            last_write = stats["last_write"]
            if last_write is not None and utc_now() - last_write < RECENT_WRITE:
                summary.warnings.append(
                    f"{table} was written to at {last_write:%Y-%m-%d %H:%M:%S} UTC: the old worker may still be "
                    "running; what it writes until the drop is archived too (the change capture), writes after "
                    "the drop fail"
                )
        if problems:
            raise VerificationError(
                "the legacy tables do not have the shape the original Ecto migrations gave them, so this "
                "migration would not carry them exactly; nothing was changed:\n  " + "\n  ".join(problems)
            )
        unreadable = []
        for table in LEGACY_TABLES:
            row = conn.execute(self._sql("unreadable_times", table=table), {}).fetchone()
            if row and row[0]:
                ids = ", ".join(map(str, row[1])) + (", ..." if row[0] > len(row[1]) else "")
                unreadable.append(f"{table}: {row[0]:,} rows (ids {ids})")
        if unreadable:
            raise VerificationError(
                "some legacy rows hold a time job meta cannot carry (infinity, -infinity, or a year outside "
                "1..9999, which Python cannot read back); nothing was changed:\n  "
                + "\n  ".join(unreadable)
                + f"\nSet those columns to a real time (or NULL where the column allows it) in {self.schema}, for "
                "example `UPDATE ... SET inserted_at = now() WHERE id IN (...)`, then run `migrate up` again"
            )

    @one_run
    def up(self) -> MigrationSummary:
        summary = MigrationSummary(action="up")
        started = time.perf_counter()
        self._analyzed = False
        with self._session(up=True) as conn:
            with self._running("state"):
                kinds = {t: self._kind(conn, t) for t in LEGACY_TABLES}
                if all(k != "r" for k in kinds.values()):
                    self._detect(conn)
                    if self._recorded(conn) is False:
                        raise VerificationError(
                            f"the legacy tables are not there, but schema_migrations has no version {self.version}: "
                            "they were removed some other way; nothing to do, and nothing was changed"
                        )
                    summary.already_done = True
                    summary.notices.append("already migrated: the legacy tables are gone and the migration is recorded")
                    return summary
                if any(k != "r" for k in kinds.values()):
                    raise VerificationError(
                        f"only one legacy table is a table ({kinds}); restore it or migrate by hand"
                    )
                captured_before = self._capture_present(conn)
            mark = time.perf_counter()

            def lap(step: str) -> None:
                nonlocal mark
                summary.timings[step] = summary.timings.get(step, 0.0) + time.perf_counter() - mark
                mark = time.perf_counter()

            with self._running("preflight"):
                self._preflight(conn, summary)
            lap("preflight")
            _crash_point("after-preflight")
            with self._running("capture"):
                self._create_capture_retried(conn, summary)
            lap("capture")
            with self._running("export"):
                self.export(summary.rows)  # counted by the preflight just now
            summary.export = str(self.export_dir / "manifest.json")
            lap("export")
            _crash_point("after-export")
            now = utc_now()
            with self._running("backfill"):
                progress = self._backfill_all(conn, summary, now)
            lap("backfill")
            _crash_point("after-backfill")
            archived = {table: progress[table].archived for table in LEGACY_TABLES}
            # Archival jobs found at the start without the capture were written by a run that could
            # not see the writes since: every one is compared with its row before verify.
            earlier_run = not captured_before and any(self._resumed_from.values())
            if earlier_run:
                summary.notices.append(
                    "archival jobs of an earlier run made without the change capture were there: every archival "
                    "job was compared with its row, and the ones that differed archived again"
                )
            with self._running("catch_up"):
                self._catch_up_all(conn, summary, now, archived, compare=earlier_run)
            lap("catch_up")
            _crash_point("after-catch-up")
            for attempt in range(3):
                with self._running("verify"):
                    summary.findings = self._verify()
                    lap("verify")
                    if not summary.findings or attempt == 2:
                        break
                    # Differences the capture cannot explain (rows written before it existed, by an
                    # earlier run): archived again, then compared once more.
                    self._catch_up_all(conn, summary, now, archived, compare=True)
                    lap("catch_up")
            if summary.findings:
                raise VerificationError(
                    "verify found differences; nothing was dropped:\n  " + "\n  ".join(map(str, summary.findings))
                )
            with self._running("catch_up"):  # what was written while verify ran: the lock's share stays small
                self._catch_up_all(conn, summary, now, archived)
            lap("catch_up")
            _crash_point("after-verify")
            for table in LEGACY_TABLES:
                summary.archived[table] = archived[table]
            with self._running("drop"):
                summary.lock_held_seconds = self._drop(conn, summary, now, archived)
            lap("drop")
            with self._running("merge"):
                for index, owned in conn.execute(self._sql("gin_indexes"), {}).fetchall():
                    if owned:
                        with contextlib.suppress(psycopg.Error):  # only keeps the lists short
                            conn.execute(self._sql("merge_pending_list"), {"index": str(index)})
        summary.seconds = time.perf_counter() - started
        return summary

    def _create_capture_retried(self, conn: psycopg.Connection[Any], summary: MigrationSummary) -> None:
        self._retried(
            summary,
            lambda: self._create_capture(conn),
            refused="could not add the change capture's triggers to the legacy tables",
            outcome="Nothing was written; run `migrate up` again when they are done",
            retrying="adding the change capture",
        )

    def _drop(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        now: datetime,
        archived: dict[str, int],
    ) -> float:
        return self._retried(
            summary,
            lambda: self._drop_once(conn, summary, now, dict(archived)),
            refused="could not lock the legacy tables",
            outcome="Nothing was dropped; run `migrate up` again (it finishes from there) when they are done",
            retrying="locking the legacy tables",
        )

    def _retried(
        self, summary: MigrationSummary, action: Callable[[], T], *, refused: str, outcome: str, retrying: str
    ) -> T:
        """`action`, a transaction that waits at most lock_timeout for the locks it needs, tried
        again with a growing pause while long transactions hold them (retries + 1 times)."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except pg_errors.LockNotAvailable:
                if attempt == self.retries:
                    raise LockNotAcquiredError(
                        f"{refused} within {self.lock_timeout_ms} ms, {self.retries + 1} times: long transactions "
                        f"hold them. {outcome}"
                    ) from None
                summary.warnings.append(f"lock timeout {retrying}, attempt {attempt + 1}; retrying")
                self._interrupted.wait(min(2**attempt * 0.5, 10))
                self._check_interrupt()
        raise AssertionError("unreachable")

    def _drop_once(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        now: datetime,
        archived: dict[str, int],
    ) -> float:
        with conn.transaction():
            conn.execute(self._sql("lock_timeout"), {})
            conn.execute(self._sql("lock_legacy_tables"), {})
            locked_at = time.perf_counter()
            for statement in self._statements("create_migration_record"):
                conn.execute(statement, {})
            for table in LEGACY_TABLES:
                before = summary.rows[table]
                row = conn.execute(self._sql("legacy_count", table=table), {}).fetchone()
                summary.rows[table] = int(row[0]) if row else 0
                # No write is in flight now: the last captured writes are applied, and checked
                # (none captured since the last round: nothing to plan under the lock).
                done = (
                    self._catch_up(conn, table, summary.rows[table], now)
                    if self._pending(conn, table)
                    else CaughtUp(0, [], 0, 0, [], False)
                )
                archived[table] += done.archived - done.removed
                summary.caught_up[table] = summary.caught_up.get(table, 0) + len(done.ids)
                if done.truncated:
                    raise VerificationError(
                        f"{table} was truncated while the migration ran, after its last comparison; nothing was "
                        "dropped. Run `migrate up` again: it compares every row again"
                    )
                findings = self._verify_ids(conn, table, done)
                if findings:
                    raise VerificationError(
                        "the last writes, archived under the lock, differ; nothing was dropped:\n  "
                        + "\n  ".join(map(str, findings))
                    )
                summary.archived[table] = archived[table]
                if archived[table] != summary.rows[table]:
                    raise VerificationError(
                        f"{table}: {summary.rows[table]} rows but {archived[table]} archival jobs after the final "
                        f"catch-up ({before} rows at preflight); nothing was dropped"
                    )
                conn.execute(self._sql("final_record", table=table), {"total": archived[table], "schema": self.schema})
            for statement in self._statements("drop_capture"):
                conn.execute(statement, {})
            if self.audit_log:
                for statement in self._statements("create_audit_log"):
                    conn.execute(statement, {})
            conn.execute(self._sql("drop_legacy_tables"), {})
            if self.compat_views:
                for statement in self._statements("create_compat_views"):
                    conn.execute(statement, {})
            if self._recorded(conn) is None:
                summary.notices.append(
                    f"{self.schema}.schema_migrations does not exist: the migration is not recorded for Ecto"
                )
            else:
                conn.execute(self._sql("lock_schema_migrations"), {})
                conn.execute(self._sql("record_migration"), {"version": self.version})
            _crash_point("before-commit")
            held = time.perf_counter() - locked_at
        return held

    @one_run
    def down(self, from_export: str | Path | None = None) -> MigrationSummary:
        """Return the database to its state before `up`.

        After a finished `up`: both tables recreated as the original Ecto migrations made them,
        every row restored from the archival jobs (or from the export), the id sequences where
        the application left them, the archival jobs and the migration record removed. After an
        `up` that stopped part-way (failed, refused, interrupted, killed): the archival jobs it
        wrote and the change capture removed, the legacy tables untouched. Never fewer rows than
        `up` carried: where archival jobs are gone (Oban's Pruner), it refuses and names the export.
        """
        summary = MigrationSummary(action="down")
        started = time.perf_counter()
        with self._session() as conn:
            detect(conn, self.prefix)
            kinds = {t: self._kind(conn, t) for t in LEGACY_TABLES}
            if all(k == "r" for k in kinds.values()):
                self._undo_unfinished(conn, summary)
                summary.seconds = time.perf_counter() - started
                return summary
            if any(k == "r" for k in kinds.values()):
                raise VerificationError(
                    f"only one legacy table is a table ({kinds}): not a state `up` leaves; restore the other from "
                    "the export by hand, or drop this one, then run `migrate down` again; nothing was changed"
                )
            exported = self._read_export(Path(from_export)) if from_export else None
            expected: dict[str, int] = {}
            sequences: dict[str, int | None] = {}
            for table in LEGACY_TABLES:
                archived = self._archived(conn, table).archived
                summary.archived[table] = archived
                expected[table], sequences[table] = self._expected_rows(conn, table, exported)
                record = self._migration_record(conn, table)
                self._recorded_empty[table] = record is not None and record[0] == 0
                if exported is None:
                    self._check_restorable(table, archived, expected[table])
            with conn.transaction():
                for statement in builder.statements("migration/drop_compat_views", **self._ctx()):
                    conn.execute(statement.encode(), {})
                create_legacy_tables(conn, self.schema)
                for table in LEGACY_TABLES:
                    if exported is None:
                        conn.execute(self._sql("restore_from_jobs", table=table), {})
                    else:
                        for chunk in chunks(exported[table], 10_000):
                            conn.execute(self._sql("restore_from_export", table=table), {"lines": chunk})
                    conn.execute(
                        self._sql("reset_sequence", table=table),
                        {"schema": self.schema, "table": table, "last_value": sequences[table]},
                    )
                    summary.rows[table] = int(self._stats(conn, table)["rows"])
                    if summary.rows[table] != expected[table]:
                        raise VerificationError(
                            f"{table}: restored {summary.rows[table]} rows, expected {expected[table]}; rolled back"
                        )
                    conn.execute(self._sql("delete_archived_jobs", table=table), {})
                conn.execute(self._sql("drop_migration_record"), {})
                if self._audit_log_is_ours(conn):
                    conn.execute(self._sql("drop_audit_log"), {})
                if self._recorded(conn) is not None:
                    conn.execute(self._sql("forget_migration"), {"version": self.version})
        summary.seconds = time.perf_counter() - started
        return summary

    def _undo_unfinished(self, conn: psycopg.Connection[Any], summary: MigrationSummary) -> None:
        """The legacy tables are there: `up` did not finish. Remove what it wrote (archival jobs,
        the change capture) in one transaction; the tables themselves are untouched."""
        captured = self._capture_present(conn)
        with conn.transaction():
            for table in LEGACY_TABLES:
                summary.rows[table] = int(self._stats(conn, table)["rows"])
                summary.removed[table] = self._archived(conn, table).archived
                conn.execute(self._sql("delete_archived_jobs", table=table), {})
            for statement in self._statements("drop_capture"):
                conn.execute(statement, {})
        removed = sum(summary.removed.values())
        if removed or captured:
            summary.notices.append(
                f"`up` had not finished: removed {removed:,} archival jobs"
                + (" and the change capture" if captured else "")
                + "; the legacy tables were not touched"
            )
        else:
            summary.notices.append(
                "nothing to roll back: the legacy tables are there, and no run of `up` left anything behind"
            )

    def _migration_record(self, conn: psycopg.Connection[Any], table: str) -> tuple[int, int | None] | None:
        exists = conn.execute(self._sql("migration_record_exists"), {"schema": self.schema}).fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(self._sql("migration_record", table=table), {}).fetchone()
        return (int(row[0]), None if row[1] is None else int(row[1])) if row else None

    def _check_restorable(self, table: str, archived: int, expected: int) -> None:
        """Refuse to restore fewer rows than `up` carried: archival jobs pruned, some or all."""
        restore = f"`cinegraph-oban migrate down --from-export {self.export_dir}`"
        if archived == expected and (archived or self._recorded_empty.get(table)):
            return
        if archived:
            raise VerificationError(
                f"{table}: only {archived:,} of its {expected:,} rows still have an archival job (Oban's Pruner "
                f"removes finished jobs after its max_age); nothing was restored. Restore from the export: {restore}"
            )
        exported = self._manifest().get("tables", {}).get(table, {}).get("rows")
        if exported == 0:
            return  # the table was empty: nothing to restore
        where = (
            f"the export in {self.export_dir} holds {exported:,} of its rows; restore from it: {restore}"
            if isinstance(exported, int)
            else f"there is no export in {self.export_dir}; pass the directory `migrate up` exported to: "
            "`cinegraph-oban migrate down --from-export <dir>`"
        )
        raise VerificationError(
            f"{table}: no archival job of it is left (Oban's Pruner removes finished jobs after its max_age), so "
            f"restoring from the jobs would recreate it empty; nothing was restored. {where}"
        )

    def _expected_rows(
        self, conn: psycopg.Connection[Any], table: str, exported: dict[str, list[str]] | None
    ) -> tuple[int, int | None]:
        """The rows to restore, and the id sequence's last value when it was recorded: from the
        migration record `up` left, else (a migration made before it) from the archival jobs."""
        if exported is not None:
            return len(exported[table]), None
        record = self._migration_record(conn, table)
        if record is not None:
            return record
        row = conn.execute(self._sql("expected_rows", table=table), {}).fetchone()
        rows = int(row[0]) if row and row[0] is not None else 0
        return rows, (int(row[1]) if row and row[1] is not None else None)

    def _audit_log_is_ours(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(self._sql("audit_log_comment"), {"schema": self.schema}).fetchone()
        return bool(row and row[0] and "cinegraph_oban" in row[0])
