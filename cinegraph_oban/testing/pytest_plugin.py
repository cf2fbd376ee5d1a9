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
dropped after the test.

Each layout is installed once per test process, into a template database, and every test's
database is cloned from it (CREATE DATABASE ... TEMPLATE): installing replays Oban's migrations
one by one. A finished test's database is dropped in the background, since DROP DATABASE waits
for a checkpoint on PostgreSQL 15; the session waits for every drop, and the templates are
dropped, at its end. All of a process's databases are named `cinegraph_oban_fixture_<pid>_...`.

`oban_database.oban` targets the Oban version the marker's `oban_version` names, else
`--cinegraph-oban-version`, else `CINEGRAPH_OBAN_VERSION`, else 2.22 (its default unique states:
from 2.23.1 a suspended job counts as a duplicate).
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


class _Databases:
    """A test process's Oban databases on one server: the templates, one per layout, made when
    first asked for, and the test databases cloned from them and dropped in the background."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.templates: dict[tuple[int, str, int | None], str] = {}
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.dropper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cinegraph-oban-drop")
        self.drops: list[Future[None]] = []

    def dsn(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.server, dbname=name)

    def _create(self, name: str, template: str | None = None) -> None:
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(builder.sql("database/create_database", database=name, template=template), {})

    def _drop(self, name: str) -> None:
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(builder.sql("database/drop_database", database=name), {})

    def template(self, version: int, prefix: str, legacy_rows: int | None) -> str:
        """The template of that layout (`legacy_rows`: None, no legacy tables), made once."""
        key = (version, prefix, legacy_rows)
        with self.lock:
            made = self.templates.get(key)
            if made is None:
                made = f"cinegraph_oban_fixture_{os.getpid()}_template_{next(self.numbers)}"
                self._create(made)
                try:
                    with psycopg.connect(self.dsn(made), autocommit=True) as conn:
                        install(conn, version, prefix)
                        if legacy_rows is not None:
                            _legacy(conn, legacy_rows)
                except BaseException:
                    self._drop(made)
                    raise
                self.templates[key] = made
            return made

    def clone(self, template: str) -> str:
        name = f"cinegraph_oban_fixture_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        self._create(name, template)
        return name

    def drop_later(self, name: str) -> None:
        self.drops.append(self.dropper.submit(self._drop, name))

    def close(self) -> None:
        """Wait for every drop, then drop the templates; the first failure is raised."""
        self.dropper.shutdown(wait=True)
        failures = [error for drop in self.drops if (error := drop.exception()) is not None]
        for name in self.templates.values():
            try:
                self._drop(name)
            except Exception as error:
                failures.append(error)
        if failures:
            raise failures[0]


@pytest.fixture(scope="session")
def _cinegraph_oban_databases(request: pytest.FixtureRequest) -> Iterator[_Databases]:
    databases = _Databases(_server(request.config))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def oban_database(request: pytest.FixtureRequest, _cinegraph_oban_databases: _Databases) -> Iterator[ObanTestDatabase]:
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
    legacy_rows = int(options.get("legacy_rows", 0)) if options.get("legacy_tables") else None
    databases = _cinegraph_oban_databases
    name = databases.clone(databases.template(version, prefix, legacy_rows))
    try:
        dsn = databases.dsn(name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            client = Oban(conn, prefix=prefix, oban_version=oban_version)
            yield ObanTestDatabase(dsn=dsn, conn=conn, prefix=prefix, version=version, oban=client)
    finally:
        databases.drop_later(name)


def _legacy(conn: psycopg.Connection[Any], rows: int) -> None:
    from cinegraph_oban.migration.sample_data import create_legacy_sample

    create_legacy_sample(conn, "public", rows)
