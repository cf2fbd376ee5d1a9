"""A JobQuery runs wherever SQLAlchemy runs a Select: Connection, ORM Session, AsyncConnection,
AsyncSession, and composed into other statements (subquery, union, IN, exists). Every test runs
on a real database holding jobs the query must select and jobs it must leave out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from cinegraph_oban.meta.queries import JobQuery, failed_lookups, jobs, quality_skipped_imports
from tests.helpers import TMDB as WORKER


def _insert(oban: Any, state: str, meta: dict[str, Any], *, worker: str = WORKER) -> int:
    final = {"cancelled": "cancelled_at", "discarded": "discarded_at", "completed": "completed_at"}.get(state)
    columns = f", {final}" if final else ""
    values = ", now() AT TIME ZONE 'utc'" if final else ""
    row = oban.conn.execute(
        f"INSERT INTO {oban.table} (state, queue, worker, args, meta{columns}) "
        f"VALUES (%s, 'tmdb', %s, '{{}}'::jsonb, %s::jsonb{values}) RETURNING id".encode(),
        (state, worker, json.dumps(meta)),
    ).fetchone()
    return int(row[0])


@pytest.fixture
def seeded(oban: Any) -> dict[str, Any]:
    """Two failed lookups (cancelled and discarded), one soft import, and three jobs neither query
    selects: a failed lookup of another worker, an executing one, a full import."""
    failed = {"status": "failed", "failure_reason": "no_tmdb_match", "imdb_id": "tt1", "source": "oscar_import"}
    ids = {
        "cancelled": _insert(oban, "cancelled", failed),
        "discarded": _insert(oban, "discarded", {**failed, "imdb_id": "tt2"}),
        "soft": _insert(oban, "completed", {"status": "imported", "import_type": "soft", "tmdb_id": 7}),
    }
    _insert(oban, "cancelled", failed, worker="Cinegraph.Workers.OtherWorker")
    _insert(oban, "executing", failed)
    _insert(oban, "completed", {"status": "imported", "import_type": "full", "tmdb_id": 8})
    url = oban.dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    return {"ids": ids, "url": url}


@pytest.fixture
def engine(seeded: dict[str, Any]) -> Any:
    engine = sa.create_engine(seeded["url"])
    yield engine
    engine.dispose()


def _failed_ids(seeded: dict[str, Any]) -> list[int]:
    return sorted([seeded["ids"]["cancelled"], seeded["ids"]["discarded"]])


def test_connection_executes_a_job_query(engine: Any, seeded: dict[str, Any]) -> None:
    query = failed_lookups()
    assert isinstance(query, JobQuery)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        assert sorted(r.id for r in rows) == _failed_ids(seeded)
        assert {r.state for r in rows} == {"cancelled", "discarded"}
        assert {r.meta["imdb_id"] for r in rows} == {"tt1", "tt2"}
        # The same rows as the Select it stands for, and as its SQL run as printed.
        assert sorted(conn.execute(query.statement).all()) == sorted(rows)
        assert sorted(r.id for r in conn.execute(sa.text(query.sql()))) == _failed_ids(seeded)
        assert sorted(conn.scalars(query)) == _failed_ids(seeded)
        assert conn.scalar(query.order_by(query.table.c.id).limit(1)) == _failed_ids(seeded)[0]
        soft = conn.execute(quality_skipped_imports()).all()
        assert [r.id for r in soft] == [seeded["ids"]["soft"]]


def test_connection_executes_with_execution_options(engine: Any, seeded: dict[str, Any]) -> None:
    with engine.connect() as conn:
        result = conn.execute(failed_lookups(), execution_options={"yield_per": 1})
        assert sorted(r.id for r in result) == _failed_ids(seeded)


def test_orm_session_executes_a_job_query(engine: Any, seeded: dict[str, Any]) -> None:
    with Session(engine) as session:
        assert sorted(r.id for r in session.execute(failed_lookups())) == _failed_ids(seeded)
        assert sorted(session.scalars(failed_lookups())) == _failed_ids(seeded)
        assert session.scalar(quality_skipped_imports()) == seeded["ids"]["soft"]


def test_job_query_composes_into_other_statements(engine: Any, seeded: dict[str, Any]) -> None:
    failed, soft = failed_lookups(), quality_skipped_imports()
    with engine.connect() as conn:
        sub = failed.subquery("failed")
        assert sorted(conn.scalars(sa.select(sub.c.id))) == _failed_ids(seeded)
        counted = conn.scalar(sa.select(sa.func.count()).select_from(failed.subquery()))
        assert counted == 2
        both = sa.union(failed, soft)
        assert sorted(r.id for r in conn.execute(both)) == sorted([*_failed_ids(seeded), seeded["ids"]["soft"]])
        assert sorted(r.id for r in conn.execute(failed.statement.union(soft))) == sorted(
            [*_failed_ids(seeded), seeded["ids"]["soft"]]
        )
        table = jobs().table
        inside = sa.select(table.c.id).where(table.c.id.in_(failed.with_only(failed.table.c.id)))
        assert sorted(conn.scalars(inside)) == _failed_ids(seeded)
        assert conn.scalar(sa.select(soft.exists())) is True
        assert conn.scalar(sa.select(jobs().states("scheduled").exists())) is False
        cte = failed.cte("failed_jobs")
        assert sorted(conn.scalars(sa.select(cte.c.id))) == _failed_ids(seeded)


def test_async_connection_and_session_execute_a_job_query(seeded: dict[str, Any]) -> None:
    async def go() -> tuple[list[int], list[int], list[int]]:
        engine = create_async_engine(seeded["url"])
        try:
            async with engine.connect() as conn:
                executed = sorted(r.id for r in (await conn.execute(failed_lookups())).all())
                scalars = sorted((await conn.scalars(failed_lookups())).all())
            async with AsyncSession(engine) as session:
                in_session = sorted((await session.scalars(failed_lookups())).all())
            return executed, scalars, in_session
        finally:
            await engine.dispose()

    executed, scalars, in_session = asyncio.run(go())
    assert executed == scalars == in_session == _failed_ids(seeded)


def test_a_job_query_is_still_not_a_string_or_parameter_set(engine: Any) -> None:
    # Executing it is the Select's execution: bound parameters are passed on, not inlined.
    query = failed_lookups(source="oscar_import")
    with engine.connect() as conn:
        assert len(conn.execute(query).all()) == 2
        assert conn.execute(failed_lookups(source="festival_import")).all() == []
