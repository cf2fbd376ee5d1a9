"""The outcome readers read the jobs the Elixir TMDbDetailsWorker finished itself.

Each job is written by plain SQL the way Elixir Oban leaves it: inserted with the args and meta
of `TMDbDetailsWorker.new/2` (queue tmdb, max_attempts 5), claimed (executing, attempt 1), the
worker's outcome merged into meta (`meta || patch`, legacy-tables.md), then cancelled (a failed
lookup returns `{:cancel, ...}`) with one errors entry, or completed (a soft import). Nothing in
these rows comes from this library's record_* functions.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cinegraph_oban import FailedLookup, SkippedImport, ValidationError
from cinegraph_oban.meta.queries import failed_lookups, jobs, read_failed_lookups, read_skipped_imports
from conftest import ObanDatabase
from tests.helpers import TMDB as WORKER
from tests.helpers import CliResult, run_cli

ENQUEUE_META = {"import_type": "canonical", "source_list": "1001_movies"}
CANONICAL_ARGS = {
    "imdb_id": "tt0111161",
    "source": "canonical_import",
    "source_key": "1001_movies",
    "title": "The Shawshank Redemption",
    "year": 1994,
    "metadata": {"scraped_title": "The Shawshank Redemption", "scraped_year": 1994},
    "canonical_sources": {"1001_movies": {"included": True}},
}
CANCEL_ERROR = (
    '** (Oban.PerformError) Cinegraph.Workers.TMDbDetailsWorker failed with {:cancel, "No TMDb match for tt0111161"}'
)


def _enqueue(oban: ObanDatabase, args: dict[str, Any], meta: dict[str, Any]) -> int:
    row = oban.conn.execute(
        "INSERT INTO oban_jobs (state, queue, worker, args, meta, max_attempts, inserted_at, scheduled_at) "
        "VALUES ('available', 'tmdb', %s, %s::jsonb, %s::jsonb, 5, "
        "now() AT TIME ZONE 'utc' - interval '90 seconds', now() AT TIME ZONE 'utc' - interval '90 seconds') "
        "RETURNING id",
        (WORKER, json.dumps(args), json.dumps(meta)),
    ).fetchone()
    assert row is not None
    job_id = int(row[0])
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'executing', attempt = 1, attempted_at = now() AT TIME ZONE 'utc' - interval '30 seconds', "
        "attempted_by = ARRAY['web-1', 'f1e2d3c4'] WHERE id = %s",
        (job_id,),
    )
    return job_id


def _merge_meta(oban: ObanDatabase, job_id: int, patch: dict[str, Any]) -> None:
    # What the fixed worker does (legacy-tables.md): merge atomically, never replace.
    oban.conn.execute("UPDATE oban_jobs SET meta = meta || %s::jsonb WHERE id = %s", (json.dumps(patch), job_id))


def _cancel(oban: ObanDatabase, job_id: int) -> None:
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'cancelled', cancelled_at = now() AT TIME ZONE 'utc', "
        "errors = array_append(errors, jsonb_build_object('attempt', attempt, 'at', now() AT TIME ZONE 'utc', 'error', %s::text)) "
        "WHERE id = %s",
        (CANCEL_ERROR, job_id),
    )


def _complete(oban: ObanDatabase, job_id: int) -> None:
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'completed', completed_at = now() AT TIME ZONE 'utc' WHERE id = %s", (job_id,)
    )


def _job(oban: ObanDatabase, job_id: int) -> dict[str, Any]:
    [row] = oban.rows(f"id = {job_id}")
    return row


def _seconds(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def test_the_design_documents_minimal_meta_is_completed_from_the_args(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, CANONICAL_ARGS, ENQUEUE_META)
    _merge_meta(
        oban,
        job_id,
        {"status": "failed", "failure_reason": "no_tmdb_match", "imdb_id": "tt0111161", "title": "Shawshank"},
    )
    _cancel(oban, job_id)
    row = _job(oban, job_id)
    assert row["state"] == "cancelled" and len(row["errors"]) == 1 and row["meta"]["source_list"] == "1001_movies"

    [found] = read_failed_lookups(oban.conn)
    assert found == FailedLookup(
        imdb_id="tt0111161",
        title="Shawshank",  # what the worker recorded wins over what it was enqueued with
        year=1994,
        source="canonical_import",
        source_key="1001_movies",
        reason="no_tmdb_match",
        metadata=CANONICAL_ARGS["metadata"],
        retry_count=None,
        last_retry_at=None,
        inserted_at=_seconds(row["inserted_at"]),
        updated_at=_seconds(row["cancelled_at"]),
        id=None,
        unknown=("retry_count", "last_retry_at"),
    )


def test_minimal_meta_on_a_job_whose_args_hold_only_the_imdb_id(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, {"imdb_id": "tt7654321"}, {})
    _merge_meta(oban, job_id, {"failure_reason": "no_tmdb_match", "imdb_id": "tt7654321", "title": None})
    _cancel(oban, job_id)
    row = _job(oban, job_id)

    [found] = read_failed_lookups(oban.conn)
    assert (found.imdb_id, found.reason, found.title) == ("tt7654321", "no_tmdb_match", None)
    assert found.source is None and found.year is None and found.source_key is None and found.metadata is None
    assert found.unknown == ("year", "source", "source_key", "metadata", "retry_count", "last_retry_at")
    assert "title" not in found.unknown  # the worker said: no title
    assert (found.inserted_at, found.updated_at) == (_seconds(row["inserted_at"]), _seconds(row["cancelled_at"]))


def test_the_full_meta_the_current_worker_writes(oban: ObanDatabase) -> None:
    args = {
        "imdb_id": "tt0050083",
        "source": "oscar_import",
        "source_key": "oscar",
        "title": "12 Angry Men",
        "year": 1957,
        "metadata": {"film_title": "12 Angry Men", "ceremony_year": 1958, "category": "Best Picture"},
    }
    job_id = _enqueue(oban, args, {"import_type": "oscar"})
    patch = {"status": "failed", "failure_reason": "no_tmdb_match", **args}
    _merge_meta(oban, job_id, patch)
    _cancel(oban, job_id)
    row = _job(oban, job_id)
    assert row["meta"] == {"import_type": "oscar", **patch}

    [found] = read_failed_lookups(oban.conn, failed_lookups(source="oscar_import"))
    assert found == FailedLookup(
        imdb_id="tt0050083",
        title="12 Angry Men",
        year=1957,
        source="oscar_import",
        source_key="oscar",
        reason="no_tmdb_match",
        metadata=args["metadata"],
        retry_count=None,
        inserted_at=_seconds(row["inserted_at"]),
        updated_at=_seconds(row["cancelled_at"]),
        unknown=("retry_count", "last_retry_at"),
    )


def test_a_null_source_in_meta_is_unknown_not_refused(oban: ObanDatabase) -> None:
    # A worker writing `source: args["source"]` for a job enqueued without one writes null.
    job_id = _enqueue(oban, {"imdb_id": "tt1"}, {})
    _merge_meta(oban, job_id, {"failure_reason": "no_tmdb_match", "imdb_id": "tt1", "source": None})
    _cancel(oban, job_id)
    [found] = read_failed_lookups(oban.conn)
    assert found.source is None and "source" in found.unknown


def test_a_discarded_lookup_of_the_old_worker_code_reads_too(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, CANONICAL_ARGS, {})
    _merge_meta(oban, job_id, {"failure_reason": "no_tmdb_match", "imdb_id": "tt0111161"})
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'discarded', discarded_at = now() AT TIME ZONE 'utc' WHERE id = %s", (job_id,)
    )
    [found] = read_failed_lookups(oban.conn)
    assert (found.source, found.title, found.year) == ("canonical_import", "The Shawshank Redemption", 1994)
    assert found.updated_at == _seconds(_job(oban, job_id)["discarded_at"])


def test_a_job_naming_no_imdb_id_anywhere_is_still_refused(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, {"tmdb_id": 5}, {})
    _merge_meta(oban, job_id, {"failure_reason": "no_tmdb_match"})
    _cancel(oban, job_id)
    with pytest.raises(
        ValidationError, match=rf"meta of job {job_id} \(failed_imdb_lookups record\): imdb_id: is missing"
    ):
        list(read_failed_lookups(oban.conn))


def test_a_soft_import_as_the_worker_completes_it(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, {"tmdb_id": 278}, {"import_type": "soft"})
    criteria = {"tmdb_id": 278, "failed_criteria": ["votes"], "missing_data": {"poster": False, "votes": True}}
    _merge_meta(
        oban,
        job_id,
        {
            "status": "imported",
            "import_type": "soft",
            "movie_id": 42,
            "movie_title": "The Shawshank Redemption",
            "tmdb_id": 278,
            "quality_criteria_failed": criteria,
            "reason": "quality_criteria",
        },
    )
    _complete(oban, job_id)
    row = _job(oban, job_id)

    [found] = read_skipped_imports(oban.conn)
    assert found == SkippedImport(
        tmdb_id=278,
        title="The Shawshank Redemption",
        reason="quality_criteria",
        criteria_failed=criteria,
        checked_at=row["completed_at"],
        inserted_at=row["inserted_at"],
    )
    assert found.unknown == ()


def test_a_soft_import_with_less_meta_takes_tmdb_id_from_args(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, {"tmdb_id": 603}, {})
    _merge_meta(oban, job_id, {"status": "imported", "import_type": "soft", "movie_id": 9})
    _complete(oban, job_id)
    [found] = read_skipped_imports(oban.conn)
    assert (found.tmdb_id, found.title, found.reason, found.criteria_failed) == (603, None, None, None)
    assert found.unknown == ("title", "reason", "criteria_failed")


def test_the_cli_failures_command_reads_the_workers_jobs(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, CANONICAL_ARGS, ENQUEUE_META)
    _merge_meta(oban, job_id, {"status": "failed", "failure_reason": "no_tmdb_match", "imdb_id": "tt0111161"})
    _cancel(oban, job_id)
    out = run_cli("failures", "--database-url", oban.dsn, "--json")
    assert out.exit_code == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert (entry["imdb_id"], entry["source"], entry["source_key"], entry["year"]) == (
        "tt0111161",
        "canonical_import",
        "1001_movies",
        1994,
    )


def test_records_this_library_wrote_still_say_nothing_unknown(oban: ObanDatabase) -> None:
    from cinegraph_oban import record_failed_lookup

    job_id = _enqueue(oban, CANONICAL_ARGS, ENQUEUE_META)
    record = FailedLookup.new("tt0111161", "festival_import", title="Other", retry_count=3)
    record_failed_lookup(oban.conn, job_id, record)
    _cancel(oban, job_id)
    [found] = read_failed_lookups(oban.conn, jobs().where(jobs().table.c.id == job_id))
    # Every key is in meta, so nothing comes from the args (which say canonical_import, 1994).
    assert found == record and found.unknown == ()


# After `migrate up`: the archival jobs are finished TMDbDetailsWorker jobs, and Oban's Pruner
# deletes finished jobs past its max_age. `migrate verify` must say so, not report data loss.

#: Oban 2.23.1's Pruner (Oban.Engines.Basic.prune_jobs/3), as SQL: completed jobs by
#: scheduled_at, cancelled by cancelled_at, discarded by discarded_at, at most `limit` a run.
PRUNE = """
DELETE FROM oban_jobs WHERE id IN (
  SELECT id FROM oban_jobs
  WHERE ((state = 'completed' AND scheduled_at < now() AT TIME ZONE 'utc' - make_interval(secs => %(max_age)s))
      OR (state = 'cancelled' AND cancelled_at < now() AT TIME ZONE 'utc' - make_interval(secs => %(max_age)s))
      OR (state = 'discarded' AND discarded_at < now() AT TIME ZONE 'utc' - make_interval(secs => %(max_age)s)))
    AND queue IS NOT NULL
  LIMIT %(limit)s)
"""
SEVEN_DAYS = 7 * 86_400
ROWS = 300
LEGACY = ("failed_imdb_lookups", "skipped_imports")


def _legacy(oban: ObanDatabase) -> None:
    from dataclasses import replace

    from cinegraph_oban.migration.remove_tables import create_legacy_tables, insert_legacy_row

    create_legacy_tables(oban.conn)
    for n in range(1, ROWS + 1):
        failed = FailedLookup.new(f"tt{n:07d}", "canonical_import", title=f"Film {n}", metadata={"n": n})
        insert_legacy_row(oban.conn, "public", replace(failed, id=n))
        insert_legacy_row(oban.conn, "public", replace(SkippedImport.new(n, title=f"Soft {n}"), id=n))
    for table in ("failed_imdb_lookups", "skipped_imports"):
        oban.conn.execute(f"SELECT setval('{table}_id_seq', {ROWS})".encode())


def _migrated(oban: ObanDatabase, tmp_path: Path) -> Any:
    from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables

    _legacy(oban)
    migration = RemoveRedundantImportTables(oban.dsn, export_dir=tmp_path / "export", batch_size=100)
    migration.up()
    assert oban.count("args ? 'archived_from'") == 2 * ROWS
    return migration


def _days_pass(oban: ObanDatabase, days: int, where: str = "true") -> None:
    """The archival jobs grow older: their timestamps move `days` into the past."""
    shift = f"interval '{days} days'"
    oban.conn.execute(
        f"UPDATE oban_jobs SET inserted_at = inserted_at - {shift}, scheduled_at = scheduled_at - {shift}, "
        f"attempted_at = attempted_at - {shift}, completed_at = completed_at - {shift}, "
        f"discarded_at = discarded_at - {shift} WHERE args ? 'archived_from' AND ({where})".encode()
    )


def _prune(oban: ObanDatabase, max_age: int = SEVEN_DAYS, limit: int = 10_000) -> int:
    return oban.conn.execute(PRUNE.encode(), {"max_age": max_age, "limit": limit}).rowcount


def _verify_cli(oban: ObanDatabase, export_dir: Path) -> CliResult:
    return run_cli("migrate", "verify", "--database-url", oban.dsn, "--export-dir", str(export_dir))


def test_verify_after_the_pruner_says_pruned_and_names_the_export(oban: ObanDatabase, tmp_path: Path) -> None:
    migration = _migrated(oban, tmp_path)
    assert _prune(oban) == 0  # just archived: younger than max_age
    assert migration.verify().findings == []
    _days_pass(oban, 8)
    assert _prune(oban) == 2 * ROWS
    assert oban.count("args ? 'archived_from'") == 0

    summary = migration.verify()
    assert summary.findings == []
    assert summary.pruned == {"failed_imdb_lookups": ROWS, "skipped_imports": ROWS}
    assert summary.archived == {"failed_imdb_lookups": 0, "skipped_imports": 0}
    [failed, skipped] = summary.notices
    export = tmp_path / "export"
    for notice, table in ((failed, "failed_imdb_lookups"), (skipped, "skipped_imports")):
        assert notice.startswith(f"{table}: {ROWS} of its {ROWS} exported rows no longer have an archival job")
        assert "Not data loss" in notice and "pruned by Oban's Pruner" in notice and "7 days" in notice
        assert str(export / f"{table}.jsonl.gz") in notice and f"--from-export {export}" in notice
    assert "discarded jobs once their discarded_at" in failed
    assert "completed jobs once their scheduled_at" in skipped

    result = _verify_cli(oban, export)
    assert result.exit_code == 0, result.stderr
    assert "pruned by Oban's Pruner" in result.stdout and "no findings" in result.stdout
    assert "missing" not in result.stdout + result.stderr


def test_the_pruner_part_way_through_older_runs_is_pruning_too(oban: ObanDatabase, tmp_path: Path) -> None:
    # A resumed `up` archives in id order, one timestamp per run: the older run's jobs go first.
    migration = _migrated(oban, tmp_path)
    _days_pass(oban, 8, "(args->>'legacy_id')::bigint <= 100")
    assert _prune(oban) == 200
    summary = migration.verify()
    assert summary.findings == [] and summary.pruned == {"failed_imdb_lookups": 100, "skipped_imports": 100}
    assert all(
        n.startswith(f"{t}: 100 of its {ROWS} exported rows") for n, t in zip(summary.notices, LEGACY, strict=True)
    )


def test_jobs_deleted_otherwise_and_changed_jobs_stay_findings(oban: ObanDatabase, tmp_path: Path) -> None:
    migration = _migrated(oban, tmp_path)
    oban.conn.execute(
        'DELETE FROM oban_jobs WHERE args @> \'{"archived_from": "failed_imdb_lookups"}\' '
        "AND (args->>'legacy_id')::bigint IN (150, 151)"
    )
    oban.conn.execute(
        'UPDATE oban_jobs SET meta = meta || \'{"movie_title": "tampered"}\' '
        'WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 9}\''
    )
    summary = migration.verify()
    found = {(f.table, f.kind): (f.rows, f.example_ids) for f in summary.findings}
    assert found == {("failed_imdb_lookups", "missing"): (2, (150, 151)), ("skipped_imports", "different"): (1, (9,))}
    assert summary.pruned == {}
    [notice] = summary.notices
    assert "not in the pattern Oban's Pruner leaves" in notice and "export holds every one of them" in notice
    result = _verify_cli(oban, tmp_path / "export")
    assert result.exit_code == 1 and "missing" in result.stderr and "different" in result.stderr


def test_pruned_and_a_real_difference_together_still_fail(oban: ObanDatabase, tmp_path: Path) -> None:
    migration = _migrated(oban, tmp_path)
    _days_pass(oban, 8, 'args @> \'{"archived_from": "failed_imdb_lookups"}\'')
    assert _prune(oban) == ROWS
    oban.conn.execute(
        'UPDATE oban_jobs SET meta = meta || \'{"movie_title": "tampered"}\' '
        'WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 4}\''
    )
    summary = migration.verify()
    assert [(f.table, f.kind, f.example_ids) for f in summary.findings] == [("skipped_imports", "different", (4,))]
    assert summary.pruned == {"failed_imdb_lookups": ROWS}
    result = _verify_cli(oban, tmp_path / "export")
    assert result.exit_code == 1 and "pruned by Oban's Pruner" in result.stdout and "different" in result.stderr


def test_pruned_jobs_without_an_export_say_nothing_was_verified(oban: ObanDatabase, tmp_path: Path) -> None:
    from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables

    _migrated(oban, tmp_path)
    _days_pass(oban, 8)
    _prune(oban)
    summary = RemoveRedundantImportTables(oban.dsn, export_dir=tmp_path / "elsewhere").verify()
    assert summary.findings == [] and summary.pruned == {}
    assert len(summary.notices) == 2
    assert all("nothing was verified" in n and "Pass --export-dir" in n for n in summary.notices)


def test_a_null_in_meta_for_a_not_null_column_falls_back_to_the_args(oban: ObanDatabase) -> None:
    job_id = _enqueue(oban, {"imdb_id": "tt0111161", "source": "canonical_import", "title": "T"}, {})
    _merge_meta(oban, job_id, {"failure_reason": "no_tmdb_match", "imdb_id": None, "source": None, "title": None})
    _cancel(oban, job_id)
    [found] = read_failed_lookups(oban.conn)
    # imdb_id and source were NOT NULL: meta's null there says nothing, the args do; title could be NULL.
    assert (found.imdb_id, found.source, found.title) == ("tt0111161", "canonical_import", None)
