"""The PostgreSQL test bed: every test that claims database behaviour runs on a real server.

Which server (decided once per session, in this order):
1. `CINEGRAPH_OBAN_TEST_DSN` (e.g. postgresql://postgres@127.0.0.1:5432/postgres): that server.
2. pytest-postgresql's own `--postgresql-port` / `postgresql_port` setting: that server (noproc).
3. A server answering on 127.0.0.1:5432: that one (noproc).
4. Otherwise pytest-postgresql starts its own (`postgresql_proc`); as root, where `initdb`
   refuses to run, cinegraph-oban's throwaway server starts one as an unprivileged user.

Every test gets a fresh database (`db_conn`, `db_dsn`), cloned from a template: an empty one, or
for a test that asks for `oban` / `oban_any` one with the Oban schema of that layout already
installed through the `sql_templates/` migrations. Each layout's template is made once per
session, on first use, instead of replaying the migrations for every test. How the databases
are made ahead, renewed after a test that changed only rows, and dropped in batches is told in
`tests/databases.py`. A module whose tests only read what one fixture wrote shares one database
(`module_oban_database`).

The suite runs under pytest-xdist (`-n auto`): every worker has its own databases (named after
its process); genuine Oban's tests are grouped on one worker where pytest-xdist can (see
`pytest_collection_modifyitems`). Nothing here reads or changes what another run on the same
server owns, so two runs at once do not meet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, settings
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from cinegraph_oban.insert.client import Oban
from tests.databases import FreshDatabases, GenuineLayout, LayoutTemplates


def _bytecode_outside_the_tree() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set (as on this workplace's machines) and no
    PYTHONPYCACHEPREFIX is, the interpreters the suite starts (xdist's workers, the console
    script, the import-order test's children) cache bytecode under
    `$CINEGRAPH_OBAN_CACHE` (else `${XDG_CACHE_HOME:-~/.cache}/cinegraph-oban`)`/pycache`
    instead of compiling the package and the tests from source each time (about 5 CPU-seconds
    of a run). Nothing is written in the tree, which is what the setting asks for."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = os.environ.get("CINEGRAPH_OBAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cinegraph-oban"
    )
    prefix = os.path.join(cache, "pycache")
    try:
        os.makedirs(prefix, mode=0o700, exist_ok=True)
        owned = os.stat(prefix)
    except OSError:
        return
    if owned.st_uid != os.getuid() or owned.st_mode & 0o022:  # bytecode only another user could not plant
        return
    # What mirrors temporary paths (copies of the tests, build environments) is never read
    # again: dropped at each start, so the cache does not grow with every run.
    shutil.rmtree(os.path.join(prefix, tempfile.gettempdir().lstrip(os.sep)), ignore_errors=True)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False


_bytecode_outside_the_tree()


def _commits_not_waiting_on_the_disk() -> None:
    """The suite's sessions commit without waiting for their WAL to reach the disk
    (`synchronous_commit=off`, through libpq's PGOPTIONS, so the CLI runs it starts too): what
    was committed is seen by every other session as before, and only a crash of the server,
    which no test causes, could lose it. COMMIT's waits were about 8 s of a run's statements."""
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c synchronous_commit=off".strip()


_commits_not_waiting_on_the_disk()

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=1_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Mutation testing (docs/mutation-testing.md): the same fixed examples as `ci`, but a failing
# example is reported as found instead of shrunk; shrinking a mutant's failure is what made a
# run of a few seconds take minutes.
settings.register_profile(
    "mutation",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TEST_DSN_VARIABLE = "CINEGRAPH_OBAN_TEST_DSN"


def _dsn_params() -> dict[str, Any]:
    dsn = os.environ.get(TEST_DSN_VARIABLE)
    if not dsn:
        return {}
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    params: dict[str, Any] = {
        "host": info.get("host") or "127.0.0.1",
        "port": int(info.get("port") or 5432),
        "user": info.get("user") or "postgres",
    }
    if info.get("password"):
        params["password"] = info["password"]
    return params


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# A database name of its own per test session, so that two runs against one server (two
# developers, CI beside a developer) never share or drop each other's databases.
SESSION_DBNAME = f"cinegraph_oban_tests_{os.getpid()}"
postgresql_noproc_server = factories.postgresql_noproc(dbname=SESSION_DBNAME, **_dsn_params())
postgresql_own_proc = factories.postgresql_proc(dbname=SESSION_DBNAME)


def _server_mode(config: pytest.Config) -> str:
    if os.environ.get(TEST_DSN_VARIABLE):
        return "noproc"
    if config.getoption("postgresql_port", None) or config.getini("postgresql_port"):
        return "noproc"
    if _answers("127.0.0.1", 5432):
        return "noproc"
    return "throwaway" if os.geteuid() == 0 else "proc"


@pytest.fixture(scope="session")
def oban_db_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The executor (host, port, user, template database) every test database is cloned from."""
    mode = _server_mode(request.config)
    if mode == "noproc":
        yield request.getfixturevalue("postgresql_noproc_server")
    elif mode == "proc":
        yield request.getfixturevalue("postgresql_own_proc")
    else:
        from cinegraph_oban.db.throwaway import local_server

        with local_server() as server:
            executor = NoopExecutor(
                host=server.host, port=server.port, user=server.user, options="", dbname=SESSION_DBNAME
            )
            with DatabaseJanitor(
                user=executor.user,
                host=executor.host,
                port=executor.port,
                dbname=executor.template_dbname,
                version=executor.version,
                as_template=True,
            ):
                yield executor


@pytest.fixture(scope="session")
def layout_templates(oban_db_server: Any) -> Iterator[LayoutTemplates]:
    templates = LayoutTemplates(oban_db_server)
    try:
        yield templates
    finally:
        templates.drop()


def _layout(item: pytest.Item) -> tuple[int, str] | GenuineLayout | None:
    """The schema layout a test's fixtures ask for (`oban_any`'s parameter, `oban`'s V14 under
    public, genuine Oban's tables for the `genuine_layout` marker), or None for an empty database.

    `@pytest.mark.genuine_layout("a", "b")`: the test's database holds what genuine Oban's
    `Oban.Migration` made under prefixes a and b, at the test's `version` parameter (else 14);
    with no prefixes named, under its `prefix` parameter (else public). Made once per session
    and cloned, where each such test used to run the migrations itself."""
    marker = item.get_closest_marker("genuine_layout")
    if marker is not None:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        prefixes = tuple(marker.args) or (params.get("prefix", "public"),)
        return GenuineLayout(params.get("version", 14), prefixes)
    names = getattr(item, "fixturenames", ())
    if "oban_any" in names:
        layout: tuple[int, str] = item.callspec.params["oban_any"]  # type: ignore[attr-defined]
        return layout
    if "oban" in names:
        return (14, "public")
    return None


_FRESH = pytest.StashKey[FreshDatabases]()


@pytest.fixture(scope="session")
def fresh_databases(
    request: pytest.FixtureRequest, oban_db_server: Any, layout_templates: LayoutTemplates
) -> Iterator[FreshDatabases]:
    fresh = FreshDatabases(oban_db_server, layout_templates, _layout)
    request.config.stash[_FRESH] = fresh
    try:
        yield fresh
    finally:
        del request.config.stash[_FRESH]
        fresh.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist (`-n`), genuine Oban's tests are meant to share one worker and so one BEAM.
    With pytest 9.2 and pytest-xdist 3.8 the group is not honoured (pytest-xdist#1386: the
    nodeid it rewrites is no longer the one pytest reports), so each worker may start its own
    BEAM; the tests do not depend on sharing one."""
    for item in items:
        if item.get_closest_marker("genuine_oban"):
            item.add_marker(pytest.mark.xdist_group("genuine_oban"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    fresh = item.config.stash.get(_FRESH, None)
    if fresh is not None:
        fresh.prepare(nextitem)  # made while `item` runs
    return (yield)


@pytest.fixture
def db_conn(request: pytest.FixtureRequest, fresh_databases: FreshDatabases) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a fresh database: empty, or cloned from the template of the
    Oban layout the test asks for (see `_layout`)."""
    if isinstance(fresh_databases.layout_of(request.node), GenuineLayout):
        request.getfixturevalue("genuine_harness")  # makes its template (or skips, with no toolchain)
    dbname, conn = fresh_databases.take_connected(request.node)  # the session of its last renewal, handed on
    try:
        yield conn
    finally:
        fresh_databases.give_back(dbname, conn)  # renewed on this connection, which it closes


@contextlib.contextmanager
def module_oban_database(
    fresh_databases: FreshDatabases, layout: tuple[int, str] = (14, "public")
) -> Iterator[ObanDatabase]:
    """A database of that layout for a module-scoped fixture: for a module's tests that only
    read what the fixture wrote, or check that they wrote nothing. A test that writes takes
    `oban` (its own database) instead."""
    dbname, conn = fresh_databases.take_layout_connected(layout)
    try:
        dsn = _url(fresh_databases.server, dbname)
        yield ObanDatabase(conn=conn, dsn=dsn, version=layout[0], prefix=layout[1])
    finally:
        fresh_databases.give_back(dbname, conn)


@pytest.fixture
def db_dsn(db_conn: psycopg.Connection[Any], oban_db_server: Any) -> str:
    """A URL for the fresh database, for clients and commands that connect themselves."""
    return _url(oban_db_server, db_conn.info.dbname)


def _url(server: Any, dbname: str) -> str:
    password = f":{server.password}" if getattr(server, "password", None) else ""
    return f"postgresql://{server.user}{password}@{server.host}:{server.port}/{dbname}"


@dataclass(frozen=True)
class ObanDatabase:
    """A fresh database with the Oban schema at `version` under `prefix`."""

    conn: psycopg.Connection[Any]
    dsn: str
    version: int
    prefix: str

    @property
    def table(self) -> str:
        return psycopg.sql.Identifier(self.prefix).as_string() + ".oban_jobs"

    def client(self) -> Oban:
        return Oban(self.conn, prefix=self.prefix)

    def rows(self, where: str = "true") -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(f"SELECT * FROM {self.table} WHERE {where} ORDER BY id".encode())
            return cur.fetchall()

    def count(self, where: str = "true") -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {self.table} WHERE {where}".encode()).fetchone()
        return int(row[0]) if row else 0


#: Every schema layout the library supports: Oban 11 to 14, and a non-public prefix.
LAYOUTS = [(11, "public"), (12, "public"), (13, "public"), (14, "public"), (14, "cinegraph jobs")]

#: For a property test that empties one Oban table before each example (instead of installing
#: a schema per example): V14 under a prefix that needs quoting.
one_quoted_prefix = pytest.mark.parametrize(
    "oban_any", [(14, "cinegraph jobs")], indirect=True, ids=["v14-cinegraph_jobs"]
)


def _oban_database(conn: psycopg.Connection[Any], dsn: str, version: int, prefix: str) -> ObanDatabase:
    """The test's database, cloned from its layout's template (db_conn): the schema is there."""
    return ObanDatabase(conn=conn, dsn=dsn, version=version, prefix=prefix)


@pytest.fixture
def oban(db_conn: psycopg.Connection[Any], db_dsn: str) -> ObanDatabase:
    """A fresh database with the Oban schema at version 14 under `public` (Cinegraph's layout)."""
    return _oban_database(db_conn, db_dsn, 14, "public")


@pytest.fixture(params=LAYOUTS, ids=[f"v{v}-{p.replace(' ', '_')}" for v, p in LAYOUTS])
def oban_any(request: pytest.FixtureRequest, db_conn: psycopg.Connection[Any], db_dsn: str) -> ObanDatabase:
    """The same test against every supported schema version and a non-public prefix."""
    version, prefix = request.param
    return _oban_database(db_conn, db_dsn, version, prefix)


@pytest.fixture
def listener(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A second, autocommit connection for LISTEN."""
    with contextlib.closing(psycopg.connect(db_dsn, autocommit=True)) as conn:
        yield conn


@pytest.fixture
def pgbouncer(pgbouncers: Any, db_conn: psycopg.Connection[Any]) -> Iterator[Any]:
    """The session's PgBouncers, for the test's own database: their connections to it closed
    as the test ends (see `tests.pgbouncer.PgBouncer.forget`)."""
    try:
        yield pgbouncers
    finally:
        pgbouncers.forget(db_conn.info.dbname)


@pytest.fixture(scope="session")
def pgbouncers(oban_db_server: Any) -> Iterator[Any]:
    """PgBouncer in front of the test server, one per pool mode (tests/pgbouncer.py).

    Skips with one line saying how to install it, unless CINEGRAPH_OBAN_REQUIRE_PGBOUNCER=1 (as
    in CI), where a missing PgBouncer is an error."""
    from tests import pgbouncer as bouncers

    try:
        with bouncers.running(oban_db_server) as bouncer:
            yield bouncer
    except bouncers.Unavailable as error:
        if bouncers.required():
            pytest.fail(f"{error} [{bouncers.REQUIRE_VARIABLE}=1: a skip would hide it]", pytrace=False)
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def genuine_harness(layout_templates: LayoutTemplates) -> Iterator[Any]:
    """Genuine Elixir Oban 2.23.1, one BEAM for the session (tests/genuine.py).

    Skips with one line saying how to run it when the toolchain cannot be had, unless
    CINEGRAPH_OBAN_REQUIRE_GENUINE=1 (as in CI), where that is an error."""
    from tests import genuine

    try:
        harness = genuine.Harness(genuine.build())
    except genuine.Unavailable as error:
        if genuine.required():
            pytest.fail(f"{error} [{genuine.REQUIRE_VARIABLE}=1: a skip would hide it]", pytrace=False)
        pytest.skip(str(error))

    def migrate(dbname: str, layout: GenuineLayout) -> None:
        url = genuine.elixir_url(_url(layout_templates.server, dbname))
        try:
            for prefix in layout.prefixes:
                harness.call("migrate", url=url, prefix=prefix, version=layout.version)
        finally:
            harness.call("forget", url=url)  # its connections closed: the template can be cloned (or dropped)

    layout_templates.genuine = migrate
    try:
        yield harness
    finally:
        layout_templates.genuine = None
        harness.close()


@pytest.fixture
def genuine(genuine_harness: Any, db_dsn: str) -> Iterator[Any]:
    """Genuine Oban against this test's fresh database; its instances stop at the end."""
    from tests.genuine import GenuineOban

    handle = GenuineOban(genuine_harness, db_dsn)
    try:
        yield handle
    finally:
        handle.close()
