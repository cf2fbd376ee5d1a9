"""A stateful model test: enqueueing, Oban running jobs, recording outcomes, pruning and migrating
up and down, checked after every step against a plain Python model of what the legacy tables
would hold."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cinegraph_oban import (
    FailedLookup,
    Job,
    Oban,
    SkippedImport,
    install,
    jobs,
    read_failed_lookups,
    read_skipped_imports,
    record_failed_lookup,
    record_skipped_import,
)
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables, create_legacy_tables, insert_legacy_row
from cinegraph_oban.oban import engine
from tests import strategies as s
from tests.helpers import TMDB

DSN: dict[str, str] = {}


class ImportLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg.connect(DSN["dsn"], autocommit=True)
        for schema in ("sm", "smjobs"):
            self.conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
        self.conn.execute("CREATE SCHEMA sm")
        install(self.conn, 14, "smjobs")
        create_legacy_tables(self.conn, "sm")
        self.conn.execute("CREATE TABLE sm.schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0))")
        self.oban = Oban(self.conn, prefix="smjobs")
        self.export = tempfile.mkdtemp()
        self.migration = RemoveRedundantImportTables(
            DSN["dsn"], prefix="smjobs", schema="sm", export_dir=Path(self.export), batch_size=3
        )
        # The model: what the legacy tables hold, and outcomes recorded in meta by the new code.
        self.legacy_failed: dict[int, FailedLookup] = {}
        self.legacy_skipped: dict[int, SkippedImport] = {}
        self.new_failed: dict[int, FailedLookup] = {}
        self.new_skipped: dict[int, SkippedImport] = {}
        self.migrated = False
        self.pruned_archives = False

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.export, ignore_errors=True)

    @precondition(lambda self: not self.migrated)
    @rule(record=s.failed_lookups(with_id=False))
    def old_worker_writes_a_failed_lookup(self, record: FailedLookup) -> None:
        row = replace(
            record, id=len(self.legacy_failed) + 1, metadata={"k": 1} if record.metadata is None else record.metadata
        )
        insert_legacy_row(self.conn, "sm", row)
        self.legacy_failed[row.id or 0] = replace(row, metadata=self._normalised(row.metadata))

    @precondition(lambda self: not self.migrated)
    @rule(record=s.skipped_imports(with_id=False))
    def old_worker_writes_a_skipped_import(self, record: SkippedImport) -> None:
        row = replace(record, id=len(self.legacy_skipped) + 1)
        insert_legacy_row(self.conn, "sm", row)
        self.legacy_skipped[row.id or 0] = replace(row, criteria_failed=self._normalised(row.criteria_failed))

    def _normalised(self, value: Any) -> Any:
        if value is None:
            return None
        return self.conn.execute("SELECT %s::jsonb", (psycopg.types.json.Jsonb(value),)).fetchone()[0]  # type: ignore[index]

    @rule(n=st.integers(0, 10**6))
    def enqueue(self, n: int) -> None:
        self.oban.insert(
            Job.new(
                TMDB,
                {"imdb_id": f"tt{n}", "source": "canonical_import"},
                meta={"import_type": "canonical"},
                unique=False,
            )
        )

    def _claim(self) -> Job | None:
        claimed = engine.fetch_jobs(self.conn, "tmdb", 1, prefix="smjobs")
        return claimed[0] if claimed else None

    @rule()
    def worker_finds_no_match(self) -> None:
        job = self._claim()
        if job is not None and job.id is not None:
            record = FailedLookup.new(job.args["imdb_id"], job.args["source"], title="T", year=2000)
            record_failed_lookup(self.conn, job.id, record, prefix="smjobs")
            engine.cancel_job(self.conn, job, "no_tmdb_match", prefix="smjobs")
            self.new_failed[job.id] = record

    @rule()
    def worker_soft_imports(self) -> None:
        job = self._claim()
        if job is not None and job.id is not None:
            record = SkippedImport.new(job.id, title="Soft", criteria_failed={"failed_criteria": ["votes"]})
            record_skipped_import(self.conn, job.id, record, prefix="smjobs")
            engine.complete_job(self.conn, job, prefix="smjobs")
            self.new_skipped[job.id] = record

    @rule()
    def worker_fully_imports(self) -> None:
        job = self._claim()
        if job is not None:
            engine.complete_job(self.conn, job, prefix="smjobs")

    @rule()
    def worker_errors(self) -> None:
        job = self._claim()
        if job is not None:
            engine.error_job(self.conn, job, "timeout", prefix="smjobs")
            self.conn.execute(
                "UPDATE smjobs.oban_jobs SET scheduled_at = scheduled_at - interval '1 hour' WHERE id = %s", (job.id,)
            )
            engine.stage_jobs(self.conn, prefix="smjobs")

    @rule()
    def pruner_runs(self) -> None:
        self.conn.execute(
            "UPDATE smjobs.oban_jobs SET scheduled_at = scheduled_at - interval '8 days', "
            "completed_at = completed_at - interval '8 days', cancelled_at = cancelled_at - interval '8 days', "
            "discarded_at = discarded_at - interval '8 days'"
        )
        engine.prune_jobs(self.conn, max_age=7 * 86400, prefix="smjobs")
        self.new_failed.clear()
        self.new_skipped.clear()
        if self.migrated:
            self.pruned_archives = True

    @precondition(lambda self: not self.migrated)
    @rule()
    def migrate_up(self) -> None:
        self.migration.up()
        self.migrated = True

    @precondition(lambda self: self.migrated)
    @rule()
    def migrate_down(self) -> None:
        self.migration.down(from_export=self.export if self.pruned_archives else None)
        self.migrated = False
        self.pruned_archives = False

    @invariant()
    def queries_and_tables_match_the_model(self) -> None:
        new_failed = {
            r.imdb_id: r
            for r in read_failed_lookups(
                self.conn,
                jobs("smjobs")
                .meta_contains({"legacy_id": None})
                .meta(failure_reason="no_tmdb_match")
                .states("cancelled"),
            )
        }
        assert sorted(new_failed) == sorted(r.imdb_id for r in self.new_failed.values())
        new_skipped = list(
            read_skipped_imports(
                self.conn,
                jobs("smjobs").meta_contains({"legacy_id": None}).meta(import_type="soft").states("completed"),
            )
        )
        assert sorted(r.tmdb_id for r in new_skipped) == sorted(r.tmdb_id for r in self.new_skipped.values())
        if self.migrated:
            if not self.pruned_archives:
                archived = list(
                    read_failed_lookups(self.conn, jobs("smjobs").args(archived_from="failed_imdb_lookups"))
                )
                assert sorted(archived, key=lambda r: r.id or 0) == [
                    self.legacy_failed[k] for k in sorted(self.legacy_failed)
                ]
                soft = list(read_skipped_imports(self.conn, jobs("smjobs").args(archived_from="skipped_imports")))
                assert sorted(soft, key=lambda r: r.id or 0) == [
                    self.legacy_skipped[k] for k in sorted(self.legacy_skipped)
                ]
        else:
            ids = [r[0] for r in self.conn.execute("SELECT id FROM sm.failed_imdb_lookups ORDER BY id")]
            assert ids == sorted(self.legacy_failed)
            assert self.conn.execute("SELECT count(*) FROM sm.skipped_imports").fetchone() == (
                len(self.legacy_skipped),
            )


ImportLifecycle.TestCase.settings = settings(max_examples=8, stateful_step_count=12, deadline=None)


def test_import_lifecycle(db_dsn: str) -> None:
    DSN["dsn"] = db_dsn
    ImportLifecycle.TestCase("runTest").runTest()
