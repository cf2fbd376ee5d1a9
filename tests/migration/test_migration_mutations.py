"""The migration's SQL against its contract, row by row (the checks the SQL-template mutation tester,
tests/mutation/sql_mutants.py, showed were missing): the archival jobs hold exactly the Python meta
contract, verify and the live checks report every kind of difference, and nothing that is not an
archival job is counted, compared, restored or deleted."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import psycopg

from cinegraph_oban import FailedLookup, Job, SkippedImport, install, to_meta
from cinegraph_oban.migration.legacy import create_legacy_tables, insert_legacy_row
from cinegraph_oban.migration.steps import DEFAULT_VERSION
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.model.workers import TMDB_DETAILS_WORKER
from conftest import ObanDatabase
from tests.helpers import ctrl_c_as_in_a_terminal, migration, sample_rows, setup_legacy, snapshot

WORKER = TMDB_DETAILS_WORKER.name
FAILED = [
    FailedLookup(
        id=1,
        imdb_id="tt0111161",
        source="canonical_import",
        reason="no_tmdb_match",
        title="The Shawshank Redemption",
        year=1994,
        source_key="1001_movies",
        metadata={"list_position": 7},
        retry_count=2,
        last_retry_at=datetime(2025, 8, 5, 10, 0, 1),
        inserted_at=datetime(2025, 8, 4, 9, 30),
        updated_at=datetime(2025, 8, 4, 9, 30, 2),
    ),
    FailedLookup(
        id=2,
        imdb_id="tt0068646",
        source="oscar_import",
        reason="tmdb_error",
        metadata=None,
        retry_count=None,
        inserted_at=datetime(2025, 8, 4, 9, 31),
        updated_at=datetime(2025, 8, 4, 9, 31),
    ),
]
SKIPPED = [
    SkippedImport(
        id=1,
        tmdb_id=278,
        title="The Shawshank Redemption",
        reason="quality_criteria",
        criteria_failed={"failed_criteria": ["votes"]},
        checked_at=datetime(2025, 8, 3, 12, 53, 42, 123456),
        inserted_at=datetime(2025, 8, 3, 12, 53, 42, 5),
    ),
    SkippedImport(id=2, tmdb_id=238, reason=None, criteria_failed=None, inserted_at=datetime(2025, 8, 3, 12, 53, 42)),
]


def legacy_rows(conn: psycopg.Connection[Any]) -> None:
    for record in [*FAILED, *SKIPPED][::-1]:  # the table's physical order is not its id order
        insert_legacy_row(conn, "legacy", record)


def archival_jobs(db: ObanDatabase, table: str) -> list[dict[str, Any]]:
    return db.rows(f'args @> \'{{"archived_from": "{table}"}}\'')


def test_archival_jobs_hold_the_python_meta_contract_exactly(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    legacy_rows(oban.conn)
    started = utc_now()
    migration(oban.dsn, tmp_path, schema="legacy").up()
    finished = utc_now()
    for table, records, state in (
        ("failed_imdb_lookups", FAILED, "discarded"),
        ("skipped_imports", SKIPPED, "completed"),
    ):
        jobs = sorted(archival_jobs(oban, table), key=lambda j: j["args"]["legacy_id"])
        # The SQL writes, key for key and to the character, what records.to_meta writes.
        assert [j["meta"] for j in jobs] == [to_meta(r) for r in records]
        for job, record in zip(jobs, records, strict=True):
            assert job["args"] == {"archived_from": table, "legacy_id": record.id, "legacy_rows": len(records)}
            assert (job["state"], job["queue"], job["worker"]) == (state, TMDB_DETAILS_WORKER.queue, WORKER)
            assert (job["attempt"], job["max_attempts"]) == (1, TMDB_DETAILS_WORKER.max_attempts)
            assert job["tags"] == ["legacy-import-archive"]
            # The job finished at migration time, so Oban's Pruner counts its max_age from now.
            finished_at = job[f"{state}_at"]
            assert started <= finished_at <= finished
            assert job["scheduled_at"] == job["attempted_at"] == finished_at
            assert job["completed_at" if state == "discarded" else "discarded_at"] is None


def test_the_export_lists_rows_in_id_order_and_names_sql_null_jsonb(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    for n, metadata in ((3, {"a": 1}), (1, None), (2, None)):  # written out of id order
        row = replace(FAILED[1], id=n, imdb_id=f"tt{n}", metadata=metadata)
        insert_legacy_row(oban.conn, "legacy", row, json_null=n == 2)
    insert_legacy_row(oban.conn, "legacy", SkippedImport(tmdb_id=5, inserted_at=datetime(2025, 1, 1), id=4))
    insert_legacy_row(
        oban.conn, "legacy", SkippedImport(tmdb_id=6, inserted_at=datetime(2025, 1, 1), id=5), json_null=True
    )
    migration(oban.dsn, tmp_path, schema="legacy").up()
    lines: dict[str, list[Any]] = {}
    for table in ("failed_imdb_lookups", "skipped_imports"):
        with gzip.open(tmp_path / "export" / f"{table}.jsonl.gz", "rt") as export:
            lines[table] = [json.loads(line) for line in export]
    assert [(e["row"]["id"], e["sql_nulls"]) for e in lines["failed_imdb_lookups"]] == [
        (1, ["metadata"]),
        (2, []),
        (3, []),
    ]
    assert [(e["row"]["id"], e["sql_nulls"]) for e in lines["skipped_imports"]] == [(4, ["criteria_failed"]), (5, [])]


def test_verify_reports_each_kind_of_difference_in_order(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 25)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    with psycopg.connect(oban.dsn, autocommit=True) as conn:
        for table in ("failed_imdb_lookups", "skipped_imports"):
            m._backfill(conn, table, 25, utc_now(), batch=100)
    oban.conn.execute("UPDATE legacy.failed_imdb_lookups SET retry_count = 9 WHERE id > 2")  # 23 rows differ
    oban.conn.execute("DELETE FROM legacy.failed_imdb_lookups WHERE id = 1")  # its job is now orphaned
    oban.conn.execute(
        "INSERT INTO oban_jobs (state, queue, worker, args, meta, tags, max_attempts, attempt, completed_at) "
        "SELECT state, queue, worker, args, meta, tags, max_attempts, attempt, completed_at FROM oban_jobs "
        'WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 5}\''
    )
    oban.conn.execute('DELETE FROM oban_jobs WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 7}\'')
    findings = [(f.table, f.kind, f.rows, f.example_ids) for f in m.verify().findings]
    assert findings == [
        ("failed_imdb_lookups", "different", 23, tuple(range(3, 23))),  # the first 20 ids, of 23
        ("failed_imdb_lookups", "orphaned", 1, (1,)),
        ("skipped_imports", "duplicated", 1, (5,)),
        ("skipped_imports", "missing", 1, (7,)),
    ]


def test_verify_before_up_names_times_python_cannot_read(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 26)
    conn = oban.conn
    # The last readable instants, on either side: not findings.
    conn.execute("UPDATE legacy.skipped_imports SET checked_at = '9999-12-31 23:59:59.999999' WHERE id = 1")
    conn.execute("UPDATE legacy.skipped_imports SET inserted_at = '0001-01-01 00:00:00' WHERE id = 2")
    # One bound out on its own, in each column that can hold it.
    conn.execute("UPDATE legacy.skipped_imports SET checked_at = '10000-01-01' WHERE id = 3")
    conn.execute("UPDATE legacy.skipped_imports SET inserted_at = '0001-12-31 23:59:59 BC' WHERE id = 4")
    conn.execute("UPDATE legacy.failed_imdb_lookups SET last_retry_at = '0001-12-31 23:59:59 BC' WHERE id = 3")
    conn.execute("UPDATE legacy.failed_imdb_lookups SET updated_at = '10000-01-01' WHERE id BETWEEN 4 AND 25")
    findings = [
        (f.table, f.kind, f.rows, f.example_ids)
        for f in migration(oban.dsn, tmp_path, schema="legacy").verify().findings
    ]
    kind = "time outside years 1..9999 (unreadable in Python)"
    # 23 rows, the first 20 ids named. A BC date also loses its era in the meta's ISO text.
    assert findings == [
        ("failed_imdb_lookups", kind, 23, tuple(range(3, 23))),
        ("failed_imdb_lookups", "would not round-trip", 1, (3,)),
        ("skipped_imports", kind, 2, (3, 4)),
        ("skipped_imports", "would not round-trip", 1, (4,)),
    ]


def test_live_checks_name_new_worker_outcomes_missing_a_contract_key(oban: ObanDatabase, tmp_path: Path) -> None:
    client = oban.client()
    tmdb_ids = count(1)

    def job(meta: dict[str, Any], state: str, worker: str = WORKER, **args: Any) -> int:
        inserted = client.insert(Job.new(worker, {"tmdb_id": next(tmdb_ids), **args}, meta=meta))
        oban.conn.execute("UPDATE oban_jobs SET state = %s WHERE id = %s", (state, inserted.id))
        return int(inserted.id or 0)

    complete = {"failure_reason": "no_tmdb_match", "imdb_id": "tt1", "source": "canonical_import"}
    soft = {"import_type": "soft", "tmdb_id": 1, "reason": "quality_criteria", "quality_criteria_failed": {}}
    job(complete, "discarded")  # fine
    job(soft, "completed")  # fine
    no_source = [job({k: v for k, v in complete.items() if k != "source"}, "cancelled") for _ in range(21)]
    no_imdb_id = job({k: v for k, v in complete.items() if k != "imdb_id"}, "discarded")
    completed_failure = job(complete, "completed")
    bare_soft = job({"import_type": "soft"}, "completed")
    job({"import_type": "soft"}, "executing")  # no outcome yet
    job({"failure_reason": "no_tmdb_match"}, "discarded", worker="MyApp.OtherWorker")  # not the worker
    job({"failure_reason": "no_tmdb_match"}, "discarded", archived_from="failed_imdb_lookups")  # an archival job
    old = job({"failure_reason": "no_tmdb_match"}, "discarded")
    oban.conn.execute("UPDATE oban_jobs SET inserted_at = inserted_at - interval '8 days' WHERE id = %s", (old,))
    findings = [(f.kind, f.rows, f.example_ids) for f in migration(oban.dsn, tmp_path).verify().findings]
    assert findings == [
        ("failed lookup in state completed (expected cancelled or discarded)", 1, (completed_failure,)),
        ("failed lookup without imdb_id", 1, (no_imdb_id,)),
        ("failed lookup without source", 21, tuple(no_source[:20])),
        ("soft import without quality_criteria_failed", 1, (bare_soft,)),
        ("soft import without reason", 1, (bare_soft,)),
        ("soft import without tmdb_id", 1, (bare_soft,)),
    ]


def test_jobs_that_only_look_archival_are_never_counted_compared_or_deleted(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 5)
    before = snapshot(oban.conn, "legacy")
    foreign = oban.client().insert(
        Job.new("MyApp.ArchiveWorker", {"archived_from": "failed_imdb_lookups", "legacy_id": 1, "legacy_rows": 99})
    )
    m = migration(oban.dsn, tmp_path, schema="legacy")
    summary = m.up()
    assert summary.archived == {"failed_imdb_lookups": 5, "skipped_imports": 5}
    assert m.status()["tables"]["failed_imdb_lookups"]["archived_jobs"] == 5
    assert m.verify().findings == []
    m.down()
    assert snapshot(oban.conn, "legacy") == before
    left = oban.rows("args ? 'archived_from'")
    assert [r["id"] for r in left] == [foreign.id] and left[0]["args"]["legacy_rows"] == 99


def test_preflight_warns_about_recent_writes_to_either_column(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    # A column added and dropped again leaves the table in its original shape.
    oban.conn.execute("ALTER TABLE legacy.skipped_imports ADD COLUMN note text")
    oban.conn.execute("ALTER TABLE legacy.skipped_imports DROP COLUMN note")
    long_ago, now = datetime(2025, 1, 1), utc_now().replace(microsecond=0)
    insert_legacy_row(oban.conn, "legacy", FailedLookup("tt1", "x", "no_tmdb_match", long_ago, now, id=1))
    insert_legacy_row(oban.conn, "legacy", SkippedImport(tmdb_id=1, inserted_at=now, checked_at=long_ago, id=1))
    summary = migration(oban.dsn, tmp_path, schema="legacy").up()
    assert [w.split(" was written to at ")[0] for w in summary.warnings] == ["failed_imdb_lookups", "skipped_imports"]
    # Only old rows: no warning (another schema, with its own Oban prefix).
    oban.conn.execute("CREATE SCHEMA quiet")
    create_legacy_tables(oban.conn, "quiet")
    install(oban.conn, 14, "quietjobs")
    quiet = migration(oban.dsn, tmp_path / "quiet", schema="quiet", prefix="quietjobs")
    insert_legacy_row(oban.conn, "quiet", FailedLookup("tt1", "x", "no_tmdb_match", long_ago, long_ago, id=1))
    assert quiet.up().warnings == []


def test_down_of_empty_tables_starts_their_ids_at_one(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    m.down()
    assert oban.conn.execute("SELECT nextval('legacy.failed_imdb_lookups_id_seq')").fetchone() == (1,)
    assert oban.conn.execute("SELECT nextval('legacy.skipped_imports_id_seq')").fetchone() == (1,)


def test_recording_for_ecto_is_utc_to_the_second_and_tolerates_an_existing_row(
    oban: ObanDatabase, tmp_path: Path
) -> None:
    setup_legacy(oban.conn, oban)
    # The migration's own sessions run in another zone; Ecto's inserted_at is still naive UTC.
    oban.conn.execute(f"ALTER DATABASE \"{oban.conn.info.dbname}\" SET timezone = 'America/New_York'".encode())
    started = utc_now().replace(microsecond=0)
    migration(oban.dsn, tmp_path, schema="legacy").up()
    [(version, inserted_at)] = oban.conn.execute("SELECT version, inserted_at FROM legacy.schema_migrations").fetchall()
    assert (
        version == DEFAULT_VERSION
        and started <= inserted_at <= utc_now() + timedelta(seconds=1)
        and inserted_at.microsecond == 0
    )
    # Marked as run by hand, yet the tables are still there: up migrates and keeps the one row.
    m = migration(oban.dsn, tmp_path / "again", schema="legacy")
    m.down()
    oban.conn.execute("INSERT INTO legacy.schema_migrations VALUES (%s, '2025-01-01')", (DEFAULT_VERSION,))
    m.up()
    assert oban.conn.execute("SELECT count(*) FROM legacy.schema_migrations").fetchone() == (1,)


def test_compat_views_rebuild_both_tables_with_their_column_types(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    legacy_rows(oban.conn)
    before = snapshot(oban.conn, "legacy")
    migration(oban.dsn, tmp_path, schema="legacy", compat_views=True).up()
    after = snapshot(oban.conn, "legacy")
    for table in ("failed_imdb_lookups", "skipped_imports"):
        assert after[table]["rows"] == before[table]["rows"]
        assert [t[:2] for t in after[table]["types"]] == [t[:2] for t in before[table]["types"]]


def test_the_audit_log_keeps_every_row_in_the_shape_ecto_gives_it(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    legacy_rows(oban.conn)
    # Each legacy row as its JSON, failed lookups first, each table in id order; skipped_imports'
    # microsecond times cut to the audit log's timestamp(0).
    expected = oban.conn.execute(
        "SELECT * FROM (SELECT 'failed_lookup', to_jsonb(f), f.inserted_at, f.updated_at, f.id "
        "FROM legacy.failed_imdb_lookups f UNION ALL SELECT 'quality_skip', to_jsonb(s), "
        "date_trunc('second', s.inserted_at), date_trunc('second', s.inserted_at), s.id "
        "FROM legacy.skipped_imports s) AS rows ORDER BY 1, 5"
    ).fetchall()
    migration(oban.dsn, tmp_path, schema="legacy", audit_log=True).up()
    conn = oban.conn
    got = conn.execute("SELECT import_type, details, inserted_at, updated_at FROM legacy.import_audit_log ORDER BY id")
    assert got.fetchall() == [row[:4] for row in expected]
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(adbin, adrelid) FROM pg_attribute "
        "LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum "
        "WHERE attrelid = 'legacy.import_audit_log'::regclass AND attnum > 0 ORDER BY attnum"
    ).fetchall()
    assert columns == [
        ("id", "bigint", True, "nextval('legacy.import_audit_log_id_seq'::regclass)"),
        ("import_type", "character varying(255)", True, None),
        ("details", "jsonb", True, "'{}'::jsonb"),
        ("inserted_at", "timestamp(0) without time zone", True, None),
        ("updated_at", "timestamp(0) without time zone", True, None),
    ]


def old_worker_writes_during_backfill(dsn: str) -> Any:
    """A progress callback that, at the first backfill batch of failed_imdb_lookups, writes row 11
    from another connection, as the old worker still running would."""
    written: list[int] = []

    def progress(step: str, done: int, total: int) -> None:
        if step == "backfill failed_imdb_lookups" and not written:
            written.append(11)
            with psycopg.connect(dsn, autocommit=True) as conn:
                insert_legacy_row(conn, "legacy", replace(FailedLookup.new("tt-late", "oscar_import"), id=11))

    return progress


def test_rows_written_during_up_come_back_with_down(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    progress = old_worker_writes_during_backfill(oban.dsn)

    # Another worker's job that names the same legacy row: never an archival job, never updated.
    foreign = oban.client().insert(
        Job.new("MyApp.ArchiveWorker", {"archived_from": "failed_imdb_lookups", "legacy_id": 11, "legacy_rows": 1})
    )
    m = migration(oban.dsn, tmp_path, schema="legacy", progress=progress)
    m.up()
    assert oban.rows(f"id = {foreign.id}")[0]["args"]["legacy_rows"] == 1
    m.down()
    assert oban.conn.execute("SELECT count(*) FROM legacy.failed_imdb_lookups").fetchone() == (11,)


#: One change per column, each to its own row: verify compares whole rows, every column.
COLUMN_CHANGES = {
    "failed_imdb_lookups": [
        "imdb_id = 'tt-other'",
        "title = 'Other'",
        "year = year + 1",
        "source = 'other_import'",
        "source_key = 'other'",
        "reason = 'other'",
        """metadata = '{"other": 1}'""",
        "retry_count = 7",
        "last_retry_at = '2020-01-01'",
        "inserted_at = inserted_at - interval '1 day'",
        "updated_at = updated_at - interval '1 day'",
    ],
    "skipped_imports": [
        "tmdb_id = tmdb_id + 1000",
        "title = 'Other'",
        "reason = 'other'",
        "criteria_failed = '[]'",
        "checked_at = '2020-01-01'",
        "inserted_at = inserted_at - interval '1 microsecond'",
    ],
}


def test_verify_notices_a_change_in_any_single_column(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 12)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    with psycopg.connect(oban.dsn, autocommit=True) as conn:
        for table in COLUMN_CHANGES:
            m._backfill(conn, table, 12, utc_now(), batch=100)
    for table, changes in COLUMN_CHANGES.items():
        for legacy_id, change in enumerate(changes, start=1):
            oban.conn.execute(f"UPDATE legacy.{table} SET {change} WHERE id = {legacy_id}".encode())
    findings = [(f.table, f.kind, f.example_ids) for f in m.verify().findings]
    assert findings == [
        ("failed_imdb_lookups", "different", tuple(range(1, 12))),
        ("skipped_imports", "different", tuple(range(1, 7))),
    ]


def test_verify_after_up_compares_the_export_with_the_archival_jobs(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 25)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    assert m.verify().findings == []
    oban.conn.execute(
        """UPDATE oban_jobs SET meta = meta || '{"title": "tampered"}' """
        """WHERE args @> '{"archived_from": "failed_imdb_lookups"}' AND (args->>'legacy_id')::int % 2 = 0"""
    )
    oban.conn.execute("""DELETE FROM oban_jobs WHERE args @> '{"archived_from": "skipped_imports", "legacy_id": 3}'""")
    findings = [(f.table, f.kind, f.rows, f.example_ids) for f in m.verify().findings]
    assert findings == [
        ("failed_imdb_lookups", "different", 12, tuple(range(2, 25, 2))),
        ("skipped_imports", "missing", 1, (3,)),
    ]


def test_status_names_the_last_archived_legacy_id(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 9)
    oban.conn.execute("DELETE FROM legacy.skipped_imports WHERE id = 9")
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    tables = m.status()["tables"]
    assert (tables["failed_imdb_lookups"]["archived_jobs"], tables["failed_imdb_lookups"]["last_archived_id"]) == (9, 9)
    assert (tables["skipped_imports"]["archived_jobs"], tables["skipped_imports"]["last_archived_id"]) == (8, 8)


def test_backfill_goes_in_id_order_batch_by_batch_whatever_the_heap_order(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    # Updated rows move to the end of the heap: a scan no longer meets them in id order.
    oban.conn.execute("UPDATE legacy.failed_imdb_lookups SET title = title || ' (restored)' WHERE id <= 4")
    oban.conn.execute("UPDATE legacy.skipped_imports SET title = title || ' (restored)' WHERE id <= 4")
    before = snapshot(oban.conn, "legacy")
    reported: list[tuple[str, int]] = []
    m = migration(
        oban.dsn,
        tmp_path,
        schema="legacy",
        batch_size=3,
        progress=lambda step, done, total: reported.append((step, done)) if step.startswith("backfill") else None,
    )
    summary = m.up()
    assert summary.archived == {"failed_imdb_lookups": 10, "skipped_imports": 10}
    for table in ("failed_imdb_lookups", "skipped_imports"):
        assert [done for step, done in reported if step == f"backfill {table}"] == [3, 6, 9, 10]
    m.down()
    assert snapshot(oban.conn, "legacy") == before


def test_the_recent_write_warning_looks_at_the_newest_row(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    long_ago, now = datetime(2025, 1, 1), utc_now().replace(microsecond=0)
    insert_legacy_row(oban.conn, "legacy", FailedLookup("tt1", "x", "no_tmdb_match", long_ago, long_ago, id=1))
    insert_legacy_row(oban.conn, "legacy", FailedLookup("tt2", "x", "no_tmdb_match", now, now, id=2))
    summary = migration(oban.dsn, tmp_path, schema="legacy").up()
    assert [w.split(" was written to at ")[0] for w in summary.warnings] == ["failed_imdb_lookups"]


def test_the_first_readable_instant_is_not_a_finding_in_either_table(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 2)
    oban.conn.execute("UPDATE legacy.failed_imdb_lookups SET inserted_at = '0001-01-01 00:00:00' WHERE id = 1")
    oban.conn.execute("UPDATE legacy.failed_imdb_lookups SET last_retry_at = '0001-06-01 00:00:00' WHERE id = 2")
    assert migration(oban.dsn, tmp_path, schema="legacy").verify().findings == []


def test_down_from_the_export_keeps_ids_with_gaps_and_every_column(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 6)
    oban.conn.execute("DELETE FROM legacy.failed_imdb_lookups WHERE id IN (1, 4)")
    oban.conn.execute("DELETE FROM legacy.skipped_imports WHERE id IN (2, 5)")
    oban.conn.execute(
        "UPDATE legacy.failed_imdb_lookups SET retry_count = id + 3, last_retry_at = timestamp '2025-08-01 10:00:00' + id * interval '1 hour'"
    )
    before = snapshot(oban.conn, "legacy")
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    oban.conn.execute("DELETE FROM oban_jobs WHERE args ? 'archived_from'")  # Oban's Pruner took them all
    m.down(from_export=tmp_path / "export")
    assert snapshot(oban.conn, "legacy") == before


#: legacy-tables.md, as documented: (column, type, NOT NULL, default) and the indexes. `down`
#: recreates the tables from the same templates as the test bed, so only this catches a drift.
DOCUMENTED = {
    "failed_imdb_lookups": (
        [
            ("id", "bigint", True, "nextval('legacy.failed_imdb_lookups_id_seq'::regclass)"),
            ("imdb_id", "character varying(255)", True, None),
            ("title", "character varying(255)", False, None),
            ("year", "integer", False, None),
            ("source", "character varying(255)", True, None),
            ("source_key", "character varying(255)", False, None),
            ("reason", "character varying(255)", True, None),
            ("metadata", "jsonb", False, "'{}'::jsonb"),
            ("retry_count", "integer", False, "0"),
            ("last_retry_at", "timestamp(0) without time zone", False, None),
            ("inserted_at", "timestamp(0) without time zone", True, None),
            ("updated_at", "timestamp(0) without time zone", True, None),
        ],
        {
            "failed_imdb_lookups_pkey": "UNIQUE btree (id)",
            "failed_imdb_lookups_imdb_id_index": "btree (imdb_id)",
            "failed_imdb_lookups_source_index": "btree (source)",
            "failed_imdb_lookups_reason_index": "btree (reason)",
            "failed_imdb_lookups_imdb_id_source_source_key_index": "UNIQUE btree (imdb_id, source, source_key)",
        },
    ),
    "skipped_imports": (
        [
            ("id", "bigint", True, "nextval('legacy.skipped_imports_id_seq'::regclass)"),
            ("tmdb_id", "integer", True, None),
            ("title", "character varying(255)", False, None),
            ("reason", "character varying(255)", False, None),
            ("criteria_failed", "jsonb", False, None),
            ("checked_at", "timestamp without time zone", False, "now()"),
            ("inserted_at", "timestamp without time zone", True, None),
        ],
        {
            "skipped_imports_pkey": "UNIQUE btree (id)",
            "skipped_imports_tmdb_id_index": "btree (tmdb_id)",
            "skipped_imports_checked_at_index": "btree (checked_at)",
        },
    ),
}


def test_legacy_tables_are_created_and_restored_as_documented(oban: ObanDatabase, tmp_path: Path) -> None:
    def shape(table: str) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
        columns = oban.conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f"legacy.{table}",),
        ).fetchall()
        indexes = dict(
            oban.conn.execute(
                "SELECT c.relname, CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END "
                "|| split_part(pg_get_indexdef(i.indexrelid), ' USING ', 2) "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
                (f"legacy.{table}",),
            ).fetchall()
        )
        return [tuple(c) for c in columns], indexes

    setup_legacy(oban.conn, oban)
    for table, (columns, indexes) in DOCUMENTED.items():
        assert shape(table) == (columns, indexes), table
    sample_rows(oban.conn, "legacy", 3)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    m.down()
    for table, (columns, indexes) in DOCUMENTED.items():
        assert shape(table) == (columns, indexes), f"{table} after down"


def test_rows_written_during_a_run_that_could_not_drop_come_back_after_the_rerun(
    oban: ObanDatabase, tmp_path: Path
) -> None:
    """The first `up` archives a row the old worker wrote during its backfill, then cannot take
    Ecto's lock to record itself; the re-run finds nothing new to archive and must still leave
    the final row count for `down`."""
    from cinegraph_oban import LockNotAcquiredError

    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    progress = old_worker_writes_during_backfill(oban.dsn)

    with psycopg.connect(oban.dsn) as deploy:  # an Ecto deploy holds schema_migrations
        deploy.execute("LOCK TABLE legacy.schema_migrations IN ACCESS EXCLUSIVE MODE")
        first = migration(oban.dsn, tmp_path, schema="legacy", progress=progress, retries=0, lock_timeout_ms=200)
        try:
            first.up()
            raise AssertionError("the drop should have waited for the lock in vain")
        except LockNotAcquiredError:
            pass
        deploy.rollback()
    assert oban.conn.execute("SELECT count(*) FROM legacy.failed_imdb_lookups").fetchone() == (11,)
    m = migration(oban.dsn, tmp_path / "again", schema="legacy")
    m.up()
    m.down()
    assert oban.conn.execute("SELECT count(*) FROM legacy.failed_imdb_lookups").fetchone() == (11,)


def test_an_interrupt_stops_the_per_table_workers_before_it_goes_on(oban: ObanDatabase, tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    import pytest

    setup_legacy(oban.conn, oban)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    running: list[str] = []

    def slow(conn: psycopg.Connection[Any], table: str) -> None:
        running.append(table)
        conn.execute("SELECT pg_sleep(30)")  # a long statement: cancelled, not waited for

    def interrupt_once_both_are_in_their_statement() -> None:
        # Not a timer: under load the workers may not have started after any fixed delay. The
        # interrupt comes when the server shows both statements running, as a user's Ctrl-C
        # would find them.
        with psycopg.connect(oban.dsn, autocommit=True) as watcher:
            for _ in range(600):
                # This test's database only: another run on the same server has statements too.
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND query = 'SELECT pg_sleep(30)'"
                ).fetchone()
                if row is not None and row[0] == 2:
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                time.sleep(0.05)

    before = threading.active_count()
    interrupter = threading.Thread(target=interrupt_once_both_are_in_their_statement)
    interrupter.start()
    started = datetime.now()
    with ctrl_c_as_in_a_terminal(), pytest.raises(KeyboardInterrupt):
        m._per_table(slow)
    interrupter.join(5)
    assert (datetime.now() - started).total_seconds() < 10
    assert sorted(running) == ["failed_imdb_lookups", "skipped_imports"]
    assert threading.active_count() <= before, "no worker is left running"


def test_a_damaged_export_is_refused_in_one_line(oban: ObanDatabase, tmp_path: Path) -> None:
    import pytest

    from cinegraph_oban import VerificationError

    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 2)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    manifest = tmp_path / "export" / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    del data["tables"]["skipped_imports"]
    manifest.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VerificationError, match="damaged or incomplete"):
        m.down(from_export=tmp_path / "export")
    assert oban.count("args ? 'archived_from'") == 4, "nothing was changed"
