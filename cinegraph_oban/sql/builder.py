"""The statement builder: every statement the package runs is built here, from its template
under `sql_templates/` (named without `.sql.j2`), and nowhere else (tests/db/test_builder.py checks that no other
module renders one).

    builder.statement("meta/merge_meta", {"id": 1, "meta": meta}, prefix="public")
        -> Statement(sql=b"UPDATE ...", params={...})     what `conn.execute(s.sql, s.params)` sends
    builder.sql("session/begin")           -> bytes: a statement whose parameters are bound where it
                                              is sent (prepared bodies, a cursor's executemany)
    builder.statements("oban/migrations/v01", prefix="public")
                                           -> the statements of a template that holds several, as text
    builder.copy_sql("insert/copy_jobs", prefix="public", scheduled=False)
                                           -> a COPY, to send with no parameters at all

The context varies identifiers and template switches only; values are always parameters. A
rendered statement is cached per template and context, so building one on a hot path costs a
dictionary lookup. Every statement is sent with parameters (`{}` when it has none), because the
templates write `%` in a quoted name as `%%` (see `templates`); a COPY, which psycopg sends
without merging parameters, has them turned back into `%` by `copy_sql`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cinegraph_oban.sql.templates import freeze, render, render_statements, unparametrized

__all__ = ["Statement", "copy_sql", "sql", "statement", "statements", "unparametrized"]

SUFFIX = ".sql.j2"


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and its parameters; for a unique lookup that probes Oban's GIN index
    with one value, which (prefix, worker, field, key) it probed (`insert.statements`)."""

    sql: bytes
    params: dict[str, Any] = field(default_factory=dict)
    probe: tuple[str, str, str, str] | None = None


def _file(name: str) -> str:
    if name.endswith(SUFFIX):
        raise ValueError(f"name the template without {SUFFIX}: {name!r}")
    return name + SUFFIX


@lru_cache(maxsize=1024)
def _encoded(name: str, frozen: tuple[tuple[str, Any], ...]) -> bytes:
    return render(_file(name), **dict(frozen)).encode()


def sql(name: str, **context: Any) -> bytes:
    """The statement of template `name`, rendered with `context`, as the bytes psycopg sends."""
    return _encoded(name, freeze(context))


def statement(name: str, params: Mapping[str, Any] | None = None, /, **context: Any) -> Statement:
    """The statement of template `name` with the parameters it is sent with."""
    return Statement(_encoded(name, freeze(context)), dict(params or {}))


def statements(name: str, **context: Any) -> list[str]:
    """The statements of a template that holds several (DDL, migration steps), each ending in `;`."""
    return render_statements(_file(name), **context)


def copy_sql(name: str, **context: Any) -> bytes:
    """A COPY statement, to send without parameters (`templates.unparametrized`)."""
    return unparametrized(sql(name, **context))
