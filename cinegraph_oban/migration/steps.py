"""The steps of `up`, each with every statement it may run (`UP_STEPS`), and what every part of
the migration shares (`MigrationBase`): rendering a step's statements, checked against its list,
`plan()` rendered from the list, and reading where the database stands.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
from psycopg.rows import dict_row

from cinegraph_oban.db.connections import connect, redact_dsn, through_transaction_pooler
from cinegraph_oban.errors import MigrationInterruptedError, SessionRequiredError, translate_errors
from cinegraph_oban.migration.legacy import LEGACY_TABLES, relation_kind
from cinegraph_oban.migration.summary import Backfilled
from cinegraph_oban.oban.table import ObanTable, detect
from cinegraph_oban.sql import builder

__all__ = [
    "APPLICATION_NAME",
    "BACKFILL_PENDING_LIST_LIMIT",
    "CRASH_VARIABLE",
    "DEFAULT_VERSION",
    "UP_STEPS",
    "MigrationBase",
    "Progress",
    "Step",
    "one_run",
]


#: The Ecto migration version recorded in schema_migrations (configurable).
DEFAULT_VERSION = 20251125000000


CRASH_VARIABLE = "CINEGRAPH_OBAN_CRASH_AT"

#: The `application_name` of every session the migration opens, unless the URL (or PGAPPNAME)
#: names one: how to find it in pg_stat_activity (docs/production-migration.md).
APPLICATION_NAME = "cinegraph-oban migrate"


#: The backstop limit of the GIN pending lists in the backfill's own sessions (see `_backfill_all`).
BACKFILL_PENDING_LIST_LIMIT = "256MB"


Progress = Callable[[str, int, int], None]

#: While an interrupted run winds down, its sessions' statements are cancelled again this often.
CANCEL_AGAIN_SECONDS = 0.5

F = TypeVar("F", bound=Callable[..., Any])


def one_run(method: F) -> F:
    """A public entry of the migration: an `interrupt()` stops it (see `MigrationBase._one_run`)."""

    @functools.wraps(method)
    def run(self: MigrationBase, *args: Any, **kwargs: Any) -> Any:
        with self._one_run():
            return method(self, *args, **kwargs)

    return cast(F, run)


#: Fault injection for in-process tests: called with the name of every crash point reached
#: (the tests terminate the migration's sessions from it).
_fault_hook: Callable[[str], None] | None = None


def _crash_point(name: str) -> None:
    """Fault injection for the crash tests: `CINEGRAPH_OBAN_CRASH_AT=<name>` kills the process here."""
    if _fault_hook is not None:
        _fault_hook(name)
    if os.environ.get(CRASH_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


_PLACEHOLDER_OR_PERCENT = re.compile(r"%%|%\(\w+\)s")


def _as_sent(text: str) -> str:
    """A rendered statement as `plan` shows it: one without placeholders as the server gets it
    (psycopg turns the `%%` the templates write for `%` back into `%`); one with placeholders in
    psycopg's form, where `%%` is right. Scanned as psycopg does, so a schema named `%(x)s`,
    rendered `"%%(x)s"`, is not taken for a placeholder."""
    if any(match.group(0) != "%%" for match in _PLACEHOLDER_OR_PERCENT.finditer(text)):
        return text
    return text.replace("%%", "%")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of `up`: its title in `migrate plan` and every statement it may run, named by
    template (under sql_templates/migration/, or a path for another folder's). `per_table`: run
    for each legacy table in turn, consecutive ones as a group; `when`: only with that option of
    the migration (`audit_log`, `compat_views`); `transaction`: the step is one transaction.

    `plan()` is rendered from these, and `up` refuses to render a statement its current step does
    not list (`_sql`), so the plan cannot leave out what runs."""

    key: str
    title: str
    templates: tuple[str, ...]  # in the order they run; a bulk session's setup once for all
    per_table: frozenset[str] = frozenset()
    when: tuple[tuple[str, str], ...] = ()
    transaction: bool = False


UP_STEPS: tuple[Step, ...] = (
    Step("lock", "lock: one migrator at a time", ("migration_lock",)),
    Step(
        "state",
        "where the database stands (read-only; the migration record only when the tables are gone)",
        ("relation_kind", "oban/detect", "schema_migrations_exists", "migration_recorded", "capture_state"),
    ),
    Step(
        "preflight",
        "preflight (read-only): the Oban table, each legacy table's shape, rows and times it can carry",
        ("oban/detect", "legacy_columns", "legacy_stats", "unreadable_times"),
        per_table=frozenset({"legacy_stats", "unreadable_times"}),
    ),
    Step(
        "capture",
        "change capture (one transaction): a trigger on each legacy table records the ids every write touches "
        "from now on, until the tables are dropped",
        ("lock_timeout", "create_capture"),
        transaction=True,
    ),
    Step(
        "export",
        "export (a bulk session per table)",
        ("bulk_session", "export_encoding", "export_rows"),
        per_table=frozenset({"export_rows"}),
    ),
    Step(
        "backfill",
        "backfill (a bulk session per table, its statement repeated per batch), merging the pending lists "
        "of Oban's GIN indexes meanwhile (a connection per index)",
        ("gin_indexes", "bulk_session", "pending_list_limit", "archived_progress", "backfill", "merge_pending_list"),
        per_table=frozenset({"archived_progress", "backfill"}),
    ),
    Step(
        "catch_up",
        "catch-up: the writes captured meanwhile archived again, round after round (every archival job compared "
        "with its row first where the capture did not see everything: archival jobs of an earlier run without it, "
        "a TRUNCATE)",
        (
            "pending_changes",
            "analyze_jobs",
            "catch_up_session",
            "gin_indexes",
            "merge_pending_list",
            "mark_differences",
            "catch_up",
        ),
        per_table=frozenset({"pending_changes", "mark_differences", "catch_up"}),
    ),
    Step(
        "verify",
        "verify (read-only, a bulk session per table; rows with a captured write not yet applied are left to the "
        "drop's catch-up); differences are archived again and compared once more",
        (
            "bulk_session",
            "verify",
            "analyze_jobs",
            "merge_pending_list",
            "mark_differences",
            "catch_up",
        ),
        per_table=frozenset({"verify", "mark_differences", "catch_up"}),
    ),
    Step(
        "drop",
        "drop and record (one transaction)",
        (
            "lock_timeout",
            "lock_legacy_tables",
            "legacy_count",
            "pending_changes",
            "catch_up",
            "verify_ids",
            "create_migration_record",
            "final_record",
            "drop_capture",
            "create_audit_log",
            "drop_legacy_tables",
            "create_compat_views",
            "schema_migrations_exists",
            "migration_recorded",
            "lock_schema_migrations",
            "record_migration",
        ),
        per_table=frozenset({"legacy_count", "pending_changes", "catch_up", "verify_ids", "final_record"}),
        when=(("create_audit_log", "audit_log"), ("create_compat_views", "compat_views")),
        transaction=True,
    ),
    Step(
        "merge",
        "the GIN pending lists merged once more: the drop's last writes to oban_jobs (when the migrator owns the "
        "indexes)",
        ("gin_indexes", "merge_pending_list"),
    ),
    Step("unlock", "unlock", ("migration_unlock",)),
)


class MigrationBase:
    """What every part of the migration shares: its settings (set by RemoveRedundantImportTables),
    rendering the statements of its steps, and reading where the database stands."""

    name = "RemoveRedundantImportTables"
    #: gzip level of the export: 1 compresses JSON Lines nearly as well as 6, several times faster.
    compress_level = 1
    database_url: str
    prefix: str
    schema: str
    version: int
    batch_size: int
    export_dir: Path
    compat_views: bool
    audit_log: bool
    lock_timeout_ms: int
    retries: int
    progress: Progress
    worker: str
    ran: list[tuple[str, str]]
    _stop: threading.Event
    #: Set by `interrupt()`: every statement not yet sent is refused (see `_check_interrupt`).
    _interrupted: threading.Event
    #: The sessions open now (`interrupt()` cancels what they run), under `_sessions_lock`.
    _sessions: weakref.WeakSet[psycopg.Connection[Any]]
    #: The bulk sessions of this run that are idle between its parallel parts (`_in_parallel`),
    #: taken again by the next part; closed when the run ends.
    _idle: list[psycopg.Connection[Any]]
    _sessions_lock: threading.Lock
    #: Whether the URL was seen to keep a server session per connection (`_check_session`).
    _session_checked: bool
    _session_check_lock: threading.Lock
    #: How many public entries are running (`export` runs inside `up`).
    _depth: int
    #: The run whose statements a thread started by `interrupt()` cancels until it ends (0: none).
    _cancelling: int
    #: How many runs (outermost public entries) have started: what a canceller is bound to.
    _runs: int
    _step: Step | None
    #: Per table, the archival jobs the backfill found already there (written by earlier runs).
    _resumed_from: dict[str, int]
    #: The GIN indexes of oban_jobs this migrator may merge (None: not read yet).
    _mergers: list[str] | None
    #: Whether this run has analyzed oban_jobs (before its first lookup of written ids).
    _analyzed: bool

    def _connect(self) -> psycopg.Connection[Any]:
        """An autocommit session of the migration, named APPLICATION_NAME in pg_stat_activity."""
        named = "application_name" in psycopg.conninfo.conninfo_to_dict(self.database_url) or os.environ.get(
            "PGAPPNAME"
        )
        extra = {} if named else {"application_name": APPLICATION_NAME}
        self._check_interrupt()
        conn = connect(self.database_url, autocommit=True, **extra)
        with self._sessions_lock:
            self._sessions.add(conn)  # before the check, so that `interrupt()` reaches it too
        try:
            self._check_session(conn, extra)
        except BaseException:
            with self._sessions_lock:
                self._sessions.discard(conn)
            conn.close()
            raise
        return conn

    def _check_session(self, conn: psycopg.Connection[Any], extra: dict[str, Any]) -> None:
        """Refuse a URL through a transaction pooler, on this migrator's first session and before
        it runs anything: the migration lock is its session's, and so are the settings of its
        bulk sessions, which through such a pooler would be left on a server session another
        client is given next (and a second migrator could be given the lock's)."""
        with self._session_check_lock:
            if self._session_checked:
                return
            with translate_errors():
                pooled = through_transaction_pooler(conn, self.database_url, **extra)
            if pooled:
                raise SessionRequiredError(
                    f"{redact_dsn(self.database_url)} reaches PostgreSQL through a transaction pooler "
                    "(PgBouncer's pool_mode = transaction or statement), and the migration needs one server session "
                    "throughout for its lock and settings; nothing was changed: give it a URL that "
                    "connects to PostgreSQL directly (PgBouncer's [databases] entry names its host and "
                    "port), or one through a pool in session mode"
                )
            self._session_checked = True

    # Interruption from another thread

    def interrupt(self) -> None:
        """Stop the run in progress from another thread, as Ctrl-C stops it in the main thread:
        the statements its sessions are running are cancelled (again every half second until it
        has stopped, so a statement sent as the first cancel arrived is stopped too), none of
        its steps' statements is sent after, its transactions roll back and its lock is
        released. The run then raises MigrationInterruptedError in its own thread. What it had
        committed stands, as after Ctrl-C; run it again to finish, or `down`. With no run in
        progress this does nothing. `cinegraph_oban.asyncio.migration` calls it when the
        awaiting task is cancelled."""
        with self._sessions_lock:
            if self._depth == 0:
                return
            self._interrupted.set()
            self._stop.set()  # the backfill's and the mergers' loops stop between statements
            if self._cancelling != self._runs:  # one canceller per run: it lives until the run ends
                self._cancelling = self._runs
                threading.Thread(
                    target=self._cancel_until_stopped, args=(self._runs,), name="migration-interrupt", daemon=True
                ).start()

    def _cancel_until_stopped(self, run: int) -> None:
        """Cancel the sessions' statements until run number `run` has ended (never a later run's)."""
        while True:
            with self._sessions_lock:  # held while cancelling: `_session` cannot begin its unlock meanwhile
                if self._depth == 0 or self._runs != run:
                    return
                for conn in list(self._sessions):
                    if not conn.closed:
                        with contextlib.suppress(Exception):  # closed meanwhile, or the server is gone
                            conn.cancel_safe(timeout=5)
            time.sleep(CANCEL_AGAIN_SECONDS)

    def _check_interrupt(self) -> None:
        if self._interrupted.is_set():
            raise MigrationInterruptedError(self._interrupted_message())

    def _interrupted_message(self) -> str:
        return (
            f"{self.name} was interrupted (interrupt()); nothing is half-written: run it again to finish "
            "(applying whatever changed meanwhile), or `down` to remove what it wrote"
        )

    @contextlib.contextmanager
    def _one_run(self) -> Iterator[None]:
        """A public entry (`up`, `down`, `verify`, `status`, `export`). Interrupted, whatever it
        ends in (a cancelled statement, the backfill's stop) is MigrationInterruptedError; when
        the outermost entry ends, the interrupt has been served."""
        with self._sessions_lock:
            if self._depth == 0:
                self._runs += 1
            self._depth += 1
        try:
            yield
        except BaseException as error:
            if self._interrupted.is_set() and not isinstance(error, MigrationInterruptedError):
                raise MigrationInterruptedError(self._interrupted_message()) from error
            raise
        finally:
            idle: list[psycopg.Connection[Any]] = []
            with self._sessions_lock:
                self._depth -= 1
                if self._depth == 0:
                    self._interrupted.clear()
                    idle, self._idle = self._idle, []
            for conn in idle:
                conn.close()

    # Rendering

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"prefix": self.prefix, "schema": self.schema, "worker": self.worker, **extra}

    def _template(self, name: str, extra: dict[str, Any]) -> str:
        """The template's path, after checking that the running step of `up` lists it (and,
        but for the lock's release, that the migration has not been interrupted)."""
        if name != "migration_unlock":
            self._check_interrupt()
        step = self._step
        if step is not None:
            if name not in step.templates:
                raise AssertionError(f"up's step {step.key!r} ran {name!r}, which UP_STEPS does not list for it")
            self.ran.append((step.key, name))
        if name == "lock_timeout":
            extra.setdefault("timeout_ms", self.lock_timeout_ms)
        elif name == "pending_list_limit":
            extra.setdefault("limit", BACKFILL_PENDING_LIST_LIMIT)
        elif name == "verify":
            extra.setdefault("capture", True)  # `migrate verify` says when the capture is not there
        return name if "/" in name else f"migration/{name}"

    def _sql(self, name: str, **extra: Any) -> bytes:
        return builder.sql(self._template(name, extra), **self._ctx(**extra))

    def _statements(self, name: str, **extra: Any) -> list[bytes]:
        """The statements of a template that holds several (see `templates.render_statements`)."""
        path = self._template(name, extra)
        return [statement.encode() for statement in builder.statements(path, **self._ctx(**extra))]

    @contextlib.contextmanager
    def _running(self, key: str) -> Iterator[None]:
        """Run a step of `up`: statements it renders must be listed for it in UP_STEPS."""
        outer = self._step
        self._step = next(step for step in UP_STEPS if step.key == key)
        try:
            yield
        finally:
            self._step = outer

    def plan(self) -> list[tuple[str, list[str]]]:
        """Every statement `up` may run, step by step, rendered from UP_STEPS without touching
        the database (what only some runs need, such as the migration record of an already
        migrated database, is there too)."""
        steps: list[tuple[str, list[str]]] = []
        for step in UP_STEPS:
            options = dict(step.when)
            names = [name for name in step.templates if name not in options or getattr(self, options[name])]
            statements = ["BEGIN;"] if step.transaction else []
            index = 0
            while index < len(names):
                if names[index] not in step.per_table:
                    statements += self._shown(names[index])
                    index += 1
                    continue
                group = []
                while index < len(names) and names[index] in step.per_table:
                    group.append(names[index])
                    index += 1
                for table in LEGACY_TABLES:
                    for name in group:
                        statements += self._shown(name, table=table)
            if step.transaction:
                statements.append("COMMIT;")
            steps.append((step.title, statements))
        return steps

    def _shown(self, name: str, **extra: Any) -> list[str]:
        """A template's statements as `migrate plan` shows them: each as sent, ending in `;`."""
        path = self._template(name, extra)
        shown = [_as_sent(s) for s in builder.statements(path, **self._ctx(**extra))]
        return [text if text.rstrip().endswith(";") else text.rstrip() + ";" for text in shown]

    def _kind(self, conn: psycopg.Connection[Any], name: str) -> str | None:
        self._template("relation_kind", {})  # checked and noted; `relation_kind` renders it
        return relation_kind(conn, self.schema, name)

    def _detect(self, conn: psycopg.Connection[Any]) -> ObanTable:
        self._template("oban/detect", {})  # checked and noted; `detect` renders it
        return detect(conn, self.prefix)

    def _recorded(self, conn: psycopg.Connection[Any]) -> bool | None:
        exists = conn.execute(self._sql("schema_migrations_exists"), {"schema": self.schema}).fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(self._sql("migration_recorded"), {"version": self.version}).fetchone()
        return bool(row and row[0])

    def _stats(self, conn: psycopg.Connection[Any], table: str) -> dict[str, Any]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self._sql("legacy_stats", table=table), {})
            row = cur.fetchone()
        assert row is not None
        return row

    def _capture_present(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the change capture of an unfinished `up` is there (its side table)."""
        row = conn.execute(self._sql("capture_state"), {"schema": self.schema}).fetchone()
        return bool(row and row[0])

    def _pending(self, conn: psycopg.Connection[Any], table: str) -> int:
        """Writes to `table` the change capture recorded and `up` has not applied yet."""
        row = conn.execute(self._sql("pending_changes", table=table), {}).fetchone()
        return int(row[0]) if row else 0

    def _archived(self, conn: psycopg.Connection[Any], table: str) -> Backfilled:
        row = conn.execute(self._sql("archived_progress", table=table), {}).fetchone()
        assert row is not None
        return Backfilled(int(row[0]), int(row[1]), int(row[2]))

    # Work per table, in parallel

    def _per_table(self, work: Callable[[psycopg.Connection[Any], str], Any]) -> dict[str, Any]:
        """`work(conn, table)` for both legacy tables at once (see `_in_parallel`)."""
        return self._in_parallel(LEGACY_TABLES, work)

    def _bulk_session(self) -> psycopg.Connection[Any]:
        """A session for one key of `_in_parallel`: one an earlier part of this run left idle
        (a run of `up` has four parallel parts on the same two or three sessions, not a new
        backend for each), else a new one."""
        self._check_interrupt()
        with self._sessions_lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._connect()

    def _in_parallel(
        self,
        keys: Iterable[str],
        work: Callable[[psycopg.Connection[Any], str], Any],
        done: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """`work(conn, key)` for every key at once, on a bulk-session connection each.

        The legacy tables (and Oban's indexes) are independent and the server has cores. The
        first error is raised after all have stopped; an interrupt (Ctrl-C) in the main thread
        stops the workers too (their queries are cancelled and the backfill stops between
        batches) before it goes on, so nothing runs on after the migration lock is released.
        `done(key)` is called when a key's worker ends, however it ends (even when it could not
        connect). The result also names the database under `_database`.
        """
        from concurrent.futures import ThreadPoolExecutor, wait

        connections: list[psycopg.Connection[Any]] = []

        def one(key: str) -> tuple[Any, str]:
            try:
                conn = self._bulk_session()
                connections.append(conn)
                try:
                    conn.execute(self._sql("bulk_session"), {})
                    result = work(conn, key), conn.info.dbname
                except BaseException:
                    conn.close()
                    raise
                with self._sessions_lock:
                    kept = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                    if kept:
                        self._idle.append(conn)  # for the run's next parallel part
                if not kept:
                    conn.close()
                return result
            finally:
                if done is not None:
                    done(key)

        keys = list(keys)
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=max(len(keys), 1))
        futures = {key: pool.submit(one, key) for key in keys}
        try:
            wait(futures.values())
        except BaseException:
            self._stop.set()
            for conn in list(connections):
                with contextlib.suppress(Exception):
                    conn.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        results: dict[str, Any] = {}
        for key, future in futures.items():
            results[key], results["_database"] = future.result()
        return results
