"""The job row (cinegraph_oban/insert/row.py): its columns against oban_jobs, and every path that writes
a job (single insert through libpq and through a cursor, unique insert, unnest, COPY) writing the
same row from the same job."""

from __future__ import annotations

from typing import Any

from cinegraph_oban import Job, Oban
from cinegraph_oban.insert import row
from cinegraph_oban.insert.client import COPY_THRESHOLD
from conftest import ObanDatabase

#: What Oban.insert/2 leaves to the table's defaults, as the client does.
DEFAULTED = {"id", "inserted_at", "errors", "attempt", "attempted_at", "attempted_by", "completed_at"}
DEFAULTED |= {"discarded_at", "cancelled_at"}
#: The database's type of each insertable column's value (what COPY and unnest must send).
COPY_TYPE = {"text": "text", "int4": "integer", "jsonb": "jsonb", "timestamp": "timestamp without time zone"}


def _catalog(db: ObanDatabase) -> dict[str, tuple[str, bool, bool]]:
    """column -> (type, not null, has a default) of oban_jobs."""
    rows = db.conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef
           FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
        (db.table,),
    ).fetchall()
    return {name: (typ, notnull, hasdef) for name, typ, notnull, hasdef in rows}


def test_the_row_names_every_column_oban_fills_and_nothing_else(oban_any: ObanDatabase) -> None:
    catalog = _catalog(oban_any)
    names = [column.name for column in row.INSERTABLE]
    assert len(names) == len(set(names))
    assert set(names) | DEFAULTED == set(catalog), "a column neither written nor defaulted"
    for name in DEFAULTED:  # left out, so it must take a default or be nullable
        _typ, notnull, hasdef = catalog[name]
        assert hasdef or not notnull, name
    for column in row.INSERTABLE:
        typ = catalog[column.name][0]
        copy_type = row.copy_types(scheduled=True, varchar_tags=typ.startswith("character varying"))[
            names.index(column.name) + 1
        ]
        if column.name == "state":
            assert typ.endswith("oban_job_state")  # an enum's binary COPY form is its label, as text
            assert copy_type == "text"
        elif column.name == "tags":
            assert typ in ("text[]", "character varying(255)[]")
            assert copy_type == ("varchar[]" if typ.startswith("character varying") else "text[]")
        else:
            assert COPY_TYPE[copy_type] == typ, column.name


JOB = Job.new(
    "MyApp.Workers.Mailer",
    {"to": "ü@example.com", "n": [1, 2.5, None, True], "quote": 'a"b\\c'},
    meta={"k": {"nested": ["x"]}},
    tags=["b", 'q"uote', "back\\slash", "ü"],
    queue="mail",
    priority=2,
    max_attempts=7,
)


def _like(job: Job, **changes: Any) -> Job:
    options: dict[str, Any] = dict(
        meta=job.meta, tags=list(job.tags), queue=job.queue, priority=job.priority, max_attempts=job.max_attempts
    )
    args = {**job.args, **changes.pop("args", {})}
    return Job.new(job.worker, args, **{**options, **changes})


def _jobs() -> list[Job]:
    return [JOB, _like(JOB, schedule_in=3600)]


_WRITTEN = ("state", "queue", "worker", "args", "meta", "tags", "max_attempts", "priority", "attempt", "errors")


def _written(db: ObanDatabase, ids: list[int]) -> list[tuple[Any, ...]]:
    rows = {r["id"]: r for r in db.rows()}
    return [(*tuple(rows[i][c] for c in _WRITTEN), rows[i]["scheduled_at"] > rows[i]["inserted_at"]) for i in ids]


def test_every_path_writes_the_same_row(oban_any: ObanDatabase) -> None:
    db = oban_any
    oban = Oban(db.conn, prefix=db.prefix)
    jobs = _jobs()
    expected = None
    paths: dict[str, list[int]] = {}
    paths["prepared"] = [oban.insert(j).id for j in jobs]  # autocommit, no transaction: through libpq
    with db.conn.transaction():
        paths["cursor"] = [oban.insert(j, conn=db.conn).id for j in jobs]
    # Unique jobs apart from each other (and from the rest) by one key, dropped when comparing.
    unique = [
        _like(JOB, args={"path": "u0"}, unique=True),
        _like(JOB, args={"path": "u1"}, unique=True, schedule_in=3600),
    ]
    paths["unique"] = [oban.insert(j).id for j in unique]
    paths["unnest"] = list(oban.insert_all(jobs).ids)
    paths["copy"] = list(oban.insert_all(jobs * (COPY_THRESHOLD // 2)).ids)[:2]
    for path, ids in paths.items():
        written = _written(db, ids)
        if path == "unique":  # the same row but for the one key that keeps it apart
            written = [(r[0], r[1], r[2], {k: v for k, v in r[3].items() if k != "path"}, *r[4:]) for r in written]
        if expected is None:
            expected = written
        assert written == expected, path
    assert expected is not None
    assert expected[0][5] == ["b", 'q"uote', "back\\slash", "ü"] and expected[1][-1] is True


#: The type each column's value is read as, to compare the two forms of it.
_READ_AS = {"state": "text", "queue": "text", "worker": "text", "args": "jsonb", "meta": "jsonb", "tags": "text[]"}
_READ_AS |= {"max_attempts": "integer", "priority": "integer", "scheduled_at": "timestamp"}


def test_the_text_forms_read_back_as_the_cursor_values(oban: ObanDatabase) -> None:
    """The prepared path's text forms against psycopg's own binding of the cursor path's values."""
    assert set(_READ_AS) == {c.name for c in row.INSERTABLE}
    for job in _jobs():
        columns = row.columns(scheduled=job.scheduled_at is not None)
        texts = row.texts(job)
        params = row.params(job)
        assert len(texts) == len(columns)
        for column, text in zip(columns, texts, strict=True):
            cast = _READ_AS[column.name]
            found = oban.conn.execute(
                f"SELECT %s::{cast}, %s::{cast}".encode(),
                (None if text is None else text.decode(), params[column.name]),
            ).fetchone()
            assert found is not None and found[0] == found[1], column.name


def test_an_unscheduled_job_in_a_scheduled_copy_chunk_takes_the_chunks_now() -> None:
    job, scheduled = _jobs()
    now = object()
    assert row.copy_row(job, 1, now)[-1] is now  # type: ignore[arg-type]
    assert row.copy_row(scheduled, 2, now)[-1] == scheduled.scheduled_at  # type: ignore[arg-type]
    assert len(row.copy_row(job, 1, None)) == len(row.copy_types(scheduled=False, varchar_tags=False))
    assert len(row.copy_row(job, 1, now)) == len(row.copy_types(scheduled=True, varchar_tags=False))  # type: ignore[arg-type]
