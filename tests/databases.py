"""Every test's own database: per-layout templates, databases made ahead, and databases renewed.

`LayoutTemplates` holds, per Oban schema layout, a template database with that schema installed
once per session: by the library's installer for a `Layout`, by genuine Oban's own
`Oban.Migration` (through the harness) for a `GenuineLayout`. `FreshDatabases` gives every test that asks for one (`db_conn`) a database
cloned from its template, and makes what the suite's speed needs of that cheap:

- **Made ahead.** While a test runs, the next test's database is made in a background thread
  (pytest says which test comes next, under xdist too).
- **Renewed, not remade.** CREATE DATABASE costs the server 35 to 60 ms of CPU and 4.4 MB of WAL,
  the largest single cost of a run. Most tests change only rows, so a finished database that
  can be shown to be as its template made it but for its rows is made fresh again (`_renew`):
  its tables emptied with TRUNCATE (new files, the planner's "never analyzed"), its sequences
  set back to their start, its statistics and counters reset. What shows it:
  - no session is left on it (the test's are ended), no prepared transaction, no slot;
  - its row in `pg_database` is as CREATE DATABASE wrote it, with no settings of its own;
  - no comment or security label on it (the shared catalogs);
  - every catalog of its own holds the rows it held (`catalog_fingerprint`): read where the
    server's counters do not show that none of their rows was written, and at least every
    eighth renewal (see `_reset`).
  Anything else (a table created, a GRANT, a comment, a temporary table) and it is dropped.
  The reset runs on the test's own connection where it is still usable (after DISCARD ALL): a
  new session would cost the server a backend and cold caches, about a third of a renewal.
  The fingerprint it leaves for the next renewal is read again only for the catalogs its own
  transaction changed (`_CHANGED_CATALOGS`).
- **Few connections.** A new backend costs the server about 6.5 ms of CPU (most of it the
  kernel's fork and exit) and its caches warmed again; the threads that create databases keep
  theirs, and the session a renewal ran on is handed on to the next test that takes that
  database (`connect`), in a new psycopg `Connection` object: the server side as new (DISCARD
  ALL), the client side new (its adapters, handlers and prepared-statement cache).
- **Dropped in batches.** DROP DATABASE forces a checkpoint (PostgreSQL 15). One checkpoint per
  test made every page a test wrote go to the WAL whole: 700 checkpoints in one run. Dropped
  databases are gathered and dropped at once from their own connections, which the
  checkpointer serves with one or two checkpoints (20 drops one by one: 20 checkpoints; at
  once: 2).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql.janitor import DatabaseJanitor

from cinegraph_oban.oban.table import install

Layout = tuple[int, str]


@dataclass(frozen=True)
class GenuineLayout:
    """Oban's tables as genuine Oban's `Oban.Migration.up(version:, prefix:)` makes them, under
    each of `prefixes` (the `genuine_layout` marker asks for one)."""

    version: int
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Made:
    """What renewing a database compares it with: its template, its `pg_database` row's xmin
    as CREATE DATABASE wrote it, its catalogs' fingerprint, and the epoch (`_EPOCH`) of its
    counters when they were last all zero."""

    template: str
    xmin: str
    fingerprint: tuple[str, ...]
    epoch: str
    #: Renewals since its catalogs were last read whole (`FreshDatabases.READ_EVERY`).
    unread: int = 0


#: The catalogs of a database's own objects: not the shared ones, not the planner's statistics.
_CATALOGS = """
SELECT c.relname FROM pg_catalog.pg_class c
 WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
   AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data')
 ORDER BY 1"""

#: True where the database is as CREATE DATABASE made it (its xmin the argument) and only the
#: session asking is on it (autovacuum aside).
_AS_MADE = """
SELECT d.xmin::text = %s
   AND NOT EXISTS (SELECT FROM pg_stat_activity a
                    WHERE a.datid = d.oid AND a.pid <> pg_backend_pid() AND a.backend_type <> 'autovacuum worker')
   AND NOT EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
   AND NOT EXISTS (SELECT FROM pg_prepared_xacts x WHERE x.database = d.datname)
   AND NOT EXISTS (SELECT FROM pg_replication_slots r WHERE r.datoid = d.oid)
   AND NOT EXISTS (SELECT FROM pg_shdescription c WHERE c.objoid = d.oid AND c.classoid = 'pg_database'::regclass)
   AND NOT EXISTS (SELECT FROM pg_shseclabel l WHERE l.objoid = d.oid AND l.classoid = 'pg_database'::regclass)
  FROM pg_database d WHERE d.datname = current_database()"""

#: When a database's counters last started from zero: the server's start, the shared counters'
#: last reset (a restart after a crash discards every counter and sets it, where the start time
#: stays) and the database's last reset of its own.
_EPOCH = """
SELECT pg_postmaster_start_time()::text || ' ' || coalesce(pg_stat_get_bgwriter_stat_reset_time()::text, '')
       || ' ' || coalesce(pg_stat_get_db_stat_reset_time(oid)::text, 'never')
  FROM pg_database WHERE datname = {}"""

#: Rows inserted, updated or deleted in the fingerprint's catalogs since the counters' epoch,
#: as the server counts them (every session's, flushed at the latest as it ends), and whether
#: it counts at all.
_CATALOG_WRITES = """
SELECT current_setting('track_counts')::bool, coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)
  FROM pg_stat_sys_tables WHERE schemaname = 'pg_catalog' AND relname = ANY(%s)"""

_END_OTHER_SESSIONS = """
SELECT coalesce(bool_and(pg_terminate_backend(pid, 5000)), true) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"""

#: The tables a test wrote to (or analyzed, or vacuumed): an untouched one has no pages and
#: the "never analyzed" -1 tuples.
_WRITTEN_TABLES = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
   AND (pg_relation_size(c.oid) > 0 OR c.reltuples <> -1 OR c.relallvisible <> 0)"""

#: The planner's sizes of the database's own relations (`pg_class`), as a template holds them.
_SIZES = "SELECT oid, relpages, reltuples, relallvisible FROM pg_class WHERE oid >= 16384 ORDER BY oid"

#: TRUNCATE leaves an index "never analyzed" (-1 tuples) where its template, built on an empty
#: table, says 0 tuples in its pages: which changes the planner's estimate for a partial index.
_SIZES_AS_MADE = """
UPDATE pg_class c SET relpages = t.relpages, reltuples = t.reltuples, relallvisible = t.relallvisible
  FROM unnest(%s::oid[], %s::int[], %s::real[], %s::int[]) AS t(oid, relpages, reltuples, relallvisible)
 WHERE c.oid = t.oid
   AND (c.relpages, c.reltuples, c.relallvisible) IS DISTINCT FROM (t.relpages, t.reltuples, t.relallvisible)"""

#: The catalogs the session's transaction has inserted, updated or deleted rows of so far (its
#: own counts, exact and not yet flushed): the only parts of the fingerprint it can have changed.
_CHANGED_CATALOGS = """
SELECT relname FROM pg_stat_xact_sys_tables
 WHERE schemaname = 'pg_catalog' AND n_tup_ins + n_tup_upd + n_tup_del > 0"""

_RESET_THE_REST = """
SELECT setval(seqrelid, seqstart, false) FROM pg_sequence WHERE pg_sequence_last_value(seqrelid) IS NOT NULL;
DELETE FROM pg_statistic WHERE starelid >= 16384;
DELETE FROM pg_statistic_ext_data WHERE stxoid >= 16384"""

#: The counters last: this session's own (TRUNCATE's index builds scan the table) flushed first.
_RESET_COUNTERS = ("SELECT pg_stat_force_next_flush()", "SELECT pg_stat_reset()")


def connect(server: Any, dbname: str) -> psycopg.Connection[Any]:
    password = getattr(server, "password", None) or None
    return psycopg.connect(
        dbname=dbname, user=server.user, password=password, host=server.host, port=server.port, autocommit=True
    )


def janitor(server: Any, dbname: str, template: str, *, as_template: bool = False) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=dbname,
        template_dbname=template,
        password=getattr(server, "password", None) or None,
        as_template=as_template,
    )


def _fingerprint_query(catalogs: list[str]) -> sql.Composed:
    """Per catalog named, its row count and the sum of its rows' xmin."""
    return sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_catalog.{})").format(
            sql.Identifier(name)
        )
        for name in catalogs
    )


def catalog_fingerprint(conn: psycopg.Connection[Any]) -> tuple[str, ...]:
    """Per catalog of the database's own, its row count and the sum of its rows' xmin.

    Any object created, changed (ALTER, GRANT, COMMENT, TRUNCATE's new files) or dropped
    changes it; a clone's equals its template's, CREATE DATABASE copying the files."""
    catalogs = [row[0] for row in conn.execute(_CATALOGS)]
    row = conn.execute(sql.SQL("SELECT {}").format(_fingerprint_query(catalogs))).fetchone()
    assert row is not None
    return tuple(row)


class LayoutTemplates:
    """Per schema layout (version, prefix), a template database holding that Oban schema,
    installed once per session when a test first asks for it, dropped at the end."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.made: dict[Layout | GenuineLayout, DatabaseJanitor] = {}
        self.numbers = itertools.count()
        #: Runs genuine Oban's migrations on a database (by name): set while the harness runs.
        self.genuine: Callable[[str, GenuineLayout], None] | None = None
        self.fingerprints: dict[str, tuple[str, ...]] = {}
        self.sizes: dict[str, list[tuple[int, int, float, int]]] = {}

    def record(self, name: str, conn: psycopg.Connection[Any]) -> None:
        """What renewing a clone of template `name` compares with and sets back."""
        self.fingerprints[name] = catalog_fingerprint(conn)
        self.sizes[name] = conn.execute(_SIZES).fetchall()

    def __getitem__(self, layout: Layout | GenuineLayout) -> str:
        made = self.made.get(layout)
        if made is None:
            kind, version = ("g", layout.version) if isinstance(layout, GenuineLayout) else ("v", layout[0])
            # A number never used again, even after a failed try.
            name = f"{self.server.template_dbname}_{kind}{version}_{next(self.numbers)}"
            made = janitor(self.server, name, self.server.template_dbname, as_template=True)
            made.init()
            try:
                if isinstance(layout, GenuineLayout):
                    if self.genuine is None:
                        raise RuntimeError(f"{layout} asked for with no genuine Oban harness running")
                    self.genuine(name, layout)
                with connect(self.server, name) as conn:
                    if not isinstance(layout, GenuineLayout):
                        install(conn, *layout)
                    self.record(name, conn)
            except BaseException:
                made.drop()
                raise
            self.made[layout] = made
        return made.dbname

    def drop(self) -> None:
        """Dropped together, from connections of their own: each DROP DATABASE waits for a
        checkpoint, which the checkpointer serves once for the drops waiting at once."""
        if not self.made:
            return
        with ThreadPoolExecutor(max_workers=min(len(self.made), 10), thread_name_prefix="drop-template") as pool:
            for dropped in [pool.submit(made.drop) for made in self.made.values()]:
                dropped.result()


class FreshDatabases:
    """Every test's own database, made ahead, renewed when it can be, dropped in batches (see
    the module's docstring). A database still spare or not taken is dropped at the end."""

    #: Dropped databases dropped together; each takes a connection while it is dropped.
    DROP_BATCH = 10
    #: Renewed sessions kept for the next test that takes their database, at most: each is a
    #: backend held open while its database is spare (two suites at once on a server of
    #: max_connections 100 must fit).
    KEEP_SESSIONS = 3
    #: A database's catalogs are read whole at least every this many renewals, counters or
    #: not: what a session that turned `track_counts` off (a superuser's SET) wrote unseen is
    #: then found there, instead of never.
    READ_EVERY = 8

    def __init__(
        self, server: Any, templates: LayoutTemplates, layout_of: Callable[[pytest.Item], Layout | GenuineLayout | None]
    ):
        self.server = server
        self.templates = templates
        self.layout_of = layout_of
        self.names = itertools.count()
        self.maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="make-test-database")
        self.renewer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="renew-test-database")
        self.dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-databases")
        self.ahead: dict[str, list[Future[str]]] = collections.defaultdict(list)
        self.spare: dict[str, list[str]] = collections.defaultdict(list)
        self.made: dict[str, Made] = {}
        self.to_drop: list[str] = []
        #: Per spare database, the session its renewal ran on, for the next test that takes it.
        self.sessions: dict[str, psycopg.pq.abc.PGconn] = {}
        #: The Connection objects sessions were taken from to be renewed or handed on, kept until
        #: the end: one collected while its session is open would warn that it was never closed.
        self.handed_on: list[psycopg.Connection[Any]] = []
        self.guard = threading.Lock()
        # Per thread that creates databases (the maker, the main thread), its connection to
        # `postgres`, kept: about 230 backends fewer in a run. Drops connect each time, as
        # DROP_BATCH of them at once would otherwise hold that many connections all the run.
        self.admins = threading.local()
        self.admin_connections: list[psycopg.Connection[Any]] = []
        with connect(server, server.template_dbname) as conn:
            templates.record(server.template_dbname, conn)
            #: The catalogs the fingerprint covers, in its order.
            self.catalogs = [row[0] for row in conn.execute(_CATALOGS)]
        self.fingerprint_query = sql.SQL("SELECT {}").format(_fingerprint_query(self.catalogs))
        self.epoch_query = sql.SQL(_EPOCH).format(sql.SQL("current_database()"))
        self.check_query = sql.SQL("SELECT ({}), ({}), * FROM ({}) AS counted").format(
            sql.SQL(_AS_MADE), self.epoch_query, sql.SQL(_CATALOG_WRITES)
        )
        self.recheck_query = sql.SQL("SELECT ({}), ({})").format(sql.SQL(_AS_MADE), self.epoch_query)

    def template(self, item: pytest.Item, *, make: bool = True) -> str | None:
        """The template of the item's database (None: a layout template not made yet and `make` false)."""
        layout = self.layout_of(item)
        if layout is None:
            return str(self.server.template_dbname)
        if not make and layout not in self.templates.made:
            return None
        return self.templates[layout]

    def prepare(self, item: pytest.Item | None) -> None:
        """Start making the database `item` will ask for (nothing if it asks for none)."""
        if item is None or "db_conn" not in getattr(item, "fixturenames", ()):
            return
        template = self.template(item, make=False)
        if template is None:
            return
        with self.guard:
            if not self.ahead[template]:
                self.ahead[template].append(self.maker.submit(self._provide, template))

    def take(self, item: pytest.Item) -> str:
        return self._take(self._template_of(item))

    def take_layout(self, layout: Layout | None) -> str:
        """A database for more than one test (a module's), empty or of that layout."""
        return self._take(self._layout_template(layout))

    def _template_of(self, item: pytest.Item) -> str:
        template = self.template(item)
        assert template is not None
        return template

    def _layout_template(self, layout: Layout | None) -> str:
        return str(self.server.template_dbname) if layout is None else self.templates[layout]

    def _take(self, template: str) -> str:
        name = self._next(template)
        with self.guard:  # a kept session no one asked for is not left on a database in use
            kept = self.sessions.pop(name, None)
        if kept is not None:
            kept.finish()
        return name

    def _next(self, template: str) -> str:
        with self.guard:
            made = self.ahead[template].pop(0) if self.ahead[template] else None
        return made.result() if made is not None else self._provide(template)

    def take_connected(self, item: pytest.Item) -> tuple[str, psycopg.Connection[Any]]:
        """`take`, with an autocommit connection to the database (`connect`)."""
        name = self._next(self._template_of(item))
        return name, self.connect(name)

    def take_layout_connected(self, layout: Layout | None) -> tuple[str, psycopg.Connection[Any]]:
        """`take_layout`, with an autocommit connection to the database (`connect`)."""
        name = self._next(self._layout_template(layout))
        return name, self.connect(name)

    def connect(self, name: str) -> psycopg.Connection[Any]:
        """An autocommit connection to `name`: on the session its renewal ran on where one is
        kept, in a new `Connection` object as `psycopg.connect` makes one (its adapters, notice
        and notify handlers, prepared-statement cache and row factory its own), else a new one."""
        with self.guard:
            kept = self.sessions.pop(name, None)
        if kept is not None:
            conn = psycopg.Connection(kept)
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                conn.autocommit = True
                return conn
            kept.finish()
        return connect(self.server, name)

    def give_back(self, name: str, conn: psycopg.Connection[Any] | None = None) -> None:
        """Have the test's database renewed (or dropped); `conn`, the test's own connection to
        it, is closed by the renewal, which runs on it where it can (see `renew`)."""
        self.renewer.submit(self.renew, name, conn=conn)

    def close(self) -> None:
        self.maker.shutdown(wait=True)
        self.renewer.shutdown(wait=True)
        for futures in self.ahead.values():
            for made in futures:
                with contextlib.suppress(Exception):
                    self.to_drop.append(made.result())
        for spare in self.spare.values():
            self.to_drop.extend(spare)
        for kept in self.sessions.values():
            kept.finish()
        self.sessions.clear()
        self.handed_on.clear()
        while self.to_drop:
            batch, self.to_drop = self.to_drop[: self.DROP_BATCH], self.to_drop[self.DROP_BATCH :]
            self.dropper.submit(self._drop_together, batch)
        self.dropper.shutdown(wait=True)
        for admin in self.admin_connections:
            admin.close()

    def _admin(self, *, new: bool = False) -> psycopg.Connection[Any]:
        """This thread's connection to the `postgres` database (`new`: a new one, as where the
        kept one broke)."""
        admin: psycopg.Connection[Any] | None = getattr(self.admins, "conn", None)
        if new or admin is None or admin.closed or admin.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            if admin is not None:
                admin.close()
            admin = self.admins.conn = connect(self.server, "postgres")
            with self.guard:
                self.admin_connections.append(admin)
        return admin

    def _as_admin(self, statement: sql.Composable, params: list[Any] | None = None) -> list[Any]:
        """`statement` on this thread's kept connection (its rows, if it returns any), once
        more on a new one where the server ended the kept one (an idle session terminated)."""
        try:
            cursor = self._admin().execute(statement, params)
        except psycopg.OperationalError:
            cursor = self._admin(new=True).execute(statement, params)
        return cursor.fetchall() if cursor.description is not None else []

    def _provide(self, template: str) -> str:
        with self.guard:
            if self.spare[template]:
                return self.spare[template].pop(0)
        name = f"{self.server.dbname}_{next(self.names)}"
        self._as_admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        [row] = self._as_admin(
            sql.SQL("SELECT d.xmin::text, ({}) FROM pg_database d WHERE d.datname = %s").format(
                sql.SQL(_EPOCH).format(sql.Placeholder())
            ),
            [name, name],
        )
        self.made[name] = Made(template, row[0], self.templates.fingerprints[template], row[1])
        return name

    def renew(self, name: str, *, keep: bool = False, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Make a finished database fresh again and spare (True), or have it dropped (False).
        `keep`: renewed for the caller, who goes on using it and gives it back after (not spare).

        `conn`, the test's own connection to it, is not used again by the caller; where it is
        still usable, the reset runs on its session after DISCARD ALL (the session as new: no
        settings, temporary tables, locks, prepared statements or LISTEN of the test's), in a
        new Connection object, which spares the server a new backend and its cold caches; the
        session is then kept for the next test that takes the database (`_hand_on`), or closed.
        Nothing it checks depends on the session it runs in."""
        try:
            made = self.made.pop(name)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        session = None
        try:
            session = self._session(name, conn)
            renewed = self._reset(session, made, self.templates.sizes[made.template])
        except Exception:  # whatever stops the reset, the database is dropped instead
            renewed = None
        if session is not None and (renewed is None or keep or not self._hand_on(name, session)):
            session.close()
        with self.guard:
            if renewed is None:
                self.to_drop.append(name)
                if len(self.to_drop) >= self.DROP_BATCH:
                    batch, self.to_drop = self.to_drop, []
                    self.dropper.submit(self._drop_together, batch)
                return False
            self.made[name] = renewed
            if not keep:
                self.spare[made.template].append(name)
            return True

    def _hand_on(self, name: str, session: psycopg.Connection[Any]) -> bool:
        """Keep the renewed database's session for the next test that takes it (`connect`);
        False where it is not kept (not idle, in a pipeline, or enough are kept)."""
        pgconn = session.pgconn
        if (
            session.closed
            or session.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            or pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
        ):
            return False
        with self.guard:
            if len(self.sessions) >= self.KEEP_SESSIONS:
                return False
            self.sessions[name] = pgconn
            self.handed_on.append(session)
        return True

    def _session(self, name: str, conn: psycopg.Connection[Any] | None) -> psycopg.Connection[Any]:
        """The test's own session as new, in a new Connection object (the test's may have other
        adapters or row factory), or where it is not usable a new one."""
        if conn is not None:
            try:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                conn.autocommit = True
                conn.execute("DISCARD ALL")
                session = psycopg.Connection(conn.pgconn)
                session.autocommit = True
            except Exception:
                conn.close()
            else:
                with self.guard:  # until the end: collected with its session open, it would warn
                    self.handed_on.append(conn)
                return session
        return connect(self.server, name)

    def _reset(
        self, conn: psycopg.Connection[Any], made: Made, sizes: list[tuple[int, int, float, int]]
    ) -> Made | None:
        """What the next renewal compares the database with once it is reset, or None where it
        is not as it was made.

        Its catalogs are read (`fingerprint_query`, a scan of every one of them: about a third
        of a renewal's cost) only where the server's counters do not show that none of their
        rows was written since the counters' epoch: where they count, no session is left whose
        counts are not flushed (this one's are flushed first, an ended session's as it ends),
        and the epoch is the one recorded (a reset of the counters, or a restart after a crash
        that discards them, changes it); and at least every READ_EVERY renewals. What the
        counters cannot show: a catalog written by a session that had turned `track_counts` off
        itself (a superuser's SET, which nothing in the suite does), found by that whole read.
        A thread a test leaves running on its connection could slip statements into the reset;
        the suite's tests end their threads."""
        conn.execute(_END_OTHER_SESSIONS)
        conn.execute("SELECT pg_stat_force_next_flush()")  # flushed as this statement ends
        row = conn.execute(self.check_query, [made.xmin, self.catalogs]).fetchone()
        if row is None or not row[0]:
            return None
        _, epoch, counted, catalog_writes = row
        none_written = counted and epoch == made.epoch and catalog_writes == 0
        read_whole = not none_written or made.unread + 1 >= self.READ_EVERY
        if read_whole:
            scanned = conn.execute(self.fingerprint_query).fetchone()
            if scanned is None or tuple(scanned) != made.fingerprint:
                return None
        with conn.transaction():
            written = [table for (table,) in conn.execute(_WRITTEN_TABLES)]
            if written:
                conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(map(sql.SQL, written))))
                conn.execute(_SIZES_AS_MADE, [list(column) for column in zip(*sizes, strict=True)] or [[]] * 4)
            conn.execute(_RESET_THE_REST)
            # TRUNCATE's new files and the sizes set back changed catalog rows: the fingerprint
            # the next renewal compares with is this one with those catalogs' parts read again.
            renewed = list(made.fingerprint)
            changed = [catalog for (catalog,) in conn.execute(_CHANGED_CATALOGS) if catalog in self.catalogs]
            if not counted:  # this transaction's writes are not counted either
                changed = list(self.catalogs)
            if changed:
                parts = conn.execute(sql.SQL("SELECT {}").format(_fingerprint_query(changed))).fetchone()
                assert parts is not None
                for catalog, part in zip(changed, parts, strict=True):
                    renewed[self.catalogs.index(catalog)] = part
        for statement in _RESET_COUNTERS:
            conn.execute(statement)
        # A client that reconnected since the first check (a pool left open) would write to it
        # while the next test runs: the database is dropped instead.
        row = conn.execute(self.recheck_query, [made.xmin]).fetchone()
        if row is None or not row[0]:
            return None
        return replace(made, fingerprint=tuple(renewed), epoch=row[1], unread=0 if read_whole else made.unread + 1)

    def _drop_together(self, names: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="drop-one") as pool:
            for dropped in [pool.submit(self._drop, name) for name in names]:
                dropped.result()

    def _drop(self, name: str) -> None:
        with connect(self.server, "postgres") as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
