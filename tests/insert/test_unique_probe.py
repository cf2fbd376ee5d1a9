"""The unique lookup's probe: Oban's GIN index searched for one value of the job's args, with
every one of Oban's predicates tested on what it finds. It must find exactly what Oban's
containment lookup finds, stop probing with a key many jobs share, and stay off indexes that
cannot serve it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from cinegraph_oban import Job, Oban
from cinegraph_oban.insert import statements
from cinegraph_oban.oban.table import install
from conftest import ObanDatabase
from tests.helpers import TMDB
from tests.strategies import json_values

#: Values chosen so that stored jobs and the new job share them often: quotes, backslashes,
#: control characters and unicode in strings, and numbers that are equal as JSON but not as text.
_VALUES = st.one_of(
    st.sampled_from(
        [
            *("it's", 'say "hi"', "back\\slash", "tab\there", "line\nbreak", "\x01", "ünï ✓", "\u2028", ""),
            *("$.* ? (@)", "\b\f\x7f", "😀 non-BMP", "\\u0041", "trailing\\", "x" * 200, "a"),
        ]
    ),
    st.sampled_from([0, 7, -5, 2**70, -(2**70), 10**40, 1.0, 7.0, 1.5, True, False, None]),
    st.sampled_from([{"x": "it's"}, ["it's"], [7], {}]),
)
_ARGS = st.dictionaries(st.sampled_from(["a", "b", "c"]), _VALUES, max_size=3)


@pytest.fixture
def probe_client(db_dsn: str) -> Any:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        install(conn, 14, "probe")
        yield conn, Oban(conn, prefix="probe")


def _lookup(conn: psycopg.Connection[Any], lookup: statements.Statement) -> tuple[bool, int | None]:
    """The lookup's answer (a conflict, and with which job), rolled back, with the GIN index in
    use wherever the plan can use it."""
    with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(lookup.sql, lookup.params)
        row = cur.fetchone()
    assert row is not None
    return row["conflict"], row["id"] if row["conflict"] else None


@st.composite
def _stored_and_new(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stored jobs' values and the new job's, often like a stored job's (the same, or with one
    or more members changed or added), so that the lookups often have something to find, or
    nothing to find by a single member."""
    stored = draw(st.lists(_ARGS, min_size=1, max_size=10))
    base = draw(st.sampled_from(stored))
    new = draw(
        st.one_of(
            st.just(base),
            st.tuples(st.sampled_from(["a", "b", "c"]), _VALUES).map(lambda change: {**base, change[0]: change[1]}),
            _ARGS.map(lambda more: {**base, **more}),
            _ARGS,
        )
    )
    return stored, new


@settings(max_examples=max(120, settings.default.max_examples))
@given(
    jobs=_stored_and_new(),
    keys=st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
    extra=json_values(max_leaves=4),
    extra_key=st.sampled_from(["a", "b", "c"]),
    field=st.sampled_from(["args", "meta"]),
)
# A job like a stored one but for one member: the probe (by "a") finds the stored job, and only
# Oban's predicates, tested on what it found, say it is not a conflict.
@example(jobs=([{"a": "x", "b": 1}], {"a": "x", "b": 2}), keys=[], extra=None, extra_key="c", field="args")
@example(jobs=([{"a": "x", "b": 1}], {"a": "x", "b": 2}), keys=["a", "b"], extra=None, extra_key="c", field="meta")
def test_a_probed_lookup_finds_what_oban_containment_finds(
    probe_client: Any,
    jobs: tuple[list[dict[str, Any]], dict[str, Any]],
    keys: list[str],
    extra: Any,
    extra_key: str,
    field: str,
) -> None:
    conn, client = probe_client
    conn.execute("TRUNCATE probe.oban_jobs")
    stored, args = jobs

    def job(values: dict[str, Any], unique: Any = False) -> Job:
        # The values go into args or meta; uniqueness looks at that field only.
        other = {"n": 1}
        if field == "args":
            return Job.new("MyApp.W", values, meta=other, unique=unique)
        return Job.new("MyApp.W", other, meta=values, unique=unique)

    client.insert_all([job(a) for a in stored] + [job({extra_key: extra})])
    new = job(args, {"fields": ["worker", field], "keys": keys, "period": "infinity"})
    schema = client.table()
    _, probed = statements.unique_statements(new, schema)
    _, contained = statements.unique_statements(new, replace(schema, probe_columns=()))
    assert contained.probe is None
    probeable = [k for k in (keys or args) if k in args and type(args[k]) in (str, int)]
    assert (probed.probe is not None) == bool(probeable)
    assert probed.probe is None or probed.probe[2] == field
    assert _lookup(conn, probed) == _lookup(conn, contained)


def test_the_lookup_probes_the_first_unique_key_with_a_value(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    job = Job.new(TMDB, {"imdb_id": "tt0111161", "source_key": "1001_movies", "title": "x"})
    _, lookup = statements.unique_statements(job, client.table(), unselective=client._memory.unselective)
    # TMDbDetailsWorker's keys are tmdb_id, imdb_id, source_key: tmdb_id is absent.
    assert lookup.probe == ("public", TMDB, "args", "imdb_id")
    assert json.loads(lookup.params["probe_path"].removeprefix("strict $.* ? (@ == ").removesuffix(")")) == "tt0111161"
    first = client.insert(job)
    again = client.insert(Job.new(TMDB, {"imdb_id": "tt0111161", "source_key": "1001_movies", "title": "y"}))
    other = client.insert(Job.new(TMDB, {"imdb_id": "tt0111161", "source_key": "oscar"}))
    assert not first.conflict and again.conflict and again.id == first.id and not other.conflict
    assert oban.count() == 2


def test_a_key_many_jobs_share_is_not_probed_again(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    unique = {"keys": ["source_key", "imdb_id"], "period": "infinity"}
    shared = statements.PROBE_CANDIDATES + 1
    client.insert_all(
        [Job.new(TMDB, {"source_key": "oscar", "imdb_id": f"tt{n}"}, unique=False) for n in range(shared)]
    )
    job = Job.new(TMDB, {"source_key": "oscar", "imdb_id": "tt1"}, unique=unique)

    def probe(of: Oban) -> tuple[str, str, str, str] | None:
        return statements.unique_statements(job, of.schema(), unselective=of._memory.unselective)[1].probe

    assert probe(client) == ("public", TMDB, "args", "source_key")
    found = client.insert(job)
    assert found.conflict and found.args == {"source_key": "oscar", "imdb_id": "tt1"}, "still exact"
    assert probe(client) == ("public", TMDB, "args", "imdb_id")
    assert client.insert(job).id == found.id
    new = client.insert(Job.new(TMDB, {"source_key": "oscar", "imdb_id": "tt-new"}, unique=unique))
    assert not new.conflict and oban.count() == shared + 1
    # What a client learns is its own: another client on the same database starts afresh.
    assert probe(Oban(oban.conn)) == ("public", TMDB, "args", "source_key")


def test_a_few_shared_values_keep_the_probe(oban: ObanDatabase) -> None:
    client = Oban(oban.conn)
    for n in range(3):
        client.insert(Job.new(TMDB, {"imdb_id": "tt1", "n": n}, unique=False))
    job = Job.new(TMDB, {"imdb_id": "tt1"}, unique={"keys": ["imdb_id"], "period": "infinity"})
    assert client.insert(job).conflict
    assert not client._memory.unselective


@pytest.mark.parametrize(
    "index",
    [
        "CREATE INDEX oban_jobs_args_index ON oban_jobs USING gin (args jsonb_path_ops)",
        "CREATE INDEX oban_jobs_args_index ON oban_jobs USING gin (args) WHERE state = 'available'",
        "CREATE INDEX oban_jobs_args_index ON oban_jobs USING btree (id)",
    ],
    ids=["jsonb_path_ops", "partial", "none"],
)
def test_no_probe_without_a_plain_jsonb_ops_gin_index(oban: ObanDatabase, index: str) -> None:
    # jsonb_path_ops cannot search "any member equal to": the probe would read the whole index.
    assert Oban(oban.conn).table().probe_columns == ("args", "meta")
    oban.conn.execute("DROP INDEX oban_jobs_args_index")
    oban.conn.execute(index)
    client = Oban(oban.conn)
    assert client.table().probe_columns == ("meta",)
    job = Job.new(TMDB, {"imdb_id": "tt1"})
    assert statements.unique_statements(job, client.table(), unselective=client._memory.unselective)[1].probe is None
    first = client.insert(job)
    assert client.insert(job).id == first.id


def test_every_layout_is_detected_with_its_gin_indexes(oban_any: ObanDatabase) -> None:
    assert oban_any.client().schema().probe_columns == ("args", "meta")


def _index_rows(plan: dict[str, Any]) -> int:
    """Rows that Bitmap Index Scans on oban_jobs_args_index handed on, in an EXPLAIN ANALYZE."""
    own = plan["Actual Rows"] if plan.get("Index Name") == "oban_jobs_args_index" else 0
    return own + sum(_index_rows(child) for child in plan.get("Plans", []))


def test_a_value_that_is_also_a_key_name_reads_no_job_from_the_index(oban: ObanDatabase) -> None:
    # In lax mode jsonpath searches a string as a key too (jsonb_ops stores array strings as
    # keys): probing "imdb_id" would read every job that has an imdb_id from the index.
    client = Oban(oban.conn)
    client.insert_all([Job.new(TMDB, {"imdb_id": f"tt{n}"}, unique=False) for n in range(200)])
    oban.conn.execute("VACUUM ANALYZE oban_jobs")
    job = Job.new(TMDB, {"label": "imdb_id"}, unique={"keys": ["label"], "period": "infinity"})
    _, lookup = statements.unique_statements(job, client.table(), unselective=client._memory.unselective)
    assert lookup.probe == ("public", TMDB, "args", "label")
    with oban.conn.transaction(force_rollback=True), oban.conn.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + lookup.sql, lookup.params)
        row = cur.fetchone()
    assert row is not None
    assert "oban_jobs_args_index" in json.dumps(row[0]), "the probe searched the GIN index"
    assert _index_rows(row[0][0]["Plan"]) == 0
    first = client.insert(job)
    assert not first.conflict and client.insert(job).id == first.id


def _probe_scan_rows(plan: dict[str, Any]) -> list[int]:
    """Rows read by the probe's heap scan (the one rechecking `@?`), in an EXPLAIN ANALYZE."""
    own = [plan["Actual Rows"]] if "@?" in plan.get("Recheck Cond", "") else []
    return own + [rows for child in plan.get("Plans", []) for rows in _probe_scan_rows(child)]


def test_a_probe_of_a_value_many_jobs_share_reads_few_of_them(oban: ObanDatabase) -> None:
    # 200 jobs share the probed value: the probe reads one more than PROBE_CANDIDATES of them,
    # and the lookup searches for the whole containment instead, in the same statement.
    client = Oban(oban.conn)
    shared = 200
    client.insert_all(
        [Job.new(TMDB, {"source_key": "oscar", "imdb_id": f"tt{n}"}, unique=False) for n in range(shared)]
    )
    oban.conn.execute("VACUUM ANALYZE oban_jobs")
    unique = {"keys": ["source_key", "imdb_id"], "period": "infinity"}
    for imdb_id, conflict in (("tt150", True), ("tt-new", False)):
        job = Job.new(TMDB, {"source_key": "oscar", "imdb_id": imdb_id}, unique=unique)
        _, lookup = statements.unique_statements(job, client.table(), unselective=client._memory.unselective)
        assert lookup.probe == ("public", TMDB, "args", "source_key")
        with oban.conn.transaction(force_rollback=True), oban.conn.cursor() as cur:
            cur.execute("SET LOCAL enable_seqscan = off")  # 200 rows: as on a table of many
            cur.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + lookup.sql, lookup.params)
            row = cur.fetchone()
        with oban.conn.transaction(force_rollback=True), oban.conn.cursor() as cur:
            cur.execute(lookup.sql, lookup.params)
            columns = [c.name for c in cur.description or ()]
            found = dict(zip(columns, cur.fetchone() or (), strict=True))
        assert row is not None
        assert _probe_scan_rows(row[0][0]["Plan"]) == [statements.PROBE_CANDIDATES + 1]
        assert found["conflict"] is conflict and found["probed"] == statements.PROBE_CANDIDATES + 1


@pytest.mark.parametrize("shared", [63, 64, 65, 66])
@pytest.mark.parametrize("field", ["args", "meta"])
@pytest.mark.parametrize("keys", [["v", "n"], []], ids=["keys", "exact"])
def test_the_probe_and_its_containment_fallback_agree_around_the_limit(
    oban: ObanDatabase, shared: int, field: str, keys: list[str]
) -> None:
    # `shared` jobs share the probed value "v"; the job that matches is the last one stored,
    # a near miss (another "n") and a cancelled match are stored before it.
    client = Oban(oban.conn)

    def job(values: dict[str, Any], unique: Any = False) -> Job:
        if field == "args":
            return Job.new("MyApp.W", values, unique=unique)
        return Job.new("MyApp.W", {}, meta=values, unique=unique)

    client.insert_all([job({"v": "shared", "n": n}) for n in range(shared - 2)])
    cancelled = client.insert(job({"v": "shared", "n": -1}))
    oban.conn.execute("UPDATE oban_jobs SET state = 'cancelled', cancelled_at = now() WHERE id = %s", (cancelled.id,))
    match = client.insert(job({"v": "shared", "n": -2}))
    unique = {"fields": ["worker", field], "keys": keys, "period": "infinity"}
    for n, expected in ((-2, match.id), (-1, None), (-3, None)):
        _, lookup = statements.unique_statements(job({"v": "shared", "n": n}, unique), client.table())
        assert lookup.probe == ("public", "MyApp.W", field, "v")
        with oban.conn.transaction(force_rollback=True), oban.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(lookup.sql, lookup.params)
            row = cur.fetchone()
        assert row is not None
        assert row["probed"] == min(shared, statements.PROBE_CANDIDATES + 1)
        assert (row["id"] if row["conflict"] else None) == expected, (n, row)
