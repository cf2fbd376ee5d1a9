"""SQLAlchemy 2 Core query builders over `oban_jobs`, and typed readers of import outcomes.

    from cinegraph_oban.meta.queries import jobs, failed_lookups

    query = jobs().worker("Cinegraph.Workers.TMDbDetailsWorker").states("cancelled")
    query = query.meta(failure_reason="no_tmdb_match").between(since, None)
    select = query.statement          # an ordinary Select: extend it, execute it, print it
    rows = conn.execute(query)        # or session.execute / session.scalars / await aconn.execute
    print(query.sql())                # the SQL, values inlined: runs as printed, in psql too

Every meta (and args) filter has two renderings. The default is containment,
`meta @> '{"failure_reason":"no_tmdb_match"}'::jsonb`, which Oban's GIN index
`oban_jobs_meta_index` serves and which is how Oban and Oban Web filter meta. The design
document's form, `meta ->> 'failure_reason' = 'no_tmdb_match'` (`form="document"`), is kept so
its fragments can be reproduced exactly; it cannot use that index and scans the table. For
string values the two select the same rows.

Facts where the design document is wrong: worker names are stored without `Elixir.`; the worker
now cancels failed lookups, so "failed" means the states `discarded` and `cancelled` (plus
`retryable` while retries remain, on request); `failed_lookups(states=("discarded",),
form="document")` is the document's query as written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any, Literal

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement

from cinegraph_oban.db.connections import to_psycopg
from cinegraph_oban.errors import CinegraphObanError, ValidationError, translate_errors
from cinegraph_oban.meta.records import FailedLookup, SkippedImport
from cinegraph_oban.model.timestamps import to_naive_utc
from cinegraph_oban.model.unique import JOB_STATES
from cinegraph_oban.model.workers import TMDB_DETAILS_WORKER
from cinegraph_oban.sql import builder

__all__ = [
    "FAILED_STATES",
    "OUTCOME_INDEXES",
    "JobQuery",
    "create_outcome_indexes",
    "failed_lookups",
    "jobs",
    "oban_jobs_table",
    "outcome_index_state",
    "outcome_index_statements",
    "quality_skipped_imports",
    "read_failed_lookups",
    "read_jobs",
    "read_skipped_imports",
]

#: Where failed lookups end up: the worker cancels them now; older ones were discarded.
FAILED_STATES: tuple[str, ...] = ("discarded", "cancelled")
Form = Literal["contains", "document"]

#: For statements psycopg executes with parameters: `%(name)s` placeholders, so a `%` in an
#: identifier or literal is written `%%`, which psycopg turns back into `%`.
_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
#: For SQL with every value inlined, to be run as it is printed: no placeholders, so no `%`
#: doubled. Never connected, so string literals are written for standard_conforming_strings=on
#: (PostgreSQL's default since 9.1): a backslash is an ordinary character, `'` is doubled.
_LITERAL_DIALECT = postgresql.psycopg.dialect(paramstyle="named")  # type: ignore[no-untyped-call]


@cache
def oban_jobs_table(prefix: str = "public") -> sa.Table:
    """`<prefix>.oban_jobs` as a SQLAlchemy Table (schema version 14 columns)."""
    metadata = sa.MetaData()
    state = postgresql.ENUM(*JOB_STATES, name="oban_job_state", schema=prefix, create_type=False)
    return sa.Table(
        "oban_jobs",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("state", state, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("args", postgresql.JSONB, nullable=False),
        sa.Column("errors", postgresql.ARRAY(postgresql.JSONB), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("inserted_at", postgresql.TIMESTAMP, nullable=False),
        sa.Column("scheduled_at", postgresql.TIMESTAMP, nullable=False),
        sa.Column("attempted_at", postgresql.TIMESTAMP),
        sa.Column("completed_at", postgresql.TIMESTAMP),
        sa.Column("attempted_by", postgresql.ARRAY(sa.Text)),
        sa.Column("discarded_at", postgresql.TIMESTAMP),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text)),
        sa.Column("meta", postgresql.JSONB),
        sa.Column("cancelled_at", postgresql.TIMESTAMP),
        schema=prefix,
    )


class _JsonbConstant(ColumnElement[Any]):
    """A JSON value bound as text and cast with `::jsonb`, so it prints and binds everywhere."""

    inherit_cache = True
    type = postgresql.JSONB()

    def __init__(self, value: Mapping[str, Any]) -> None:
        self.param = sa.bindparam(None, json.dumps(value, ensure_ascii=False, separators=(",", ":")), type_=sa.Text)


@compiles(_JsonbConstant)
def _compile_jsonb_constant(element: _JsonbConstant, compiler: Any, **kw: Any) -> str:
    return f"{compiler.process(element.param, **kw)}::jsonb"


class _TextField(ColumnElement[Any]):
    """`<column> ->> '<key>' = '<value>'`, written exactly as the design document writes it."""

    inherit_cache = True
    type = sa.Boolean()

    def __init__(self, column: sa.Column[Any], key: str, value: str) -> None:
        self.column = column
        self.key_param = sa.bindparam(None, key, type_=sa.Text)
        self.value_param = sa.bindparam(None, value, type_=sa.Text)


@compiles(_TextField)
def _compile_text_field(element: _TextField, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    key = compiler.process(element.key_param, **kw)
    value = compiler.process(element.value_param, **kw)
    return f"{column} ->> {key} = {value}"


def _map_filter(column: sa.Column[Any], pairs: Mapping[str, Any], form: Form) -> list[ColumnElement[Any]]:
    if not pairs:
        return []
    if form == "contains":
        return [column.op("@>", return_type=sa.Boolean)(_JsonbConstant(pairs))]
    bad = {k: v for k, v in pairs.items() if not isinstance(v, str)}
    if bad:
        raise TypeError(
            f"the document form (->>) compares text and only matches containment for string values; "
            f"use form='contains' for {bad}"
        )
    return [_TextField(column, key, value) for key, value in pairs.items()]


@dataclass(frozen=True, slots=True)
class JobQuery:
    """An immutable, composable filter over `oban_jobs`; `.statement` is the SQLAlchemy Select."""

    prefix: str = "public"
    clauses: tuple[ColumnElement[Any], ...] = ()
    order: tuple[ColumnElement[Any], ...] = ()
    max_rows: int | None = None

    @property
    def table(self) -> sa.Table:
        return oban_jobs_table(self.prefix)

    def _with(self, *clauses: ColumnElement[Any]) -> JobQuery:
        return replace(self, clauses=self.clauses + clauses)

    def worker(self, *names: str) -> JobQuery:
        """Jobs of these workers; an `Elixir.` prefix is dropped, as Oban stores names without it."""
        stored = [n.removeprefix("Elixir.") for n in names]
        column = self.table.c.worker
        return self._with(column == stored[0] if len(stored) == 1 else column.in_(stored))

    def states(self, *states: str) -> JobQuery:
        unknown = [s for s in states if s not in JOB_STATES]
        if unknown:
            raise ValueError(f"unknown job states {unknown}; states are {list(JOB_STATES)}")
        column = self.table.c.state
        return self._with(column == states[0] if len(states) == 1 else column.in_(states))

    def queue(self, *queues: str) -> JobQuery:
        column = self.table.c.queue
        return self._with(column == queues[0] if len(queues) == 1 else column.in_(queues))

    def meta(self, form: Form = "contains", /, **pairs: Any) -> JobQuery:
        """Jobs whose meta holds these pairs (containment by default)."""
        return self._with(*_map_filter(self.table.c.meta, pairs, form))

    def meta_contains(self, value: Mapping[str, Any]) -> JobQuery:
        """Jobs whose meta contains `value`, nested objects and keys that are not identifiers included."""
        return self._with(*_map_filter(self.table.c.meta, value, "contains"))

    def args_contains(self, value: Mapping[str, Any]) -> JobQuery:
        """Jobs whose args contain `value`."""
        return self._with(*_map_filter(self.table.c.args, value, "contains"))

    def args(self, form: Form = "contains", /, **pairs: Any) -> JobQuery:
        return self._with(*_map_filter(self.table.c.args, pairs, form))

    def between(
        self, start: datetime | None = None, end: datetime | None = None, *, column: str = "inserted_at"
    ) -> JobQuery:
        """`start <= column < end` (either bound optional); aware datetimes are converted to naive UTC."""
        col = self.table.c[column]
        clauses = []
        if start is not None:
            clauses.append(col >= to_naive_utc(start))
        if end is not None:
            clauses.append(col < to_naive_utc(end))
        return self._with(*clauses)

    def where(self, *clauses: ColumnElement[Any]) -> JobQuery:
        return self._with(*clauses)

    def order_by(self, *columns: ColumnElement[Any]) -> JobQuery:
        return replace(self, order=tuple(columns))

    def limit(self, rows: int | None) -> JobQuery:
        return replace(self, max_rows=rows)

    @property
    def statement(self) -> sa.Select[Any]:
        select = sa.select(self.table).where(*self.clauses)
        if self.order:
            select = select.order_by(*self.order)
        if self.max_rows is not None:
            select = select.limit(self.max_rows)
        return select

    # SQLAlchemy: a JobQuery is used wherever its Select is, and executes as it.

    def __clause_element__(self) -> sa.Select[Any]:
        """The Select, for SQLAlchemy's coercion: `session.execute(query)`, `sa.union(q1, q2)`,
        `column.in_(query.with_only(query.table.c.id))` and the like."""
        return self.statement

    def _execute_on_connection(self, connection: Any, distilled_params: Any, execution_options: Any) -> Any:
        # What Connection.execute (and so AsyncConnection.execute, Session.execute and the
        # scalars() variants) calls on the object it is given; SQLAlchemy's own coercion of an
        # object with __clause_element__ into a statement requires it too.
        return self.statement._execute_on_connection(connection, distilled_params, execution_options)

    def _execute_on_scalar(self, connection: Any, distilled_params: Any, execution_options: Any) -> Any:
        # What Connection.scalar calls.
        return self.statement._execute_on_scalar(connection, distilled_params, execution_options)

    def subquery(self, name: str | None = None) -> sa.Subquery:
        """The Select as a named subquery, to select from or join (`Select.subquery`)."""
        return self.statement.subquery(name)

    def cte(self, name: str | None = None) -> sa.CTE:
        """The Select as a common table expression (`Select.cte`)."""
        return self.statement.cte(name)

    def exists(self) -> sa.Exists:
        """`EXISTS (<the query>)`, for a WHERE clause or `sa.select(query.exists())` (`Select.exists`)."""
        return self.statement.exists()

    def with_only(self, *columns: Any) -> sa.Select[Any]:
        """The same rows, selecting only `columns` (`Select.with_only_columns`), e.g.
        `query.with_only(query.table.c.id)` for an `IN (...)` subquery or `session.scalars`."""
        return self.statement.with_only_columns(*columns)

    def sql(self, *, literal: bool = True) -> str:
        """The statement as PostgreSQL SQL, values inlined.

        The text runs as printed and selects the rows the bound statement selects: pasted into
        psql, or executed without parameters (`conn.execute(query.sql())`; psycopg reads `%` as
        a placeholder only when parameters are given). It assumes standard_conforming_strings
        on, PostgreSQL's default. `literal=False` gives psycopg's form instead: `%(name)s`
        placeholders and `%` written `%%`, to run with `compiled()`'s parameters.
        """
        return _render(self.statement) if literal else self.compiled()[0]

    def where_sql(self) -> str:
        """Only the WHERE conditions, values inlined as `sql()` inlines them."""
        return " AND ".join(_render(clause) for clause in self.clauses)

    def compiled(self) -> tuple[str, dict[str, Any]]:
        """(SQL with %(name)s placeholders, parameters) for psycopg."""
        compiled = self.statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
        return str(compiled), dict(compiled.params)


def _render(element: Any) -> str:
    return str(element.compile(dialect=_LITERAL_DIALECT, compile_kwargs={"literal_binds": True}))


def jobs(prefix: str = "public") -> JobQuery:
    """A query over every job under `prefix`; narrow it with the builder methods."""
    return JobQuery(prefix=prefix)


def failed_lookups(
    *,
    prefix: str = "public",
    states: Sequence[str] = FAILED_STATES,
    include_retryable: bool = False,
    form: Form = "contains",
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> JobQuery:
    """TMDbDetailsWorker jobs that found no TMDb match (`failure_reason = no_tmdb_match`)."""
    wanted = (*states, "retryable") if include_retryable else tuple(states)
    query = jobs(prefix).worker(TMDB_DETAILS_WORKER.name).states(*wanted).meta(form, failure_reason="no_tmdb_match")
    if source is not None:
        query = query.meta(form, source=source)
    return query.between(since, until)


def quality_skipped_imports(
    *,
    prefix: str = "public",
    states: Sequence[str] = ("completed",),
    form: Form = "contains",
    since: datetime | None = None,
    until: datetime | None = None,
) -> JobQuery:
    """TMDbDetailsWorker jobs that soft-imported a movie that failed the quality criteria."""
    query = jobs(prefix).worker(TMDB_DETAILS_WORKER.name).states(*states).meta(form, import_type="soft")
    return query.between(since, until)


OUTCOME_INDEXES = ("oban_jobs_tmdb_failed_lookups_index", "oban_jobs_tmdb_soft_imports_index")


def outcome_index_statements(prefix: str = "public", *, drop: bool = False) -> list[str]:
    """The opt-in partial indexes for failed_lookups() and quality_skipped_imports()."""
    name = "meta/indexes/drop_outcome_indexes" if drop else "meta/indexes/create_outcome_indexes"
    return builder.statements(name, prefix=prefix, worker=TMDB_DETAILS_WORKER.name)


def create_outcome_indexes(conn: Any, prefix: str = "public", *, drop: bool = False) -> None:
    """Build (or drop) the opt-in indexes CONCURRENTLY; needs an autocommit connection.

    A build that failed half-way leaves an INVALID index behind, which PostgreSQL then ignores;
    drop and create again.
    """
    pg = to_psycopg(conn)
    if not pg.autocommit:
        raise CinegraphObanError("CREATE INDEX CONCURRENTLY cannot run in a transaction: use an autocommit connection")
    with translate_errors():
        for statement in outcome_index_statements(prefix, drop=drop):
            # Parameters, even none, so that psycopg reads a `%%` in a rendered identifier as `%`.
            pg.execute(statement.encode(), {})


def outcome_index_state(conn: psycopg.Connection[Any], prefix: str = "public") -> dict[str, bool]:
    """The opt-in indexes (OUTCOME_INDEXES) that exist under `prefix`, each with whether
    it is valid: False for one whose CONCURRENTLY build failed half-way, which PostgreSQL ignores.
    Reads the catalog only."""
    rows = conn.execute(
        builder.sql("meta/indexes/outcome_index_state"), {"prefix": prefix, "names": list(OUTCOME_INDEXES)}
    ).fetchall()
    return {str(name): bool(valid) for name, valid in rows}


def _seconds(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value is not None else None


#: FailedLookup field -> its meta key, for the fields a job may leave unsaid.
_FAILED_KEYS = {
    "title": "title",
    "year": "year",
    "source": "source",
    "source_key": "source_key",
    "metadata": "metadata",
    "retry_count": "retry_count",
    "last_retry_at": "last_retry_at",
}
#: What TMDbDetailsWorker's args carry for a failed lookup (legacy-tables.md), under meta's names.
_FAILED_ARGS = ("imdb_id", "title", "year", "source", "source_key", "metadata")
#: SkippedImport field -> its meta key, for the fields a job may leave unsaid.
_SKIPPED_KEYS = {"title": "movie_title", "reason": "reason", "criteria_failed": "quality_criteria_failed"}


def _said(row: dict[str, Any], from_args: Sequence[str]) -> dict[str, Any]:
    """The job's meta, with what it lacks of `from_args` taken from the job's args."""
    args = row["args"] if isinstance(row["args"], dict) else {}
    meta = row["meta"] if isinstance(row["meta"], dict) else {}
    said = {**{key: args[key] for key in from_args if key in args}, **meta}
    for key in _NOT_NULL:  # a null in meta for a NOT NULL column says nothing: the args may
        if said.get(key) is None and args.get(key) is not None and key in from_args:
            said[key] = args[key]
    return said


#: Columns of the legacy tables that were NOT NULL: meta's null for them is no value at all.
_NOT_NULL = ("imdb_id", "source", "tmdb_id")


def _failed_lookup(row: dict[str, Any]) -> FailedLookup:
    finished = row["cancelled_at"] or row["discarded_at"] or row["attempted_at"] or row["inserted_at"]
    said = _said(row, _FAILED_ARGS)
    # NOT NULL in the table: a null source is as unknown as an absent one.
    unknown = tuple(
        field for field, key in _FAILED_KEYS.items() if key not in said or (field == "source" and said[key] is None)
    )
    defaults = {"legacy_inserted_at": _seconds(row["inserted_at"]), "legacy_updated_at": _seconds(finished)}
    record: FailedLookup = _from_job(FailedLookup, row, {**defaults, **said}, unknown)
    return record


def _skipped_import(row: dict[str, Any]) -> SkippedImport:
    defaults = {
        "legacy_inserted_at": row["inserted_at"].isoformat() + "Z",
        "checked_at": (row["completed_at"] or row["inserted_at"]).isoformat() + "Z",
    }
    said = _said(row, ("tmdb_id",))
    unknown = tuple(field for field, key in _SKIPPED_KEYS.items() if key not in said)
    record: SkippedImport = _from_job(SkippedImport, row, {**defaults, **said}, unknown)
    return record


def _from_job(record: type[Any], row: dict[str, Any], said: dict[str, Any], unknown: tuple[str, ...]) -> Any:
    try:
        found = record.from_meta(said, unknown=unknown)
    except ValidationError as exc:
        raise ValidationError(f"meta of job {row['id']} ({record.table} record)", exc.problems) from exc
    return found


# The readers live in cinegraph_oban.meta.readers (generated from cinegraph_oban/meta/readers_async.py);
# they stay importable from here, where the README shows them.
from cinegraph_oban.meta.readers import read_failed_lookups, read_jobs, read_skipped_imports  # noqa: E402
