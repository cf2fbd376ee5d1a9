"""The asyncio face (`cinegraph_oban.asyncio`) and the sync modules generated from it.

tools/async_to_sync.py turns each asyncio source into its sync twin; these tests check that the
generated modules are current, that each twin has the same public functions with the same
parameters, and that both faces leave the same rows on a real database.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from cinegraph_oban import Job, Oban
from cinegraph_oban.errors import ConnectionArgumentError
from cinegraph_oban.oban import engine
from cinegraph_oban.oban import engine_async as async_engine
from cinegraph_oban.oban.table import install
from conftest import ObanDatabase

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import async_to_sync  # noqa: E402

WORKER = "MyApp.Workers.Twin"


def test_the_generated_sync_modules_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "async_to_sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_transformation_keeps_comments_and_maps_names() -> None:
    source = (
        "from cinegraph_oban.oban.engine_async import fetch_jobs\n"
        "async def go(conn: AsyncConnection) -> None:  # a comment stays\n"
        "    pg = await to_async_psycopg(conn)\n"
        "    async with async_connection_lock(pg):\n"
        "        async for row in await pg.execute('SELECT 1'):\n"
        "            await row.aclose()\n"
        "    awaited = 'await in a string stays'\n"
    )
    assert async_to_sync.to_sync(source) == (
        "from cinegraph_oban.oban.engine import fetch_jobs\n"
        "def go(conn: Connection) -> None:  # a comment stays\n"
        "    pg = to_psycopg(conn)\n"
        "    with connection_lock(pg):\n"
        "        for row in pg.execute('SELECT 1'):\n"
        "            row.close()\n"
        "    awaited = 'await in a string stays'\n"
    )


def test_an_async_block_keeps_its_body_in_asyncio_and_its_else_in_sync() -> None:
    source = (
        "async def go(jobs):\n"
        "    if True:  # ASYNC\n"
        "        async for job in jobs:\n"
        "            await job.run()\n"
        "    else:\n"
        "        # the sync face's own lines\n"
        "        for job in jobs:\n"
        "            job.run(sync=True)\n"
        "\n"
        "            job.done()\n"
        "    if True:  # ASYNC\n"
        "        await nothing_in_sync()\n"
        "    return 'if True:  # ASYNC in a string stays'\n"
    )
    assert async_to_sync.to_sync(source) == (
        "def go(jobs):\n"
        "    # the sync face's own lines\n"
        "    for job in jobs:\n"
        "        job.run(sync=True)\n"
        "\n"
        "        job.done()\n"
        "    return 'if True:  # ASYNC in a string stays'\n"
    )
    nested = "if True:  # ASYNC\n    if True:  # ASYNC\n        pass\nelse:\n    pass\n"
    with pytest.raises(SystemExit, match="inside another"):
        async_to_sync.to_sync(nested)
    with pytest.raises(SystemExit, match="not `elif`"):
        async_to_sync.to_sync("if True:  # ASYNC\n    pass\nelif x:\n    pass\n")


@pytest.mark.parametrize("source", sorted(async_to_sync.MODULES))
def test_each_twin_has_the_same_public_functions_and_parameters(source: str) -> None:
    name = source.removesuffix(".py").replace("/", ".")
    async_module = importlib.import_module(f"cinegraph_oban.{name}")
    sync_module = importlib.import_module(f"cinegraph_oban.{name.removesuffix('_async')}")
    twin = {name: async_to_sync.NAMES.get(name, name) for name in async_module.__all__}  # AsyncOban: Oban
    assert sorted(twin.values()) == sorted(sync_module.__all__)
    for name in async_module.__all__:
        async_function, sync_function = getattr(async_module, name), getattr(sync_module, twin[name])
        if not callable(async_function):  # a constant (ENQUEUED_STATES): the same value
            assert async_function == sync_function
            continue
        assert list(inspect.signature(async_function).parameters) == list(inspect.signature(sync_function).parameters)
        # I/O functions are coroutines in the asyncio face; pure ones (format_error) stay plain.
        assert inspect.iscoroutinefunction(async_function) or not inspect.iscoroutinefunction(sync_function)
        assert not inspect.iscoroutinefunction(sync_function)


def _twin_rows(conn: psycopg.Connection[Any], prefix: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f'SELECT id, state, attempt, max_attempts, errors, attempted_by[1], priority FROM "{prefix}".oban_jobs '
        "ORDER BY id".encode(),
        {},
    ).fetchall()


def _strip_error_times(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(*row[:4], [{k: e[k] for k in ("attempt", "error")} for e in row[4]], *row[5:]) for row in rows]


@pytest.mark.parametrize("kind", ["psycopg", "sqlalchemy"])
def test_both_faces_of_the_engine_leave_the_same_rows(oban: ObanDatabase, kind: str) -> None:
    for prefix in ("sync_face", "async_face"):
        install(oban.conn, 14, prefix)
        with Oban(oban.conn, prefix=prefix) as client:
            client.insert_all([Job.new(WORKER, {"n": n}, queue="q", priority=n % 3, max_attempts=2) for n in range(6)])

    claimed = engine.fetch_jobs(oban.conn, "q", 5, prefix="sync_face", node="twin")
    first, second, third, fourth, fifth = claimed
    engine.complete_job(oban.conn, first, prefix="sync_face")
    engine.error_job(oban.conn, second, "boom", prefix="sync_face")
    engine.cancel_job(oban.conn, third, "stop", prefix="sync_face")
    engine.discard_job(oban.conn, fourth, "gone", prefix="sync_face")
    engine.snooze_job(oban.conn, fifth, 30, prefix="sync_face")
    oban.conn.execute("UPDATE \"sync_face\".oban_jobs SET scheduled_at = scheduled_at - interval '1 hour'", {})
    staged = engine.stage_jobs(oban.conn, prefix="sync_face")
    oban.conn.execute(
        "UPDATE \"sync_face\".oban_jobs SET completed_at = completed_at - interval '2 minutes', "
        "cancelled_at = cancelled_at - interval '2 minutes', discarded_at = discarded_at - interval '2 minutes'",
        {},
    )
    pruned = engine.prune_jobs(oban.conn, max_age=60, prefix="sync_face")

    async def the_asyncio_face(conn: Any) -> tuple[list[int | None], list[int], list[int], Any]:
        claimed = await async_engine.fetch_jobs(conn, "q", 5, prefix="async_face", node="twin")
        first, second, third, fourth, fifth = claimed
        await async_engine.complete_job(conn, first, prefix="async_face")
        await async_engine.error_job(conn, second, "boom", prefix="async_face")
        await async_engine.cancel_job(conn, third, "stop", prefix="async_face")
        await async_engine.discard_job(conn, fourth, "gone", prefix="async_face")
        await async_engine.snooze_job(conn, fifth, 30, prefix="async_face")
        with psycopg.connect(oban.dsn, autocommit=True) as side:
            if kind == "sqlalchemy":
                await conn.commit()
            side.execute("UPDATE \"async_face\".oban_jobs SET scheduled_at = scheduled_at - interval '1 hour'", {})
        staged = await async_engine.stage_jobs(conn, prefix="async_face")
        with psycopg.connect(oban.dsn, autocommit=True) as side:
            if kind == "sqlalchemy":
                await conn.commit()
            side.execute(
                "UPDATE \"async_face\".oban_jobs SET completed_at = completed_at - interval '2 minutes', "
                "cancelled_at = cancelled_at - interval '2 minutes', discarded_at = discarded_at - interval '2 minutes'",
                {},
            )
        pruned = await async_engine.prune_jobs(conn, max_age=60, prefix="async_face")
        if kind == "sqlalchemy":
            await conn.commit()
        return [job.id for job in claimed], staged, pruned, None

    async def run() -> tuple[list[int | None], list[int], list[int], Any]:
        if kind == "psycopg":
            async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as conn:
                return await the_asyncio_face(conn)
        sa_engine = create_async_engine(oban.dsn.replace("postgresql://", "postgresql+psycopg://"))
        try:
            async with AsyncSession(sa_engine) as session:
                return await the_asyncio_face(session)
        finally:
            await sa_engine.dispose()

    async_claimed, async_staged, async_pruned, _ = asyncio.run(run())
    assert async_claimed == [job.id for job in claimed]
    assert (async_staged, async_pruned) == (staged, pruned)
    assert staged and pruned
    assert _strip_error_times(_twin_rows(oban.conn, "async_face")) == _strip_error_times(
        _twin_rows(oban.conn, "sync_face")
    )


def test_each_face_refuses_the_other_kind_of_connection(oban: ObanDatabase) -> None:
    with pytest.raises(ConnectionArgumentError):
        asyncio.run(async_engine.stage_jobs(oban.conn))

    async def sync_function_given_an_asyncio_connection() -> None:
        async with await psycopg.AsyncConnection.connect(oban.dsn) as conn:
            engine.stage_jobs(conn)

    with pytest.raises(ConnectionArgumentError):
        asyncio.run(sync_function_given_an_asyncio_connection())


def test_outcomes_readers_and_testing_helpers_in_both_faces(oban: ObanDatabase) -> None:
    import cinegraph_oban
    from cinegraph_oban import FailedLookup, SkippedImport, testing
    from cinegraph_oban import asyncio as aio

    with Oban(oban.conn) as client:
        failed_sync, failed_async, soft_sync, soft_async = client.insert_all(
            [Job.new("Cinegraph.Workers.TMDbDetailsWorker", {"n": n}, meta={"source_list": "x"}) for n in range(4)]
        )
    lookup = FailedLookup.new("tt0111161", "canonical_import", title="The Shawshank Redemption")
    skipped = SkippedImport.new(278, title="Soft", criteria_failed={"min_votes": 10})
    for job in (failed_sync, failed_async, soft_sync, soft_async):
        oban.conn.execute(
            "UPDATE oban_jobs SET state = %(s)s, attempt = 1, completed_at = now(), cancelled_at = now() "
            "WHERE id = %(id)s",
            {"s": "cancelled" if job in (failed_sync, failed_async) else "completed", "id": job.id},
        )
    merged_sync = cinegraph_oban.record_failed_lookup(oban.conn, failed_sync.id, lookup)  # type: ignore[arg-type]
    cinegraph_oban.record_skipped_import(oban.conn, soft_sync.id, skipped)  # type: ignore[arg-type]
    read_sync = [(r.imdb_id, r.title, r.unknown) for r in cinegraph_oban.read_failed_lookups(oban.conn)]
    with pytest.raises(AssertionError, match="expected a job enqueued"):
        testing.assert_enqueued(oban.conn, worker="Nobody")

    async def the_asyncio_face() -> tuple[Any, ...]:
        async with await psycopg.AsyncConnection.connect(oban.dsn, autocommit=True) as conn:
            merged = await aio.record_failed_lookup(conn, failed_async.id, lookup)  # type: ignore[arg-type]
            await aio.record_skipped_import(conn, soft_async.id, skipped)  # type: ignore[arg-type]
            lookups = [(r.imdb_id, r.title, r.unknown) async for r in await aio.read_failed_lookups(conn)]
            soft = [r.tmdb_id async for r in await aio.read_skipped_imports(conn)]
            rows = [row["id"] async for row in await aio.read_jobs(conn, cinegraph_oban.jobs().states("completed"))]
            enqueued = await aio.testing.all_enqueued(conn)
            with pytest.raises(AssertionError, match="expected a job enqueued"):
                await aio.testing.assert_enqueued(conn, worker="Nobody")
            await aio.testing.refute_enqueued(conn, worker="Nobody")
            return merged, lookups, soft, rows, enqueued

    merged_async, read_async, soft_read, completed, enqueued = asyncio.run(the_asyncio_face())
    assert merged_async == merged_sync
    assert read_async == read_sync * 2  # the sync face read one; both are there now
    assert soft_read == [278, 278] and completed == [soft_sync.id, soft_async.id] and enqueued == []


def test_every_public_function_taking_a_connection_has_its_twin_in_the_asyncio_namespace() -> None:
    import cinegraph_oban
    import cinegraph_oban.asyncio as face

    taking = [
        name
        for name in cinegraph_oban.__all__
        if inspect.isfunction(function := getattr(cinegraph_oban, name))
        and {"conn", "connection"} & set(inspect.signature(function).parameters)
    ]
    assert {"install", "detect", "record_failed_lookup", "read_failed_lookups"} <= set(taking)
    for name in taking:
        assert name in face.__all__, f"cinegraph_oban.asyncio lacks {name}"
        twin, function = getattr(face, name), getattr(cinegraph_oban, name)
        assert list(inspect.signature(twin).parameters) == list(inspect.signature(function).parameters), name
        assert inspect.iscoroutinefunction(twin), name


def test_async_oban_has_every_public_method_of_oban() -> None:
    from cinegraph_oban import AsyncOban

    def public(cls: type) -> dict[str, Any]:
        return {name: getattr(cls, name) for name in dir(cls) if not name.startswith("_")}

    sync_methods, async_methods = public(Oban), public(AsyncOban)
    assert sorted(async_methods) == sorted(sync_methods)
    for name, sync_member in sync_methods.items():
        if callable(sync_member) and not isinstance(sync_member, type):
            parameters = list(inspect.signature(sync_member).parameters)
            assert list(inspect.signature(async_methods[name]).parameters) == parameters, name


def test_the_migration_namespace_has_its_asyncio_mirror() -> None:
    """`cinegraph_oban.asyncio.migration` has every name of `cinegraph_oban.migration`: the
    functions taking a connection as coroutines with the same parameters, the constants and
    result types themselves, and AsyncRemoveRedundantImportTables with the same constructor and
    every public method (coroutines, but `plan`, which reads nothing)."""
    import cinegraph_oban.asyncio as namespace
    import cinegraph_oban.migration as sync_face
    from cinegraph_oban.asyncio import migration as async_face

    assert namespace.migration is async_face
    named = {"RemoveRedundantImportTables": "AsyncRemoveRedundantImportTables"}
    assert sorted(named.get(name, name) for name in sync_face.__all__) == sorted(async_face.__all__)
    for name in sync_face.__all__:
        sync_member, async_member = getattr(sync_face, name), getattr(async_face, named.get(name, name))
        if inspect.isfunction(sync_member):
            assert inspect.iscoroutinefunction(async_member), name
            assert list(inspect.signature(async_member).parameters) == list(inspect.signature(sync_member).parameters)
        elif name not in named:
            assert async_member is sync_member, name
    sync_class, async_class = sync_face.RemoveRedundantImportTables, async_face.AsyncRemoveRedundantImportTables
    assert inspect.signature(async_class) == inspect.signature(sync_class)
    public = {name for name in dir(sync_class) if not name.startswith("_") and callable(getattr(sync_class, name))}
    # interrupt() stops a sync run from another thread; in the asyncio face, cancelling the task does.
    assert public - {"interrupt"} == {"down", "export", "plan", "status", "up", "verify"}
    for name in public - {"interrupt"}:
        sync_method, async_method = getattr(sync_class, name), getattr(async_class, name)
        assert inspect.signature(async_method).parameters.keys() == inspect.signature(sync_method).parameters.keys()
        assert inspect.iscoroutinefunction(async_method) == (name != "plan"), name


def test_install_detect_and_health_in_both_faces(oban: ObanDatabase) -> None:
    from dataclasses import replace

    from cinegraph_oban import asyncio as aio
    from cinegraph_oban.oban.health import health
    from cinegraph_oban.oban.table import detect, migrated_version

    assert install(oban.conn, 12, "sync face") == 0
    sync_schema = detect(oban.conn, "sync face")
    sync_health = health(oban.conn, "sync face")

    async def the_asyncio_face() -> tuple[Any, ...]:
        async with await psycopg.AsyncConnection.connect(oban.dsn) as conn:  # not autocommit: switched for it
            found = await aio.installation.install(conn, 12, "async face")
            again = await aio.installation.install(conn, 14, "async face")
            assert conn.autocommit is False
            await conn.execute("SELECT 1")  # now in a transaction: install must refuse
            with pytest.raises(ConnectionArgumentError, match="cannot run inside a transaction"):
                await aio.installation.install(conn, 14, "async face")
            await conn.rollback()
            version = await aio.installation.migrated_version(conn, "async face")
            schema = await aio.installation.detect(conn, "async face")
            report = await aio.health.health(conn, "async face")
            return found, again, version, schema, report

    found, again, version, async_schema, async_health = asyncio.run(the_asyncio_face())
    assert (found, again, version) == (0, 12, 14)
    install(oban.conn, 14, "sync face")
    assert migrated_version(oban.conn, "sync face") == 14
    assert replace(async_schema, prefix="x", id_sequence="", indexes=(), check_constraints=()) == replace(
        detect(oban.conn, "sync face"), prefix="x", id_sequence="", indexes=(), check_constraints=()
    )
    assert sync_schema.version == 12
    assert type(async_health) is type(sync_health)
    assert (async_health.jobs_by_state, async_health.warnings) == (sync_health.jobs_by_state, sync_health.warnings)


#: Run in one fresh interpreter: the libraries the package uses are imported once (none of the
#: package is), then each module is imported first in a child forked from that state, so every
#: import order is tried without paying an interpreter and the libraries for each module.
#: Python imports a module's packages before it, so importing `a.b.c` first is importing `a`,
#: then `a.b`, then `a.b.c`: each package's children are forked from the child that imported
#: that package, and one its import already loaded is the same import as its package's (its
#: own modules are then forked from that child too).
_IMPORT_FIRST = r"""
import importlib, json, os, sys, traceback
import click, jinja2, psycopg, rich, sqlalchemy
assert not [m for m in sys.modules if m.startswith("cinegraph_oban")]
modules = sys.argv[1:]
assert modules[0] == "cinegraph_oban", modules[0]
read, write = os.pipe()


def first(module):
    # In a child: import `module` (its packages already imported), then each of its own
    # modules not loaded by that in a child of this one; failures as lines on the pipe.
    try:
        importlib.import_module(module)
    except BaseException:
        message = traceback.format_exc().strip().splitlines()[-1]
        for each in modules:
            if each == module or each.startswith(module + "."):
                os.write(write, (json.dumps([each, message]) + "\n").encode())
        return
    wait(fork_children(module))


def wait(children):
    # A child that died without saying why (a signal, an exit from C) is a failure too.
    for pid, module in children:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            os.write(write, (json.dumps([module, f"exited with status {status}"]) + "\n").encode())


def fork_children(package):
    # Each of the package's own modules in a child, but those already loaded: theirs then.
    children = []
    for each in modules:
        if each.rpartition(".")[0] != package:
            continue
        if each in sys.modules:
            children.extend(fork_children(each))
            continue
        pid = os.fork()
        if pid == 0:
            first(each)
            os._exit(0)
        children.append((pid, each))
    return children


pid = os.fork()
if pid == 0:
    os.close(read)
    first(modules[0])
    os._exit(0)
os.close(write)
with os.fdopen(read) as out:
    failed = dict(json.loads(line) for line in out)
status = os.waitpid(pid, 0)[1]
if status != 0:
    failed.setdefault(modules[0], f"exited with status {status}")
print(json.dumps(failed))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="os.fork is POSIX only")
def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """Modules that import each other (queries and readers, schema and installation) must load
    whichever is imported first."""
    package = ROOT / "cinegraph_oban"
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
    )
    assert "cinegraph_oban.meta.readers" in modules and "cinegraph_oban.oban.installation_async" in modules
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_FIRST, *modules],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {}


def test_the_transformation_counts_lines_as_tokenize_does() -> None:
    """A form feed or U+2028 inside a string is no line break to tokenize; offsets counted by
    str.splitlines() shifted every edit after it (the code came out mangled)."""
    source = '"""a\x0cb\u2028c"""\nasync def f(conn: AsyncConnection):\n    await g()\n'
    assert async_to_sync.to_sync(async_to_sync._prose(source)) == (
        '"""a\x0cb\u2028c"""\ndef f(conn: Connection):\n    g()\n'
    )
