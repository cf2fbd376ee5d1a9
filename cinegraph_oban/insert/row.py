"""The job row: the columns of `oban_jobs` a client writes, named once, with their encodings.

Every path that writes a job takes its columns from `INSERTABLE`: the single and the unique
insert (cursor and prepared forms), the `unnest` statement of a small `insert_all` and the binary
COPY of a large one. The templates read the same tuple (the `insertable` global of
`templates.py`, used by `insert/_row.sql.j2`); what SQL does with a column lives there, what
Python sends for it lives here. Columns left out take the table's defaults, as with Ecto's
insert in `Oban.insert/2`: `id` (but COPY draws it first), `inserted_at`, `errors`, `attempt`,
and `scheduled_at` when the job is not scheduled.

Each column gives its value as a Python expression of `job`, in each form a path sends; the
encoders are compiled once from those expressions, as `dataclasses` compiles `__init__`, so that
a COPY row or a prepared insert's values cost one call however many columns there are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from cinegraph_oban.model.timestamps import to_naive_utc

if TYPE_CHECKING:
    from cinegraph_oban.model.job import Job

__all__ = [
    "INSERTABLE",
    "Column",
    "columns",
    "copy_row",
    "copy_types",
    "json_param",
    "params",
    "text_array",
    "texts",
    "unnest_params",
]


@dataclass(frozen=True, slots=True)
class Column:
    """One insertable column and how each path sends its value.

    `param`: what psycopg binds on the cursor path and writes in COPY; `text`: the value in
    PostgreSQL's text input form (the prepared path, straight to libpq); `each`: one element of
    the `unnest` array (default `param`); `copy_type`: its binary COPY type; `array_type`: the
    element type of its `unnest` array."""

    name: str
    param: str
    text: str
    copy_type: str
    array_type: str
    each: str | None = None


INSERTABLE: tuple[Column, ...] = (
    Column("state", "job.state", "job.state.encode()", "text", "text"),
    Column("queue", "job.queue", "job.queue.encode()", "text", "text"),
    Column("worker", "job.worker", "job.worker.encode()", "text", "text"),
    Column("args", "json_param(job.args_json)", "job.args_json.encode()", "jsonb", "jsonb"),
    Column("meta", "json_param(job.meta_json)", "job.meta_json.encode()", "jsonb", "jsonb"),
    # An array of arrays must be rectangular: in `unnest` each job's tags travel as one JSON array.
    Column("tags", "list(job.tags)", "text_array(job.tags)", "text[]", "jsonb", each="json_tags(job.tags)"),
    Column("max_attempts", "job.max_attempts", "b'%d' % job.max_attempts", "int4", "integer"),
    Column("priority", "job.priority", "b'%d' % job.priority", "int4", "integer"),
    Column("scheduled_at", "job.scheduled_at", "timestamp_text(job.scheduled_at)", "timestamp", "timestamp"),
)

#: The optional column: sent only by a statement for a scheduled job (or a chunk holding one).
SCHEDULED = "scheduled_at"


def columns(*, scheduled: bool) -> tuple[Column, ...]:
    """The columns a statement for a scheduled (or an unscheduled) job sends."""
    return INSERTABLE if scheduled else tuple(c for c in INSERTABLE if c.name != SCHEDULED)


def _identity(text: str) -> str:
    return text


def json_param(text: str) -> Jsonb:
    """Already-encoded JSON text, bound as jsonb without encoding it again."""
    return Jsonb(text, dumps=_identity)


def text_array(items: Sequence[str]) -> bytes:
    """A text[] in PostgreSQL's array input form, every element quoted."""
    if not items:
        return b"{}"
    quoted = (item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return ("{" + ",".join(f'"{item}"' for item in quoted) + "}").encode()


def timestamp_text(value: datetime | None) -> bytes | None:
    """A time as naive UTC in ISO form, which PostgreSQL reads the same under any DateStyle (a
    `timestamp` parameter would ignore an offset)."""
    return None if value is None else to_naive_utc(value).isoformat(sep=" ").encode()


def _json_tags(tags: Sequence[str]) -> Jsonb:
    return json_param(json.dumps(list(tags), ensure_ascii=False))


_NAMESPACE: dict[str, Any] = {
    "json_param": json_param,
    "json_tags": _json_tags,
    "text_array": text_array,
    "timestamp_text": timestamp_text,
}


def _compile(name: str, arguments: str, body: str) -> Callable[..., Any]:
    namespace = dict(_NAMESPACE)
    exec(f"def {name}({arguments}):\n    return {body}\n", namespace)  # our own expressions, from INSERTABLE
    return namespace[name]  # type: ignore[no-any-return]


#: The cursor path's parameters, every column named (an unscheduled job's `scheduled_at` is None
#: and left out of the statement).
params: Callable[[Job], dict[str, Any]] = _compile(
    "params", "job", "{" + ", ".join(f"{c.name!r}: {c.param}" for c in INSERTABLE) + "}"
)

_TEXTS = {
    scheduled: _compile("texts", "job", "[" + ", ".join(c.text for c in columns(scheduled=scheduled)) + "]")
    for scheduled in (False, True)
}


def texts(job: Job) -> list[bytes | None]:
    """The job's values in text form, in the order of `columns(scheduled=...)` for that job."""
    return _TEXTS[job.scheduled_at is not None](job)  # type: ignore[no-any-return]


_COPY_ROW = {
    scheduled: _compile(
        "copy_row",
        "job, job_id, now",
        "(job_id, "
        + ", ".join(
            c.param if c.name != SCHEDULED else "(job.scheduled_at if job.scheduled_at is not None else now)"
            for c in columns(scheduled=scheduled)
        )
        + ")",
    )
    for scheduled in (False, True)
}


def copy_row(job: Job, job_id: int, now: datetime | None) -> tuple[Any, ...]:
    """One COPY row: the pre-drawn id, then `columns(scheduled=now is not None)`. With `now` (a
    chunk holding scheduled jobs) an unscheduled job carries the transaction's
    timezone('UTC', now()), exactly the column default; without it the column is left out."""
    return _COPY_ROW[now is not None](job, job_id, now)  # type: ignore[no-any-return]


def copy_types(*, scheduled: bool, varchar_tags: bool) -> list[str]:
    """Binary COPY types of `id` and `columns(scheduled=...)`; an enum's binary form is its
    label, like text. Tags are varchar[] where the schema limits their length."""
    types = [c.copy_type for c in columns(scheduled=scheduled)]
    return ["int8", *("varchar[]" if varchar_tags and t == "text[]" else t for t in types)]


_UNNEST = _compile(
    "unnest_params",
    "jobs",
    "{" + ", ".join(f"{'all_' + c.name!r}: [{c.each or c.param} for job in jobs]" for c in INSERTABLE) + "}",
)


def unnest_params(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """The parallel arrays of the `unnest` statement, `all_<column>` for every column."""
    return _UNNEST(jobs)  # type: ignore[no-any-return]
