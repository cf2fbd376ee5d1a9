"""The test bed's renewed databases (tests/databases.py) are as fresh as cloned ones, and a
database with anything but rows changed is dropped, not handed to the next test."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from cinegraph_oban import Job, Oban
from tests import databases
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
        assert fresh_databases.renew(name, keep=True)  # not spare yet: this test still reads and writes it
        assert name not in fresh_databases.spare[fresh_databases.made[name].template]
    finally:
        left_open.close()
    try:
        with connect(server, name) as conn:
            assert _state(conn) == fresh
            assert catalog_fingerprint(conn) != fingerprint  # TRUNCATE gave the tables new files
            # What the next renewal compares with (the catalogs its reset changed, read again).
            assert fresh_databases.made[name].fingerprint == catalog_fingerprint(conn)
            assert Oban(conn).insert(Job.new(TMDB, {"tmdb_id": 1})).id == 1
    finally:
        fresh_databases.give_back(name)  # renewed again before any other test gets it


class _Watched:
    """The renewal's connection, with `before(conn, query)` called before each statement."""

    def __init__(self, conn: psycopg.Connection[Any], before: Callable[[psycopg.Connection[Any], Any], None]) -> None:
        self.conn, self.before = conn, before

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.conn, attribute)

    def execute(self, query: Any, *args: Any) -> Any:
        self.before(self.conn, query)
        return self.conn.execute(query, *args)


def _watch_the_reset(
    fresh_databases: FreshDatabases,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    before: Callable[[psycopg.Connection[Any], Any], None],
) -> None:
    """Database `name`'s renewals watched; another test's, which the renewer thread may be
    running meanwhile, are not."""
    reset = fresh_databases._reset

    def watched(conn: psycopg.Connection[Any], *args: Any) -> Any:
        return reset(_Watched(conn, before) if conn.info.dbname == name else conn, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fresh_databases, "_reset", watched)


def test_a_client_that_reconnects_during_renewal_gets_the_database_dropped(
    fresh_databases: FreshDatabases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session that comes back after renewal ended the others (a pool left open) would write to
    the next test's database: renewal checks again at its end, and drops it."""
    name = fresh_databases.take_layout(LAYOUT)
    with connect(fresh_databases.server, name) as conn:
        Oban(conn).insert(Job.new(TMDB, {"tmdb_id": 1}, unique=False))
    back: list[psycopg.Connection[Any]] = []

    def reconnect_as_the_sequences_are_reset(conn: psycopg.Connection[Any], query: Any) -> None:
        if query is databases._RESET_THE_REST and not back:
            back.append(connect(fresh_databases.server, name))

    _watch_the_reset(fresh_databases, monkeypatch, name, reconnect_as_the_sequences_are_reset)
    try:
        assert not fresh_databases.renew(name)
    finally:
        for conn in back:
            conn.close()
    assert len(back) == 1 and name not in [spare for spares in fresh_databases.spare.values() for spare in spares]


def _read_whole_just_now(fresh_databases: FreshDatabases, name: str) -> None:
    """A spare database may be due its whole read at its next renewal: not this test's."""
    fresh_databases.made[name] = dataclasses.replace(fresh_databases.made[name], unread=0)


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
    "a comment on the database": "COMMENT ON DATABASE {name} IS 'changed'",
}


@pytest.mark.parametrize("own_connection", [False, True], ids=["closed by the test", "renewed on"])
@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_a_database_with_anything_but_rows_changed_is_dropped(
    fresh_databases: FreshDatabases, change: str, own_connection: bool
) -> None:
    """Whether the test closed its connection or hands it to the renewal (as `db_conn` does),
    whose DISCARD ALL drops a temporary table but not the trace it left in the catalogs."""
    name = fresh_databases.take_layout(LAYOUT)
    conn = connect(fresh_databases.server, name)
    conn.execute(change.format(name=psycopg.sql.Identifier(name).as_string(conn)).encode())
    if not own_connection:
        conn.close()
    assert not fresh_databases.renew(name, conn=conn if own_connection else None)
    assert conn.closed
    assert all(name not in spare for spare in fresh_databases.spare.values())  # never handed out again


#: What a test may leave on its own connection, which the renewal then runs on.
SESSIONS = {
    "a failed transaction": ["BEGIN", "INSERT INTO oban_jobs (worker) VALUES ('W')", "SELECT 1/0"],
    "an open transaction": ["BEGIN", "INSERT INTO oban_jobs (worker) VALUES ('W')"],
    "its settings": [
        "SET search_path = nowhere",
        "SET default_transaction_read_only = on",
        "SET statement_timeout = 1",  # last: it would apply to the SETs after it
    ],
    "a session lock, a LISTEN, a prepared statement": [
        "SELECT pg_advisory_lock(1)",
        "LISTEN oban_insert",
        "PREPARE p AS SELECT 1",
    ],
    "a closed connection": ["CLOSE"],
}


@pytest.mark.parametrize("statements", list(SESSIONS.values()), ids=list(SESSIONS))
def test_the_tests_own_connection_is_renewed_on_as_a_new_session(
    fresh_databases: FreshDatabases, statements: list[str]
) -> None:
    server = fresh_databases.server
    name = fresh_databases.take_layout(LAYOUT)
    with connect(server, name) as conn:
        fresh = _state(conn)
    conn = connect(server, name)
    Oban(conn).insert(Job.new(TMDB, {"tmdb_id": 1}))
    for statement in statements:
        if statement == "CLOSE":
            conn.close()
        else:
            with contextlib.suppress(psycopg.errors.DivisionByZero):
                conn.execute(statement.encode())
    try:
        assert fresh_databases.renew(name, keep=True, conn=conn)
        assert conn.closed
        with connect(server, name) as other:
            assert _state(other) == fresh
    finally:
        fresh_databases.give_back(name)


def test_a_catalog_change_whose_counters_were_reset_is_still_found(fresh_databases: FreshDatabases) -> None:
    """The counters say no catalog row was written since the last reset: a renewal then skips
    reading the catalogs. A test that reset them itself after a change moved their epoch, and
    the catalogs are read."""
    name = fresh_databases.take_layout(LAYOUT)
    with connect(fresh_databases.server, name) as conn:
        conn.execute("CREATE TABLE extra (x int)")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")  # the CREATE's counts are flushed: the reset below loses them
        conn.execute("SELECT pg_stat_reset()")
        writes = conn.execute(databases._CATALOG_WRITES, [fresh_databases.catalogs]).fetchone()
        assert writes == (True, 0), "the counters no longer show the change"
    assert not fresh_databases.renew(name)


def test_a_renewal_reads_the_catalogs_only_where_the_counters_show_a_write(
    fresh_databases: FreshDatabases, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[str] = []

    def count_the_scans(conn: psycopg.Connection[Any], query: Any) -> None:
        if query is fresh_databases.fingerprint_query:
            scans.append(conn.info.dbname)

    name = fresh_databases.take_layout(LAYOUT)
    _read_whole_just_now(fresh_databases, name)
    _watch_the_reset(fresh_databases, monkeypatch, name, count_the_scans)
    try:
        with connect(fresh_databases.server, name) as conn:
            Oban(conn).insert(Job.new(TMDB, {"tmdb_id": 1}))
        assert fresh_databases.renew(name, keep=True)
        assert scans == [], "rows only: the counters showed no catalog written"
        with connect(fresh_databases.server, name) as conn:
            conn.execute("COMMENT ON TABLE oban_jobs IS 'changed'")
        assert not fresh_databases.renew(name)
        assert scans == [name], "a catalog written: read, and found changed"
    finally:
        if name in fresh_databases.made:
            fresh_databases.give_back(name)


def test_the_catalogs_are_read_whole_every_so_often_counters_or_not(fresh_databases: FreshDatabases) -> None:
    """A catalog written where nothing counted it (`track_counts` turned off in the session)
    is found at the latest READ_EVERY renewals later, and the database dropped."""
    name = fresh_databases.take_layout(LAYOUT)
    with connect(fresh_databases.server, name) as conn:
        conn.execute("SET track_counts = off")
        conn.execute("CREATE TABLE unseen (x int)")
    _read_whole_just_now(fresh_databases, name)
    renewed = 0
    while fresh_databases.renew(name, keep=True):
        renewed += 1
        assert renewed < FreshDatabases.READ_EVERY, "never read whole"
    assert renewed == FreshDatabases.READ_EVERY - 1, "the counters showed nothing: read only when due"


class _Odd(psycopg.adapt.Loader):
    def load(self, data: Any) -> Any:
        return "odd"


def test_a_renewed_session_is_handed_on_as_psycopg_connect_would_make_a_new_one(
    fresh_databases: FreshDatabases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next test that takes a renewed database gets the session its renewal ran on (no new
    backend), in a new Connection object: nothing of the last test's session (settings, cursors,
    LISTEN, locks, prepared statements, an open transaction) or of its Connection object
    (adapters, row factory, notify handlers, prepared-statement cache) is left."""
    monkeypatch.setattr(fresh_databases, "KEEP_SESSIONS", 1_000)  # room for this one, however many are kept
    name, conn = fresh_databases.take_layout_connected(LAYOUT)
    pid = conn.info.backend_pid
    heard: list[str] = []
    conn.add_notify_handler(lambda notify: heard.append(notify.payload))
    conn.execute("SET search_path = pg_catalog")
    conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1")
    conn.execute("LISTEN left_behind")
    conn.execute("NOTIFY left_behind, 'before'")
    conn.execute("SELECT pg_advisory_lock(1)")
    conn.execute("SELECT %s::int", [1], prepare=True)
    conn.adapters.register_loader("int4", _Odd)
    conn.row_factory = psycopg.rows.dict_row
    conn.autocommit = False
    conn.execute("SELECT 1")  # a transaction left open
    assert heard == ["before"] and conn.execute("SELECT 1 AS n").fetchone() == {"n": "odd"}

    assert fresh_databases.renew(name, conn=conn) and name in fresh_databases.sessions
    fresh_databases.spare[fresh_databases.made[name].template].remove(name)  # taken, as `_provide` takes it
    again = fresh_databases.connect(name)
    try:
        assert name not in fresh_databases.sessions and again is not conn
        assert again.info.backend_pid == pid and again.autocommit
        assert again.execute("SELECT 1").fetchone() == (1,)
        assert again.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert again.execute("SELECT pg_listening_channels()").fetchall() == []
        assert again.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        assert again.execute(
            "SELECT (SELECT count(*) FROM pg_prepared_statements),"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
        ).fetchone() == (0, 0)
        # psycopg's cache of prepared statements starts empty, as the server's does
        for _ in range(3):
            assert again.execute("SELECT %s::int", [2], prepare=True).fetchone() == (2,)
        again.execute("LISTEN fresh")
        again.execute("NOTIFY fresh, 'after'")
        assert heard == ["before"]  # the old object's handler hears nothing of the new session
    finally:
        fresh_databases.give_back(name, again)


def test_a_kept_session_is_ended_when_its_database_is_taken_without_one(
    fresh_databases: FreshDatabases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that takes a database and connects on its own finds no other session on it."""
    monkeypatch.setattr(fresh_databases, "KEEP_SESSIONS", 1_000)  # room for this one, however many are kept
    name, conn = fresh_databases.take_layout_connected(LAYOUT)
    pid = conn.info.backend_pid
    assert fresh_databases.renew(name, conn=conn) and name in fresh_databases.sessions
    kept = fresh_databases.sessions[name]
    spare = fresh_databases.spare[fresh_databases.made[name].template]

    def next_is_it(template: str) -> str:
        spare.remove(name)  # taken from the spare ones, as `_provide` takes it
        return name

    monkeypatch.setattr(fresh_databases, "_next", next_is_it)
    try:
        assert fresh_databases.take_layout(LAYOUT) == name and name not in fresh_databases.sessions
        assert kept.status == psycopg.pq.ConnStatus.BAD  # ended by the taker
        with connect(fresh_databases.server, name) as own:
            for _ in range(100):  # the server ends the backend on its own time
                if own.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() == (0,):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"the kept session {pid} is still on the database")
    finally:
        monkeypatch.undo()
        fresh_databases.give_back(name)  # renewed, or dropped, whatever the checks found
