"""RemoveRedundantImportTables against real PostgreSQL: round trip, crash safety, concurrency."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from cinegraph_oban import (
    DatabaseUnavailableError,
    FailedLookup,
    Job,
    LockNotAcquiredError,
    Oban,
    SkippedImport,
    VerificationError,
    install,
    jobs,
    read_failed_lookups,
    read_skipped_imports,
)
from cinegraph_oban.migration.legacy import create_legacy_tables, insert_legacy_row
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables
from cinegraph_oban.migration.steps import CRASH_VARIABLE, DEFAULT_VERSION, UP_STEPS
from conftest import ObanDatabase
from tests import strategies as s
from tests.helpers import (
    killed_session_gone,
    migration,
    run_cli,
    run_forked,
    sample_rows,
    setup_legacy,
    snapshot,
    with_id,
)

pytest_plugins = ["pytester"]


def setup(conn: psycopg.Connection[Any], *, version: int = 14, prefix: str = "public", schema: str = "public") -> None:
    install(conn, version, prefix)
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'.encode())
    create_legacy_tables(conn, schema)
    conn.execute(
        f'CREATE TABLE "{schema}".schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0))'.encode()
    )


def _pending(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT i, (pgstatginindex(i::regclass)).pending_tuples FROM "
        "unnest(ARRAY['oban_jobs_args_index', 'oban_jobs_meta_index']) AS i"
    ).fetchall()
    return {str(name): int(pending) for name, pending in rows}


def test_up_merges_the_gin_pending_lists_or_says_it_could_not(oban: ObanDatabase, tmp_path: Path) -> None:
    """The backfill's entries wait in the GIN pending lists; up merges them as it goes and at the
    end, as the index owner, so the application's GIN searches do not read them afterwards. A
    migrator that does not own oban_jobs gets a warning instead, and the migration completes."""
    conn = oban.conn
    conn.execute("CREATE EXTENSION pgstattuple")
    setup_legacy(conn, oban)
    sample_rows(conn, "legacy", 30)
    summary = migration(oban.dsn, tmp_path / "owner", schema="legacy").up()
    assert summary.archived == {"failed_imdb_lookups": 30, "skipped_imports": 30}
    assert not [w for w in summary.warnings if "GIN" in w]
    assert _pending(conn) == {"oban_jobs_args_index": 0, "oban_jobs_meta_index": 0}

    # Again, as a role that owns the legacy tables but not oban_jobs.
    conn.execute("TRUNCATE oban_jobs")
    conn.execute("DROP SCHEMA legacy CASCADE")
    setup_legacy(conn, oban)
    sample_rows(conn, "legacy", 30)
    role = f"cinegraph_oban_migrator_{conn.info.dbname}"  # roles are the whole server's: one per test
    conn.execute(f"CREATE ROLE {role} LOGIN".encode())
    try:
        for statement in (
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON oban_jobs TO {role}",
            f"GRANT USAGE ON SEQUENCE oban_jobs_id_seq TO {role}",
            f"ALTER SCHEMA legacy OWNER TO {role}",
            f"ALTER TABLE legacy.failed_imdb_lookups OWNER TO {role}",
            f"ALTER TABLE legacy.skipped_imports OWNER TO {role}",
            f"ALTER TABLE legacy.schema_migrations OWNER TO {role}",
        ):
            conn.execute(statement.encode())
        as_role = psycopg.conninfo.make_conninfo(oban.dsn, user=role)
        limited = migration(as_role, tmp_path / "not-owner", schema="legacy").up()
        assert limited.archived == {"failed_imdb_lookups": 30, "skipped_imports": 30}
        (gin,) = [w for w in limited.warnings if "GIN" in w]
        assert "could not merge the GIN pending lists of public.oban_jobs_args_index, " in gin
        assert "VACUUM public.oban_jobs" in gin
        assert _pending(conn) == {"oban_jobs_args_index": 60, "oban_jobs_meta_index": 60}
    finally:
        conn.execute(f"DROP OWNED BY {role}".encode())
        conn.execute(f"DROP ROLE {role}".encode())


def test_a_merge_that_fails_is_a_warning_not_a_failed_migration(
    oban: ObanDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 12)
    real_sql = RemoveRedundantImportTables._sql

    def failing_merge(self: RemoveRedundantImportTables, name: str, **extra: Any) -> bytes:
        return b"SELECT 1 / 0" if name == "merge_pending_list" else real_sql(self, name, **extra)

    monkeypatch.setattr(RemoveRedundantImportTables, "_sql", failing_merge)
    summary = migration(oban.dsn, tmp_path, schema="legacy").up()
    assert summary.archived == {"failed_imdb_lookups": 12, "skipped_imports": 12}
    merges = sorted(w for w in summary.warnings if "could not merge" in w)
    assert len(merges) == 2 and all("division by zero" in w and "VACUUM public.oban_jobs" in w for w in merges)
    assert "public.oban_jobs_args_index" in merges[0] and "public.oban_jobs_meta_index" in merges[1]


def test_parallel_workers_report_their_end_even_when_they_cannot_connect(oban: ObanDatabase, tmp_path: Path) -> None:
    """The backfill's mergers wait for both tables' workers to end: a worker that fails to
    connect must still say it ended, or the mergers would merge forever."""
    unreachable = psycopg.conninfo.make_conninfo(oban.dsn, dbname="cinegraph_oban_no_such_database")
    m = migration(unreachable, tmp_path)
    ended: list[str] = []
    with pytest.raises(DatabaseUnavailableError, match="cinegraph_oban_no_such_database"):
        m._in_parallel(["a", "b"], lambda conn, key: key, done=ended.append)
    assert sorted(ended) == ["a", "b"]


def test_up_then_down_restores_both_tables_exactly(oban_any: ObanDatabase, tmp_path: Path) -> None:
    conn = oban_any.conn
    setup_legacy(conn, oban_any)
    sample_rows(conn, "legacy")
    before = snapshot(conn, "legacy")
    other = Oban(conn, prefix=oban_any.prefix).insert(Job.new("MyApp.Mailer", {"to": "x"}))
    m = migration(oban_any.dsn, tmp_path, prefix=oban_any.prefix, schema="legacy")
    summary = m.up()
    assert summary.archived == {"failed_imdb_lookups": 40, "skipped_imports": 40} and summary.findings == []
    assert conn.execute("SELECT to_regclass('legacy.failed_imdb_lookups')").fetchone() == (None,)
    assert conn.execute("SELECT version FROM legacy.schema_migrations").fetchall() == [(DEFAULT_VERSION,)]
    archived = oban_any.rows("args ? 'archived_from'")
    assert {r["state"] for r in archived if r["args"]["archived_from"] == "failed_imdb_lookups"} == {"discarded"}
    assert {r["state"] for r in archived if r["args"]["archived_from"] == "skipped_imports"} == {"completed"}
    assert all(r["discarded_at"] or r["completed_at"] for r in archived)
    assert oban_any.rows(f"id = {other.id}")[0]["meta"] == {}, "other jobs are untouched"
    m.down()
    assert snapshot(conn, "legacy") == before
    assert oban_any.count("args ? 'archived_from'") == 0
    assert conn.execute("SELECT count(*) FROM legacy.schema_migrations").fetchone() == (0,)
    assert conn.execute("SELECT nextval('legacy.failed_imdb_lookups_id_seq')").fetchone() == (41,)


@settings(max_examples=15)
@given(
    failed=st.lists(s.failed_lookups(with_id=False), max_size=8),
    skipped=st.lists(s.skipped_imports(with_id=False), max_size=8),
    pruned=st.booleans(),
)
def test_round_trip_for_any_legacy_content(
    db_dsn: str, tmp_path_factory: Any, failed: list[FailedLookup], skipped: list[SkippedImport], pruned: bool
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS rt CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS rtjobs CASCADE")
        setup(conn, prefix="rtjobs", schema="rt")
        for n, row in enumerate(failed, start=1):
            insert_legacy_row(conn, "rt", with_id(row, n))
        for n, row in enumerate(skipped, start=1):
            insert_legacy_row(conn, "rt", with_id(row, n))
        before = snapshot(conn, "rt")
        export = tmp_path_factory.mktemp("rt")
        m = migration(db_dsn, export, prefix="rtjobs", schema="rt", batch_size=3)
        m.up()
        # The typed readers give back exactly the legacy rows (multiset over all columns).
        got_failed = list(read_failed_lookups(conn, jobs("rtjobs").args(archived_from="failed_imdb_lookups")))
        got_skipped = list(read_skipped_imports(conn, jobs("rtjobs").args(archived_from="skipped_imports")))

        def normalised(value: Any) -> Any:
            return None if value is None else conn.execute("SELECT %s::jsonb", (Jsonb(value),)).fetchone()[0]  # type: ignore[index]

        expected_failed = [with_id(r, n) for n, r in enumerate(failed, start=1)]
        expected_failed = [replace(r, metadata=normalised(r.metadata)) for r in expected_failed]
        expected_skipped = [with_id(r, n) for n, r in enumerate(skipped, start=1)]
        expected_skipped = [replace(r, criteria_failed=normalised(r.criteria_failed)) for r in expected_skipped]
        assert sorted(got_failed, key=lambda r: r.id or 0) == expected_failed
        assert sorted(got_skipped, key=lambda r: r.id or 0) == expected_skipped
        if pruned:  # Oban's Pruner took the archival jobs: the export alone brings the rows back
            conn.execute("DELETE FROM rtjobs.oban_jobs WHERE args ? 'archived_from'")
            m.down(from_export=export / "export")
        else:
            m.down()
        assert snapshot(conn, "rt") == before


def test_a_second_migrator_is_refused(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    with psycopg.connect(oban.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended('cinegraph_oban.RemoveRedundantImportTables', 0))")
        with pytest.raises(LockNotAcquiredError, match="another RemoveRedundantImportTables migrator"):
            migration(oban.dsn, tmp_path, schema="legacy").up()
    assert oban.conn.execute("SELECT to_regclass('legacy.failed_imdb_lookups')").fetchone() != (None,)


def test_a_different_shape_is_refused_with_a_diff(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    oban.conn.execute("ALTER TABLE legacy.failed_imdb_lookups ALTER COLUMN year TYPE bigint")
    oban.conn.execute("ALTER TABLE legacy.skipped_imports ADD COLUMN note text")
    with pytest.raises(VerificationError) as info:
        migration(oban.dsn, tmp_path, schema="legacy").up()
    assert "failed_imdb_lookups.year: bigint, expected integer" in str(info.value)
    assert "skipped_imports.note: unexpected column" in str(info.value)
    assert oban.count() == 0


def test_verify_names_differences_and_up_converges_from_them(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    now = __import__("cinegraph_oban.model.timestamps", fromlist=["utc_now"]).utc_now()
    with psycopg.connect(oban.dsn, autocommit=True) as conn:
        m._backfill(conn, "failed_imdb_lookups", 10, now, batch=100)
        m._backfill(conn, "skipped_imports", 10, now, batch=100)
    oban.conn.execute("UPDATE legacy.failed_imdb_lookups SET title = 'changed' WHERE id = 3")
    oban.conn.execute('DELETE FROM oban_jobs WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 4}\'')
    found = {(f.table, f.kind): f.example_ids for f in m.verify().findings}
    assert found == {("failed_imdb_lookups", "different"): (3,), ("skipped_imports", "missing"): (4,)}
    # Archival jobs of a run made without the change capture (as an earlier version made them):
    # up compares every one with its row and archives the differing ones again, then finishes.
    before = snapshot(oban.conn, "legacy")
    summary = m.up()
    assert summary.recompared == {"failed_imdb_lookups": 1, "skipped_imports": 1}
    assert any("without the change capture" in n for n in summary.notices)
    m.down()
    assert snapshot(oban.conn, "legacy") == before


def test_rows_written_during_up_are_archived_and_rerun_is_a_no_op(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    written = []

    def progress(step: str, done: int, total: int) -> None:
        if step == "backfill failed_imdb_lookups" and not written:
            written.append(1)
            with psycopg.connect(oban.dsn, autocommit=True) as conn:  # the old worker, still running
                insert_legacy_row(conn, "legacy", with_id(FailedLookup.new("tt-late", "oscar_import"), 11))

    m = migration(oban.dsn, tmp_path, schema="legacy", progress=progress)
    summary = m.up()
    assert summary.archived["failed_imdb_lookups"] == 11
    assert oban.count('args @> \'{"archived_from": "failed_imdb_lookups"}\'') == 11
    again = m.up()
    assert again.already_done and oban.count("args ? 'archived_from'") == 21


def test_down_refuses_a_partial_set_and_restores_from_the_export(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    before = snapshot(oban.conn, "legacy")
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    oban.conn.execute('DELETE FROM oban_jobs WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 2}\'')
    with pytest.raises(VerificationError, match=r"skipped_imports: only 9 of its 10 rows .* --from-export"):
        m.down()
    m.down(from_export=tmp_path / "export")
    assert snapshot(oban.conn, "legacy") == before
    m.up()
    (tmp_path / "export" / "skipped_imports.jsonl.gz").write_bytes(b"broken")
    with pytest.raises(VerificationError, match="SHA-256"):
        m.down(from_export=tmp_path / "export")


def test_compat_views_and_audit_log(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    before = snapshot(oban.conn, "legacy")
    m = migration(oban.dsn, tmp_path, schema="legacy", compat_views=True, audit_log=True)
    m.up()
    rows = oban.conn.execute("SELECT t::text FROM legacy.failed_imdb_lookups t ORDER BY id").fetchall()
    assert rows == before["failed_imdb_lookups"]["rows"], "the view rebuilds the rows exactly"
    with pytest.raises(psycopg.errors.Error):
        oban.conn.execute("INSERT INTO legacy.skipped_imports (tmdb_id, inserted_at) VALUES (1, now())")
    assert oban.conn.execute(
        "SELECT import_type, count(*) FROM legacy.import_audit_log GROUP BY 1 ORDER BY 1"
    ).fetchall() == [
        ("failed_lookup", 10),
        ("quality_skip", 10),
    ]
    m.down()
    assert snapshot(oban.conn, "legacy") == before
    assert oban.conn.execute("SELECT to_regclass('legacy.import_audit_log')").fetchone() == (None,)


def test_without_schema_migrations_the_migration_is_noticed_not_recorded(oban: ObanDatabase, tmp_path: Path) -> None:
    create_legacy_tables(oban.conn)
    summary = migration(oban.dsn, tmp_path).up()
    assert any("schema_migrations does not exist" in n for n in summary.notices)


def test_plan_is_deterministic_and_touches_nothing(tmp_path: Path) -> None:
    m = RemoveRedundantImportTables("postgresql://nobody@127.0.0.1:1/none", export_dir=tmp_path)
    first = m.plan()
    assert first == m.plan()
    statements = [s for _, group in first for s in group]
    assert all(s.rstrip().endswith(";") for s in statements)
    assert any("DROP TABLE" in s for s in statements) and any("schema_migrations" in s for s in statements)


def test_up_runs_exactly_what_its_steps_list_and_the_plan_shows_them(oban: ObanDatabase, tmp_path: Path) -> None:
    """`plan()` is rendered from UP_STEPS and `up` refuses a statement its step does not list:
    with every option, and again on the migrated database, every listed statement ran."""
    setup(oban.conn)
    sample_rows(oban.conn, count=20)
    # What makes the conditional statements run: archival jobs of an earlier run made without the
    # change capture (compared again in the catch-up), a write during the catch-up (applied under
    # the drop's lock, then checked), and a write the triggers did not see (a session with
    # session_replication_role = replica: verify finds it, and it is archived again).
    earlier = migration(oban.dsn, tmp_path)
    with psycopg.connect(oban.dsn, autocommit=True) as conn:
        earlier._backfill(conn, "failed_imdb_lookups", 20, __import__("datetime").datetime(2026, 1, 1), batch=5)
    oban.conn.execute("UPDATE failed_imdb_lookups SET title = 'after the earlier run' WHERE id = 2")
    writes: list[dict[str, Any]] = []

    calls: list[str] = []

    def write(step: str, done: int, total: int) -> None:
        if step != "catch-up skipped_imports":  # after both tables' catch-up rounds
            return
        calls.append(step)
        with psycopg.connect(oban.dsn, autocommit=True) as other:
            if len(calls) == 1:  # the first catch-up
                other.execute("UPDATE failed_imdb_lookups SET retry_count = 7 WHERE id = 5")
                other.execute("SET session_replication_role = replica")
                other.execute("UPDATE skipped_imports SET title = 'unseen' WHERE id = 6")
            elif len(calls) == 3:  # the catch-up after verify (which found id 6): left for the drop's lock
                other.execute("UPDATE failed_imdb_lookups SET retry_count = 8 WHERE id = 8")
            else:
                return
            writes.append(snapshot(other, "public"))

    m = migration(oban.dsn, tmp_path, compat_views=True, audit_log=True, progress=write)
    summary = m.up()
    # id 2 (the earlier run), then id 5 once more and id 6 (what verify found) in the second comparison.
    assert len(writes) == 2 and summary.recompared == {"failed_imdb_lookups": 2, "skipped_imports": 1}
    m.down()
    assert snapshot(oban.conn, "public") == writes[-1]  # every row as last committed
    # Again, with nothing captured before the catch-up (so no ANALYZE there), and a write the
    # triggers do not see during it: verify finds it, and oban_jobs is analyzed before it is
    # archived again.
    unseen: list[str] = []

    def unseen_write(step: str, done: int, total: int) -> None:
        if step == "catch-up skipped_imports" and not unseen:
            unseen.append(step)
            with psycopg.connect(oban.dsn, autocommit=True) as other:
                other.execute("SET session_replication_role = replica")
                other.execute("UPDATE skipped_imports SET title = 'unseen again' WHERE id = 7")

    m.progress = unseen_write
    again = m.up()
    assert unseen and again.recompared == {"failed_imdb_lookups": 0, "skipped_imports": 1}
    assert m.up().already_done
    declared = {(step.key, name) for step in UP_STEPS for name in step.templates}
    assert set(m.ran) == declared, "listed but never run: " + repr(sorted(declared - set(m.ran)))
    shown = dict(m.plan())
    assert [title for title, _ in m.plan()] == [step.title for step in UP_STEPS]
    drop = next(step for step in UP_STEPS if step.key == "drop")
    assert shown[drop.title][0] == "BEGIN;" and shown[drop.title][-1] == "COMMIT;"
    assert sum("CREATE VIEW" in statement for statement in shown[drop.title]) == 2, "the compat views, per option"
    plain = dict(migration(oban.dsn, tmp_path).plan())
    assert not any("CREATE VIEW" in statement for statement in plain[drop.title])
    with m._running("verify"), pytest.raises(AssertionError, match="does not list"):
        m._sql("drop_legacy_tables")


def archival_state(conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute(
        "SELECT args, meta, state::text, worker, queue FROM oban_jobs WHERE args ? 'archived_from' ORDER BY args->>'archived_from', (args->>'legacy_id')::bigint"
    ).fetchall()


@pytest.mark.parametrize(
    "point",
    ["after-export", "backfill:failed_imdb_lookups:2", "backfill:skipped_imports:1", "after-backfill", "before-commit"],
)
def test_killed_at_any_step_and_rerun_ends_as_an_uninterrupted_run(
    oban: ObanDatabase, tmp_path: Path, point: str
) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 25)
    args = [
        "migrate",
        "up",
        "--yes",
        "--json",
        "--schema",
        "legacy",
        "--batch-size",
        "10",
        "--export-dir",
        str(tmp_path),
    ]
    # A real process (forked): the crash switch SIGKILLs the process it is set in.
    killed = run_forked(*args, "--database-url", oban.dsn, env={CRASH_VARIABLE: point})
    assert killed.exit_code == -signal.SIGKILL, killed.stderr
    killed_session_gone(oban.dsn)
    finished = run_cli(*args, "--database-url", oban.dsn)
    assert finished.exit_code == 0, finished.stderr
    crashed_state = archival_state(oban.conn)
    # The same migration, uninterrupted, on a copy of the legacy content.
    oban.conn.execute("CREATE SCHEMA clean")
    create_legacy_tables(oban.conn, "clean")
    sample_rows(oban.conn, "clean", 25)
    oban.conn.execute("CREATE SCHEMA cleanjobs")
    install(oban.conn, 14, "cleanjobs")
    clean = run_cli(
        "migrate",
        "up",
        "--yes",
        "--json",
        "--schema",
        "clean",
        "--prefix",
        "cleanjobs",
        "--export-dir",
        str(tmp_path / "c"),
        "--database-url",
        oban.dsn,
    )
    assert clean.exit_code == 0, clean.stderr
    clean_state = oban.conn.execute(
        "SELECT args, meta, state::text, worker, queue FROM cleanjobs.oban_jobs ORDER BY args->>'archived_from', (args->>'legacy_id')::bigint"
    ).fetchall()

    def comparable(rows: list[Any]) -> list[Any]:
        out = []
        for args_, meta, *rest in rows:
            timeless = {
                k: v for k, v in meta.items() if k not in ("legacy_inserted_at", "legacy_updated_at", "checked_at")
            }
            out.append((args_, timeless, *rest))
        return out

    assert comparable(crashed_state) == comparable(clean_state)
    assert len(crashed_state) == 50
    assert oban.conn.execute("SELECT to_regclass('legacy.failed_imdb_lookups')").fetchone() == (None,)
    assert oban.conn.execute("SELECT count(*) FROM legacy.schema_migrations").fetchone() == (1,)


def test_jobs_inserted_and_run_by_other_sessions_during_up_are_untouched(oban: ObanDatabase, tmp_path: Path) -> None:
    from cinegraph_oban.oban import engine

    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 30)
    touched: list[int] = []

    def progress(step: str, done: int, total: int) -> None:
        if step.startswith("backfill") and len(touched) < 6:
            with psycopg.connect(oban.dsn, autocommit=True) as other:  # the application, working meanwhile
                client = Oban(other)
                job = client.insert(
                    Job.new(
                        "Cinegraph.Workers.TMDbDetailsWorker",
                        {"tmdb_id": 10_000 + len(touched)},
                        meta={"import_type": "full"},
                    )
                )
                claimed = [j for j in engine.fetch_jobs(other, "tmdb", 10) if j.id == job.id]
                if claimed and len(touched) % 2 == 0:
                    engine.complete_job(other, claimed[0])
                touched.append(job.id or 0)

    m = migration(oban.dsn, tmp_path, schema="legacy", progress=progress, batch_size=5)
    summary = m.up()
    assert touched and summary.archived == {"failed_imdb_lookups": 30, "skipped_imports": 30}
    rows = {r["id"]: r for r in oban.rows(f"id IN ({', '.join(map(str, touched))})")}
    for job_id in touched:
        row = rows[job_id]
        assert row["meta"] == {"import_type": "full"} and "archived_from" not in row["args"]
        assert row["state"] in ("completed", "executing")


def test_live_checks_before_after_and_for_the_new_worker(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 12)
    oban.conn.execute("UPDATE legacy.skipped_imports SET checked_at = '10000-01-01' WHERE id = 5")
    m = migration(oban.dsn, tmp_path, schema="legacy")
    before = {(f.table, f.kind): f.example_ids for f in m.verify().findings}
    assert before == {("skipped_imports", "time outside years 1..9999 (unreadable in Python)"): (5,)}
    oban.conn.execute("UPDATE legacy.skipped_imports SET checked_at = '2025-01-01' WHERE id = 5")
    m.up()
    assert m.verify().findings == []
    oban.conn.execute(
        'UPDATE oban_jobs SET meta = meta || \'{"title": "tampered"}\' WHERE args @> \'{"archived_from": "failed_imdb_lookups", "legacy_id": 3}\''
    )
    oban.conn.execute('DELETE FROM oban_jobs WHERE args @> \'{"archived_from": "skipped_imports", "legacy_id": 7}\'')
    job = oban.client().insert(
        Job.new("Cinegraph.Workers.TMDbDetailsWorker", {"tmdb_id": 1}, meta={"failure_reason": "no_tmdb_match"})
    )
    after = {(f.table, f.kind): f.example_ids for f in m.verify().findings}
    assert after == {
        ("failed_imdb_lookups", "different"): (3,),
        ("skipped_imports", "missing"): (7,),
        ("oban_jobs", "failed lookup without imdb_id"): (job.id,),
        ("oban_jobs", "failed lookup without source"): (job.id,),
    }
    result = run_cli(
        "migrate",
        "verify",
        "--database-url",
        oban.dsn,
        "--schema",
        "legacy",
        "--export-dir",
        str(tmp_path / "export"),
        "--json",
    )
    assert result.exit_code == 1 and "tampered" not in result.stderr and '"kind": "different"' in result.stdout


def test_verify_as_pytest_items(oban: ObanDatabase, tmp_path: Path, pytester: pytest.Pytester) -> None:
    oban.client().insert(
        Job.new(
            "Cinegraph.Workers.TMDbDetailsWorker",
            {"tmdb_id": 1},
            meta={"failure_reason": "no_tmdb_match", "imdb_id": "tt1"},
        )
    )
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", f"--cinegraph-oban-verify={oban.dsn}", f"--cinegraph-oban-export-dir={tmp_path}"
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*failed lookup without source*"])


def test_verify_items_fail_when_nothing_was_compared(
    oban: ObanDatabase, tmp_path: Path, pytester: pytest.Pytester
) -> None:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 3)
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    summary = migration(oban.dsn, tmp_path / "elsewhere", schema="legacy").verify()
    assert summary.unverified == {"failed_imdb_lookups": 3, "skipped_imports": 3} and summary.findings == []
    verified = m.verify()
    assert verified.unverified == {} and verified.findings == []
    pytester.makepyfile("def test_nothing():\n    pass\n")
    for export_dir, outcomes in (
        (tmp_path / "elsewhere", {"passed": 2, "failed": 1}),
        (tmp_path / "export", {"passed": 3}),
    ):
        result = pytester.runpytest_inprocess(
            "-p",
            "no:cacheprovider",
            f"--cinegraph-oban-verify={oban.dsn}",
            f"--cinegraph-oban-export-dir={export_dir}",
            "--cinegraph-oban-schema=legacy",
        )
        result.assert_outcomes(**outcomes)
        if outcomes.get("failed"):
            result.stdout.fnmatch_lines(["*nothing verified the archival jobs*"])


def test_up_takes_its_bulk_sessions_again_and_leaves_none_open(
    oban: ObanDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts of `up` that run per table or per index at once (export, backfill, mergers,
    verify) take the sessions an earlier part left idle; none is left open when it returns."""
    import time

    from cinegraph_oban.migration import steps

    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", 10)
    opened: list[str] = []
    connect = steps.connect

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return connect(*args, **kwargs)

    monkeypatch.setattr(steps, "connect", counted)
    m = migration(oban.dsn, tmp_path, schema="legacy")  # kept: its sessions are not closed by its end
    m.up()
    assert 2 <= len(opened) <= 5, opened  # the lock's session and the bulk ones (9 when each part had its own)
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
    deadline = time.monotonic() + 10  # a closed session's server process ends a moment later
    while (left := oban.conn.execute(query, [steps.APPLICATION_NAME]).fetchone()) != (0,):
        assert time.monotonic() < deadline, f"{left[0] if left else '?'} of the migrator's sessions left open"
        time.sleep(0.05)
    assert m._idle == []
