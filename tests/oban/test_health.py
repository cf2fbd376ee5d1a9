"""`cinegraph-oban schema show`'s table health, read from a real PostgreSQL."""

from __future__ import annotations

import json

from cinegraph_oban import Job, Oban
from cinegraph_oban.oban.health import PENDING_BYTES_WARNING, health
from conftest import ObanDatabase
from tests.helpers import TMDB, run_cli


def _fill(oban: ObanDatabase, count: int) -> Oban:
    client = oban.client()
    client.insert_all(Job.new(TMDB, {"imdb_id": f"tt{i:07d}", "source": "canonical_import"}) for i in range(count))
    return client


def test_counts_dead_rows_and_old_available_jobs(oban_any: ObanDatabase) -> None:
    conn = oban_any.conn
    _fill(oban_any, 12_000)
    conn.execute(f"UPDATE {oban_any.table} SET scheduled_at = scheduled_at - interval '1 hour' WHERE id <= 10".encode())
    conn.execute(f"DELETE FROM {oban_any.table} WHERE id > 2000".encode())
    conn.execute("SELECT pg_stat_force_next_flush()")  # make this session's counts visible now
    conn.execute(f"ANALYZE {oban_any.table}".encode())
    found = health(conn, oban_any.prefix)
    assert found.version == oban_any.version
    assert found.jobs_by_state == {"available": 2000}
    assert found.live_rows == 2000 and found.dead_rows >= 10_000
    assert found.total_bytes > found.table_bytes > 0
    assert [q.queue for q in found.queues] == ["tmdb"] and found.queues[0].available == 2000
    assert found.queues[0].oldest_wait_seconds >= 3600
    assert any("dead row versions" in w and "VACUUM" in w for w in found.warnings), found.warnings
    assert any("queue 'tmdb'" in w for w in found.warnings), found.warnings
    conn.execute(f"VACUUM {oban_any.table}".encode())
    conn.execute("SELECT pg_stat_force_next_flush()")
    after = health(conn, oban_any.prefix)
    assert after.dead_rows == 0 and after.last_vacuum is not None
    assert not any("dead row versions" in w for w in after.warnings)


def test_gin_pending_list_through_pgstattuple(oban: ObanDatabase) -> None:
    conn = oban.conn
    without = health(conn)
    assert not without.pending_lists_measured
    assert {g.index for g in without.gin_indexes} == {"oban_jobs_args_index", "oban_jobs_meta_index"}
    assert all(g.pending_pages is None and g.fastupdate == "on" for g in without.gin_indexes)
    conn.execute("CREATE EXTENSION pgstattuple")
    _fill(oban, 3000)
    args = {g.index: g for g in health(conn).gin_indexes}["oban_jobs_args_index"]
    assert (
        args.pending_tuples == 3000
        and args.pending_pages is not None
        and args.pending_pages * 8192 >= PENDING_BYTES_WARNING
    )
    assert any("oban_jobs_args_index" in w and "pending list" in w for w in health(conn).warnings)
    conn.execute("VACUUM oban_jobs")
    conn.execute("ALTER INDEX oban_jobs_args_index SET (gin_pending_list_limit = 64)")
    after = {g.index: g for g in health(conn).gin_indexes}["oban_jobs_args_index"]
    assert after.pending_tuples == 0 and after.pending_limit_kb == 64
    assert not health(conn).warnings
    # A role without pg_stat_scan_tables cannot read pending lists: reported, not an error.
    reader = f"cinegraph_health_reader_{conn.info.dbname}"  # roles are the whole server's: one per test
    conn.execute(f"CREATE ROLE {reader}".encode())
    conn.execute(f"GRANT USAGE ON SCHEMA public TO {reader}".encode())
    conn.execute(f"GRANT SELECT ON oban_jobs TO {reader}".encode())
    try:
        conn.execute(f"SET ROLE {reader}".encode())
        limited = health(conn)
        assert not limited.pending_lists_measured and limited.jobs_by_state == {"available": 3000}
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {reader}".encode())
        conn.execute(f"DROP ROLE {reader}".encode())


def test_schema_show_prints_health_and_json(oban: ObanDatabase) -> None:
    _fill(oban, 10)
    shown = run_cli("schema", "show", "--database-url", oban.dsn)
    assert shown.exit_code == 0, shown.stderr
    assert "public.oban_jobs health" in shown.stdout and "available 10" in shown.stdout
    assert "CREATE EXTENSION pgstattuple" in shown.stdout
    as_json = run_cli("schema", "show", "--database-url", oban.dsn, "--json")
    data = json.loads(as_json.stdout)
    assert data["jobs"] == 10 and data["health"]["jobs_by_state"] == {"available": 10}
    assert data["health"]["queues"][0]["queue"] == "tmdb"
