"""Rows written here, run by genuine Elixir Oban 2.23.1 (tests/genuine_oban, tests/genuine.py).

Every schema is made by Oban's own `Oban.Migration` (versions 11 to 14, and a prefix other than
public); the jobs are written through every public path of this library and then run by a real
Oban with its Postgres notifier, Stager and plugins. Nothing here uses `engine.py`: these tests
are what the engine's own tests stand on (see test_engine_against_oban below).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from cinegraph_oban import AsyncOban, Job, Oban
from tests.genuine import GenuineOban, wait_for
from tests.helpers import TMDB, run_cli

pytestmark = pytest.mark.genuine_oban

SCHEMAS = [(11, "public"), (12, "public"), (13, "public"), (14, "public"), (14, "cg-jobs")]
SCHEMA_IDS = [f"v{v}-{p}" for v, p in SCHEMAS]
COMPLETES = "Harness.Workers.Completes"

FINAL = ("completed", "cancelled", "discarded")


def table(prefix: str) -> str:
    quoted = prefix.replace('"', '""')
    return f'"{quoted}".oban_jobs'


def rows(dsn: str, prefix: str, ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """The jobs (all, or those ids) as dicts, by id, read on a connection of their own."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return _rows(conn, prefix, ids)


def _rows(conn: psycopg.Connection[dict[str, Any]], prefix: str, ids: list[int] | None) -> dict[int, dict[str, Any]]:
    if ids is None:
        found = conn.execute(f"SELECT * FROM {table(prefix)} ORDER BY id".encode(), {}).fetchall()
    else:
        found = conn.execute(f"SELECT * FROM {table(prefix)} WHERE id = ANY(%(ids)s)".encode(), {"ids": ids}).fetchall()
    return {row["id"]: row for row in found}


def until_states(dsn: str, prefix: str, ids: list[int], states: tuple[str, ...], timeout: float = 30) -> dict[int, Any]:
    """The jobs, once every one is in one of `states`, polled on one connection of their own
    (autocommit: each read sees what was committed before it)."""
    last: dict[int, Any] = {}
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:

        def settled() -> dict[int, Any] | None:
            last.clear()
            last.update(_rows(conn, prefix, ids))
            done = len(last) == len(ids) and all(row["state"] in states for row in last.values())
            return dict(last) if done else None

        try:
            result: dict[int, Any] = wait_for(settled, timeout)
        except AssertionError:
            unsettled = {i: (row["state"], row["errors"][-1:]) for i, row in last.items() if row["state"] not in states}
            missing = sorted(set(ids) - set(last))
            raise AssertionError(f"not {states} within {timeout} s: {unsettled!r:.2000}, missing {missing}") from None
    return result


@pytest.mark.genuine_layout()
@pytest.mark.parametrize(("version", "prefix"), SCHEMAS, ids=SCHEMA_IDS)
def test_every_public_path_is_run_by_genuine_oban(genuine: GenuineOban, db_dsn: str, version: int, prefix: str) -> None:
    ids: dict[str, list[int]] = {}
    with Oban.connect(db_dsn, prefix=prefix, pool_size=2) as oban:
        ids["insert"] = [oban.insert(Job.new(COMPLETES, {"path": "insert"}, queue="harness")).id]
        with psycopg.connect(db_dsn) as conn:  # the caller's transaction, committed at the end
            job = oban.insert(Job.new(COMPLETES, {"path": "transaction"}, queue="harness"), conn=conn)
            conn.execute("SELECT 1", {})
        ids["transaction"] = [job.id]
        ids["insert_all unnest"] = oban.insert_all(
            [Job.new(COMPLETES, {"path": "unnest", "n": n}, queue="harness") for n in range(20)]
        ).ids
        ids["insert_all COPY"] = oban.insert_all(
            [Job.new(COMPLETES, {"path": "copy", "n": n}, queue="harness", tags=["bulk"]) for n in range(600)]
        ).ids
        first = oban.insert(Job.new(COMPLETES, {"path": "unique"}, queue="harness", unique={"period": 60}))
        again = oban.insert(Job.new(COMPLETES, {"path": "unique"}, queue="harness", unique={"period": 60}))
        assert (first.conflict, again.conflict, again.id) == (False, True, first.id)
        ids["unique"] = [first.id]
        scheduled = oban.insert(Job.new(COMPLETES, {"path": "scheduled"}, queue="harness", schedule_in=1))
        assert scheduled.state == "scheduled"
        ids["scheduled"] = [scheduled.id]

    async def through_asyncio() -> int:
        async with await AsyncOban.connect(db_dsn, prefix=prefix, pool_size=2) as aoban:
            job = await aoban.insert(Job.new(COMPLETES, {"path": "asyncio"}, queue="harness"))
            assert job.id is not None
            return job.id

    ids["asyncio"] = [asyncio.run(through_asyncio())]
    enqueued = run_cli(
        "enqueue",
        "--database-url",
        db_dsn,
        "--prefix",
        prefix,
        "--worker",
        COMPLETES,
        "--args",
        '{"path": "cli"}',
        "--queue",
        "harness",
        "--json",
    )
    assert enqueued.exit_code == 0, enqueued.stderr
    ids["cli"] = [json.loads(enqueued.stdout)["id"]]

    genuine.start("runner", prefix, queues={"harness": 20}, stage_interval=200)
    everything = [i for group in ids.values() for i in group]
    assert len(set(everything)) == 626
    done = until_states(db_dsn, prefix, everything, FINAL, timeout=60)
    by_path = {path: {done[i]["state"] for i in group} for path, group in ids.items()}
    assert by_path == {path: {"completed"} for path in ids}
    assert all(done[i]["attempt"] == 1 and done[i]["errors"] == [] for i in everything)
    assert all(done[i]["attempted_by"][0] == "harness" for i in everything)
    staged = done[ids["scheduled"][0]]
    # Staged, and not run before it was due. How soon after depends on the machine: the stager
    # runs every 200 ms here, but the job then waits its turn behind 625 others in a queue of
    # 20 (it ran 1.56 s late with two suites at once on 2 cores). A row Oban could not stage
    # would never run at all (until_states fails); 30 s only bounds a stager that misses passes.
    assert staged["scheduled_at"] <= staged["attempted_at"] <= staged["scheduled_at"] + timedelta(seconds=30)


@pytest.mark.genuine_layout()
@pytest.mark.parametrize(("version", "prefix"), SCHEMAS, ids=SCHEMA_IDS)
def test_worker_outcomes_under_genuine_oban(genuine: GenuineOban, db_dsn: str, version: int, prefix: str) -> None:
    with Oban.connect(db_dsn, prefix=prefix, pool_size=1) as oban:
        failed = oban.insert(
            Job.new(
                TMDB,
                {"imdb_id": "tt0000001", "source": "canonical_import", "source_key": "1001_movies", "title": "Lost"},
                meta={"import_type": "canonical", "source_list": "1001_movies"},
            )
        )
        soft = oban.insert(Job.new(TMDB, {"tmdb_id": 42, "title": "Soft"}, meta={"source_list": "1001_movies"}))
        raises = oban.insert(Job.new("Harness.Workers.Raises", {}, queue="harness", max_attempts=3))
        discards = oban.insert(Job.new("Harness.Workers.Discards", {}, queue="harness"))
        snoozes = oban.insert(Job.new("Harness.Workers.Snoozes", {"seconds": 60}, queue="harness"))
    assert (failed.queue, failed.max_attempts, soft.queue) == ("tmdb", 5, "tmdb")

    genuine.start("runner", prefix, queues={"harness": 5, "tmdb": 5}, stage_interval=200)
    ids = [failed.id, soft.id, raises.id, discards.id, snoozes.id]
    assert all(i is not None for i in ids)
    done = until_states(db_dsn, prefix, ids, (*FINAL, "retryable", "scheduled"), timeout=30)  # type: ignore[arg-type]
    genuine.stop("runner")
    done = rows(db_dsn, prefix, ids)  # type: ignore[arg-type]

    cancelled = done[failed.id]  # type: ignore[index]
    assert cancelled["state"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert len(cancelled["errors"]) == 1 and cancelled["errors"][0]["attempt"] == 1
    assert cancelled["meta"] == {
        "import_type": "canonical",
        "source_list": "1001_movies",
        "status": "failed",
        "failure_reason": "no_tmdb_match",
        "imdb_id": "tt0000001",
        "source": "canonical_import",
        "source_key": "1001_movies",
        "title": "Lost",
    }
    completed = done[soft.id]  # type: ignore[index]
    assert completed["state"] == "completed" and completed["completed_at"] is not None
    assert completed["meta"]["import_type"] == "soft" and completed["meta"]["source_list"] == "1001_movies"

    retryable = done[raises.id]  # type: ignore[index]
    assert (retryable["state"], retryable["attempt"], len(retryable["errors"])) == ("retryable", 1, 1)
    assert "harness failure" in retryable["errors"][0]["error"]
    # Oban's default backoff: 15 + 2^attempt seconds, plus up to 10% jitter.
    backoff = (retryable["scheduled_at"] - retryable["attempted_at"]).total_seconds()
    assert 17 - 1 <= backoff <= 17 * 1.1 + 1

    discarded = done[discards.id]  # type: ignore[index]
    assert (discarded["state"], len(discarded["errors"])) == ("discarded", 1)
    assert discarded["discarded_at"] is not None

    snoozed = done[snoozes.id]  # type: ignore[index]
    assert (snoozed["state"], snoozed["max_attempts"], snoozed["errors"]) == ("scheduled", 21, [])
    assert 59 <= (snoozed["scheduled_at"] - snoozed["attempted_at"]).total_seconds() <= 61


@pytest.mark.genuine_layout()
@pytest.mark.parametrize(("version", "prefix"), [(11, "public"), (14, "public"), (14, "cg-jobs")])
def test_a_running_oban_picks_up_a_new_row_at_once(
    genuine: GenuineOban, db_dsn: str, version: int, prefix: str
) -> None:
    """The insert notification: with the Stager polling only every 30 s, a job written here is
    started within about a second; a bare SQL row (no notification) waits, except at V11, whose
    own trigger notifies."""
    genuine.start("runner", prefix, queues={"harness": 5}, stage_interval=30_000)
    time.sleep(0.5)  # the notifier's LISTEN is set up
    with Oban.connect(db_dsn, prefix=prefix, pool_size=1) as oban:
        latencies = []
        for n in range(3):
            job = oban.insert(Job.new(COMPLETES, {"n": n}, queue="harness"))
            assert job.id is not None
            done = until_states(db_dsn, prefix, [job.id], ("completed",), timeout=15)[job.id]
            latencies.append((done["attempted_at"] - done["inserted_at"]).total_seconds())
    # Well under the Stager's 30 s: woken by the notification (within about a second on a quiet
    # machine; the bound leaves room for a loaded one, as two suites at once on 2 cores).
    assert max(latencies) < 10.0, latencies

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        bare = conn.execute(
            f"INSERT INTO {table(prefix)} (worker, queue, args) VALUES (%(w)s, 'harness', '{{}}') RETURNING id".encode(),
            {"w": COMPLETES},
        ).fetchone()
    assert bare is not None
    if version == 11:  # V11's own trigger notifies: run well before the Stager's 30 s
        assert until_states(db_dsn, prefix, [bare[0]], ("completed",), timeout=15)[bare[0]]["state"] == "completed"
    else:
        time.sleep(2)
        assert rows(db_dsn, prefix, [bare[0]])[bare[0]]["state"] == "available"


# -- row by row: the same job from Elixir Oban.insert/2 and from Oban.insert ------------------

NOT_COMPARED = {"id", "inserted_at", "scheduled_at"}
ROW_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (the harness's job spec, Job.new's keyword arguments)
    "full options, scheduled_at": (
        {
            "worker": COMPLETES,
            "via": "job",
            "args": {"n": 1, "nested": {"list": [1, 2.5, "x", None, True]}, "é": "ünï 💡", "big": 2**53},
            "opts": {
                "queue": "custom",
                "priority": 3,
                "max_attempts": 7,
                "tags": ["Import", "batch-1"],
                "meta": {"source_list": "1001_movies", "n": [1, {"a": None}]},
                "scheduled_at": "2030-01-02T03:04:05.123456Z",
            },
        },
        {
            "worker": COMPLETES,
            "args": {"n": 1, "nested": {"list": [1, 2.5, "x", None, True]}, "é": "ünï 💡", "big": 2**53},
            "queue": "custom",
            "priority": 3,
            "max_attempts": 7,
            "tags": ["Import", "batch-1"],
            "meta": {"source_list": "1001_movies", "n": [1, {"a": None}]},
            "scheduled_at": datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        },
    ),
    "a past scheduled_at": (
        {"worker": COMPLETES, "via": "job", "opts": {"queue": "q", "scheduled_at": "2020-01-01T00:00:00Z"}},
        {"worker": COMPLETES, "queue": "q", "scheduled_at": datetime(2020, 1, 1, tzinfo=UTC)},
    ),
    "the worker's own options (TMDbDetailsWorker.new)": (
        {"worker": TMDB, "args": {"tmdb_id": 7, "source": "canonical_import"}},
        {"worker": TMDB, "args": {"tmdb_id": 7, "source": "canonical_import"}},
    ),
    "a worker's max_attempts (Raises.new)": (
        {"worker": "Harness.Workers.Raises", "args": {}},
        {"worker": "Harness.Workers.Raises", "args": {}, "queue": "harness", "max_attempts": 3},
    ),
    "Oban.Job.new with the worker's name only": (
        {"worker": TMDB, "via": "job", "args": {"imdb_id": "tt1"}},
        {"worker": TMDB, "args": {"imdb_id": "tt1"}, "queue": "default", "max_attempts": 20, "unique": False},
    ),
    "messy tags": (
        {"worker": COMPLETES, "via": "job", "opts": {"tags": [" Foo ", "foo", "BAR", "", "  ", "baz qux"]}},
        {"worker": COMPLETES, "tags": [" Foo ", "foo", "BAR", "", "  ", "baz qux"]},
    ),
    "schedule_in": (
        {"worker": COMPLETES, "via": "job", "opts": {"schedule_in": 90}},
        {"worker": COMPLETES, "schedule_in": 90},
    ),
}


@pytest.mark.genuine_layout("from_elixir", "from_python")
@pytest.mark.parametrize("version", [11, 14])
@pytest.mark.parametrize("case", list(ROW_CASES))
def test_the_same_job_from_elixir_and_from_python_is_the_same_row(
    genuine: GenuineOban, db_dsn: str, version: int, case: str
) -> None:
    elixir_spec, python_kwargs = ROW_CASES[case]
    genuine.start("writer", "from_elixir", leader=False)
    [written] = genuine.insert("writer", [elixir_spec])
    with Oban.connect(db_dsn, prefix="from_python", pool_size=1) as oban:
        kwargs = dict(python_kwargs)
        ours = oban.insert(Job.new(kwargs.pop("worker"), kwargs.pop("args", None), **kwargs))
    theirs = rows(db_dsn, "from_elixir", [written["id"]])[written["id"]]
    mine = rows(db_dsn, "from_python", [ours.id])[ours.id]  # type: ignore[list-item]
    assert {k: v for k, v in mine.items() if k not in NOT_COMPARED} == {
        k: v for k, v in theirs.items() if k not in NOT_COMPARED
    }
    delay = lambda row: (row["scheduled_at"] - row["inserted_at"]).total_seconds()  # noqa: E731
    if "scheduled_at" in python_kwargs:
        assert mine["scheduled_at"] == theirs["scheduled_at"]
    else:
        assert delay(mine) == pytest.approx(delay(theirs), abs=0.5)
    assert abs((mine["inserted_at"] - theirs["inserted_at"]).total_seconds()) < 10


# -- uniqueness across languages, both orders ---------------------------------------------

UNIQUE_CASES: dict[str, tuple[Any, Any, dict[str, Any], dict[str, Any], float, bool]] = {
    # name: (Elixir's unique, Python's unique, first job, duplicate, age of the first (s), conflict?)
    "period 60 s, args keys": (
        {"period": 60, "keys": ["k"]},
        {"period": 60, "keys": ["k"]},
        {"args": {"k": 1, "x": "first"}},
        {"args": {"k": 1, "x": "second"}},
        0,
        True,
    ),
    "period 60 s, other key value": (
        {"period": 60, "keys": ["k"]},
        {"period": 60, "keys": ["k"]},
        {"args": {"k": 1}},
        {"args": {"k": 2}},
        0,
        False,
    ),
    "period 60 s, first two hours old": (
        {"period": 60},
        {"period": 60},
        {"args": {"k": 1}},
        {"args": {"k": 1}},
        7_200,
        False,
    ),
    "period infinity, first two hours old": (
        {"period": "infinity"},
        {"period": "infinity"},
        {"args": {"k": 1}},
        {"args": {"k": 1}},
        7_200,
        True,
    ),
    "unique: true / unique=True, first two hours old": (
        True,
        True,
        {"args": {"k": 1}},
        {"args": {"k": 1}},
        7_200,
        True,
    ),
    "meta keys": (
        {"fields": ["worker", "queue", "meta"], "keys": ["batch"]},
        {"fields": ["worker", "queue", "meta"], "keys": ["batch"]},
        {"args": {"n": 1}, "meta": {"batch": 7, "other": 1}},
        {"args": {"n": 2}, "meta": {"batch": 7, "other": 2}},
        0,
        True,
    ),
    "exact args, one more key": (
        {"period": 300},
        {"period": 300},
        {"args": {"k": 1}},
        {"args": {"k": 1, "extra": True}},
        0,
        False,
    ),
}


def _elixir_insert(genuine: GenuineOban, unique: Any, job: dict[str, Any]) -> tuple[int, bool]:
    opts = {"queue": "harness", "unique": unique, **({"meta": job["meta"]} if "meta" in job else {})}
    [done] = genuine.insert("writer", [{"worker": COMPLETES, "via": "job", "args": job["args"], "opts": opts}])
    return done["id"], done["conflict"]


def _python_insert(oban: Oban, unique: Any, job: dict[str, Any]) -> tuple[int, bool]:
    done = oban.insert(Job.new(COMPLETES, job["args"], queue="harness", meta=job.get("meta"), unique=unique))
    assert done.id is not None
    return done.id, done.conflict


@pytest.mark.genuine_layout()
@pytest.mark.parametrize("order", ["elixir then python", "python then elixir"])
@pytest.mark.parametrize("case", list(UNIQUE_CASES))
def test_uniqueness_agrees_across_languages(genuine: GenuineOban, db_dsn: str, case: str, order: str) -> None:
    elixir_unique, python_unique, first, duplicate, age, conflict = UNIQUE_CASES[case]
    genuine.start("writer", leader=False)
    with Oban.connect(db_dsn, pool_size=1) as oban:
        inserters = [
            lambda job: _elixir_insert(genuine, elixir_unique, job),
            lambda job: _python_insert(oban, python_unique, job),
        ]
        if order == "python then elixir":
            inserters.reverse()
        first_id, first_conflict = inserters[0](first)
        assert not first_conflict
        if age:
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                conn.execute(
                    "UPDATE oban_jobs SET inserted_at = inserted_at - make_interval(secs => %(age)s) WHERE id = %(id)s",
                    {"age": age, "id": first_id},
                )
        second_id, second_conflict = inserters[1](duplicate)
    assert second_conflict is conflict
    assert (second_id == first_id) is conflict
    assert len(rows(db_dsn, "public")) == (1 if conflict else 2)


#: Oban 2.23.1's default unique states (`:successful`); 2.22's list lacks `suspended`.
SUCCESSFUL_2_23 = {"suspended", "available", "scheduled", "executing", "retryable", "completed"}


@pytest.mark.genuine_layout()
@pytest.mark.parametrize(
    "state", ["available", "suspended", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"]
)
def test_default_unique_states_follow_the_oban_version(genuine: GenuineOban, db_dsn: str, state: str) -> None:
    """An existing job in each state, then its duplicate with the default states: genuine 2.23.1,
    ours with oban_version="2.23" (both must agree), and ours by default (Oban 2.22's states)."""
    genuine.start("writer", leader=False)
    first_id, _ = _elixir_insert(genuine, {"period": 60}, {"args": {"k": state}})

    def duplicate(insert: Any) -> bool:
        _, conflict = insert()
        with psycopg.connect(db_dsn, autocommit=True) as conn:  # back to the one job in `state`
            conn.execute("DELETE FROM oban_jobs WHERE id <> %(id)s", {"id": first_id})
        return bool(conflict)

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE oban_jobs SET state = %(s)s::oban_job_state, attempt = 1, "
            "completed_at = CASE WHEN %(s)s = 'completed' THEN now() END, "
            "discarded_at = CASE WHEN %(s)s = 'discarded' THEN now() END, "
            "cancelled_at = CASE WHEN %(s)s = 'cancelled' THEN now() END",
            {"s": state},
        )
    elixir_conflict = duplicate(lambda: _elixir_insert(genuine, {"period": 60}, {"args": {"k": state}}))
    assert elixir_conflict is (state in SUCCESSFUL_2_23)
    with Oban.connect(db_dsn, pool_size=1, oban_version="2.23") as oban:
        assert duplicate(lambda: _python_insert(oban, {"period": 60}, {"args": {"k": state}})) is elixir_conflict
    with Oban.connect(db_dsn, pool_size=1) as oban:
        assert oban.oban_version == "2.22"
        python_conflict = duplicate(lambda: _python_insert(oban, {"period": 60}, {"args": {"k": state}}))
        assert python_conflict is (state in SUCCESSFUL_2_23 - {"suspended"})


# -- engine.py against genuine Oban's engine, state by state -------------------------------


def _same_rows(ours: dict[int, dict[str, Any]], theirs: dict[int, dict[str, Any]], step: str) -> None:
    """Every column equal; times within 2 s of each other; attempted_by's producer uuid aside."""
    assert sorted(ours) == sorted(theirs), step

    def close(a: datetime | None, b: datetime | None) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and abs((a - b).total_seconds()) < 2)

    for job_id, mine in ours.items():
        other = theirs[job_id]
        for column, value in mine.items():
            if column == "errors":
                assert [{k: e[k] for k in ("attempt", "error")} for e in value] == [
                    {k: e[k] for k in ("attempt", "error")} for e in other[column]
                ], (step, job_id)
                for a, b in zip(value, other[column], strict=True):
                    assert a["at"].endswith("Z") and b["at"].endswith("Z")
                    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
                    assert abs((parse(a["at"]) - parse(b["at"])).total_seconds()) < 2, (step, job_id)
            elif column == "attempted_by":
                assert (value is None) == (other[column] is None), (step, job_id)
                if value is not None:
                    assert (value[0], len(value)) == (other[column][0], len(other[column])), (step, job_id)
            elif isinstance(value, datetime) or isinstance(other[column], datetime):
                assert close(value, other[column]), (step, job_id, column, value, other[column])
            else:
                assert value == other[column], (step, job_id, column)


@pytest.mark.genuine_layout("ours", "theirs")
def test_engine_against_oban(genuine: GenuineOban, db_dsn: str) -> None:
    from cinegraph_oban.oban import engine

    genuine.start("theirs", "theirs", leader=False)  # no queues, no staging: only what we call
    message = "** (RuntimeError) boom"
    jobs = [
        Job.new(COMPLETES, {"n": n}, queue="harness", priority=priority, max_attempts=3)
        for n, priority in enumerate([2, 0, 1, 0, 3, 0, 1])
    ] + [Job.new(COMPLETES, {"later": True}, queue="harness", schedule_in=3_600)]
    for prefix in ("ours", "theirs"):
        with Oban.connect(db_dsn, prefix=prefix, pool_size=1) as oban:
            assert oban.insert_all(jobs).ids == list(range(1, 9))

    with psycopg.connect(db_dsn, autocommit=True) as conn:

        def compare(step: str) -> None:
            _same_rows(rows(db_dsn, "ours"), rows(db_dsn, "theirs"), step)

        fetched = engine.fetch_jobs(conn, "harness", 4, prefix="ours", node="harness")
        theirs = genuine.engine("theirs", "fetch", queue="harness", limit=4)
        assert sorted(j.id for j in fetched) == sorted(theirs["ids"])  # type: ignore[type-var]
        assert theirs["node"] == "harness"
        compare("fetch")

        complete, error, cancel, discard = sorted(fetched, key=lambda j: j.id or 0)
        engine.complete_job(conn, complete, prefix="ours")
        genuine.engine("theirs", "complete", job_id=complete.id)
        engine.error_job(conn, error, message, prefix="ours")
        genuine.engine("theirs", "error", job_id=error.id, message="boom", seconds=15 + 2**error.attempt)
        engine.cancel_job(conn, cancel, message, prefix="ours")
        genuine.engine("theirs", "cancel", job_id=cancel.id, message="boom")
        engine.discard_job(conn, discard, message, prefix="ours")
        genuine.engine("theirs", "discard", job_id=discard.id, message="boom")
        compare("complete, error, cancel, discard")

        [snooze] = engine.fetch_jobs(conn, "harness", 1, prefix="ours", node="harness")
        assert genuine.engine("theirs", "fetch", queue="harness", limit=1)["ids"] == [snooze.id]
        engine.snooze_job(conn, snooze, 60, prefix="ours")
        genuine.engine("theirs", "snooze", job_id=snooze.id, seconds=60)
        compare("fetch, snooze")

        # Stage: the retryable and the snoozed job made due, the job an hour away left alone.
        for prefix in ("ours", "theirs"):
            conn.execute(
                f"UPDATE {table(prefix)} SET scheduled_at = scheduled_at - interval '2 hours' "
                "WHERE id = ANY(%(ids)s)".encode(),
                {"ids": [error.id, snooze.id]},
            )
        staged = engine.stage_jobs(conn, prefix="ours")
        assert sorted(staged) == genuine.engine("theirs", "stage")["ids"] == sorted([error.id, snooze.id])  # type: ignore[type-var]
        compare("stage")

        # Prune: the finished jobs made older than max_age; then one more completed just now, but
        # it is the retryable job staged above, whose scheduled_at is two hours old, and Oban
        # prunes completed jobs by scheduled_at: it goes too. The snoozed job (available) stays.
        for prefix in ("ours", "theirs"):
            conn.execute(
                f"UPDATE {table(prefix)} SET scheduled_at = scheduled_at - interval '2 minutes', "
                "cancelled_at = cancelled_at - interval '2 minutes', discarded_at = discarded_at - interval '2 minutes' "
                "WHERE id = ANY(%(ids)s)".encode(),
                {"ids": [complete.id, cancel.id, discard.id]},
            )
        young = engine.fetch_jobs(conn, "harness", 1, prefix="ours", node="harness")[0]
        assert genuine.engine("theirs", "fetch", queue="harness", limit=1)["ids"] == [young.id]
        engine.complete_job(conn, young, prefix="ours")
        genuine.engine("theirs", "complete", job_id=young.id)
        pruned = engine.prune_jobs(conn, max_age=60, prefix="ours")
        assert sorted(pruned) == genuine.engine("theirs", "prune", max_age=60)["ids"]
        assert young.id == error.id
        assert sorted(pruned) == sorted([complete.id, cancel.id, discard.id, young.id])  # type: ignore[type-var]
        compare("prune")


# -- the migration's archival jobs under Oban's plugins ------------------------------------


@pytest.mark.genuine_layout()
def test_archival_jobs_under_the_pruner_lifeline_and_stager(genuine: GenuineOban, db_dsn: str, tmp_path: Path) -> None:
    """What the README and the runbook promise: archival jobs are never run, kept while younger
    than the Pruner's max_age and pruned after it, and `migrate verify` then says so; outcomes
    the worker wrote under Oban are found by failed_lookups() and read by the typed readers."""
    from dataclasses import replace

    from cinegraph_oban import FailedLookup, SkippedImport
    from cinegraph_oban.meta.queries import failed_lookups, read_failed_lookups, read_skipped_imports
    from cinegraph_oban.migration.remove_tables import (
        RemoveRedundantImportTables,
        create_legacy_tables,
        insert_legacy_row,
    )

    legacy_rows = 50
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create_legacy_tables(conn)
        for n in range(1, legacy_rows + 1):
            failed = FailedLookup.new(f"tt{n:07d}", "canonical_import", title=f"Film {n}", metadata={"n": n})
            insert_legacy_row(conn, "public", replace(failed, id=n))
            insert_legacy_row(conn, "public", replace(SkippedImport.new(n, title=f"Soft {n}"), id=n))
    migration = RemoveRedundantImportTables(db_dsn, export_dir=tmp_path / "export", batch_size=20)
    migration.up()
    archival = {i: row for i, row in rows(db_dsn, "public").items() if "archived_from" in row["args"]}
    assert len(archival) == 2 * legacy_rows

    with Oban.connect(db_dsn, pool_size=1) as oban:
        live = oban.insert(
            Job.new(TMDB, {"imdb_id": "tt9999999", "source": "canonical_import", "title": "Live"}, meta={"n": 1})
        )
        soft = oban.insert(Job.new(TMDB, {"tmdb_id": 999_999, "title": "Soft live"}))
    genuine.start(
        "app",
        queues={"tmdb": 5, "default": 5},
        plugins={"pruner": {"max_age": 60, "interval": 200}, "lifeline": {"rescue_after": 1_000, "interval": 200}},
        stage_interval=200,
    )
    assert live.id is not None and soft.id is not None
    until_states(db_dsn, "public", [live.id, soft.id], FINAL)
    time.sleep(1.5)  # several rounds of the Pruner, Lifeline and Stager
    now = rows(db_dsn, "public")
    assert {i: now[i] for i in archival} == archival  # untouched: never run, staged, rescued or pruned

    with psycopg.connect(db_dsn) as conn:
        lookups = {found.imdb_id: found for found in read_failed_lookups(conn, failed_lookups())}
        assert len(lookups) == legacy_rows + 1
        assert (lookups["tt9999999"].title, lookups["tt9999999"].source) == ("Live", "canonical_import")
        assert {"year", "source_key", "metadata"} <= set(lookups["tt9999999"].unknown)  # the worker never said
        soft_live = [found for found in read_skipped_imports(conn) if found.tmdb_id == 999_999]
        assert len(soft_live) == 1 and soft_live[0].title == "Soft live"

    # Two minutes later for the archival jobs (their final timestamps are the migration's time):
    # past the Pruner's max_age of 60 s, it deletes them; the live outcomes, just written, stay.
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE oban_jobs SET scheduled_at = scheduled_at - interval '2 minutes', "
            "completed_at = completed_at - interval '2 minutes', discarded_at = discarded_at - interval '2 minutes' "
            "WHERE args ? 'archived_from'",
            {},
        )
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as polled:
        wait_for(lambda: set(_rows(polled, "public", None)) == {live.id, soft.id}, timeout=10)
    summary = migration.verify()
    assert summary.findings == []
    assert summary.pruned == {"failed_imdb_lookups": legacy_rows, "skipped_imports": legacy_rows}


# -- our installer against Oban.Migration --------------------------------------------------

CATALOG = """
SELECT 'column' AS kind, a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text
       || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS what
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated::text
  FROM pg_constraint WHERE conrelid = %(table)s::regclass
UNION ALL
SELECT 'index', pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %(table)s::regclass
UNION ALL
SELECT 'trigger', tgname || ' ' || pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = %(table)s::regclass AND NOT tgisinternal
UNION ALL
SELECT 'enum', string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
  JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typname = 'oban_job_state' AND n.nspname = %(prefix)s
UNION ALL
SELECT 'comment', obj_description(%(table)s::regclass, 'pg_class')
UNION ALL
SELECT 'peers', a.attname || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
 WHERE a.attrelid = (%(prefix)s || '.oban_peers')::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'function', p.proname || ' ' || pg_get_functiondef(p.oid) FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(prefix)s
ORDER BY 1, 2
"""


@pytest.mark.parametrize("version", [11, 12, 13, 14])
def test_our_installer_makes_what_oban_migration_makes(genuine: GenuineOban, db_dsn: str, version: int) -> None:
    """tests/ and the demo install Oban's schema from sql_templates/oban/migrations (a translation
    of Oban's migrations): the catalog it leaves must be Oban.Migration's own, object by object."""
    from cinegraph_oban.oban.table import install

    genuine.migrate(version, "by_oban")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        install(conn, version, "by_us")

        def catalog(prefix: str) -> list[tuple[str, str]]:
            found = conn.execute(CATALOG.encode(), {"table": f"{prefix}.oban_jobs", "prefix": prefix}).fetchall()
            return sorted((kind, (what or "").replace(prefix, "<prefix>")) for kind, what in found)

        ours, theirs = catalog("by_us"), catalog("by_oban")
    # The one documented difference: Oban 2.23.1's V01 creates the enum with `suspended` already,
    # so a schema it installs from scratch at 11..13 has eight labels; ours replays the
    # migrations as a database that was migrated over the years has them (suspended from V14
    # on). The library reads the labels a database has, and this file runs on Oban-made schemas.
    eight = ("enum", "available,suspended,scheduled,executing,retryable,completed,discarded,cancelled")
    seven = ("enum", "available,scheduled,executing,retryable,completed,discarded,cancelled")
    assert eight in theirs
    assert (seven if version < 14 else eight) in ours
    assert [row for row in ours if row[0] != "enum"] == [row for row in theirs if row[0] != "enum"]
    assert ("comment", str(version)) in theirs


@pytest.mark.genuine_layout("from_elixir", "from_python")
@pytest.mark.parametrize("version", [11, 14])
def test_insert_all_from_elixir_and_from_python_are_the_same_rows(
    genuine: GenuineOban, db_dsn: str, version: int
) -> None:
    """Oban.insert_all/2 beside insert_all on both of its paths (unnest below 500 jobs, COPY from
    500): the same rows in the same order, the workers' own options applied, uniqueness not."""
    specs = [
        {"worker": TMDB, "args": {"tmdb_id": n % 7}, "opts": {"meta": {"n": n}, "tags": [f"Batch {n % 3}"]}}
        for n in range(600)
    ]
    genuine.start("writer", "from_elixir", leader=False)
    for count in (20, 600):
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            for prefix in ("from_elixir", "from_python"):
                conn.execute(f"TRUNCATE {table(prefix)} RESTART IDENTITY".encode(), {})
        written = genuine.insert("writer", specs[:count], mode="insert_all")
        with Oban.connect(db_dsn, prefix="from_python", pool_size=1) as oban:
            ours = oban.insert_all(
                [Job.new(TMDB, s["args"], meta=s["opts"]["meta"], tags=s["opts"]["tags"]) for s in specs[:count]]
            )
        assert ours.ids == [w["id"] for w in written] == list(range(1, count + 1))
        theirs, mine = rows(db_dsn, "from_elixir"), rows(db_dsn, "from_python")
        strip = lambda found: {i: {k: v for k, v in r.items() if k not in NOT_COMPARED} for i, r in found.items()}  # noqa: E731
        assert strip(mine) == strip(theirs), count
        assert {r["queue"] for r in mine.values()} == {"tmdb"} and len(mine) == count
