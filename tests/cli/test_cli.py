"""The command line against a real database: in this process through click's CliRunner, and as
the real console script where the process itself is what is tested."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cinegraph_oban.cli
from conftest import ObanDatabase
from tests.helpers import record_sample_outcomes, run_cli, run_script


def test_version_and_help() -> None:
    """The installed console script starts, and its entry point is the CLI."""
    version = run_script("--version").stdout
    assert version.startswith("cinegraph-oban, version ")
    out = run_script("--help").stdout
    for command in ("demo", "enqueue", "schema"):
        assert command in out
    # `python -m cinegraph_oban` (and `-m cinegraph_oban.cli`) is the same command line.
    for module in ("cinegraph_oban", "cinegraph_oban.cli"):
        ran = subprocess.run(
            [sys.executable, "-m", module, "--version"], check=False, capture_output=True, text=True, timeout=60
        )
        assert (ran.returncode, ran.stdout) == (0, version), ran.stderr


def _into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """`cinegraph-oban ARGS | head`, the reader gone before the command writes (the pipe's read
    end closed first)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "cinegraph_oban", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_output_its_reader_stopped_reading_ends_quietly(oban: ObanDatabase) -> None:
    """A command whose reader has stopped reading stops with no error line and exit 141 (a
    writer its reader left, as the shell reports it), as cat does: for click's output (the
    plan's SQL) and for rich's (the schema's tables) alike."""
    plan = _into_a_closed_pipe("migrate", "plan", "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert (plan.returncode, plan.stderr) == (141, b"")
    show = _into_a_closed_pipe("schema", "show", "--database-url", oban.dsn)
    assert (show.returncode, show.stderr) == (141, b"")


def test_demo_against_a_given_database_leaves_nothing_behind(db_dsn: str, db_conn: object) -> None:
    result = run_cli("demo", "--jobs", "300", env={"DATABASE_URL": db_dsn})
    assert result.exit_code == 0, result.stderr
    assert "conflict=True" in result.stdout and "Done" in result.stdout
    assert "rollback identical: True" in " ".join(result.stdout.split())
    assert "GIN-served one agree: True" in " ".join(result.stdout.split())
    schemas = db_conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cinegraph_oban_demo%'").fetchall()  # type: ignore[attr-defined]
    assert schemas == []


@pytest.mark.skipif(
    not any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not __import__("shutil").which("initdb"),
    reason="the throwaway server needs PostgreSQL's server binaries (initdb, pg_ctl) installed",
)
def test_demo_without_a_database_starts_and_removes_a_throwaway_server() -> None:
    result = run_cli("demo", "--jobs", "200")
    assert result.exit_code == 0, result.stderr
    assert "throwaway PostgreSQL" in result.stdout and "Done" in result.stdout


def test_errors_are_one_line_without_traceback(oban: ObanDatabase) -> None:
    """From a real process: what a user sees is one line, no interpreter traceback."""
    bad_url = run_script("schema", "show", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert bad_url.exit_code == 1
    assert "cannot connect" in bad_url.stderr and "Traceback" not in bad_url.stderr
    no_table = run_script("schema", "show", "--database-url", oban.dsn, "--prefix", "missing")
    assert no_table.exit_code == 1 and "missing.oban_jobs does not exist" in no_table.stderr
    bare = run_script("enqueue", "--database-url", oban.dsn, "--worker", "Mailer", "--args", "{}")
    assert bare.exit_code == 1 and "bare module name" in bare.stderr and "Traceback" not in bare.stderr
    bad_json = run_script("enqueue", "--database-url", oban.dsn, "--worker", "MyApp.Mailer", "--args", "{nope")
    assert bad_json.exit_code == 2 and "not valid JSON" in bad_json.stderr


def test_enqueue_one_and_a_file(oban: ObanDatabase, tmp_path: Path) -> None:
    one = run_cli(
        "enqueue", "--database-url", oban.dsn, "--worker", "TMDbDetailsWorker", "--args", '{"tmdb_id": 278}', "--json"
    )
    assert one.exit_code == 0, one.stderr
    assert json.loads(one.stdout) == {
        "id": 1,
        "worker": "Cinegraph.Workers.TMDbDetailsWorker",
        "state": "available",
        "queue": "tmdb",
        "conflict": False,
    }
    lines = [json.dumps({"worker": "MyApp.Mailer", "args": {"n": n}}) for n in range(5)]
    good = tmp_path / "jobs.jsonl"
    good.write_text("\n".join(lines) + "\n")
    assert run_cli("enqueue", "--database-url", oban.dsn, "--file", str(good)).exit_code == 0
    assert oban.count() == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines, json.dumps({"worker": "MyApp.Mailer", "args": {"n": 1}, "priority": 12})]) + "\n")
    result = run_cli("enqueue", "--database-url", oban.dsn, "--file", str(bad))
    assert result.exit_code == 1 and f"{bad}:6" in result.stderr and "priority" in result.stderr
    assert oban.count() == 6, "nothing from the bad file was inserted"


def test_schema_show_and_install(db_dsn: str) -> None:
    assert run_cli("schema", "install", "--database-url", db_dsn, "--version", "12").exit_code == 0
    shown = run_cli("schema", "show", "--database-url", db_dsn, "--json")
    assert shown.exit_code == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["version"] == 12 and info["max_priority"] == 9 and "suspended" not in info["states"]
    assert run_cli("schema", "install", "--database-url", db_dsn).exit_code == 0
    assert json.loads(run_cli("schema", "show", "--database-url", db_dsn, "--json").stdout)["version"] == 14


def test_failures_and_skipped_as_table_json_and_csv(oban: ObanDatabase) -> None:
    record_sample_outcomes(oban)
    table = run_cli("failures", "--database-url", oban.dsn)
    assert table.exit_code == 0, table.stderr
    assert "tt0" in table.stdout and "3 rows" in table.stdout
    as_json = json.loads(
        run_cli("failures", "--database-url", oban.dsn, "--json", "--source", "canonical_import").stdout
    )
    assert sorted(r["imdb_id"] for r in as_json) == ["tt0", "tt2"]
    assert json.loads(run_cli("failures", "--database-url", oban.dsn, "--json", "--state", "discarded").stdout) == []
    assert len(json.loads(run_cli("failures", "--database-url", oban.dsn, "--json", "--limit", "1").stdout)) == 1
    assert json.loads(run_cli("failures", "--database-url", oban.dsn, "--json", "--since", "1h").stdout)
    assert json.loads(run_cli("failures", "--database-url", oban.dsn, "--json", "--since", "2999-01-01").stdout) == []
    csv_out = run_cli("skipped", "--database-url", oban.dsn, "--csv").stdout.splitlines()
    assert csv_out[0].startswith("tmdb_id,title,reason,criteria_failed")
    assert csv_out[1].startswith("278,Shawshank,quality_criteria,")
    bad = run_cli("failures", "--database-url", oban.dsn, "--since", "yesterday")
    assert bad.exit_code == 2 and "duration like 7d" in bad.stderr


def test_jobs_lists_by_worker_state_queue_and_meta(oban: ObanDatabase) -> None:
    record_sample_outcomes(oban)
    listed = json.loads(
        run_cli(
            "jobs", "--database-url", oban.dsn, "--json", "--state", "cancelled", "--meta", "source=oscar_import"
        ).stdout
    )
    assert [r["args"]["imdb_id"] for r in listed] == ["tt1"]
    assert (
        len(
            json.loads(
                run_cli(
                    "jobs",
                    "--database-url",
                    oban.dsn,
                    "--json",
                    "--worker",
                    "Elixir.Cinegraph.Workers.TMDbDetailsWorker",
                ).stdout
            )
        )
        == 4
    )
    bad = run_cli("jobs", "--database-url", oban.dsn, "--state", "sleeping")
    assert bad.exit_code == 2 and "unknown job states" in bad.stderr
    assert "Jobs" in run_cli("jobs", "--database-url", oban.dsn).stdout


#: Calls that make or run SQL: psycopg's, and the templates' rendering.
SQL_CALLS = frozenset(
    {"execute", "executemany", "copy", "stream", "cursor", "transaction", "fetchone", "fetchall", "fetchmany"}
    | {"render", "render_statements", "split_statements", "unparametrized"}
    | {"sql", "statement", "statements", "copy_sql"}  # the statement builder's
)
#: Modules that make SQL text: the statement builder and its templates, and psycopg's composition.
SQL_MODULES = ("cinegraph_oban.sql", "psycopg.sql")


def _sql_in(source: str) -> list[str]:
    """Each place in `source` that makes or runs SQL: a call in SQL_CALLS (as a method or a bare
    name), or an import from SQL_MODULES (or of `sql` from psycopg)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in SQL_CALLS:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            names = {alias.name for alias in node.names}
            if (node.module or "").startswith(SQL_MODULES) or (node.module == "psycopg" and "sql" in names):
                found.append(f"{node.lineno}: from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Import):
            found.extend(
                f"{node.lineno}: import {alias.name}" for alias in node.names if alias.name.startswith(SQL_MODULES)
            )
    return found


def test_the_cli_package_renders_and_runs_no_sql_of_its_own() -> None:
    """Every statement a command runs is the library's: the CLI parses, calls and prints."""
    package = Path(cinegraph_oban.cli.__file__).parent
    modules = sorted(package.rglob("*.py"))
    assert {p.name for p in modules} >= {"__init__.py", "common.py", "schema.py", "indexes.py", "migrate.py"}
    found = [f"{p.relative_to(package).as_posix()}:{where}" for p in modules for where in _sql_in(p.read_text())]
    assert found == []
    # The walk sees what the CLI once did itself.
    assert len(_sql_in('rows = conn.execute(render("indexes/state.sql.j2").encode(), {}).fetchall()')) == 3
    assert len(_sql_in("from cinegraph_oban.sql.templates import render_statements\nfrom psycopg import sql")) == 2
    assert len(_sql_in('from cinegraph_oban.sql import builder\nconn.execute(builder.sql("insert/count"), {})')) == 3


def test_what_the_commands_read_and_write_through_the_library(oban: ObanDatabase) -> None:
    """outcome_index_state (indexes create/drop), legacy_kinds (schema install --legacy-tables,
    export) and create_legacy_sample (schema install --legacy-tables), called directly."""
    from cinegraph_oban.meta.queries import OUTCOME_INDEXES, create_outcome_indexes, outcome_index_state
    from cinegraph_oban.migration.legacy import legacy_kinds
    from cinegraph_oban.migration.sample_data import create_legacy_sample

    assert outcome_index_state(oban.conn) == {}
    create_outcome_indexes(oban.conn)
    assert outcome_index_state(oban.conn) == dict.fromkeys(OUTCOME_INDEXES, True)
    assert outcome_index_state(oban.conn, "elsewhere") == {}
    assert legacy_kinds(oban.conn, "imports") == {}
    create_legacy_sample(oban.conn, "imports", 7)
    assert legacy_kinds(oban.conn, "imports") == {"failed_imdb_lookups": "a table", "skipped_imports": "a table"}
    for table in ("failed_imdb_lookups", "skipped_imports"):
        assert oban.conn.execute(f"SELECT count(*) FROM imports.{table}".encode()).fetchone() == (7,)
    assert oban.conn.execute("SELECT to_regclass('imports.schema_migrations') IS NOT NULL").fetchone() == (True,)
    oban.conn.execute("CREATE VIEW public.skipped_imports AS SELECT 1 AS id")
    assert legacy_kinds(oban.conn, "public") == {"skipped_imports": "a view"}
