"""The pytest plugin (entry point `pytest11`): Oban test databases for any Python test suite.

    @pytest.mark.oban(version=14, prefix="public", legacy_tables=True, legacy_rows=50)
    def test_enqueues(oban_database):
        oban_database.oban.insert(Job.new("Cinegraph.Workers.TMDbDetailsWorker", {"tmdb_id": 1}))
        assert_enqueued(oban_database.conn, worker="Cinegraph.Workers.TMDbDetailsWorker", args={"tmdb_id": 1})

`oban_database` is a fresh database per test with the Oban schema at the marker's version and
prefix (default 14, `public`), made the way Elixir Oban's migrations make it; with
`legacy_tables=True` it also has `failed_imdb_lookups`, `skipped_imports` (with `legacy_rows`
realistic rows each) and Ecto's `schema_migrations`. The server is `--cinegraph-oban-dsn`, else
`CINEGRAPH_OBAN_TEST_DSN`, else postgresql://postgres@127.0.0.1:5432/postgres. The database is
dropped after the test. `oban_database.oban` targets the Oban version the marker's
`oban_version` names, else `--cinegraph-oban-version`, else `CINEGRAPH_OBAN_VERSION`, else 2.22
(its default unique states: from 2.23.1 a suspended job counts as a duplicate).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from cinegraph_oban.insert.client import Oban
from cinegraph_oban.model.unique import DEFAULT_OBAN_VERSION, check_oban_version
from cinegraph_oban.oban.table import LATEST_VERSION, install
from cinegraph_oban.sql import builder

__all__ = ["ObanTestDatabase"]

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class ObanTestDatabase:
    """A fresh database with the Oban schema: its URL, an autocommit connection and a client."""

    dsn: str
    conn: psycopg.Connection[Any]
    prefix: str
    version: int
    oban: Oban


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cinegraph-oban")
    group.addoption(
        "--cinegraph-oban-verify",
        metavar="DATABASE_URL",
        default=None,
        help="also collect the read-only migration checks (cinegraph-oban migrate verify) against this database",
    )
    group.addoption("--cinegraph-oban-prefix", default="public", help="Oban prefix for --cinegraph-oban-verify")
    group.addoption(
        "--cinegraph-oban-schema", default="public", help="schema of the legacy tables for --cinegraph-oban-verify"
    )
    group.addoption(
        "--cinegraph-oban-export-dir", default="cinegraph-oban-export", help="export archive for the checks"
    )
    group.addoption(
        "--cinegraph-oban-version",
        default=None,
        help="the Oban your Elixir application runs, for oban_database's client (its default unique states); "
        "default: CINEGRAPH_OBAN_VERSION or 2.22",
    )
    group.addoption(
        "--cinegraph-oban-dsn",
        default=None,
        help="PostgreSQL server for oban_database fixtures (default: CINEGRAPH_OBAN_TEST_DSN or 127.0.0.1:5432)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "oban(version=14, prefix='public', legacy_tables=False, legacy_rows=0, oban_version=None): the "
        "oban_database fixture's layout and its client's Oban version",
    )


class VerifyItem(pytest.Item):
    """One read-only check of `migrate verify`, as a test a release pipeline can gate on."""

    def __init__(self, *, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def runtest(self) -> None:
        from cinegraph_oban.migration.remove_tables import RemoveRedundantImportTables

        config = self.config
        migration = RemoveRedundantImportTables(
            str(config.getoption("--cinegraph-oban-verify")),
            prefix=str(config.getoption("--cinegraph-oban-prefix")),
            schema=str(config.getoption("--cinegraph-oban-schema")),
            export_dir=str(config.getoption("--cinegraph-oban-export-dir")),
        )
        summary = migration.verify()
        findings = [f for f in summary.findings if (f.table == "oban_jobs") == (self.check == "new worker meta")]
        if findings:
            raise AssertionError("\n".join(str(f) for f in findings))
        if summary.unverified and self.check != "new worker meta":
            raise AssertionError(
                f"nothing verified the archival jobs ({summary.unverified}): the legacy tables are gone and there "
                f"is no export in {migration.export_dir}; pass --cinegraph-oban-export-dir"
            )

    def reportinfo(self) -> tuple[str, int, str]:
        return "cinegraph-oban verify", 0, f"cinegraph-oban verify: {self.check}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--cinegraph-oban-verify"):
        for check in ("legacy rows and archival jobs", "new worker meta"):
            items.append(VerifyItem.from_parent(session, name=f"cinegraph_oban_verify[{check}]", check=check))


def _server(config: pytest.Config) -> str:
    return str(config.getoption("--cinegraph-oban-dsn") or os.environ.get("CINEGRAPH_OBAN_TEST_DSN") or DEFAULT_SERVER)


@pytest.fixture
def oban_database(request: pytest.FixtureRequest) -> Iterator[ObanTestDatabase]:
    """A fresh database with the Oban schema (see the module docstring for the `oban` marker)."""
    marker = request.node.get_closest_marker("oban")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    version = int(options.get("version", LATEST_VERSION))
    prefix = str(options.get("prefix", "public"))
    oban_version = check_oban_version(
        options.get("oban_version")
        or request.config.getoption("--cinegraph-oban-version")
        or os.environ.get("CINEGRAPH_OBAN_VERSION")
        or DEFAULT_OBAN_VERSION
    )
    server = _server(request.config)
    name = f"cinegraph_oban_fixture_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    info = psycopg.conninfo.conninfo_to_dict(server)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(builder.sql("database/create_database", database=name), {})
    info["dbname"] = name
    dsn = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            install(conn, version, prefix)
            if options.get("legacy_tables"):
                _legacy(conn, int(options.get("legacy_rows", 0)))
            client = Oban(conn, prefix=prefix, oban_version=oban_version)
            yield ObanTestDatabase(dsn=dsn, conn=conn, prefix=prefix, version=version, oban=client)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(builder.sql("database/drop_database", database=name), {})


def _legacy(conn: psycopg.Connection[Any], rows: int) -> None:
    from cinegraph_oban.migration.sample_data import create_legacy_sample

    create_legacy_sample(conn, "public", rows)
