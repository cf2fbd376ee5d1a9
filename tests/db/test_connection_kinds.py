"""The wrong kind of connection is refused at once, database errors arrive as the library's, and
`JobQuery.sql()` prints SQL that runs as printed."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from cinegraph_oban import (
    AsyncOban,
    FailedLookup,
    Job,
    LockNotAcquiredError,
    SkippedImport,
    UnsupportedSchemaError,
    failed_lookups,
    install,
    jobs,
    merge_job_meta,
    quality_skipped_imports,
    read_failed_lookups,
    read_skipped_imports,
    record_failed_lookup,
    record_skipped_import,
)
from cinegraph_oban.errors import ConnectionArgumentError
from cinegraph_oban.meta.queries import JobQuery, create_outcome_indexes, read_jobs
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.oban import engine
from cinegraph_oban.testing.assertions import all_enqueued, assert_enqueued, refute_enqueued
from conftest import ObanDatabase, module_oban_database
from tests.helpers import TMDB

OTHER = "Cinegraph.Workers.OtherWorker"
PSQL = shutil.which("psql")
PSQL_ENV = {**os.environ, "PGCLIENTENCODING": "UTF8"}


def _sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def _enqueue(oban: ObanDatabase, worker: str = TMDB, **fields: Any) -> Job:
    return oban.client().insert(Job.new(worker, fields.pop("args", {"n": 1}), unique=False, **fields))


def _snapshot(oban: ObanDatabase) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job row, and the indexes on the table: what a refused call must leave as it was."""
    indexes = [r[0] for r in oban.conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'oban_jobs'")]
    return oban.rows(), sorted(indexes)


@pytest.fixture(scope="module")
def populated(fresh_databases: Any) -> Iterator[tuple[ObanDatabase, dict[str, Job]]]:
    """One database for the module's refusal tests, each of which checks it wrote nothing."""
    with module_oban_database(fresh_databases) as oban:
        yield oban, _populate(oban)


def _populate(oban: ObanDatabase) -> dict[str, Job]:
    """An available job, a due scheduled one (Stager's) and a long-finished one (Pruner's)."""
    available = _enqueue(oban, meta={"source_list": "1001_movies"})
    exhausted = _enqueue(oban, max_attempts=1, args={"n": 2})
    oban.conn.execute("UPDATE oban_jobs SET attempt = 1 WHERE id = %s", (exhausted.id,))
    _enqueue(oban, scheduled_at=utc_now() - timedelta(minutes=5), args={"n": 3})
    done = _enqueue(oban, args={"n": 4})
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'completed', completed_at = now() - interval '1 day', "
        "scheduled_at = now() - interval '1 day' WHERE id = %s",
        (done.id,),
    )
    return {"available": available, "exhausted": replace(exhausted, attempt=1)}


# Every public sync function that takes a connection, called as its caller would.
SYNC_CALLS: dict[str, Callable[[Any, dict[str, Job]], Any]] = {
    "engine.fetch_jobs": lambda c, j: engine.fetch_jobs(c, "tmdb"),
    "engine.peek_jobs": lambda c, j: engine.peek_jobs(c, "tmdb"),
    "engine.stage_jobs": lambda c, j: engine.stage_jobs(c),
    "engine.complete_job": lambda c, j: engine.complete_job(c, j["available"]),
    "engine.error_job": lambda c, j: engine.error_job(c, j["available"], "timeout"),
    "engine.error_job (attempts used up)": lambda c, j: engine.error_job(c, j["exhausted"], "timeout"),
    "engine.discard_job": lambda c, j: engine.discard_job(c, j["available"], "no_tmdb_match"),
    "engine.cancel_job": lambda c, j: engine.cancel_job(c, j["available"], "no_tmdb_match"),
    "engine.snooze_job": lambda c, j: engine.snooze_job(c, j["available"], 60),
    "engine.prune_jobs": lambda c, j: engine.prune_jobs(c, max_age=0),
    "merge_job_meta": lambda c, j: merge_job_meta(c, j["available"].id or 0, {"status": "failed"}),
    "record_failed_lookup": lambda c, j: record_failed_lookup(
        c, j["available"].id or 0, FailedLookup.new("tt0111161", "canonical_import")
    ),
    "record_skipped_import": lambda c, j: record_skipped_import(c, j["available"].id or 0, SkippedImport.new(278)),
    "testing.all_enqueued": lambda c, j: all_enqueued(c),
    "testing.assert_enqueued": lambda c, j: assert_enqueued(c, worker=TMDB),
    # A refutation that could not look must not pass: this is the call that used to "succeed".
    "testing.refute_enqueued": lambda c, j: refute_enqueued(c, worker="Cinegraph.Workers.Nobody"),
    # Readers stream lazily, but the connection is checked when they are called, not at the first row.
    "queries.read_jobs": lambda c, j: read_jobs(c, jobs()),
    "queries.read_failed_lookups": lambda c, j: read_failed_lookups(c),
    "queries.read_skipped_imports": lambda c, j: read_skipped_imports(c),
    "queries.create_outcome_indexes": lambda c, j: create_outcome_indexes(c),
}


@contextlib.asynccontextmanager
async def _async_connection(kind: str, dsn: str) -> AsyncIterator[Any]:
    if kind == "psycopg AsyncConnection":
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            yield conn
        return
    sa_engine = create_async_engine(_sqlalchemy_url(dsn))
    try:
        if kind == "SQLAlchemy AsyncConnection":
            async with sa_engine.connect() as conn:
                yield conn
        else:
            async with AsyncSession(sa_engine) as session:
                yield session
    finally:
        await sa_engine.dispose()


ASYNC_KINDS = ["psycopg AsyncConnection", "SQLAlchemy AsyncConnection", "SQLAlchemy AsyncSession"]


@pytest.mark.parametrize("kind", ASYNC_KINDS)
@pytest.mark.parametrize("call", list(SYNC_CALLS), ids=list(SYNC_CALLS))
def test_a_sync_function_refuses_an_async_connection_at_once(
    populated: tuple[ObanDatabase, dict[str, Job]], call: str, kind: str
) -> None:
    oban, population = populated
    before = _snapshot(oban)

    async def go() -> None:
        async with _async_connection(kind, oban.dsn) as conn:
            with pytest.raises(ConnectionArgumentError, match=r"sync function.*asyncio connection"):
                SYNC_CALLS[call](conn, population)

    asyncio.run(go())
    assert _snapshot(oban) == before


def test_the_refusal_is_a_type_error_that_names_the_way_out(populated: tuple[ObanDatabase, dict[str, Job]]) -> None:
    oban, population = populated

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(oban.dsn) as conn:
            with pytest.raises(TypeError, match=r"AsyncConnection.*use the async form"):
                engine.cancel_job(conn, population["available"], "no_tmdb_match")

    asyncio.run(go())
    assert oban.rows(f"id = {population['available'].id}")[0]["state"] == "available"


@pytest.mark.parametrize("kind", ["SQLAlchemy Connection", "SQLAlchemy Session"])
def test_engine_functions_take_sqlalchemy_connections_and_join_their_transaction(oban: ObanDatabase, kind: str) -> None:
    job = _enqueue(oban)
    sa_engine = sa.create_engine(_sqlalchemy_url(oban.dsn))
    with sa_engine.connect() as conn, Session(bind=conn) as session:
        target: Any = conn if kind == "SQLAlchemy Connection" else session
        [claimed] = engine.fetch_jobs(target, "tmdb")
        engine.cancel_job(target, claimed, "no_tmdb_match")
        assert oban.rows(f"id = {job.id}")[0]["state"] == "available", "nothing is committed for the caller"
        target.commit()
    sa_engine.dispose()
    assert oban.rows(f"id = {job.id}")[0]["state"] == "cancelled"


SYNC_KINDS = ["psycopg Connection", "SQLAlchemy Connection", "SQLAlchemy Session"]


@contextlib.contextmanager
def _sync_connection(kind: str, dsn: str) -> Iterator[Any]:
    if kind == "psycopg Connection":
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield conn
        return
    sa_engine = sa.create_engine(_sqlalchemy_url(dsn))
    try:
        with sa_engine.connect() as conn:
            if kind == "SQLAlchemy Connection":
                yield conn
            else:
                with Session(bind=conn) as session:
                    yield session
    finally:
        sa_engine.dispose()


ASYNC_CALLS: dict[str, Callable[[AsyncOban, Any], Any]] = {
    "AsyncOban.table": lambda oban, c: oban.table(c),
    "AsyncOban.insert": lambda oban, c: oban.insert(Job.new(TMDB, {"tmdb_id": 278}), conn=c),
    "AsyncOban.insert_all": lambda oban, c: oban.insert_all([Job.new(TMDB, {"tmdb_id": 1}, unique=False)], conn=c),
}


@pytest.mark.parametrize("kind", SYNC_KINDS)
@pytest.mark.parametrize("call", list(ASYNC_CALLS), ids=list(ASYNC_CALLS))
def test_an_async_function_refuses_a_sync_connection_at_once(oban: ObanDatabase, call: str, kind: str) -> None:
    before = _snapshot(oban)

    async def go() -> None:
        async with await AsyncOban.connect(oban.dsn) as client:
            with (
                _sync_connection(kind, oban.dsn) as conn,
                pytest.raises(ConnectionArgumentError, match=r"asyncio function.*sync connection"),
            ):
                await ASYNC_CALLS[call](client, conn)

    asyncio.run(go())
    assert _snapshot(oban) == before


# --- psycopg's errors arrive as the library's -------------------------------------------------


@contextlib.contextmanager
def _row_locked(oban: ObanDatabase, job: Job) -> Iterator[None]:
    """Job `job`'s row locked FOR UPDATE by another transaction while the block runs."""
    with psycopg.connect(oban.dsn) as holder:
        holder.execute("SELECT id FROM oban_jobs WHERE id = %s FOR UPDATE", (job.id,))
        yield
        holder.rollback()


@pytest.mark.parametrize(
    "call",
    [
        lambda conn, job: merge_job_meta(conn, job.id or 0, {"status": "failed"}),
        lambda conn, job: record_skipped_import(conn, job.id or 0, SkippedImport.new(278)),
        lambda conn, job: engine.cancel_job(conn, job, "no_tmdb_match"),
    ],
    ids=["merge_job_meta", "record_skipped_import", "engine.cancel_job"],
)
def test_a_lock_timeout_is_lock_not_acquired(oban: ObanDatabase, call: Callable[[Any, Job], Any]) -> None:
    job = _enqueue(oban, meta={"source_list": "1001_movies"})
    oban.conn.execute("SET lock_timeout = '100ms'")
    with _row_locked(oban, job), pytest.raises(LockNotAcquiredError, match=r"lock timeout.*retry") as raised:
        call(oban.conn, job)
    assert isinstance(raised.value.__cause__, psycopg.errors.LockNotAvailable)
    row = oban.rows(f"id = {job.id}")[0]
    assert (row["state"], row["meta"]) == ("available", {"source_list": "1001_movies"})


MISSING_PREFIX_CALLS: dict[str, Callable[[Any, Job], Any]] = {
    "engine.fetch_jobs": lambda c, j: engine.fetch_jobs(c, "tmdb", prefix="nowhere"),
    "engine.peek_jobs": lambda c, j: engine.peek_jobs(c, "tmdb", prefix="nowhere"),
    "engine.stage_jobs": lambda c, j: engine.stage_jobs(c, prefix="nowhere"),
    "engine.complete_job": lambda c, j: engine.complete_job(c, j, prefix="nowhere"),
    "engine.error_job": lambda c, j: engine.error_job(c, j, "timeout", prefix="nowhere"),
    "engine.discard_job": lambda c, j: engine.discard_job(c, j, "x", prefix="nowhere"),
    "engine.cancel_job": lambda c, j: engine.cancel_job(c, j, "x", prefix="nowhere"),
    "engine.snooze_job": lambda c, j: engine.snooze_job(c, j, 60, prefix="nowhere"),
    "engine.prune_jobs": lambda c, j: engine.prune_jobs(c, prefix="nowhere"),
    "merge_job_meta": lambda c, j: merge_job_meta(c, j.id or 0, {"a": 1}, prefix="nowhere"),
    "record_failed_lookup": lambda c, j: record_failed_lookup(
        c, j.id or 0, FailedLookup.new("tt1", "canonical_import"), prefix="nowhere"
    ),
    "testing.all_enqueued": lambda c, j: all_enqueued(c, prefix="nowhere"),
    "testing.refute_enqueued": lambda c, j: refute_enqueued(c, prefix="nowhere"),
    "queries.read_jobs": lambda c, j: list(read_jobs(c, jobs("nowhere"))),
    "queries.read_failed_lookups": lambda c, j: list(read_failed_lookups(c, prefix="nowhere")),
    "queries.read_skipped_imports": lambda c, j: list(read_skipped_imports(c, prefix="nowhere")),
    "queries.create_outcome_indexes": lambda c, j: create_outcome_indexes(c, "nowhere"),
}


@pytest.mark.parametrize("call", list(MISSING_PREFIX_CALLS), ids=list(MISSING_PREFIX_CALLS))
def test_a_missing_prefix_is_an_unsupported_schema(oban: ObanDatabase, call: str) -> None:
    job = _enqueue(oban)
    with pytest.raises(UnsupportedSchemaError, match=r"nowhere.*is Oban installed under this prefix") as raised:
        MISSING_PREFIX_CALLS[call](oban.conn, job)
    assert isinstance(raised.value.__cause__, psycopg.Error)


def test_a_missing_job_is_still_job_not_found(oban: ObanDatabase) -> None:
    from cinegraph_oban import JobNotFoundError

    with pytest.raises(JobNotFoundError, match="no job with id 424242"):
        merge_job_meta(oban.conn, 424242, {"a": 1})


# --- JobQuery.sql() runs as printed ------------------------------------------------------------

#: Text that SQL, psycopg, JSON or LIKE read specially.
AWKWARD = [
    "50%",
    "100%%",
    "%s",
    "%(id)s",
    "o'brien",
    "''",
    "back\\slash",
    "\\\\",
    "$$",
    "$tag$",
    '"quoted"',
    "é 🎬",
    "a\nb",
]


def _ids_bound(conn: psycopg.Connection[Any], query: JobQuery) -> list[int]:
    return sorted(row["id"] for row in read_jobs(conn, query))


def _ids_as_printed(conn: psycopg.Connection[Any], text: str) -> list[int]:
    return sorted(row[0] for row in conn.execute(text.encode()))


#: Begins the output of each query in a psql run of several (`_ids_from_one_psql`).
_MARK = "@@query "


def _ids_from_one_psql(dsn: str, texts: list[str], *, stdin: bool) -> list[list[int]]:
    """What each printed query selects through psql, in order, all in one psql session: each
    given by `-c` as its own command, or (`stdin`) as if pasted at psql's prompt, through its
    own lexer and ended by `;`."""
    assert PSQL is not None
    command = [PSQL, dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t"]
    if stdin:
        script = "".join(f"\\echo {_MARK}{n}\n{text};\n" for n, text in enumerate(texts))
        done = subprocess.run(
            [*command, "-f", "-"], input=script, env=PSQL_ENV, capture_output=True, text=True, check=False
        )
    else:
        commands = [part for n, text in enumerate(texts) for part in ("-c", f"\\echo {_MARK}{n}", "-c", text)]
        done = subprocess.run([*command, *commands], env=PSQL_ENV, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    selected: list[list[int]] = []
    for row in csv.reader(io.StringIO(done.stdout)):  # a row of a job's columns may span lines
        if len(row) == 1 and row[0].startswith(_MARK):
            assert row[0] == f"{_MARK}{len(selected)}", row
            selected.append([])
        elif row:
            selected[-1].append(int(row[0]))
    assert len(selected) == len(texts)
    return [sorted(ids) for ids in selected]


def _ids_from_psql(dsn: str, text: str, *, stdin: bool) -> list[int]:
    return _ids_from_one_psql(dsn, [text], stdin=stdin)[0]


def _assert_runs_as_printed(
    oban: ObanDatabase, query: JobQuery, *, with_psql: bool = True, from_psql: tuple[list[int], list[int]] | None = None
) -> list[int]:
    """The printed SQL selects what the bound query selects: run as printed, with placeholders,
    its WHERE alone, and through psql (`from_psql`: what psql selected with it, read already)."""
    bound = _ids_bound(oban.conn, query)
    text = query.sql()
    assert _ids_as_printed(oban.conn, text) == bound, text
    placeholders, params = query.sql(literal=False), query.compiled()[1]
    assert sorted(row[0] for row in oban.conn.execute(placeholders.encode(), params)) == bound, placeholders
    if query.max_rows is None:
        where = query.where_sql() or "true"
        table = sql.Identifier(query.prefix).as_string() + ".oban_jobs"
        assert _ids_as_printed(oban.conn, f"SELECT {table}.id FROM {table} WHERE {where}") == bound, where
    if from_psql is not None:
        assert from_psql == (bound, bound), text
    elif with_psql and PSQL is not None:
        assert _ids_from_psql(oban.dsn, text, stdin=False) == bound, text
        assert _ids_from_psql(oban.dsn, text, stdin=True) == bound, text
    return bound


@pytest.fixture(scope="module")
def awkward_jobs(fresh_databases: Any) -> Iterator[ObanDatabase]:
    """One database for the module's read-only query tests: jobs whose queue, args and meta
    hold every awkward text, finished in several ways."""
    with module_oban_database(fresh_databases) as oban:
        yield _awkward_jobs(oban)


def _awkward_jobs(oban: ObanDatabase) -> ObanDatabase:
    client = oban.client()
    outcomes = ["none", "cancel", "discard", "complete"]
    for n, value in enumerate(AWKWARD):
        worker = TMDB if n % 2 == 0 else OTHER
        meta = {"source": value, "nested": {f"k{value}": value}}
        if n % 3 == 0:
            meta["failure_reason"] = "no_tmdb_match"
        if n % 3 == 1:
            meta["import_type"] = "soft"
        job = client.insert(Job.new(worker, {"imdb_id": value}, queue=f"q{value}"[:127], meta=meta, unique=False))
        outcome = outcomes[n % len(outcomes)]
        if outcome != "none":
            [claimed] = [j for j in engine.fetch_jobs(oban.conn, job.queue, 10) if j.id == job.id]
            if outcome == "complete":
                engine.complete_job(oban.conn, claimed)
            else:
                (engine.cancel_job if outcome == "cancel" else engine.discard_job)(oban.conn, claimed, "no_tmdb_match")
    return oban


def _queries() -> list[tuple[str, JobQuery]]:
    table = jobs().table
    built = [
        ("by worker", jobs().worker(TMDB)),
        ("by workers", jobs().worker(TMDB, "Elixir." + OTHER)),
        ("by state", jobs().states("cancelled")),
        ("enqueued", jobs().states("available", "scheduled")),
        ("failed lookups", failed_lookups()),
        ("failed lookups, document form", failed_lookups(states=("discarded",), form="document")),
        ("failed lookups with retries", failed_lookups(include_retryable=True)),
        ("soft imports", quality_skipped_imports()),
        ("soft imports, document form", quality_skipped_imports(form="document")),
        ("since an hour ago", quality_skipped_imports(since=utc_now() - timedelta(hours=1), until=utc_now())),
        ("LIKE with an escaped %", jobs().where(table.c.queue.like("%\\%%"))),
        ("LIKE with a quote", jobs().where(table.c.queue.like("%'%"))),
        ("ordered and limited", jobs().states("available", "completed").order_by(table.c.id.desc()).limit(3)),
    ]
    for value in AWKWARD:
        built += [
            (f"meta source={value!r}", jobs().meta(source=value)),
            (f"meta source={value!r}, document form", jobs().meta("document", source=value)),
            (f"nested meta key {value!r}", jobs().meta_contains({"nested": {f"k{value}": value}})),
            (f"args imdb_id={value!r}", jobs().args(imdb_id=value)),
            (f"queue {value!r}", jobs().queue(f"q{value}")),
            (f"failed lookups from {value!r}", failed_lookups(source=value, form="document")),
        ]
    return built


QUERIES = _queries()


@pytest.fixture(scope="module")
def queries_through_psql(awkward_jobs: ObanDatabase) -> list[tuple[list[int], list[int]]] | None:
    """Per query of QUERIES, what psql selected with its printed SQL given by `-c` and through
    standard input: two psql sessions for all of them, where one per query started 182.
    None without psql, as `_assert_runs_as_printed` then checks without it."""
    if PSQL is None:
        return None
    texts = [query.sql() for _, query in QUERIES]
    by_c = _ids_from_one_psql(awkward_jobs.dsn, texts, stdin=False)
    by_stdin = _ids_from_one_psql(awkward_jobs.dsn, texts, stdin=True)
    return list(zip(by_c, by_stdin, strict=True))


@pytest.mark.parametrize("n", range(len(QUERIES)), ids=[name for name, _ in QUERIES])
def test_printed_sql_selects_what_the_bound_query_selects(
    awkward_jobs: ObanDatabase, queries_through_psql: list[tuple[list[int], list[int]]] | None, n: int
) -> None:
    through_psql = None if queries_through_psql is None else queries_through_psql[n]
    _assert_runs_as_printed(awkward_jobs, QUERIES[n][1], from_psql=through_psql)


def test_the_awkward_values_select_exactly_their_own_job(awkward_jobs: ObanDatabase) -> None:
    for value in AWKWARD:
        for query in (jobs().meta(source=value), jobs().meta("document", source=value), jobs().queue(f"q{value}")):
            assert len(_assert_runs_as_printed(awkward_jobs, query, with_psql=False)) == 1, value
    assert len(_assert_runs_as_printed(awkward_jobs, jobs().where(jobs().table.c.queue.like("%\\%%")))) == 4


def test_printed_sql_writes_values_as_postgresql_reads_them() -> None:
    text = jobs().meta(source="50% o'brien \\ $$").meta("document", title="100%%").sql()
    assert "'{\"source\":\"50% o''brien \\\\ $$\"}'::jsonb" in text, "% once, ' doubled, the JSON's \\\\ kept"
    assert "->> 'title' = '100%%'" in text, "a value's own %% is two percent signs"
    assert "%%" not in text.replace("100%%", "")
    compiled, params = jobs().meta(source="50%").compiled()
    assert "%(param_1)s" in compiled and params == {"param_1": '{"source":"50%"}'}


def test_printed_sql_runs_as_printed_under_a_prefix_with_a_percent_sign(oban: ObanDatabase) -> None:
    install(oban.conn, 14, "p%x")
    table = sql.SQL("{}.oban_jobs").format(sql.Identifier("p%x"))
    for n, source in enumerate(["50%", "a'b", "plain"]):
        # Written without parameters, so the `%` in the identifier needs no doubling.
        oban.conn.execute(
            sql.SQL("INSERT INTO {} (worker, queue, args, meta) VALUES ({}, 'tmdb', {}, {})")
            .format(table, sql.Literal(TMDB), sql.Literal(f'{{"n": {n}}}'), sql.Literal(f'{{"source": "{source}"}}'))
            .as_string(oban.conn)
            .encode()
        )
    for query in (jobs("p%x"), jobs("p%x").meta(source="50%"), jobs("p%x").states("available").worker(TMDB)):
        assert '"p%x".oban_jobs' in query.sql()
        assert _assert_runs_as_printed(oban, query)


meta_text = st.text(
    alphabet=st.one_of(st.sampled_from("%'\\$\"_:;{}[]()-\n"), st.characters(exclude_categories=("Cs",))).filter(
        lambda c: c != "\x00"
    ),
    max_size=12,
)


@given(value=meta_text, decoys=st.lists(meta_text, max_size=4))
@example(value="%", decoys=["%%", "%s", ""])
@example(value="'", decoys=["''", "\\'"])
@example(value="\\", decoys=["\\\\", "\\%"])
@example(value="$$", decoys=["$", "$$$$"])
def test_printed_sql_matches_the_bound_query_for_any_meta_text(
    oban: ObanDatabase, value: str, decoys: list[str]
) -> None:
    oban.conn.execute("DELETE FROM oban_jobs")
    client = oban.client()
    for text in [value, *decoys]:
        client.insert(Job.new(TMDB, {"n": 1}, meta={"source": text, "failure_reason": "no_tmdb_match"}, unique=False))
    expected = sum(1 for text in [value, *decoys] if text == value)
    for query in (
        jobs().meta(source=value),
        jobs().meta("document", source=value),
        jobs().meta_contains({"source": value}),
    ):
        assert len(_assert_runs_as_printed(oban, query, with_psql=PSQL is not None and len(value) % 4 == 0)) == expected


def test_schema_migration_and_health_functions_refuse_an_asyncio_connection(oban: ObanDatabase) -> None:
    """install, detect, migrated_version, health and the legacy-table helpers: each raises at
    once (they returned None, or failed on a coroutine, before issue 15) and creates nothing."""
    from cinegraph_oban.meta.records import FailedLookup
    from cinegraph_oban.migration.legacy import create_legacy_tables, insert_legacy_row, relation_kind
    from cinegraph_oban.oban.health import health
    from cinegraph_oban.oban.table import detect, install, migrated_version

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as aconn:
            calls = [
                lambda: install(aconn, 14, "other"),  # type: ignore[arg-type]
                lambda: detect(aconn),  # type: ignore[arg-type]
                lambda: migrated_version(aconn),  # type: ignore[arg-type]
                lambda: health(aconn),  # type: ignore[arg-type]
                lambda: create_legacy_tables(aconn),  # type: ignore[arg-type]
                lambda: relation_kind(aconn, "public", "oban_jobs"),  # type: ignore[arg-type]
                lambda: insert_legacy_row(aconn, "public", FailedLookup.new("tt1", "canonical_import")),  # type: ignore[arg-type]
            ]
            for call in calls:
                with pytest.raises(ConnectionArgumentError, match="asyncio"):
                    call()

    asyncio.run(main())
    tables = oban.conn.execute(b"SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%imdb%%'", {}).fetchone()
    assert tables == (0,)
    assert oban.conn.execute(b"SELECT count(*) FROM pg_namespace WHERE nspname = 'other'", {}).fetchone() == (0,)
