"""Oban's own statements (fetch, stage, finish, prune) take our rows as they take Oban's."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from cinegraph_oban import Job, Oban
from cinegraph_oban.insert import client as client_module
from cinegraph_oban.model.timestamps import utc_now
from cinegraph_oban.oban import engine
from conftest import ObanDatabase, one_quoted_prefix
from tests.helpers import TMDB


def test_fetch_claims_in_priority_scheduled_at_id_order(oban_any: ObanDatabase) -> None:
    client = oban_any.client()
    low = client.insert(Job.new(TMDB, {"tmdb_id": 1}, priority=2, unique=False))
    first = client.insert(Job.new(TMDB, {"tmdb_id": 2}, priority=0, unique=False))
    batch = client.insert_all([Job.new(TMDB, {"tmdb_id": n}, priority=1, unique=False) for n in range(3, 6)])
    other_queue = client.insert(Job.new(TMDB, {"tmdb_id": 9}, queue="elsewhere", unique=False))
    claimed = engine.fetch_jobs(oban_any.conn, "tmdb", 10, prefix=oban_any.prefix)
    assert [j.id for j in claimed] == [first.id, *[j.id for j in batch], low.id]
    assert all(j.state == "executing" and j.attempt == 1 and j.attempted_by for j in claimed)
    assert other_queue.id not in {j.id for j in claimed}
    assert engine.fetch_jobs(oban_any.conn, "tmdb", 10, prefix=oban_any.prefix) == []


def test_scheduled_jobs_are_staged_once_due(oban_any: ObanDatabase) -> None:
    client = oban_any.client()
    past = client.insert(Job.new(TMDB, {"tmdb_id": 1}, scheduled_at=utc_now() - timedelta(seconds=5), unique=False))
    future = client.insert_all([Job.new(TMDB, {"tmdb_id": 2}, schedule_in=3600, unique=False)])[0]
    assert past.state == "scheduled", "Oban writes scheduled whenever a time is given, even a past one"
    assert engine.fetch_jobs(oban_any.conn, "tmdb", prefix=oban_any.prefix) == []
    assert engine.stage_jobs(oban_any.conn, prefix=oban_any.prefix) == [past.id]
    assert [j.id for j in engine.fetch_jobs(oban_any.conn, "tmdb", prefix=oban_any.prefix)] == [past.id]
    oban_any.conn.execute(f"UPDATE {oban_any.table} SET scheduled_at = scheduled_at - interval '2 hours'".encode())
    assert engine.stage_jobs(oban_any.conn, prefix=oban_any.prefix) == [future.id]


def test_outcomes_and_pruning(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    jobs = client.insert_all(
        [Job.new(TMDB, {"tmdb_id": n}, max_attempts=1 if n == 3 else 5, unique=False) for n in range(4)]
    )
    claimed = {j.args["tmdb_id"]: j for j in engine.fetch_jobs(oban.conn, "tmdb")}
    engine.complete_job(oban.conn, claimed[0])
    engine.cancel_job(oban.conn, claimed[1], "no_tmdb_match")
    engine.error_job(oban.conn, claimed[2], "timeout")
    engine.error_job(oban.conn, claimed[3], "boom")  # attempts exhausted: discarded
    states = {r["args"]["tmdb_id"]: r for r in oban.rows()}
    assert [states[n]["state"] for n in range(4)] == ["completed", "cancelled", "retryable", "discarded"]
    assert states[1]["cancelled_at"] and states[3]["discarded_at"] and states[0]["completed_at"]
    assert states[2]["errors"][0]["error"] == "timeout" and states[2]["errors"][0]["at"].endswith("Z")
    assert engine.prune_jobs(oban.conn, max_age=3600) == []
    oban.conn.execute(
        "UPDATE oban_jobs SET scheduled_at = scheduled_at - interval '2 hours', "
        "completed_at = completed_at - interval '2 hours', "
        "cancelled_at = cancelled_at - interval '2 hours', discarded_at = discarded_at - interval '2 hours'"
    )
    assert engine.prune_jobs(oban.conn, max_age=3600) == sorted(j.id for j in jobs if j.args["tmdb_id"] != 2)  # type: ignore[misc]


job_specs = st.fixed_dictionaries(
    {
        "tmdb_id": st.integers(0, 50),
        "priority": st.integers(0, 3),
        "max_attempts": st.integers(1, 3),
        "scheduled": st.booleans(),
        "queue": st.sampled_from(["tmdb", "imports"]),
    }
)


@one_quoted_prefix
@given(specs=st.lists(job_specs, min_size=1, max_size=12), path=st.sampled_from(["insert", "small", "copy", "unique"]))
def test_every_available_row_is_runnable_and_claimed(
    oban_any: ObanDatabase, specs: list[dict[str, Any]], path: str
) -> None:
    oban = oban_any
    oban.conn.execute(f"TRUNCATE {oban.table}".encode())
    client = oban.client()
    jobs = [
        Job.new(
            TMDB,
            {"tmdb_id": s["tmdb_id"]},
            priority=s["priority"],
            max_attempts=s["max_attempts"],
            queue=s["queue"],
            schedule_in=-1 if s["scheduled"] else None,
            unique=path == "unique" and None,
            replace=["max_attempts", "priority"] if path == "unique" else None,
        )
        for s in specs
    ]
    if path == "insert":
        for job in jobs:
            client.insert(job)
    elif path == "unique":
        for job in jobs:
            client.insert(job)
            oban.conn.execute(f"UPDATE {oban.table} SET attempt = max_attempts - 1 WHERE state = 'available'".encode())
    elif path == "small":
        client.insert_all(jobs)
    else:
        client.insert_all(jobs * (client_module.COPY_THRESHOLD // len(jobs) + 1))
    assert oban.count("state = 'available' AND attempt >= max_attempts") == 0
    engine.stage_jobs(oban.conn, prefix=oban.prefix)
    total = oban.count()
    claimed = sum(len(engine.fetch_jobs(oban.conn, q, 10_000, prefix=oban.prefix)) for q in ("tmdb", "imports"))
    assert claimed == total
    assert oban.count("state <> 'executing'") == 0


def test_rows_read_back_are_jobs(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    job = client.insert(Job.new(TMDB, {"imdb_id": "tt0111161"}, meta={"import_type": "canonical"}, tags=["a"]))
    [claimed] = engine.fetch_jobs(oban.conn, "tmdb")
    assert replace(claimed, state=job.state, attempt=0, attempted_at=None, attempted_by=None) == job


@given(
    data=st.data(),
    version=st.sampled_from([11, 12, 13, 14]),
    path=st.sampled_from(["insert", "small", "copy"]),
    count=st.integers(1, 4),
)
def test_any_valid_job_is_stored_as_oban_insert_stores_it(
    db_conn: psycopg.Connection[Any], db_dsn: str, data: st.DataObject, version: int, path: str, count: int
) -> None:
    """For random valid jobs, at every schema version, on every insert path: the stored row equals,
    column for column, the row Oban.insert/2 writes for the same job (same transaction, same now()).
    Every example runs on the test's one session: the schemas it installs are committed and kept
    for the next example, its inserts are in a transaction rolled back."""
    from cinegraph_oban.oban.table import install, migrated_version
    from tests import strategies as s
    from tests.helpers import oban_insert_reference

    prefix = f"same_v{version}"
    if migrated_version(db_conn, prefix) != version:
        install(db_conn, version, prefix)
    max_priority = 3 if version == 11 else 9
    jobs = [
        Job.new(
            data.draw(st.sampled_from([TMDB, "MyApp.Workers.Mailer", "Elixir.MyApp.Workers.Mailer"])),
            data.draw(s.json_objects()),
            meta=data.draw(s.json_objects()),
            queue=data.draw(st.sampled_from([None, "tmdb", "mail"])),
            priority=data.draw(st.none() | st.integers(0, max_priority)),
            max_attempts=data.draw(st.none() | st.integers(1, 50)),
            tags=data.draw(st.lists(st.text(s.PG_CHARS, max_size=12), max_size=3)),
            schedule_in=data.draw(st.none() | st.integers(-3600, 86_400)),
            unique=False,
        )
        for _ in range(count)
    ]
    if path == "copy":  # the COPY path starts at COPY_THRESHOLD jobs
        jobs = (jobs * (client_module.COPY_THRESHOLD // count + 1))[: client_module.COPY_THRESHOLD]
    db = ObanDatabase(conn=None, dsn=db_dsn, version=version, prefix=prefix)  # type: ignore[arg-type]
    with db_conn.transaction(force_rollback=True):  # one transaction: both rows see the same now()
        client = Oban(prefix=prefix)
        if path == "insert":
            ids = [client.insert(job, conn=db_conn).id for job in jobs]
        else:
            ids = list(client.insert_all(jobs, conn=db_conn).ids)
        with db_conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(f"SELECT * FROM {db.table} WHERE id = ANY(%s) ORDER BY id".encode(), (ids,))
            ours = {row.pop("id"): row for row in cur.fetchall()}
        references = [oban_insert_reference(db, db_conn, job) for job in jobs[:count]]
    assert len(ours) == len(jobs)
    for n, job_id in enumerate(ids):
        reference = dict(references[n % count])
        reference.pop("id")
        assert ours[job_id] == reference, (path, version, jobs[n % count])
