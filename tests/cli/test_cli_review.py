"""The CLI review's findings, each through the command line (click's CliRunner) against a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cinegraph_oban.migration.remove_tables import create_legacy_tables
from cinegraph_oban.sql import builder
from conftest import ObanDatabase
from tests.helpers import record_sample_outcomes, run_cli


def _one_error_line(result: Any, code: int) -> str:
    """The single stderr line of a failed run (no Usage block, no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr and "Usage:" not in result.stderr
    return lines[0]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _legacy(conn: psycopg.Connection[Any], rows: int, schema: str = "public") -> None:
    create_legacy_tables(conn, schema)
    for statement in builder.statements("legacy/sample_rows", schema=schema):
        conn.execute(statement.encode(), {"rows": rows})
    conn.execute(builder.sql("legacy/create_schema_migrations", schema=schema), {})


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    return int(row[0]) if row else 0


# 1. schema install at or below the installed version


def test_schema_install_says_when_there_is_nothing_to_do(db_dsn: str) -> None:
    first = run_cli("schema", "install", "--database-url", db_dsn, "--prefix", "v11", "--version", "13")
    assert first.exit_code == 0, first.stderr
    older = run_cli("schema", "install", "--database-url", db_dsn, "--prefix", "v11", "--version", "12")
    assert older.exit_code == 0, older.stderr
    assert older.stdout.strip() == ("Oban schema under 'v11' is already at version 13 (newer than 12); nothing to do")
    assert run_cli("schema", "install", "--database-url", db_dsn, "--prefix", "v11").exit_code == 0
    same = run_cli("schema", "install", "--database-url", db_dsn, "--prefix", "v11")
    assert (
        same.exit_code == 0 and same.stdout.strip() == "Oban schema under 'v11' is already at version 14; nothing to do"
    )


# 2. database URLs in Ecto's, SQLAlchemy's and Heroku's schemes


@pytest.mark.parametrize("scheme", ["ecto", "postgres", "postgresql+psycopg", "postgresql+psycopg2"])
def test_urls_in_other_schemes_are_accepted(oban: ObanDatabase, scheme: str, tmp_path: Path) -> None:
    url = oban.dsn.replace("postgresql://", f"{scheme}://", 1)
    shown = run_cli("schema", "show", "--database-url", url, "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == 14
    from_env = run_cli("enqueue", "--worker", "MyApp.Mailer", "--json", env={"DATABASE_URL": url})
    assert from_env.exit_code == 0, from_env.stderr
    status = run_cli("migrate", "status", "--database-url", url, "--json", cwd=tmp_path)
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["tables"]["skipped_imports"]["present"] == "absent"


def test_demo_reads_an_ecto_url() -> None:
    # Nothing listens on port 1: the URL was read (a connection was tried), not refused as unreadable.
    result = run_cli("demo", "--database-url", "ecto://someone:s3cret@127.0.0.1:1/cinegraph_dev")
    message = _one_error_line(result, 1)
    assert "cannot connect" in message and "s3cret" not in result.stderr


def test_an_unreadable_url_is_one_line_without_the_password(db_dsn: str) -> None:
    for url in ("mysql://someone:s3cret@db.example/cinegraph", "postgresql://someone:s3cret@db/x?pool_size=10"):
        for command in (["schema", "show"], ["migrate", "status"], ["demo"]):
            message = _one_error_line(run_cli(*command, "--database-url", url), 2)
            assert "postgresql://user@host:port/db" in message and "key=value" in message
            assert "s3cret" not in message


# 3. usage errors: one line, exit 2


def test_usage_errors_are_one_line() -> None:
    missing = _one_error_line(run_cli("schema", "show"), 2)
    assert missing == (
        "error: no database given: pass --database-url or set DATABASE_URL (see cinegraph-oban schema show --help)"
    )
    assert "no database given" in _one_error_line(run_cli("migrate", "verify"), 2)
    unknown = _one_error_line(run_cli("enqueue", "--bogus"), 2)
    assert "--bogus" in unknown and unknown.endswith("(see cinegraph-oban enqueue --help)")
    no_value = _one_error_line(run_cli("enqueue", "--worker"), 2)
    assert no_value.endswith("(see cinegraph-oban enqueue --help)")
    assert _one_error_line(run_cli("schema", "nothing"), 2).endswith("(see cinegraph-oban schema --help)")
    bad_range = _one_error_line(run_cli("schema", "install", "--database-url", "host=x", "--version", "99"), 2)
    assert "--version" in bad_range


def test_help_shows_the_environment_variable_instead_of_required() -> None:
    for command in (["schema", "show"], ["enqueue"], ["migrate", "up"], ["jobs"]):
        result = run_cli(*command, "--help")
        assert result.exit_code == 0, result.stderr
        text = _flat(result.stdout)
        assert "[required]" not in text
        assert "--database-url URL" in text and "env var: DATABASE_URL" in text


# 4. enqueue --file


def test_enqueue_file_refuses_single_job_options(oban: ObanDatabase, tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text(json.dumps({"worker": "MyApp.Mailer", "args": {}}) + "\n")
    for extra in (["--worker", "MyApp.Other"], ["--args", '{"a": 1}'], ["--meta", '{"m": 1}']):
        result = run_cli("enqueue", "--database-url", oban.dsn, "--file", str(jobs_file), *extra)
        message = _one_error_line(result, 2)
        assert "--file cannot be combined with" in message and extra[0] in message
    assert oban.count() == 0


def test_enqueue_file_reports_every_bad_line(oban: ObanDatabase, tmp_path: Path) -> None:
    good = [json.dumps({"worker": "MyApp.Mailer", "args": {"n": n}}) for n in range(600)]
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text(
        "\n".join(
            [
                *good,
                "{nope",
                json.dumps({"worker": "MyApp.Mailer", "priority": 12}),
                json.dumps({"args": {}}),
                json.dumps({"worker": "MyApp.Mailer", "colour": "red"}),
                json.dumps({"worker": "MyApp.Mailer", "scheduled_at": "yesterday"}),
            ]
        )
        + "\n"
    )
    result = run_cli("enqueue", "--database-url", oban.dsn, "--file", str(bad_file))
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "5 bad lines; nothing was inserted" in result.stderr
    for number, what in [
        (601, "not valid JSON"),
        (602, "priority"),
        (603, "'worker'"),
        (604, "colour"),
        (605, "scheduled_at"),
    ]:
        assert f"{bad_file}:{number}: " in result.stderr and what in result.stderr
    assert oban.count() == 0, "nothing from the bad file was inserted"

    many = tmp_path / "many.jsonl"
    many.write_text("\n".join(["[]"] * 25) + "\n")
    result = run_cli("enqueue", "--database-url", oban.dsn, "--file", str(many))
    assert result.exit_code == 1 and "25 bad lines" in result.stderr
    assert f"{many}:20: " in result.stderr and f"{many}:21: " not in result.stderr
    assert "and 5 more" in result.stderr


def test_enqueue_file_says_uniqueness_is_not_applied(oban: ObanDatabase, tmp_path: Path) -> None:
    assert "uniqueness is NOT applied" in _flat(run_cli("enqueue", "--help").stdout)
    jobs_file = tmp_path / "jobs.jsonl"
    line = json.dumps({"worker": "Cinegraph.Workers.TMDbDetailsWorker", "args": {"tmdb_id": 278}})
    jobs_file.write_text(f"{line}\n{line}\n")
    result = run_cli("enqueue", "--database-url", oban.dsn, "--file", str(jobs_file))
    assert result.exit_code == 0, result.stderr
    assert "uniqueness is not applied" in result.stdout
    as_json = json.loads(run_cli("enqueue", "--database-url", oban.dsn, "--file", str(jobs_file), "--json").stdout)
    assert as_json["inserted"] == 2 and as_json["unique_applied"] is False


# 5. the worker a bare name resolved to


def test_enqueue_shows_the_resolved_worker(oban: ObanDatabase) -> None:
    text = run_cli("enqueue", "--database-url", oban.dsn, "--worker", "TMDbDetailsWorker", "--args", '{"tmdb_id": 1}')
    assert text.exit_code == 0, text.stderr
    assert "Cinegraph.Workers.TMDbDetailsWorker" in text.stdout and "TMDbDetailsWorker'" in text.stdout
    as_json = run_cli(
        "enqueue", "--database-url", oban.dsn, "--worker", "TMDbDetailsWorker", "--args", '{"tmdb_id": 2}', "--json"
    )
    assert json.loads(as_json.stdout)["worker"] == "Cinegraph.Workers.TMDbDetailsWorker"


# 6. tables: compact JSON, cut with an ellipsis; --json with --csv refused


def test_tables_show_compact_json_cut_with_an_ellipsis(oban: ObanDatabase) -> None:
    from cinegraph_oban import Job

    record_sample_outcomes(oban)
    oban.client().insert(Job.new("MyApp.Mailer", {"to": "a@b.c"}, meta={"note": "word " * 40}))
    wide = run_cli("jobs", "--database-url", oban.dsn, "--worker", "MyApp.Mailer", env={"COLUMNS": "250"})
    assert wide.exit_code == 0, wide.stderr
    assert '{"to":"a@b.c"}' in wide.stdout and "{'" not in wide.stdout
    for command in (["jobs"], ["failures"], ["skipped"]):
        narrow = run_cli(*command, "--database-url", oban.dsn, env={"COLUMNS": "80"})
        assert narrow.exit_code == 0, narrow.stderr
        assert "{'" not in narrow.stdout
        assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
        assert "…" in narrow.stdout
    skipped = run_cli("skipped", "--database-url", oban.dsn, env={"COLUMNS": "250"})
    assert '{"failed_criteria":["votes"]}' in skipped.stdout


def test_json_and_csv_together_are_refused(oban: ObanDatabase) -> None:
    for command in ("failures", "skipped", "jobs"):
        message = _one_error_line(run_cli(command, "--database-url", oban.dsn, "--json", "--csv"), 2)
        assert "--json" in message and "--csv" in message


# 7. migrate status


def test_migrate_status_is_a_readable_table(oban: ObanDatabase, tmp_path: Path) -> None:
    _legacy(oban.conn, 10)
    result = run_cli("migrate", "status", "--database-url", oban.dsn, cwd=tmp_path, env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    assert "{'" not in result.stdout and "None" not in result.stdout
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "failed_imdb_lookups" in line)
    assert "table" in row and "10" in row
    assert f"no manifest.json in {tmp_path / 'cinegraph-oban-export'} (the default --export-dir)" in result.stdout
    assert run_cli("export", "--database-url", oban.dsn, cwd=tmp_path).exit_code == 0
    found = run_cli("migrate", "status", "--database-url", oban.dsn, cwd=tmp_path)
    assert f"export: manifest found at {tmp_path / 'cinegraph-oban-export' / 'manifest.json'}" in found.stdout


# 8. migrate verify must not pass when it compared nothing


def test_migrate_verify_fails_when_nothing_was_compared(oban: ObanDatabase, tmp_path: Path) -> None:
    _legacy(oban.conn, 10)
    before = run_cli("migrate", "verify", "--database-url", oban.dsn, cwd=tmp_path)
    assert before.exit_code == 0 and "no findings" in before.stdout
    up = run_cli("migrate", "up", "--yes", "--database-url", oban.dsn, "--export-dir", "archive", cwd=tmp_path)
    assert up.exit_code == 0, up.stderr
    unverified = run_cli("migrate", "verify", "--database-url", oban.dsn, cwd=tmp_path)
    message = _one_error_line(unverified, 1)
    assert "pass --export-dir" in message and "no findings" not in unverified.stdout
    verified = run_cli("migrate", "verify", "--database-url", oban.dsn, "--export-dir", "archive", cwd=tmp_path)
    assert verified.exit_code == 0, verified.stderr
    assert "no findings" in verified.stdout


# 9. export


def test_export_without_legacy_tables_creates_nothing(oban: ObanDatabase, tmp_path: Path) -> None:
    message = _one_error_line(run_cli("export", "--database-url", oban.dsn, cwd=tmp_path), 1)
    assert message == (
        "error: no legacy tables under schema 'public' (failed_imdb_lookups, skipped_imports); nothing to export"
    )
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite_an_export_without_force(oban: ObanDatabase, tmp_path: Path) -> None:
    _legacy(oban.conn, 5)
    assert run_cli("export", "--database-url", oban.dsn, "--export-dir", "out", cwd=tmp_path).exit_code == 0
    again = run_cli("export", "--database-url", oban.dsn, "--export-dir", "out", cwd=tmp_path)
    message = _one_error_line(again, 1)
    assert str(Path("out") / "manifest.json") in message and "--force" in message
    forced = run_cli("export", "--database-url", oban.dsn, "--export-dir", "out", "--force", cwd=tmp_path)
    assert forced.exit_code == 0, forced.stderr


# 10. indexes create twice


def test_indexes_create_says_which_were_already_there(oban: ObanDatabase) -> None:
    first = run_cli("indexes", "create", "--database-url", oban.dsn)
    assert first.exit_code == 0, first.stderr
    assert first.stdout.count(": created") == 2 and "already there" not in first.stdout
    second = run_cli("indexes", "create", "--database-url", oban.dsn)
    assert second.exit_code == 0, second.stderr
    assert second.stdout.count(": already there") == 2 and "created" not in second.stdout
    dropped = run_cli("indexes", "drop", "--database-url", oban.dsn)
    assert dropped.stdout.count(": dropped") == 2


# 11. schema install --legacy-tables


def test_schema_install_with_legacy_tables_for_trying_the_migration(
    db_conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    where = ["--database-url", db_dsn, "--prefix", "jobs", "--schema", "imports"]
    made = run_cli("schema", "install", *where, "--legacy-tables", "--legacy-rows", "20")
    assert made.exit_code == 0, made.stderr
    assert _count(db_conn, "imports.failed_imdb_lookups") == 20 and _count(db_conn, "imports.skipped_imports") == 20
    assert _count(db_conn, "imports.schema_migrations") == 0
    again = run_cli("schema", "install", *where, "--legacy-tables")
    assert "already exist under schema 'imports'" in _one_error_line(again, 1)
    assert _count(db_conn, "imports.failed_imdb_lookups") == 20
    assert "--legacy-tables" in _one_error_line(
        run_cli("schema", "install", "--database-url", db_dsn, "--legacy-rows", "3"), 2
    )

    up = run_cli("migrate", "up", "--yes", *where, cwd=tmp_path)
    assert up.exit_code == 0, up.stderr
    verified = run_cli("migrate", "verify", *where, cwd=tmp_path)
    assert verified.exit_code == 0 and "no findings" in verified.stdout, verified.stderr
    down = run_cli("migrate", "down", "--yes", *where, cwd=tmp_path)
    assert down.exit_code == 0, down.stderr
    assert _count(db_conn, "imports.skipped_imports") == 20


def test_enqueue_applies_the_default_unique_states_of_the_named_oban_version(oban: ObanDatabase) -> None:
    """A suspended job is a duplicate from Oban 2.23.1 on, not before: --oban-version (or
    CINEGRAPH_OBAN_VERSION) says which Oban the application runs."""
    job = ["--worker", "Cinegraph.Workers.TMDbDetailsWorker", "--args", '{"tmdb_id": 278}', "--json"]
    first = run_cli("enqueue", "--database-url", oban.dsn, *job)
    assert first.exit_code == 0, first.stderr
    oban.conn.execute("UPDATE oban_jobs SET state = 'suspended'")
    by_default = json.loads(run_cli("enqueue", "--database-url", oban.dsn, *job).stdout)
    assert by_default["conflict"] is False
    oban.conn.execute("DELETE FROM oban_jobs WHERE id <> %(id)s", {"id": json.loads(first.stdout)["id"]})
    newer = run_cli("enqueue", "--database-url", oban.dsn, *job, env={"CINEGRAPH_OBAN_VERSION": "2.23.1"})
    assert json.loads(newer.stdout)["conflict"] is True
    assert (
        json.loads(run_cli("enqueue", "--database-url", oban.dsn, *job, "--oban-version", "2.23.0").stdout)["conflict"]
        is False
    )
    refused = run_cli("enqueue", "--database-url", oban.dsn, *job, "--oban-version", "2.24")
    assert "oban_version" in _one_error_line(refused, 1)
