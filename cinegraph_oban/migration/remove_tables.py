"""RemoveRedundantImportTables: retire `failed_imdb_lookups` and `skipped_imports` without losing a row.

`up`, in order, each step safe to re-run after a crash at any point:

1. preflight (read-only): the Oban schema; each legacy table's exact shape (a different shape is
   refused with a precise diff); row counts; a warning when a table was written to recently.
2. export: both tables streamed to `<export_dir>/<table>.jsonl.gz` (the JSON PostgreSQL writes
   for each row) with `manifest.json` (row counts, SHA-256), written atomically.
3. backfill: set-based batches, in id order, each one statement: every legacy row becomes one
   archival `Cinegraph.Workers.TMDbDetailsWorker` job in a final state whose meta holds the row
   (the meta contract). A re-run resumes after the highest legacy id archived. `oban_jobs` only
   ever sees INSERTs.
4. verify: every legacy row against the row its archival job maps back to, whole rows compared;
   any difference stops the migration before anything is dropped.
5. drop: one short transaction with a `lock_timeout` (retried): lock the legacy tables, archive
   rows written since, check the counts, drop both tables, optionally create the compat views
   and audit log, and record the Ecto migration in `schema_migrations` under Ecto's own lock.

`down` recreates both tables exactly as the original Ecto migrations made them and restores
every row from the archival jobs (or from an export, when Oban's Pruner has removed jobs),
resets the id sequences, removes the archival jobs and the `schema_migrations` row.

A session-level advisory lock lets only one migrator run at a time.

`UP_STEPS` lists the steps of `up` with every statement each may run; `plan()` (`migrate plan`)
is rendered from it, and `up` refuses to render a statement its running step does not list.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cinegraph_oban.db.connections import connect, normalize_dsn, to_psycopg
from cinegraph_oban.db.identifiers import check_identifier, check_prefix
from cinegraph_oban.errors import (
    LockNotAcquiredError,
    UnsupportedSchemaError,
    VerificationError,
    first_line,
)
from cinegraph_oban.meta.records import FailedLookup, SkippedImport
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.model.workers import TMDB_DETAILS_WORKER
from cinegraph_oban.oban.table import ObanTable, detect
from cinegraph_oban.sql import builder

__all__ = [
    "DEFAULT_VERSION",
    "EXPECTED_COLUMNS",
    "LEGACY_TABLES",
    "Finding",
    "MigrationSummary",
    "RemoveRedundantImportTables",
    "create_legacy_tables",
    "insert_legacy_row",
]

#: The Ecto migration version recorded in schema_migrations (configurable).
DEFAULT_VERSION = 20251125000000
LEGACY_TABLES = ("failed_imdb_lookups", "skipped_imports")
CRASH_VARIABLE = "CINEGRAPH_OBAN_CRASH_AT"
RECENT_WRITE = timedelta(minutes=15)
#: How often the backfill's mergers merge the GIN pending lists (sooner when a table is done).
MERGE_INTERVAL_SECONDS = 0.2

#: column -> (type, NOT NULL, default), as the original Ecto migrations created them.
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "failed_imdb_lookups": {
        "id": ("bigint", True, "nextval('{seq}'::regclass)"),
        "imdb_id": ("character varying(255)", True, None),
        "title": ("character varying(255)", False, None),
        "year": ("integer", False, None),
        "source": ("character varying(255)", True, None),
        "source_key": ("character varying(255)", False, None),
        "reason": ("character varying(255)", True, None),
        "metadata": ("jsonb", False, "'{}'::jsonb"),
        "retry_count": ("integer", False, "0"),
        "last_retry_at": ("timestamp(0) without time zone", False, None),
        "inserted_at": ("timestamp(0) without time zone", True, None),
        "updated_at": ("timestamp(0) without time zone", True, None),
    },
    "skipped_imports": {
        "id": ("bigint", True, "nextval('{seq}'::regclass)"),
        "tmdb_id": ("integer", True, None),
        "title": ("character varying(255)", False, None),
        "reason": ("character varying(255)", False, None),
        "criteria_failed": ("jsonb", False, None),
        "checked_at": ("timestamp without time zone", False, "now()"),
        "inserted_at": ("timestamp without time zone", True, None),
    },
}


class Backfilled(NamedTuple):
    """How far the backfill of one table got."""

    archived: int  # archival jobs
    last_id: int  # the highest legacy id archived (0: none)
    last_job_id: int  # the archival job of that legacy id (0: none)


@dataclass(frozen=True, slots=True)
class Finding:
    """One kind of difference verify found in one table."""

    table: str
    kind: str
    rows: int
    example_ids: tuple[int, ...]

    def __str__(self) -> str:
        ids = ", ".join(map(str, self.example_ids))
        return (
            f"{self.table}: {self.rows} {self.kind} (ids {ids}{', ...' if self.rows > len(self.example_ids) else ''})"
        )


@dataclass
class MigrationSummary:
    """What a command did, for the CLI and for tests."""

    action: str
    rows: dict[str, int] = field(default_factory=dict)
    archived: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    export: str | None = None
    lock_held_seconds: float | None = None
    seconds: float = 0.0
    already_done: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    #: verify: archival jobs per table that nothing was compared with (tables gone, no export).
    unverified: dict[str, int] = field(default_factory=dict)
    #: verify, after `up`: exported rows per table whose archival jobs Oban's Pruner has deleted
    #: (the export holds them; a notice says so, not a finding).
    pruned: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "findings"}
        data["findings"] = [_finding_dict(f) for f in self.findings]
        return data


def _finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "table": finding.table,
        "kind": finding.kind,
        "rows": finding.rows,
        "example_ids": list(finding.example_ids),
    }


Progress = Callable[[str, int, int], None]


def _crash_point(name: str) -> None:
    """Fault injection for the crash tests: `CINEGRAPH_OBAN_CRASH_AT=<name>` kills the process here."""
    if os.environ.get(CRASH_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def create_legacy_tables(conn: psycopg.Connection[Any], schema: str = "public") -> None:
    """Create both legacy tables exactly as the original Ecto migrations did."""
    conn = to_psycopg(conn)
    for table in LEGACY_TABLES:
        for statement in builder.statements(f"legacy/create_{table}", schema=schema):
            conn.execute(statement.encode(), {})


def relation_kind(conn: psycopg.Connection[Any], schema: str, name: str) -> str | None:
    """pg_class.relkind of `schema.name` ('r' for a table, 'v' for a view, ...), or None if absent."""
    conn = to_psycopg(conn)
    row = conn.execute(builder.sql("migration/relation_kind"), {"schema": schema, "name": name}).fetchone()
    return row[0] if row else None


def insert_legacy_row(
    conn: psycopg.Connection[Any], schema: str, record: FailedLookup | SkippedImport, *, json_null: bool = False
) -> None:
    """Write one row the way the old worker did, id included. A None metadata/criteria_failed is
    SQL NULL, or the jsonb value null with `json_null=True`."""
    conn = to_psycopg(conn)
    values = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "table"}
    for name in ("metadata", "criteria_failed"):
        if name in values and (values[name] is not None or json_null):
            values[name] = Jsonb(values[name])
    template = "legacy/insert_failed_lookup" if isinstance(record, FailedLookup) else "legacy/insert_skipped_import"
    conn.execute(builder.sql(template, schema=schema), values)


_PLACEHOLDER_OR_PERCENT = re.compile(r"%%|%\(\w+\)s")


def _as_sent(text: str) -> str:
    """A rendered statement as `plan` shows it: one without placeholders as the server gets it
    (psycopg turns the `%%` the templates write for `%` back into `%`); one with placeholders in
    psycopg's form, where `%%` is right. Scanned as psycopg does, so a schema named `%(x)s`,
    rendered `"%%(x)s"`, is not taken for a placeholder."""
    if any(match.group(0) != "%%" for match in _PLACEHOLDER_OR_PERCENT.finditer(text)):
        return text
    return text.replace("%%", "%")


#: The backstop limit of the GIN pending lists in the backfill's own sessions (see `_backfill_all`).
BACKFILL_PENDING_LIST_LIMIT = "256MB"


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
        ("relation_kind", "oban/detect", "schema_migrations_exists", "migration_recorded"),
    ),
    Step(
        "preflight",
        "preflight (read-only)",
        ("oban/detect", "legacy_columns", "legacy_stats"),
        per_table=frozenset({"legacy_stats"}),
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
        "verify",
        "verify (read-only, a bulk session per table)",
        ("bulk_session", "verify"),
        per_table=frozenset({"verify"}),
    ),
    Step(
        "drop",
        "drop and record (one transaction)",
        (
            "lock_timeout",
            "lock_legacy_tables",
            "legacy_stats",
            "backfill",
            "final_count",
            "create_audit_log",
            "drop_legacy_tables",
            "create_compat_views",
            "schema_migrations_exists",
            "migration_recorded",
            "lock_schema_migrations",
            "record_migration",
        ),
        per_table=frozenset({"legacy_stats", "backfill", "final_count"}),
        when=(("create_audit_log", "audit_log"), ("create_compat_views", "compat_views")),
        transaction=True,
    ),
    Step("unlock", "unlock", ("migration_unlock",)),
)


class RemoveRedundantImportTables:
    """The migration, bound to one database, Oban prefix and schema of the legacy tables."""

    name = "RemoveRedundantImportTables"
    #: gzip level of the export: 1 compresses JSON Lines nearly as well as 6, several times faster.
    compress_level = 1

    def __init__(
        self,
        database_url: str,
        *,
        prefix: str = "public",
        schema: str = "public",
        version: int = DEFAULT_VERSION,
        batch_size: int = 50_000,
        export_dir: str | Path = "cinegraph-oban-export",
        compat_views: bool = False,
        audit_log: bool = False,
        lock_timeout_ms: int = 2_000,
        retries: int = 5,
        progress: Progress | None = None,
    ) -> None:
        self.database_url = normalize_dsn(database_url)
        self.prefix = check_prefix(prefix)  # before anything touches the database
        self.schema = check_identifier(schema, field="schema")
        self.version = version
        self.batch_size = batch_size
        self.export_dir = Path(export_dir)
        self.compat_views = compat_views
        self.audit_log = audit_log
        self.lock_timeout_ms = lock_timeout_ms
        self.retries = retries
        self.progress = progress or (lambda step, done, total: None)
        self.worker = TMDB_DETAILS_WORKER.name
        self._stop = threading.Event()
        #: The step of `up` running now (None outside `up`), and the (step, template) pairs
        #: rendered in `up` so far.
        self._step: Step | None = None
        self.ran: list[tuple[str, str]] = []

    # Rendering

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"prefix": self.prefix, "schema": self.schema, "worker": self.worker, **extra}

    def _template(self, name: str, extra: dict[str, Any]) -> str:
        """The template's path, after checking that the running step of `up` lists it."""
        step = self._step
        if step is not None:
            if name not in step.templates:
                raise AssertionError(f"up's step {step.key!r} ran {name!r}, which UP_STEPS does not list for it")
            self.ran.append((step.key, name))
        if name == "lock_timeout":
            extra.setdefault("timeout_ms", self.lock_timeout_ms)
        elif name == "pending_list_limit":
            extra.setdefault("limit", BACKFILL_PENDING_LIST_LIMIT)
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

    # Connections and the migration lock

    @contextlib.contextmanager
    def _session(self, *, up: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A connection holding the migration lock (for `up`, its lock and unlock steps)."""
        conn = connect(self.database_url, autocommit=True)
        try:
            with self._running("lock") if up else contextlib.nullcontext():
                locked = conn.execute(self._sql("migration_lock"), {}).fetchone()
            if not locked or not locked[0]:
                raise LockNotAcquiredError(
                    "another RemoveRedundantImportTables migrator is running on this database (its advisory "
                    "lock is held); wait for it to finish, or find it in pg_locks (locktype = 'advisory')"
                )
            try:
                yield conn
            finally:
                with self._running("unlock") if up else contextlib.nullcontext(), contextlib.suppress(psycopg.Error):
                    conn.execute(self._sql("migration_unlock"), {})
        finally:
            conn.close()

    # State

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

    def _archived(self, conn: psycopg.Connection[Any], table: str) -> Backfilled:
        row = conn.execute(self._sql("archived_progress", table=table), {}).fetchone()
        assert row is not None
        return Backfilled(int(row[0]), int(row[1]), int(row[2]))

    def status(self) -> dict[str, Any]:
        """Where the migration stands, read-only (no lock taken)."""
        with connect(self.database_url, autocommit=True) as conn:
            detect(conn, self.prefix)
            out: dict[str, Any] = {"version": self.version, "recorded": self._recorded(conn), "tables": {}}
            for table in LEGACY_TABLES:
                kind = self._kind(conn, table)
                archived, last_id, _ = self._archived(conn, table)
                entry: dict[str, Any] = {
                    "present": {"r": "table", "v": "compat view"}.get(kind or "", "absent"),
                    "archived_jobs": archived,
                    "last_archived_id": last_id,
                }
                if kind == "r":
                    entry["rows"] = self._stats(conn, table)["rows"]
                out["tables"][table] = entry
        manifest = self.export_dir / "manifest.json"
        out["export"] = str(manifest) if manifest.exists() else None
        if all(t["present"] == "table" for t in out["tables"].values()):
            out["state"] = "pending"
        elif all(t["present"] != "table" for t in out["tables"].values()) and out["recorded"] is not False:
            out["state"] = "migrated"
        else:
            out["state"] = "inconsistent"
        return out

    # Preflight

    def _preflight(self, conn: psycopg.Connection[Any], summary: MigrationSummary) -> None:
        oban = self._detect(conn)
        missing_states = {"discarded", "completed"} - set(oban.states)
        if missing_states:
            raise UnsupportedSchemaError(f"{self.prefix}.oban_job_state lacks {sorted(missing_states)}")
        problems: list[str] = []
        for table in LEGACY_TABLES:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(self._sql("legacy_columns"), {"schema": self.schema, "table": table})
                found = {r["name"]: (r["type"], r["not_null"], r["default_value"]) for r in cur.fetchall()}
            seq = f"{table}_id_seq" if self.schema == "public" else f"{self.schema}.{table}_id_seq"
            expected = {
                name: (typ, notnull, default.replace("{seq}", seq) if default else None)
                for name, (typ, notnull, default) in EXPECTED_COLUMNS[table].items()
            }
            for name in expected.keys() - found.keys():
                problems.append(f"{table}.{name}: missing (expected {expected[name][0]})")
            for name in found.keys() - expected.keys():
                problems.append(f"{table}.{name}: unexpected column of type {found[name][0]}")
            for name in expected.keys() & found.keys():
                if found[name][:2] != expected[name][:2]:
                    problems.append(
                        f"{table}.{name}: {found[name][0]}{' NOT NULL' if found[name][1] else ''}, expected "
                        f"{expected[name][0]}{' NOT NULL' if expected[name][1] else ''}"
                    )
            stats = self._stats(conn, table)
            summary.rows[table] = int(stats["rows"])
            last_write = stats["last_write"]
            if last_write is not None and utc_now() - last_write < RECENT_WRITE:
                summary.warnings.append(
                    f"{table} was written to at {last_write:%Y-%m-%d %H:%M:%S} UTC: the old worker may still be "
                    "running; rows it writes before the drop are archived too, rows after it fail"
                )
        if problems:
            raise VerificationError(
                "the legacy tables do not have the shape the original Ecto migrations gave them, so this "
                "migration would not carry them exactly; nothing was changed:\n  " + "\n  ".join(problems)
            )

    # Export

    def export(self, rows: dict[str, int] | None = None) -> dict[str, Any]:
        """Stream both tables to compressed JSON Lines with a manifest; returns the manifest.

        `rows`, each table's row count if the caller has just counted it (for the progress
        report); otherwise each table is counted first.
        """
        self.export_dir.mkdir(parents=True, exist_ok=True)
        counted = rows or {}
        files = self._per_table(lambda conn, table: self._export_table(conn, table, counted.get(table)))
        manifest: dict[str, Any] = {
            "migration": self.name,
            "created_at": utc_now().isoformat() + "Z",
            "database": files.pop("_database", None),
            "schema": self.schema,
            "tables": {table: files[table] for table in LEGACY_TABLES},
        }
        temp = self.export_dir / "manifest.json.partial"
        with open(temp, "w", encoding="utf-8") as out:
            out.write(json.dumps(manifest, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.export_dir / "manifest.json")
        _fsync_directory(self.export_dir)  # the renames of the data files and the manifest
        return manifest

    def _export_table(self, conn: psycopg.Connection[Any], table: str, total: int | None) -> dict[str, Any]:
        """One table through COPY into `<table>.jsonl.gz`, renamed into place only when whole.

        The COPY is in CSV form with a quote and a delimiter (0x01, 0x02) that JSON text never
        holds raw, so each line is the row's JSON exactly as PostgreSQL wrote it, and the bytes
        go to the compressor without a Python object per row.
        """
        final = self.export_dir / f"{table}.jsonl.gz"
        partial = final.with_name(final.name + ".partial")
        if total is None:
            total = int(self._stats(conn, table)["rows"])
        rows = 0
        digest = hashlib.sha256()
        conn.execute(self._sql("export_encoding"), {})
        with (
            open(partial, "wb") as raw,
            _HashingWriter(raw, digest) as hashed,
            gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=self.compress_level, mtime=0) as out,
            conn.cursor() as cur,
            cur.copy(builder.unparametrized(self._sql("export_rows", table=table))) as copy,
        ):
            # COPY hands over a row at a time: write and report in ~1 MB pieces.
            pending: list[bytes] = []
            size = 0
            for data in copy:
                pending.append(bytes(data))
                size += len(data)
                if size >= 1 << 20:
                    rows += _write_lines(out, pending)
                    pending, size = [], 0
                    self.progress(f"export {table}", rows, total)
            rows += _write_lines(out, pending)
        self.progress(f"export {table}", rows, total)
        os.replace(partial, final)
        return {"file": final.name, "rows": rows, "sha256": digest.hexdigest()}

    def _per_table(self, work: Callable[[psycopg.Connection[Any], str], Any]) -> dict[str, Any]:
        """`work(conn, table)` for both legacy tables at once (see `_in_parallel`)."""
        return self._in_parallel(LEGACY_TABLES, work)

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
                with connect(self.database_url, autocommit=True) as conn:
                    connections.append(conn)
                    conn.execute(self._sql("bulk_session"), {})
                    return work(conn, key), conn.info.dbname
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

    # Backfill and verify

    def _backfill(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        total: int,
        now: datetime,
        *,
        batch: int,
        start: Backfilled | None = None,
    ) -> Backfilled:
        """Archive the rows after the last archived one; returns how far it got."""
        archived, last_id, last_job_id = start if start is not None else self._archived(conn, table)
        batches = 0
        while not self._stop.is_set():
            row = conn.execute(
                self._sql("backfill", table=table),
                {"after": last_id, "batch": batch, "total": total, "now": now},
            ).fetchone()
            assert row is not None
            count, batch_last, batch_last_job = int(row[0]), row[1], row[2]
            if count == 0:
                return Backfilled(archived, last_id, last_job_id)
            archived += count
            last_id, last_job_id = int(batch_last), int(batch_last_job)
            batches += 1
            self.progress(f"backfill {table}", archived, total)
            _crash_point(f"backfill:{table}:{batches}")
        raise KeyboardInterrupt  # stopped by an interrupt in the main thread; the batches so far stand

    def _backfill_all(
        self, conn: psycopg.Connection[Any], summary: MigrationSummary, now: datetime
    ) -> dict[str, Backfilled]:
        """Both tables at once, a connection each, with a merger per GIN index of oban_jobs.

        Every archival job adds a few dozen entries to Oban's GIN indexes. They wait in each
        index's pending list until someone merges the list into the index, and only one session
        can merge a list at a time. Left to the inserts, whichever backfill statement finds a list
        over its limit merges all of it while its table waits, and merges whatever is still there
        when the backfill ends only when the application next inserts: that insert's job waits
        for it. So, when the migrator owns the indexes (gin_clean_pending_list needs the owner,
        as VACUUM does), one more connection per index merges its list over and over while both
        tables are backfilled (their sessions merge only past 256 MB, a backstop), and once more
        at the end. A migrator that is not the owner leaves the merging to the inserts (64 MB)
        and gets a warning.
        """
        indexes = conn.execute(self._sql("gin_indexes"), {}).fetchall()
        mergers = [str(index) for index, owned in indexes if owned]
        refused = [str(index) for index, owned in indexes if not owned]
        if refused:
            summary.warnings.append(
                f"could not merge the GIN pending lists of {', '.join(refused)} (only their owner can): Oban's "
                f"unique checks and meta queries read them until the next VACUUM; run `VACUUM {self.prefix}.oban_jobs` "
                "as the table's owner"
            )
        running = set(LEGACY_TABLES)
        finished = threading.Condition()

        def backfill(bulk: psycopg.Connection[Any], table: str) -> Backfilled:
            if mergers and not refused:
                bulk.execute(self._sql("pending_list_limit"), {})
            return self._backfill(bulk, table, summary.rows[table], now, batch=self.batch_size)

        def backfill_ended(key: str) -> None:
            with finished:
                running.discard(key)
                finished.notify_all()

        def merge(bulk: psycopg.Connection[Any], index: str) -> None:
            # Merging only keeps the lists short: a merge that fails is reported, not fatal.
            while True:
                with finished:
                    if self._stop.is_set():  # interrupted: the backfill stopped too
                        return
                    last = not running
                try:
                    bulk.execute(self._sql("merge_pending_list"), {"index": index})
                except psycopg.Error as exc:
                    if self._stop.is_set():
                        return
                    summary.warnings.append(
                        f"could not merge the GIN pending list of {index} ({first_line(exc)}); "
                        f"the backfill's inserts merged it instead. Run `VACUUM {self.prefix}.oban_jobs` afterwards"
                    )
                    return
                if last:
                    return
                with finished:
                    finished.wait(MERGE_INTERVAL_SECONDS)

        results = self._in_parallel(
            [*LEGACY_TABLES, *mergers],
            lambda bulk, key: backfill(bulk, key) if key in LEGACY_TABLES else merge(bulk, key),
            done=lambda key: backfill_ended(key) if key in LEGACY_TABLES else None,
        )
        for table in LEGACY_TABLES:
            summary.archived[table] = results[table].archived
        return {table: results[table] for table in LEGACY_TABLES}

    def _verify(self) -> list[Finding]:
        found = self._per_table(lambda conn, table: self._findings(conn, "verify", table))
        return [f for table in LEGACY_TABLES for f in found[table]]

    # up

    def up(self) -> MigrationSummary:
        summary = MigrationSummary(action="up")
        started = time.perf_counter()
        with self._session(up=True) as conn:
            with self._running("state"):
                kinds = {t: self._kind(conn, t) for t in LEGACY_TABLES}
                if all(k != "r" for k in kinds.values()):
                    self._detect(conn)
                    if self._recorded(conn) is False:
                        raise VerificationError(
                            f"the legacy tables are not there, but schema_migrations has no version {self.version}: "
                            "they were removed some other way; nothing to do, and nothing was changed"
                        )
                    summary.already_done = True
                    summary.notices.append("already migrated: the legacy tables are gone and the migration is recorded")
                    return summary
                if any(k != "r" for k in kinds.values()):
                    raise VerificationError(
                        f"only one legacy table is a table ({kinds}); restore it or migrate by hand"
                    )
            mark = time.perf_counter()

            def lap(step: str) -> None:
                nonlocal mark
                summary.timings[step] = time.perf_counter() - mark
                mark = time.perf_counter()

            with self._running("preflight"):
                self._preflight(conn, summary)
            lap("preflight")
            with self._running("export"):
                self.export(summary.rows)  # counted by the preflight just now
            summary.export = str(self.export_dir / "manifest.json")
            lap("export")
            _crash_point("after-export")
            now = utc_now()
            with self._running("backfill"):
                progress = self._backfill_all(conn, summary, now)
            lap("backfill")
            _crash_point("after-backfill")
            with self._running("verify"):
                summary.findings = self._verify()
            lap("verify")
            if summary.findings:
                raise VerificationError(
                    "verify found differences; nothing was dropped:\n  " + "\n  ".join(map(str, summary.findings))
                )
            with self._running("drop"):
                summary.lock_held_seconds = self._drop(conn, summary, now, progress)
            lap("drop")
        summary.seconds = time.perf_counter() - started
        return summary

    def _drop(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        now: datetime,
        progress: dict[str, Backfilled],
    ) -> float:
        for attempt in range(self.retries + 1):
            try:
                return self._drop_once(conn, summary, now, progress)
            except pg_errors.LockNotAvailable:
                if attempt == self.retries:
                    raise LockNotAcquiredError(
                        f"could not lock the legacy tables within {self.lock_timeout_ms} ms, {self.retries + 1} "
                        "times: long transactions hold them. Nothing was dropped; run `migrate up` again (it "
                        "resumes) when they are done"
                    ) from None
                summary.warnings.append(f"lock timeout on attempt {attempt + 1}; retrying")
                time.sleep(min(2**attempt * 0.5, 10))
        raise AssertionError("unreachable")

    def _drop_once(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        now: datetime,
        progress: dict[str, Backfilled],
    ) -> float:
        with conn.transaction():
            conn.execute(self._sql("lock_timeout"), {})
            conn.execute(self._sql("lock_legacy_tables"), {})
            locked_at = time.perf_counter()
            for table in LEGACY_TABLES:
                before = summary.rows[table]
                summary.rows[table] = int(self._stats(conn, table)["rows"])
                # Only rows written since the backfill are left: archived from where it stopped,
                # counted from what it archived (no need to count the archival jobs again here).
                archived, last_id, last_job_id = self._backfill(
                    conn, table, summary.rows[table], now, batch=max(self.batch_size, 100_000), start=progress[table]
                )
                summary.archived[table] = archived
                if archived != summary.rows[table]:
                    raise VerificationError(
                        f"{table}: {summary.rows[table]} rows but {archived} archival jobs after the final catch-up "
                        f"({before} rows at preflight); nothing was dropped"
                    )
                # Always: jobs archived by an earlier run (or attempt) may carry an older count.
                conn.execute(
                    self._sql("final_count", table=table),
                    {"total": archived, "last_id": last_id, "job_id": last_job_id},
                )
            if self.audit_log:
                for statement in self._statements("create_audit_log"):
                    conn.execute(statement, {})
            conn.execute(self._sql("drop_legacy_tables"), {})
            if self.compat_views:
                for statement in self._statements("create_compat_views"):
                    conn.execute(statement, {})
            if self._recorded(conn) is None:
                summary.notices.append(
                    f"{self.schema}.schema_migrations does not exist: the migration is not recorded for Ecto"
                )
            else:
                conn.execute(self._sql("lock_schema_migrations"), {})
                conn.execute(self._sql("record_migration"), {"version": self.version})
            _crash_point("before-commit")
            held = time.perf_counter() - locked_at
        return held

    # verify (read-only)

    def verify(self, *, recent_seconds: int = 7 * 86_400) -> MigrationSummary:
        """The read-only checks for a live database, whichever apply now.

        Before `up`: every legacy row would round-trip through the meta contract. Between backfill
        and drop: every legacy row against its archival job. After `up`: every exported row
        against its archival job. Always: recent TMDbDetailsWorker outcomes carry the keys the
        meta contract requires (the new worker code works).
        """
        summary = MigrationSummary(action="verify")
        with connect(self.database_url, autocommit=True) as conn:
            detect(conn, self.prefix)
            present = [t for t in LEGACY_TABLES if self._kind(conn, t) == "r"]
            for table in present:
                summary.rows[table] = int(self._stats(conn, table)["rows"])
                summary.findings += self._findings(conn, "representable", table)
                archived = self._archived(conn, table).archived
                summary.archived[table] = archived
                if archived:
                    summary.findings += self._findings(conn, "verify", table)
            absent = [t for t in LEGACY_TABLES if t not in present]
            for table in absent:
                summary.archived[table] = self._archived(conn, table).archived
            if absent:
                manifest = self.export_dir / "manifest.json"
                if manifest.exists():
                    exported = self._read_export(self.export_dir)
                    for table in absent:
                        summary.rows[table] = len(exported[table])
                        findings = self._export_findings(conn, table, exported[table], summary.archived[table])
                        summary.findings += self._pruned(conn, summary, table, exported[table], findings)
                else:
                    # The tables are gone and there is no export in export_dir: these archival jobs
                    # could not be compared with anything (callers treat that as a failed check).
                    summary.unverified = {t: summary.archived[t] for t in absent if summary.archived[t]}
                    for table in (t for t in absent if not summary.archived[t]):
                        summary.notices.append(
                            f"{table}: the table is gone and no archival job of it is left (Oban's Pruner deletes "
                            f"them after its max_age; Cinegraph keeps 7 days), and there is no export in "
                            f"{self.export_dir} to check: nothing was verified for it. Pass --export-dir <the "
                            "directory `migrate up` exported to>; that export holds its rows"
                        )
            rows = conn.execute(self._sql("new_worker_meta"), {"seconds": recent_seconds}).fetchall()
            summary.findings += [Finding("oban_jobs", kind, int(n), tuple(ids or ())) for kind, n, ids in rows]
        return summary

    def _findings(self, conn: psycopg.Connection[Any], check: str, table: str) -> list[Finding]:
        rows = conn.execute(self._sql(check, table=table), {}).fetchall()
        return [Finding(table, kind, int(n), tuple(ids or ())) for kind, n, ids in rows]

    def _pruned(
        self,
        conn: psycopg.Connection[Any],
        summary: MigrationSummary,
        table: str,
        lines: list[str],
        findings: list[Finding],
    ) -> list[Finding]:
        """`findings` without the exported rows whose archival jobs Oban's Pruner deleted.

        After `up` every exported row had an archival job (the drop refuses otherwise), so a row
        without one lost it since. The Pruner deletes finished jobs whose final timestamp is past
        its max_age; the backfill archives in id order with one timestamp per run, so what it has
        deleted is every row below the lowest legacy id still archived (all rows, once it is
        through). Those are reported as pruned, in a notice: the export holds them, and `down
        --from-export` restores them. Jobs missing in any other pattern (someone deleted them) and
        jobs whose content differs stay findings.
        """
        missing = next((f for f in findings if f.kind == "missing"), None)
        if missing is None:
            return findings
        row = conn.execute(self._sql("archived_first_id", table=table), {}).fetchone()
        first_id = row[0] if row else None
        ids = [int(json.loads(line)["row"]["id"]) for line in lines]
        below = len(ids) if first_id is None else sum(1 for i in ids if i < first_id)
        manifest = self._manifest()
        file = self.export_dir / str(manifest.get("tables", {}).get(table, {}).get("file", f"{table}.jsonl.gz"))
        checked = self.export_dir / "manifest.json"
        holds = (
            f"the export holds every one of them: {file} (its SHA-256 checked against {checked}); "
            f"`cinegraph-oban migrate down --from-export {self.export_dir}` restores from it. Keep that export: "
            "it, not job meta, is the permanent archive"
        )
        if missing.rows != below:
            summary.notices.append(
                f"{table}: {missing.rows:,} exported rows have no archival job, and not in the pattern Oban's Pruner "
                "leaves (it deletes every archival job past its max_age, the oldest run first), so they were deleted "
                "some other way, or the Pruner is part-way through (it deletes at most 10,000 jobs a run: verify "
                f"again in a minute). {holds}"
            )
            return findings
        summary.pruned[table] = missing.rows
        state, stamp = (
            ("discarded", "discarded_at") if table == "failed_imdb_lookups" else ("completed", "scheduled_at")
        )
        created = manifest.get("created_at")
        when = f", {_age(created)} ago (the export's created_at, {created})" if isinstance(created, str) else ""
        ids_text = ", ".join(map(str, missing.example_ids)) + (
            ", ..." if missing.rows > len(missing.example_ids) else ""
        )
        summary.notices.append(
            f"{table}: {missing.rows:,} of its {len(ids):,} exported rows no longer have an archival job (legacy ids "
            f"{ids_text}). Not data loss: they were most likely pruned by Oban's Pruner, which deletes {state} jobs "
            f"once their {stamp} is older than its max_age (Cinegraph keeps 7 days; Oban's default is 60 seconds), "
            f"and these were archived by `migrate up`{when}. {holds}"
        )
        return [f for f in findings if f is not missing]

    def _manifest(self) -> dict[str, Any]:
        try:
            data = json.loads((self.export_dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _export_findings(
        self, conn: psycopg.Connection[Any], table: str, lines: list[str], archived: int
    ) -> list[Finding]:
        """Every exported row against its archival job; `archived` counts the table's archival jobs."""
        totals: dict[str, tuple[int, list[int]]] = {}
        for chunk in _chunks(lines, 10_000):
            ids = [int(json.loads(line)["row"]["id"]) for line in chunk]
            for kind, n, example in conn.execute(self._sql("verify_export", table=table), {"lines": chunk, "ids": ids}):
                count, examples = totals.get(kind, (0, []))
                totals[kind] = (count + int(n), (examples + list(example or ()))[:20])
        findings = [Finding(table, kind, n, tuple(ex)) for kind, (n, ex) in sorted(totals.items())]
        if archived > len(lines):
            findings.append(Finding(table, "archival jobs beyond the export", archived - len(lines), ()))
        return findings

    # down

    def down(self, from_export: str | Path | None = None) -> MigrationSummary:
        summary = MigrationSummary(action="down")
        started = time.perf_counter()
        with self._session() as conn:
            detect(conn, self.prefix)
            kinds = {t: self._kind(conn, t) for t in LEGACY_TABLES}
            if any(k == "r" for k in kinds.values()):
                raise VerificationError(
                    f"the legacy tables are already there ({', '.join(t for t, k in kinds.items() if k == 'r')}); "
                    "nothing to roll back"
                )
            exported = self._read_export(Path(from_export)) if from_export else None
            expected: dict[str, int] = {}
            for table in LEGACY_TABLES:
                archived = self._archived(conn, table).archived
                summary.archived[table] = archived
                expected[table] = self._expected_rows(conn, table, exported)
                if exported is None and archived != expected[table]:
                    raise VerificationError(
                        f"{table}: only {archived} of its {expected[table]} rows still have an archival job (Oban's "
                        "Pruner removes finished jobs after max_age); nothing was restored. Restore from the export: "
                        "`cinegraph-oban migrate down --from-export <dir>`"
                    )
            with conn.transaction():
                for statement in builder.statements("migration/drop_compat_views", **self._ctx()):
                    conn.execute(statement.encode(), {})
                create_legacy_tables(conn, self.schema)
                for table in LEGACY_TABLES:
                    if exported is None:
                        conn.execute(self._sql("restore_from_jobs", table=table), {})
                    else:
                        for chunk in _chunks(exported[table], 10_000):
                            conn.execute(self._sql("restore_from_export", table=table), {"lines": chunk})
                    conn.execute(self._sql("reset_sequence", table=table), {"schema": self.schema, "table": table})
                    summary.rows[table] = int(self._stats(conn, table)["rows"])
                    if summary.rows[table] != expected[table]:
                        raise VerificationError(
                            f"{table}: restored {summary.rows[table]} rows, expected {expected[table]}; rolled back"
                        )
                    conn.execute(self._sql("delete_archived_jobs", table=table), {})
                if self._audit_log_is_ours(conn):
                    conn.execute(self._sql("drop_audit_log"), {})
                if self._recorded(conn) is not None:
                    conn.execute(self._sql("forget_migration"), {"version": self.version})
        summary.seconds = time.perf_counter() - started
        return summary

    def _expected_rows(self, conn: psycopg.Connection[Any], table: str, exported: dict[str, list[str]] | None) -> int:
        if exported is not None:
            return len(exported[table])
        row = conn.execute(builder.sql("migration/expected_rows", **self._ctx(table=table)), {}).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _audit_log_is_ours(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(self._sql("audit_log_comment"), {"schema": self.schema}).fetchone()
        return bool(row and row[0] and "cinegraph_oban" in row[0])

    def _read_export(self, directory: Path) -> dict[str, list[str]]:
        manifest_path = directory / "manifest.json"
        if not manifest_path.exists():
            raise VerificationError(f"no manifest.json in {directory}: not an export made by `cinegraph-oban export`")
        try:
            return self._read_export_files(directory, manifest_path)
        except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:  # JSON, gzip, UTF-8, a missing file
            raise VerificationError(
                f"{directory}: the export is damaged or incomplete ({type(exc).__name__}: {exc}); nothing was changed"
            ) from exc

    def _read_export_files(self, directory: Path, manifest_path: Path) -> dict[str, list[str]]:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        lines: dict[str, list[str]] = {}
        for table in LEGACY_TABLES:
            entry = manifest["tables"][table]
            path = directory / entry["file"]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != entry["sha256"]:
                raise VerificationError(
                    f"{path}: SHA-256 {digest} differs from the manifest's {entry['sha256']}; the export is damaged"
                )
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                lines[table] = [line.rstrip("\n") for line in handle if line.strip()]
            if len(lines[table]) != entry["rows"]:
                raise VerificationError(f"{path}: {len(lines[table])} rows, the manifest says {entry['rows']}")
        return lines


def _age(created_at: str) -> str:
    """How long ago an ISO 8601 UTC time was, roughly ("8 days", "3 hours", "45 seconds")."""
    try:
        then = datetime.fromisoformat(created_at.removesuffix("Z"))
    except ValueError:
        return "some time"
    seconds = max(int((utc_now() - then.replace(tzinfo=None)).total_seconds()), 0)
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _fsync_directory(path: Path) -> None:
    """Make the renames in `path` durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_lines(out: Any, pieces: list[bytes]) -> int:
    """Write COPY's pieces; returns how many lines (rows) they held."""
    data = b"".join(pieces)
    out.write(data)
    return data.count(b"\n")


class _HashingWriter:
    """A binary file wrapper that feeds everything written through it to a hash as well."""

    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw = raw
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return int(self.raw.write(data))

    def flush(self) -> None:
        self.raw.flush()

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.flush()
        os.fsync(self.raw.fileno())


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
