"""The migration under a live application: `up` finishes while the old worker still writes, and
every stopped state (killed, backend terminated, refused) has a way out, by `up` or by `down`.

A writer thread plays the old TMDbDetailsWorker and a debug script: small transactions that
insert rows, bump `retry_count` / `last_retry_at`, change titles and delete rows, in both legacy
tables, until the tables are gone. It keeps a model of every row as it committed it (each row's
text as PostgreSQL prints it, from RETURNING), so the end state is compared row by row with what
the application last committed: the archival jobs, rebuilt by `down`, must be exactly those rows,
and the id sequences must go on where the writer left them.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from cinegraph_oban import VerificationError
from cinegraph_oban.migration import steps
from cinegraph_oban.migration.legacy import LEGACY_TABLES
from cinegraph_oban.migration.steps import APPLICATION_NAME, CRASH_VARIABLE
from conftest import ObanDatabase
from tests.helpers import killed_session_gone, migration, run_cli, run_forked, sample_rows, setup_legacy

ROWS = 60

INSERT = {
    "failed_imdb_lookups": (
        "INSERT INTO legacy.failed_imdb_lookups (imdb_id, title, source, reason, inserted_at, updated_at) "
        "VALUES (%s, 'Live', 'canonical_import', 'no_tmdb_match', now(), now()) RETURNING id"
    ),
    "skipped_imports": (
        "INSERT INTO legacy.skipped_imports (tmdb_id, title, inserted_at) VALUES (%s, 'Live', now()) RETURNING id"
    ),
}
UPDATE = {
    "failed_imdb_lookups": (
        "UPDATE legacy.failed_imdb_lookups AS t SET retry_count = coalesce(retry_count, 0) + 1, "
        "last_retry_at = now()::timestamp(0), updated_at = now()::timestamp(0) WHERE id = %s RETURNING id, t::text"
    ),
    "skipped_imports": (
        "UPDATE legacy.skipped_imports AS t SET title = title || '!', checked_at = now() WHERE id = %s "
        "RETURNING id, t::text"
    ),
}


class Writer(threading.Thread):
    """The application still writing: commits small transactions until the legacy tables are gone
    (or it is stopped), keeping `rows` (table -> id -> row text) as it committed them.

    It pauses 2 ms after each commit: about 100 commits during an `up` of 60 rows in batches
    of 5, so every step still sees writes, without the writer and its backend taking a whole
    core from the tests running beside it."""

    def __init__(self, dsn: str, conn: psycopg.Connection[Any], seed: int = 7) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.random = random.Random(seed)
        self.rows = {table: dict(self._read(conn, table)) for table in LEGACY_TABLES}
        self.last_id = {table: max(self.rows[table], default=0) for table in LEGACY_TABLES}
        self.stop = threading.Event()
        self.commits = 0
        self.errors: list[str] = []
        self.gone = False

    @staticmethod
    def _read(conn: psycopg.Connection[Any], table: str) -> list[tuple[int, str]]:
        return conn.execute(f"SELECT id, t::text FROM legacy.{table} AS t ORDER BY id".encode()).fetchall()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                table = self.random.choice(LEGACY_TABLES)
                try:
                    with conn.transaction():
                        done = self._one(conn, table)
                except pg_errors.UndefinedTable:
                    self.gone = True  # the drop committed: the old worker now fails, as it will
                    return
                except psycopg.Error as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    return
                for kind, row_id, text in done:
                    if kind == "gone":
                        self.rows[table].pop(row_id, None)
                    else:
                        self.rows[table][row_id] = text
                        self.last_id[table] = max(self.last_id[table], row_id)
                self.commits += 1
                self.stop.wait(0.002)

    def _one(self, conn: psycopg.Connection[Any], table: str) -> list[tuple[str, int, str]]:
        ids = list(self.rows[table])
        action = self.random.random()
        if action < 0.35 or not ids:
            value = (
                f"tt9{self.random.randrange(10**6):06d}"
                if table == "failed_imdb_lookups"
                else self.random.randrange(10**6)
            )
            row = conn.execute(INSERT[table].encode(), (value,)).fetchone()
            assert row is not None
            text = conn.execute(f"SELECT t::text FROM legacy.{table} AS t WHERE id = %s".encode(), (row[0],)).fetchone()
            assert text is not None
            return [("row", int(row[0]), text[0])]
        chosen = self.random.choice(ids)
        if action < 0.85:
            row = conn.execute(UPDATE[table].encode(), (chosen,)).fetchone()
            return [("row", int(row[0]), row[1])] if row else []
        conn.execute(f"DELETE FROM legacy.{table} WHERE id = %s".encode(), (chosen,))
        return [("gone", chosen, "")]

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=60)
        assert not self.is_alive()
        assert self.errors == [], "the writer got an error before the tables were gone"


def rows_now(conn: psycopg.Connection[Any]) -> dict[str, dict[int, str]]:
    return {table: dict(Writer._read(conn, table)) for table in LEGACY_TABLES}


def next_ids(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        table: int(conn.execute(f"SELECT nextval('legacy.{table}_id_seq')".encode()).fetchone()[0])  # type: ignore[index]
        for table in LEGACY_TABLES
    }


def archival_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM oban_jobs WHERE args ? 'archived_from'").fetchone()
    return int(row[0]) if row else 0


def capture_objects(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT 'table' FROM pg_class WHERE relname = 'cinegraph_oban_legacy_changes' UNION ALL "
            "SELECT 'function' FROM pg_proc WHERE proname = 'cinegraph_oban_capture_legacy_change' UNION ALL "
            "SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE 'cinegraph_oban_capture%'"
        ).fetchall()
    ]


@pytest.fixture
def live(oban: ObanDatabase) -> ObanDatabase:
    setup_legacy(oban.conn, oban)
    sample_rows(oban.conn, "legacy", ROWS)
    return oban


def test_up_finishes_while_the_application_writes_and_down_restores_exactly(live: ObanDatabase, tmp_path: Path) -> None:
    """Writes all through up (batches of 5 so the backfill takes many statements), none refused
    before the drop; afterwards `down` rebuilds every row as the writer last committed it, and
    the sequences continue after the writer's last id."""
    writer = Writer(live.dsn, live.conn)
    writer.start()
    summary = migration(live.dsn, tmp_path, schema="legacy", batch_size=5).up()
    writer.join(timeout=60)
    assert writer.gone and writer.errors == [], writer.errors
    assert writer.commits > 0
    assert summary.archived == {table: len(writer.rows[table]) for table in LEGACY_TABLES}
    assert capture_objects(live.conn) == []  # gone with the tables, in the drop's transaction
    migration(live.dsn, tmp_path, schema="legacy").down()
    assert rows_now(live.conn) == writer.rows
    assert next_ids(live.conn) == {table: writer.last_id[table] + 1 for table in LEGACY_TABLES}
    assert archival_jobs(live.conn) == 0


STEPS = [
    "after-preflight",
    "after-export",
    "backfill:failed_imdb_lookups:2",
    "backfill:skipped_imports:1",
    "after-backfill",
    "catch_up:failed_imdb_lookups:1",
    "after-catch-up",
    "after-verify",
    "before-commit",
]


def _killed_up(live: ObanDatabase, tmp_path: Path, point: str) -> Writer:
    """`migrate up` SIGKILLed at `point` while the writer commits; the writer goes on."""
    writer = Writer(live.dsn, live.conn)
    writer.start()
    args = ["migrate", "up", "--yes", "--schema", "legacy", "--batch-size", "5", "--export-dir", str(tmp_path)]
    killed = run_forked(*args, "--database-url", live.dsn, env={CRASH_VARIABLE: point})
    assert killed.exit_code == -signal.SIGKILL, killed.stderr
    killed_session_gone(live.dsn)
    return writer


@pytest.mark.parametrize("point", STEPS)
def test_killed_with_a_live_writer_then_up_again_ends_with_every_row(
    live: ObanDatabase, tmp_path: Path, point: str
) -> None:
    writer = _killed_up(live, tmp_path, point)
    status = run_cli(
        "migrate", "status", "--schema", "legacy", "--export-dir", str(tmp_path), "--database-url", live.dsn
    )
    assert status.exit_code == 0, status.stderr
    expected_state = "pending" if point == "after-preflight" else "unfinished"
    assert f"RemoveRedundantImportTables: {expected_state};" in status.stdout
    assert "next: " in status.stdout and "migrate up" in status.stdout
    again = run_cli(
        "migrate",
        "up",
        "--yes",
        "--schema",
        "legacy",
        "--batch-size",
        "5",
        "--export-dir",
        str(tmp_path),
        "--database-url",
        live.dsn,
    )
    assert again.exit_code == 0, again.stderr
    writer.join(timeout=60)
    assert writer.gone and writer.errors == [], writer.errors
    assert capture_objects(live.conn) == []
    migration(live.dsn, tmp_path, schema="legacy").down()
    assert rows_now(live.conn) == writer.rows
    assert next_ids(live.conn) == {table: writer.last_id[table] + 1 for table in LEGACY_TABLES}


@pytest.mark.parametrize("point", STEPS)
def test_killed_with_a_live_writer_then_down_returns_to_before_up(
    live: ObanDatabase, tmp_path: Path, point: str
) -> None:
    writer = _killed_up(live, tmp_path, point)
    down = run_cli(
        "migrate", "down", "--yes", "--schema", "legacy", "--export-dir", str(tmp_path), "--database-url", live.dsn
    )
    assert down.exit_code == 0, down.stderr
    writer.finish()  # the application wrote all through down; now it stops
    assert rows_now(live.conn) == writer.rows  # the legacy tables untouched
    assert archival_jobs(live.conn) == 0 and capture_objects(live.conn) == []
    assert live.conn.execute("SELECT count(*) FROM legacy.schema_migrations").fetchone() == (0,)


#: Where the migration's sessions are terminated (pg_terminate_backend): in the preflight, while
#: a table is exported, in a backfill batch, in a catch-up round, while a table is verified, and
#: inside the drop's transaction before it commits.
TERMINATED_AT = [
    "preflight",
    "export:failed_imdb_lookups",
    "backfill:failed_imdb_lookups:2",
    "catch_up:failed_imdb_lookups:1",
    "verify:skipped_imports",
    "before-commit",
]


def _terminated_up(live: ObanDatabase, tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch) -> Writer:
    """`up` whose every session (found by its application_name) is terminated at `point` while
    the writer commits; the writer goes on."""
    writer = Writer(live.dsn, live.conn)
    writer.start()
    fired: list[int] = []

    def terminate(name: str) -> None:
        if name == point and not fired:
            with psycopg.connect(live.dsn, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND datname = current_database() AND pid <> pg_backend_pid()",
                    (APPLICATION_NAME,),
                ).fetchone()
            fired.append(int(ended[0]) if ended else 0)

    monkeypatch.setattr(steps, "_fault_hook", terminate)
    with pytest.raises(psycopg.OperationalError) as info:  # the session is gone: an error, not a hang
        migration(live.dsn, tmp_path, schema="legacy", batch_size=5).up()
    monkeypatch.setattr(steps, "_fault_hook", None)
    assert fired and fired[0] >= 1, fired  # the migrator's sessions, and only they, were terminated
    assert "connection" in str(info.value).lower() or "terminat" in str(info.value).lower(), info.value
    assert writer.is_alive() and writer.errors == []
    return writer


@pytest.mark.parametrize("point", TERMINATED_AT)
def test_the_migrators_sessions_terminated_then_up_again_ends_with_every_row(
    live: ObanDatabase, tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = _terminated_up(live, tmp_path, point, monkeypatch)
    summary = migration(live.dsn, tmp_path, schema="legacy", batch_size=5).up()
    writer.join(timeout=60)
    assert writer.gone and writer.errors == [], writer.errors
    assert summary.archived == {table: len(writer.rows[table]) for table in LEGACY_TABLES}
    assert capture_objects(live.conn) == []
    migration(live.dsn, tmp_path, schema="legacy").down()
    assert rows_now(live.conn) == writer.rows
    assert next_ids(live.conn) == {table: writer.last_id[table] + 1 for table in LEGACY_TABLES}


@pytest.mark.parametrize("point", TERMINATED_AT)
def test_the_migrators_sessions_terminated_then_down_returns_to_before_up(
    live: ObanDatabase, tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = _terminated_up(live, tmp_path, point, monkeypatch)
    migration(live.dsn, tmp_path, schema="legacy").down()
    writer.finish()
    assert rows_now(live.conn) == writer.rows
    assert archival_jobs(live.conn) == 0 and capture_objects(live.conn) == []
    assert live.conn.execute("SELECT count(*) FROM legacy.schema_migrations").fetchone() == (0,)


def test_two_migrators_with_a_live_writer_exactly_one_proceeds(live: ObanDatabase, tmp_path: Path) -> None:
    writer = Writer(live.dsn, live.conn)
    writer.start()
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            results[name] = migration(live.dsn, tmp_path / name, schema="legacy", batch_size=5).up()
        except Exception as exc:  # the refusal is what is checked
            results[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    writer.join(timeout=60)
    outcomes = sorted(type(r).__name__ for r in results.values())
    assert outcomes == ["LockNotAcquiredError", "MigrationSummary"], results
    migration(live.dsn, tmp_path, schema="legacy").down()
    assert rows_now(live.conn) == writer.rows


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("inserted_at", "infinity"),
        ("inserted_at", "-infinity"),
        ("updated_at", "10000-01-01 00:00:00"),
        ("last_retry_at", "0044-03-15 00:00:00 BC"),
    ],
)
def test_preflight_refuses_a_time_it_cannot_carry_before_writing_anything(
    live: ObanDatabase, tmp_path: Path, column: str, value: str
) -> None:
    live.conn.execute(f"UPDATE legacy.failed_imdb_lookups SET {column} = %s WHERE id IN (3, 9)".encode(), (value,))
    with pytest.raises(VerificationError) as info:
        migration(live.dsn, tmp_path, schema="legacy").up()
    message = str(info.value)
    assert "failed_imdb_lookups: 2 rows (ids 3, 9)" in message and "nothing was changed" in message
    assert "migrate up` again" in message
    assert archival_jobs(live.conn) == 0 and capture_objects(live.conn) == []
    assert not (tmp_path / "export" / "manifest.json").exists()


def test_extreme_values_are_carried_exactly(live: ObanDatabase, tmp_path: Path) -> None:
    """The largest and smallest integers, JSON of every kind, the edges of years 1 and 9999."""
    conn = live.conn
    conn.execute(
        "UPDATE legacy.failed_imdb_lookups SET year = 2147483647, retry_count = -2147483648, "
        "inserted_at = '0001-01-01 00:00:00', updated_at = '9999-12-31 23:59:59', "
        """metadata = '{"n": 1e400, "deep": [[[{"x": null}]]], "s": "\\u00e9\\"\\\\", "e": "", "z": -0.0}' WHERE id = 1"""
    )
    conn.execute("UPDATE legacy.failed_imdb_lookups SET year = -2147483648, metadata = 'null' WHERE id = 2")
    conn.execute("UPDATE legacy.failed_imdb_lookups SET metadata = '[1, \"two\", true, false, null]' WHERE id = 4")
    conn.execute("UPDATE legacy.failed_imdb_lookups SET metadata = '12345678901234567890.123456789' WHERE id = 5")
    conn.execute(
        "UPDATE legacy.skipped_imports SET tmdb_id = 2147483647, checked_at = '9999-12-31 23:59:59.999999', "
        "inserted_at = '0001-01-01 00:00:00' WHERE id = 1"
    )
    conn.execute("UPDATE legacy.skipped_imports SET tmdb_id = -2147483648, criteria_failed = '\"text\"' WHERE id = 2")
    before = rows_now(conn)
    migration(live.dsn, tmp_path, schema="legacy").up()
    migration(live.dsn, tmp_path, schema="legacy").down()
    assert rows_now(conn) == before


def test_down_refuses_when_every_archival_job_of_a_table_was_pruned(live: ObanDatabase, tmp_path: Path) -> None:
    """All of a table's archival jobs share the migration's timestamp, so Oban's Pruner removes them
    together: down must not recreate the table empty. It names the export, which restores it."""
    before = rows_now(live.conn)
    m = migration(live.dsn, tmp_path, schema="legacy")
    m.up()
    live.conn.execute("""DELETE FROM oban_jobs WHERE args @> '{"archived_from": "failed_imdb_lookups"}'""")
    with pytest.raises(VerificationError) as info:
        m.down()
    assert "failed_imdb_lookups: no archival job of it is left" in str(info.value)
    assert f"--from-export {tmp_path / 'export'}" in str(info.value)
    assert live.conn.execute("SELECT to_regclass('legacy.failed_imdb_lookups')").fetchone() == (None,)
    status = m.status()
    assert status["state"] == "migrated" and "--from-export" in status["next"]
    m.down(from_export=tmp_path / "export")
    assert rows_now(live.conn) == before


def test_down_after_up_of_an_empty_table_restores_it_empty(oban: ObanDatabase, tmp_path: Path) -> None:
    setup_legacy(oban.conn, oban)
    oban.conn.execute("INSERT INTO legacy.skipped_imports (tmdb_id, inserted_at) VALUES (1, now()), (2, now())")
    m = migration(oban.dsn, tmp_path, schema="legacy")
    m.up()
    m.down()  # failed_imdb_lookups had no rows, so no archival job: the export says it was empty
    assert {table: len(rows) for table, rows in rows_now(oban.conn).items()} == {
        "failed_imdb_lookups": 0,
        "skipped_imports": 2,
    }


def test_ctrl_c_says_what_to_run_next_and_up_then_finishes(live: ObanDatabase, tmp_path: Path) -> None:
    """A real `migrate up` process, interrupted (SIGINT) while it waits for a lock a long
    transaction holds: exit 130, a message that names the commands that get out, nothing half
    done; after the transaction ends, `up` again finishes."""
    import os
    import subprocess
    import time

    from tests.helpers import SCRIPT, UNSET, ctrl_c_as_in_a_terminal

    holder = psycopg.connect(live.dsn)
    holder.execute("LOCK TABLE legacy.skipped_imports IN SHARE MODE")  # a long transaction of the application
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    args = ["migrate", "up", "--yes", "--schema", "legacy", "--export-dir", str(tmp_path), "--database-url", live.dsn]
    with ctrl_c_as_in_a_terminal():  # the child starts with SIGINT as a terminal gives it
        process = subprocess.Popen(
            [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    try:
        with psycopg.connect(live.dsn, autocommit=True) as watcher:
            for _ in range(1200):  # the change capture's CREATE TRIGGER waiting for the lock
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'CREATE TRIGGER%'"
                ).fetchone()
                if row == (1,):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("up never waited for the lock")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        holder.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted; nothing is half-written" in stderr and "Traceback" not in stderr
    assert "`cinegraph-oban migrate up` finishes from here" in stderr and "migrate down" in stderr
    assert capture_objects(live.conn) == [] and archival_jobs(live.conn) == 0  # the capture's transaction rolled back
    killed_session_gone(live.dsn)
    before = rows_now(live.conn)
    again = run_cli(*args)
    assert again.exit_code == 0, again.stderr
    migration(live.dsn, tmp_path, schema="legacy").down()
    assert rows_now(live.conn) == before


def test_verify_reports_its_progress_and_real_duration(live: ObanDatabase, tmp_path: Path) -> None:
    """Between backfill and drop (archival jobs there, tables too): both checks run, on bulk
    sessions in parallel as up's own verify, each table reported as it starts and ends."""
    import datetime

    m = migration(live.dsn, tmp_path, schema="legacy")
    with psycopg.connect(live.dsn, autocommit=True) as conn:
        for table in LEGACY_TABLES:
            m._backfill(conn, table, ROWS, datetime.datetime(2026, 1, 1), batch=100)
    seen: list[tuple[str, int, int]] = []
    checked = migration(live.dsn, tmp_path, schema="legacy", progress=lambda *step: seen.append(step)).verify()
    assert checked.findings == [] and checked.seconds > 0
    assert sorted(s for s in seen if s[1] == s[2]) == [
        ("verify failed_imdb_lookups", ROWS, ROWS),
        ("verify skipped_imports", ROWS, ROWS),
    ]
    shown = run_cli(
        "migrate", "verify", "--json", "--schema", "legacy", "--export-dir", str(tmp_path), "--database-url", live.dsn
    )
    assert shown.exit_code == 0, shown.stderr
    import json

    assert json.loads(shown.stdout)["seconds"] > 0


def test_the_last_writes_are_checked_against_the_jobs_written_for_them_under_the_lock(
    live: ObanDatabase, tmp_path: Path
) -> None:
    """verify_ids (run under the drop's lock) compares the rows of the last catch-up round with
    the archival jobs that round wrote, by their ids: a changed job and a job gone are named."""
    from datetime import datetime

    m = migration(live.dsn, tmp_path, schema="legacy")
    with psycopg.connect(live.dsn, autocommit=True) as conn:
        m._create_capture(conn)
        conn.execute("UPDATE legacy.failed_imdb_lookups SET retry_count = 3 WHERE id IN (2, 4, 6)")
        done = m._catch_up(conn, "failed_imdb_lookups", ROWS, datetime(2026, 1, 1))
        assert done.ids == [2, 4, 6] and len(done.job_ids) == 3 and done.archived == 3
        assert m._verify_ids(conn, "failed_imdb_lookups", done) == []
        first, second, _ = done.job_ids
        conn.execute('UPDATE oban_jobs SET meta = meta || \'{"title": "changed"}\' WHERE id = %s', (first,))
        conn.execute("DELETE FROM oban_jobs WHERE id = %s", (second,))
        findings = {f.kind: f.example_ids for f in m._verify_ids(conn, "failed_imdb_lookups", done)}
        assert findings == {"different": (2,), "missing": (4,)}
