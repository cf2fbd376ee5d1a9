"""Schema names: any name PostgreSQL keeps as given names exactly that schema, everywhere; any
other is refused up front, before anything is created (issue 15).

On main before issue 15, with schemas `%` and `%%` both installed, a client for `%%` wrote into
`"%".oban_jobs`; `%s` and `%(x)s` gave raw driver errors; `a$$b` broke the `DO $$` blocks;
`\\r\\n` was rewritten by the statement splitter; 52..63-byte prefixes installed and then failed
every insert with `channel name too long`.
"""

from __future__ import annotations

import ast
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cinegraph_oban import ConnectionArgumentError, FailedLookup, Job, Oban, ValidationError, install
from cinegraph_oban.db.identifiers import MAX_PREFIX_BYTES, check_prefix
from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables, create_legacy_tables, insert_legacy_row
from cinegraph_oban.oban.health import health
from cinegraph_oban.oban.table import detect
from cinegraph_oban.sql.templates import split_statements
from tests.helpers import TMDB as WORKER
from tests.helpers import run_cli

PACKAGE = Path(__file__).resolve().parents[2] / "cinegraph_oban"

ODD = [
    "%",
    "%%",
    "%s",
    "%(x)s",
    "a$$b",
    "$cg$",
    'x"y',
    "it's",
    "a;b",
    "a\r\nb",
    "a\u2028b",
    "-- c",
    "/* c */",
    "é" * 25 + "x",  # 51 bytes in UTF-8: the longest prefix whose channel fits
]


def _schemas(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute(b"SELECT nspname FROM pg_namespace", {}).fetchall()}


def _table(prefix: str) -> bytes:
    return sql.SQL("SELECT id, args FROM {}.oban_jobs ORDER BY id").format(sql.Identifier(prefix)).as_bytes()


@pytest.mark.parametrize("prefix", ODD, ids=repr)
def test_an_odd_prefix_names_exactly_that_schema(db_conn: psycopg.Connection[Any], db_dsn: str, prefix: str) -> None:
    install(db_conn, 14, prefix)
    assert detect(db_conn, prefix).version == 14
    with contextlib.closing(psycopg.connect(db_dsn, autocommit=True)) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{prefix}.oban_insert")))
        client = Oban(db_conn, prefix=prefix)
        one = client.insert(Job.new(WORKER, {"tmdb_id": 1}, unique=False))
        unique = client.insert(Job.new(WORKER, {"tmdb_id": 2}))
        again = client.insert(Job.new(WORKER, {"tmdb_id": 2}))
        batch = client.insert_all([Job.new(WORKER, {"tmdb_id": n}, unique=False) for n in range(3, 600)])
        with psycopg.connect(db_dsn) as conn:  # inside a caller's transaction: the cursor paths
            inside = client.insert(Job.new(WORKER, {"tmdb_id": 600}), conn=conn)
        notified = list(listener.notifies(timeout=2, stop_after=1))
    assert again.conflict and again.id == unique.id
    rows = db_conn.execute(_table(prefix)).fetchall()
    assert [row[0] for row in rows] == [one.id, unique.id, *batch.ids, inside.id]
    assert notified and notified[0].channel == f"{prefix}.oban_insert"


def test_schemas_percent_and_double_percent_stay_apart(db_conn: psycopg.Connection[Any], db_dsn: str) -> None:
    install(db_conn, 14, "%")
    install(db_conn, 14, "%%")
    with Oban.connect(db_dsn, prefix="%%") as client:
        job = client.insert(Job.new(WORKER, {"tmdb_id": 1}, unique=False))
        client.insert(Job.new(WORKER, {"tmdb_id": 2}))
    assert [row[0] for row in db_conn.execute(_table("%%")).fetchall()][:1] == [job.id]
    assert db_conn.execute(_table("%%")).fetchall().__len__() == 2
    assert db_conn.execute(_table("%")).fetchall() == []


def test_the_migration_reads_and_writes_only_its_own_odd_schema(
    db_conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    for schema in ("%", "%%"):
        install(db_conn, 14, schema)
        create_legacy_tables(db_conn, schema)
        db_conn.execute(
            sql.SQL("CREATE TABLE {}.schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0))")
            .format(sql.Identifier(schema))
            .as_bytes()
        )
    for n, schema in enumerate(("%", "%%"), start=1):
        record = FailedLookup.new(f"tt{n:07d}", "canonical_import", title=f"in {schema}")
        insert_legacy_row(db_conn, schema, replace(record, id=n))
    RemoveRedundantImportTables(db_dsn, prefix="%%", schema="%%", export_dir=tmp_path / "export").up()
    moved = [row[1] for row in db_conn.execute(_table("%%")).fetchall()]
    assert moved == [{"legacy_id": 2, "legacy_rows": 1, "archived_from": "failed_imdb_lookups"}]
    assert db_conn.execute(_table("%")).fetchall() == []
    assert db_conn.execute(b"SELECT to_regclass('\"%\".failed_imdb_lookups') IS NOT NULL").fetchone() == (True,)
    assert db_conn.execute(b"SELECT to_regclass('\"%%\".failed_imdb_lookups')").fetchone() == (None,)


def _count(conn: psycopg.Connection[Any], schema: str, table: str) -> int | None:
    """Rows of schema.table, None when there is no such table."""
    name = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string()
    if conn.execute(b"SELECT to_regclass(%(name)s)", {"name": name}).fetchone() == (None,):
        return None
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    row = conn.execute(query.as_bytes()).fetchone()
    assert row is not None
    return int(row[0])


def test_the_migration_command_reads_and_writes_only_the_schema_it_names(
    db_conn: psycopg.Connection[Any], db_dsn: str, tmp_path: Path
) -> None:
    """Before issue 15 `migrate up --schema %%` backfilled from schema `%`."""
    for schema, rows in (("%", "3"), ("%%", "5")):
        made = run_cli(
            "schema", "install", "--database-url", db_dsn, "--legacy-tables", "--schema", schema, "--legacy-rows", rows
        )
        assert made.exit_code == 0, made.stderr
    where = ["--database-url", db_dsn, "--schema", "%%", "--export-dir", str(tmp_path / "export")]
    plan = run_cli("migrate", "plan", *where)
    assert plan.exit_code == 0, plan.stderr
    assert '"%%".failed_imdb_lookups' in plan.stdout and '"%".failed_imdb_lookups' not in plan.stdout
    up = run_cli("migrate", "up", "--yes", *where)
    assert up.exit_code == 0, up.stderr
    archived = db_conn.execute(
        b"SELECT args->>'archived_from', count(*) FROM public.oban_jobs GROUP BY 1 ORDER BY 1", {}
    ).fetchall()
    assert archived == [("failed_imdb_lookups", 5), ("skipped_imports", 5)]
    assert [_count(db_conn, "%%", t) for t in ("failed_imdb_lookups", "skipped_imports")] == [None, None]
    assert [_count(db_conn, "%", t) for t in ("failed_imdb_lookups", "skipped_imports")] == [3, 3]
    assert (_count(db_conn, "%%", "schema_migrations"), _count(db_conn, "%", "schema_migrations")) == (1, 0)
    down = run_cli("migrate", "down", "--yes", *where)
    assert down.exit_code == 0, down.stderr
    assert [_count(db_conn, "%%", t) for t in ("failed_imdb_lookups", "skipped_imports")] == [5, 5]
    assert [_count(db_conn, "%", t) for t in ("failed_imdb_lookups", "skipped_imports")] == [3, 3]
    assert _count(db_conn, "public", "oban_jobs") == 0


def test_the_plan_shows_a_name_as_the_server_gets_it(tmp_path: Path) -> None:
    """`%` is written `%%` for psycopg; a statement without placeholders is shown with `%`, even
    for a schema whose name looks like a placeholder (before, `"%%(x)s"` was shown)."""
    plan = RemoveRedundantImportTables("postgresql://nobody@127.0.0.1:1/none", schema="%(x)s", export_dir=tmp_path)
    shown = "\n".join(statement for _, statements in plan.plan() for statement in statements)
    assert 'DROP TABLE "%(x)s".failed_imdb_lookups, "%(x)s".skipped_imports;' in shown
    # With placeholders (the backfill's batch) the text stays in psycopg's form, `%` as `%%`.
    assert 'FROM "%%(x)s"."failed_imdb_lookups"\n  WHERE id > %(after)s' in shown


CLI_REFUSALS = {
    "install, prefix": (["schema", "install", "--prefix", "pg_x"], "invalid prefix"),
    "install, legacy schema": (
        ["schema", "install", "--prefix", "jobs", "--legacy-tables", "--schema", "pg_x"],
        "invalid schema",
    ),
    "enqueue": (["enqueue", "--prefix", "", "--worker", "TMDbDetailsWorker", "--args", "{}"], "empty"),
    "schema show": (["schema", "show", "--prefix", "x" * 52], "channel"),
    "migrate up": (["migrate", "up", "--yes", "--schema", "a\x01" + "b" * 63], "truncated"),
    "export": (["export", "--schema", "pg_legacy"], "invalid schema"),
}


@pytest.mark.parametrize("case", list(CLI_REFUSALS))
def test_the_command_line_refuses_a_name_in_one_line(
    db_conn: psycopg.Connection[Any], db_dsn: str, case: str, tmp_path: Path
) -> None:
    args, says = CLI_REFUSALS[case]
    before = _schemas(db_conn)
    result = run_cli(*args, "--database-url", db_dsn, cwd=tmp_path)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _schemas(db_conn) == before
    assert list(tmp_path.iterdir()) == []


REFUSED = {
    "empty": ("", "empty"),
    "pg_": ("pg_jobs", "pg_"),
    "NUL": ("a\x00b", "NUL"),
    "surrogate": ("a\ud800", "surrogate"),
    "52 bytes": ("x" * (MAX_PREFIX_BYTES + 1), "channel"),
    "63 bytes": ("x" * 63, "channel"),
    "64 bytes": ("x" * 64, "truncate"),
    "not a string": (5, "string"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_prefix_postgresql_would_not_keep_is_refused_before_anything_is_created(
    db_conn: psycopg.Connection[Any], db_dsn: str, case: str, tmp_path: Path
) -> None:
    prefix, says = REFUSED[case]
    before = _schemas(db_conn)
    attempts = [
        lambda: install(db_conn, 14, prefix),
        lambda: Oban(db_conn, prefix=prefix),
        lambda: Oban.connect(db_dsn, prefix=prefix),
        lambda: detect(db_conn, prefix),
        lambda: RemoveRedundantImportTables(db_dsn, prefix=prefix, export_dir=tmp_path),
        lambda: health(db_conn, prefix),
    ]
    for attempt in attempts:
        with pytest.raises(ValidationError, match=says) as raised:
            attempt()
        assert raised.value.problems[0].field == "prefix"
    assert _schemas(db_conn) == before


def test_the_longest_prefix_is_51_bytes() -> None:
    assert MAX_PREFIX_BYTES == 51
    assert check_prefix("x" * 51) == "x" * 51
    assert len(("x" * 51 + ".oban_insert").encode()) == 63


def test_install_on_an_ordinary_connection(db_conn: psycopg.Connection[Any], db_dsn: str) -> None:
    """Not autocommit: switched for the install and back. Inside a transaction: refused."""
    with psycopg.connect(db_dsn) as conn:
        assert install(conn, 14, "public") == 0
        assert conn.autocommit is False
        assert detect(conn, "public").version == 14
        conn.rollback()
        conn.execute(b"SELECT 1", {})
        with pytest.raises(ConnectionArgumentError, match="transaction"):
            install(conn, 14, "other")
    assert "other" not in _schemas(db_conn)


# The statement splitter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1; SELECT 2", ["SELECT 1;", "SELECT 2;"]),
        ("SELECT 'a;b'; SELECT 'it''s;'", ["SELECT 'a;b';", "SELECT 'it''s;';"]),
        ("SELECT E'x\\';y';", ["SELECT E'x\\';y';"]),
        ("SELECT 'x\\'; SELECT 2", ["SELECT 'x\\';", "SELECT 2;"]),  # standard strings: \ is plain
        ('CREATE SCHEMA "a;""b"; SELECT 1', ['CREATE SCHEMA "a;""b";', "SELECT 1;"]),
        ("DO $$ BEGIN PERFORM 1; END $$; SELECT 1", ["DO $$ BEGIN PERFORM 1; END $$;", "SELECT 1;"]),
        ("DO $cg$ x; $$ y; $cg$; SELECT 1", ["DO $cg$ x; $$ y; $cg$;", "SELECT 1;"]),
        ("-- a; b\nSELECT 1;", ["-- a; b\nSELECT 1;"]),
        ("/* a; /* b; */ c; */ SELECT 1;", ["/* a; /* b; */ c; */ SELECT 1;"]),
        ("SELECT 1;\n-- only a comment;\n", ["SELECT 1;"]),
        ('CREATE SCHEMA "a\r\nb\u2028c";', ['CREATE SCHEMA "a\r\nb\u2028c";']),
        ("SELECT a$1; SELECT 2", ["SELECT a$1;", "SELECT 2;"]),
    ],
)
def test_split_statements(text: str, expected: list[str]) -> None:
    assert split_statements(text) == expected


# Every statement is executed with parameters


#: Calls that send text psycopg must not touch: statements.prepared() already turned `%%` into
#: `%` in a PREPARE's body (and a DEALLOCATE names a hex hash), so passing params would undo it.
ALLOWED = {
    ("insert/prepared.py", "pg.execute(statement.prepare, prepare=False)"),
    ("insert/prepared.py", "pg.execute(deallocate_sql(statement.name), prepare=False)"),
    ("insert/prepared_async.py", "pg.execute(statement.prepare, prepare=False)"),
    ("insert/prepared_async.py", "pg.execute(deallocate_sql(statement.name), prepare=False)"),
    # COPY merges parameters only when there are some: its text is sent as statements
    # .copy_statement and builder.unparametrized make it (`%%` already turned into `%`).
    ("insert/client.py", "cur.copy(copy_sql, writer=QueuedLibpqWriter(cur))"),
    ("insert/client_async.py", "cur.copy(copy_sql, writer=AsyncQueuedLibpqWriter(cur))"),
    ("migration/export.py", "cur.copy(builder.unparametrized(self._sql('export_rows', table=table)))"),
}


def test_every_execute_in_the_package_passes_parameters() -> None:
    """The `ident` and `literal` filters write `%` as `%%`, which psycopg reads back as `%` only
    when the statement is executed with parameters (`{}` when it has none)."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("execute", "copy", "stream", "executemany"):
                continue
            if len(node.args) >= 2 or any(k.arg == "params" for k in node.keywords):
                continue
            call = ast.unparse(node)
            if (name, call) not in ALLOWED:
                missing.append(f"{name}:{node.lineno}: {call}")
    assert missing == []
