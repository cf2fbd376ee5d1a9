"""Inserting jobs: the stored rows, the notification, transactions, and every schema version."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from cinegraph_oban import Job, Oban, UnsupportedSchemaError, ValidationError
from cinegraph_oban.insert import client as client_module
from cinegraph_oban.model.timestamps import utc_now
from conftest import ObanDatabase
from tests.helpers import TMDB, oban_insert_reference


def stored(db: ObanDatabase, conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT * FROM {db.table} WHERE id = %s".encode(), (job_id,))
        row = cur.fetchone()
    assert row is not None
    return row


JOBS = [
    Job.new(
        TMDB,
        {"imdb_id": "tt0111161", "source": "canonical_import"},
        meta={"import_type": "canonical", "source_list": "1001_movies"},
        unique=False,
    ),
    Job.new(TMDB, {"tmdb_id": 278}, tags=["Canonical", "1001"], priority=2, unique=False),
    Job.new("MyApp.Workers.Mailer", {"to": "ü@example.com", "n": [1, 2.5, None, True]}, queue="mail", schedule_in=3600),
    Job.new("MyApp.Workers.Mailer", {}, state="suspended"),
]


def test_stored_row_equals_what_oban_insert_writes(oban_any: ObanDatabase) -> None:
    # `suspended` exists from V14 on; before that it is refused (see the next tests).
    jobs = [j for j in JOBS if j.state != "suspended" or oban_any.version >= 14]
    for job in jobs:
        with psycopg.connect(oban_any.dsn) as conn:  # one transaction: both rows see the same now()
            ours = Oban(prefix=oban_any.prefix).insert(job, conn=conn)
            reference = oban_insert_reference(oban_any, conn, job)
            mine = stored(oban_any, conn, ours.id or 0)
        mine.pop("id"), reference.pop("id")
        assert mine == reference
        assert ours.state == job.state and ours.conflict is False
    assert oban_any.count() == 2 * len(jobs)


def test_insert_returns_the_stored_job(oban_any: ObanDatabase) -> None:
    job = oban_any.client().insert(JOBS[0])
    assert job.id == 1 and job.state == "available" and job.queue == "tmdb" and job.max_attempts == 5
    assert job.meta == {"import_type": "canonical", "source_list": "1001_movies"}
    assert job.inserted_at is not None and job.scheduled_at == job.inserted_at


def test_v11_rejects_priority_above_three_before_writing(oban_any: ObanDatabase) -> None:
    job = Job.new(TMDB, {"tmdb_id": 1}, priority=5, unique=False)
    client = oban_any.client()
    if oban_any.version == 11:
        with pytest.raises(ValidationError, match="version 11"):
            client.insert(job)
        with pytest.raises(ValidationError, match="job #1"):
            client.insert_all([JOBS[0], job])
        assert oban_any.count() == 0
    else:
        assert client.insert(job).priority == 5


def test_a_state_the_database_lacks_is_a_clear_error(oban_any: ObanDatabase) -> None:
    job = Job.new(TMDB, {"tmdb_id": 1}, state="suspended", unique=False)
    if oban_any.version >= 14:
        assert oban_any.client().insert(job).state == "suspended"
        return
    with pytest.raises(UnsupportedSchemaError, match="'suspended' does not exist"):
        oban_any.client().insert(job)


def notifications(conn: psycopg.Connection[Any], timeout: float = 0.3) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=timeout, stop_after=None)]


def listen(listener: psycopg.Connection[Any], prefix: str) -> None:
    listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(f"{prefix}.oban_insert")))


def test_one_notification_per_available_insert_on_every_version(
    oban_any: ObanDatabase, listener: psycopg.Connection[Any]
) -> None:
    listen(listener, oban_any.prefix)
    client = oban_any.client()
    client.insert(JOBS[0])
    client.insert(JOBS[2])  # scheduled: no notification
    found = notifications(listener)
    assert len(found) == 1
    channel, payload = found[0]
    assert channel == f"{oban_any.prefix}.oban_insert"
    assert json.loads(payload) == {"queue": "tmdb"}
    if oban_any.version > 11:
        assert payload == '{"queue":"tmdb"}'  # as Jason encodes it


def test_rollback_leaves_neither_row_nor_notification(oban: ObanDatabase, listener: psycopg.Connection[Any]) -> None:
    listen(listener, "public")
    client = Oban(prefix="public")
    with psycopg.connect(oban.dsn) as conn:
        client.insert(JOBS[0], conn=conn)
        client.insert_all([JOBS[1]] * 3, conn=conn)
        assert notifications(listener) == [], "nothing is delivered before commit"
        conn.rollback()
    assert oban.count() == 0
    assert notifications(listener) == []
    with psycopg.connect(oban.dsn) as conn:
        client.insert(JOBS[0], conn=conn)
    assert oban.count() == 1
    assert notifications(listener) == [("public.oban_insert", '{"queue":"tmdb"}')]


def test_sqlalchemy_connection_and_session(oban: ObanDatabase) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(oban.dsn.replace("postgresql://", "postgresql+psycopg://"))
    client = Oban()
    with engine.connect() as sa_conn:
        client.insert(JOBS[0], conn=sa_conn)
        sa_conn.rollback()
    assert oban.count() == 0
    with engine.connect() as sa_conn:
        client.insert(JOBS[0], conn=sa_conn)
        client.insert_all([JOBS[1]] * 2, conn=sa_conn)
        sa_conn.commit()
    assert oban.count() == 3
    with Session(engine) as session:
        client.insert(JOBS[1], conn=session)
        session.commit()
    assert oban.count() == 4
    engine.dispose()


def test_timestamps_are_right_when_the_session_zone_is_not_utc(oban: ObanDatabase) -> None:
    when = datetime(2031, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7)))
    with psycopg.connect(oban.dsn, autocommit=True, options="-c TimeZone=Asia/Kolkata") as conn:
        client = Oban(conn)
        scheduled = client.insert(Job.new(TMDB, {"tmdb_id": 1}, scheduled_at=when, unique=False))
        now = client.insert(Job.new(TMDB, {"tmdb_id": 2}, unique=False))
        bulk = client.insert_all([Job.new(TMDB, {"tmdb_id": 3}, scheduled_at=when, unique=False)])
    assert scheduled.scheduled_at == datetime(2031, 6, 1, 19, 0)
    assert bulk[0].scheduled_at == datetime(2031, 6, 1, 19, 0)
    rows = {r["args"]["tmdb_id"]: r for r in oban.rows()}
    assert rows[1]["scheduled_at"] == datetime(2031, 6, 1, 19, 0) == rows[3]["scheduled_at"]
    assert abs(rows[2]["inserted_at"] - utc_now()) < timedelta(seconds=30)
    assert now.inserted_at is not None and abs(now.inserted_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(
        seconds=30
    )


# insert_all


def batch(n: int, **kwargs: Any) -> list[Job]:
    return [Job.new(TMDB, {"tmdb_id": i}, unique=False, **kwargs) for i in range(n)]


@pytest.mark.parametrize("size", [3, client_module.COPY_THRESHOLD + 7])
def test_insert_all_returns_ids_in_input_order_with_both_paths(oban_any: ObanDatabase, size: int) -> None:
    jobs = batch(size)
    inserted = oban_any.client().insert_all(iter(jobs))
    assert [j.args for j in inserted] == [j.args for j in jobs]
    ids = [j.id for j in inserted]
    assert ids == sorted(ids) and len(set(ids)) == size
    rows = {r["id"]: r for r in oban_any.rows()}
    assert all(rows[j.id]["args"] == j.args for j in inserted)  # type: ignore[index]
    assert all(rows[j.id]["inserted_at"] == j.inserted_at == j.scheduled_at for j in inserted)  # type: ignore[index]


def test_insert_all_rows_equal_single_inserts(oban: ObanDatabase) -> None:
    jobs = [JOBS[0], JOBS[1], JOBS[2], JOBS[3]]
    with psycopg.connect(oban.dsn) as conn:
        client = Oban()
        singles = [client.insert(replace_unique(j), conn=conn) for j in jobs]
        small = client.insert_all(jobs, conn=conn)
        big = client.insert_all(jobs * (client_module.COPY_THRESHOLD // 4 + 1), conn=conn)[: len(jobs)]
        rows = {r["id"]: r for r in conn.cursor(row_factory=psycopg.rows.dict_row).execute("SELECT * FROM oban_jobs")}
    for a, b, c in zip(singles, small, big, strict=True):
        ra, rb, rc = (dict(rows[x.id]) for x in (a, b, c))  # type: ignore[index]
        for r in (ra, rb, rc):
            r.pop("id")
            if r["state"] == "scheduled":
                r.pop("scheduled_at")
        assert ra == rb == rc


def replace_unique(job: Job) -> Job:
    from dataclasses import replace

    return replace(job, unique=None)


@pytest.mark.parametrize("size", [5, client_module.COPY_THRESHOLD * 2])
def test_insert_all_is_all_or_nothing(oban_any: ObanDatabase, size: int, listener: psycopg.Connection[Any]) -> None:
    listen(listener, oban_any.prefix)
    bad = Job.new(TMDB, {"tmdb_id": -1}, priority=9, state="suspended", unique=False)
    jobs = [*batch(size - 1), bad]
    with pytest.raises((ValidationError, UnsupportedSchemaError)) if oban_any.version < 14 else _no_error():
        oban_any.client().insert_all(jobs)
    if oban_any.version < 14:
        assert oban_any.count() == 0
        assert notifications(listener) == []


@pytest.mark.parametrize("size", [5, client_module.COPY_THRESHOLD * 2])
def test_a_database_error_mid_batch_leaves_nothing_and_keeps_the_callers_transaction(
    oban: ObanDatabase, size: int
) -> None:
    jobs = batch(size)
    object.__setattr__(jobs[-1], "queue", "")  # bypass validation to provoke the CHECK constraint
    client = Oban()
    with psycopg.connect(oban.dsn) as conn:
        keep = client.insert(JOBS[1], conn=conn)
        with pytest.raises(ValidationError, match="queue_length") as raised:
            client.insert_all(jobs, conn=conn) if size > 5 else _atomic_small(client, jobs, conn)
        assert isinstance(raised.value.__cause__, psycopg.errors.CheckViolation)  # the server's, kept
        conn.commit()
    assert [r["id"] for r in oban.rows()] == [keep.id]


def _atomic_small(client: Oban, jobs: list[Job], conn: psycopg.Connection[Any]) -> None:
    # A single statement is atomic by itself; run it in a savepoint like the caller would.
    with conn.transaction():
        client.insert_all(jobs, conn=conn)


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_insert_all_streams_in_chunks_and_notifies_once_per_queue(
    oban: ObanDatabase, listener: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "COPY_CHUNK", 700)
    listen(listener, "public")
    queues = ["tmdb", "imports", "tmdb", "festival"]

    def jobs() -> Any:
        for i in range(3_000):
            yield Job.new(
                TMDB, {"tmdb_id": i}, queue=queues[i % 4], unique=False, schedule_in=60 if i % 4 == 3 else None
            )

    inserted = Oban(oban.conn).insert_all(jobs())
    assert len(inserted) == 3_000 == oban.count()
    assert [j.args["tmdb_id"] for j in inserted] == list(range(3_000))
    assert sorted(notifications(listener)) == [
        ("public.oban_insert", '{"queue":"imports"}'),
        ("public.oban_insert", '{"queue":"tmdb"}'),
    ]
    assert oban.count("state = 'scheduled'") == 750


def test_insert_all_of_nothing_is_a_no_op(oban: ObanDatabase) -> None:
    assert Oban(oban.conn).insert_all([]) == []


# the single insert through libpq (cinegraph_oban.insert.prepared)

ODD_TAGS = ['say "hi"', "back\\slash", "a,b", "{braces}", "null", "  spaced  ", "ünïcode ✓"]


def test_single_insert_through_libpq_writes_what_the_cursor_path_writes(oban_any: ObanDatabase) -> None:
    # The fast path (an autocommit connection outside a transaction) and the cursor path (the
    # same insert inside a transaction) must write the same row for every kind of job.
    client = oban_any.client()
    jobs = [
        Job.new(TMDB, {"imdb_id": "tt1", "quote": "it's"}, meta={"k": ["v", 1.5, None]}, tags=ODD_TAGS, unique=False),
        Job.new("MyApp.W", {"n": 1}, queue="other queue", priority=3, max_attempts=7, schedule_in=90),
        Job.new("MyApp.W", {}, scheduled_at=datetime(2031, 5, 6, 7, 8, 9, 123456)),
    ]
    fast = [client.insert(job) for job in jobs]
    with oban_any.conn.transaction():
        slow = [client.insert(job) for job in jobs]
    for a, b in zip(fast, slow, strict=True):
        row_a, row_b = oban_any.rows(f"id = {a.id}")[0], oban_any.rows(f"id = {b.id}")[0]
        assert (a.inserted_at, a.scheduled_at) == (row_a["inserted_at"], row_a["scheduled_at"])
        for row in (row_a, row_b):
            row.pop("id")
            row.pop("inserted_at")
            if row["state"] == "available":
                row.pop("scheduled_at")  # the transaction's now()
        assert row_a == row_b
        assert a == b.stored(a.id, a.inserted_at, a.scheduled_at)
    assert list(oban_any.rows(f"id = {fast[0].id}")[0]["tags"]) == [t.strip().lower() for t in ODD_TAGS]


def test_single_insert_through_libpq_returns_its_times_under_any_session_settings(oban: ObanDatabase) -> None:
    oban.conn.execute("SET TimeZone = 'America/New_York'")
    oban.conn.execute("SET DateStyle = 'SQL, DMY'")
    client = Oban(oban.conn)
    now = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}, unique=False))
    later = client.insert(Job.new(TMDB, {"imdb_id": "tt2"}, scheduled_at=datetime(2031, 12, 31, 23, 59, 59, 999999)))
    oban.conn.execute("RESET TimeZone")
    oban.conn.execute("RESET DateStyle")
    for job in (now, later):
        row = oban.rows(f"id = {job.id}")[0]
        assert (job.inserted_at, job.scheduled_at) == (row["inserted_at"], row["scheduled_at"])
    assert abs(now.inserted_at - utc_now()) < timedelta(minutes=1), "naive UTC, not New York time"


def test_single_insert_through_libpq_prepares_once_and_survives_discard_all(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    query = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO%%' AND name LIKE 'cinegraph_oban_%%'"
    for n in range(3):
        client.insert(Job.new(TMDB, {"n": n}, unique=False))
    assert oban.conn.execute(query).fetchone() == (1,)
    oban.conn.execute("DISCARD ALL")
    assert client.insert(Job.new(TMDB, {"n": 9}, unique=False)).id is not None
    assert oban.conn.execute(query).fetchone() == (1,)
    assert oban.count() == 4


@pytest.mark.parametrize("unique", [False, None], ids=["plain", "unique"])
def test_insert_through_libpq_raises_the_servers_error_and_writes_nothing(oban: ObanDatabase, unique: Any) -> None:
    # The unique insert's BEGIN, lock, lookup and COMMIT share one Sync: after a failed
    # statement the server skips the rest, and the transaction left open in error is rolled
    # back before the error is raised. No warning either (SET TRANSACTION outside a block).
    oban.conn.execute("ALTER TABLE oban_jobs ADD CONSTRAINT no_forbidden CHECK (queue <> 'forbidden')")
    notices: list[str] = []
    oban.conn.add_notice_handler(lambda notice: notices.append(str(notice.message_primary)))
    client = Oban(oban.conn)
    options = {"unique": {"fields": ["queue", "worker"]} if unique is None else False}
    with pytest.raises(ValidationError, match="no_forbidden") as raised:
        client.insert(Job.new("MyApp.W", {}, queue="forbidden", **options))
    assert isinstance(raised.value.__cause__, psycopg.errors.CheckViolation)
    assert oban.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    first = client.insert(Job.new("MyApp.W", {}, queue="allowed", **options))
    again = client.insert(Job.new("MyApp.W", {}, queue="allowed", **options))
    assert first.id is not None and again.conflict is (unique is None)
    assert oban.count() == (1 if unique is None else 2)
    assert oban.conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone() == (0,)
    assert notices == []


def test_a_unique_insert_interrupted_mid_pipeline_closes_the_connection(
    oban: ObanDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half read, the pipeline leaves the session in a state nobody knows (maybe inside the
    # insert's transaction, holding its lock): the connection is closed and the interrupt goes
    # on. (Whether the job was written depends on how far the server got, as with any commit
    # interrupted on its way back.)
    from cinegraph_oban.insert import prepared

    real = prepared._pipeline_results

    def interrupted(pgconn: Any, read: list[Any]) -> Any:
        gen = real(pgconn, read)
        with contextlib.suppress(StopIteration):
            step = next(gen)
            while len(read) < 2:
                step = gen.send((yield step))
        del read[2:]
        raise KeyboardInterrupt

    with psycopg.connect(oban.dsn, autocommit=True) as conn:
        client = Oban(conn)
        client.insert(Job.new(TMDB, {"imdb_id": "tt0"}))
        monkeypatch.setattr(prepared, "_pipeline_results", interrupted)
        with pytest.raises(KeyboardInterrupt):
            client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
        assert conn.closed
    for _ in range(50):
        locks = oban.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        if locks == (0,):
            break
        time.sleep(0.05)
    assert locks == (0,)
    assert oban.count() in (1, 2)


def test_prepared_statements_survive_the_oban_schema_installed_again(oban: ObanDatabase) -> None:
    # A prepared statement is planned on the table and enum it found; after the schema is
    # dropped and installed again (a test teardown, a migration down and up) it is made again.
    from cinegraph_oban.oban.table import install

    install(oban.conn, 14, "again")
    client = Oban(oban.conn, prefix="again")
    client.insert(Job.new(TMDB, {"imdb_id": "tt1"}, unique=False))
    client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
    oban.conn.execute('DROP SCHEMA "again" CASCADE')
    install(oban.conn, 14, "again")
    client.refresh_table()
    assert client.insert(Job.new(TMDB, {"imdb_id": "tt2"}, unique=False)).id == 1
    assert not client.insert(Job.new(TMDB, {"imdb_id": "tt3"})).conflict
    assert client.insert(Job.new(TMDB, {"imdb_id": "tt3"})).conflict


def test_a_session_in_another_client_encoding_gets_the_same_text(oban: ObanDatabase) -> None:
    with psycopg.connect(oban.dsn, autocommit=True, client_encoding="LATIN1") as conn:
        client = Oban(conn)
        own = client.insert(Job.new("MyApp.W", {}, queue="fila_é", tags=["é"], unique={"fields": ["queue", "worker"]}))
        with conn.transaction():
            joined = client.insert(Job.new("MyApp.W", {}, queue="fila_é", unique={"fields": ["queue", "worker"]}))
        assert joined.conflict and joined.id == own.id
        plain = client.insert(Job.new("MyApp.W", {}, tags=["é"], unique=False))
    rows = {row["id"]: row for row in oban.rows()}
    assert rows[own.id]["queue"] == "fila_é" and list(rows[own.id]["tags"]) == ["é"] == list(rows[plain.id]["tags"])


def test_unique_insert_reads_times_under_the_datestyle_of_the_moment(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    oban.conn.execute("SET DateStyle = 'SQL, MDY'")
    first = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
    oban.conn.execute("SET DateStyle = 'SQL, DMY'")
    second = client.insert(Job.new(TMDB, {"imdb_id": "tt2"}))
    oban.conn.execute("RESET DateStyle")
    for job in (first, second):
        row = oban.rows(f"id = {job.id}")[0]
        assert (job.inserted_at, job.scheduled_at) == (row["inserted_at"], row["scheduled_at"])


def test_an_aware_scheduled_time_is_stored_in_utc_on_every_path(oban: ObanDatabase) -> None:
    import dataclasses

    client = Oban(oban.conn)
    aware = datetime(2031, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    job = dataclasses.replace(Job.new("MyApp.W", {"n": 1}, schedule_in=60), scheduled_at=aware)
    fast = client.insert(job)
    with oban.conn.transaction():
        slow = client.insert(job)
    assert {row["scheduled_at"] for row in oban.rows()} == {datetime(2031, 1, 1, 10, 0)}
    assert fast.id != slow.id


# unique


def test_unique_conflict_returns_the_existing_job(oban_any: ObanDatabase) -> None:
    client = oban_any.client()
    first = client.insert(Job.new(TMDB, {"imdb_id": "tt1", "source": "a", "title": "x"}))
    same_keys = client.insert(Job.new(TMDB, {"imdb_id": "tt1", "source": "b", "title": "y"}))
    other = client.insert(Job.new(TMDB, {"imdb_id": "tt2"}))
    assert same_keys.conflict and same_keys.id == first.id and same_keys.args == first.args
    assert not other.conflict and other.id != first.id
    assert oban_any.count() == 2


def test_unique_exact_args_period_and_states(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    unique = {"period": 60}
    a = client.insert(Job.new("MyApp.W", {"id": 1, "tags": [1, 2]}, unique=unique))
    assert client.insert(Job.new("MyApp.W", {"tags": [2, 1], "id": 1.0}, unique=unique)).conflict, (
        "containment semantics"
    )
    assert not client.insert(Job.new("MyApp.W", {"id": 1, "tags": [1, 2], "x": 0}, unique=unique)).conflict
    assert not client.insert(Job.new("MyApp.W", {"id": 1, "tags": [1, 2]}, queue="other", unique=unique)).conflict
    oban.conn.execute("UPDATE oban_jobs SET inserted_at = inserted_at - interval '2 minutes' WHERE id = %s", (a.id,))
    assert not client.insert(Job.new("MyApp.W", {"id": 1, "tags": [1, 2]}, unique=unique)).conflict
    client.insert(Job.new("MyApp.W", {"id": 9}, unique=True))
    oban.conn.execute("UPDATE oban_jobs SET state = 'cancelled' WHERE args = '{\"id\": 9}'")
    assert not client.insert(Job.new("MyApp.W", {"id": 9}, unique=True)).conflict
    assert client.insert(Job.new("MyApp.W", {"id": 9}, unique={"states": ["cancelled"], "period": "infinity"})).conflict


def test_unique_replace_updates_the_existing_job_for_its_state(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    first = client.insert(Job.new("MyApp.W", {"id": 1}, unique=True, schedule_in=60))
    later = datetime(2040, 1, 1)
    again = client.insert(
        Job.new(
            "MyApp.W",
            {"id": 1},
            unique=True,
            scheduled_at=later,
            priority=3,
            replace={"scheduled": ["scheduled_at", "priority"]},
        )
    )
    assert again.conflict and again.id == first.id
    assert (again.scheduled_at, again.priority) == (later, 3)
    untouched = client.insert(
        Job.new("MyApp.W", {"id": 1}, unique=True, priority=7, replace={"available": ["priority"]})
    )
    assert untouched.priority == 3


def test_replace_never_leaves_a_runnable_job_without_attempts(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    job = client.insert(Job.new("MyApp.W", {"id": 1}, unique=True))
    oban.conn.execute("UPDATE oban_jobs SET attempt = 3, max_attempts = 5 WHERE id = %s", (job.id,))
    again = client.insert(Job.new("MyApp.W", {"id": 1}, unique=True, max_attempts=1, replace=["max_attempts"]))
    assert again.conflict and again.state == "available"
    assert again.max_attempts == 4 > again.attempt


def test_concurrent_unique_inserts_make_exactly_one_row(oban: ObanDatabase) -> None:
    barrier = threading.Barrier(6)
    results: list[Job] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Oban.connect(oban.dsn) as client:
                barrier.wait()
                for n in range(10):
                    results.append(client.insert(Job.new(TMDB, {"imdb_id": f"tt{n}", "source_key": "race"})))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert oban.count() == 10
    assert sum(not r.conflict for r in results) == 10


@pytest.mark.parametrize(
    ("path", "isolation"),
    [("one trip", "read committed"), ("one trip", "repeatable read"), ("pipeline", "repeatable read")],
)
def test_unique_insert_waits_for_the_lock_and_then_sees_the_holders_job(
    oban: ObanDatabase, path: str, isolation: str
) -> None:
    # The lock and the lookup go out together; the lookup must still take its snapshot after
    # the lock is granted, or it would miss the job its holder just committed. Only READ
    # COMMITTED gives it one of its own, whatever the session's default isolation is.
    from cinegraph_oban.insert import statements

    client = Oban.connect(
        oban.dsn,
        options=f"-c default_transaction_isolation={isolation.replace(' ', chr(92) + ' ')}",
        prepare_threshold=None if path == "pipeline" else 5,
    )
    assert client.pool is not None
    with client.pool.connection() as pooled:
        assert pooled.execute("SHOW default_transaction_isolation").fetchone() == (isolation,)
    job = Job.new(TMDB, {"imdb_id": "tt0111161", "source_key": "race"})
    lock, lookup = statements.unique_statements(job, client.table())
    holder = psycopg.connect(oban.dsn)
    holder.execute(lock.sql, lock.params)
    held = holder.execute(lookup.sql, lookup.params).fetchone()
    assert held is not None
    result: list[Job] = []
    waiter = threading.Thread(target=lambda: result.append(client.insert(job)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "the second insert waits for the lock"
    holder.commit()
    waiter.join(10)
    holder.close()
    client.close()
    assert result and result[0].conflict and result[0].id == held[0]
    assert oban.count() == 1


def test_unique_insert_prepares_its_lookup_once_and_survives_discard_all(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)

    def prepared() -> list[tuple[str, bool]]:
        return [
            (name, from_sql)
            for name, from_sql in oban.conn.execute(
                "SELECT name, from_sql FROM pg_prepared_statements WHERE name LIKE 'cinegraph_oban_%' AND statement LIKE '%candidates%'"
            )
        ]

    job = Job.new(TMDB, {"imdb_id": "tt1", "source_key": "k"})
    first = client.insert(job)
    # The same job again and again: the same query text each time, never turned into a
    # prepared statement of its own (it holds two statements).
    again = [client.insert(job) for _ in range(8)]
    assert all(j.conflict and j.id == first.id for j in again)
    assert len(prepared()) == 1 and prepared()[0][1], "one statement, made with PREPARE"
    oban.conn.execute("DISCARD ALL")
    assert prepared() == []
    other = client.insert(Job.new(TMDB, {"imdb_id": "tt2", "source_key": "k"}))
    assert not other.conflict and len(prepared()) == 1
    assert oban.count() == 2


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_unique_insert_carries_any_text_exactly(oban: ObanDatabase, conforming: str) -> None:
    # Quotes, backslashes, placeholders and the like must arrive exactly, also when the session
    # reads backslashes in literals as escapes.
    oban.conn.execute(f"SET standard_conforming_strings = {conforming}")
    client = Oban(oban.conn)
    odd = "it's a \\ \"quoted\" \\' ünïcode ✓ $1 %(x)s"
    job = Job.new("MyApp.W", {"id": odd, "n": 1}, meta={"m": odd}, tags=ODD_TAGS, unique={"keys": ["id"]})
    first = client.insert(job)
    again = client.insert(job)
    assert not first.conflict and again.conflict and again.id == first.id
    row = oban.rows(f"id = {first.id}")[0]
    assert (row["args"], row["meta"]) == ({"id": odd, "n": 1}, {"m": odd})
    assert list(row["tags"]) == [t.strip().lower() for t in ODD_TAGS]
    assert again.args == first.args == job.args
    assert oban.count() == 1


def test_unique_insert_without_prepared_statements_uses_the_pipeline(oban: ObanDatabase) -> None:
    # A transaction pooler cannot keep prepared statements: psycopg's prepare_threshold=None
    # says so, and the unique insert then sends its statements through a pipeline instead.
    with psycopg.connect(oban.dsn, autocommit=True, prepare_threshold=None) as conn:
        client = Oban(conn)
        first = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
        again = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
        assert again.conflict and again.id == first.id
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_unique_insert_inside_a_transaction_block_of_an_autocommit_connection_rolls_back_with_it(
    oban: ObanDatabase, asynchronous: bool
) -> None:
    # conn.transaction() on an autocommit connection opens a transaction the insert must join,
    # not commit: the caller's rollback takes the job back.
    class Abort(Exception):
        pass

    def sync() -> None:
        with psycopg.connect(oban.dsn, autocommit=True) as conn, pytest.raises(Abort), conn.transaction():
            assert not Oban(conn).insert(Job.new(TMDB, {"imdb_id": "tt1"})).conflict
            raise Abort

    async def run_async() -> None:
        from cinegraph_oban import AsyncOban

        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as conn:
            with pytest.raises(Abort):
                async with conn.transaction():
                    assert not (await AsyncOban(conn).insert(Job.new(TMDB, {"imdb_id": "tt1"}))).conflict
                    raise Abort

    if asynchronous:
        import asyncio

        asyncio.run(run_async())
    else:
        sync()
    assert oban.count() == 0


def test_unique_lookup_uses_obans_gin_index(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    client.insert_all(
        Job.new(TMDB, {"imdb_id": f"tt{i:07d}", "source": "canonical_import"}, unique=False) for i in range(20_000)
    )
    # Autovacuum would do this in production: it moves the GIN index's pending entries into
    # the index proper; until then the planner prices the pending list as a scan.
    oban.conn.execute("VACUUM ANALYZE oban_jobs")
    from cinegraph_oban.insert import statements

    job = Job.new(TMDB, {"imdb_id": "tt0000042", "source": "canonical_import"})
    _, lookup = statements.unique_statements(job, client.table())
    sql = lookup.sql.decode()
    sql = sql[: sql.index("),\nconflicted")] + ") SELECT * FROM existing"
    with oban.conn.cursor() as cur:
        cur.execute(b"EXPLAIN " + sql.encode(), lookup.params)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "oban_jobs_args_index" in plan, plan
    assert "Seq Scan" not in plan, plan
    # It searches the index for one value (the probe, tests/insert/test_unique_probe.py).
    assert "Index Cond: (args @? $" in plan, plan


def _lookup_plans(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    with conn.transaction():
        return conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%candidates%'"
        ).fetchall()


def test_unique_lookup_runs_on_its_generic_plan_as_the_table_grows(oban: ObanDatabase) -> None:
    # PostgreSQL compares the generic plan's cost, estimated again after every ANALYZE, with the
    # average of the custom plans it made earlier; as the table grows it turns to custom plans,
    # each made anew for every job (~0.25 ms, more than the lookup). On the client's own
    # transaction the lookup keeps to its generic plan, and the setting ends with it.
    client = Oban(oban.conn)
    client.insert_all(Job.new(TMDB, {"imdb_id": f"tt{i:07d}"}, unique=False) for i in range(5_000))
    oban.conn.execute("VACUUM ANALYZE oban_jobs")
    for round_ in range(4):
        for i in range(10):
            assert not client.insert(Job.new(TMDB, {"imdb_id": f"tt9{round_}{i:05d}"})).conflict
        client.insert_all(
            Job.new(TMDB, {"imdb_id": f"tt8{round_}{i:05d}"}, unique=False) for i in range(5_000 * (round_ + 1))
        )
        oban.conn.execute("ANALYZE oban_jobs")
    assert _lookup_plans(oban.conn) == [(40, 0)]
    assert oban.conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)


def test_an_async_unique_insert_in_its_own_transaction_keeps_the_generic_plan_too(oban: ObanDatabase) -> None:
    # The async client sends lock and lookup through psycopg, which prepares the lookup after
    # its first five runs; its own transaction keeps that prepared statement's generic plan.
    import asyncio

    from cinegraph_oban import AsyncOban

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as conn:
            client = AsyncOban(conn)
            await client.insert_all([Job.new(TMDB, {"imdb_id": f"tt{i:07d}"}, unique=False) for i in range(5_000)])
            for round_ in range(3):
                for i in range(10):
                    assert not (await client.insert(Job.new(TMDB, {"imdb_id": f"tt9{round_}{i:05d}"}))).conflict
                await client.insert_all(
                    [Job.new(TMDB, {"imdb_id": f"tt8{round_}{i:05d}"}, unique=False) for i in range(5_000)]
                )
                await conn.execute("ANALYZE oban_jobs")
            rows = await (
                await conn.execute(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%candidates%'"
                )
            ).fetchall()
            assert len(rows) == 1 and rows[0][0] >= 20 and rows[0][1] == 0, rows
            assert await (await conn.execute("SHOW plan_cache_mode")).fetchone() == ("auto",)

    asyncio.run(run())


def test_a_unique_insert_leaves_the_sessions_own_plan_setting_as_it_was(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    oban.conn.execute("SET plan_cache_mode = force_custom_plan")
    for i in range(3):
        client.insert(Job.new(TMDB, {"imdb_id": f"tt{i}"}))
    assert oban.conn.execute("SHOW plan_cache_mode").fetchone() == ("force_custom_plan",)


def test_a_lookup_by_worker_and_queue_only_is_left_to_postgresqls_plan_choice(oban: ObanDatabase) -> None:
    # Only a lookup that reads args/meta values through sub-selects has the same plan for every
    # job; by worker, queue and states the values shape the plan.
    from cinegraph_oban.insert import statements

    schema = Oban(oban.conn).table()
    by_args = statements.unique_statements(Job.new(TMDB, {"imdb_id": "tt1"}), schema)
    by_queue = statements.unique_statements(
        Job.new(TMDB, {"imdb_id": "tt1"}, unique={"fields": ["worker", "queue"]}), schema
    )
    assert b"plan_cache_mode" in statements.own_transaction_lock(*by_args).sql
    assert statements.own_transaction_lock(*by_queue) == by_queue[0]
    first = Oban(oban.conn).insert(Job.new(TMDB, {"imdb_id": "tt1"}, unique={"fields": ["worker", "queue"]}))
    again = Oban(oban.conn).insert(Job.new(TMDB, {"imdb_id": "tt2"}, unique={"fields": ["worker", "queue"]}))
    assert again.conflict and again.id == first.id


def test_a_transaction_begun_by_another_thread_is_joined_not_committed(
    oban: ObanDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another thread may open a transaction on a shared connection after the insert chose its
    # own (the first `applies` below, as it saw the connection): once the connection is its,
    # the insert sends nothing of its own and joins the open transaction, which its owner then
    # commits or rolls back.
    from cinegraph_oban.insert import prepared

    checks = iter([True])
    real = prepared.applies
    monkeypatch.setattr(prepared, "applies", lambda pg, **kw: next(checks, None) or real(pg, **kw))
    client = Oban(oban.conn)
    client.table()
    oban.conn.execute("BEGIN")
    job = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
    assert not job.conflict and next(checks, "used") == "used"
    assert oban.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert oban.conn.execute("SELECT count(*) FROM oban_jobs").fetchone() == (1,)
    assert oban.conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)
    oban.conn.execute("ROLLBACK")
    assert oban.count() == 0


def test_a_unique_insert_in_the_callers_transaction_leaves_its_plan_settings_alone(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    with oban.conn.transaction():
        client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
        assert oban.conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)


def test_a_stored_job_is_not_inserted_again(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    stored = client.insert(Job.new(TMDB, {"imdb_id": "tt0111161", "source": "canonical_import"}))
    for again in (lambda: client.insert(stored), lambda: client.insert_all([stored])):
        with pytest.raises(ValidationError, match=rf"id: this job is already stored \(id {stored.id}\)"):
            again()
    many = client.insert_all([Job.new(TMDB, {"tmdb_id": n}, unique=False) for n in range(600)])
    with pytest.raises(ValidationError, match="job #599"):
        client.insert_all([Job.new(TMDB, {"tmdb_id": n}, unique=False) for n in range(599)] + [many[0]])
    assert oban.count() == 601, "nothing was written twice"


def test_connect_reads_ecto_and_sqlalchemy_urls_and_never_shows_a_password(oban: ObanDatabase) -> None:
    from cinegraph_oban import DatabaseUnavailableError, DatabaseUrlError

    for scheme in ("ecto", "postgresql+psycopg", "postgres"):
        url = scheme + oban.dsn[oban.dsn.index("://") :]
        with Oban.connect(url) as client:
            assert client.table().version == 14
    with pytest.raises(DatabaseUrlError, match="accepted") as unreadable:
        Oban.connect("mysql://root:s3cret@127.0.0.1/x")
    assert "s3cret" not in str(unreadable.value)
    with pytest.raises(DatabaseUnavailableError, match="cannot connect") as refused:
        Oban.connect("postgresql://nobody:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(refused.value)


def test_one_line_errors_take_the_first_line_or_a_fallback() -> None:
    from cinegraph_oban.errors import first_line

    assert first_line(ValueError("connection failed\nDETAIL: more")) == "connection failed"
    assert first_line(ValueError("  ")) == "ValueError"
    assert first_line(ValueError(""), "unreadable") == "unreadable"


def test_psycopg_internals_are_driven_only_on_the_releases_they_are_tested_with(
    oban: ObanDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepared.py uses psycopg.generators (not public API) only on TESTED_PSYCOPG releases; on
    any other, inserts take the cursor path and still work."""
    import importlib

    from cinegraph_oban.insert import prepared

    assert prepared._tested(psycopg.__version__), "this psycopg is the tested one: the fast path is in use"
    assert prepared.applies(oban.conn)
    assert not prepared._tested("3.4.0") and not prepared._tested("4.0") and not prepared._tested("dev")
    monkeypatch.setattr(psycopg, "__version__", "3.4.0")
    try:
        untested = importlib.reload(prepared)
        assert not untested.applies(oban.conn)
        client = Oban(oban.conn)
        first = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
        again = client.insert(Job.new(TMDB, {"imdb_id": "tt1"}))
        assert (first.conflict, again.conflict, again.id) == (False, True, first.id)
    finally:
        monkeypatch.undo()
        assert importlib.reload(prepared).applies(oban.conn)


def test_the_earlier_names_of_the_oban_table_still_answer(oban: ObanDatabase) -> None:
    """`ObanSchema`, `Oban.schema()` and `refresh_schema()` are the earlier names of
    `ObanTable`, `Oban.table()` and `refresh_table()`."""
    import cinegraph_oban

    assert cinegraph_oban.ObanSchema is cinegraph_oban.ObanTable
    client = Oban(oban.conn)
    first = client.table()
    assert client.schema() is first and first.version == 14
    again = client.refresh_schema()
    assert again is not first and again == first and client.table() is again
