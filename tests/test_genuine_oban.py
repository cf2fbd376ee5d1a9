"""Rows written here, run by genuine Elixir Oban 2.23.1 (tests/genuine_oban, tests/genuine.py).

Every schema is made by Oban's own `Oban.Migration` (versions 11 to 14, and a prefix other than
public); the jobs are written through every public path of this library and then run by a real
Oban with its Postgres notifier, Stager and plugins. Nothing here uses `engine.py`: these tests
are what the engine's own tests stand on (see test_engine_against_oban below).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from cinegraph_oban import AsyncOban, Job, Oban
from tests.genuine import GenuineOban, wait_for

pytestmark = pytest.mark.genuine_oban

SCRIPT = Path(sys.executable).parent / "cinegraph-oban"
SCHEMAS = [(11, "public"), (12, "public"), (13, "public"), (14, "public"), (14, "genuine_jobs")]
SCHEMA_IDS = [f"v{v}-{p}" for v, p in SCHEMAS]
COMPLETES = "Harness.Workers.Completes"
TMDB = "Cinegraph.Workers.TMDbDetailsWorker"
FINAL = ("completed", "cancelled", "discarded")


def table(prefix: str) -> str:
    quoted = prefix.replace('"', '""')
    return f'"{quoted}".oban_jobs'


def rows(dsn: str, prefix: str, ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """The jobs (all, or those ids) as dicts, by id, read on a connection of their own."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        if ids is None:
            found = conn.execute(f"SELECT * FROM {table(prefix)} ORDER BY id".encode(), {}).fetchall()
        else:
            found = conn.execute(f"SELECT * FROM {table(prefix)} WHERE id = ANY(%(ids)s)".encode(), {"ids": ids})
            found = found.fetchall()
    return {row["id"]: row for row in found}


def until_states(dsn: str, prefix: str, ids: list[int], states: tuple[str, ...], timeout: float = 30) -> dict[int, Any]:
    last: dict[int, Any] = {}

    def settled() -> dict[int, Any] | None:
        last.clear()
        last.update(rows(dsn, prefix, ids))
        done = len(last) == len(ids) and all(row["state"] in states for row in last.values())
        return dict(last) if done else None

    try:
        result: dict[int, Any] = wait_for(settled, timeout)
    except AssertionError:
        unsettled = {i: (row["state"], row["errors"][-1:]) for i, row in last.items() if row["state"] not in states}
        missing = sorted(set(ids) - set(last))
        raise AssertionError(f"not {states} within {timeout} s: {unsettled!r:.2000}, missing {missing}") from None
    return result


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize(("version", "prefix"), SCHEMAS, ids=SCHEMA_IDS)
def test_every_public_path_is_run_by_genuine_oban(genuine: GenuineOban, db_dsn: str, version: int, prefix: str) -> None:
    genuine.migrate(version, prefix)
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
        scheduled = oban.insert(Job.new(COMPLETES, {"path": "scheduled"}, queue="harness", schedule_in=2))
        assert scheduled.state == "scheduled"
        ids["scheduled"] = [scheduled.id]

    async def through_asyncio() -> int:
        async with await AsyncOban.connect(db_dsn, prefix=prefix, pool_size=2) as aoban:
            job = await aoban.insert(Job.new(COMPLETES, {"path": "asyncio"}, queue="harness"))
            assert job.id is not None
            return job.id

    ids["asyncio"] = [asyncio.run(through_asyncio())]
    enqueued = cli(
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
    assert enqueued.returncode == 0, enqueued.stderr
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
    # Staged on time: not run before it was due, and run within about a second after.
    assert staged["scheduled_at"] <= staged["attempted_at"] <= staged["scheduled_at"] + timedelta(seconds=1.5)


@pytest.mark.parametrize(("version", "prefix"), SCHEMAS, ids=SCHEMA_IDS)
def test_worker_outcomes_under_genuine_oban(genuine: GenuineOban, db_dsn: str, version: int, prefix: str) -> None:
    genuine.migrate(version, prefix)
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


@pytest.mark.parametrize(("version", "prefix"), [(11, "public"), (14, "public"), (14, "genuine_jobs")])
def test_a_running_oban_picks_up_a_new_row_at_once(
    genuine: GenuineOban, db_dsn: str, version: int, prefix: str
) -> None:
    """The insert notification: with the Stager polling only every 30 s, a job written here is
    started within about a second; a bare SQL row (no notification) waits, except at V11, whose
    own trigger notifies."""
    genuine.migrate(version, prefix)
    genuine.start("runner", prefix, queues={"harness": 5}, stage_interval=30_000)
    time.sleep(0.5)  # the notifier's LISTEN is set up
    with Oban.connect(db_dsn, prefix=prefix, pool_size=1) as oban:
        latencies = []
        for n in range(3):
            job = oban.insert(Job.new(COMPLETES, {"n": n}, queue="harness"))
            assert job.id is not None
            done = until_states(db_dsn, prefix, [job.id], ("completed",), timeout=5)[job.id]
            latencies.append((done["attempted_at"] - done["inserted_at"]).total_seconds())
    assert max(latencies) < 1.0, latencies

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        bare = conn.execute(
            f"INSERT INTO {table(prefix)} (worker, queue, args) VALUES (%(w)s, 'harness', '{{}}') RETURNING id".encode(),
            {"w": COMPLETES},
        ).fetchone()
    assert bare is not None
    time.sleep(2)
    state = rows(db_dsn, prefix, [bare[0]])[bare[0]]["state"]
    assert state == ("completed" if version == 11 else "available")


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


@pytest.mark.parametrize("version", [11, 14])
@pytest.mark.parametrize("case", list(ROW_CASES))
def test_the_same_job_from_elixir_and_from_python_is_the_same_row(
    genuine: GenuineOban, db_dsn: str, version: int, case: str
) -> None:
    elixir_spec, python_kwargs = ROW_CASES[case]
    genuine.migrate(version, "from_elixir")
    genuine.migrate(version, "from_python")
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


@pytest.mark.parametrize("order", ["elixir then python", "python then elixir"])
@pytest.mark.parametrize("case", list(UNIQUE_CASES))
def test_uniqueness_agrees_across_languages(genuine: GenuineOban, db_dsn: str, case: str, order: str) -> None:
    elixir_unique, python_unique, first, duplicate, age, conflict = UNIQUE_CASES[case]
    genuine.migrate(14)
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


@pytest.mark.parametrize(
    "state", ["available", "suspended", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"]
)
def test_default_unique_states_follow_the_oban_version(genuine: GenuineOban, db_dsn: str, state: str) -> None:
    """An existing job in each state, then its duplicate with the default states: genuine 2.23.1,
    ours with oban_version="2.23" (both must agree), and ours by default (Oban 2.22's states)."""
    genuine.migrate(14)
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
