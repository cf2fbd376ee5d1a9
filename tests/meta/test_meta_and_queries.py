"""Recording outcomes in meta, and the query builders, against real PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from cinegraph_oban import (
    FailedLookup,
    Job,
    JobNotFoundError,
    SkippedImport,
    ValidationError,
    failed_lookups,
    jobs,
    quality_skipped_imports,
    read_failed_lookups,
    read_skipped_imports,
    record_failed_lookup,
    record_skipped_import,
)
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.oban import engine
from conftest import ObanDatabase, one_quoted_prefix
from tests import strategies as s
from tests.helpers import TMDB

ENQUEUE_META = {"import_type": "canonical", "source_list": "1001_movies"}


def enqueue(oban: ObanDatabase, meta: dict[str, Any] | None = None, **args: Any) -> Job:
    return oban.client().insert(Job.new(TMDB, args or {"imdb_id": "tt0111161"}, meta=meta, unique=False))


def finish(conn: psycopg.Connection[Any], job: Job, outcome: str, prefix: str = "public") -> None:
    [claimed] = [j for j in engine.fetch_jobs(conn, job.queue, 100, prefix=prefix) if j.id == job.id]
    {
        "cancel": lambda: engine.cancel_job(conn, claimed, "no_tmdb_match", prefix=prefix),
        "discard": lambda: engine.discard_job(conn, claimed, "no_tmdb_match", prefix=prefix),
        "complete": lambda: engine.complete_job(conn, claimed, prefix=prefix),
        "error": lambda: engine.error_job(conn, claimed, "timeout", prefix=prefix),
    }[outcome]()


def test_recording_merges_and_keeps_the_enqueue_meta(oban_any: ObanDatabase) -> None:
    job = enqueue(oban_any, ENQUEUE_META)
    record = FailedLookup.new("tt0111161", "canonical_import", title="The Shawshank Redemption", year=1994)
    merged = record_failed_lookup(oban_any.conn, job.id or 0, record, prefix=oban_any.prefix)
    assert merged == {**ENQUEUE_META, **record.to_meta()}
    assert oban_any.rows()[0]["meta"] == merged
    soft = SkippedImport.new(278, title="The Shawshank Redemption")
    merged = record_skipped_import(oban_any.conn, job.id or 0, soft, prefix=oban_any.prefix)
    assert merged["source_list"] == "1001_movies" and merged["import_type"] == "soft", "the patch wins on a clash"


def test_recording_on_a_null_meta_and_a_missing_job(oban: ObanDatabase) -> None:
    job = enqueue(oban)
    oban.conn.execute("UPDATE oban_jobs SET meta = NULL")
    record = FailedLookup.new("tt1", "unknown")
    assert record_failed_lookup(oban.conn, job.id or 0, record) == record.to_meta()
    with pytest.raises(JobNotFoundError, match="no job with id 999"):
        record_failed_lookup(oban.conn, 999, record)


def test_recording_joins_the_callers_transaction(oban: ObanDatabase) -> None:
    job = enqueue(oban, ENQUEUE_META)
    with psycopg.connect(oban.dsn) as conn:
        record_failed_lookup(conn, job.id or 0, FailedLookup.new("tt1", "x"))
        conn.rollback()
    assert oban.rows()[0]["meta"] == ENQUEUE_META


def test_concurrent_recordings_lose_no_key(oban: ObanDatabase) -> None:
    job = enqueue(oban, ENQUEUE_META)
    with psycopg.connect(oban.dsn) as first, psycopg.connect(oban.dsn, autocommit=True) as second:
        record_failed_lookup(first, job.id or 0, FailedLookup.new("tt1", "x"))
        import threading

        other = threading.Thread(target=lambda: second.execute("UPDATE oban_jobs SET meta = meta || '{\"extra\": 1}'"))
        other.start()
        first.commit()
        other.join()
    meta = oban.rows()[0]["meta"]
    assert meta["extra"] == 1 and meta["failure_reason"] == "no_tmdb_match" and meta["source_list"] == "1001_movies"


def jsonb_normalised(conn: psycopg.Connection[Any], value: Any) -> Any:
    """What a jsonb column gives back for `value` (PostgreSQL normalises numbers such as 1e+16)."""
    if value is None:
        return None
    return conn.execute("SELECT %s::jsonb", (Jsonb(value),)).fetchone()[0]  # type: ignore[index]


@given(record=s.failed_lookups(), meta=s.enqueue_meta(), outcome=st.sampled_from(["cancel", "discard"]))
def test_failed_lookup_through_postgres(oban: ObanDatabase, record: FailedLookup, meta: dict, outcome: str) -> None:
    job = enqueue(oban, meta)
    record_failed_lookup(oban.conn, job.id or 0, record)
    finish(oban.conn, job, outcome)
    # Any reason the table allowed, not only no_tmdb_match: select the job by id.
    [found] = read_failed_lookups(oban.conn, jobs().where(jobs().table.c.id == job.id))
    assert found == replace(record, metadata=jsonb_normalised(oban.conn, record.metadata))


@given(record=s.skipped_imports(), meta=s.enqueue_meta())
def test_skipped_import_through_postgres(oban: ObanDatabase, record: SkippedImport, meta: dict) -> None:
    job = enqueue(oban, meta, tmdb_id=record.tmdb_id)
    record_skipped_import(oban.conn, job.id or 0, record)
    finish(oban.conn, job, "complete")
    [found] = read_skipped_imports(oban.conn, jobs().where(jobs().table.c.id == job.id))
    assert found == replace(record, criteria_failed=jsonb_normalised(oban.conn, record.criteria_failed))


def test_readers_fill_what_new_worker_code_does_not_write(oban: ObanDatabase) -> None:
    job = enqueue(oban, ENQUEUE_META)
    oban.conn.execute(
        "UPDATE oban_jobs SET meta = meta || %s",
        (Jsonb({"status": "failed", "failure_reason": "no_tmdb_match", "imdb_id": "tt9", "source": "oscar_import"}),),
    )
    finish(oban.conn, job, "cancel")
    [found] = read_failed_lookups(oban.conn)
    assert (found.imdb_id, found.source, found.id, found.title) == ("tt9", "oscar_import", None, None)
    assert found.inserted_at == (job.inserted_at or utc_now()).replace(microsecond=0)


# The design document's fragments, verbatim (Ecto), and the SQL each one means.
DOCUMENT_FAILED = [
    ('where: j.worker == "Cinegraph.Workers.TMDbDetailsWorker"', "worker = 'Cinegraph.Workers.TMDbDetailsWorker'"),
    ('where: j.state == "discarded"', "state = 'discarded'"),
    (
        'where: fragment("? ->> \'failure_reason\' = ?", j.meta, "no_tmdb_match")',
        "meta ->> 'failure_reason' = 'no_tmdb_match'",
    ),
]
DOCUMENT_SOFT = [
    ('where: j.worker == "Cinegraph.Workers.TMDbDetailsWorker"', "worker = 'Cinegraph.Workers.TMDbDetailsWorker'"),
    ('where: j.state == "completed"', "state = 'completed'"),
    ('where: fragment("? ->> \'import_type\' = ?", j.meta, "soft")', "meta ->> 'import_type' = 'soft'"),
]


def _unqualified(sql: str) -> str:
    return re.sub(r'(?:"?public"?\.)?oban_jobs\.', "", sql)


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        (failed_lookups(states=("discarded",), form="document"), DOCUMENT_FAILED),
        (quality_skipped_imports(form="document"), DOCUMENT_SOFT),
    ],
)
def test_document_form_renders_the_documents_fragments(query: Any, fragments: list[tuple[str, str]]) -> None:
    rendered = _unqualified(query.where_sql())
    assert rendered == " AND ".join(sql for _, sql in fragments)
    # Each Ecto fragment names the same column and value as the SQL it is paired with.
    for ecto, sql in fragments:
        value = re.findall(r"'([^']*)'$", sql)[0]
        assert value in ecto


def test_default_form_is_containment_over_the_failed_states() -> None:
    sql = _unqualified(failed_lookups().where_sql())
    assert "state IN ('discarded', 'cancelled')" in sql
    assert 'meta @> \'{"failure_reason":"no_tmdb_match"}\'::jsonb' in sql
    assert "'retryable'" in _unqualified(failed_lookups(include_retryable=True).where_sql())
    assert "Elixir." not in jobs().worker("Elixir." + TMDB).where_sql()
    with pytest.raises(TypeError, match="string values"):
        jobs().meta("document", year=1994)


def test_builder_output_is_an_ordinary_select(oban: ObanDatabase) -> None:
    job = enqueue(oban, ENQUEUE_META)
    record_failed_lookup(oban.conn, job.id or 0, FailedLookup.new("tt0111161", "canonical_import"))
    finish(oban.conn, job, "cancel")
    select = failed_lookups(since=utc_now() - timedelta(hours=1)).statement
    engine_ = sa.create_engine(oban.dsn.replace("postgresql://", "postgresql+psycopg://"))
    with engine_.connect() as conn:
        extended = select.with_only_columns(sa.func.count()).select_from(failed_lookups().table)
        assert conn.execute(select).all()[0].id == job.id
        assert conn.execute(extended).scalar() == 1
        assert [r.imdb_id for r in read_failed_lookups(conn)] == ["tt0111161"]
    engine_.dispose()
    assert failed_lookups(until=utc_now() - timedelta(hours=1)).limit(5).sql().endswith("LIMIT 5")


def test_queries_respect_the_prefix(oban_any: ObanDatabase) -> None:
    job = enqueue(oban_any, ENQUEUE_META)
    record_skipped_import(oban_any.conn, job.id or 0, SkippedImport.new(278), prefix=oban_any.prefix)
    finish(oban_any.conn, job, "complete", oban_any.prefix)
    found = list(read_skipped_imports(oban_any.conn, prefix=oban_any.prefix))
    assert [r.tmdb_id for r in found] == [278]


meta_values = st.one_of(
    st.sampled_from(["no_tmdb_match", "soft", "full", "", "No_Tmdb_Match", "no_tmdb_match "]),
    st.sampled_from([["no_tmdb_match"], {"failure_reason": "no_tmdb_match"}, 1, 1.0, None, True]),
)
populations = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {}, optional={"failure_reason": meta_values, "import_type": meta_values, "source": meta_values}
        ),
        st.sampled_from(["complete", "cancel", "discard", "error", "none"]),
        st.sampled_from([TMDB, "Cinegraph.Workers.OtherWorker"]),
        st.booleans(),
    ),
    max_size=12,
)


@one_quoted_prefix
@given(population=populations)
def test_document_and_containment_forms_select_the_same_jobs(oban_any: ObanDatabase, population: list[Any]) -> None:
    conn, prefix = oban_any.conn, oban_any.prefix
    conn.execute(f"TRUNCATE {oban_any.table}".encode())
    client = oban_any.client()
    for meta, outcome, worker, null_meta in population:
        job = client.insert(Job.new(worker, {"n": 1}, meta=meta, unique=False))
        if null_meta:
            conn.execute(f"UPDATE {oban_any.table} SET meta = NULL WHERE id = %s".encode(), (job.id,))
        if outcome != "none":
            finish(conn, job, outcome, prefix)
    pairs = [
        (failed_lookups(prefix=prefix, states=("discarded",), form=f) for f in ("document", "contains")),
        (failed_lookups(prefix=prefix, include_retryable=True, form=f) for f in ("document", "contains")),
        (failed_lookups(prefix=prefix, source="soft", form=f) for f in ("document", "contains")),
        (quality_skipped_imports(prefix=prefix, form=f) for f in ("document", "contains")),
    ]
    for document, containment in pairs:
        ids = [sorted(row["id"] for row in _rows(conn, q)) for q in (document, containment)]
        assert ids[0] == ids[1]


def _rows(conn: psycopg.Connection[Any], query: Any) -> list[dict[str, Any]]:
    from cinegraph_oban.meta.queries import read_jobs

    return list(read_jobs(conn, query))


def test_containment_uses_obans_meta_index_and_the_document_form_cannot(oban: ObanDatabase) -> None:
    client = oban.client()
    client.insert_all(
        Job.new(
            TMDB,
            {"n": n},
            meta={"failure_reason": "no_tmdb_match"} if n % 100 == 0 else {"import_type": "full"},
            unique=False,
        )
        for n in range(30_000)
    )
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'cancelled', cancelled_at = inserted_at WHERE meta ? 'failure_reason'"
    )
    oban.conn.execute("VACUUM ANALYZE oban_jobs")

    def plan(query: Any) -> str:
        sql, params = query.compiled()
        return "\n".join(r[0] for r in oban.conn.execute(("EXPLAIN " + sql).encode(), params))

    assert "oban_jobs_meta_index" in plan(failed_lookups())
    assert "oban_jobs_meta_index" not in plan(failed_lookups(form="document"))
    with pytest.raises(ValidationError, match=r"meta of job \d+ \(failed_imdb_lookups record\): imdb_id: is missing"):
        list(read_failed_lookups(oban.conn))


def test_opt_in_outcome_indexes_serve_the_ready_made_queries(oban: ObanDatabase) -> None:
    from cinegraph_oban.meta.queries import create_outcome_indexes

    client = oban.client()
    client.insert_all(
        Job.new(
            TMDB,
            {"n": n},
            meta={"failure_reason": "no_tmdb_match"}
            if n % 100 == 0
            else {"import_type": "soft" if n % 50 == 1 else "full"},
            unique=False,
        )
        for n in range(20_000)
    )
    oban.conn.execute(
        "UPDATE oban_jobs SET state = 'cancelled', cancelled_at = inserted_at WHERE meta ? 'failure_reason'"
    )
    oban.conn.execute("UPDATE oban_jobs SET state = 'completed', completed_at = inserted_at WHERE meta ? 'import_type'")
    create_outcome_indexes(oban.conn)
    oban.conn.execute("VACUUM ANALYZE oban_jobs")

    def plan(query: Any) -> str:
        sql, params = query.compiled()
        return "\n".join(r[0] for r in oban.conn.execute(("EXPLAIN " + sql).encode(), params))

    assert "oban_jobs_tmdb_failed_lookups_index" in plan(failed_lookups())
    assert "oban_jobs_tmdb_soft_imports_index" in plan(quality_skipped_imports())
    assert len(oban.conn.execute("SELECT 1 FROM oban_jobs WHERE meta ? 'failure_reason'").fetchall()) == 200
    with psycopg.connect(oban.dsn) as conn, pytest.raises(Exception, match="autocommit"):
        create_outcome_indexes(conn)
    create_outcome_indexes(oban.conn, drop=True)
    assert "oban_jobs_tmdb_failed_lookups_index" not in plan(failed_lookups())
