"""The test bed's renewed databases (tests/databases.py) are as fresh as cloned ones, and a
database with anything but rows changed is dropped, not handed to the next test."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from cinegraph_oban import Job, Oban
from tests.databases import FreshDatabases, catalog_fingerprint, connect
from tests.helpers import TMDB

LAYOUT = (14, "public")


def _state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What a test could see of a database besides its catalogs' objects."""
    return {
        "jobs": conn.execute("SELECT count(*) FROM oban_jobs").fetchone(),
        "sequence": conn.execute("SELECT last_value, is_called FROM oban_jobs_id_seq").fetchone(),
        "sizes": conn.execute(
            "SELECT relname, relpages, reltuples, relallvisible, pg_relation_size(oid) FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace ORDER BY relname"
        ).fetchall(),
        "statistics": conn.execute("SELECT count(*) FROM pg_statistic WHERE starelid >= 16384").fetchone(),
        "counters": conn.execute(
            "SELECT relname, seq_scan, n_tup_ins, n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables"
            " ORDER BY relname"
        ).fetchall(),
        "sessions": conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchone(),
    }


def test_a_database_whose_test_changed_only_rows_is_renewed_as_fresh(fresh_databases: FreshDatabases) -> None:
    server = fresh_databases.server
    name = fresh_databases.take_layout(LAYOUT)
    with connect(server, name) as conn:
        fresh, fingerprint = _state(conn), catalog_fingerprint(conn)
        Oban(conn).insert_all([Job.new(TMDB, {"tmdb_id": n}, unique=False) for n in range(300)])
        conn.execute("DELETE FROM oban_jobs WHERE id % 2 = 0")
        conn.execute("VACUUM ANALYZE oban_jobs")
        conn.execute("SELECT pg_stat_force_next_flush()")
        left_open = connect(server, name)  # a session the test forgot: ended, not waited for
        changed = _state(conn)
    assert changed != fresh and changed["statistics"] != (0,) and changed["sequence"] == (300, True)
    try:
        assert fresh_databases.renew(name)
    finally:
        left_open.close()
    with connect(server, name) as conn:
        assert _state(conn) == fresh
        assert catalog_fingerprint(conn) != fingerprint  # TRUNCATE gave the tables new files
        assert Oban(conn).insert(Job.new(TMDB, {"tmdb_id": 1})).id == 1


CHANGES = {
    "a table created": "CREATE TABLE extra (x int)",
    "an index created": "CREATE INDEX extra_index ON oban_jobs (queue)",
    "an index dropped": "DROP INDEX oban_jobs_args_index",
    "a comment": "COMMENT ON TABLE oban_jobs IS 'changed'",
    "a grant": "GRANT SELECT ON oban_jobs TO PUBLIC",
    "a column default": "ALTER TABLE oban_jobs ALTER COLUMN queue SET DEFAULT 'other'",
    "an enum value": "ALTER TYPE oban_job_state ADD VALUE 'other'",
    "a sequence altered": "ALTER SEQUENCE oban_jobs_id_seq INCREMENT 2",
    "a storage parameter": "ALTER TABLE oban_jobs SET (fillfactor = 50)",
    "a column's statistics target": "ALTER TABLE oban_jobs ALTER COLUMN meta SET STATISTICS 50",
    "a temporary table": "CREATE TEMPORARY TABLE scratch (x int)",
    "a database setting": "ALTER DATABASE {name} SET work_mem = '8MB'",
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_a_database_with_anything_but_rows_changed_is_dropped(fresh_databases: FreshDatabases, change: str) -> None:
    name = fresh_databases.take_layout(LAYOUT)
    with connect(fresh_databases.server, name) as conn:
        conn.execute(change.format(name=psycopg.sql.Identifier(name).as_string(conn)).encode())
    assert not fresh_databases.renew(name)
    assert all(name not in spare for spare in fresh_databases.spare.values())  # never handed out again
